//! Kernelspecs: `kernel.json` files in `$KERNELBOX_HOME/kernels/<name>/`, installed by
//! `kernelbox setup` from the repository's `kernels/` folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sys::Signal;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum KernelSpecError {
    #[error("no kernelspec named '{name}' in {dir} (run `kernelbox setup`)")]
    NotFound { name: String, dir: String },
    #[error("kernelspec {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
}

/// How a kernel wants to be interrupted (Jupyter's `interrupt_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptMode {
    /// SIGINT to the kernel process (the default).
    Signal,
    /// `interrupt_request` on the control channel (Deno: SIGINT kills it).
    Message,
}

#[derive(Debug, Clone)]
pub struct KernelSpec {
    pub name: String,
    pub dir: PathBuf,
    pub argv: Vec<String>,
    pub display_name: String,
    pub language: String,
    pub interrupt_mode: InterruptMode,
    pub env: Vec<(String, String)>,
    /// Code run as a silent cell after every start, from `metadata.kernelbox.startup`.
    pub startup_code: Option<String>,
    /// How long to keep listening after `idle` for output the kernel publishes late, from
    /// `metadata.kernelbox.output_grace_ms`. Deno's kernel sends `idle` before its output queue
    /// has drained, and labels what drains later with whatever request is current by then.
    pub output_grace: std::time::Duration,
    /// A signal the kernel's start-up code handles as "abandon what the cell awaits", from
    /// `metadata.kernelbox.interrupt_signal`. Deno's own interrupt only stops *running*
    /// JavaScript; a cell that awaits is ended by this signal, and `interrupt_mode` follows after
    /// `interrupt_escalate` if the cell is still busy (a loop that never yields). Java's start-up
    /// code handles it as "stop the cell's thread", which JJava's own interrupt does not.
    pub await_interrupt: Option<AwaitInterrupt>,
    /// Code run as a silent cell after an interrupted cell, before the next one, from
    /// `metadata.kernelbox.after_interrupt`. JJava publishes output to whichever request is
    /// current; Java's start-up code uses this cell to wait until the interrupted cell's thread
    /// has ended and to flush what it left half-written, so that none of it reaches the next cell.
    pub after_interrupt: Option<String>,
    /// Text the kernel's start-up code prints once a cell's output has all been queued, from
    /// `metadata.kernelbox.output_marker`. Deno publishes `idle` before its output has drained;
    /// its prelude prints this marker after the last output of every cell that did not throw, so
    /// the agent knows when the output is complete instead of guessing from a quiet period.
    pub output_marker: Option<String>,
}

/// The first step of a two-step interrupt (see [`KernelSpec::await_interrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwaitInterrupt {
    pub signal: Signal,
    /// How long the signal has to end the cell before `interrupt_mode` is used as well.
    pub escalate_after: std::time::Duration,
}

/// Default for `metadata.kernelbox.interrupt_escalate_ms`: long enough for an event loop to run
/// the signal handler and the rejected await to unwind, short enough for a busy loop.
const DEFAULT_ESCALATE_MS: u64 = 300;

#[derive(Deserialize)]
struct RawSpec {
    argv: Vec<String>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    interrupt_mode: Option<String>,
    #[serde(default)]
    env: serde_json::Map<String, Value>,
    #[serde(default)]
    metadata: Value,
}

impl KernelSpec {
    /// Loads `<kernels_dir>/<name>/kernel.json`.
    pub fn load(kernels_dir: &Path, name: &str) -> Result<KernelSpec, KernelSpecError> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        let dir = kernels_dir.join(name);
        let path = dir.join("kernel.json");
        let not_found = || KernelSpecError::NotFound {
            name: name.to_string(),
            dir: kernels_dir.display().to_string(),
        };
        if !valid_name {
            return Err(not_found());
        }
        let text = std::fs::read_to_string(&path).map_err(|_| not_found())?;
        let invalid = |reason: String| KernelSpecError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let raw: RawSpec = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if raw.argv.is_empty() {
            return Err(invalid("argv is empty".into()));
        }
        let interrupt_mode = match raw.interrupt_mode.as_deref() {
            None | Some("signal") => InterruptMode::Signal,
            Some("message") => InterruptMode::Message,
            Some(other) => return Err(invalid(format!("unknown interrupt_mode '{other}'"))),
        };
        let env = raw
            .env
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        let startup_code = match raw
            .metadata
            .pointer("/kernelbox/startup")
            .and_then(Value::as_str)
        {
            Some(file) => Some(
                std::fs::read_to_string(dir.join(file))
                    .map_err(|e| invalid(format!("start-up file {file}: {e}")))?,
            ),
            None => None,
        };
        let output_grace = std::time::Duration::from_millis(
            raw.metadata
                .pointer("/kernelbox/output_grace_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(10_000),
        );
        let await_interrupt = parse_await_interrupt(&raw.metadata).map_err(invalid)?;
        let output_marker = raw
            .metadata
            .pointer("/kernelbox/output_marker")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let after_interrupt = raw
            .metadata
            .pointer("/kernelbox/after_interrupt")
            .and_then(Value::as_str)
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string);
        Ok(KernelSpec {
            output_marker,
            after_interrupt,
            output_grace,
            await_interrupt,
            name: name.to_string(),
            dir,
            argv: raw.argv,
            display_name: raw.display_name,
            language: raw.language,
            interrupt_mode,
            env,
            startup_code,
        })
    }
}

fn parse_await_interrupt(metadata: &Value) -> Result<Option<AwaitInterrupt>, String> {
    let Some(name) = metadata.pointer("/kernelbox/interrupt_signal") else {
        return Ok(None);
    };
    let signal = match name.as_str() {
        Some("SIGUSR1") => Signal::User1,
        Some("SIGUSR2") => Signal::User2,
        Some("SIGURG") => Signal::Urgent,
        Some("SIGINT") => Signal::Interrupt,
        _ => return Err(format!("unsupported kernelbox.interrupt_signal {name}")),
    };
    let ms = metadata
        .pointer("/kernelbox/interrupt_escalate_ms")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ESCALATE_MS)
        .min(10_000);
    Ok(Some(AwaitInterrupt {
        signal,
        escalate_after: std::time::Duration::from_millis(ms),
    }))
}

/// Replaces `{connection_file}` and `{kernelbox_home}` in a kernelspec string.
pub fn substitute(s: &str, connection_file: &Path, home: &Path) -> String {
    s.replace("{connection_file}", &connection_file.to_string_lossy())
        .replace("{kernelbox_home}", &home.to_string_lossy())
}
