//! The table of processes the sandbox API started, and each one's life: spawn, output pumps,
//! deadline, exit, and a short memory of the exit for late `Connect`s.
//!
//! Ownership: the [`Processes`] table owns every running process; one supervisor task per process
//! waits for it and moves it to the table of ended ones. A process outlives the stream that
//! started it (as in envd: closing `commands.run`'s stream does not kill the command), but not
//! the table: dropping [`Processes`] kills every process group still running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::output::{End, Event, Output, Subscription};
use super::pty::{Pty, PtySize};
use super::spawn::{Launch, ProcessConfig, ProcessOptions, Spawned};
use crate::envd::{Caller, EnvdError};
use crate::sys::{self, Signal};

/// Largest pipe chunk in one `data` event (envd's).
pub const PIPE_CHUNK: usize = 32 << 10;
/// Largest terminal chunk in one `data` event (envd's).
pub const PTY_CHUNK: usize = 16 << 10;
/// How long an ended process can still be reached by `Connect` (which then gets its `end`).
pub const ENDED_RETENTION: Duration = Duration::from_secs(30);
/// After the process exits, its pipes are read until they stay quiet this long: what it wrote
/// just before exiting still arrives, while a background child that keeps the pipe open does
/// not hold the `end` back.
const DRAIN_IDLE: Duration = Duration::from_millis(20);
/// Upper bound on that draining, for a background child that keeps writing.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// The longest a SIGKILL's reply waits for the process to be reaped.
const KILL_SETTLE: Duration = Duration::from_millis(500);

/// Which process a call means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

/// Input for a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Bytes),
    Pty(Bytes),
}

/// A `Start` request.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    pub config: ProcessConfig,
    pub pty: Option<PtySize>,
    pub tag: Option<String>,
    /// `None`/`Some(true)`: stdin is a pipe; `Some(false)`: `/dev/null`.
    pub stdin: Option<bool>,
    /// The process's lifetime (`Connect-Timeout-Ms`): its group is killed when it runs out.
    pub timeout: Option<Duration>,
}

/// What `List` reports about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    pub tag: Option<String>,
}

/// A running process.
struct Process {
    info: ProcessInfo,
    output: Arc<Output>,
    /// `None` once closed, or when the process has `/dev/null` or a terminal.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pty: Option<Arc<Pty>>,
    /// Turns true once the process has been reaped.
    exited: watch::Receiver<bool>,
}

impl Process {
    fn matches(&self, selector: &Selector) -> bool {
        match selector {
            Selector::Pid(pid) => self.info.pid == *pid,
            Selector::Tag(tag) => self.info.tag.as_deref() == Some(tag),
        }
    }
}

/// An ended process, remembered for [`ENDED_RETENTION`].
struct Ended {
    process: Arc<Process>,
    at: Instant,
}

#[derive(Default)]
struct Table {
    running: HashMap<u32, Arc<Process>>,
    ended: Vec<Ended>,
}

impl Table {
    fn forget_old(&mut self) {
        self.ended.retain(|e| e.at.elapsed() < ENDED_RETENTION);
    }

    fn find_running(&self, selector: &Selector) -> Option<&Arc<Process>> {
        match selector {
            Selector::Pid(pid) => self.running.get(pid),
            Selector::Tag(_) => self.running.values().find(|p| p.matches(selector)),
        }
    }
}

/// The processes of the sandbox API.
pub struct Processes {
    table: Arc<Mutex<Table>>,
    options: ProcessOptions,
}

