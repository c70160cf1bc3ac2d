//! The soak, short: a fixed seed of a few hundred mixed runs (prints, errors, timeouts,
//! disconnects, interrupts, SIGKILLs, awaiting cells) against a fresh agent, about two minutes on
//! a 2-core machine. It fails on any hung stream, lost or misrouted output, execution with more
//! than one error, or kernel process left after the contexts are deleted; the soak's tables are
//! printed either way.

mod common;

use std::process::Command;

#[test]
fn short_soak_has_no_hang_loss_or_leak() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kernelbox-soak"));
    cmd.args(["--seed", "20261202", "--runs", "250", "--max-secs", "90"])
        .args(["--concurrency", "4", "--contexts-per-language", "2"])
        .args(["--agent-bin", env!("CARGO_BIN_EXE_kernelbox")]);
    common::die_with_this_thread(&mut cmd);
    let out = cmd.output().expect("run kernelbox-soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The agent's own log lines are noise here; the soak's notes start with its name.
    let notes: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("kernelbox-soak"))
        .collect();
    println!("{}\n{stdout}", notes.join("\n"));
    assert!(
        out.status.success(),
        "the soak failed ({}): see the tables above (streams hung, lost lines, misrouted, \
         executions with more than one error, kernel processes left must all be 0)",
        out.status
    );
}
