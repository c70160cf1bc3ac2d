//! Kernel processes: launch from a kernelspec, interrupt, shut down, and notice death.
//!
//! The child process is the primary liveness signal (a missed heartbeat is only a hint). A kernel
//! runs in its own process group, is killed with its parent (`PR_SET_PDEATHSIG`) and is killed
//! with its group when the [`Kernel`] is dropped, so kernels never outlive the agent (the
//! mechanics are in [`crate::sys`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::connection::{Channel, ConnectionError, ConnectionInfo, KernelConnection, Subscription};
use super::kernelspec::{substitute, InterruptMode, KernelSpec};
use crate::sys::{self, ProcessGuard, Signal};

/// Start-up attempts for a kernel that exits while starting (see [`Kernel::launch`]).
const LAUNCH_ATTEMPTS: u32 = 3;
/// How long `shutdown_request` may take to be answered; some kernels never answer it.
const SHUTDOWN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// After `shutdown_request`, and again after SIGTERM: how long the kernel gets to exit by itself
/// (ijavascript replies but never exits; ipykernel exits within a second).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// After SIGKILL: how long to wait for the exit to be reaped before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("could not write the connection file {path}: {source}")]
    ConnectionFile {
        path: String,
        source: std::io::Error,
    },
    #[error("could not start kernel '{name}' ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("kernel '{name}' exited during start-up ({status})")]
    ExitedEarly { name: String, status: String },
    #[error("kernel '{name}' did not listen within {secs} s")]
    NoListen { name: String, secs: u64 },
    #[error("kernel '{name}' start-up cell failed: {detail}")]
    Startup { name: String, detail: String },
}

/// Where and how to start a kernel.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The kernel's working directory.
    pub cwd: PathBuf,
    /// Extra environment, applied over the agent's own and the spec's (sandbox-level variables).
    pub env: Vec<(String, String)>,
    /// `$KERNELBOX_HOME`, substituted for `{kernelbox_home}`.
    pub home: PathBuf,
    /// A 0700 folder for connection files.
    pub runtime_dir: PathBuf,
}

/// A running kernel: its process and its connection.
pub struct Kernel {
    pub spec: Arc<KernelSpec>,
    pub conn: KernelConnection,
    pub info: Value,
    process: ProcessGuard,
    exited: watch::Receiver<Option<String>>,
}

