//! The namespace backend: each sandbox is a process tree in its own user, mount, pid, net, ipc
//! and uts namespaces, on an overlay root, in its own cgroups, with `kernelbox agent` as PID 1
//! reached over a unix socket bound into the sandbox.
//!
//! # How a sandbox starts
//! 1. The parent (root on the host) creates `<runtime>/<id>/{lower,upper,work,root,sock}` and
//!    the agent's log, and the cgroups (with their limits) under its own ([`super::cgroup`]).
//! 2. `clone(2)` with `CLONE_NEWUSER | NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS`. The child
//!    waits on a pipe while the parent writes its `uid_map`/`gid_map` (root inside = the first id
//!    of [`super::IdRange`] on the host; as host root the parent may write any range, so neither
//!    `newuidmap` nor `/etc/subuid` is needed) and moves it into the cgroups, so everything it
//!    ever forks is accounted and limited.
//! 3. The child ([`child`]) opens the host paths it needs (still as host uid 0), becomes root of
//!    its user namespace, and builds the root *inside its own mount namespace*: overlay,
//!    read-only binds, fresh `/proc`, a tmpfs `/dev` with bound device nodes and a new devpts
//!    instance, tmpfs `/tmp` and `/dev/shm`, runc's masked and read-only `/proc` paths, the
//!    socket dir and the agent binary; sets the
//!    hostname, brings `lo` up, `pivot_root`s and detaches the host's tree, sets
//!    `no_new_privs`, and execs the agent (loopback-only ports in its own network namespace, and
//!    the unix socket). Nothing is ever mounted in the host's namespace, so nothing there needs
//!    unmounting: the sandbox's mounts vanish with its last process.
//!
//! # What this machine kind allows (kernel 6.18, cgroup v1 hybrid, root), found while writing it
//! - All six namespaces in one `clone`; as host root the parent writes any `uid_map`/`gid_map`
//!   (no `newuidmap`, no `/etc/subuid`, `setgroups` left allowed).
//! - Overlayfs mounts inside the user namespace (kernel ≥ 5.11) with `userxattr`, on an ext4
//!   upper dir, **if** the mounter's credentials are ids the namespace maps: overlay makes its
//!   `work/work` dir with mode 0 as the mounter, and a mounter still on host uid 0 (unmapped)
//!   then fails its own `O_TMPFILE` probe with EACCES ("upper fs does not support tmpfile").
//!   So the child becomes root of the namespace (host uid = first id of the range) *before*
//!   mounting, and upper, work and the skeleton layer are owned by that id.
//! - Once it is that id, the way to the sandbox folder may be closed to it (`$KERNELBOX_HOME`
//!   under a 0700 `/root`). So the child first opens every host path it needs (`O_PATH`, onto
//!   descriptor numbers the parent chose) while it still has host uid 0, and later steps name
//!   them as `/proc/self/fd/N`. Descriptors opened by the *parent* do not work: they name the
//!   host namespace's mounts, and the kernel refuses them as bind sources and as overlay
//!   layers in another mount namespace (EINVAL, "failed to clone upperpath").
//! - glibc's `setresuid`/`setresgid`/`setgroups` must not be used in the child: they apply the
//!   change to every thread glibc knows of (copied from the multi-threaded parent, not running
//!   in the child) and wait forever. Raw system calls work.
//! - A fresh `/proc` mounts in the new pid namespace because the host's `/proc` has no
//!   over-mounts (the kernel refuses a userns proc mount that would reveal hidden paths).
//! - Device nodes cannot be created in a user namespace; binding the host's nodes works, and a
//!   new devpts instance (`newinstance,ptmxmode=0666`) gives the sandbox its own ptys.
//! - Read-only remounts of binds must repeat the source's locked flags (nosuid, nodev, noexec,
//!   atime): [`child::Step::Bind`] copies them from `statvfs`.
//! - Host files of the read-only binds (owned by host root, unmapped) appear as `nobody` inside;
//!   root inside cannot change them. Shared template layers will be mapped with idmapped mounts
//!   (`mount_setattr(MOUNT_ATTR_IDMAP)`, supported by this kernel) instead of a chown.
//!
//! # Clean-up by ownership
//! [`Resources`] holds what a sandbox took (init pid, cgroups, directory) and gives it back on
//! drop, so a spawn that fails half-way, a `kill`, and dropping the backend all free the same way.

