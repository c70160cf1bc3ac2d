//! `kernelbox-bench`: the code interpreter's performance, printed as a table (see BENCHMARKS.md).
//!
//! Starts a real `kernelbox agent` with one Python context, then drives that *same* ipykernel
//! three ways, interleaved in rounds so drift and noise hit all three alike:
//! kernelbox over HTTP, a bare zmq.rs client (kernelbox's own `jupyter` layer, no HTTP), and
//! Python's `jupyter_client`. Then a 50 MB print end to end, executions per second across four
//! contexts, and the agent's memory (idle RSS and peak RSS during the big print).
//!
//! Usage: kernelbox-bench [--rounds N] [--per-round N] [--agent PATH]
//!
//! `kernelbox-bench files [--sizes 1M,1G] [--runs N] [--dir DIR] [--agent PATH]`: the sandbox
//! API's `/files` instead: upload and download over loopback against `cp` on the same disk (warm
//! cache), with the agent's peak RSS during each transfer.
//!
//! `kernelbox-bench sandboxes [--runs N]`: the control plane (`kernelbox serve`): create with and
//! without the warm pool, create + first `run_code`, kill, the idle sandbox's memory.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kernelbox::agent::{loopback_command, ReadyLine};
use kernelbox::client::{Client, RunOptions};
use kernelbox::jupyter::connection::ConnectionInfo;
use kernelbox::jupyter::{Channel, KernelConnection};

const JUPYTER_CLIENT: &str = r#"
import sys, time
from jupyter_client import BlockingKernelClient
c = BlockingKernelClient(connection_file=sys.argv[1])
c.load_connection_file()
c.start_channels()
c.wait_for_ready(timeout=60)
print("ready", flush=True)
for line in sys.stdin:
    out = []
    for _ in range(int(line)):
        t = time.perf_counter()
        mid = c.execute("1+1", stop_on_error=False)
        idle = reply = False
        while not idle:
            m = c.get_iopub_msg(timeout=60)
            if m["parent_header"].get("msg_id") == mid and m["msg_type"] == "status" \
                    and m["content"]["execution_state"] == "idle":
                idle = True
        while not reply:
            m = c.get_shell_msg(timeout=60)
            reply = m["parent_header"].get("msg_id") == mid
        out.append((time.perf_counter() - t) * 1000)
    print(" ".join(f"{x:.4f}" for x in out), flush=True)
"#;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod sandboxes;

/// A minimal HTTP/1.1 client on one kept-alive connection: `POST /execute`, read the chunked
/// NDJSON body to its end. It measures kernelbox's own cost without a general-purpose client's
/// (reqwest adds about 80 µs per request here; its row is printed too).
struct RawHttp {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl RawHttp {
    async fn connect(url: &str) -> Result<RawHttp, BoxError> {
        let host = url.trim_start_matches("http://").to_string();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(RawHttp {
            stream,
            host,
            buf: Vec::new(),
        })
    }

