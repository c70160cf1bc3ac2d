//! `kernelbox-soak`: a seeded, bounded soak of the code interpreter (see BENCHMARKS.md).
//!
//! Drives a running agent (`--agent URL`) or starts its own with a random but reproducible mix
//! of runs over several contexts per language: small and big prints, errors, timeouts, client
//! disconnects, interrupts, SIGKILLed kernels and awaiting cells cut short, several at once and
//! queued on one context. Every run marks its lines so the checker can prove that all of them
//! arrived, in order, in the right run. After each fault a state check runs on the same context.
//! It prints tables and exits non-zero on any hung stream, lost or misrouted output, execution
//! with more than one error, or kernel process left behind.
//!
//! Usage: kernelbox-soak [--seed N] [--runs N] [--max-secs S] [--concurrency N]
//!          [--languages python,javascript,...] [--contexts-per-language N]
//!          [--agent URL [--agent-pid PID]] [--agent-bin PATH]
//!          [--silence-secs S] [--end-bound-secs S]

mod cells;
mod check;
mod live;
mod plan;
mod prng;
mod procs;
mod report;
mod runner;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kernelbox::agent::{loopback_command, ReadyLine};
use kernelbox::client::Client;
use tokio::time::Instant;

use cells::Lang;
use runner::{Runner, Settings};

struct Args {
    seed: u64,
    runs: usize,
    max_secs: f64,
    concurrency: usize,
    languages: Option<Vec<Lang>>,
    per_language: usize,
    agent_url: Option<String>,
    agent_pid: Option<u32>,
    agent_bin: PathBuf,
    silence_secs: f64,
    end_bound_secs: f64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut a = Args {
            seed: 1,
            runs: 300,
            max_secs: 600.0,
            concurrency: 4,
            languages: None,
            per_language: 2,
            agent_url: None,
            agent_pid: None,
            agent_bin: std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("kernelbox"),
            silence_secs: 20.0,
            end_bound_secs: 30.0,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let (flag, v) = (
                pair[0].as_str(),
                pair.get(1).ok_or(format!("{} needs a value", pair[0]))?,
            );
            match flag {
                "--seed" => a.seed = num(flag, v)?,
                "--runs" => a.runs = num(flag, v)?,
                "--max-secs" => a.max_secs = num(flag, v)?,
                "--concurrency" => a.concurrency = num(flag, v)?,
                "--contexts-per-language" => a.per_language = num(flag, v)?,
                "--agent" => a.agent_url = Some(v.trim_end_matches('/').to_string()),
                "--agent-pid" => a.agent_pid = Some(num(flag, v)?),
                "--agent-bin" => a.agent_bin = PathBuf::from(v),
                "--silence-secs" => a.silence_secs = num(flag, v)?,
                "--end-bound-secs" => a.end_bound_secs = num(flag, v)?,
                "--languages" => {
                    let langs = v
                        .split(',')
                        .map(|l| Lang::parse(l).ok_or(format!("unknown language {l:?}")));
                    a.languages = Some(langs.collect::<Result<_, _>>()?);
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(a)
    }

    /// The languages asked for (default: all), less those without a kernelspec here.
    fn languages(&self) -> Vec<Lang> {
        let kernels = kernelbox::config::home().join("kernels");
        let wanted = self.languages.clone().unwrap_or(Lang::ALL.to_vec());
        let (have, missing): (Vec<Lang>, Vec<Lang>) = wanted
            .into_iter()
            .partition(|l| kernels.join(l.kernel_dir()).join("kernel.json").exists());
        for l in missing {
            eprintln!(
                "kernelbox-soak: no {} kernelspec under {}; skipping {l}",
                l.kernel_dir(),
                kernels.display()
            );
        }
        have
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
}

/// An agent this process started; stopped (SIGTERM, then SIGKILL) when dropped.
struct AgentProc {
    child: Child,
    url: String,
    workdir: PathBuf,
}

impl AgentProc {
    fn start(bin: &std::path::Path) -> Result<AgentProc, String> {
        let workdir = std::env::temp_dir().join(format!("kernelbox-soak-{}", std::process::id()));
        std::fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
        let mut cmd = loopback_command(bin, &workdir);
        cmd.args(["--default-languages", ""])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("kernelbox=warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl only asks for SIGTERM to the child when this (main) thread exits, so a
        // killed soak leaves no agent behind.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no agent stdout")?).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| match ReadyLine::parse(&l) {
                Some(ReadyLine::Interpreter(url)) => Some(url),
                _ => None,
            })
            .ok_or("the agent exited before it listened")?;
        // Keep draining so the agent never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(AgentProc {
            child,
            url,
            workdir,
        })
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // SAFETY: a plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.workdir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

fn main() -> ExitCode {
    match start_and_soak() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kernelbox-soak: {e}");
            ExitCode::from(2)
        }
    }
}