mod child;

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::cgroup::Cgroups;
use super::egress::Egress;
use super::hardening;
use super::network::{self, Network, UserModeNet};
use super::rootfs::{Bind, RootfsPlan};
use super::{Backend, IdRange, SandboxError, SandboxHandle, SandboxId, SandboxSpec, Usage};
use child::{Plan, Step};

/// Where the sandbox sees its agent binary, its socket folder, and (on a template root) its
/// writable `$KERNELBOX_HOME`.
const AGENT_EXE: &str = "/opt/kernelbox/bin/kernelbox";
const SOCKET_DIR: &str = "/run/kernelbox";
const SOCKET_NAME: &str = "agent.sock";
const AGENT_HOME: &str = "/var/lib/kernelbox";
/// `/proc` files hidden behind `/dev/null` (runc's masked paths).
const MASKED_PROC_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
];
/// `/proc` folders hidden behind an empty read-only tmpfs.
const MASKED_PROC_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi"];
/// `/proc` entries bound read-only over themselves.
const READ_ONLY_PROC: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];
/// How long `kill` keeps SIGKILLing a sandbox's cgroup before it reports the sandbox unkillable.
const KILL_PATIENCE: Duration = Duration::from_secs(10);
/// How long the child may take from clone to exec (mounts; normally milliseconds).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Which root filesystem a sandbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// The stand-in for templates: a skeleton layer made per sandbox plus read-only binds of the
    /// host's programs ([`RootfsPlan::host_minimal`]); kernels come from the host's
    /// `$KERNELBOX_HOME`.
    HostMinimal,
    /// Given layers and binds (templates).
    Plan(RootfsPlan),
}

/// The namespace backend. Sandboxes live under `runtime_dir` (one folder each); dropping the
/// backend kills the ones it still runs.
pub struct NamespaceBackend {
    inner: Arc<Inner>,
}

struct Inner {
    runtime_dir: PathBuf,
    /// The host's `$KERNELBOX_HOME` (bound read-only by [`Rootfs::HostMinimal`]).
    home: PathBuf,
    rootfs: Rootfs,
    sandboxes: Mutex<HashMap<SandboxId, Running>>,
}

struct Running {
    handle: SandboxHandle,
    resources: Resources,
}

impl NamespaceBackend {
    /// Sandboxes under `$KERNELBOX_HOME/sandboxes`, on the host-minimal root.
    pub fn new(home: &Path) -> NamespaceBackend {
        Self::with(home.join("sandboxes"), home, Rootfs::HostMinimal)
    }

    /// Sandbox folders under `runtime_dir` (tests: a folder of their own), `home` = the host's
    /// `$KERNELBOX_HOME`, and the default root filesystem.
    pub fn with(runtime_dir: PathBuf, home: &Path, rootfs: Rootfs) -> NamespaceBackend {
        NamespaceBackend {
            inner: Arc::new(Inner {
                runtime_dir,
                home: home.to_path_buf(),
                rootfs,
                sandboxes: Mutex::default(),
            }),
        }
    }

    /// The cgroup folders of a running sandbox (one per v1 hierarchy).
    pub fn cgroup_paths(&self, id: &SandboxId) -> Option<Vec<PathBuf>> {
        let map = self
            .inner
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let running = map.get(id)?;
        running.resources.cgroups.as_ref().map(Cgroups::paths)
    }
}

