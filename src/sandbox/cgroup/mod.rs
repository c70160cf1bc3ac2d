//! Per-sandbox cgroups: limits (memory, CPU, pids), accounting, and "kill everything in it".
//!
//! A sandbox's cgroups nest under the cgroups the *current process* is in
//! (`<mount>/<own path>/kernelbox/<id>`, read from `/proc/self/cgroup` and
//! `/proc/self/mountinfo`), never at a hierarchy's root of their own accord: a `serve` started in a
//! limited cgroup keeps its sandboxes inside that limit, and parallel instances never touch each
//! other's trees.
//!
//! Two drivers behind one type, picked by what the current process is in:
//! - [`v1`]: one hierarchy per controller (as on the CI machine kind: a "hybrid" layout whose v2
//!   mount carries no controllers). Tested end to end here.
//! - [`v2`]: the unified hierarchy. The folder logic, kill (`cgroup.kill`) and process listing
//!   are tested here on the controller-less v2 mount; limits and accounting need a host whose v2
//!   mount carries the memory, cpu and pids controllers, and are tested against a folder of files
//!   laid out as the kernel's.

mod v1;
mod v2;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Limits, SandboxId, Usage};

/// The folder under the current process's cgroups that holds every sandbox's cgroup.
pub(super) const PARENT: &str = "kernelbox";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo lists no cgroup2)")]
    NoV2Mount,
    #[error("no cgroup hierarchy with the {0} controller is available")]
    MissingController(&'static str),
    #[error(
        "cgroup v2: {path} holds processes, so it cannot hand controllers to sandboxes; start \
         kernelbox in a cgroup of its own (e.g. `systemd-run --scope -p Delegate=yes kernelbox serve`)"
    )]
    NotDelegated { path: String },
    #[error("cgroup {path} still has processes after {waited:?} of SIGKILL")]
    Unkillable { path: String, waited: Duration },
}

fn io_err(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One sandbox's cgroups. Created with [`Cgroups::create`]; [`Cgroups::destroy`] kills what is
/// left in them and removes them (dropping without it removes the folders as far as possible).
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    removed: bool,
}

#[derive(Debug)]
enum Layout {
    V1(v1::Dirs),
    V2(PathBuf),
}

impl Cgroups {
    /// Creates the sandbox's cgroups under the current process's and writes `limits` into them.
    pub fn create(id: &SandboxId, limits: &Limits) -> Result<Cgroups, CgroupError> {
        let cgroups = Cgroups::locate(id)?;
        match &cgroups.layout {
            Layout::V1(dirs) => dirs.create(limits)?,
            Layout::V2(dir) => v2::create(dir, limits)?,
        }
        Ok(cgroups)
    }

    /// The cgroups a sandbox of this id has or would have (nothing is created): for reclaiming
    /// what an earlier run left, with [`Cgroups::destroy`].
    pub fn locate(id: &SandboxId) -> Result<Cgroups, CgroupError> {
        let own = read(Path::new("/proc/self/cgroup"))?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let layout = if v1::in_use(&own) {
            Layout::V1(v1::Dirs::under(&own, &mountinfo, id)?)
        } else {
            Layout::V2(v2_base_of(&own, &mountinfo)?.join(PARENT).join(id.as_str()))
        };
        Ok(Cgroups {
            layout,
            removed: false,
        })
    }

    /// Moves `pid` (and, as it forks later, its descendants) into the sandbox's cgroups.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            let path = dir.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }

