//! cgroup v1: one hierarchy per controller, a folder per sandbox in each.

use std::path::{Path, PathBuf};

use super::{create_under_shared_parent, oom_kills, read, read_u64, write, CgroupError, PARENT};
use crate::sandbox::{Limits, SandboxId, Usage};

/// CFS period for CPU quotas (the kernel's default, 100 ms).
const CFS_PERIOD_US: u64 = 100_000;

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

/// Whether the current process is in v1 hierarchies (`/proc/self/cgroup` names the memory
/// controller on a line of its own hierarchy); otherwise the controllers are in v2's.
pub(super) fn in_use(own: &str) -> bool {
    own.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        parts.next();
        parts
            .next()
            .is_some_and(|list| list.split(',').any(|c| c == "memory"))
    })
}

/// One folder per controller, in [`Controller::ALL`] order (a controller sharing a hierarchy
/// with an earlier one shares its folder).
#[derive(Debug)]
pub(super) struct Dirs(Vec<(Controller, PathBuf)>);

impl Dirs {
    /// The folders of sandbox `id` under the current process's cgroups.
    pub(super) fn under(own: &str, mountinfo: &str, id: &SandboxId) -> Result<Dirs, CgroupError> {
        let bases = v1_bases(own, mountinfo)?;
        Ok(Dirs(
            bases
                .into_iter()
                .map(|(controller, base)| (controller, base.join(PARENT).join(id.as_str())))
                .collect(),
        ))
    }

    pub(super) fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for (_, dir) in &self.0 {
            let shared = self.0.iter().filter(|(_, d)| d == dir).count() > 1;
            create_under_shared_parent(dir, shared)?;
        }
        self.apply(limits)
    }

    fn dir(&self, controller: Controller) -> &Path {
        // `under` fills every controller of ALL, or fails.
        self.0
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    pub(super) fn pids_dir(&self) -> &Path {
        self.dir(Controller::Pids)
    }

    pub(super) fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, d) in &self.0 {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let memory = self.dir(Controller::Memory);
        let cpu = self.dir(Controller::Cpu);
        if let Some(bytes) = limits.memory_bytes {
            write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Memory + swap at the same value: no swapping past the limit. Absent when the
            // kernel does not account swap.
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = (cpus * CFS_PERIOD_US as f64).round().max(1000.0) as u64;
            write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(&cpu.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(pids) = limits.pids {
            write(&self.pids_dir().join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    pub(super) fn usage(&self) -> Result<Usage, CgroupError> {
        let memory = self.dir(Controller::Memory);
        let limit = read_u64(&memory.join("memory.limit_in_bytes"))?;
        let cpu = read(&self.dir(Controller::Cpuacct).join("cpuacct.usage")).ok();
        Ok(Usage {
            memory_bytes: read_u64(&memory.join("memory.usage_in_bytes"))?,
            // v1 reports "no limit" as a huge page-aligned number.
            memory_limit_bytes: (limit < i64::MAX as u64 / 2).then_some(limit),
            cpu_nanos: cpu.and_then(|t| t.trim().parse().ok()),
            pids: read_u64(&self.pids_dir().join("pids.current"))?,
            oom_kills: oom_kills(&memory.join("memory.oom_control")),
        })
    }
}

/// For each controller kernelbox uses: the folder of the current process's cgroup in that
/// controller's v1 hierarchy.
fn v1_bases(own: &str, mountinfo: &str) -> Result<Vec<(Controller, PathBuf)>, CgroupError> {
    let mut out = Vec::new();
    for controller in Controller::ALL {
        let name = controller.name();
        // /proc/self/cgroup: `hierarchy-id:controller,list:/path`.
        let own_path = own
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
                list.split(',').any(|c| c == name).then_some(path)
            })
            .ok_or(CgroupError::MissingController(name))?;
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
    use super::super::tests::MOUNTINFO;
    use super::*;

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
    fn a_missing_v1_controller_is_named() {
        let own = "4:memory:/a\n0::/\n";
        let err = v1_bases(own, MOUNTINFO).expect_err("no cpu line");
        assert!(
            matches!(err, CgroupError::MissingController("cpu")),
            "{err}"
        );
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
