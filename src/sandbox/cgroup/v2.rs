//! cgroup v2: one folder per sandbox in the unified hierarchy.
//!
//! v2 has "no internal processes": a folder hands controllers to its children
//! (`cgroup.subtree_control`) only while it holds no process itself, the hierarchy's root
//! excepted. The current process's folder must therefore be the root (a container) or a
//! delegated folder kernelbox has to itself; otherwise [`CgroupError::NotDelegated`] says so,
//! with the command that gives it one.

use std::path::Path;

use super::{create_under_shared_parent, io_err, oom_kills, read, read_u64, write, CgroupError};
use crate::sandbox::{Limits, Usage};

/// What every sandbox folder needs handed down: memory and pids for limits and accounting, cpu
/// for quotas and weights.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// Period for CPU quotas (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// Creates `dir` (`<own>/kernelbox/<id>`) with the controllers handed down to it, and writes
/// `limits`.
pub(super) fn create(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    let own = parent.parent().unwrap_or(parent);
    delegate(own)?;
    create_under_shared_parent(dir, false)?;
    delegate(parent)?;
    apply(dir, limits)
}

/// Enables [`CONTROLLERS`] in `folder`'s `cgroup.subtree_control` where they are not yet.
fn delegate(folder: &Path) -> Result<(), CgroupError> {
    let enabled = read(&folder.join("cgroup.subtree_control"))?;
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let available = read(&folder.join("cgroup.controllers"))?;
    if let Some(absent) = missing
        .iter()
        .find(|c| !available.split_whitespace().any(|a| a == **c))
    {
        return Err(CgroupError::MissingController(absent));
    }
    let change: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    let path = folder.join("cgroup.subtree_control");
    std::fs::write(&path, change.join(" ")).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            CgroupError::NotDelegated {
                path: folder.display().to_string(),
            }
        } else {
            io_err(&path, e)
        }
    })
}

fn apply(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    if let Some(bytes) = limits.memory_bytes {
        write(&dir.join("memory.max"), &bytes.to_string())?;
        // No swapping past the limit (v1's memsw = limit). Absent without swap accounting.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
    }
    if let Some(cpus) = limits.cpus {
        let quota = (cpus * CPU_PERIOD_US as f64).round().max(1000.0) as u64;
        write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
    }
    if let Some(shares) = limits.cpu_shares {
        write(&dir.join("cpu.weight"), &weight(shares).to_string())?;
    }
    if let Some(pids) = limits.pids {
        write(&dir.join("pids.max"), &pids.to_string())?;
    }
    Ok(())
}

/// v1 `cpu.shares` (2–262144, default 1024) as v2 `cpu.weight` (1–10000, default 100), by the
/// kernel's and runc's linear map.
fn weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + (shares - 2) * 9_999 / 262_142
}

pub(super) fn usage(dir: &Path) -> Result<Usage, CgroupError> {
    let limit = read(&dir.join("memory.max"))?;
    let cpu = read(&dir.join("cpu.stat")).ok().and_then(|stat| {
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|n| n.trim().parse::<u64>().ok())
    });
    Ok(Usage {
        memory_bytes: read_u64(&dir.join("memory.current"))?,
        // "max" when unlimited.
        memory_limit_bytes: limit.trim().parse().ok(),
        cpu_nanos: cpu.map(|usec| usec * 1_000),
        pids: read_u64(&dir.join("pids.current"))?,
        oom_kills: oom_kills(&dir.join("memory.events")),
    })
}

/// Kills every process in `dir` and its descendants at once (`cgroup.kill`, kernel 5.14+); on
/// an older kernel the caller's SIGKILL loop does it alone.
pub(super) fn kill_all(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

#[cfg(test)]
mod tests {
    use super::super::{Cgroups, Layout};
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A folder of plain files laid out as the kernel's v2 files are.
    fn fake_tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("kb-cgv2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in [root.clone(), root.join("kernelbox")] {
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(
                folder.join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .expect("controllers");
            std::fs::write(folder.join("cgroup.subtree_control"), "").expect("subtree");
        }
        root
    }

    #[test]
    fn limits_and_delegation_are_written_as_v2_names_them() {
        let root = fake_tree("limits");
        let dir = root.join("kernelbox").join("sbx");
        let limits = Limits {
            memory_bytes: Some(512 << 20),
            cpus: Some(1.5),
            cpu_shares: Some(1024),
            pids: Some(128),
        };
        create(&dir, &limits).expect("create");
        let file = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(
            file(&root.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            file(&root.join("kernelbox/cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(file(&dir.join("memory.max")), (512u64 << 20).to_string());
        assert_eq!(file(&dir.join("cpu.max")), "150000 100000");
        assert_eq!(file(&dir.join("cpu.weight")), "39");
        assert_eq!(file(&dir.join("pids.max")), "128");

        std::fs::write(dir.join("memory.current"), "4096\n").expect("w");
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("w");
        std::fs::write(dir.join("pids.current"), "3\n").expect("w");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
        )
        .expect("w");
        let used = usage(&dir).expect("usage");
        assert_eq!(used.memory_bytes, 4096);
        assert_eq!(used.memory_limit_bytes, Some(512 << 20));
        assert_eq!(used.cpu_nanos, Some(1_500_000));
        assert_eq!(used.pids, 3);
        assert_eq!(used.oom_kills, 1);
        std::fs::write(dir.join("memory.max"), "max\n").expect("w");
        assert_eq!(usage(&dir).expect("usage").memory_limit_bytes, None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_missing_controller_is_named() {
        let root = fake_tree("missing");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory\n").expect("w");
        let err = create(&root.join("kernelbox/sbx"), &Limits::default()).expect_err("no pids");
        assert!(
            matches!(err, CgroupError::MissingController("pids")),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn weights_follow_the_kernels_map() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
        assert_eq!(weight(u64::MAX), 10_000);
    }

    /// The real v2 hierarchy (controller-less on a hybrid host is enough): a shell and the two
    /// processes it forked die with the folder, which is gone after.
    #[test]
    fn destroy_kills_a_process_tree_and_removes_the_folder() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let Some(base) = super::super::v2_base().ok().filter(|_| root) else {
            eprintln!("skipped: needs root and a cgroup v2 mount");
            return;
        };
        let dir = base
            .join(format!("kernelbox-test-{}", std::process::id()))
            .join("tree");
        create_under_shared_parent(&dir, false).expect("mkdir");
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .expect("open procs");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "sleep 60 & sleep 60 & wait"]);
        // SAFETY: only write(2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut shell = command.spawn().expect("spawn");
        let cgroups = Cgroups {
            layout: Layout::V2(dir.clone()),
            removed: false,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cgroups.procs().expect("procs").len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pids = cgroups.procs().expect("procs");
        assert_eq!(pids.len(), 3, "{pids:?}");
        cgroups.destroy(Duration::from_secs(5)).expect("destroy");
        assert!(!shell.wait().expect("wait").success());
        assert!(!dir.exists());
        assert!(!dir.parent().expect("parent").exists());
    }
}
