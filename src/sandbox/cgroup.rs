//! Per-sandbox cgroups: limits (memory, CPU, pids), accounting, and "kill everything in it".
//!
//! A sandbox's cgroups nest under the cgroups the *current process* is in, one per controller
//! (`<mount>/<own path>/kernelbox/<id>`, read from `/proc/self/cgroup` and
//! `/proc/self/mountinfo`), never at a hierarchy's root of their own accord: a `serve` started in a
//! limited cgroup keeps its sandboxes inside that limit, and parallel instances never touch each
//! other's trees.
//!
//! cgroup v1 (separate hierarchies per controller, as on the CI machine kind: a "hybrid" layout
//! whose v2 mount carries no controllers) is implemented. cgroup v2 goes behind the same type
//! ([`Cgroups::create`] picks the driver) and is a named stub for now:
//! [`CgroupError::V2NotYetSupported`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Limits, SandboxId};

/// CFS period for CPU quotas (the kernel's default, 100 ms).
const CFS_PERIOD_US: u64 = 100_000;
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
    #[error("this host uses cgroup v2 only; the v2 driver is not written yet")]
    V2NotYetSupported,
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo lists no cgroup2)")]
    NoV2Mount,
    #[error("no cgroup v1 hierarchy with the {0} controller is mounted")]
    MissingController(&'static str),
    #[error("cgroup {path} still has processes after {waited:?} of SIGKILL")]
    Unkillable { path: String, waited: Duration },
}

fn io_err(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A v1 controller kernelbox uses, and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    /// Limits: `memory.limit_in_bytes` (+ `memsw`); usage.
    Memory,
    /// Limits: CFS quota and shares.
    Cpu,
    /// Usage only: CPU time (`cpuacct.usage`); mounted apart from `cpu` on some hosts.
    Cpuacct,
    /// Limit: `pids.max`; also the authoritative list of the sandbox's processes.
    Pids,
}

impl Controller {
    const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
        }
    }
}

/// One sandbox's cgroups. Created with [`Cgroups::create`]; [`Cgroups::destroy`] kills what is
/// left in them and removes them (dropping without it removes the folders as far as possible).
#[derive(Debug)]
pub struct Cgroups {
    /// cgroup v1: one folder per controller, in [`Controller::ALL`] order (a controller sharing
    /// a hierarchy with an earlier one reuses its folder).
    dirs: Vec<(Controller, PathBuf)>,
    removed: bool,
}

impl Cgroups {
    /// Creates the sandbox's cgroups under the current process's and writes `limits` into them.
    pub fn create(id: &SandboxId, limits: &Limits) -> Result<Cgroups, CgroupError> {
        let cgroups = Cgroups::locate(id)?;
        for (_, dir) in &cgroups.dirs {
            // A controller sharing a hierarchy with an earlier one shares its folder.
            let shared = cgroups.dirs.iter().filter(|(_, d)| d == dir).count() > 1;
            create_under_shared_parent(dir, shared)?;
        }
        cgroups.apply(limits)?;
        Ok(cgroups)
    }