impl Inner {
    fn spawn_blocking(&self, spec: SandboxSpec) -> Result<SandboxHandle, SandboxError> {
        {
            let map = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
            if map.contains_key(&spec.id) {
                return Err(SandboxError::Exists(spec.id));
            }
        }
        create_dir(&self.runtime_dir, 0o711)?;
        let dir = self.runtime_dir.join(spec.id.as_str());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxError::Exists(spec.id))
            }
            Err(e) => return Err(SandboxError::io("create", &dir, e)),
        }
        let mut resources = Resources {
            dir: Some(dir.clone()),
            cgroups: None,
            init: None,
            net: None,
        };
        // Host root and the sandbox's root only.
        set_mode(&dir, 0o700)?;
        let owner = spec.ids.first;
        chown(&dir, owner)?;
        let host_minimal = spec.rootfs.is_none() && self.rootfs == Rootfs::HostMinimal;
        let rootfs = match (&spec.rootfs, &self.rootfs) {
            (Some(plan), _) | (None, Rootfs::Plan(plan)) => plan.clone(),
            (None, Rootfs::HostMinimal) => {
                let lower = dir.join("lower");
                let plan = RootfsPlan::host_minimal(&lower, &self.home, &spec.hostname)?;
                chown_tree(&lower, owner)?;
                plan
            }
        };
        let upper = dir.join("upper");
        let work = dir.join("work");
        let root = dir.join("root");
        let sock = dir.join("sock");
        for d in [&upper, &work, &sock] {
            create_dir(d, 0o755)?;
            chown(d, owner)?;
        }
        create_dir(&root, 0o755)?;
        prepare_upper(&upper, &spec, owner, host_minimal)?;
        let log_path = dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| SandboxError::io("create", &log_path, e))?;

        resources.cgroups = Some(Cgroups::create(&spec.id, &spec.limits)?);

        let pipe = || crate::sys::pipe().map_err(|e| SandboxError::io("pipe", Path::new(""), e));
        let (go_read, go_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let plan = self.plan(&spec, &rootfs, &dir, &log, &go_read, &err_write)?;
        let exec = child::ExecArgs::new(&plan);

        let pid = clone_child(&plan, &exec)?;
        resources.init = Some(pid);
        drop(go_read);
        drop(err_write);
        drop(log);

        write_id_map(pid, "uid_map", spec.ids)?;
        write_id_map(pid, "gid_map", spec.ids)?;
        if let Some(cgroups) = &resources.cgroups {
            cgroups.add(pid as u32)?;
        }
        if spec.network == Network::UserMode {
            resources.net = Some(UserModeNet::start(
                &spec.id,
                pid as u32,
                resources.cgroups.as_ref(),
            )?);
        }
        let mut go = std::fs::File::from(go_write);
        go.write_all(b"g")
            .map_err(|e| SandboxError::setup("start the child", e))?;
        drop(go);

        wait_for_exec(err_read, &plan)?;

        let handle = SandboxHandle {
            id: spec.id.clone(),
            agent_socket: sock.join(SOCKET_NAME),
            init_pid: pid as u32,
            dir,
        };
        let mut map = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            spec.id,
            Running {
                handle: handle.clone(),
                resources,
            },
        );
        Ok(handle)
    }

    /// The child's steps, paths and arguments, all prepared here (the child cannot allocate).
    fn plan(
        &self,
        spec: &SandboxSpec,
        rootfs: &RootfsPlan,
        dir: &Path,
        log: &std::fs::File,
        go_read: &OwnedFd,
        err_write: &OwnedFd,
    ) -> Result<Plan, SandboxError> {
        // Relative to the sandbox folder, the child's working directory during set-up.
        let root = PathBuf::from("root");
        let inside = |p: &str| root.join(p.trim_start_matches('/'));
        let mut steps: Vec<(String, Step)> = Vec::new();
        let mount = |source: Option<&str>,
                     target: &Path,
                     fstype: Option<&str>,
                     flags: libc::c_ulong,
                     data: Option<&str>|
         -> Result<Step, SandboxError> {
            Ok(Step::Mount {
                source: source.map(cstr).transpose()?,
                target: path_cstr(target)?,
                fstype: fstype.map(cstr).transpose()?,
                flags,
                data: data.map(cstr).transpose()?,
            })
        };
        steps.push((
            "make the mount tree private".into(),
            mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )?,
        ));
        // Host paths are opened by the child itself, still with its host credentials (so the
        // way there may pass a 0700 `/root`) and in its own mount namespace (a descriptor the
        // parent opened would name the host's mounts, which the kernel refuses as bind sources
        // or overlay layers in another namespace), each onto a descriptor number chosen here,
        // so later steps name it as `/proc/self/fd/N` (the host's /proc until pivot_root),
        // which follows the open file without looking its path up again. Then the child
        // becomes root of its user namespace, so the overlay's creator credentials (which make
        // its work dir and copy files up) are ids the namespace maps.
        let mut next_slot = log
            .as_raw_fd()
            .max(go_read.as_raw_fd())
            .max(err_write.as_raw_fd())
            + 1;
        let mut opens = Vec::new();
        let mut host_path = |path: &Path| -> Result<PathBuf, SandboxError> {
            let slot = next_slot;
            next_slot += 1;
            opens.push((
                format!("open {}", path.display()),
                Step::OpenPath {
                    path: path_cstr(path)?,
                    slot,
                },
            ));
            Ok(PathBuf::from(format!("/proc/self/fd/{slot}")))
        };
        let dir_alias = host_path(dir)?;
        let mut lower = Vec::new();
        for layer in &rootfs.layers {
            let path = match layer.strip_prefix(dir) {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => host_path(layer)?,
            };
            lower.push(overlay_path(&path)?);
        }
        let sock = dir.join("sock");
        let fixed = [
            Bind {
                source: spec.agent_binary.clone(),
                target: AGENT_EXE.into(),
                writable: false,
            },
            Bind {
                source: sock,
                target: SOCKET_DIR.into(),
                writable: true,
            },
        ];
        let mut binds = Vec::new();
        for bind in rootfs.binds.iter().chain(&fixed) {
            let target = root.join(bind.target.strip_prefix("/").unwrap_or(&bind.target));
            binds.push((
                format!(
                    "bind {} at {}",
                    bind.source.display(),
                    bind.target.display()
                ),
                Step::Bind {
                    source: path_cstr(&host_path(&bind.source)?)?,
                    target: path_cstr(&target)?,
                    writable: bind.writable,
                },
            ));
        }
        steps.append(&mut opens);
        steps.push(("become root of the user namespace".into(), Step::BecomeRoot));
        steps.push((
            format!("enter {}", dir.display()),
            Step::Chdir(path_cstr(&dir_alias)?),
        ));
        if lower.is_empty() {
            return Err(SandboxError::Unsupported(
                "a root filesystem needs at least one layer".into(),
            ));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lower.join(":"),
            overlay_path(Path::new("upper"))?,
            overlay_path(Path::new("work"))?,
        );
        steps.push((
            format!("mount the overlay root ({options})"),
            mount(Some("overlay"), &root, Some("overlay"), 0, Some(&options))?,
        ));
        steps.append(&mut binds);
        for path in &rootfs.scratch {
            let target = root.join(path.strip_prefix("/").unwrap_or(path));
            steps.push((
                format!("mount scratch tmpfs at {}", path.display()),
                Step::Mount {
                    source: Some(cstr("tmpfs")?),
                    target: path_cstr(&target)?,
                    fstype: Some(cstr("tmpfs")?),
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                    data: Some(cstr("mode=755")?),
                },
            ));
        }
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        steps.push((
            "mount /proc".into(),
            mount(
                Some("proc"),
                &inside("/proc"),
                Some("proc"),
                nosuid_nodev_noexec,
                None,
            )?,
        ));
        // runc's masked and read-only /proc paths: kernel memory, keys, timers and hardware
        // lists hidden; kernel tunables and triggers read-only (root inside could not change
        // most of them anyway; this is defence in depth).
        for path in MASKED_PROC_FILES {
            steps.push((
                format!("mask {path}"),
                Step::Optional(Box::new(Step::Bind {
                    source: cstr("/dev/null")?,
                    target: path_cstr(&inside(path))?,
                    writable: true,
                })),
            ));
        }
        for path in MASKED_PROC_DIRS {
            steps.push((
                format!("mask {path}"),
                Step::Optional(Box::new(mount(
                    Some("tmpfs"),
                    &inside(path),
                    Some("tmpfs"),
                    libc::MS_RDONLY,
                    None,
                )?)),
            ));
        }
        for path in READ_ONLY_PROC {
            let target = path_cstr(&inside(path))?;
            steps.push((
                format!("read-only {path}"),
                Step::Optional(Box::new(Step::Bind {
                    source: target.clone(),
                    target,
                    writable: false,
                })),
            ));
        }
        steps.push((
            "mount /dev".into(),
            mount(
                Some("tmpfs"),
                &inside("/dev"),
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some("mode=755,size=64k"),
            )?,
        ));
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = inside(&format!("/dev/{node}"));
            steps.push((
                format!("mount point /dev/{node}"),
                Step::Touch(path_cstr(&target)?),
            ));
            steps.push((
                format!("bind /dev/{node}"),
                Step::Bind {
                    source: cstr(&format!("/dev/{node}"))?,
                    target: path_cstr(&target)?,
                    writable: true,
                },
            ));
        }
        for d in ["/dev/pts", "/dev/shm"] {
            steps.push((format!("mkdir {d}"), Step::Mkdir(path_cstr(&inside(d))?)));
        }
        steps.push((
            "mount /dev/pts".into(),
            mount(
                Some("devpts"),
                &inside("/dev/pts"),
                Some("devpts"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620,gid=5"),
            )?,
        ));
        steps.push((
            "mount /dev/shm".into(),
            mount(
                Some("tmpfs"),
                &inside("/dev/shm"),
                Some("tmpfs"),
                nosuid_nodev_noexec,
                Some("mode=1777"),
            )?,
        ));
        for (link, target) in [
            ("/dev/ptmx", "pts/ptmx"),
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            steps.push((
                format!("link {link}"),
                Step::Symlink {
                    target: cstr(target)?,
                    link: path_cstr(&inside(link))?,
                },
            ));
        }
        steps.push((
            "mount /tmp".into(),
            mount(
                Some("tmpfs"),
                &inside("/tmp"),
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some("mode=1777"),
            )?,
        ));
        steps.push((
            "set the hostname".into(),
            Step::Hostname(cstr(&spec.hostname)?),
        ));
        steps.push(("bring up lo".into(), Step::LoopbackUp));
        steps.push(("pivot_root".into(), Step::PivotRoot(path_cstr(&root)?)));
        steps.push(("set no_new_privs".into(), Step::NoNewPrivs));
        steps.push((
            "drop capabilities".into(),
            Step::DropCapabilities {
                keep: hardening::kept_mask(),
            },
        ));
        steps.push((
            "install the seccomp filter".into(),
            Step::Seccomp(hardening::seccomp_filter()),
        ));

        // On the host-minimal root the agent uses the host's $KERNELBOX_HOME (read-only, with
        // scratch space; see `RootfsPlan::host_minimal`); on a template, its own writable one.
        let host_minimal = spec.rootfs.is_none() && self.rootfs == Rootfs::HostMinimal;
        let agent_home = if host_minimal {
            self.home.clone()
        } else {
            PathBuf::from(AGENT_HOME)
        };
        let mut argv = vec![
            "kernelbox".to_string(),
            "agent".into(),
            // E2B's ports on the sandbox's own loopback (its network namespace is its own, so
            // no two sandboxes meet): code inside reaches its agent where E2B's users expect it.
            "--addr".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "49999".into(),
            "--envd-port".into(),
            "49983".into(),
            "--unix-socket".into(),
            format!("{SOCKET_DIR}/{SOCKET_NAME}"),
        ];
        if host_minimal {
            // The host's users, none of them E2B's `user`: root's home. On a template the
            // agent's default applies (`/home/user` where it exists) unless the caller's
            // arguments name the template's workdir.
            argv.extend(["--workdir".into(), "/root".into()]);
        }

        argv.extend(spec.agent_args.iter().cloned());
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("KERNELBOX_HOME".into(), agent_home.display().to_string()),
        ];
        // The spec's own values win (a template's agent may keep its kernels elsewhere).
        env.retain(|(k, _)| !spec.env.iter().any(|(sk, _)| sk == k));
        env.extend(spec.env.iter().cloned());
        Ok(Plan {
            steps,
            exe: cstr(AGENT_EXE)?,
            argv: argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            log_fd: log.as_raw_fd(),
            go_fd: go_read.as_raw_fd(),
            err_fd: err_write.as_raw_fd(),
        })
    }
}

