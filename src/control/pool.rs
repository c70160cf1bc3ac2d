//! The warm pool: sandboxes started ahead of demand, per template, with their agent answering
//! and their default kernels up, waiting to be handed out. A create that finds one skips the
//! sandbox's start-up and the kernels' (seconds for `code-interpreter-v1`) and costs only the
//! hand-out: one init call that gives the caller's token, env vars (they reach the running
//! kernels), user and workdir.
//!
//! A pooled sandbox has no deadline and no record until it is handed out; its agent holds a
//! token only the control plane knows, so nothing can use it before. Sandboxes with a
//! non-default shape (no internet) are never pooled; they start fresh.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::sandbox::SandboxId;
use crate::template::Manifest;

/// A started sandbox whose agent answers and holds `token`.
#[derive(Debug)]
pub struct Ready {
    pub id: SandboxId,
    pub socket: PathBuf,
    pub init_pid: u32,
    /// The token in force on its agent: the hand-out's init call must carry it.
    pub token: String,
    pub manifest: Manifest,
}

/// Ready sandboxes by template id.
#[derive(Debug, Default)]
pub struct Pool {
    queues: Mutex<HashMap<String, VecDeque<Ready>>>,
}

impl Pool {
    /// The oldest ready sandbox of `template` whose agent still runs; dead ones are returned
    /// in `dead` for the caller to free.
    pub fn take(&self, template: &str, alive: impl Fn(u32) -> bool) -> (Option<Ready>, Vec<Ready>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut dead = Vec::new();
        let queue = queues.entry(template.to_string()).or_default();
        while let Some(ready) = queue.pop_front() {
            if alive(ready.init_pid) {
                return (Some(ready), dead);
            }
            dead.push(ready);
        }
        (None, dead)
    }

    pub fn put(&self, ready: Ready) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(ready.manifest.id.clone())
            .or_default()
            .push_back(ready);
    }

    /// How many `template` has ready.
    pub fn len(&self, template: &str) -> usize {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.get(template).map_or(0, VecDeque::len)
    }

    /// Every ready sandbox, removed from the pool (to be killed at shutdown).
    pub fn drain(&self) -> Vec<Ready> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.drain().flat_map(|(_, q)| q).collect()
    }
}
