//! `kernelbox-bench sandboxes`: the control plane's latencies through its HTTP API, with a
//! reqwest client (what an SDK does, minus the SDK): create on a warm-pool hit and a miss,
//! create + first `run_code("1+1")` (on a hit, on a miss, and back to back while the pool
//! refills), kill, the cached template check, and the memory of one idle code-interpreter
//! sandbox from its cgroup.
//!
//! Usage: kernelbox-bench sandboxes [--runs N] [--serve PATH]
//!
//! Starts its own `kernelbox serve` (root needed; templates built first if missing), twice: with
//! `--pool-size 1` and with `--pool-size 0`. Between pool-hit samples it waits for the pool to
//! refill (3 s), so every one of them is a hit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{percentile, BoxError};

/// The code-interpreter SDK's default template.
const CODE_INTERPRETER: &str = "code-interpreter-v1";
/// What a refill of a one-sandbox pool takes here, with room to spare.
const REFILL_WAIT: Duration = Duration::from_secs(3);

struct Serve {
    child: Child,
    url: String,
    key: String,
    state: PathBuf,
}

impl Serve {
    fn start(bin: &Path, pool_size: usize, tag: &str) -> Result<Serve, BoxError> {
        let state =
            std::env::temp_dir().join(format!("kb-bench-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let mut child = Command::new(bin)
            .args(["serve", "--addr", "127.0.0.1", "--port", "0", "--pool-size"])
            .arg(pool_size.to_string())
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "kernelbox=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().ok_or("serve exited before listening")??;
            if let Some(url) = line.strip_prefix("kernelbox serve: listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let keys = std::fs::read_to_string(state.join("api-keys"))?;
        let key = keys
            .lines()
            .find(|l| l.starts_with("e2b_"))
            .ok_or("no API key")?
            .to_string();
        Ok(Serve {
            child,
            url,
            key,
            state,
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child: SIGTERM lets serve kill its sandboxes.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A created sandbox: its id and token.
struct Created {
    id: String,
    token: String,
}

async fn create(
    http: &reqwest::Client,
    serve: &Serve,
    template: &str,
) -> Result<Created, BoxError> {
    let answer: Value = http
        .post(format!("{}/v2/sandboxes", serve.url))
        .header("X-API-KEY", &serve.key)
        .json(&json!({"templateID": template, "timeout": 300}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Created {
        id: answer["sandboxID"].as_str().ok_or("no id")?.to_string(),
        token: answer["envdAccessToken"].as_str().unwrap_or("").to_string(),
    })
}

/// `run_code("1+1")` through the gateway, read to its end; checks the result.
async fn run_code(http: &reqwest::Client, serve: &Serve, s: &Created) -> Result<(), BoxError> {
    let body = http
        .post(format!("{}/execute", serve.url))
        .header("E2b-Sandbox-Id", &s.id)
        .header("E2b-Sandbox-Port", "49999")
        .header("X-Access-Token", &s.token)
        .json(&json!({"code": "1+1"}))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    if !body.contains("\"text\": \"2\"") && !body.contains("\"text\":\"2\"") {
        return Err(format!("unexpected result: {body}").into());
    }
    Ok(())
}

async fn kill(http: &reqwest::Client, serve: &Serve, id: &str) -> Result<(), BoxError> {
    http.delete(format!("{}/sandboxes/{id}", serve.url))
        .header("X-API-KEY", &serve.key)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Milliseconds of `f`.
async fn ms<T>(
    f: impl std::future::Future<Output = Result<T, BoxError>>,
) -> Result<(T, f64), BoxError> {
    let t = Instant::now();
    let v = f.await?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn row(&mut self, what: &str) {
        self.0.sort_by(f64::total_cmp);
        if self.0.is_empty() {
            return;
        }
        println!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} |",
            self.0.len(),
            percentile(&self.0, 0.5),
            percentile(&self.0, 0.99),
            self.0.iter().sum::<f64>() / self.0.len() as f64
        );
    }
}

pub fn main(args: &[String], mut serve_bin: PathBuf) -> Result<(), BoxError> {
    let mut runs = 20usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or("missing value")?;
        match a.as_str() {
            "--runs" => runs = v.parse()?,
            "--serve" => serve_bin = PathBuf::from(v),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let cached = {
        let t = Instant::now();
        let status = Command::new(&serve_bin)
            .args(["template", "build"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err("kernelbox template build failed".into());
        }
        t.elapsed().as_secs_f64() * 1000.0
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&serve_bin, runs, cached))
}

async fn run(serve_bin: &Path, runs: usize, cached_ms: f64) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    println!(
        "kernelbox-bench sandboxes: {runs} samples per row, reqwest against kernelbox serve (loopback)\n"
    );
    println!("| measure (client: Rust, reqwest) | n | p50 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|---|");

    let pooled = Serve::start(serve_bin, 1, "pool")?;
    let (mut hit, mut hit_first, mut kills, mut base_hit) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut idle_memory = None;
    for i in 0..runs {
        tokio::time::sleep(REFILL_WAIT).await;
        let (s, create_ms) = ms(create(&http, &pooled, CODE_INTERPRETER)).await?;
        let (_, first_ms) = ms(run_code(&http, &pooled, &s)).await?;
        hit.0.push(create_ms);
        hit_first.0.push(create_ms + first_ms);
        if i == 0 {
            idle_memory = Some(memory_after_creation(&http, &pooled).await?);
        }
        let (_, kill_ms) = ms(kill(&http, &pooled, &s.id)).await?;
        kills.0.push(kill_ms);
        let (b, base_ms) = ms(create(&http, &pooled, "base")).await?;
        base_hit.0.push(base_ms);
        kill(&http, &pooled, &b.id).await?;
    }
    let mut back_to_back = Samples::default();
    for _ in 0..runs {
        let (s, create_ms) = ms(create(&http, &pooled, CODE_INTERPRETER)).await?;
        let (_, first_ms) = ms(run_code(&http, &pooled, &s)).await?;
        back_to_back.0.push(create_ms + first_ms);
        kill(&http, &pooled, &s.id).await?;
    }
    drop(pooled);

    let cold = Serve::start(serve_bin, 0, "nopool")?;
    let (mut miss, mut miss_first, mut base_miss) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..runs {
        let (s, create_ms) = ms(create(&http, &cold, CODE_INTERPRETER)).await?;
        let (_, first_ms) = ms(run_code(&http, &cold, &s)).await?;
        miss.0.push(create_ms);
        miss_first.0.push(create_ms + first_ms);
        kill(&http, &cold, &s.id).await?;
        let (b, base_ms) = ms(create(&http, &cold, "base")).await?;
        base_miss.0.push(base_ms);
        kill(&http, &cold, &b.id).await?;
    }
    drop(cold);

    hit.row("create code-interpreter-v1, pool hit");
    miss.row("create code-interpreter-v1, pool miss (sandbox and kernels start)");
    base_hit.row("create base, pool hit");
    base_miss.row("create base, pool miss");
    hit_first.row("create + first run_code(\"1+1\"), pool hit");
    miss_first.row("create + first run_code(\"1+1\"), pool miss");
    back_to_back.row("create + first run_code(\"1+1\"), back to back (the pool of 1 refilling)");
    kills.row("kill (DELETE /sandboxes/{id})");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| template check, both cached (`kernelbox template build`) | {cached_ms:.0} ms |");
    if let Some((cgroup, agent_rss)) = idle_memory {
        println!(
            "| idle code-interpreter sandbox, cgroup memory (default contexts started, nothing run) | {:.1} MB |",
            cgroup as f64 / (1 << 20) as f64
        );
        println!(
            "| of which the agent's own RSS | {:.1} MB |",
            agent_rss as f64 / 1024.0
        );
    }
    Ok(())
}

/// A fresh code-interpreter sandbox's memory as its cgroup counts it (`memUsed` of
/// `GET /sandboxes/{id}/metrics`, cgroup v1 `memory.usage_in_bytes`), after a second at rest,
/// and its agent's RSS (KB).
async fn memory_after_creation(
    http: &reqwest::Client,
    serve: &Serve,
) -> Result<(u64, u64), BoxError> {
    let s = create(http, serve, CODE_INTERPRETER).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics: Value = http
        .get(format!("{}/sandboxes/{}/metrics", serve.url, s.id))
        .header("X-API-KEY", &serve.key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let used = metrics[0]["memUsed"].as_u64().unwrap_or(0);
    let agent_rss = agent_rss_kb(&serve.state, &s.id);
    kill(http, serve, &s.id).await?;
    Ok((used, agent_rss))
}

/// The RSS of the agent whose stdout is the sandbox's log (`/proc/<pid>/fd/1`).
fn agent_rss_kb(state: &Path, id: &str) -> u64 {
    let log = state.join("sandboxes").join(id).join("agent.log");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|t| t == log) {
            return super::rss_kb(pid, "VmRSS:");
        }
    }
    0
}
