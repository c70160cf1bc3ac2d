//! The `kernelbox` command: `setup` installs the kernels, `agent` serves a sandbox's APIs, and
//! the hidden `sandbox run-once` starts one sandbox by hand.
//!
//! Each subcommand is one variant of [`Command`] with its own argument struct and one function
//! that runs it; the control plane (`serve`), `template` and `cp` will be more of the same.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use kernelbox::agent::{self, AgentConfig, ENVD_PORT, INTERPRETER_PORT};
use kernelbox::config;

/// Exit status for a usage error or a failed set-up (clap uses the same for its own errors).
const EXIT_USAGE: u8 = 2;
/// The runtime's worker threads unless `KERNELBOX_WORKER_THREADS` says otherwise. One: the agent
/// mostly moves messages between sockets, and keeping the reader, execution and HTTP tasks on
/// one thread avoids cross-thread wake-ups on every message (measured in BENCHMARKS.md: lower
/// latency and higher throughput than two workers on the 2-core reference machine). The kernels
/// do the computing, in their own processes.
const DEFAULT_WORKER_THREADS: usize = 1;
/// The sandbox API's access token, from the environment rather than a flag (see `agent --help`).
const ACCESS_TOKEN_ENV: &str = "KERNELBOX_ACCESS_TOKEN";

/// kernelbox — a self-hostable, E2B-compatible sandbox for AI-generated code
#[derive(Parser)]
#[command(name = "kernelbox", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the kernels need into $KERNELBOX_HOME (default ~/.kernelbox).
    ///
    /// Idempotent; apt packages (R, a JDK, fonts) are installed system-wide when run as root.
    Setup(SetupArgs),
    /// Serve the code interpreter (E2B's port 49999) and the sandbox API (port 49983).
    #[command(
        after_help = "KERNELBOX_WORKER_THREADS sets the runtime's worker threads (default 1).\n\
                      KERNELBOX_ACCESS_TOKEN stands for --access-token and is safer (every process \
                      in the sandbox can read the agent's command line); the agent removes it from \
                      the environment its kernels inherit."
    )]
    Agent(AgentArgs),
    /// Serve E2B's sandbox API and gateway on one port: sandboxes from templates, isolated
    /// with Linux namespaces and cgroups, with lifetimes (needs root).
    #[command(
        after_help = "Point the official SDKs here with E2B_API_URL=http://localhost:3000 \
                      E2B_SANDBOX_URL=http://localhost:3000 E2B_API_KEY=<a key from \
                      $KERNELBOX_HOME/serve/api-keys, printed on first start>."
    )]
    Serve(ServeArgs),
    /// The sandboxes of a running `kernelbox serve`: list and kill them.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Sandbox templates: the root filesystems sandboxes start from (under
    /// $KERNELBOX_HOME/templates).
    #[command(subcommand)]
    Template(TemplateCommand),
}

#[derive(Args)]
#[command(args_override_self = true)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    addr: IpAddr,
    /// Port of the API and the gateway (0 picks a free one)
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// This instance's state: database, API keys, sandbox folders [default: $KERNELBOX_HOME/serve]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The longest a sandbox may live, in seconds (timeouts are clamped to it)
    #[arg(long, default_value_t = 3600)]
    max_lifetime_secs: u64,
    /// Ready sandboxes kept per template (base, code-interpreter-v1) for fast creates; 0: none
    #[arg(long, default_value_t = 1)]
    pool_size: usize,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Build the default templates unless they are built and current: `base` (a Debian root
    /// from mmdebstrap, with E2B's user `user`; about a minute) and `code-interpreter-v1` (the
    /// same with the kernels installed inside; several minutes the first time). Needs root.
    Build,
    /// Build only the `base` template.
    BuildBase,
    /// The templates built on this machine.
    List,
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// The running sandboxes: id, template, start, deadline, metadata.
    List(ServeClientArgs),
    /// Kill sandboxes by id.
    Kill {
        #[command(flatten)]
        serve: ServeClientArgs,
        /// Sandbox ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start one sandbox on the host-minimal root, print its agent socket, and kill it on
    /// Ctrl-C or SIGTERM (a manual test of the namespace backend, without `serve`).
    #[command(hide = true)]
    RunOnce(RunOnceArgs),
}

/// How to reach `kernelbox serve`.
#[derive(Args)]
struct ServeClientArgs {
    /// The URL of `kernelbox serve` [default: $E2B_API_URL, else http://localhost:3000]
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// API key [default: $E2B_API_KEY, else the first key in $KERNELBOX_HOME/serve/api-keys]
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
}

impl ServeClientArgs {
    fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("E2B_API_URL").ok())
            .unwrap_or_else(|| "http://localhost:3000".into())
            .trim_end_matches('/')
            .to_string()
    }

    fn key(&self) -> Option<String> {
        self.api_key
            .clone()
            .or_else(|| std::env::var("E2B_API_KEY").ok())
            .or_else(|| {
                let keys = std::fs::read_to_string(config::home().join("serve/api-keys")).ok()?;
                keys.lines()
                    .find(|l| l.starts_with("e2b_"))
                    .map(str::to_string)
            })
    }
}