    /// The cgroups a sandbox of this id has or would have (nothing is created): for reclaiming
    /// what an earlier run left, with [`Cgroups::destroy`].
    pub fn locate(id: &SandboxId) -> Result<Cgroups, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| io_err(Path::new("/proc/self/cgroup"), e))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| io_err(Path::new("/proc/self/mountinfo"), e))?;
        let bases = v1_bases(&own, &mountinfo)?;
        let dirs = bases
            .into_iter()
            .map(|(controller, base)| (controller, base.join(PARENT).join(id.as_str())))
            .collect();
        Ok(Cgroups {
            dirs,
            removed: false,
        })
    }

    fn dir(&self, controller: Controller) -> &Path {
        // `create` fills every controller of ALL, or fails.
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn write(&self, controller: Controller, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir(controller).join(file);
        std::fs::write(&path, value).map_err(|e| io_err(&path, e))
    }

    fn read(&self, controller: Controller, file: &str) -> Result<String, CgroupError> {
        let path = self.dir(controller).join(file);
        std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory_bytes {
            self.write(
                Controller::Memory,
                "memory.limit_in_bytes",
                &bytes.to_string(),
            )?;
            // Memory + swap at the same value: no swapping past the limit. Absent when the
            // kernel does not account swap.
            if self
                .dir(Controller::Memory)
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                self.write(
                    Controller::Memory,
                    "memory.memsw.limit_in_bytes",
                    &bytes.to_string(),
                )?;
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = (cpus * CFS_PERIOD_US as f64).round().max(1000.0) as u64;
            self.write(
                Controller::Cpu,
                "cpu.cfs_period_us",
                &CFS_PERIOD_US.to_string(),
            )?;
            self.write(Controller::Cpu, "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            self.write(Controller::Cpu, "cpu.shares", &shares.to_string())?;
        }
        if let Some(pids) = limits.pids {
            self.write(Controller::Pids, "pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` (and, as it forks later, its descendants) into every controller's cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        let mut seen: Vec<&Path> = Vec::new();
        for (_, dir) in &self.dirs {
            if seen.contains(&dir.as_path()) {
                continue;
            }
            seen.push(dir);
            let path = dir.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }

    /// The processes in the sandbox (host pids), from the pids controller.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.dir(Controller::Pids).join("cgroup.procs");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The folders, one per controller (for tests and reclaim).
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, d) in &self.dirs {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }

    /// Memory, CPU time and process count now.
    pub fn usage(&self) -> Result<super::Usage, CgroupError> {
        let num =
            |c, f| -> Result<u64, CgroupError> { Ok(self.read(c, f)?.trim().parse().unwrap_or(0)) };
        let limit = num(Controller::Memory, "memory.limit_in_bytes")?;
        Ok(super::Usage {
            memory_bytes: num(Controller::Memory, "memory.usage_in_bytes")?,
            // v1 reports "no limit" as a huge page-aligned number.
            memory_limit_bytes: (limit < i64::MAX as u64 / 2).then_some(limit),
            cpu_nanos: num(Controller::Cpuacct, "cpuacct.usage").ok(),
            pids: num(Controller::Pids, "pids.current")?,
        })
    }

    /// SIGKILLs every process in the sandbox until none is left (a process may fork between the
    /// read and the kill, hence the loop), then removes the cgroups. Blocking; at most `patience`.
    pub fn destroy(mut self, patience: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + patience;
        loop {
            let procs = self.procs()?;
            if procs.is_empty() {
                break;
            }
            for pid in procs {
                // SAFETY: kill(2) has no memory effects; pids come from the sandbox's cgroup.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Unkillable {
                    path: self.dir(Controller::Pids).display().to_string(),
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
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("rmdir {}: {e}; retrying", dir.display());
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(io_err(&dir, e)),
                }
            }
            // The shared parent goes when the last sandbox does; busy (another sandbox) is fine.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        Ok(())
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        if !self.removed {
            let procs = self.procs().unwrap_or_default();
            for pid in procs {
                // SAFETY: as in `destroy`.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.remove_dirs(Instant::now() + Duration::from_secs(2));
        }
    }
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

/// The processes listed in a cgroup folder (either version); none if it is gone.
pub(super) fn procs_of(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The folder of the current process's cgroup in the v2 hierarchy (on a hybrid host, the
/// controller-less `unified` mount).
pub(super) fn v2_base() -> Result<PathBuf, CgroupError> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| io_err(Path::new("/proc/self/cgroup"), e))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io_err(Path::new("/proc/self/mountinfo"), e))?;
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

/// For each controller kernelbox uses: the folder of the current process's cgroup in that
/// controller's v1 hierarchy.
fn v1_bases(own: &str, mountinfo: &str) -> Result<Vec<(Controller, PathBuf)>, CgroupError> {
    let mut out = Vec::new();
    let mut any_v1 = false;
    for controller in Controller::ALL {
        let name = controller.name();
        // /proc/self/cgroup: `hierarchy-id:controller,list:/path`.
        let own_path = own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            list.split(',').any(|c| c == name).then_some(path)
        });
        let Some(own_path) = own_path else {
            if !any_v1 && own.lines().all(|l| l.starts_with("0::")) {
                return Err(CgroupError::V2NotYetSupported);
            }
            return Err(CgroupError::MissingController(name));
        };
        any_v1 = true;
        let mount = v1_mount(mountinfo, name).ok_or(CgroupError::MissingController(name))?;
        out.push((controller, mount.join(own_path.trim_start_matches('/'))));
    }
    Ok(out)
}

/// The mount point of the v1 hierarchy carrying `controller` (mounted at its root).
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next()?, right.next()?, right.next()?);
        let fields: Vec<&str> = left.split(' ').collect();
        let (root, point) = (*fields.get(3)?, *fields.get(4)?);
        (fstype == "cgroup" && root == "/" && options.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids
38 25 0:34 / /sys/fs/cgroup/unified rw,relatime shared:17 - cgroup2 cgroup2 rw";

    #[test]
    fn v1_bases_nest_under_the_processes_own_cgroups() {
        let own = "8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/x\n0::/\n";
        let bases = v1_bases(own, MOUNTINFO).expect("v1");
        assert_eq!(
            bases,
            vec![
                (
                    Controller::Memory,
                    PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
                ),
                (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu/x")),
                (
                    Controller::Cpuacct,
                    PathBuf::from("/sys/fs/cgroup/cpuacct/")
                ),
                (Controller::Pids, PathBuf::from("/sys/fs/cgroup/pids/")),
            ]
        );
    }

    #[test]
    fn a_v2_only_host_is_named_not_yet_supported() {
        let err = v1_bases("0::/user.slice\n", MOUNTINFO).expect_err("v2");
        assert!(matches!(err, CgroupError::V2NotYetSupported), "{err}");
    }

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
    fn joint_mounts_are_found_by_controller() {
        let info = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        assert_eq!(
            v1_mount(info, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount(info, "memory"), None);
    }
}
