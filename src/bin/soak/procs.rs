//! What the soak reads from `/proc`: the agent's memory, which processes are its kernels (by
//! walking up from a pid a kernel reported), and which kernel processes are left at the end.

use std::collections::HashSet;
use std::sync::Mutex;

/// The fields of `/proc/<pid>/stat` the soak needs.
#[derive(Debug, Clone)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub pgrp: i32,
    pub session: i32,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let (head, tail) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = tail.split_whitespace().collect();
    Some(Stat {
        pid,
        comm,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
    })
}

fn all() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(stat)
        .collect()
}

/// `VmRSS` of `pid` in KiB (0 if unreadable).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The process listening on TCP `port` on this machine, for `--agent URL` without a pid.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for f in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let local_port = f.get(1).and_then(|a| a.rsplit_once(':'));
            let port_ok =
                local_port.and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) == Some(port);
            // State 0A is LISTEN.
            if port_ok && f.get(3) == Some(&"0A") {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    all().into_iter().map(|s| s.pid).find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|l| inodes.contains(l.to_string_lossy().as_ref()))
    })
}

/// The agent and the process groups and sessions its kernels were seen in.
pub struct Watch {
    pub agent: u32,
    /// The agent's children before the soak began (another user's contexts): never counted.
    baseline: HashSet<u32>,
    /// Groups and sessions of kernel processes (and their shells) seen during the soak.
    groups: Mutex<HashSet<i32>>,
    /// Groups never recorded: the agent's and this process's own.
    exempt: HashSet<i32>,
}

impl Watch {
    pub fn new(agent: u32) -> Watch {
        let baseline = all()
            .into_iter()
            .filter(|s| s.ppid == agent)
            .map(|s| s.pid)
            .collect();
        let mut exempt = HashSet::from([0, 1]);
        for pid in [agent, std::process::id()] {
            if let Some(s) = stat(pid) {
                exempt.extend([s.pgrp, s.session]);
            }
        }
        Watch {
            agent,
            baseline,
            groups: Mutex::new(HashSet::new()),
            exempt,
        }
    }

    /// Whether `pid` descends from the agent (so it is safe to kill); records the groups and
    /// sessions of it and its ancestors below the agent, for the leak scan.
    pub fn note(&self, pid: u32) -> bool {
        let mut seen = Vec::new();
        let mut cur = pid;
        for _ in 0..16 {
            let Some(s) = stat(cur) else { return false };
            if s.ppid == self.agent {
                seen.push(s);
                let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                for s in seen {
                    groups.extend(
                        [s.pgrp, s.session]
                            .into_iter()
                            .filter(|g| !self.exempt.contains(g)),
                    );
                }
                return true;
            }
            cur = s.ppid;
            seen.push(s);
        }
        false
    }

    /// How many kernel process groups and sessions were seen (the leak scan's reach).
    pub fn groups_seen(&self) -> usize {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Kernel processes still there: new children of the agent, or anything in a kernel's group
    /// or session. A zombie counts only while the agent (its parent) has not reaped it.
    pub fn leftovers(&self) -> Vec<Stat> {
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        all()
            .into_iter()
            .filter(|s| s.pid != self.agent && s.pid != std::process::id())
            .filter(|s| {
                let child = s.ppid == self.agent && !self.baseline.contains(&s.pid);
                let grouped = groups.contains(&s.pgrp) || groups.contains(&s.session);
                child || (grouped && (s.state != 'Z' || s.ppid == self.agent))
            })
            .collect()
    }
}

/// SIGKILL to one process.
pub fn kill9(pid: u32) -> bool {
    // SAFETY: a plain syscall; the caller checked that `pid` is one of the agent's kernels.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
}
