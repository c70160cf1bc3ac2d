//! A sandbox's network. By default a sandbox's network namespace holds only `lo`. With
//! [`Network::UserMode`] it also gets `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS at
//! 10.0.2.3) served by `slirp4netns`: a user-mode TCP/IP stack that turns the sandbox's packets
//! into ordinary sockets of the host, so the host's firewall, routes and `ip_forward` stay
//! untouched, and the sandbox reaches what the host reaches (package registries, through the
//! host's proxy and CA).
//!
//! What it cannot reach: the host's own services, on loopback (`--disable-host-loopback`: 10.0.2.2
//! does not lead to 127.0.0.1) or on any other address of the host (slirp4netns runs under the
//! [`Egress`] rules), and other sandboxes (each is alone in its namespace; nothing forwards into
//! one).
//!
//! slirp4netns runs as host root but with `--enable-sandbox` (its own mount namespace, every
//! capability dropped but binding low ports), inside the sandbox's cgroups (its memory and pids
//! count against the sandbox, and killing the sandbox's cgroup ends it), and exits when the
//! descriptor it watches (`--exit-fd`) closes, which [`UserModeNet`]'s drop does.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cgroup::Cgroups;
use super::egress::Egress;
use super::{SandboxError, SandboxId};

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Only `lo` (E2B's `allow_internet_access: false`).
    #[default]
    None,
    /// `lo` and a user-mode NAT to the host's network (slirp4netns).
    UserMode,
}

/// The DNS forwarder slirp4netns answers on inside the sandbox (its `resolv.conf`).
pub const NAMESERVER: &str = "10.0.2.3";
/// The largest MTU slirp4netns allows: fewer, larger packets through the user-mode stack.
const MTU: &str = "65520";
/// How long slirp4netns may take to configure `tap0` (normally a few ms).
const READY_PATIENCE: Duration = Duration::from_secs(10);
/// The descriptor numbers slirp4netns is told to use.
const EXIT_FD: i32 = 3;
const READY_FD: i32 = 4;

/// A running slirp4netns for one sandbox; dropping it ends it.
#[derive(Debug)]
pub struct UserModeNet {
    child: Child,
    /// slirp4netns exits when this closes.
    exit: Option<OwnedFd>,
    /// Its egress folder: dropped (removed) after the child is reaped.
    _egress: Egress,
}

impl UserModeNet {
    /// Starts slirp4netns for sandbox `id` on the network namespace of host pid `init`, under
    /// the egress rules, and waits until `tap0` is configured.
    pub fn start(
        id: &SandboxId,
        init: u32,
        cgroups: Option<&Cgroups>,
    ) -> Result<UserModeNet, SandboxError> {
        let setup = |e| SandboxError::setup("start slirp4netns", e);
        let egress = Egress::create(id)?;
        let join = egress.join_fd();
        let (exit_read, exit_write) = crate::sys::pipe().map_err(setup)?;
        let (ready_read, ready_write) = crate::sys::pipe().map_err(setup)?;
        let (exit_fd, ready_fd) = (exit_read.as_raw_fd(), ready_write.as_raw_fd());
        let mut cmd = Command::new("slirp4netns");
        cmd.args([
            "--configure",
            "--mtu",
            MTU,
            "--disable-host-loopback",
            "--enable-sandbox",
        ])
        .arg(format!("--exit-fd={EXIT_FD}"))
        .arg(format!("--ready-fd={READY_FD}"))
        .arg(init.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only write and dup2 between fork and exec (async-signal-safe); the sources
        // stay open in the parent until after the spawn.
        unsafe {
            cmd.pre_exec(move || {
                // Into the egress folder before exec: no socket of slirp4netns escapes the rules.
                if libc::write(join, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                // Copies above the targets first, so neither source is overwritten by the other's
                // dup2 whatever numbers the pipes got.
                let exit = libc::fcntl(exit_fd, libc::F_DUPFD, 10);
                let ready = libc::fcntl(ready_fd, libc::F_DUPFD, 10);
                if exit < 0
                    || ready < 0
                    || libc::dup2(exit, EXIT_FD) < 0
                    || libc::dup2(ready, READY_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            setup(if e.kind() == std::io::ErrorKind::NotFound {
                std::io::Error::new(
                    e.kind(),
                    "slirp4netns is not installed (scripts/setup-host.sh installs it)",
                )
            } else {
                e
            })
        })?;
        drop(exit_read);
        drop(ready_write);
        let mut net = UserModeNet {
            child,
            exit: Some(exit_write),
            _egress: egress,
        };
        if let Some(cgroups) = cgroups {
            cgroups.add(net.child.id())?;
        }
        net.wait_ready(ready_read).map_err(setup)?;
        Ok(net)
    }

    fn wait_ready(&mut self, ready: OwnedFd) -> std::io::Result<()> {
        let mut pollfd = libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one descriptor we own.
        let n = unsafe { libc::poll(&mut pollfd, 1, READY_PATIENCE.as_millis() as libc::c_int) };
        let mut byte = [0u8; 1];
        if n > 0 && std::fs::File::from(ready).read(&mut byte)? == 1 {
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "tap0 was not configured within {READY_PATIENCE:?} ({})",
            match self.child.try_wait() {
                Ok(Some(status)) => format!("slirp4netns exited: {status}"),
                _ => "slirp4netns still starting".into(),
            }
        )))
    }
}

impl Drop for UserModeNet {
    fn drop(&mut self) {
        drop(self.exit.take());
        // It exits on the closed descriptor; a kill covers a stuck one.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
