//! Child processes that never outlive the agent: each runs in its own process group (so it and
//! everything it starts can be signalled at once), is killed by the kernel when the agent dies
//! (`PR_SET_PDEATHSIG`), and is killed with its group when its [`ProcessGuard`] is dropped.

use std::path::PathBuf;

/// The signals kernelbox sends to its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: interrupt the running work (a kernel's cell).
    Interrupt,
    /// SIGTERM: please exit.
    Terminate,
    /// SIGKILL: exit now.
    Kill,
    /// SIGUSR1 and SIGUSR2: whatever the process defines (Deno's prelude: abandon what the cell
    /// awaits).
    User1,
    User2,
    /// SIGURG: ignored unless the process handles it, so a kernel whose handler is missing is
    /// not hurt (the Java kernel's start-up code: stop the interrupted cell's thread).
    Urgent,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::User1 => libc::SIGUSR1,
            Signal::User2 => libc::SIGUSR2,
            Signal::Urgent => libc::SIGURG,
        }
    }
}

/// Starts the child as the leader of a new process group (its pid is the group id), so
/// [`killpg`] reaches whatever it spawns too.
pub fn new_process_group(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits, so a SIGKILLed
/// agent leaves no children behind. (The tie is to the spawning *thread*: spawn from a thread that
/// lives as long as the owner, such as a runtime worker.)
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches nothing but the child's own flags.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

/// The OOM score adjustment of the agent's children: the kernel's OOM killer picks a runaway
/// command or kernel before the agent, so `/health` and the streams survive memory pressure.
const CHILD_OOM_SCORE_ADJ: &[u8] = b"100";
/// How much nicer than the agent its children run, so a busy command never starves the agent.
const CHILD_NICE_INCREMENT: libc::c_int = 5;

/// Makes the child the first victim of the OOM killer and gives it a lower CPU priority than the
/// agent (as E2B's envd does for its commands). Both only ever lower the child's standing, so
/// they need no privilege; failures (no `/proc`) are ignored. Register it before a user change:
/// `/proc/self` stops being writable after one.
pub fn deprioritize(cmd: &mut tokio::process::Command) {
    // SAFETY: open/write/close/nice are async-signal-safe and touch only the child.
    unsafe {
        cmd.pre_exec(|| {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(
                    fd,
                    CHILD_OOM_SCORE_ADJ.as_ptr().cast(),
                    CHILD_OOM_SCORE_ADJ.len(),
                );
                libc::close(fd);
            }
            libc::nice(CHILD_NICE_INCREMENT);
            Ok(())
        });
    }
}

/// Sends `sig` to the process `pid`. Pids 0 and 1 are refused (they would mean "my own group" and
/// init); errors such as ESRCH (already gone) are expected and ignored.
pub fn signal(pid: i32, sig: Signal) {
    if pid > 1 {
        // SAFETY: a plain syscall on a pid we spawned.
        unsafe { libc::kill(pid, sig.raw()) };
    }
}

/// Sends `sig` to the process group led by `pid` (see [`new_process_group`]). Same rules as
/// [`signal`].
pub fn killpg(pid: i32, sig: Signal) {
    if pid > 1 {
        // SAFETY: a plain syscall on a group we created.
        unsafe { libc::killpg(pid, sig.raw()) };
    }
}

/// Owns a child's process group and the files that belong to it (such as a connection file with
/// a key in it). Dropping the guard SIGKILLs the group and removes the files, so a start-up that
/// fails part way and an owner that goes away both leave nothing behind.
#[derive(Debug, Default)]
pub struct ProcessGuard {
    /// `None` until the child is spawned.
    pid: Option<i32>,
    files: Vec<PathBuf>,
    /// The value of [`TAG_VAR`] in the child's environment (see [`ProcessGuard::tag`]).
    tag: Option<String>,
}

/// The environment variable that marks every descendant of a guarded child.
pub const TAG_VAR: &str = "KERNELBOX_PROCESS_TAG";
/// Sweeps of `/proc` for tagged processes: a process may fork while one runs.
const SWEEPS: usize = 3;

impl ProcessGuard {
    /// A guard for files created before the child exists; see [`ProcessGuard::adopt`].
    pub fn new(files: Vec<PathBuf>) -> ProcessGuard {
        ProcessGuard {
            pid: None,
            files,
            tag: None,
        }
    }

    /// Marks the child about to be spawned, and through inheritance everything it starts, with a
    /// tag in its environment, so that dropping the guard also kills descendants that left its
    /// process group: a shell's background jobs (bash_kernel's bash has job control, so each
    /// job gets a group of its own), `setsid` daemons, orphans of a child that was SIGKILLed.
    /// A process that clears its environment escapes; nothing else does.
    pub fn tag(&mut self, cmd: &mut tokio::process::Command) {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        cmd.env(TAG_VAR, &tag);
        self.tag = Some(tag);
    }

    /// Takes charge of the spawned child's process group.
    pub fn adopt(&mut self, pid: Option<u32>) {
        self.pid = pid.and_then(|p| i32::try_from(p).ok());
    }

    /// The child's pid (its group id), once spawned.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            killpg(pid, Signal::Kill);
        }
        if let Some(tag) = &self.tag {
            kill_tagged(tag);
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// SIGKILLs every process whose environment holds `TAG_VAR=tag` (one scan of `/proc` costs
/// about a millisecond per few hundred processes).
fn kill_tagged(tag: &str) {
    let needle = format!("{TAG_VAR}={tag}\0").into_bytes();
    for _ in 0..SWEEPS {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut found = false;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let tagged = environ.starts_with(&needle[..])
                || environ
                    .windows(needle.len() + 1)
                    .any(|w| w[0] == 0 && w[1..] == needle[..]);
            if tagged {
                signal(pid, Signal::Kill);
                found = true;
            }
        }
        if !found {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_guard_kills_the_whole_group() {
        let mut cmd = tokio::process::Command::new("sh");
        // The shell starts a grandchild in the same group, then waits.
        cmd.args(["-c", "sleep 30 & wait"]);
        new_process_group(&mut cmd);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn sh");
        let mut guard = ProcessGuard::new(Vec::new());
        guard.adopt(child.id());
        drop(guard);
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .expect("killed in time")
            .expect("status");
        assert!(!status.success());
    }

    /// The hard variant: a grandchild in a session (and group) of its own, as a shell's
    /// background job or a daemon is. killpg misses it; the tag does not.
    #[tokio::test]
    async fn a_dropped_tagged_guard_kills_descendants_that_left_the_group() {
        let pid_file = std::env::temp_dir().join(format!("kb-tag-{}", std::process::id()));
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "setsid sleep 300 & echo $! > {}; wait",
            pid_file.display()
        ));
        new_process_group(&mut cmd);
        let mut guard = ProcessGuard::new(Vec::new());
        guard.tag(&mut cmd);
        let mut child = cmd.spawn().expect("spawn sh");
        guard.adopt(child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let grandchild: i32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        drop(guard);
        let _ = child.wait().await;
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(grandchild) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = std::fs::remove_file(&pid_file);
        assert!(!alive(grandchild), "the setsid grandchild survived");
    }
}