impl Backend for NamespaceBackend {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn spawn(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxHandle, SandboxError>> {
        Box::pin(async move {
            // Blocking file-system and cgroup work (and a short wait for the child's report):
            // off the async threads. `clone` from a blocking-pool thread is fine because the
            // sandbox is not tied to the spawning thread (no PR_SET_PDEATHSIG).
            let inner = Arc::clone(&self.inner);
            tokio::task::spawn_blocking(move || inner.spawn_blocking(spec))
                .await
                .map_err(|e| SandboxError::Setup {
                    step: "spawn task".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
        })
    }

    fn kill<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let running = {
                let mut map = self
                    .inner
                    .sandboxes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                map.remove(id)
            };
            let Some(mut running) = running else {
                return Err(SandboxError::NotFound(id.clone()));
            };
            tokio::task::spawn_blocking(move || running.resources.release())
                .await
                .map_err(|e| SandboxError::Setup {
                    step: "kill task".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
        })
    }

    fn usage<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<Usage, SandboxError>> {
        Box::pin(async move {
            let map = self
                .inner
                .sandboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let running = map
                .get(id)
                .ok_or_else(|| SandboxError::NotFound(id.clone()))?;
            match &running.resources.cgroups {
                Some(c) => Ok(c.usage()?),
                None => Err(SandboxError::NotFound(id.clone())),
            }
        })
    }

    fn list(&self) -> Vec<SandboxHandle> {
        let map = self
            .inner
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.values().map(|r| r.handle.clone()).collect()
    }

    fn reclaim<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let dir = self.inner.runtime_dir.join(id.as_str());
            let cgroups = Cgroups::locate(id)?;
            let egress = Egress::locate(id)?;
            tokio::task::spawn_blocking(move || {
                // Not our child: the cgroup's kill takes init and everything else.
                let released = Resources {
                    dir: Some(dir),
                    cgroups: Some(cgroups),
                    init: None,
                    net: None,
                }
                .release();
                Egress::remove(&egress);
                released
            })
            .await
            .map_err(|e| SandboxError::Unsupported(format!("reclaim task failed: {e}")))?
        })
    }
}

