//! The agent's own life: kernels never outlive it, whether it stops cleanly or is killed.

mod common;

use std::time::{Duration, Instant};

/// The agent's child processes (its kernels).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kernels_die_with_a_killed_agent() {
    let agent = common::Agent::start(&["--default-languages", "python,javascript"]);
    let kernels = children(agent.pid());
    assert_eq!(
        kernels.len(),
        2,
        "one kernel per default context: {kernels:?}"
    );
    let status = std::process::Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        wait_gone(&kernels),
        Vec::<u32>::new(),
        "kernels outlived a SIGKILLed agent"
    );
}

#[test]
fn kernels_are_shut_down_with_a_stopped_agent() {
    let agent = common::Agent::start(&["--default-languages", "python,javascript"]);
    let kernels = children(agent.pid());
    assert_eq!(kernels.len(), 2, "{kernels:?}");
    let pid = agent.pid();
    drop(agent); // SIGTERM, then waits for the agent to exit
    assert!(!alive(pid), "the agent did not stop on SIGTERM");
    assert_eq!(
        wait_gone(&kernels),
        Vec::<u32>::new(),
        "kernels outlived a stopped agent"
    );
}

/// The template's start command brings a killed agent back (E2B relies on systemd for this).
#[test]
fn start_up_script_restarts_a_killed_agent() {
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let workdir = common::tempdir("startup");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("startup/start-up.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        // Later flags win: keep the test on loopback and a free port.
        .args([
            "--addr",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--envd-port",
            "0",
        ])
        .args(["--default-languages", "python"])
        .env("KERNELBOX_BIN", env!("CARGO_BIN_EXE_kernelbox"))
        .env("KERNELBOX_WORKDIR", &workdir)
        .env("KERNELBOX_HOME", kernelbox::config::home())
        .env("RUST_LOG", "kernelbox=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    common::die_with_this_thread(&mut cmd);
    let mut script = cmd.spawn().unwrap();
    let healthy = |within: Duration| -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.1 200") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(healthy(Duration::from_secs(60)), "agent never came up");
    let agents = children(script.id());
    assert_eq!(agents.len(), 1, "{agents:?}");
    Command::new("kill")
        .args(["-KILL", &agents[0].to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_gone(&agents), Vec::<u32>::new());
    assert!(healthy(Duration::from_secs(60)), "agent not restarted");
    let again = children(script.id());
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], agents[0]);
    Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status()
        .unwrap();
    let status = script.wait().unwrap();
    assert!(
        status.success(),
        "start-up.sh exits cleanly on SIGTERM: {status}"
    );
    assert_eq!(
        wait_gone(&again),
        Vec::<u32>::new(),
        "agent outlived its script"
    );
}

/// Processes a cell started that left the kernel's process group die with their context: a
/// bash background job (bash_kernel's shell has job control, so the job gets a group of its own)
/// and a Python `setsid` child, both after the kernel itself was SIGKILLed (their parent gone,
/// nothing left to signal them but the agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_left_the_kernels_group_die_with_their_context() {
    let agent = common::Agent::start(&["--default-languages", ""]);
    let dir = common::tempdir("escapees");
    let mut escapees = Vec::new();
    for (language, code) in [
        ("bash", "sleep 300 &\necho $! > {dir}/bash.pid"),
        (
            "python",
            "import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\nopen('{dir}/python.pid', 'w').write(str(p.pid))",
        ),
    ] {
        let ctx = common::run::new_context(&agent.url, language).await;
        let code = code.replace("{dir}", &dir.display().to_string());
        common::run::run_in(&agent.url, &ctx, &code).await;
        let pid_file = dir.join(format!("{language}.pid"));
        common::run::wait_for_file(&pid_file).await;
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        assert!(alive(pid), "{language}: the escapee runs");
        // The kernel dies by SIGKILL first: the escapee is an orphan now.
        let kernel = children(agent.pid())
            .into_iter()
            .find(|k| children(*k).contains(&pid) || {
                children(*k).iter().any(|c| children(*c).contains(&pid))
            });
        if let Some(kernel) = kernel {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &kernel.to_string()])
                .status();
        }
        let deleted = reqwest::Client::new()
            .delete(format!("{}/contexts/{ctx}", agent.url))
            .send()
            .await
            .expect("delete");
        assert!(deleted.status().is_success());
        escapees.push((language, pid));
    }
    for (language, pid) in escapees {
        assert_eq!(
            wait_gone(&[pid]),
            Vec::<u32>::new(),
            "{language}: a process outside the kernel's group outlived its context"
        );
    }
}
