//! Egress: where a sandbox's user-mode network may open sockets on the host's behalf.
//!
//! slirp4netns turns the sandbox's packets into ordinary sockets of the *host*, so without a
//! rule a sandbox reaches every service the host reaches, its own included: `serve` on
//! `0.0.0.0:3000`, an SSH daemon, a database bound to the host's address, a cloud metadata
//! endpoint. `--disable-host-loopback` only closes the 10.0.2.2 alias of `127.0.0.1`.
//!
//! The rule lives in the kernel, on the one process that makes those sockets: slirp4netns is put
//! in a cgroup v2 folder of its own, and two tiny BPF programs on that folder
//! (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, attached to `connect` and UDP `sendmsg`, IPv4 and IPv6)
//! refuse with `EPERM` any destination in this host's own address space: `0.0.0.0/8`,
//! `127.0.0.0/8`, link-local `169.254.0.0/16` (metadata services), multicast and broadcast,
//! and every address on the host's interfaces, read when the sandbox starts. DNS to the host's
//! own nameservers (`resolv.conf`, which slirp's forwarder at 10.0.2.3 uses) stays allowed, so
//! a host resolving through `127.0.0.53` still resolves. slirp4netns speaks IPv4 only (no
//! `--enable-ipv6`), so IPv6 is refused whole.
//!
//! Why BPF and not a firewall rule: the issue forbids touching the host's firewall; a cgroup
//! program is scoped to one process tree and vanishes with its folder. Why hand-assembled: the
//! programs are a dozen instructions of compare-and-return; a BPF toolchain or loader crate would
//! outweigh them many times. The cgroup v2 hierarchy is used even on a cgroup v1 host: a hybrid
//! layout mounts it (without controllers), and sock_addr programs need nothing else.
//!
//! A host without a cgroup v2 mount, or whose kernel refuses the programs, cannot start a
//! networked sandbox: the error says why (fail closed, never a silently open host).

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup;
use super::{SandboxError, SandboxId};

/// The suffix of a sandbox's egress folder beside its cgroup (`.` never occurs in an id, so the
/// name cannot collide with another sandbox's).
const SUFFIX: &str = ".egress";
/// How long removing the folder waits for a just-killed process in it to be gone.
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);
/// DNS, the one service allowed on the host's nameservers.
const DNS_PORT: u16 = 53;

/// Destinations refused whatever the host's interfaces say: "this host", loopback, link-local,
/// multicast, broadcast.
const ALWAYS_DENIED: [(Ipv4Addr, u8); 5] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(255, 255, 255, 255), 32),
];

/// One sandbox's egress folder with the programs attached; dropping it removes the folder (after
/// the process in it is gone, as [`super::network::UserModeNet`]'s field order ensures).
#[derive(Debug)]
pub struct Egress {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing, close-on-exec: the child writes `0` into it before exec.
    procs: OwnedFd,
}

impl Egress {
    /// Creates the folder for sandbox `id` and attaches the rules for this host as it is now.
    pub fn create(id: &SandboxId) -> Result<Egress, SandboxError> {
        let dir = Egress::locate(id)?;
        cgroup::create_under_shared_parent(&dir, false)?;
        // From here on, a failure drops `egress` and removes the folder.
        let procs = open(&dir.join("cgroup.procs"), libc::O_WRONLY)
            .map_err(|e| SandboxError::setup("open the egress cgroup", e))?;
        let egress = Egress { dir, procs };
        let rules = Rules::for_this_host()
            .map_err(|e| SandboxError::setup("read the host's addresses", e))?;
        egress
            .attach(&rules)
            .map_err(|e| SandboxError::setup("attach the egress rules (cgroup BPF)", e))?;
        Ok(egress)
    }

    /// The folder a sandbox of this id has or would have (for reclaiming after a crash).
    pub fn locate(id: &SandboxId) -> Result<PathBuf, SandboxError> {
        let base = cgroup::v2_base()?;
        Ok(base
            .join(cgroup::PARENT)
            .join(format!("{}{SUFFIX}", id.as_str())))
    }