impl Drop for NamespaceBackend {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (_, mut running) in map.drain() {
            if let Err(e) = running.resources.release() {
                tracing::warn!("sandbox {}: {e}", running.handle.id);
            }
        }
    }
}

/// What one sandbox holds on the host; [`Resources::release`] (or drop) gives it all back, in
/// order: every process (init first: its pid namespace takes the rest with it; then whatever the
/// cgroup still lists), the cgroups, any mount under the sandbox folder, the folder.
struct Resources {
    dir: Option<PathBuf>,
    cgroups: Option<Cgroups>,
    init: Option<libc::pid_t>,
    net: Option<UserModeNet>,
}

impl Resources {
    fn release(&mut self) -> Result<(), SandboxError> {
        let mut first_error = None;
        if let Some(pid) = self.init {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        drop(self.net.take());
        if let Some(cgroups) = self.cgroups.take() {
            if let Err(e) = cgroups.destroy(KILL_PATIENCE) {
                first_error.get_or_insert(SandboxError::from(e));
            }
        }
        if let Some(pid) = self.init.take() {
            let mut status = 0;
            // SAFETY: reaps our own (now killed) child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        if let Some(dir) = self.dir.take() {
            unmount_under(&dir);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    first_error.get_or_insert(SandboxError::io("remove", &dir, e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("sandbox clean-up: {e}");
        }
    }
}

/// Detaches any mount whose mount point lies under `dir` in this (the host's) namespace.
/// Normally there are none (the sandbox mounts in its own namespace); this keeps `kill` total
/// should a later slice mount on the host side.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = CString::new(p) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// What every sandbox's upper dir holds before the child mounts it: the mount points of what
/// every sandbox gets (so they exist whatever the layers hold), the agent's mount point, and the
/// sandbox's own `/etc` files.
fn prepare_upper(
    upper: &Path,
    spec: &SandboxSpec,
    owner: u32,
    host_minimal: bool,
) -> Result<(), SandboxError> {
    // Mount points of what every sandbox gets, made in the upper dir so they exist whatever
    // the layers hold.
    for d in [
        SOCKET_DIR,
        AGENT_HOME,
        "/opt/kernelbox/bin",
        "/root",
        "/tmp",
        "/proc",
        "/dev",
    ] {
        let path = upper.join(d.trim_start_matches('/'));
        create_dir_all_owned(upper, &path, owner)?;
    }
    let exe_point = upper.join(AGENT_EXE.trim_start_matches('/'));
    std::fs::write(&exe_point, b"").map_err(|e| SandboxError::io("create", &exe_point, e))?;
    if !host_minimal {
        identity_files(upper, &spec.hostname, owner)?;
    }
    if spec.network == Network::UserMode {
        write_owned(
            upper,
            "resolv.conf",
            &format!("nameserver {}\n", network::NAMESERVER),
            owner,
        )?;
    }
    Ok(())
}

/// Clones the child into its new namespaces; it runs `child::run` and never returns here.
fn clone_child(plan: &Plan, exec: &child::ExecArgs) -> Result<libc::pid_t, SandboxError> {
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // SAFETY: a fork-like clone (no new stack, no shared memory); the child runs only
    // `child::run`, which makes system calls over data the caller prepared and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: we are the child of the clone above.
        unsafe { child::run(plan, exec) }
    }
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS) => {
                SandboxError::NamespacesUnavailable(err)
            }
            _ => SandboxError::setup("clone", err),
        });
    }
    Ok(pid as libc::pid_t)
}

