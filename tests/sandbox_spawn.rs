//! The namespace backend against the real kernel: a sandbox starts with `kernelbox agent` as its
//! init, answers over its unix socket, is isolated (each probe below names what it reads and what
//! it expects), holds its cgroup limits, and leaves nothing behind when killed or when its
//! start-up fails.
//!
//! Needs root (namespaces, cgroups). Skips with a printed reason where the kernel refuses
//! namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sandbox::{backend, http, is_root, sh, spawn_or_skip};
use kernelbox::sandbox::{Backend, IdRange, Limits, SandboxError, SandboxId, SandboxSpec};
use serde_json::json;

const IDS: IdRange = IdRange {
    first: 100_000,
    count: 65_536,
};

fn limits() -> Limits {
    Limits {
        memory_bytes: Some(256 * 1024 * 1024),
        cpus: Some(1.5),
        cpu_shares: Some(512),
        pids: Some(128),
    }
}

fn spec(id: &SandboxId) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        hostname: format!("sbx-{id}"),
        rootfs: None,
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_kernelbox")),
        // No kernels: this test is about the sandbox, not the interpreter.
        agent_args: vec!["--default-languages=".into()],
        env: vec![("RUST_LOG".into(), "kernelbox=info".into())],
        limits: limits(),
        ids: IDS,
        network: Default::default(),
    }
}

