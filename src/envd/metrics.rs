//! `GET /metrics`: the machine's (in a sandbox: the sandbox's) CPU, memory and disk, in envd's
//! shape. E2B's orchestrator polls it; the SDKs do not call it.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::Envd;

/// envd's `Metrics` (memory and disk in bytes, `*_mib` in MiB, `ts` in Unix seconds).
#[derive(Debug, Serialize)]
pub struct Metrics {
    ts: i64,
    cpu_count: usize,
    cpu_used_pct: f32,
    mem_total: u64,
    mem_used: u64,
    mem_cache: u64,
    mem_total_mib: u64,
    mem_used_mib: u64,
    disk_used: u64,
    disk_total: u64,
}

/// The CPU counters at the previous call, so each call reports use since the last one (as
/// envd's `cpu.Percent(0)` does); the first call reports use since boot.
#[derive(Default)]
pub struct CpuSampler(Mutex<Option<(u64, u64)>>);

impl CpuSampler {
    fn used_pct(&self) -> f32 {
        let Some((total, idle)) = cpu_times() else {
            return 0.0;
        };
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (t0, i0) = last.replace((total, idle)).unwrap_or((0, 0));
        let (dt, di) = (total.saturating_sub(t0), idle.saturating_sub(i0));
        if dt == 0 {
            return 0.0;
        }
        (100.0 * (dt - di.min(dt)) as f64 / dt as f64) as f32
    }
}

pub async fn metrics(State(envd): State<Arc<Envd>>) -> Json<Metrics> {
    let mem = meminfo();
    let (disk_total, disk_used) = disk("/");
    let kib = |name: &str| mem.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v) * 1024;
    let (total, available) = (kib("MemTotal"), kib("MemAvailable"));
    let used = total.saturating_sub(available);
    Json(Metrics {
        ts: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_used_pct: envd.cpu.used_pct(),
        mem_total: total,
        mem_used: used,
        mem_cache: kib("Cached"),
        mem_total_mib: total >> 20,
        mem_used_mib: used >> 20,
        disk_used,
        disk_total,
    })
}

/// (all jiffies, idle + iowait jiffies) from the first line of /proc/stat.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((fields.iter().sum(), idle))
}

/// /proc/meminfo as (name, kB) pairs.
fn meminfo() -> Vec<(String, u64)> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kb = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.to_string(), kb))
        })
        .collect()
}

/// (total, used) bytes of the filesystem holding `path`.
fn disk(path: &str) -> (u64, u64) {
    let Ok(cpath) = std::ffi::CString::new(path) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes only into the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(cpath.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    (total, total.saturating_sub(free))
}