impl Processes {
    pub fn new(options: ProcessOptions) -> Processes {
        Processes {
            table: Arc::default(),
            options,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Starts a process for `caller` and subscribes to its output before it can write anything.
    /// Call from a runtime worker thread (the child's death signal is tied to its thread).
    pub fn start(
        &self,
        caller: &Caller,
        sandbox_env: &[(String, String)],
        spec: StartSpec,
    ) -> Result<(u32, Subscription), EnvdError> {
        let spawned = Launch {
            config: &spec.config,
            pty: spec.pty,
            stdin: spec.stdin,
            caller,
            sandbox_env,
            options: &self.options,
        }
        .spawn()?;
        let pid = spawned.pid;
        let output = Output::new();
        let subscription = output.subscribe();
        let Spawned {
            child,
            stdin,
            stdout,
            stderr,
            pty,
            ..
        } = spawned;
        let (exited_tx, exited) = watch::channel(false);
        let process = Arc::new(Process {
            info: ProcessInfo {
                config: spec.config,
                pid,
                tag: spec.tag,
            },
            output,
            stdin: tokio::sync::Mutex::new(stdin),
            pty: pty.map(Arc::new),
            exited: exited.clone(),
        });
        let mut pumps = Vec::new();
        let mut pump = |source: Source| {
            let (output, exited) = (process.output.clone(), exited.clone());
            pumps.push(tokio::spawn(source.pump(output, exited)));
        };
        if let Some(out) = stdout {
            pump(Source::Pipe(Box::new(out), Event::Stdout));
        }
        if let Some(err) = stderr {
            pump(Source::Pipe(Box::new(err), Event::Stderr));
        }
        if let Some(pty) = &process.pty {
            pump(Source::Pty(pty.clone()));
        }
        self.lock().running.insert(pid, process.clone());
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        tokio::spawn(
            Supervisor {
                table: Arc::downgrade(&self.table),
                process,
                pumps,
                exited: exited_tx,
            }
            .run(child, deadline),
        );
        Ok((pid, subscription))
    }

    /// Follows a running process's output from now on; for a process that ended less than
    /// [`ENDED_RETENTION`] ago, a subscription with just its `end`.
    pub fn connect(&self, selector: &Selector) -> Result<(u32, Subscription), EnvdError> {
        let mut table = self.lock();
        table.forget_old();
        let process = match table.find_running(selector) {
            Some(p) => p.clone(),
            None => table
                .ended
                .iter()
                .rev()
                .find(|e| e.process.matches(selector))
                .map(|e| e.process.clone())
                .ok_or_else(|| not_found(selector))?,
        };
        drop(table);
        Ok((process.info.pid, process.output.subscribe()))
    }

    /// The running processes.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = self
            .lock()
            .running
            .values()
            .map(|p| p.info.clone())
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    fn running(&self, selector: &Selector) -> Result<Arc<Process>, EnvdError> {
        self.lock()
            .find_running(selector)
            .cloned()
            .ok_or_else(|| not_found(selector))
    }

    /// Writes to the process's stdin or terminal (`SendInput`, `StreamInput`).
    pub async fn send_input(&self, selector: &Selector, input: Input) -> Result<(), EnvdError> {
        let process = self.running(selector)?;
        match input {
            Input::Pty(data) => {
                let pty = process.pty.as_ref().ok_or_else(|| {
                    EnvdError::internal("error writing to tty: tty not assigned to process")
                })?;
                pty.write_all(&data)
                    .await
                    .map_err(|e| EnvdError::internal(format!("error writing to tty: {e}")))
            }
            Input::Stdin(data) => {
                let mut stdin = process.stdin.lock().await;
                let pipe = stdin.as_mut().ok_or_else(|| {
                    EnvdError::internal("error writing to stdin: stdin not enabled or closed")
                })?;
                pipe.write_all(&data)
                    .await
                    .map_err(|e| EnvdError::internal(format!("error writing to stdin: {e}")))
            }
        }
    }

    /// Closes the process's stdin (EOF for it); a terminal has none (send Ctrl+D instead).
    pub async fn close_stdin(&self, selector: &Selector) -> Result<(), EnvdError> {
        let process = self.running(selector)?;
        if process.pty.is_some() {
            return Err(EnvdError::new(
                crate::envd::Code::Unknown,
                "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead",
            ));
        }
        process.stdin.lock().await.take();
        Ok(())
    }

    /// Sends `signal` to the process's whole group, so what it started goes too. A SIGKILL is
    /// answered once the process is reaped (at most [`KILL_SETTLE`]): until then its pid still
    /// answers `kill -0`, and a client that checks right after `kill` (E2B's PTY tests do) would
    /// find it alive.
    pub async fn signal(&self, selector: &Selector, signal: Signal) -> Result<(), EnvdError> {
        let process = self.running(selector)?;
        sys::killpg(process.info.pid as i32, signal);
        if signal == Signal::Kill {
            let mut exited = process.exited.clone();
            let _ = tokio::time::timeout(KILL_SETTLE, exited.wait_for(|e| *e)).await;
        }
        Ok(())
    }

    /// Resizes the process's terminal.
    pub fn resize(&self, selector: &Selector, size: PtySize) -> Result<(), EnvdError> {
        let process = self.running(selector)?;
        let pty = process.pty.as_ref().ok_or_else(|| {
            EnvdError::internal("error resizing tty: tty not assigned to process")
        })?;
        pty.resize(size)
            .map_err(|e| EnvdError::internal(format!("error resizing tty: {e}")))
    }
}

impl Drop for Processes {
    /// The agent is going: no command outlives it.
    fn drop(&mut self) {
        for pid in self.lock().running.keys() {
            sys::killpg(*pid as i32, Signal::Kill);
        }
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(selector: &Selector) -> EnvdError {
    EnvdError::not_found(match selector {
        Selector::Pid(pid) => format!("process with pid {pid} not found"),
        Selector::Tag(tag) => format!("process with tag {tag} not found"),
    })
}

/// Where a process's output comes from.
enum Source {
    Pipe(Box<dyn AsyncRead + Unpin + Send>, fn(Bytes) -> Event),
    Pty(Arc<Pty>),
}

impl Source {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Pipe(pipe, _) => pipe.read(buf).await,
            Source::Pty(pty) => pty.read(buf).await,
        }
    }

    fn event(&self, data: &[u8]) -> Event {
        let data = Bytes::copy_from_slice(data);
        match self {
            Source::Pipe(_, wrap) => wrap(data),
            Source::Pty(_) => Event::Pty(data),
        }
    }

    /// Reads until EOF, or until the process has exited and the source stays quiet for
    /// [`DRAIN_IDLE`]. Publishing never waits, so this never stops draining.
    async fn pump(mut self, output: Arc<Output>, mut exited: watch::Receiver<bool>) {
        let chunk = match self {
            Source::Pipe(..) => PIPE_CHUNK,
            Source::Pty(_) => PTY_CHUNK,
        };
        let mut buf = vec![0u8; chunk];
        loop {
            let read = if *exited.borrow() {
                match tokio::time::timeout(DRAIN_IDLE, self.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_quiet) => return,
                }
            } else {
                tokio::select! {
                    read = self.read(&mut buf) => read,
                    changed = exited.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return,
                    },
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => output.publish(self.event(&buf[..n])),
            }
        }
    }
}

/// Waits for one process, enforces its deadline, and reports its end.
struct Supervisor {
    table: Weak<Mutex<Table>>,
    process: Arc<Process>,
    pumps: Vec<JoinHandle<()>>,
    exited: watch::Sender<bool>,
}

impl Supervisor {
    async fn run(mut self, mut child: Child, deadline: Option<tokio::time::Instant>) {
        let pid = self.process.info.pid;
        let status = match deadline {
            None => child.wait().await,
            Some(deadline) => tokio::select! {
                biased;
                status = child.wait() => status,
                () = tokio::time::sleep_until(deadline) => {
                    sys::killpg(pid as i32, Signal::Kill);
                    child.wait().await
                }
            },
        };
        let _ = self.exited.send(true);
        Self::drain(std::mem::take(&mut self.pumps)).await;
        self.process.stdin.lock().await.take();
        let end = match status {
            Ok(status) => End::from_status(status),
            Err(e) => End::wait_failed(&e),
        };
        // The table first: whoever sees the `end` and then lists no longer finds the process.
        if let Some(table) = self.table.upgrade() {
            let mut table = lock(&table);
            table.running.remove(&pid);
            table.forget_old();
            table.ended.push(Ended {
                process: self.process.clone(),
                at: Instant::now(),
            });
        }
        self.process.output.finish(end);
    }

    /// Lets the pumps read what the process left in its pipes, within [`DRAIN_LIMIT`].
    async fn drain(pumps: Vec<JoinHandle<()>>) {
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        for mut pump in pumps {
            if tokio::time::timeout_at(limit, &mut pump).await.is_err() {
                pump.abort();
            }
        }
    }
}