/// Waits for the child's report: end-of-file means the agent was exec'd; eight bytes are
/// (step, errno) of its first failure. A child that neither reports nor execs within
/// `SETUP_PATIENCE` is an error (and is killed by the caller's `Resources`).
fn wait_for_exec(err_read: OwnedFd, plan: &Plan) -> Result<(), SandboxError> {
    let mut pollfd = libc::pollfd {
        fd: err_read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own.
    let ready = unsafe { libc::poll(&mut pollfd, 1, SETUP_PATIENCE.as_millis() as libc::c_int) };
    if ready <= 0 {
        return Err(SandboxError::Setup {
            step: "waiting for the sandbox's set-up".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no exec within {SETUP_PATIENCE:?}"),
            ),
        });
    }
    let mut report = Vec::new();
    let mut err_file = std::fs::File::from(err_read);
    err_file
        .read_to_end(&mut report)
        .map_err(|e| SandboxError::setup("read the child's report", e))?;
    if report.len() >= 8 {
        let index = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        let step = match index {
            child::STEP_WAIT => "waiting for the parent".to_string(),
            child::STEP_EXEC => format!("exec of the agent ({AGENT_EXE})"),
            i => plan
                .steps
                .get(i as usize)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| format!("step {i}")),
        };
        return Err(SandboxError::Setup {
            step,
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    Ok(())
}

fn write_id_map(pid: libc::pid_t, file: &str, ids: IdRange) -> Result<(), SandboxError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&path, format!("0 {} {}\n", ids.first, ids.count))
        .map_err(|e| SandboxError::io("write", &path, e))
}

