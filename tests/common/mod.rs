//! Shared harness for integration tests: starts a real `kernelbox agent` on a free loopback port
//! and kills it (and, through the agent, its kernels) when dropped.

#![allow(dead_code)]

pub mod run;
pub mod sandbox;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kernelbox::agent::{loopback_command, ReadyLine};
use std::time::{Duration, Instant};

/// A running agent. Its kernels are children of the agent and die with it.
pub struct Agent {
    /// The interpreter (49999); with `E2b-Sandbox-Port` it answers for the sandbox API too.
    pub url: String,
    /// The sandbox API's own listener (49983).
    pub envd_url: String,
    pub workdir: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts `kernelbox agent --port 0` with the given extra arguments and waits until it prints
    /// the `listening on` line, which it does only once its default contexts are ready.
    pub fn start(extra: &[&str]) -> Agent {
        let workdir = tempdir("workdir");
        Self::start_in(&workdir, extra)
    }

    pub fn start_in(workdir: &std::path::Path, extra: &[&str]) -> Agent {
        Self::start_with_env(workdir, extra, &[])
    }

    /// As [`Agent::start_in`], with extra environment variables for the agent.
    pub fn start_with_env(
        workdir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut cmd = loopback_command(env!("CARGO_BIN_EXE_kernelbox").as_ref(), workdir);
        cmd.envs(env.iter().copied());
        cmd.args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "kernelbox=warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // A test binary never leaves agents (or their kernels) behind.
        die_with_this_thread(&mut cmd);
        let mut child = cmd.spawn().expect("spawn kernelbox agent");
        let stdout = child.stdout.take().expect("agent stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut envd_url = String::new();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match ReadyLine::parse(&line) {
                    Some(ReadyLine::SandboxApi(url)) => envd_url = url,
                    Some(ReadyLine::Interpreter(url)) if !sent => {
                        let _ = tx.send((url, envd_url.clone()));
                        sent = true;
                    }
                    _ => {}
                }
                // Keep draining so the agent never blocks on a full pipe.
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let (url, envd_url) = loop {
            if let Ok(urls) = rx.recv_timeout(Duration::from_millis(100)) {
                break urls;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kernelbox agent exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kernelbox agent was not ready within 120 s");
            }
        };
        Agent {
            url,
            envd_url,
            workdir: workdir.to_path_buf(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM first so the agent shuts its kernels down, then make sure.
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
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

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Makes the child get SIGTERM when the thread that starts it exits.
pub fn die_with_this_thread(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
}

/// One agent shared by all tests of a test binary, started on a thread that lives as long as
/// the process (the agent's death signal is tied to the starting thread). Tests that need state
/// create their own contexts on it.
pub fn shared_agent() -> &'static str {
    shared_agent_with(&["--env", "KERNELBOX_SANDBOX_VAR=sandbox-value"])
}

/// [`shared_agent`] with other arguments. There is one agent per test binary: the first call's
/// arguments win.
pub fn shared_agent_with(extra: &'static [&'static str]) -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let agent = Agent::start(extra);
            let _ = tx.send(agent.url.clone());
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared agent started")
    })
}

/// A fresh directory under the system temp dir, unique per call.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kernelbox-test-{tag}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}