fn start_and_soak() -> Result<bool, String> {
    let args = Args::parse()?;
    let langs = args.languages();
    if langs.is_empty() {
        return Err("no language to soak".into());
    }
    let own = match args.agent_url {
        Some(_) => None,
        None => Some(AgentProc::start(&args.agent_bin)?),
    };
    let url = own.as_ref().map_or_else(
        || args.agent_url.clone().unwrap_or_default(),
        |a| a.url.clone(),
    );
    let pid = own
        .as_ref()
        .map(|a| a.child.id())
        .or(args.agent_pid)
        .or_else(|| {
            let port = url.rsplit(':').next()?.parse().ok()?;
            procs::pid_listening_on(port)
        });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(soak(&args, langs, url, pid))
}

async fn soak(
    args: &Args,
    langs: Vec<Lang>,
    url: String,
    agent_pid: Option<u32>,
) -> Result<bool, String> {
    let client = Client::new(url.clone());
    client
        .health()
        .await
        .map_err(|e| format!("agent at {url}: {e}"))?;
    let settings = Settings {
        silence: Duration::from_secs_f64(args.silence_secs),
        end_bound: Duration::from_secs_f64(args.end_bound_secs),
        run_bound: Duration::from_secs(120),
        control_bound: Duration::from_secs(30),
    };
    let slots: Vec<Lang> = langs
        .iter()
        .flat_map(|l| std::iter::repeat_n(*l, args.per_language))
        .collect();
    let watch = agent_pid.map(procs::Watch::new);
    let runner = Arc::new(Runner::new(client, &slots, watch, settings));
    let started = Instant::now();
    let open = runner.open_all().await;
    if open.is_empty() {
        return Err("no context could be opened".into());
    }
    let mut langs: Vec<Lang> = open.iter().map(|(_, l)| *l).collect();
    langs.dedup();
    let rss = || agent_pid.map_or(0, procs::rss_kb);
    let rss_before_kb = rss();
    let plans = Arc::new(plan::make(args.seed, args.runs, &open));
    let cursor = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(args.max_secs);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| tokio::spawn(runner.clone().work(plans.clone(), cursor.clone(), stop)))
        .collect();
    let progress = tokio::spawn(progress(cursor.clone(), plans.len()));
    for w in workers {
        w.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    progress.abort();
    let rss_after_kb = rss();
    // The same scan while the contexts still live shows that it finds their kernels.
    let kernels_live = runner.leftovers(Duration::ZERO).await.map(|(l, _)| l.len());
    runner.close_all().await;
    let leftovers = runner.leftovers(Duration::from_secs(15)).await;
    let summary = report::Summary {
        seed: args.seed,
        planned: plans.len(),
        secs: started.elapsed().as_secs_f64(),
        languages: langs,
        contexts: open.len(),
        rss_before_kb,
        rss_after_kb,
        rss_deleted_kb: rss(),
        leftovers,
        kernels_live,
    };
    Ok(report::print(&runner.take_stats(), &summary))
}

/// A line on stderr every 30 s, so a long soak shows it is alive.
async fn progress(cursor: Arc<AtomicUsize>, total: usize) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let done = cursor.load(Ordering::SeqCst).min(total);
        eprintln!(
            "kernelbox-soak: {done}/{total} runs started after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}