    /// A descriptor whose `write(fd, "0")` moves the writing process into the folder: safe to do
    /// between fork and exec, so the child is filtered before it runs a single instruction of
    /// slirp4netns.
    pub fn join_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    fn attach(&self, rules: &Rules) -> std::io::Result<()> {
        let folder = open(&self.dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let (v4, v6) = (rules.program_v4(), bpf::deny_all());
        for (program, hook) in [
            (&v4, bpf::INET4_CONNECT),
            (&v4, bpf::UDP4_SENDMSG),
            (&v6, bpf::INET6_CONNECT),
            (&v6, bpf::UDP6_SENDMSG),
        ] {
            bpf::attach(&folder, &bpf::load(program, hook)?, hook)?;
        }
        // The attachments hold the programs; the descriptors may close.
        Ok(())
    }

    /// SIGKILLs what is left in the folder `dir` and removes it (reclaim, or a drop whose
    /// process outlived its kill). Best effort: a folder that stays busy is logged.
    pub fn remove(dir: &Path) {
        cgroup::kill(&cgroup::procs_of(dir).unwrap_or_default());
        if let Err(e) = cgroup::remove_folder(dir, Instant::now() + REMOVE_PATIENCE) {
            tracing::warn!("egress cgroup: {e}");
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        Egress::remove(&self.dir);
    }
}

fn open(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "NUL in a cgroup path"))?;
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the IPv4 program refuses and the one exception it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Refused networks (address, prefix length).
    pub denied: Vec<(Ipv4Addr, u8)>,
    /// Nameservers that may be asked on port 53 even though they are denied otherwise.
    pub nameservers: Vec<Ipv4Addr>,
}