    /// The processes in the sandbox (host pids): the pids controller's list on v1.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        procs_of(match &self.layout {
            Layout::V1(dirs) => dirs.pids_dir(),
            Layout::V2(dir) => dir,
        })
    }

    /// The folders (one per hierarchy), for tests and reclaim.
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1(dirs) => dirs.paths(),
            Layout::V2(dir) => vec![dir.clone()],
        }
    }

    /// Memory, CPU time and process count now.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        match &self.layout {
            Layout::V1(dirs) => dirs.usage(),
            Layout::V2(dir) => v2::usage(dir),
        }
    }

    /// SIGKILLs every process in the sandbox until none is left (a process may fork between the
    /// read and the kill, hence the loop; v2's `cgroup.kill` does it in one step where the
    /// kernel has it), then removes the cgroups. Blocking; at most `patience`.
    pub fn destroy(mut self, patience: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + patience;
        if let Layout::V2(dir) = &self.layout {
            v2::kill_all(dir);
        }
        loop {
            let procs = self.procs()?;
            if procs.is_empty() {
                break;
            }
            kill(&procs);
            if Instant::now() > deadline {
                return Err(CgroupError::Unkillable {
                    path: self.paths()[0].display().to_string(),
                    waited: patience,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.removed = true;
        self.remove_dirs(deadline)
    }

    /// Removes the folders; a cgroup whose last process has just died may be busy for a moment.
    fn remove_dirs(&self, deadline: Instant) -> Result<(), CgroupError> {
        for dir in self.paths() {
            remove_folder(&dir, deadline)?;
        }
        Ok(())
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        if !self.removed {
            kill(&self.procs().unwrap_or_default());
            let _ = self.remove_dirs(Instant::now() + Duration::from_secs(2));
        }
    }
}

/// Removes a sandbox's folder (retrying until `deadline`: a cgroup whose last process has just
/// died may be busy for a moment), then the parent all sandboxes share if it is empty.
pub(super) fn remove_folder(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("rmdir {}: {e}; retrying", dir.display());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err(dir, e)),
        }
    }
    // The shared parent goes when the last sandbox does; busy (another sandbox) is fine.
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// SIGKILLs `pids` (read from a sandbox's cgroup).
pub(super) fn kill(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory effects; pids come from the sandbox's cgroup.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io_err(path, e))
}

/// The `oom_kill` count of a flat-keyed file (v1 `memory.oom_control`, v2 `memory.events`);
/// 0 where the kernel does not count it.
fn oom_kills(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A number from a one-value cgroup file (`0` if unreadable as one).
fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    Ok(read(path)?.trim().parse().unwrap_or(0))
}

/// Creates a sandbox's cgroup folder and, if need be, the parent all sandboxes share. The
/// parent goes when the last sandbox does, so a kill elsewhere may remove it between the two
/// `mkdir`s: then both are made again.
pub(super) fn create_under_shared_parent(dir: &Path, shared: bool) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    let mut attempts = 0;
    loop {
        match std::fs::create_dir(parent) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(io_err(parent, e)),
            _ => {}
        }
        match std::fs::create_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && shared => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(io_err(dir, e)),
        }
    }
}

/// The processes listed in a cgroup folder (either version); none once it is gone.
pub(super) fn procs_of(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// The folder of the current process's cgroup in the v2 hierarchy (on a hybrid host, the
/// controller-less `unified` mount).
pub(super) fn v2_base() -> Result<PathBuf, CgroupError> {
    let own = read(Path::new("/proc/self/cgroup"))?;
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    v2_base_of(&own, &mountinfo)
}

fn v2_base_of(own: &str, mountinfo: &str) -> Result<PathBuf, CgroupError> {
    let own_path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(CgroupError::NoV2Mount)?;
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let (root, point) = (*fields.get(3)?, *fields.get(4)?);
            (right.starts_with("cgroup2 ") && root == "/").then(|| PathBuf::from(point))
        })
        .ok_or(CgroupError::NoV2Mount)?;
    Ok(mount.join(own_path.trim().trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids
38 25 0:34 / /sys/fs/cgroup/unified rw,relatime shared:17 - cgroup2 cgroup2 rw";

    #[test]
    fn the_v2_base_is_the_unified_mount_plus_the_own_path() {
        let own = "4:memory:/process_api/abc\n0::/session/x\n";
        assert_eq!(
            v2_base_of(own, MOUNTINFO).expect("v2"),
            PathBuf::from("/sys/fs/cgroup/unified/session/x")
        );
        let v1_only = MOUNTINFO.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(matches!(
            v2_base_of(own, &v1_only),
            Err(CgroupError::NoV2Mount)
        ));
    }

    #[test]
    fn a_hybrid_host_uses_v1_and_a_unified_one_v2() {
        assert!(v1::in_use("8:pids:/\n4:memory:/a\n0::/\n"));
        assert!(!v1::in_use("0::/user.slice/x.scope\n"));
        // Only a named v1 hierarchy (systemd's) beside v2: v2 holds the controllers.
        assert!(!v1::in_use("1:name=systemd:/\n0::/user.slice\n"));
    }
}