    /// Runs `code` in context `ctx`; returns the body's lines.
    async fn execute(&mut self, ctx: &str, code: &str) -> Result<Vec<u8>, BoxError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = serde_json::json!({"code": code, "context_id": ctx}).to_string();
        let req = format!(
            "POST /execute HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        self.buf.clear();
        let mut tmp = [0u8; 16384];
        // Read until the chunked body's terminator; the server always ends it.
        while !self.buf.ends_with(b"\r\n0\r\n\r\n") {
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
        let start = self
            .buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no header end")?
            + 4;
        // De-chunk.
        let mut out = Vec::new();
        let mut i = start;
        loop {
            let line_end = i + self.buf[i..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[i..line_end])?, 16)?;
            if size == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            i = line_end + 2 + size + 2;
        }
    }
}

fn main() -> Result<(), BoxError> {
    // Fine interleaving (three of each per round) so that drift in the machine's load hits the
    // three clients alike; 100 rounds give 300 samples per client.
    let mut rounds = 100usize;
    let mut per_round = 3usize;
    let mut agent_bin = std::env::current_exe()?.with_file_name("kernelbox");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "files") {
        return files::main(&args[1..], agent_bin);
    }
    if args.first().is_some_and(|a| a == "sandboxes") {
        return sandboxes::main(&args[1..], agent_bin);
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or("missing value")?;
        match a.as_str() {
            "--rounds" => rounds = v.parse()?,
            "--per-round" => per_round = v.parse()?,
            "--agent" => agent_bin = PathBuf::from(v),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(agent_bin, rounds, per_round))
}

struct AgentProc {
    child: std::process::Child,
    url: String,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn bare_execute(conn: &KernelConnection) -> Result<f64, BoxError> {
    let t = Instant::now();
    let mut sub = conn.execute("1+1", false).await?;
    let (mut idle, mut reply) = (false, false);
    while !(idle && reply) {
        let m = sub.recv().await.ok_or("connection closed")?;
        match (m.channel, m.msg.msg_type()) {
            (Channel::Shell, "execute_reply") => reply = true,
            (Channel::IoPub, "status") if m.msg.content_str("execution_state") == "idle" => {
                idle = true
            }
            _ => {}
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn run(agent_bin: PathBuf, rounds: usize, per_round: usize) -> Result<(), BoxError> {
    let home = kernelbox::config::home();
    let workdir = std::env::temp_dir().join(format!("kernelbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let mut child = loopback_command(&agent_bin, &workdir)
        .args(["--default-languages", "python"])
        .env("RUST_LOG", "kernelbox=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // The interpreter's line comes last, once its contexts are ready.
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    let url = loop {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            return Err("agent did not start".into());
        }
        if let Some(ReadyLine::Interpreter(url)) = ReadyLine::parse(line.trim_end()) {
            break url;
        }
    };
    let agent = AgentProc { child, url };
    let agent_pid = agent.child.id();
    let client = Client::new(agent.url.clone());
    let ctx = client.list_contexts().await?.remove(0).id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kb(agent_pid, "VmRSS:");

    // The agent's one kernel: its connection file is the only one in the agent's run folder.
    let run_dir = home.join("run").join(format!("agent-{agent_pid}"));
    let conn_file = std::fs::read_dir(&run_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .ok_or("no connection file")?;
    let info: ConnectionInfo = serde_json::from_slice(&std::fs::read(&conn_file)?)?;
    let bare = KernelConnection::connect(&info).await?;
    bare.handshake(Duration::from_secs(30)).await?;

    let python = home.join("python/bin/python");
    let mut py = Command::new(&python)
        .args(["-c", JUPYTER_CLIENT])
        .arg(&conn_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut py_in = py.stdin.take().ok_or("no stdin")?;
    let mut py_out = BufReader::new(py.stdout.take().ok_or("no stdout")?);
    let mut ready = String::new();
    py_out.read_line(&mut ready)?;
    if ready.trim() != "ready" {
        return Err("jupyter_client did not start".into());
    }

    // Warm up all three paths.
    for _ in 0..20 {
        client
            .run_code(
                "1+1",
                &RunOptions {
                    context_id: Some(ctx.clone()),
                    ..Default::default()
                },
            )
            .await?;
        bare_execute(&bare).await?;
    }
    writeln!(py_in, "20")?;
    py_out.read_line(&mut String::new())?;

    let opts = RunOptions {
        context_id: Some(ctx.clone()),
        ..Default::default()
    };
    let mut raw = RawHttp::connect(&agent.url).await?;
    for _ in 0..20 {
        raw.execute(&ctx, "1+1").await?;
    }
    let (mut http, mut zmq, mut jc) = (Vec::new(), Vec::new(), Vec::new());
    let mut reqw = Vec::new();
    for _ in 0..rounds {
        for _ in 0..per_round {
            let t = Instant::now();
            let body = raw.execute(&ctx, "1+1").await?;
            http.push(t.elapsed().as_secs_f64() * 1000.0);
            let text = String::from_utf8_lossy(&body);
            if !text.contains(r#""text": "2""#)
                || !text.ends_with("{\"type\": \"end_of_execution\"}\n")
            {
                return Err(format!("unexpected body {text}").into());
            }
        }
        for _ in 0..per_round {
            let t = Instant::now();
            let e = client.run_code("1+1", &opts).await?;
            reqw.push(t.elapsed().as_secs_f64() * 1000.0);
            if e.text() != Some("2") {
                return Err(format!("unexpected result {e:?}").into());
            }
        }
        for _ in 0..per_round {
            zmq.push(bare_execute(&bare).await?);
        }
        writeln!(py_in, "{per_round}")?;
        let mut l = String::new();
        py_out.read_line(&mut l)?;
        for x in l.split_whitespace() {
            jc.push(x.parse::<f64>()?);
        }
    }
    drop(py_in);
    let _ = py.wait();

    // 50 MB print, end to end, three times (median reported), with the agent's peak RSS reset
    // first (clear_refs 5) and read after each run (the maximum is reported).
    let mut big_times = Vec::new();
    let mut peak_rss = 0;
    let mut before_hwm = 0;
    for _ in 0..3 {
        let _ = std::fs::write(format!("/proc/{agent_pid}/clear_refs"), "5");
        before_hwm = before_hwm.max(rss_kb(agent_pid, "VmHWM:"));
        let t = Instant::now();
        let big = client.run_code("print('x' * 50_000_000)", &opts).await?;
        big_times.push(t.elapsed().as_secs_f64());
        peak_rss = peak_rss.max(rss_kb(agent_pid, "VmHWM:"));
        let got: usize = big.logs.stdout.iter().map(String::len).sum();
        if got != 50_000_001 {
            return Err(format!("50 MB print returned {got} bytes").into());
        }
    }
    big_times.sort_by(|a, b| a.total_cmp(b));
    let big_secs = big_times[1];

    // Executions per second across four contexts, each running back to back.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(client.create_context(Some("python"), None).await?.id);
    }
    let per_ctx = 100;
    let t = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let client = client.clone();
            let opts = RunOptions {
                context_id: Some(id.clone()),
                ..Default::default()
            };
            tokio::spawn(async move {
                for _ in 0..per_ctx {
                    client.run_code("1+1", &opts).await?;
                }
                Ok::<_, kernelbox::client::ClientError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let eps = (4 * per_ctx) as f64 / t.elapsed().as_secs_f64();

    // Process.Start of /bin/true, through the interpreter's URL as the SDKs do with sandbox_url.
    for _ in 0..20 {
        client.run_command("/bin/true", &[], None).await?;
    }
    let mut starts = Vec::new();
    for _ in 0..rounds * per_round {
        let t = Instant::now();
        let out = client.run_command("/bin/true", &[], None).await?;
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        if out.exit_code != 0 {
            return Err(format!("/bin/true ended with {}", out.status).into());
        }
    }
    starts.sort_by(f64::total_cmp);

    for v in [&mut http, &mut reqw, &mut zmq, &mut jc] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let (h50, z50, j50) = (
        percentile(&http, 0.5),
        percentile(&zmq, 0.5),
        percentile(&jc, 0.5),
    );
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "kernelbox-bench: {} cores ({cpus}), {rounds} rounds x {per_round} per client, interleaved",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| run_code(\"1+1\") on one ipykernel | n | p50 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("kernelbox over HTTP (minimal HTTP/1.1 client)", &http),
        ("kernelbox over HTTP (kernelbox::client, reqwest)", &reqw),
        ("bare zmq.rs client", &zmq),
        ("Python jupyter_client", &jc),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.iter().sum::<f64>() / v.len() as f64
        );
    }
    println!();
    let mb = 50.0;
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    println!(
        "| p50 kernelbox / bare zmq.rs | {:.3} | <= 1.10 | {} |",
        h50 / z50,
        check(h50 / z50 <= 1.10)
    );
    println!(
        "| p50 kernelbox via reqwest / bare zmq.rs (client cost included) | {:.3} | | |",
        percentile(&reqw, 0.5) / z50
    );
    println!(
        "| p50 kernelbox / jupyter_client | {:.3} | <= 1.00 | {} |",
        h50 / j50,
        check(h50 / j50 <= 1.0)
    );
    println!(
        "| print(\"x\"*50_000_000) end to end (median of 3) | {big_secs:.2} s, {:.0} MB/s | >= 100 MB/s | {} |",
        mb / big_secs,
        check(mb / big_secs >= 100.0)
    );
    println!(
        "| peak agent RSS during the 50 MB print | {:.0} MB (RSS before: {:.0} MB) | <= 150 MB | {} |",
        peak_rss as f64 / 1024.0,
        before_hwm as f64 / 1024.0,
        check(peak_rss as f64 / 1024.0 <= 150.0)
    );
    println!(
        "| idle agent RSS (agent process alone) | {:.1} MB | < 30 MB | {} |",
        idle_rss as f64 / 1024.0,
        check((idle_rss as f64 / 1024.0) < 30.0)
    );
    println!("| executions/s across 4 contexts | {eps:.0} | | |");
    println!(
        "| Process.Start of /bin/true to its end, p50 (p99) over {} | {:.2} ms ({:.2} ms) | < 5 ms | {} |",
        starts.len(),
        percentile(&starts, 0.5),
        percentile(&starts, 0.99),
        check(percentile(&starts, 0.5) < 5.0)
    );
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(())
}

/// `kernelbox-bench files`: `/files` throughput against `cp`.
mod files {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::{rss_kb, AgentProc, BoxError};
    use kernelbox::agent::{loopback_command, ReadyLine};

    pub fn main(args: &[String], mut agent_bin: PathBuf) -> Result<(), BoxError> {
        let mut sizes = vec![1usize << 20, 1 << 30];
        let mut runs = None;
        let mut dir = std::env::temp_dir();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or("missing value")?;
            match a.as_str() {
                "--sizes" => sizes = v.split(',').map(parse_size).collect::<Result<_, _>>()?,
                "--dir" => dir = PathBuf::from(v),
                "--runs" => runs = Some(v.parse::<usize>()?.max(1)),
                "--agent" => agent_bin = PathBuf::from(v),
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        let workdir = dir.join(format!("kernelbox-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&workdir)?;
        let result = run(&agent_bin, &workdir, &sizes, runs);
        let _ = std::fs::remove_dir_all(&workdir);
        result
    }

    fn parse_size(s: &str) -> Result<usize, BoxError> {
        let (n, mult) = match s.trim().to_ascii_uppercase() {
            t if t.ends_with('G') => (t.trim_end_matches('G').to_string(), 1 << 30),
            t if t.ends_with('M') => (t.trim_end_matches('M').to_string(), 1 << 20),
            t if t.ends_with('K') => (t.trim_end_matches('K').to_string(), 1 << 10),
            t => (t, 1),
        };
        Ok(n.parse::<usize>()? * mult)
    }

    fn label(size: usize) -> String {
        match size {
            s if s >= 1 << 30 => format!("{} GB", s >> 30),
            s if s >= 1 << 20 => format!("{} MB", s >> 20),
            s => format!("{s} B"),
        }
    }

    fn run(
        agent_bin: &Path,
        workdir: &Path,
        sizes: &[usize],
        runs: Option<usize>,
    ) -> Result<(), BoxError> {
        let mut child = loopback_command(agent_bin, workdir)
            .args(["--default-languages", ""])
            .env("RUST_LOG", "kernelbox=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        let mut envd = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                return Err("agent did not start".into());
            }
            match ReadyLine::parse(line.trim_end()) {
                Some(ReadyLine::SandboxApi(url)) => {
                    envd = url.trim_start_matches("http://").to_string()
                }
                Some(ReadyLine::Interpreter(_)) => break,
                None => {}
            }
        }
        let agent = AgentProc {
            child,
            url: envd.clone(),
        };
        let pid = agent.child.id();
        println!(
            "kernelbox-bench files: /files over loopback vs cp on the same disk ({}), warm cache; \
             median of N (CPU: ms per run, mean); agent idle RSS {} KB",
            workdir.display(),
            rss_kb(pid, "VmRSS:")
        );
        println!(
            "{:<8} {:<16} {:>4} {:>10} {:>10} {:>8} {:>16} {:>10} {:>10} {:>12}",
            "size",
            "operation",
            "N",
            "ms",
            "MB/s",
            "vs cp",
            "agent peak RSS",
            "agent CPU",
            "client CPU",
            "agent faults"
        );
        for &size in sizes {
            let reps = runs.unwrap_or(if size >= 256 << 20 { 3 } else { 20 });
            let src = workdir.join("src.bin");
            write_pattern(&src, size)?;
            // Warm cache: every row reads the source from memory.
            std::io::copy(&mut std::fs::File::open(&src)?, &mut std::io::sink())?;
            let dst = workdir.join("dst.bin");

            let cp = measured(
                None,
                reps,
                || drop(std::fs::remove_file(&dst)),
                || {
                    let t = Instant::now();
                    let ok = Command::new("cp").arg(&src).arg(&dst).status()?.success();
                    if !ok {
                        return Err("cp failed".into());
                    }
                    Ok(t.elapsed().as_secs_f64())
                },
            )?;
            row(size, "cp", &cp, cp.secs);

            let target = workdir.join("uploaded.bin");
            let path = target.to_string_lossy().to_string();
            let up = measured(
                Some(pid),
                reps,
                || drop(std::fs::remove_file(&target)),
                || {
                    let t = Instant::now();
                    upload(&envd, &path, &src, size)?;
                    Ok(t.elapsed().as_secs_f64())
                },
            )?;
            if std::fs::metadata(&target)?.len() != size as u64 {
                return Err("upload wrote a wrong size".into());
            }
            row(size, "upload", &up, cp.secs);

            let src_path = src.to_string_lossy().to_string();
            for (name, gzip) in [("download", false), ("download gzip", true)] {
                let down = measured(
                    Some(pid),
                    reps,
                    || drop(std::fs::remove_file(&dst)),
                    || {
                        let t = Instant::now();
                        let n = download(&envd, &src_path, &dst, gzip)?;
                        let elapsed = t.elapsed().as_secs_f64();
                        if !gzip && n != size as u64 {
                            return Err("download got a wrong size".into());
                        }
                        Ok(elapsed)
                    },
                )?;
                row(size, name, &down, cp.secs);
            }
            let _ = std::fs::remove_file(&src);
            let _ = std::fs::remove_file(&dst);
            let _ = std::fs::remove_file(&target);
        }
        drop(agent);
        Ok(())
    }

    fn row(size: usize, op: &str, m: &Measured, cp_secs: f64) {
        let mbps = size as f64 / (1 << 20) as f64 / m.secs;
        let rss = m
            .peak_rss_kb
            .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_default();
        let agent_cpu = m
            .agent_cpu_ms
            .map(|ms| format!("{ms:.0}"))
            .unwrap_or_default();
        let faults = m
            .agent_faults
            .map(|n| format!("{n:.0}"))
            .unwrap_or_default();
        println!(
            "{:<8} {:<16} {:>4} {:>10.2} {:>10.0} {:>7.2}x {:>16} {:>10} {:>10.0} {:>12}",
            label(size),
            op,
            m.runs,
            m.secs * 1000.0,
            mbps,
            cp_secs / m.secs,
            rss,
            agent_cpu,
            m.client_cpu_ms,
            faults
        );
    }

    /// One row's measures.
    struct Measured {
        runs: usize,
        /// Median wall time.
        secs: f64,
        /// The agent's peak RSS over the runs (`VmHWM`, reset before each).
        peak_rss_kb: Option<u64>,
        /// The agent's user + system CPU per run (mean): unlike wall time, barely moved by the
        /// other work sharing the machine's cores.
        agent_cpu_ms: Option<f64>,
        /// The agent's minor page faults per run (mean): each is a fresh page the allocator
        /// took from the kernel, the cost that buffer reuse avoids.
        agent_faults: Option<f64>,
        /// The client's CPU per run (mean): this process, plus `cp` itself for the cp row.
        client_cpu_ms: f64,
    }

    /// `reps` runs of `f`, which returns its wall time. Before each, untimed and outside the
    /// CPU counts: `prepare` (removing the previous run's output, whose unlink of 1 GB of page
    /// cache costs this process more CPU than some transfers), then writing back the dirty pages
    /// that earlier runs left, so that no run pays for another's writes.
    fn measured(
        agent: Option<u32>,
        reps: usize,
        mut prepare: impl FnMut(),
        mut f: impl FnMut() -> Result<f64, BoxError>,
    ) -> Result<Measured, BoxError> {
        let mut times = Vec::with_capacity(reps);
        let mut peak = 0;
        let (mut agent_cpu, mut client_cpu, mut faults) = (0.0, 0.0, 0.0);
        for _ in 0..reps {
            prepare();
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            if let Some(pid) = agent {
                let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            }
            let (agent_before, client_before) = (agent.map(cpu_ms), own_cpu_ms());
            let faults_before = agent.map(minor_faults);
            times.push(f()?);
            client_cpu += own_cpu_ms() - client_before;
            if let (Some(pid), Some(before)) = (agent, agent_before) {
                agent_cpu += cpu_ms(pid) - before;
                faults += minor_faults(pid) - faults_before.unwrap_or(0.0);
                peak = peak.max(rss_kb(pid, "VmHWM:"));
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(Measured {
            runs: reps,
            secs: times[times.len() / 2],
            peak_rss_kb: agent.map(|_| peak),
            agent_cpu_ms: agent.map(|_| agent_cpu / reps as f64),
            agent_faults: agent.map(|_| faults / reps as f64),
            client_cpu_ms: client_cpu / reps as f64,
        })
    }

    /// Fields `first..first + n` of `/proc/PID/stat` (numbered as in proc(5)), summed.
    fn stat_fields(pid: u32, first: usize, n: usize) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The fields after the command name (field 2, which may hold spaces) start at 3.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        after
            .split_whitespace()
            .skip(first - 3)
            .take(n)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    }

    /// A process's minor page faults so far (`minflt`, field 10).
    fn minor_faults(pid: u32) -> f64 {
        stat_fields(pid, 10, 1)
    }

    /// A process's user + system CPU so far, in ms (`utime` and `stime`, fields 14 and 15).
    fn cpu_ms(pid: u32) -> f64 {
        let ticks = stat_fields(pid, 14, 2);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks * 1000.0 / hz
    }

    /// This process's CPU plus its waited-for children's (`cp`), in ms.
    fn own_cpu_ms() -> f64 {
        let used = |who| {
            // SAFETY: getrusage fills the struct it is given; all-zero is a valid value for it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut ru) };
            let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
            ms(ru.ru_utime) + ms(ru.ru_stime)
        };
        used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN)
    }

    /// A file of `size` bytes that no compressor shrinks much (an xorshift stream).
    fn write_pattern(path: &Path, size: usize) -> Result<(), BoxError> {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut left = size;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let n = left.min(buf.len());
            f.write_all(&buf[..n])?;
            left -= n;
        }
        f.flush()?;
        Ok(())
    }

    fn query_path(path: &str) -> String {
        path.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    /// `POST /files?path=` with the file as an octet-stream body (sent with `sendfile`, so the
    /// client costs little), then the reply.
    fn upload(addr: &str, path: &str, src: &Path, size: usize) -> Result<(), BoxError> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        write!(
            s,
            "POST /files?path={} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {size}\r\nConnection: close\r\n\r\n",
            query_path(path)
        )?;
        let f = std::fs::File::open(src)?;
        send_file(&f, &s, size)?;
        let (status, _) = read_head(&mut s)?;
        if status != 200 {
            return Err(format!("upload answered {status}").into());
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(())
    }

    /// `GET /files?path=` into `dst`; returns the body's length.
    fn download(addr: &str, path: &str, dst: &Path, gzip: bool) -> Result<u64, BoxError> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let accept = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            s,
            "GET /files?path={} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n",
            query_path(path)
        )?;
        let (status, reader) = read_head(&mut s)?;
        if status != 200 {
            return Err(format!("download answered {status}").into());
        }
        let mut out = std::fs::File::create(dst)?;
        // A gzip reply is chunked; the bench only needs the bytes to flow, so its framing stays
        // in the file.
        let head = reader.buffer().to_vec();
        out.write_all(&head)?;
        let s = reader.into_inner();
        Ok(head.len() as u64 + splice_to_file(s, &out)?)
    }

    /// The rest of the socket's bytes into `out` through a pipe with `splice(2)`: the client
    /// copies each byte once (into the page cache), as `cp` does, so the download's time is the
    /// agent's and the network stack's, not a client's extra copy through user memory.
    fn splice_to_file(s: &TcpStream, out: &std::fs::File) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd;
        let (pipe_out, pipe_in) = kernelbox::sys::pipe()?;
        // SAFETY: fcntl on the pipe just made; a refusal keeps 64 KB.
        unsafe {
            libc::fcntl(
                pipe_in.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BUFFER as libc::c_int,
            )
        };
        let splice = |from: i32, to: i32, len: usize| -> std::io::Result<usize> {
            let null = std::ptr::null_mut();
            // SAFETY: open descriptors, null offsets (their own positions).
            let n = unsafe { libc::splice(from, null, to, null, len, libc::SPLICE_F_MOVE) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        };
        let mut n = 0u64;
        loop {
            let mut in_pipe = splice(s.as_raw_fd(), pipe_in.as_raw_fd(), PIPE_BUFFER)?;
            if in_pipe == 0 {
                return Ok(n);
            }
            n += in_pipe as u64;
            while in_pipe > 0 {
                in_pipe -= splice(
                    pipe_out.as_raw_fd(),
                    out.as_raw_fd(),
                    in_pipe.min(WRITE_PIECE),
                )?;
            }
        }
    }

    /// The download client's pipe: large, so that few splices are needed.
    const PIPE_BUFFER: usize = 1 << 20;
    /// The download client's file writes, as the agent's (`staged::WRITE_PIECE`): 128 KB or
    /// more per write into a new file is several times slower on the reference machine. `cp`
    /// writes page by page (`copy_file_range`), so this keeps the comparison about HTTP.
    const WRITE_PIECE: usize = 64 << 10;

    /// `len` bytes of `file` into the socket with `sendfile(2)`: the kernel hands the page
    /// cache's pages to TCP, so the client costs little. (`std::io::copy` does not: it uses
    /// `sendfile` only towards pipes, and reads and sends 8 KB at a time to a socket.)
    fn send_file(file: &std::fs::File, s: &TcpStream, len: usize) -> Result<(), BoxError> {
        use std::os::fd::AsRawFd;
        let mut left = len;
        while left > 0 {
            // SAFETY: both descriptors are open for the call; a null offset uses the file's.
            let n = unsafe {
                libc::sendfile(
                    s.as_raw_fd(),
                    file.as_raw_fd(),
                    std::ptr::null_mut(),
                    left.min(1 << 30),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                return Err("the source file ended early".into());
            }
            left -= n as usize;
        }
        Ok(())
    }

    /// Reads a response head; returns the status and a reader positioned at the body.
    fn read_head(s: &mut TcpStream) -> Result<(u16, BufReader<&mut TcpStream>), BoxError> {
        let mut reader = BufReader::with_capacity(256 * 1024, s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("bad status line")?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        Ok((status, reader))
    }
}