impl Rules {
    /// The fixed ranges, the addresses (and broadcast addresses) of the host's interfaces now,
    /// and the IPv4 nameservers of the host's `/etc/resolv.conf`.
    pub fn for_this_host() -> std::io::Result<Rules> {
        let mut denied = ALWAYS_DENIED.to_vec();
        for address in host_addresses()? {
            if !denied.iter().any(|&(net, len)| contains(net, len, address)) {
                denied.push((address, 32));
            }
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(Rules {
            denied,
            nameservers: nameservers(&resolv),
        })
    }

    /// The program for `connect` and `sendmsg` on IPv4 sockets: allow (1) unless a rule refuses
    /// (0). Addresses and ports are compared as the kernel stores them (network byte order),
    /// which is what `from_ne_bytes` of their octets gives on any host.
    fn program_v4(&self) -> Vec<bpf::Insn> {
        use bpf::{Insn, Target};
        let mut p = vec![
            Insn::load_u32(2, bpf::CTX_USER_IP4),
            Insn::load_u32(3, bpf::CTX_USER_PORT),
        ];
        let dns = u16::from_ne_bytes(DNS_PORT.to_be_bytes()) as u32;
        for ns in &self.nameservers {
            // if ip != ns skip the next; if port == 53 allow.
            p.push(Insn::jne32(
                2,
                u32::from_ne_bytes(ns.octets()),
                Target::Skip(1),
            ));
            p.push(Insn::jeq32(3, dns, Target::Allow));
        }
        for &(net, len) in &self.denied {
            let mask = u32::from_ne_bytes(mask(len).to_be_bytes());
            p.push(Insn::mov64_reg(4, 2));
            p.push(Insn::and32(4, mask));
            p.push(Insn::jeq32(
                4,
                u32::from_ne_bytes(net.octets()) & mask,
                Target::Deny,
            ));
        }
        bpf::finish(p)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn contains(net: Ipv4Addr, len: u8, address: Ipv4Addr) -> bool {
    u32::from(net) & mask(len) == u32::from(address) & mask(len)
}

/// The IPv4 `nameserver` lines of a `resolv.conf`.
fn nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

/// Every IPv4 address and broadcast address of the host's interfaces (`getifaddrs`).
fn host_addresses() -> std::io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        for sockaddr in [entry.ifa_addr, entry.ifa_ifu] {
            // SAFETY: a non-null sockaddr of the list; sa_family says how to read the rest.
            if !sockaddr.is_null() && unsafe { (*sockaddr).sa_family } as i32 == libc::AF_INET {
                // SAFETY: AF_INET means the storage is a sockaddr_in.
                let v4 = unsafe { &*(sockaddr as *const libc::sockaddr_in) };
                out.push(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

/// The few BPF instructions and system calls the egress rules need.
mod bpf {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// `struct bpf_sock_addr` offsets: `user_ip4`, `user_port`.
    pub const CTX_USER_IP4: i16 = 4;
    pub const CTX_USER_PORT: i16 = 24;

    /// `enum bpf_attach_type`.
    pub const INET4_CONNECT: u32 = 10;
    pub const INET6_CONNECT: u32 = 11;
    pub const UDP4_SENDMSG: u32 = 14;
    pub const UDP6_SENDMSG: u32 = 15;

    const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
    const CMD_PROG_LOAD: libc::c_long = 5;
    const CMD_PROG_ATTACH: libc::c_long = 8;
    /// Other programs on the same folder (there are none) would run too.
    const F_ALLOW_MULTI: u32 = 2;

    // Opcodes: class | operation | source.
    const LDX_MEM_W: u8 = 0x61;
    const ALU64_MOV_X: u8 = 0xbf;
    const ALU64_MOV_K: u8 = 0xb7;
    const ALU32_AND_K: u8 = 0x54;
    const JMP32_JEQ_K: u8 = 0x16;
    const JMP32_JNE_K: u8 = 0x56;
    const JMP_EXIT: u8 = 0x95;

    /// Where a jump goes, resolved by [`finish`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Target {
        Skip(i16),
        Allow,
        Deny,
    }

    /// `struct bpf_insn`, with a symbolic jump target until [`finish`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Insn {
        code: u8,
        dst: u8,
        src: u8,
        imm: u32,
        off: i16,
        target: Option<Target>,
    }

    impl Insn {
        const fn new(code: u8, dst: u8, src: u8, off: i16, imm: u32) -> Insn {
            Insn {
                code,
                dst,
                src,
                imm,
                off,
                target: None,
            }
        }
        /// `dst = *(u32 *)(ctx + off)`; the context is in r1.
        pub const fn load_u32(dst: u8, off: i16) -> Insn {
            Insn::new(LDX_MEM_W, dst, 1, off, 0)
        }
        pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
            Insn::new(ALU64_MOV_X, dst, src, 0, 0)
        }
        pub const fn and32(dst: u8, imm: u32) -> Insn {
            Insn::new(ALU32_AND_K, dst, 0, 0, imm)
        }
        pub const fn jeq32(dst: u8, imm: u32, target: Target) -> Insn {
            let mut insn = Insn::new(JMP32_JEQ_K, dst, 0, 0, imm);
            insn.target = Some(target);
            insn
        }
        pub const fn jne32(dst: u8, imm: u32, target: Target) -> Insn {
            let mut insn = Insn::new(JMP32_JNE_K, dst, 0, 0, imm);
            insn.target = Some(target);
            insn
        }
        const fn ret(verdict: u32) -> [Insn; 2] {
            [
                Insn::new(ALU64_MOV_K, 0, 0, 0, verdict),
                Insn::new(JMP_EXIT, 0, 0, 0, 0),
            ]
        }

        /// The kernel's 8-byte encoding.
        pub fn encode(&self) -> u64 {
            let regs = (self.dst & 0xf) | (self.src << 4);
            u64::from_ne_bytes({
                let mut b = [0u8; 8];
                b[0] = self.code;
                b[1] = regs;
                b[2..4].copy_from_slice(&self.off.to_ne_bytes());
                b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
                b
            })
        }
    }

    /// Appends "allow" (return 1) then "deny" (return 0), and resolves every jump.
    pub fn finish(mut body: Vec<Insn>) -> Vec<Insn> {
        let allow = body.len();
        body.extend(Insn::ret(1));
        let deny = body.len();
        body.extend(Insn::ret(0));
        for (pc, insn) in body.iter_mut().enumerate() {
            let to = match insn.target {
                None => continue,
                Some(Target::Skip(n)) => pc + 1 + n as usize,
                Some(Target::Allow) => allow,
                Some(Target::Deny) => deny,
            };
            insn.off = (to - pc - 1) as i16;
        }
        body
    }

    /// The IPv6 program: refuse everything.
    pub fn deny_all() -> Vec<Insn> {
        Insn::ret(0).to_vec()
    }

    fn sys_bpf(cmd: libc::c_long, attr: &mut [u64]) -> std::io::Result<libc::c_long> {
        // SAFETY: `attr` is a zeroed, correctly laid out `union bpf_attr` prefix of the size
        // passed; the kernel reads (and for loads may write) only within it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                std::mem::size_of_val(attr),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }

    /// `BPF_PROG_LOAD` of a sock_addr program; the verifier's log is in the error if it refuses.
    pub fn load(program: &[Insn], hook: u32) -> std::io::Result<OwnedFd> {
        let code: Vec<u64> = program.iter().map(Insn::encode).collect();
        let license = c"GPL";
        let mut log = vec![0u8; 4096];
        let mut attr = [0u64; 16];
        // prog_type | insn_cnt; insns; license; log_level | log_size; log_buf; ...
        attr[0] = u64::from(PROG_TYPE_CGROUP_SOCK_ADDR) | (code.len() as u64) << 32;
        attr[1] = code.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        attr[3] = 1 | (log.len() as u64) << 32;
        attr[4] = log.as_mut_ptr() as u64;
        // expected_attach_type (offset 68): a sock_addr program attaches only to the hook it
        // was loaded for.
        attr[8] = u64::from(hook) << 32;
        match sys_bpf(CMD_PROG_LOAD, &mut attr) {
            // SAFETY: PROG_LOAD returns a new descriptor we own.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]);
                Err(std::io::Error::new(
                    e.kind(),
                    format!("{e}; verifier: {}", log.trim()),
                ))
            }
        }
    }

    /// `BPF_PROG_ATTACH` of `program` to the cgroup folder `folder` at `hook`.
    pub fn attach(folder: &OwnedFd, program: &OwnedFd, hook: u32) -> std::io::Result<()> {
        let mut attr = [0u64; 4];
        attr[0] = folder.as_raw_fd() as u64 | (program.as_raw_fd() as u64) << 32;
        attr[1] = u64::from(hook) | u64::from(F_ALLOW_MULTI) << 32;
        sys_bpf(CMD_PROG_ATTACH, &mut attr).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_resolve_to_allow_and_deny() {
        let rules = Rules {
            denied: vec![(Ipv4Addr::new(127, 0, 0, 0), 8)],
            nameservers: vec![Ipv4Addr::new(127, 0, 0, 53)],
        };
        let p = rules.program_v4();
        // 2 loads, 2 DNS, 3 per rule, then allow (2) and deny (2).
        assert_eq!(p.len(), 2 + 2 + 3 + 4);
        // jne skips the port check; jeq-port goes to allow at 7; the rule's jeq goes to deny at 9.
        assert_eq!(p[2].encode() >> 16 & 0xffff, 1);
        assert_eq!(p[3].encode() >> 16 & 0xffff, (7 - 3 - 1) as u64);
        assert_eq!(p[6].encode() >> 16 & 0xffff, (9 - 6 - 1) as u64);
    }

    #[test]
    fn resolv_conf_nameservers_are_read_v4_only() {
        let text =
            "# c\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\n nameserver 127.0.0.53\n";
        assert_eq!(
            nameservers(text),
            vec![
                Ipv4Addr::new(10, 255, 255, 53),
                Ipv4Addr::new(127, 0, 0, 53)
            ]
        );
    }

    #[test]
    fn the_hosts_own_addresses_are_denied() {
        let rules = Rules::for_this_host().expect("rules");
        let denies = |a: Ipv4Addr| rules.denied.iter().any(|&(n, l)| contains(n, l, a));
        assert!(denies(Ipv4Addr::LOCALHOST));
        assert!(denies(Ipv4Addr::new(169, 254, 169, 254)));
        assert!(!denies(Ipv4Addr::new(151, 101, 0, 223)), "a public address");
        for a in host_addresses().expect("addresses") {
            assert!(denies(a), "{a}");
        }
    }
}
