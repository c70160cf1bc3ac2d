//! `kernelbox serve` end to end: the official SDKs (Python and JS, outside debug mode) create,
//! use, time out and kill sandboxes through its API and gateway; a restart reclaims what a killed
//! `serve` left.
//!
//! Needs root (sandboxes), the base template (`kernelbox template build-base`; built here if
//! missing) and the SDKs (`tests/sdk/install.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `kernelbox serve` on a free loopback port with a state folder of its own.
struct Serve {
    url: String,
    key: String,
    child: Child,
}

impl Serve {
    fn start(state: &Path) -> Serve {
        Serve::start_with(state, &[])
    }

    fn start_with(state: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kernelbox"))
            .args(["serve", "--addr", "127.0.0.1", "--port", "0", "--state-dir"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kernelbox serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("read");
            if let Some(url) = line.strip_prefix("kernelbox serve: listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let keys = std::fs::read_to_string(state.join("api-keys")).expect("api-keys");
        let key = keys
            .lines()
            .find(|l| l.starts_with("e2b_"))
            .expect("a key")
            .to_string();
        Serve { url, key, child }
    }

    /// Stops it as `kill -9` would: nothing of its own clean-up runs.
    fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: serve kills its sandboxes before it exits.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kb-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs an SDK suite against `serve` and asserts it passes (output streams live).
fn run_suite(name: &str, mut cmd: Command, serve: &Serve) {
    cmd.current_dir(repo())
        .env("KERNELBOX_SERVE_URL", &serve.url)
        .env("KERNELBOX_SERVE_KEY", &serve.key)
        .env("KERNELBOX_HOME", kernelbox::config::home())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("E2B_DEBUG")
        .stdin(Stdio::null());
    eprintln!("==> {name}: {cmd:?} against {}", serve.url);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
    assert!(status.success(), "{name}: the suite failed ({status})");
}

#[test]
fn python_sdk_against_serve() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let python = kernelbox::config::home().join("sdk/python/bin/python");
    assert!(
        python.is_file(),
        "the Python SDK is not installed: run tests/sdk/install.sh"
    );
    let state = state_dir("py");
    let serve = Serve::start(&state);
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pytest",
        "tests/sdk/serve",
        "-q",
        "-p",
        "no:cacheprovider",
    ]);
    run_suite("python SDK against serve", cmd, &serve);
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn js_sdk_against_serve() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let state = state_dir("js");
    let serve = Serve::start(&state);
    let mut cmd = Command::new("node");
    cmd.args([
        "--test",
        "--test-reporter=spec",
        "tests/sdk/serve/serve.test.mjs",
    ]);
    run_suite("JS SDK against serve", cmd, &serve);
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}

/// Host pids of the agents whose sandbox folder lies under `state`.
fn agents_of(state: &Path) -> Vec<u32> {
    let sandboxes = state.join("sandboxes");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // The agent's log is its stdout: /proc/<pid>/fd/1 points into its sandbox folder.
        if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/1")) {
            if target.starts_with(&sandboxes) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Whether a pid runs: not gone and not a zombie (an orphan's zombie waits for the host's
/// init, which may reap it late).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with(['Z', 'X'])
    })
}

/// Host pids of the slirp4netns serving the network namespace of any of `inits`.
fn slirps_of(inits: &[u32]) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("slirp4netns"))
            && inits.iter().any(|i| args.contains(&i.to_string()))
        {
            pids.push(pid);
        }
    }
    pids
}

