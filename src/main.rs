//! The `kernelbox` command: `setup` installs the kernels, `agent` serves a sandbox's APIs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kernelbox::agent::{self, AgentConfig, INTERPRETER_PORT};
use kernelbox::config;

const USAGE: &str = "\
kernelbox — a self-hostable, E2B-compatible sandbox for AI-generated code

Usage:
  kernelbox setup [--no-apt] [--source DIR]
      Install everything the kernels need into $KERNELBOX_HOME (default ~/.kernelbox).
      Idempotent; apt packages (R, a JDK, fonts) are installed system-wide when run as root.
  kernelbox agent [options]
      Serve the code interpreter API (E2B's port 49999).
        --addr ADDR            address to listen on (default 0.0.0.0)
        --port PORT            interpreter port (default 49999; 0 picks a free one)
        --workdir DIR          default cwd of contexts (default /home/user if it exists,
                               else $KERNELBOX_HOME/workspace)
        --env KEY=VALUE        sandbox-level environment variable (repeatable)
        --kernels-dir DIR      kernelspecs to use (default $KERNELBOX_HOME/kernels)
        --default-languages L  comma-separated contexts started up front (default python,javascript)
        --keepalive-secs N     silence before a keepalive line (default 5)
      KERNELBOX_WORKER_THREADS sets the runtime's worker threads (default 1).
  kernelbox --version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup(&args[1..]),
        Some("agent") => agent(&args[1..]),
        Some("--version" | "-V") => {
            println!("kernelbox {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") | None => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => fail(&format!("unknown command '{other}'\n\n{USAGE}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("kernelbox: {msg}");
    ExitCode::from(2)
}

fn setup(args: &[String]) -> ExitCode {
    let mut source = None;
    let mut passthrough = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--source" => match it.next() {
                Some(v) => source = Some(PathBuf::from(v)),
                None => return fail("--source needs a folder"),
            },
            _ => passthrough.push(a.clone()),
        }
    }
    match kernelbox::setup::run(source.as_deref(), &config::home(), &passthrough) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn agent(args: &[String]) -> ExitCode {
    let home = config::home();
    let mut cfg = AgentConfig {
        addr: std::net::IpAddr::from([0, 0, 0, 0]),
        port: INTERPRETER_PORT,
        workdir: config::default_workdir(&home),
        home,
        kernels_dir: None,
        env: Vec::new(),
        default_languages: vec!["python".into(), "javascript".into()],
        keepalive: Duration::from_secs(5),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return fail(&format!("{flag} needs a value\n\n{USAGE}"));
        };
        match flag.as_str() {
            "--addr" => match value.parse() {
                Ok(a) => cfg.addr = a,
                Err(_) => return fail(&format!("--addr: '{value}' is not an IP address")),
            },
            "--port" => match value.parse() {
                Ok(p) => cfg.port = p,
                Err(_) => return fail(&format!("--port: '{value}' is not a port")),
            },
            "--workdir" => cfg.workdir = PathBuf::from(value),
            "--kernels-dir" => cfg.kernels_dir = Some(PathBuf::from(value)),
            "--env" => match value.split_once('=') {
                Some((k, v)) if kernelbox::interpreter::env::valid_key(k) => {
                    cfg.env.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return fail(&format!(
                        "--env: '{value}' is not KEY=VALUE with a valid name"
                    ))
                }
            },
            "--default-languages" => {
                cfg.default_languages = value
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--keepalive-secs" => match value.parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => cfg.keepalive = Duration::from_secs_f64(s),
                _ => return fail("--keepalive-secs needs a positive number"),
            },
            other => return fail(&format!("unknown option '{other}'\n\n{USAGE}")),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.workdir) {
        return fail(&format!(
            "cannot create workdir {}: {e}",
            cfg.workdir.display()
        ));
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kernelbox=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // One worker by default: the agent mostly moves messages between sockets, and keeping the
    // reader, execution and HTTP tasks on one thread avoids cross-thread wake-ups on every
    // message (measured in BENCHMARKS.md: lower latency and higher throughput than two workers
    // on the 2-core reference machine). The kernels do the computing, in their own processes.
    let workers = std::env::var("KERNELBOX_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(agent::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernelbox agent: {e}");
            ExitCode::FAILURE
        }
    }
}
