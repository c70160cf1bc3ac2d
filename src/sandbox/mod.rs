//! Sandboxes: an isolated copy of a root filesystem with the in-sandbox agent (`kernelbox agent`)
//! as its init, resource limits, and a unix socket through which the host reaches the agent.
//!
//! This layer knows nothing of E2B's API, deadlines or a database (those belong to the control
//! plane above it): it gets a [`SandboxSpec`] (a root filesystem, limits, the agent binary) and
//! hands back a [`SandboxHandle`] (the agent's socket, the init's host pid). Every way of
//! isolating a sandbox is a [`Backend`]; today there is one, [`NamespaceBackend`] (Linux
//! namespaces + cgroups + overlayfs). A microVM backend would implement the same trait and reach
//! its agent over vsock instead of a bind-mounted socket.
//!
//! Files:
//! - `mod.rs`: the trait, the spec and handle types, the errors.
//! - [`rootfs`]: a sandbox's directory and its root filesystem *plan*: read-only lower layers
//!   (today a minimal skeleton plus read-only binds of host directories; later template layers
//!   built with debootstrap), a per-sandbox upper dir, and the binds every sandbox gets (the agent
//!   binary, the socket dir).
//! - [`cgroup`]: limits and accounting (memory, cpu, pids) nested under the cgroups of the
//!   current process, through cgroup v1 or v2, whichever holds the controllers.
//! - [`namespaces`]: the namespace backend: clone into new user, mount, pid, net, ipc and uts
//!   namespaces, build the root inside, pivot_root, exec the agent; kill and clean up.
//!
//! - [`network`]: only `lo`, or user-mode networking through slirp4netns.
//! - [`egress`]: the kernel rules that keep slirp4netns's sockets off the host's own addresses.
//! - [`hardening`]: the capability whitelist and the seccomp deny-list applied before the agent
//!   starts.
//!
//! Still to come (later slices of issue 7): idmapped lower layers (per-sandbox id ranges),
//! freezer pause, a warm pool, the microVM backend.

pub mod cgroup;
pub mod egress;
pub mod hardening;
pub mod namespaces;
pub mod network;
pub mod rootfs;

use std::fmt;
use std::path::PathBuf;

use futures_util::future::BoxFuture;

pub use cgroup::CgroupError;
pub use namespaces::{NamespaceBackend, Rootfs};
pub use network::Network;
pub use rootfs::{Bind, RootfsPlan};

/// A sandbox's id: short, lowercase letters and digits, safe as a path component and a cgroup
/// name (the control plane picks it; [`SandboxId::random`] makes one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