#[derive(Args)]
struct RunOnceArgs {
    /// Memory limit in MiB
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// CPU limit in CPUs
    #[arg(long, default_value_t = 2.0)]
    cpus: f64,
    /// Most processes at once
    #[arg(long, default_value_t = 1024)]
    pids: u64,
    /// Start from this built template instead of the host-minimal root
    #[arg(long, value_name = "ID")]
    template: Option<String>,
    /// Give the sandbox a user-mode route to the host's network (slirp4netns), not only lo
    #[arg(long)]
    network: bool,
    /// Extra arguments for the agent inside (after `--`)
    #[arg(last = true)]
    agent_args: Vec<String>,
}

#[derive(Args)]
#[command(args_override_self = true)]
struct SetupArgs {
    /// Skip the apt packages (R's kernel, CJK fonts) even when run as root
    #[arg(long)]
    no_apt: bool,
    /// The kernels folder of a kernelbox checkout [default: found from the binary or its sources]
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

/// Later flags win over earlier ones (start-up scripts append the caller's flags to their own).
#[derive(Args)]
#[command(args_override_self = true)]
struct AgentArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    addr: IpAddr,
    /// Interpreter port (0 picks a free one)
    #[arg(long, value_name = "PORT", default_value_t = INTERPRETER_PORT)]
    port: u16,
    /// Sandbox API (envd) port (0 picks a free one)
    #[arg(long, value_name = "PORT", default_value_t = ENVD_PORT)]
    envd_port: u16,
    /// Also serve both APIs on this unix socket (requests without E2b-Sandbox-Port go to the
    /// sandbox API)
    #[arg(long, value_name = "PATH")]
    unix_socket: Option<PathBuf>,
    /// Require this X-Access-Token on the sandbox API and /execute [default:
    /// $KERNELBOX_ACCESS_TOKEN; none: debug mode, all open]
    #[arg(long, value_name = "TOKEN")]
    access_token: Option<String>,
    /// Default cwd of contexts [default: /home/user if it exists, else $KERNELBOX_HOME/workspace]
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Sandbox-level environment variable, for every context (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Kernelspecs to use [default: $KERNELBOX_HOME/kernels]
    #[arg(long, value_name = "DIR")]
    kernels_dir: Option<PathBuf>,
    /// Comma-separated languages whose contexts start up front
    #[arg(long, value_name = "L", default_value = "python,javascript", value_parser = parse_languages)]
    default_languages: Languages,
    /// Seconds of silence before an execution writes a keepalive line
    #[arg(long = "keepalive-secs", value_name = "N", default_value = "5", value_parser = parse_secs)]
    keepalive: Duration,
}

/// A comma-separated list of languages (a newtype, so clap takes it as one value).
#[derive(Clone)]
struct Languages(Vec<String>);

fn parse_env(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if kernelbox::interpreter::env::valid_key(k) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("'{value}' is not KEY=VALUE with a valid name")),
    }
}

fn parse_languages(value: &str) -> Result<Languages, String> {
    Ok(Languages(
        value
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    ))
}

