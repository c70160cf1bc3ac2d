//! The sandbox's first process, between `clone(2)` and `execve(2)` of the agent.
//!
//! The parent may be multi-threaded (a tokio runtime), and a raw `clone` copies only the calling
//! thread: another thread may have held the allocator's lock at that instant. So the child
//! allocates nothing and runs no code that might: every path, option string and argument vector is
//! built by the parent into a [`Plan`] of [`Step`]s beforehand, and the child only issues system
//! calls (raw ones where glibc's wrapper would coordinate with threads, see
//! [`Step::BecomeRoot`]) and reports the first failure as `(step index, errno)` on a close-on-exec pipe (EOF on
//! that pipe = the agent was exec'd).

use std::ffi::CString;
use std::os::fd::RawFd;

/// One system call (or a fixed short sequence) of the child's set-up.
#[derive(Debug)]
pub(super) enum Step {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// A bind mount, then, unless `writable`, a read-only remount that keeps the flags the
    /// source carries (a user namespace may not clear a locked nosuid/nodev/noexec/atime flag).
    Bind {
        source: CString,
        target: CString,
        writable: bool,
    },
    /// Creates an empty file as a mount point for a device node.
    Touch(CString),
    Mkdir(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Hostname(CString),
    /// Brings up the loopback interface of the new network namespace.
    LoopbackUp,
    /// Opens `path` (`O_PATH`) onto descriptor number `slot`.
    OpenPath {
        path: CString,
        slot: RawFd,
    },
    /// `chdir`: set-up paths are relative to the sandbox folder.
    Chdir(CString),
    /// `chdir(new_root)`, `pivot_root(".", ".")`, detach the old root, `chdir("/")`.
    PivotRoot(CString),
    /// `setresgid`, `setgroups(0)`, `setresuid` to root of the sandbox's user namespace.
    BecomeRoot,
    /// `PR_SET_NO_NEW_PRIVS`: no exec may gain privileges (setuid binaries, file capabilities).
    NoNewPrivs,
    /// Drops every capability not in `keep` (a mask) from the bounding set and clears the
    /// ambient set, so nothing exec'd from here on can hold one.
    DropCapabilities {
        keep: u64,
    },
    /// Installs a seccomp filter (after [`Step::NoNewPrivs`], which the kernel requires).
    Seccomp(Vec<libc::sock_filter>),
    /// The inner step, where a missing path (`ENOENT`) is not a failure: masks of `/proc`
    /// entries that not every kernel has.
    Optional(Box<Step>),
}

/// Everything the child needs, prepared by the parent.
pub(super) struct Plan {
    pub steps: Vec<(String, Step)>,
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Becomes the agent's stdout and stderr.
    pub log_fd: RawFd,
    /// The child reads one byte from here before starting: the parent has written its uid and
    /// gid maps and placed it in the sandbox's cgroups.
    pub go_fd: RawFd,
    /// Close-on-exec; the child writes `(index, errno)` here when a step fails.
    pub err_fd: RawFd,
}

/// Null-terminated pointer arrays for execve, built in the parent (the child must not allocate).
pub(super) struct ExecArgs {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    pub fn new(plan: &Plan) -> ExecArgs {
        let ptrs = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        ExecArgs {
            argv: ptrs(&plan.argv),
            envp: ptrs(&plan.envp),
        }
    }
}

/// How long the child waits for the parent's go (which normally comes within milliseconds):
/// a backstop, should the parent die before the death signal was armed.
const GO_PATIENCE_MS: libc::c_int = 30_000;

/// Index written to the error pipe when the failure is in the start-up itself, not a step.
pub(super) const STEP_WAIT: u32 = u32::MAX;
pub(super) const STEP_EXEC: u32 = u32::MAX - 1;

/// Runs in the cloned child; never returns.
///
/// # Safety
/// Call only in the child of a fork-like `clone`, with `plan` and `exec` built by the parent.
pub(super) unsafe fn run(plan: &Plan, exec: &ExecArgs) -> ! {
    let fail = |index: u32| -> ! {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&index.to_ne_bytes());
        report[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(plan.err_fd, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    };
    // Signal handlers are reset by exec, the mask is not: start the agent with none blocked.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    // Until the parent says go, die with it. The go pipe's end-of-file cannot be relied on for
    // that: a sandbox cloned at the same moment by another thread holds copies of every
    // descriptor, this pipe's write end included, until it execs. (Seen: a `serve` killed
    // mid-spawn left a clone waiting here for good.) Reset after go: the parent is a blocking
    // thread that ends when idle, and the agent must not die with it.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    let mut pollfd = libc::pollfd {
        fd: plan.go_fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut byte = 0u8;
    if libc::poll(&mut pollfd, 1, GO_PATIENCE_MS) != 1
        || libc::read(plan.go_fd, (&mut byte as *mut u8).cast(), 1) != 1
    {
        fail(STEP_WAIT);
    }
    libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
    for (index, (_, step)) in plan.steps.iter().enumerate() {
        if step_run(step).is_err() {
            fail(index as u32);
        }
    }
    // stdin from /dev/null (now the sandbox's), stdout and stderr to the log.
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null < 0
        || libc::dup2(null, 0) < 0
        || libc::dup2(plan.log_fd, 1) < 0
        || libc::dup2(plan.log_fd, 2) < 0
    {
        fail(STEP_EXEC);
    }
    // Nothing else the parent had open reaches the agent.
    libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    );
    libc::execve(plan.exe.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
    fail(STEP_EXEC)
}

fn check(rc: libc::c_int) -> Result<(), ()> {
    if rc < 0 {
        Err(())
    } else {
        Ok(())
    }
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// One step; errno tells why it failed.
unsafe fn step_run(step: &Step) -> Result<(), ()> {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => check(libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            *flags,
            opt_ptr(data).cast(),
        )),
        Step::Bind {
            source,
            target,
            writable,
        } => {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if *writable {
                return Ok(());
            }
            let mut st: libc::statvfs = std::mem::zeroed();
            check(libc::statvfs(target.as_ptr(), &mut st))?;
            let keep = [
                (libc::ST_NOSUID, libc::MS_NOSUID),
                (libc::ST_NODEV, libc::MS_NODEV),
                (libc::ST_NOEXEC, libc::MS_NOEXEC),
                (libc::ST_NOATIME, libc::MS_NOATIME),
                (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                (libc::ST_RELATIME, libc::MS_RELATIME),
            ];
            let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            for (st_flag, ms_flag) in keep {
                if st.f_flag & st_flag != 0 {
                    flags |= ms_flag;
                }
            }
            check(libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ))
        }
        Step::Touch(path) => {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            check(fd)?;
            libc::close(fd);
            Ok(())
        }
        Step::Mkdir(path) => {
            if libc::mkdir(path.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
                return Err(());
            }
            Ok(())
        }
        Step::Symlink { target, link } => check(libc::symlink(target.as_ptr(), link.as_ptr())),
        Step::Hostname(name) => check(libc::sethostname(name.as_ptr(), name.as_bytes().len())),
        Step::LoopbackUp => {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            check(sock)?;
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            let rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
            libc::close(sock);
            check(rc)
        }
        Step::OpenPath { path, slot } => {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(fd)?;
            if fd != *slot {
                check(libc::dup3(fd, *slot, libc::O_CLOEXEC))?;
                libc::close(fd);
            }
            Ok(())
        }
        Step::Chdir(path) => check(libc::chdir(path.as_ptr())),
        Step::PivotRoot(new_root) => {
            check(libc::chdir(new_root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            // The old root is now stacked under "."; detach it so nothing of the host remains.
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))
        }
        // Raw system calls, not glibc's wrappers: those apply the change to every thread glibc
        // knows of (the parent's, copied but not running here) and wait for them forever.
        Step::BecomeRoot => {
            check(libc::syscall(libc::SYS_setresgid, 0, 0, 0) as libc::c_int)?;
            check(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                    as libc::c_int,
            )?;
            check(libc::syscall(libc::SYS_setresuid, 0, 0, 0) as libc::c_int)
        }
        Step::NoNewPrivs => check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
        Step::DropCapabilities { keep } => {
            for cap in 0..64u32 {
                if keep & (1 << cap) != 0 {
                    continue;
                }
                // EINVAL: past the kernel's last capability.
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                    && *libc::__errno_location() != libc::EINVAL
                {
                    return Err(());
                }
            }
            check(libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            ))
        }
        Step::Optional(inner) => match step_run(inner) {
            Err(()) if *libc::__errno_location() == libc::ENOENT => Ok(()),
            other => other,
        },
        Step::Seccomp(filter) => {
            let program = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            check(libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &program as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            ))
        }
    }
}