impl SandboxId {
    /// Takes `id` if it is 1–64 characters of `[a-z0-9-]` not starting with `-` (so it can never
    /// name a parent directory or an option).
    pub fn new(id: &str) -> Result<SandboxId, SandboxError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && !id.starts_with('-')
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(SandboxId(id.to_string()))
        } else {
            Err(SandboxError::InvalidId(id.to_string()))
        }
    }

    /// A fresh random id (20 hex digits, as long as E2B's sandbox ids).
    pub fn random() -> SandboxId {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        SandboxId(hex[..20].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resource limits of one sandbox. `None` leaves a resource unlimited (it is still accounted).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory (and memory + swap where the kernel accounts swap), in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time as a number of CPUs (E2B's `cpuCount`): 2.0 = two CPUs' worth per period.
    pub cpus: Option<f64>,
    /// Relative CPU weight against other sandboxes (cgroup v1 `cpu.shares`; 1024 = default).
    pub cpu_shares: Option<u64>,
    /// Most processes and threads at once (a fork bomb stops here).
    pub pids: Option<u64>,
}

impl Default for Limits {
    /// E2B's default sandbox size: 512 MiB, 2 CPUs; plus a pids cap that stops fork bombs.
    fn default() -> Limits {
        Limits {
            memory_bytes: Some(512 * 1024 * 1024),
            cpus: Some(2.0),
            cpu_shares: Some(1024),
            pids: Some(1024),
        }
    }
}

/// A host uid/gid range that root inside the sandbox maps onto: inside uid `n` is host uid
/// `first + n`, for `count` ids. Host root (uid 0) is never inside the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

impl Default for IdRange {
    /// The range `/etc/subuid` conventionally hands to the first user: 100000–165535.
    fn default() -> IdRange {
        IdRange {
            first: 100_000,
            count: 65_536,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: SandboxId,
    /// The sandbox's hostname (its uts namespace's); E2B uses the sandbox id.
    pub hostname: String,
    /// The root filesystem: lower layers and binds (see [`RootfsPlan`]); `None`: the backend's
    /// default (for [`NamespaceBackend`], its [`namespaces::Rootfs`]).
    pub rootfs: Option<RootfsPlan>,
    /// The `kernelbox` binary on the host; bound read-only into the sandbox and exec'd as init.
    pub agent_binary: PathBuf,
    /// Extra arguments for `kernelbox agent` (e.g. `--default-languages=python`).
    pub agent_args: Vec<String>,
    /// Environment of the agent (besides PATH, HOME and KERNELBOX_HOME, which the backend sets).
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub ids: IdRange,
    /// Only `lo`, or a user-mode route to the host's network too.
    pub network: Network,
}

/// A running sandbox, as its creator sees it.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    pub id: SandboxId,
    /// The agent's unix socket on the host: both services (sandbox API by default,
    /// `E2b-Sandbox-Port: 49999` for the interpreter).
    pub agent_socket: PathBuf,
    /// The sandbox's init (the agent) as a host pid.
    pub init_pid: u32,
    /// The sandbox's directory on the host (upper dir, socket dir, agent log).
    pub dir: PathBuf,
}

/// What a sandbox uses now (for `GET /sandboxes/{id}/metrics` later).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// CPU time used since start, in nanoseconds (`None` where the backend cannot tell).
    pub cpu_nanos: Option<u64>,
    pub pids: u64,
    /// Processes the kernel's OOM killer has ended in the sandbox so far (`oom_kill`): tells an
    /// init that died of memory from one that crashed.
    pub oom_kills: u64,
}

/// A way of running sandboxes. Object-safe (futures are boxed) so a control plane can hold an
/// `Arc<dyn Backend>` picked at start-up. A backend owns what it creates: dropping it tears down
/// the sandboxes it still runs.
pub trait Backend: Send + Sync {
    /// A short name for logs and `--backend` ("namespaces", later "microvm").
    fn name(&self) -> &'static str;

    /// Creates and starts a sandbox. Returns once its init runs (not once the agent answers:
    /// the caller polls `/health` over the socket, so a pool can overlap many start-ups). On
    /// error nothing of the sandbox is left behind.
    fn spawn(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<SandboxHandle, SandboxError>>;

    /// Kills every process of the sandbox and frees everything it held (cgroups, mounts,
    /// directory). Killing an unknown id is [`SandboxError::NotFound`].
    fn kill<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Current resource use.
    fn usage<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<Usage, SandboxError>>;

    /// The sandboxes this backend runs now.
    fn list(&self) -> Vec<SandboxHandle>;

    /// Frees whatever a sandbox of an earlier run left on this host (processes, cgroups,
    /// folders): the control plane calls it for the sandboxes its records say were running
    /// when it stopped, so other instances' sandboxes are never touched. Nothing left is fine.
    fn reclaim<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<(), SandboxError>>;
}

/// Why a sandbox could not be created, inspected or killed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox id {0:?} (1-64 of a-z, 0-9, '-')")]
    InvalidId(String),
    #[error("sandbox {0} already exists")]
    Exists(SandboxId),
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A step of the sandbox's set-up failed inside the new namespaces (before the agent ran).
    #[error("sandbox set-up failed at {step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refuses a namespace kind (callers such as tests can skip on this).
    #[error("the kernel refuses to create namespaces ({0}); is this a container without user namespaces?")]
    NamespacesUnavailable(std::io::Error),
    #[error("{0}")]
    Unsupported(String),
}

impl SandboxError {
    /// A step of starting a sandbox failed.
    pub(crate) fn setup(step: &str, source: std::io::Error) -> Self {
        SandboxError::Setup {
            step: step.into(),
            source,
        }
    }

    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        SandboxError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