/// The `Uid:` line of a host process: real, effective, saved, fs.
fn host_uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("uid"))
        .collect()
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_is_isolated_limited_and_leaves_nothing_when_killed() {
    let (_runtime, backend) = backend("iso");
    let id = SandboxId::random();
    let Some(handle) = spawn_or_skip(&backend, spec(&id)).await else {
        return;
    };

    // Users. Probe: `id -u` inside; expected 0 (root of the sandbox). Probe: the agent's
    // `Uid:` line in the host's /proc/<pid>/status; expected the unprivileged range start
    // (100000) for real, effective, saved and fs uid — never 0.
    assert_eq!(sh(&handle, "id -u").await.trim(), "0");
    assert_eq!(host_uids(handle.init_pid), vec![IDS.first; 4]);
    assert_eq!(
        host_uids(std::process::id())[0],
        0,
        "the same probe on the host reads 0"
    );

    // Processes. Probe: /proc/1/comm inside; expected the agent ("kernelbox"), i.e. the sandbox
    // is its own pid namespace. Probe: numeric entries of /proc inside; expected only the
    // sandbox's few processes, while the host's /proc lists many more (and the test itself).
    assert_eq!(sh(&handle, "cat /proc/1/comm").await.trim(), "kernelbox");
    let inside: Vec<u32> = sh(&handle, "ls /proc")
        .await
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let host = std::fs::read_dir("/proc")
        .expect("host /proc")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    assert!(inside.len() <= 5, "pids inside: {inside:?}");
    assert!(host > inside.len(), "host {host} vs inside {inside:?}");
    assert!(!inside.contains(&std::process::id()) || std::process::id() <= 5);

    // Host name. Probe: `uname -n` inside; expected the sandbox's hostname (its uts namespace).
    assert_eq!(sh(&handle, "uname -n").await.trim(), format!("sbx-{id}"));

    // Network. Probe: interface names in /proc/net/dev inside; expected exactly `lo` (the
    // host's lists more). Probe: a TCP connect to a listener on 127.0.0.1 inside; expected to
    // succeed (lo is up). Probe: a connect to a public address; expected "unreachable" at once
    // (no route: the sandbox has no network yet).
    let devs = sh(
        &handle,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(devs.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    let host_devs = std::fs::read_to_string("/proc/net/dev").expect("host net");
    assert!(host_devs.lines().count() > 3, "the host has more than lo");
    let probe = r#"python3 -c '
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
c = socket.create_connection(l.getsockname(), timeout=5); print("lo up")
try:
    socket.create_connection(("1.1.1.1", 80), timeout=5); print("reached")
except OSError as e:
    print("unreachable", e.errno)
'"#;
    let net = sh(&handle, probe).await;
    assert!(net.contains("lo up"), "{net}");
    assert!(
        net.contains(&format!("unreachable {}", libc::ENETUNREACH)),
        "{net}"
    );

    // Files. Probe: a file the test writes on the host outside every lower layer and bind
    // (/var/tmp); expected absent inside, present on the host. Probe: /work (the host's
    // workspace); expected absent inside.
    let secret = PathBuf::from(format!("/var/tmp/kernelbox-probe-{id}"));
    std::fs::write(&secret, "host only").expect("write the probe file");
    let seen = sh(
        &handle,
        &format!(
            "test -e {} && echo visible || echo absent",
            secret.display()
        ),
    )
    .await;
    std::fs::remove_file(&secret).expect("remove the probe file");
    assert_eq!(seen.trim(), "absent");
    assert_eq!(
        sh(&handle, "test -e /work && echo visible || echo absent")
            .await
            .trim(),
        "absent"
    );
    // Writes land in the sandbox's upper dir, owned by the sandbox's root on the host.
    assert_eq!(
        sh(&handle, "echo hi > /root/f && cat /root/f").await.trim(),
        "hi"
    );
    let meta = std::fs::metadata(handle.dir.join("upper/root/f")).expect("upper file");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), IDS.first);

    // Privileges. Probe: NoNewPrivs in /proc/self/status inside; expected 1.
    let nnp = sh(&handle, "grep NoNewPrivs /proc/self/status").await;
    assert!(nnp.contains('1'), "{nnp}");

    // Limits. Probe: the cgroup files of the sandbox on the host; expected the spec's values,
    // and the agent listed in the pids cgroup.
    let paths = backend.cgroup_paths(&id).expect("cgroups");
    let file = |name: &str| {
        let path = paths
            .iter()
            .map(|p| p.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {name}"));
        read_trim(&path)
    };
    assert_eq!(
        file("memory.limit_in_bytes"),
        (256u64 * 1024 * 1024).to_string()
    );
    assert_eq!(file("cpu.cfs_quota_us"), "150000");
    assert_eq!(file("cpu.cfs_period_us"), "100000");
    assert_eq!(file("cpu.shares"), "512");
    assert_eq!(file("pids.max"), "128");
    let procs = file("cgroup.procs");
    assert!(
        procs.lines().any(|p| p == handle.init_pid.to_string()),
        "{procs}"
    );
    for p in &paths {
        assert!(
            p.to_string_lossy().contains(&format!("/kernelbox/{id}")),
            "{}",
            p.display()
        );
    }
    let usage = backend.usage(&id).await.expect("usage");
    assert!(usage.memory_bytes > 0 && usage.pids >= 1, "{usage:?}");
    assert_eq!(usage.memory_limit_bytes, Some(256 * 1024 * 1024));

    // A background process, to check kill takes everything, not just init.
    sh(&handle, "sleep 1000 >/dev/null 2>&1 &").await;
    assert!(file("cgroup.procs").lines().count() >= 2);

    // Kill. Expected: no cgroup folder, no process of the sandbox, no mount naming its folder in
    // the host's mountinfo, no folder.
    backend.kill(&id).await.expect("kill");
    for p in &paths {
        assert!(!p.exists(), "cgroup {} remains", p.display());
    }
    assert!(
        !Path::new(&format!("/proc/{}", handle.init_pid)).exists(),
        "the sandbox's init remains"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = handle.dir.to_string_lossy().into_owned();
    assert!(
        !mounts.contains(&dir),
        "a mount of {dir} remains:\n{mounts}"
    );
    assert!(!handle.dir.exists(), "the sandbox folder remains");
    assert!(matches!(
        backend.kill(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(backend.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_behind() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let (runtime, backend) = backend("fail");
    let id = SandboxId::random();
    let mut bad = spec(&id);
    bad.agent_binary = PathBuf::from("/nonexistent/kernelbox");
    match backend.spawn(bad).await {
        Err(SandboxError::NamespacesUnavailable(e)) => {
            eprintln!("skipped: the kernel refuses namespaces: {e}");
            return;
        }
        Err(SandboxError::Setup { step, source }) => {
            assert!(step.contains("/nonexistent/kernelbox"), "{step}: {source}");
        }
        other => panic!("expected a set-up error, got {other:?}"),
    }
    assert!(
        !runtime.0.join(id.as_str()).exists(),
        "the sandbox folder remains"
    );
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controller, own) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        for c in ["memory", "cpu", "pids"] {
            if controller.split(',').any(|x| x == c) {
                let point = mounts
                    .lines()
                    .find(|l| {
                        l.contains(" - cgroup ")
                            && l.rsplit(' ')
                                .next()
                                .is_some_and(|o| o.split(',').any(|x| x == c))
                    })
                    .and_then(|l| l.split(' ').nth(4))
                    .expect("mount point");
                let path = Path::new(point)
                    .join(own.trim_start_matches('/'))
                    .join("kernelbox")
                    .join(id.as_str());
                assert!(!path.exists(), "cgroup {} remains", path.display());
            }
        }
    }
    assert!(backend.list().is_empty());
}

#[test]
fn ids_are_safe_path_and_cgroup_names() {
    assert!(SandboxId::new("abc-123").is_ok());
    for bad in ["", "-x", "../x", "a/b", "A", "a b"] {
        assert!(SandboxId::new(bad).is_err(), "{bad:?}");
    }
    assert!(SandboxId::new(SandboxId::random().as_str()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_inside_and_the_agent_survives_them() {
    let (_runtime, backend) = backend("limits");
    let id = SandboxId::random();
    let Some(handle) = spawn_or_skip(&backend, spec(&id)).await else {
        return;
    };
    let paths = backend.cgroup_paths(&id).expect("cgroups");
    let file = |name: &str| {
        let path = paths
            .iter()
            .map(|p| p.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {name}"));
        read_trim(&path)
    };
    let counter = |text: String, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };

    // Memory. Probe: a process inside writes 400 MiB under the 256 MiB limit; expected: it is
    // OOM-killed (no "survived"), the host's memory.oom_control counts the kill, and the agent
    // still answers.
    let out = sh(
        &handle,
        "python3 -c 'b = b\"x\" * (400 << 20); print(\"survived\")'; echo \"rc=$?\"",
    )
    .await;
    assert!(!out.contains("survived"), "{out}");
    assert!(out.contains("rc=137"), "{out}");
    assert!(counter(file("memory.oom_control"), "oom_kill ") >= 1);
    assert_eq!(sh(&handle, "echo alive").await.trim(), "alive");

    // Processes. Probe: 200 background `sleep`s under pids.max 128; expected: forks fail, the
    // host's pids.events counts them, and once the sleeps end the agent still answers.
    // (pids.current counts threads too, so the wait below counts processes.)
    let before = file("cgroup.procs").lines().count();
    sh(
        &handle,
        "i=0; while [ $i -lt 200 ]; do sleep 2 & i=$((i+1)); done 2>/dev/null; wait",
    )
    .await;
    assert!(counter(file("pids.events"), "max ") >= 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while file("cgroup.procs").lines().count() > before {
        assert!(
            Instant::now() < deadline,
            "the sleeps never ended: {}",
            file("cgroup.procs")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sh(&handle, "echo alive").await.trim(), "alive");

    backend.kill(&id).await.expect("kill");
    for p in &paths {
        assert!(!p.exists(), "cgroup {} remains", p.display());
    }
}

/// A probe run by `sh -c` on the host (the test runs as root): its stdout.
fn host_sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("host sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hardening: each probe names what it tries, runs inside (expected: refused) and on the host
/// (expected: allowed, so the probe itself can succeed), and the kernels still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_refuses_inside_what_the_host_allows_and_kernels_still_run() {
    let (_runtime, backend) = backend("hard");
    let id = SandboxId::random();
    let mut spec = spec(&id);
    spec.agent_args = vec!["--default-languages=python,javascript,r,java".into()];
    // Four kernels at once (the JVM alone reserves a few hundred MB).
    spec.limits.memory_bytes = Some(2 << 30);
    spec.limits.pids = Some(1024);
    let Some(handle) = spawn_or_skip(&backend, spec).await else {
        return;
    };

    // A nested user namespace (it would hold every capability again): `unshare -U true`.
    let probe = "unshare -U true 2>/dev/null; echo $?";
    assert_ne!(sh(&handle, probe).await.trim(), "0", "inside");
    assert_eq!(host_sh(probe).trim(), "0", "on the host");

    // Mounting, as root: inside it needs CAP_SYS_ADMIN, which the bounding set dropped.
    let mount = "mount -t tmpfs none /mnt 2>/dev/null; echo $?";
    assert_ne!(sh(&handle, mount).await.trim(), "0", "inside");
    assert_eq!(
        host_sh(&format!("unshare -m sh -c '{mount}'")).trim(),
        "0",
        "on the host"
    );

    // The bounding set: exactly Docker's defaults inside.
    let bounding = "grep CapBnd /proc/self/status";
    let expected = format!("{:016x}", kernelbox::sandbox::hardening::kept_mask());
    assert!(sh(&handle, bounding).await.contains(&expected));
    assert!(!host_sh(bounding).contains(&expected));

    // runc's masked /proc paths: /proc/keys and /proc/timer_list are covered (by /dev/null)
    // inside, readable as themselves on the host; /proc/sys is a read-only mount inside.
    let masked =
        "awk '$5 == \"/proc/keys\" || $5 == \"/proc/timer_list\"' /proc/self/mountinfo | wc -l";
    assert_eq!(sh(&handle, masked).await.trim(), "2", "inside");
    assert_eq!(host_sh(masked).trim(), "0", "on the host");
    assert_eq!(
        sh(&handle, "head -c 1 /proc/keys | wc -c").await.trim(),
        "0"
    );
    assert_eq!(host_sh("head -c 1 /proc/keys | wc -c").trim(), "1");
    let sysctl = "awk '$5 == \"/proc/sys\" {print $6}' /proc/self/mountinfo | cut -c1-2";
    assert_eq!(sh(&handle, sysctl).await.trim(), "ro");

    // The kernel keyring (not namespaced): keyctl(KEYCTL_GET_KEYRING_ID, session) by number.
    let keyctl = "perl -e 'syscall(250, 0, -3, 0, 0, 0); print \"$!\\n\"'";
    assert!(sh(&handle, keyctl)
        .await
        .contains("Operation not permitted"));
    assert!(!host_sh(keyctl).contains("Operation not permitted"));

    // ipykernel, Deno (V8; threads through clone3 falling back to clone), R and the JVM still
    // run cells.
    for (language, code, expected) in [
        ("python", "import threading; print(sum(range(10)))", "45"),
        (
            "javascript",
            "console.log([1, 2, 3].map(x => x * 2).join(','))",
            "2,4,6",
        ),
        ("r", "cat(sum(1:9))", "45"),
        (
            "java",
            "System.out.println(java.util.stream.IntStream.range(0, 10).sum());",
            "45",
        ),
    ] {
        let body = json!({"code": code, "language": language}).to_string();
        let (status, answer) = http(
            &handle.agent_socket,
            "POST",
            "/execute",
            &[
                ("Content-Type", "application/json"),
                ("E2b-Sandbox-Port", "49999"),
            ],
            body.as_bytes(),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(expected), "{language}: {answer}");
    }
    backend.kill(&id).await.expect("kill");
}

/// The host's IPv4 addresses other than loopback, as `ip` lists them (independent of how the
/// backend reads them).
fn host_ipv4_addresses() -> Vec<String> {
    host_sh("ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1")
        .split_whitespace()
        .filter(|a| !a.starts_with("127."))
        .map(String::from)
        .collect()
}

/// User-mode networking reaches out through the host, but never back into the host itself.
/// Probe: a TCP connect to a listener the test opens on all of the host's interfaces, at each of
/// the host's own non-loopback addresses and at 10.0.2.2 (slirp's alias of the host's loopback);
/// expected: refused inside, while the same connect from the host succeeds. Probe: a second
/// listener on loopback only, on the host side; expected: reached from the host, refused inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_sandbox_cannot_reach_the_hosts_own_services() {
    let (_runtime, backend) = backend("egress");
    let id = SandboxId::random();
    let mut spec = spec(&id);
    spec.network = kernelbox::sandbox::Network::UserMode;
    let Some(handle) = spawn_or_skip(&backend, spec).await else {
        return;
    };
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let accept = std::thread::spawn(move || while listener.accept().is_ok() {});
    let connect = |address: &str| {
        format!(
            "python3 -c '
import socket
try:
    socket.create_connection((\"{address}\", {port}), timeout=5); print(\"reached\")
except OSError as e:
    print(\"refused\", e.errno)
'"
        )
    };
    let mut targets = host_ipv4_addresses();
    assert!(!targets.is_empty(), "the host has a non-loopback address");
    targets.push("127.0.0.1".into());
    for address in &targets {
        assert_eq!(
            host_sh(&connect(address)).trim(),
            "reached",
            "host: {address}"
        );
    }
    // Control: the user-mode network itself works (DNS through slirp's forwarder).
    let dns = sh(&handle, "getent hosts pypi.org >/dev/null && echo resolved").await;
    assert_eq!(dns.trim(), "resolved", "inside");
    targets.pop();
    targets.push("10.0.2.2".into());
    for address in &targets {
        let inside = sh(&handle, &connect(address)).await;
        assert!(inside.starts_with("refused"), "inside, {address}: {inside}");
    }
    // The egress folder is this sandbox's alone, and goes with it.
    let egress = kernelbox::sandbox::egress::Egress::locate(&id).expect("locate");
    assert!(egress.exists(), "{}", egress.display());
    backend.kill(&id).await.expect("kill");
    assert!(!egress.exists(), "{} left behind", egress.display());
    drop(accept);
}