impl Kernel {
    /// Starts the kernel and returns once it answers `kernel_info` on shell and iopub and its
    /// start-up cell, if any, has run. A kernel that exits during start-up is tried again with
    /// fresh ports (the usual cause is a port taken between reservation and bind).
    pub async fn launch(
        spec: Arc<KernelSpec>,
        opts: &LaunchOptions,
    ) -> Result<Kernel, KernelError> {
        let mut attempt = 1;
        loop {
            match Self::launch_once(spec.clone(), opts).await {
                Err(KernelError::ExitedEarly { name, status }) if attempt < LAUNCH_ATTEMPTS => {
                    tracing::warn!(%name, %status, attempt, "kernel exited during start-up; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn launch_once(
        spec: Arc<KernelSpec>,
        opts: &LaunchOptions,
    ) -> Result<Kernel, KernelError> {
        let (info, reserved) = ConnectionInfo::reserve()?;
        let connection_file = opts
            .runtime_dir
            .join(format!("kernel-{}.json", uuid::Uuid::new_v4()));
        serde_json::to_vec(&info)
            .map_err(std::io::Error::other)
            .and_then(|bytes| sys::write_private(&connection_file, &bytes))
            .map_err(|source| KernelError::ConnectionFile {
                path: connection_file.display().to_string(),
                source,
            })?;

        // From here on, a failed launch removes the file (it holds the key) and kills the process.
        let mut process = ProcessGuard::new(vec![connection_file.clone()]);
        let argv: Vec<String> = spec
            .argv
            .iter()
            .map(|a| substitute(a, &connection_file, &opts.home))
            .collect();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&opts.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(false);
        sys::new_process_group(&mut cmd);
        sys::deprioritize(&mut cmd);
        sys::die_with_parent(&mut cmd);
        process.tag(&mut cmd);
        for (k, v) in &spec.env {
            cmd.env(k, substitute(v, &connection_file, &opts.home));
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }

        // Held until this function returns: the kernel has answered, or the launch failed.
        let _leases = reserved.release();
        let mut child = cmd.spawn().map_err(|source| KernelError::Spawn {
            name: spec.name.clone(),
            program: argv[0].clone(),
            source,
        })?;
        process.adopt(child.id());
        let (exit_tx, exited) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exit_tx.send(Some(status));
        });

        let name = spec.name.clone();
        wait_for_port(info.shell_port, &exited, &name).await?;
        let conn = KernelConnection::connect(&info).await?;
        let kernel_info = tokio::select! {
            r = conn.handshake(Duration::from_secs(60)) => r?,
            status = wait_exit(exited.clone()) => {
                return Err(KernelError::ExitedEarly { name, status })
            }
        };
        let kernel = Kernel {
            spec,
            conn,
            info: kernel_info,
            process,
            exited,
        };
        if let Some(code) = kernel.spec.startup_code.clone() {
            if let Err(detail) = kernel.run_silent(&code, Duration::from_secs(60)).await {
                return Err(KernelError::Startup { name, detail });
            }
        }
        Ok(kernel)
    }

    /// The kernel's pid, which is also its process group id (0 if it could not be read).
    pub fn pid(&self) -> i32 {
        self.process.pid().unwrap_or(0)
    }

    /// Resolves when the process has exited, with a description of its status.
    pub fn exited(&self) -> watch::Receiver<Option<String>> {
        self.exited.clone()
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Interrupts the running cell: the kernelspec's await-interrupt signal when it has one
    /// (the caller escalates to [`Kernel::interrupt_standard`] after its delay), else the
    /// standard interrupt at once.
    pub async fn interrupt(&self) -> Result<(), KernelError> {
        match self.spec.await_interrupt {
            Some(step) => {
                sys::signal(self.pid(), step.signal);
                Ok(())
            }
            None => self.interrupt_standard().await,
        }
    }

    /// Jupyter's interrupt, as `interrupt_mode` asks.
    pub async fn interrupt_standard(&self) -> Result<(), KernelError> {
        match self.spec.interrupt_mode {
            InterruptMode::Signal => {
                sys::signal(self.pid(), Signal::Interrupt);
                Ok(())
            }
            InterruptMode::Message => {
                self.conn
                    .control_request("interrupt_request", json!({}), Duration::from_secs(5))
                    .await?;
                Ok(())
            }
        }
    }

    /// Runs `code` as a silent cell and waits for it to finish. `Err` carries the kernel's error.
    pub async fn run_silent(&self, code: &str, timeout: Duration) -> Result<(), String> {
        let sub = self
            .conn
            .execute(code, true)
            .await
            .map_err(|e| e.to_string())?;
        wait_silent(sub, self.exited(), timeout).await
    }

    /// `shutdown_request`, then SIGTERM, then SIGKILL to the process group, each after a grace
    /// period (ijavascript replies but never exits).
    pub async fn shutdown(&self) {
        if !self.has_exited() {
            let _ = self
                .conn
                .control_request(
                    "shutdown_request",
                    json!({"restart": false}),
                    SHUTDOWN_REQUEST_TIMEOUT,
                )
                .await;
        }
        for (sig, grace) in [
            (None, EXIT_GRACE),
            (Some(Signal::Terminate), EXIT_GRACE),
            (Some(Signal::Kill), KILL_GRACE),
        ] {
            if let Some(sig) = sig {
                sys::killpg(self.pid(), sig);
            }
            if tokio::time::timeout(grace, wait_exit(self.exited.clone()))
                .await
                .is_ok()
            {
                break;
            }
        }
        // Whatever the kernel left in its group goes too.
        sys::killpg(self.pid(), Signal::Kill);
    }
}

/// Waits for a silent cell already sent (its subscription) to finish: both the reply and `idle`,
/// bounded by `timeout` and by the kernel's exit. `Err` carries the kernel's error.
pub async fn wait_silent(
    mut sub: Subscription,
    exited: watch::Receiver<Option<String>>,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        let (mut replied, mut idle) = (None, false);
        while let Some(incoming) = sub.recv().await {
            let msg = &incoming.msg;
            match (incoming.channel, msg.msg_type()) {
                (Channel::Shell, "execute_reply") => {
                    replied = Some(match msg.content_str("status") {
                        "ok" => Ok(()),
                        other => Err(format!(
                            "{other}: {} {}",
                            msg.content_str("ename"),
                            msg.content_str("evalue")
                        )),
                    })
                }
                (Channel::IoPub, "status") if msg.content_str("execution_state") == "idle" => {
                    idle = true
                }
                _ => {}
            }
            if idle {
                if let Some(r) = replied.take() {
                    return r;
                }
            }
        }
        Err("the kernel connection closed".to_string())
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs()))),
        status = wait_exit(exited) => Err(format!("the kernel exited ({status})")),
    }
}

async fn wait_exit(mut rx: watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(status) = rx.borrow_and_update().clone() {
            return status;
        }
        if rx.changed().await.is_err() {
            return "unknown".to_string();
        }
    }
}

/// Polls the kernel's shell port every 10 ms: zmq.rs's own connect backoff would otherwise add
/// hundreds of milliseconds to every start (jupyter-kernels.md §2.2).
async fn wait_for_port(
    port: u16,
    exited: &watch::Receiver<Option<String>>,
    name: &str,
) -> Result<(), KernelError> {
    let limit = 60;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limit);
    loop {
        if let Some(status) = exited.borrow().clone() {
            return Err(KernelError::ExitedEarly {
                name: name.to_string(),
                status,
            });
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(KernelError::NoListen {
                name: name.to_string(),
                secs: limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
