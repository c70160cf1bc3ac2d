//! Official-SDK compatibility: runs the unmodified E2B SDKs' suites in `tests/sdk/` against a real
//! `kernelbox agent`.
//!
//! * `python_sdk`: `e2b-code-interpreter==2.11.5` (`e2b==2.63.0`) with pytest, `tests/sdk/python`.
//! * `js_sdk`: `@e2b/code-interpreter@2.8.0` (`e2b@2.51.0`) with `node --test`, `tests/sdk/js`.
//!
//! The SDKs live outside the repo, in `$KERNELBOX_HOME/sdk` (default `~/.kernelbox/sdk`), and are
//! installed by `tests/sdk/install.sh`. When they are missing or stale these tests FAIL (they never
//! skip) and say so. Each test starts its own agent with
//! `--env KERNELBOX_SANDBOX_VAR=sandbox-value` and hands its URL to the suite as `KERNELBOX_URL`,
//! plus a second agent with an access token (`KERNELBOX_SECURED_URL`, `KERNELBOX_SECURED_TOKEN`)
//! for signed file URLs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The access token of the second agent each suite gets, for signed file URLs.
const SECURED_TOKEN: &str = "sdk-suite-token";

/// A second agent, with an access token and no default contexts: the suites reach its sandbox API
/// through `KERNELBOX_SECURED_URL` as a sandbox created outside debug mode would.
fn secured_agent(cmd: &mut Command) -> common::Agent {
    let agent = common::Agent::start_with_env(
        &common::tempdir("secured"),
        &["--default-languages", ""],
        &[("KERNELBOX_ACCESS_TOKEN", SECURED_TOKEN)],
    );
    cmd.env("KERNELBOX_SECURED_URL", &agent.envd_url)
        .env("KERNELBOX_SECURED_TOKEN", SECURED_TOKEN);
    agent
}

/// Upper bound for one suite; they take well under a minute with warm kernels.
const SUITE_DEADLINE: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn not_installed(what: &str, detail: &str) -> ! {
    panic!(
        "the {what} for the SDK compatibility suite is not installed or is out of date ({detail}).\n\
         Run `tests/sdk/install.sh` (it installs into $KERNELBOX_HOME/sdk, default ~/.kernelbox/sdk) \
         and run this test again."
    )
}

/// The installer copies the pin files next to what it installed; they must match the repo's.
fn require_same(installed: &Path, pinned: &Path, what: &str) {
    let pinned_text =
        std::fs::read(pinned).unwrap_or_else(|e| panic!("cannot read {}: {e}", pinned.display()));
    match std::fs::read(installed) {
        Ok(text) if text == pinned_text => {}
        Ok(_) => not_installed(
            what,
            &format!("{} differs from {}", installed.display(), pinned.display()),
        ),
        Err(_) => not_installed(what, &format!("{} is missing", installed.display())),
    }
}

/// Runs the suite with inherited stdout/stderr (so its output streams live) and asserts success.
fn run_suite(name: &str, mut cmd: Command, agent: &common::Agent) {
    cmd.current_dir(repo())
        .env("KERNELBOX_URL", &agent.url)
        .env("KERNELBOX_HOME", kernelbox::config::home())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("E2B_API_KEY")
        .env_remove("E2B_ACCESS_TOKEN")
        .env_remove("E2B_SANDBOX_URL")
        .env_remove("E2B_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    eprintln!("==> {name}: {:?} against {}", cmd, agent.url);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + SUITE_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("{name}: waiting for the suite failed: {e}"),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: the suite did not finish within {SUITE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{name}: the official-SDK suite failed ({status}); see its output above"
    );
}

#[test]
fn python_sdk() {
    let venv = kernelbox::config::home().join("sdk").join("python");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        not_installed(
            "Python SDK venv",
            &format!("{} is missing", python.display()),
        );
    }
    require_same(
        &venv.join("requirements.installed.txt"),
        &repo().join("tests/sdk/python/requirements.txt"),
        "Python SDK venv",
    );

    let agent = common::Agent::start(&["--env", "KERNELBOX_SANDBOX_VAR=sandbox-value"]);
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "tests/sdk/python", "-q"]);
    let _secured = secured_agent(&mut cmd);
    run_suite("python_sdk", cmd, &agent);
}

#[test]
fn js_sdk() {
    let dir = kernelbox::config::home().join("sdk").join("js");
    let package = dir.join("node_modules/@e2b/code-interpreter/package.json");
    if !package.is_file() {
        not_installed("JS SDK", &format!("{} is missing", package.display()));
    }
    require_same(
        &dir.join("package-lock.json"),
        &repo().join("tests/sdk/js/package-lock.json"),
        "JS SDK",
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/sdk/js"))
        .expect("read tests/sdk/js")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".test.mjs"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/sdk/js/*.test.mjs files found");

    let agent = common::Agent::start(&["--env", "KERNELBOX_SANDBOX_VAR=sandbox-value"]);
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"]).args(&files);
    let _secured = secured_agent(&mut cmd);
    run_suite("js_sdk", cmd, &agent);
}
