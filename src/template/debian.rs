//! The `base` template: a Debian root made by `mmdebstrap` from Debian's archive, with E2B's
//! user `user` (uid 1000, home `/home/user`, password-less sudo) and the tools E2B's base image
//! has that a sandbox user expects (Python 3 with pip and venv, git, curl, CA certificates).
//!
//! Why mmdebstrap: it is in Debian, needs no Docker engine or registry, and resolves and
//! downloads with apt (in parallel), so a minbase root with these packages takes about a minute
//! (`debootstrap` alone took 66 s for minbase on the reference machine). It runs as host root in
//! its own chroot; the tree is then shifted to the sandboxes' id range
//! ([`crate::sandbox::rootfs::shift_ownership`]).
//!
//! The agent is not copied into the layer: every sandbox gets the running `kernelbox` binary
//! bound read-only, so the agent inside always speaks the same protocol as the control plane
//! that started it, and a new build of kernelbox needs no template rebuild.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::store::{Manifest, Template, TemplateStore};
use super::TemplateError;
use crate::sandbox::IdRange;

/// The template id the E2B SDKs' plain `Sandbox.create()` asks for.
pub const BASE_TEMPLATE: &str = "base";
/// The Debian release of the base layer (the host's: Debian 12).
const SUITE: &str = "bookworm";
/// Where packages come from unless `KERNELBOX_DEBIAN_MIRROR` names another mirror.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages on top of minbase.
const PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "git",
    "procps",
    "sudo",
    "python3",
    "python3-pip",
    "python3-venv",
    "iproute2",
    "less",
    "xz-utils",
    "unzip",
];
/// E2B's sandbox user.
const USER: &str = "user";
const USER_ID: u32 = 1000;
/// Run in the finished root (`$1`) by mmdebstrap: the user, sudo for it, and a pip that
/// installs into the system Python as E2B's image allows (Debian marks it externally managed).
const CUSTOMIZE: &str = r#"set -e
chroot "$1" useradd --create-home --shell /bin/bash --uid 1000 --user-group user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$1/etc/sudoers.d/user"
chmod 0440 "$1/etc/sudoers.d/user"
rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED
printf 'bookworm\n' > "$1/etc/kernelbox-template"
"#;

/// The base template's recipe, which names its layer: any change builds a new one.
fn recipe(mirror: &str, ids: IdRange) -> String {
    format!(
        "mmdebstrap minbase {SUITE} {mirror}\npackages {}\nuser {USER} {USER_ID}\nids {}\n{CUSTOMIZE}",
        PACKAGES.join(","),
        ids.first
    )
}

/// The `base` template, built first if it is missing or its recipe changed (then with
/// mmdebstrap's progress on stderr). Other processes building it at the same time wait for
/// this one and reuse its result.
pub fn ensure_base(store: &TemplateStore, ids: IdRange) -> Result<Template, TemplateError> {
    let mirror =
        std::env::var("KERNELBOX_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
    let digest = Sha256::digest(recipe(&mirror, ids).as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let layer = format!("debian-{SUITE}-{hash}");
    let _lock = store.lock(BASE_TEMPLATE)?;
    if let Ok(t) = store.get(BASE_TEMPLATE) {
        if t.manifest.layers == [layer.clone()] {
            return Ok(t);
        }
    }
    store.ensure_layer(&layer, |dir| {
        mmdebstrap(dir, &mirror)?;
        crate::sandbox::rootfs::shift_ownership(dir, ids).map_err(|e| build_error(e.to_string()))
    })?;
    store.save(&Manifest {
        id: BASE_TEMPLATE.into(),
        layers: vec![layer],
        user: USER.into(),
        workdir: format!("/home/{USER}"),
        env: Default::default(),
        kernels: Vec::new(),
        ids_first: ids.first,
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })?;
    store.get(BASE_TEMPLATE)
}

/// Runs mmdebstrap into `dir` (empty), its progress going to our stderr.
fn mmdebstrap(dir: &Path, mirror: &str) -> Result<(), TemplateError> {
    let sources = [
        format!("deb {mirror} {SUITE} main"),
        format!("deb {mirror} {SUITE}-updates main"),
        format!("deb {}-security {SUITE}-security main", mirror),
    ];
    eprintln!(
        "kernelbox: building template '{BASE_TEMPLATE}' (Debian {SUITE} from {mirror}, about a minute)"
    );
    let status = Command::new("mmdebstrap")
        .args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg(format!("--customize-hook={CUSTOMIZE}"))
        .arg(SUITE)
        .arg(dir)
        .args(&sources)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            build_error(if e.kind() == std::io::ErrorKind::NotFound {
                "mmdebstrap is not installed (scripts/setup-host.sh installs it: apt-get install mmdebstrap)"
                    .to_string()
            } else {
                format!("cannot run mmdebstrap: {e}")
            })
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(build_error(format!("mmdebstrap failed ({status})")))
    }
}

fn build_error(message: String) -> TemplateError {
    TemplateError::Build {
        template: BASE_TEMPLATE.into(),
        message,
    }
}