fn cstr(s: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Unsupported(format!("NUL byte in {s:?}")))
}

fn path_cstr(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| SandboxError::Unsupported(format!("NUL byte in {}", p.display())))
}

/// A path as overlayfs options take it: `,` and `:` separate options and layers.
fn overlay_path(p: &Path) -> Result<String, SandboxError> {
    let s = p.to_str().unwrap_or("");
    if s.is_empty() || s.contains([',', ':', '\\']) {
        return Err(SandboxError::Unsupported(format!(
            "overlay layer path {} must be UTF-8 without ',' ':' or '\\'",
            p.display()
        )));
    }
    Ok(s.to_string())
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), SandboxError> {
    match std::fs::create_dir(dir) {
        Ok(()) => set_mode(dir, mode),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SandboxError::io("create", dir, e)),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SandboxError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::io("chmod", path, e))
}

fn chown(path: &Path, id: u32) -> Result<(), SandboxError> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))
        .map_err(|e| SandboxError::io("chown", path, e))
}

/// The sandbox's own `/etc/hostname` and `/etc/hosts`, in its upper dir over whatever the
/// template's layers hold (root inside may edit them).
fn identity_files(upper: &Path, hostname: &str, owner: u32) -> Result<(), SandboxError> {
    write_owned(upper, "hostname", &format!("{hostname}\n"), owner)?;
    write_owned(
        upper,
        "hosts",
        &format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"),
        owner,
    )
}

/// Writes `upper/etc/<name>` (mode 0644) owned by the sandbox's root.
fn write_owned(upper: &Path, name: &str, text: &str, owner: u32) -> Result<(), SandboxError> {
    let etc = upper.join("etc");
    create_dir_all_owned(upper, &etc, owner)?;
    let path = etc.join(name);
    std::fs::write(&path, text).map_err(|e| SandboxError::io("write", &path, e))?;
    set_mode(&path, 0o644)?;
    chown(&path, owner)
}

/// `mkdir -p` below `base`, each new folder owned by `id` (root inside).
fn create_dir_all_owned(base: &Path, path: &Path, id: u32) -> Result<(), SandboxError> {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let mut cur = base.to_path_buf();
    for part in rel.components() {
        cur.push(part);
        if !cur.exists() {
            create_dir(&cur, 0o755)?;
            chown(&cur, id)?;
        }
    }
    Ok(())
}

/// Chowns a tree (links themselves, not their targets) to `id`.
fn chown_tree(dir: &Path, id: u32) -> Result<(), SandboxError> {
    chown(dir, id)?;
    let entries = std::fs::read_dir(dir).map_err(|e| SandboxError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SandboxError::io("list", dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            chown_tree(&path, id)?;
        } else {
            chown(&path, id)?;
        }
    }
    Ok(())
}
