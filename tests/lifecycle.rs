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