async fn create(serve: &Serve) -> String {
    create_with(
        serve,
        serde_json::json!({"templateID": "base", "timeout": 600}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reclaims_what_a_killed_serve_left() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let state = state_dir("restart");
    // With a warm pool: its sandboxes have no record, and must be reclaimed too.
    let serve = Serve::start_with(&state, &["--pool-size", "1"]);
    let ids = [create(&serve).await, create(&serve).await];
    let agents = agents_of(&state);
    assert!(agents.len() >= 2, "one agent per sandbox: {agents:?}");
    let slirps = slirps_of(&agents);
    assert_eq!(
        slirps.len(),
        agents.len(),
        "one user-mode network per sandbox"
    );
    serve.crash();
    // Nothing cleaned up: the sandboxes outlive a crashed serve until it comes back.
    assert!(agents.iter().all(|p| running(*p)));

    let serve = Serve::start_with(&state, &["--pool-size", "0"]);
    let left: Vec<u32> = agents.iter().copied().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "agents left after reclaim: {left:?}");
    // A sandbox the pool was starting at the crash: its clone of serve (not yet the agent) dies
    // with serve rather than wait for a go that never comes.
    let clones = clones_of_serve(&state, serve.child.id());
    assert!(
        clones.is_empty(),
        "clones of the crashed serve left: {clones:?}"
    );
    assert!(agents_of(&state).is_empty(), "agents left after reclaim");
    assert!(
        slirps.iter().all(|p| !running(*p)),
        "slirp4netns left after reclaim"
    );
    let folders: Vec<_> = std::fs::read_dir(state.join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(folders.is_empty(), "sandbox folders left: {folders:?}");
    for id in &ids {
        let sid = kernelbox::sandbox::SandboxId::new(id).expect("id");
        let cgroups = kernelbox::sandbox::cgroup::Cgroups::locate(&sid).expect("locate");
        for dir in cgroups.paths() {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
        // Dropping a located handle must not touch anything: nothing is there.
        drop(cgroups);
    }
    let listed: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/v2/sandboxes", serve.url))
        .header("X-API-KEY", &serve.key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(listed.is_empty(), "{listed:?}");
    let db = rusqlite::Connection::open(state.join("state.db")).expect("db");
    let reasons: Vec<String> = db
        .prepare("SELECT end_reason FROM sandboxes")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(reasons, ["restart", "restart"]);
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}

/// Running processes whose command line is a `serve` of this state folder, other than `except`
/// (a sandbox cloned from serve carries its command line until it execs the agent).
fn clones_of_serve(state: &Path, except: u32) -> Vec<u32> {
    let needle = state.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if pid != except && cmd.contains(" serve ") && cmd.contains(&needle) && running(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// `kernelbox sandbox list|kill` against a serve: (exit success, stdout).
fn cli(serve: &Serve, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kernelbox"))
        .arg("sandbox")
        .args(args)
        .args(["--url", &serve.url, "--api-key", &serve.key])
        .output()
        .expect("kernelbox sandbox");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_kills_sandboxes() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let state = state_dir("cli");
    let serve = Serve::start(&state);
    let id = create(&serve).await;
    let (ok, listed) = cli(&serve, &["list"]);
    assert!(
        ok && listed.contains(&id) && listed.contains("base"),
        "{listed}"
    );
    let (ok, killed) = cli(&serve, &["kill", &id]);
    assert!(ok && killed.contains(&format!("killed {id}")), "{killed}");
    let (ok, listed) = cli(&serve, &["list"]);
    assert!(ok && !listed.contains(&id), "{listed}");
    let (ok, _) = cli(&serve, &["kill", &id]);
    assert!(!ok, "killing a gone sandbox fails");
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}

/// The host processes (pid, state and command line) in any of `namespaces` (`net:[inode]`).
fn ns_holders(namespaces: &[String]) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/net"))
                .is_ok_and(|l| namespaces.iter().any(|n| Path::new(n) == l))
        })
        .map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            format!(
                "{} {}",
                stat.split(')').next().unwrap_or(""),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect()
}

async fn create_with(serve: &Serve, body: serde_json::Value) -> String {
    let answer = create_answer(serve, body).await;
    answer["sandboxID"].as_str().expect("id").to_string()
}

/// `POST /v2/sandboxes`: the whole answer (id, access token, ...).
async fn create_answer(serve: &Serve, body: serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/v2/sandboxes", serve.url))
        .header("X-API-KEY", &serve.key)
        .json(&body)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json")
}

/// After a kill and after an expiry, nothing of either sandbox is left: no process (agent or
/// slirp4netns), no network namespace any process is in, no folder, no cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_expiry_leave_no_process_namespace_folder_or_cgroup() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let state = state_dir("ends");
    let serve = Serve::start_with(&state, &["--pool-size", "0"]);
    let killed = create_with(
        &serve,
        serde_json::json!({"templateID": "base", "timeout": 600}),
    )
    .await;
    let expiring = create_with(
        &serve,
        serde_json::json!({"templateID": "base", "timeout": 1}),
    )
    .await;
    let agents = agents_of(&state);
    assert_eq!(agents.len(), 2);
    let slirps = slirps_of(&agents);
    let namespaces: Vec<String> = agents
        .iter()
        .map(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/net"))
                .expect("ns")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let host_ns = std::fs::read_link("/proc/self/ns/net").expect("own ns");
    assert!(
        namespaces.iter().all(|n| Path::new(n) != host_ns),
        "own namespaces"
    );

    let answer = reqwest::Client::new()
        .delete(format!("{}/sandboxes/{killed}", serve.url))
        .header("X-API-KEY", &serve.key)
        .send()
        .await
        .expect("kill");
    assert_eq!(answer.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.join("sandboxes").join(&expiring).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<u32> = agents
        .iter()
        .chain(&slirps)
        .copied()
        .filter(|p| running(*p))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    // The kernel drops a dying process's namespaces a moment after its cgroup empties.
    let deadline = Instant::now() + Duration::from_secs(5);
    let holders = loop {
        let holders = ns_holders(&namespaces);
        if holders.is_empty() || Instant::now() > deadline {
            break holders;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        holders.is_empty(),
        "network namespaces still in use: {holders:?}"
    );
    for id in [&killed, &expiring] {
        assert!(
            !state.join("sandboxes").join(id).exists(),
            "folder of {id} left"
        );
        let sid = kernelbox::sandbox::SandboxId::new(id).expect("id");
        for dir in kernelbox::sandbox::cgroup::Cgroups::locate(&sid)
            .expect("locate")
            .paths()
        {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
    }
    let db = rusqlite::Connection::open(state.join("state.db")).expect("db");
    let reason = |id: &str| -> String {
        db.query_row(
            "SELECT end_reason FROM sandboxes WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("row")
    };
    assert_eq!(reason(&killed), "kill");
    assert_eq!(reason(&expiring), "timeout");
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}

/// Starts `script` as root in sandbox `id` through serve's gateway (envd's Process.Start, Connect JSON)
/// and returns without waiting for it to end (its output is read, and dropped, in the
/// background).
async fn start_in(serve: &Serve, id: &str, token: &str, script: &str) {
    let message = serde_json::json!({
        "process": {"cmd": "/bin/sh", "args": ["-c", script]},
        "stdin": false,
    });
    let json = message.to_string().into_bytes();
    let mut body = vec![0u8];
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(&json);
    let answer = reqwest::Client::new()
        .post(format!("{}/process.Process/Start", serve.url))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", "49983")
        .header("X-Access-Token", token)
        // As root: base64("root:").
        .header("Authorization", "Basic cm9vdDo=")
        .header("Content-Type", "application/connect+json")
        .header("Connect-Protocol-Version", "1")
        .body(body)
        .send()
        .await
        .expect("start");
    assert_eq!(answer.status(), 200);
    tokio::spawn(answer.bytes());
}

/// An agent (init) ended by the OOM killer ends its sandbox with reason `oom`; one killed
/// otherwise, with `init_died`. Probe: inside, root makes init the OOM killer's first choice
/// (raising `oom_score_adj` to 1000 needs no privilege) and fills the tmpfs `/dev/shm` past the
/// sandbox's 512 MiB (tmpfs pages belong to no process, so init is the victim). The other
/// sandbox's init is SIGKILLed from the host (PID 1 ignores it from inside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_ended_by_the_oom_killer_is_recorded_as_oom() {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return;
    }
    let state = state_dir("oom");
    let serve = Serve::start_with(&state, &["--pool-size", "0"]);
    let create = || async {
        let answer = create_answer(
            &serve,
            serde_json::json!({"templateID": "base", "timeout": 600}),
        )
        .await;
        (
            answer["sandboxID"].as_str().expect("id").to_string(),
            answer["envdAccessToken"].as_str().unwrap_or("").to_string(),
        )
    };
    let (starved, token) = create().await;
    let (crashed, _) = create().await;
    start_in(
        &serve,
        &starved,
        &token,
        "echo 1000 > /proc/1/oom_score_adj && head -c 2G /dev/zero > /dev/shm/fill",
    )
    .await;
    let crashed_init = agents_of(&state)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains(&crashed))
        })
        .expect("the second sandbox's agent");
    // SAFETY: kill(2) of a pid we just found running the sandbox's agent.
    unsafe { libc::kill(crashed_init as i32, libc::SIGKILL) };

    let db = rusqlite::Connection::open(state.join("state.db")).expect("db");
    let reason = |id: &str| -> Option<String> {
        db.query_row(
            "SELECT end_reason FROM sandboxes WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("row")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while (reason(&starved).is_none() || reason(&crashed).is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reason(&starved).as_deref(), Some("oom"));
    assert_eq!(reason(&crashed).as_deref(), Some("init_died"));
    drop(serve);
    let _ = std::fs::remove_dir_all(&state);
}
