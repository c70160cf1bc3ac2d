//! The `base` template against the real tools and kernel: built by mmdebstrap into the store of
//! `$KERNELBOX_HOME` (once; later runs reuse it), then sandboxes started from it run on that
//! Debian root with E2B's user, and never write into the shared layer.
//!
//! Needs root and mmdebstrap (`scripts/setup-host.sh`); skips with a printed reason where the
//! kernel refuses namespaces.

mod common;

use std::path::PathBuf;

use common::sandbox::{backend, is_root, sh, sh_as, spawn_or_skip};
use kernelbox::sandbox::{Backend, IdRange, Limits, SandboxId, SandboxSpec};
use kernelbox::template::{debian, Template, TemplateStore};

fn base() -> Template {
    let store = TemplateStore::at_home(&kernelbox::config::home());
    debian::ensure_base(&store, IdRange::default()).expect("the base template builds")
}

fn spec(id: &SandboxId, template: &Template) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        hostname: format!("sbx-{id}"),
        rootfs: Some(template.rootfs(IdRange::default()).expect("plan")),
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_kernelbox")),
        agent_args: vec![
            "--default-languages=".into(),
            format!("--workdir={}", template.manifest.workdir),
        ],
        env: Vec::new(),
        limits: Limits::default(),
        ids: IdRange::default(),
        network: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_from_the_base_template_run_on_its_debian_root_as_user() {
    if !is_root() {
        eprintln!("skipped: templates and sandboxes need root");
        return;
    }
    let template = tokio::task::spawn_blocking(base).await.expect("build");
    assert_eq!(template.manifest.user, "user");
    let layer = template.layer_dirs[0].clone();
    let (_runtime, backend) = backend("template");
    let id = SandboxId::random();
    let Some(handle) = spawn_or_skip(&backend, spec(&id, &template)).await else {
        return;
    };

    // The root is the template's (its marker file), not the host's: probe `ls` of the host
    // folder that holds the template store; expected: absent.
    assert_eq!(
        sh(&handle, "cat /etc/kernelbox-template").await.trim(),
        "bookworm"
    );
    let store_dir = kernelbox::config::home().join("templates");
    let probe = format!("ls {} 2>&1; echo $?", store_dir.display());
    assert!(sh(&handle, &probe).await.trim().ends_with('2'));

    // E2B's user, with its home as the default cwd, owning what it writes there; root owns
    // /etc/sudoers (the layer's owners are shifted into the sandbox's range, not `nobody`).
    let who = sh_as(&handle, Some("user"), "id -un; id -u; pwd; echo $HOME").await;
    assert_eq!(
        who.split_whitespace().collect::<Vec<_>>(),
        ["user", "1000", "/home/user", "/home/user"]
    );
    let wrote = sh_as(
        &handle,
        Some("user"),
        "echo hi > ~/mine && stat -c %U ~/mine",
    )
    .await;
    assert_eq!(wrote.trim(), "user");
    assert_eq!(sh(&handle, "stat -c %U /etc/sudoers").await.trim(), "root");
    assert_eq!(
        sh(&handle, "hostname; grep -c sbx- /etc/hosts")
            .await
            .trim(),
        format!("sbx-{id}\n1")
    );
    assert!(sh(&handle, "python3 -c 'print(6*7)'").await.contains("42"));

    // Writes land in the sandbox's upper dir: the shared layer and a second sandbox of the
    // same template never see them.
    sh(&handle, "echo changed > /etc/motd; rm /etc/issue").await;
    assert!(!std::fs::read_to_string(layer.join("etc/motd"))
        .unwrap_or_default()
        .contains("changed"));
    assert!(layer.join("etc/issue").exists());
    assert!(!layer.join("home/user/mine").exists());
    let other = SandboxId::random();
    let Some(second) = spawn_or_skip(&backend, spec(&other, &template)).await else {
        return;
    };
    assert_eq!(
        sh(
            &second,
            "cat /etc/issue >/dev/null && echo issue; ls /home/user"
        )
        .await
        .trim(),
        "issue"
    );

    backend.kill(&id).await.expect("kill");
    backend.kill(&other).await.expect("kill");
    assert!(!handle.dir.exists() && !second.dir.exists());
}

#[test]
fn unknown_templates_are_not_found() {
    let store = TemplateStore::at_home(&kernelbox::config::home());
    let err = store.get("no-such-template").expect_err("not found");
    assert_eq!(err.to_string(), "template 'no-such-template' not found");
}
