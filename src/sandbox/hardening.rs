//! Defence in depth for the namespace backend, because a sandbox shares the host's kernel: what
//! root inside may still do after its namespaces, reduced to what a sandbox's programs need.
//!
//! - **Capabilities**: the bounding set keeps Docker's default list and nothing else, so root
//!   inside (and anything it execs) never holds `CAP_SYS_ADMIN` (mount, namespaces' own
//!   administration), `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`… even within its
//!   user namespace. What stays is what the agent uses (`SETUID`/`SETGID` to run commands as
//!   their user, `CHOWN`/`FOWNER`/`DAC_OVERRIDE` for uploads and files, `KILL` for signals) and
//!   what package installs expect.
//! - **seccomp**: a deny-list filter (everything else allowed, as Docker's profile mostly is)
//!   for system calls that reach kernel state no namespace isolates (keyrings, BPF, perf,
//!   modules, kexec, swap, the kernel log), that have been common exploit primitives
//!   (`userfaultfd`, io_uring), or that would undo the sandbox (a nested user namespace, where
//!   the process would hold every capability again). `clone3` answers `ENOSYS`, because its
//!   flags sit in memory a filter cannot read; glibc and Rust's runtime then fall back to
//!   `clone`, whose flags the filter checks. pip, npm, Deno, ipykernel and the JVM need none
//!   of these (libuv, under npm, falls back from io_uring by itself).
//!
//! Both are applied by the sandbox's first process just before it execs the agent (after
//! `no_new_privs`, which seccomp requires), so they hold for every process in the sandbox.

/// Capabilities root inside keeps (Docker's defaults), as `CAP_*` numbers.
pub const KEPT_CAPABILITIES: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The bounding-set mask of [`KEPT_CAPABILITIES`] (what `CapBnd:` in `/proc/<pid>/status` shows).
pub fn kept_mask() -> u64 {
    KEPT_CAPABILITIES.iter().fold(0, |m, c| m | 1 << c)
}

/// System calls that answer `EPERM` inside a sandbox, on every architecture.
const DENIED: &[libc::c_long] = &[
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_quotactl,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_mount_setattr,
];

/// Port I/O, which only x86 has.
#[cfg(target_arch = "x86_64")]
const DENIED_HERE: &[libc::c_long] = &[libc::SYS_iopl, libc::SYS_ioperm];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_HERE: &[libc::c_long] = &[];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// `struct seccomp_data` offsets: the call's number, its ABI, the low half of its first argument.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
/// x32 system calls (same arch value, numbers with this bit) could bypass the number checks.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter program (classic BPF), built by the parent before `clone`.
pub fn seccomp_filter() -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let load = |offset| stmt(BPF_LD | BPF_W | BPF_ABS, offset);
    let ret = |value| stmt(BPF_RET | BPF_K, value);
    let eperm = ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    let mut p = vec![
        load(ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        eperm,
        load(NR),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        eperm,
    ];
    for &nr in DENIED.iter().chain(DENIED_HERE) {
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
        p.push(eperm);
    }
    p.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone3 as u32,
        0,
        1,
    ));
    p.push(ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    // unshare(flags) and clone(flags, …): no new user namespace.
    p.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_unshare as u32,
        1,
        0,
    ));
    p.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone as u32,
        0,
        3,
    ));
    p.push(load(ARG0_LOW));
    p.push(jump(
        BPF_JMP | BPF_JSET | BPF_K,
        libc::CLONE_NEWUSER as u32,
        0,
        1,
    ));
    p.push(eperm);
    p.push(ret(libc::SECCOMP_RET_ALLOW));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_exactly_dockers_defaults() {
        assert_eq!(kept_mask(), 0x0000_0000_a804_25fb);
    }

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_allowing() {
        let p = seccomp_filter();
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 & libc::BPF_JMP != 0 && ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(
                    i + 1 + (ins.jt.max(ins.jf) as usize) < p.len(),
                    "jump at {i}"
                );
            }
        }
        let last = p.last().expect("program");
        assert_eq!(last.k, libc::SECCOMP_RET_ALLOW);
        assert!(
            p.len() < 4096,
            "BPF programs are limited to 4096 instructions"
        );
    }
}