fn parse_secs(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        _ => Err("needs a positive number".to_string()),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Some(Command::Setup(args)) => setup(args),
        Some(Command::Agent(args)) => agent(args),
        Some(Command::Sandbox(SandboxCommand::RunOnce(args))) => sandbox_run_once(args),
        Some(Command::Sandbox(SandboxCommand::List(serve))) => sandbox_list(&serve),
        Some(Command::Sandbox(SandboxCommand::Kill { serve, ids })) => sandbox_kill(&serve, &ids),
        Some(Command::Template(cmd)) => template(cmd),
        Some(Command::Serve(args)) => serve(args),
        None => {
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("kernelbox: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn setup(args: SetupArgs) -> ExitCode {
    let passthrough: Vec<String> = args
        .no_apt
        .then(|| "--no-apt".to_string())
        .into_iter()
        .collect();
    match kernelbox::setup::run(args.source.as_deref(), &config::home(), &passthrough) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

impl AgentArgs {
    fn into_config(self) -> AgentConfig {
        let home = config::home();
        AgentConfig {
            addr: self.addr,
            port: self.port,
            envd_port: self.envd_port,
            unix_socket: self.unix_socket,
            // Taken out of the environment even when the flag wins.
            access_token: self
                .access_token
                .or(take_access_token())
                .filter(|t| !t.is_empty()),
            workdir: self
                .workdir
                .unwrap_or_else(|| config::default_workdir(&home)),
            home,
            kernels_dir: self.kernels_dir,
            env: self.env,
            default_languages: self.default_languages.0,
            keepalive: self.keepalive,
        }
    }
}

/// Reads the access token from the environment and removes it there, so kernels and commands
/// (which inherit the agent's environment) never see it. Runs before the runtime starts any
/// thread.
fn take_access_token() -> Option<String> {
    let token = std::env::var(ACCESS_TOKEN_ENV).ok();
    std::env::remove_var(ACCESS_TOKEN_ENV);
    token
}

fn agent(args: AgentArgs) -> ExitCode {
    let cfg = args.into_config();
    if let Err(e) = std::fs::create_dir_all(&cfg.workdir) {
        return fail(&format!(
            "cannot create workdir {}: {e}",
            cfg.workdir.display()
        ));
    }
    init_tracing();
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(agent::run(cfg, agent::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernelbox agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    use kernelbox::control::{keys::ApiKeys, Sandboxes, ServeConfig};
    init_tracing();
    let home = config::home();
    let state_dir = args.state_dir.unwrap_or_else(|| home.join("serve"));
    let agent_binary = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&format!("cannot find the kernelbox binary: {e}")),
    };
    // The default templates first (minutes on a new machine, with their builds' progress).
    let store = kernelbox::template::TemplateStore::at_home(&home);
    let ca_bundle = ServeConfig::host_ca_bundle();
    let pooled = match kernelbox::template::debian::ensure_defaults(
        &store,
        Default::default(),
        &home,
        ca_bundle.as_deref(),
    ) {
        Ok(built) => built.into_iter().map(|t| t.manifest.id).collect(),
        Err(e) => return fail(&e.to_string()),
    };
    let (keys, new_key) = match ApiKeys::load_or_create(&state_dir.join("api-keys")) {
        Ok(k) => k,
        Err(e) => return fail(&format!("API keys in {}: {e}", state_dir.display())),
    };
    if let Some(key) = new_key {
        println!(
            "kernelbox serve: new API key (kept in {}): {key}",
            state_dir.join("api-keys").display()
        );
    }
    let config = ServeConfig {
        home,
        state_dir,
        agent_binary,
        max_lifetime: std::time::Duration::from_secs(args.max_lifetime_secs.max(1)),
        ids: Default::default(),
        limits: Default::default(),
        ca_bundle,
        pooled,
        pool_size: args.pool_size,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let served = runtime.block_on(async move {
        let sandboxes = Sandboxes::start(config).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind((args.addr, args.port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", args.addr, args.port))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("kernelbox serve: listening on http://{addr}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let reaper =
            tokio::spawn(std::sync::Arc::clone(&sandboxes).reaper(stopped(stop_rx.clone())));
        let pool = tokio::spawn(std::sync::Arc::clone(&sandboxes).refill(stopped(stop_rx.clone())));
        let server = kernelbox::control::serve(
            listener,
            sandboxes,
            std::sync::Arc::new(keys),
            agent::shutdown_signal(),
        )
        .await;
        // Stopping: every sandbox is killed (they do not outlive `serve` yet).
        let _ = stop_tx.send(true);
        let _ = reaper.await;
        let _ = pool.await;
        server.map_err(|e| e.to_string())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernelbox serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One call to `serve`'s API: the answer's status and JSON body (`null` when it has none).
fn serve_call(
    serve: &ServeClientArgs,
    method: reqwest::Method,
    path: &str,
) -> Result<(u16, serde_json::Value), String> {
    let key = serve
        .key()
        .ok_or("no API key: pass --api-key or set E2B_API_KEY")?;
    let url = format!("{}{path}", serve.url());
    let runtime = runtime().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let answer = reqwest::Client::new()
            .request(method, &url)
            .header("X-API-KEY", key)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    })
}

fn sandbox_list(serve: &ServeClientArgs) -> ExitCode {
    match serve_call(serve, reqwest::Method::GET, "/v2/sandboxes?limit=100") {
        Ok((200, serde_json::Value::Array(list))) => {
            println!(
                "{:<22} {:<22} {:<26} {:<26} metadata",
                "id", "template", "started", "ends"
            );
            for s in list {
                println!(
                    "{:<22} {:<22} {:<26} {:<26} {}",
                    s["sandboxID"].as_str().unwrap_or(""),
                    s["templateID"].as_str().unwrap_or(""),
                    s["startedAt"].as_str().unwrap_or(""),
                    s["endAt"].as_str().unwrap_or(""),
                    s["metadata"]
                );
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => fail(&format!("serve answered {status}: {body}")),
        Err(e) => fail(&e),
    }
}

fn sandbox_kill(serve: &ServeClientArgs, ids: &[String]) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for id in ids {
        match serve_call(serve, reqwest::Method::DELETE, &format!("/sandboxes/{id}")) {
            Ok((204, _)) => println!("killed {id}"),
            Ok((404, _)) => {
                eprintln!("kernelbox: sandbox {id} not found");
                code = ExitCode::FAILURE;
            }
            Ok((status, body)) => {
                eprintln!("kernelbox: killing {id}: serve answered {status}: {body}");
                code = ExitCode::FAILURE;
            }
            Err(e) => return fail(&e),
        }
    }
    code
}

fn sandbox_run_once(args: RunOnceArgs) -> ExitCode {
    use kernelbox::sandbox::{Backend, Limits, NamespaceBackend, SandboxId, SandboxSpec};
    init_tracing();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&format!("cannot find the kernelbox binary: {e}")),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let id = SandboxId::random();
    let ids = kernelbox::sandbox::IdRange::default();
    let mut agent_args = Vec::new();
    let rootfs = match &args.template {
        None => None,
        Some(name) => {
            let store = kernelbox::template::TemplateStore::at_home(&config::home());
            let plan = store.get(name).and_then(|t| {
                agent_args.push(format!("--workdir={}", t.manifest.workdir));
                t.rootfs(ids)
            });
            match plan {
                Ok(plan) => Some(plan),
                Err(e) => return fail(&e.to_string()),
            }
        }
    };
    agent_args.extend(args.agent_args);
    let spec = SandboxSpec {
        hostname: id.to_string(),
        id: id.clone(),
        rootfs,
        agent_binary: exe,
        agent_args,
        env: Vec::new(),
        limits: Limits {
            memory_bytes: Some(args.memory_mib * 1024 * 1024),
            cpus: Some(args.cpus),
            cpu_shares: None,
            pids: Some(args.pids),
        },
        ids,
        network: if args.network {
            kernelbox::sandbox::Network::UserMode
        } else {
            kernelbox::sandbox::Network::None
        },
    };
    runtime.block_on(async move {
        let backend = NamespaceBackend::new(&config::home());
        let handle = match backend.spawn(spec).await {
            Ok(h) => h,
            Err(e) => return fail(&e.to_string()),
        };
        println!("sandbox {id}: init pid {}", handle.init_pid);
        println!("agent socket: {}", handle.agent_socket.display());
        println!("agent log: {}", handle.dir.join("agent.log").display());
        agent::shutdown_signal().await;
        match backend.kill(&id).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("kill: {e}")),
        }
    })
}

fn template(cmd: TemplateCommand) -> ExitCode {
    use kernelbox::template::{debian, TemplateStore};
    let store = TemplateStore::at_home(&config::home());
    let started = std::time::Instant::now();
    let built = match cmd {
        TemplateCommand::BuildBase => {
            debian::ensure_base(&store, Default::default()).map(|t| vec![t])
        }
        TemplateCommand::Build => debian::ensure_defaults(
            &store,
            Default::default(),
            &config::home(),
            kernelbox::control::ServeConfig::host_ca_bundle().as_deref(),
        ),
        TemplateCommand::List => {
            return match store.list() {
                Ok(list) => {
                    for t in list {
                        println!(
                            "{}\tuser {}\tworkdir {}\tlayers {}",
                            t.id,
                            t.user,
                            t.workdir,
                            t.layers.join(",")
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            };
        }
    };
    match built {
        Ok(templates) => {
            for t in templates {
                println!(
                    "template {}: layers {} ({:.1} s)",
                    t.manifest.id,
                    t.manifest.layers.join(", "),
                    started.elapsed().as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Logs to stderr, `kernelbox=info` unless `RUST_LOG` says otherwise, coloured only on a terminal.
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kernelbox=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A multi-threaded runtime with `KERNELBOX_WORKER_THREADS` workers (see
/// [`DEFAULT_WORKER_THREADS`]).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("KERNELBOX_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_WORKER_THREADS);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}
