//! The `filesystem.Filesystem` service (envd-api.md §8): `Stat`, `MakeDir`, `Move`, `ListDir`,
//! `Remove`, the `WatchDir` stream and the polling watchers (`CreateWatcher`,
//! `GetWatcherEvents`, `RemoveWatcher`) that the sync Python SDK uses.
//!
//! - `entry`: `EntryInfo` from a path, and the directory walk of `ListDir`;
//! - `watch`: inotify watchers and how their events map onto envd's.
//!
//! Paths resolve for the caller (`Authorization: Basic`, else the default user). Work on the
//! filesystem runs on the blocking pool. envd runs as root and acts as root for every call
//! except that directories it creates belong to the caller; kernelbox does the same.

pub mod entry;
pub mod watch;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use futures_util::{Stream, StreamExt};

use crate::envd::connect::{self, Call};
use crate::envd::rpc::filesystem::*;
use crate::envd::{Caller, Envd, EnvdError};
use entry::{entry_info, list_dir, Names};
use watch::Watcher;

/// Events a polling watcher keeps between two `GetWatcherEvents` calls; beyond it the oldest
/// are dropped (envd keeps them without bound; a client that never polls must not grow memory).
const MAX_BUFFERED_EVENTS: usize = 100_000;

/// The service's state: envd's, and the polling watchers by id.
#[derive(Clone)]
struct Filesystem {
    envd: Arc<Envd>,
    watchers: Arc<Mutex<HashMap<String, PollingWatcher>>>,
}

/// A watcher whose events wait for `GetWatcherEvents`. Its task reads events as they come;
/// `flush` asks it to add what the kernel has queued so far and answers when that is done.
/// Dropping it stops the task, which drops the inotify watcher.
struct PollingWatcher {
    events: Arc<Mutex<Vec<FilesystemEvent>>>,
    flush: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PollingWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Adds events to a polling watcher's buffer, dropping the oldest beyond the bound.
fn buffer(events: &Mutex<Vec<FilesystemEvent>>, new: impl IntoIterator<Item = FilesystemEvent>) {
    let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
    events.extend(new);
    if events.len() > MAX_BUFFERED_EVENTS {
        let excess = events.len() - MAX_BUFFERED_EVENTS;
        events.drain(..excess);
    }
}

const SERVICE: &str = "/filesystem.Filesystem/";

/// The service's routes.
pub fn router(envd: Arc<Envd>) -> Router {
    let state = Filesystem {
        envd,
        watchers: Arc::default(),
    };
    let path = |method: &str| format!("{SERVICE}{method}");
    Router::new()
        .route(&path("Stat"), connect::unary(stat))
        .route(&path("MakeDir"), connect::unary(make_dir))
        .route(&path("Move"), connect::unary(move_entry))
        .route(&path("ListDir"), connect::unary(list))
        .route(&path("Remove"), connect::unary(remove))
        .route(&path("WatchDir"), connect::server_stream(watch_dir))
        .route(&path("CreateWatcher"), connect::unary(create_watcher))
        .route(
            &path("GetWatcherEvents"),
            connect::unary(get_watcher_events),
        )
        .route(&path("RemoveWatcher"), connect::unary(remove_watcher))
        .with_state(state)
}

impl Filesystem {
    /// Who the call acts as (an unknown user is `unauthenticated`).
    fn caller(&self, call: &Call) -> Result<Caller, EnvdError> {
        self.envd.caller(call.username()?.as_deref())
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, PollingWatcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EnvdError> + Send + 'static,
) -> Result<T, EnvdError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EnvdError::internal(format!("filesystem task failed: {e}")))?
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The entry at `path`, with envd's wording for a missing one.
fn stat_path(path: &Path) -> Result<EntryInfo, EnvdError> {
    entry_info(path, &mut Names::default()).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            EnvdError::not_found(format!("file not found: {}: {e}", shown(path)))
        }
        _ => EnvdError::io(&format!("error getting file info for {}", shown(path)), &e),
    })
}

async fn stat(fs: Filesystem, call: Call, req: StatRequest) -> Result<StatResponse, EnvdError> {
    let path = fs.caller(&call)?.path(&req.path);
    blocking(move || {
        Ok(EntryResponse {
            entry: stat_path(&path)?,
        })
    })
    .await
}

async fn make_dir(
    fs: Filesystem,
    call: Call,
    req: MakeDirRequest,
) -> Result<MakeDirResponse, EnvdError> {
    let caller = fs.caller(&call)?;
    let path = caller.path(&req.path);
    blocking(move || {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(EnvdError::already_exists(format!(
                    "directory already exists: {}",
                    shown(&path)
                )))
            }
            Ok(_) => {
                return Err(EnvdError::invalid_argument(format!(
                    "path already exists, but it is not a directory: {}",
                    shown(&path)
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EnvdError::io(
                    &format!("error getting file info for {}", shown(&path)),
                    &e,
                ))
            }
        }
        ensure_dirs(&path, &caller)?;
        Ok(EntryResponse {
            entry: stat_path(&path)?,
        })
    })
    .await
}

/// Creates `path` and its missing parents, each owned by the caller (envd's `EnsureDirs`).
fn ensure_dirs(path: &Path, caller: &Caller) -> Result<(), EnvdError> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        match std::fs::symlink_metadata(dir) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir.to_path_buf()),
            Err(e) => return Err(EnvdError::io(&format!("cannot create {}", shown(dir)), &e)),
        }
        at = dir.parent();
    }
    for dir in missing.iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => continue,
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(EnvdError::invalid_argument(format!(
                    "cannot create {}: a parent is not a directory",
                    shown(dir)
                )))
            }
            Err(e) => return Err(EnvdError::io(&format!("cannot create {}", shown(dir)), &e)),
        }
        std::os::unix::fs::chown(dir, Some(caller.user.uid), Some(caller.user.gid)).map_err(
            |e| {
                EnvdError::io(
                    &format!("cannot give {} to {}", shown(dir), caller.user.name),
                    &e,
                )
            },
        )?;
    }
    Ok(())
}

async fn move_entry(
    fs: Filesystem,
    call: Call,
    req: MoveRequest,
) -> Result<MoveResponse, EnvdError> {
    let caller = fs.caller(&call)?;
    let source = caller.path(&req.source);
    let destination = caller.path(&req.destination);
    blocking(move || {
        if let Err(e) = std::fs::symlink_metadata(&source) {
            return Err(match e.kind() {
                io::ErrorKind::NotFound => {
                    EnvdError::not_found(format!("source file not found: {}", shown(&source)))
                }
                _ => EnvdError::io(
                    &format!("error getting file info for {}", shown(&source)),
                    &e,
                ),
            });
        }
        if let Some(parent) = destination.parent() {
            ensure_dirs(parent, &caller)?;
        }
        std::fs::rename(&source, &destination).map_err(|e| {
            EnvdError::io(
                &format!(
                    "error renaming {} to {}",
                    shown(&source),
                    shown(&destination)
                ),
                &e,
            )
        })?;
        Ok(EntryResponse {
            entry: stat_path(&destination)?,
        })
    })
    .await
}

async fn list(
    fs: Filesystem,
    call: Call,
    req: ListDirRequest,
) -> Result<ListDirResponse, EnvdError> {
    let path = fs.caller(&call)?.path(&req.path);
    // envd treats depth 0 as 1.
    let depth = req.depth.max(1);
    blocking(move || {
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                EnvdError::not_found(format!("directory not found: {}", shown(&path)))
            }
            _ => EnvdError::io(&format!("error getting file info for {}", shown(&path)), &e),
        })?;
        if !meta.is_dir() {
            return Err(EnvdError::invalid_argument(format!(
                "path is not a directory: {}",
                shown(&path)
            )));
        }
        let entries = list_dir(&path, depth, &mut Names::default())
            .map_err(|e| EnvdError::io(&format!("error reading directory {}", shown(&path)), &e))?;
        Ok(ListDirResponse { entries })
    })
    .await
}

async fn remove(fs: Filesystem, call: Call, req: RemoveRequest) -> Result<Empty, EnvdError> {
    let path = fs.caller(&call)?.path(&req.path);
    blocking(move || {
        // Go's os.RemoveAll: a missing path is not an error; a directory goes with its content;
        // a symlink is removed, never followed.
        let result = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(Empty {}),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Empty {}),
            Err(e) => Err(EnvdError::io(
                &format!("error removing {}", shown(&path)),
                &e,
            )),
        }
    })
    .await
}

/// Starts a watcher for a request (on the async side: it registers with the runtime).
fn start_watcher(fs: &Filesystem, call: &Call, req: &WatchRequest) -> Result<Watcher, EnvdError> {
    let path = fs.caller(call)?.path(&req.path);
    Watcher::new(
        &path,
        req.recursive,
        req.include_entry,
        req.allow_network_mounts,
    )
}

async fn watch_dir(
    fs: Filesystem,
    call: Call,
    req: WatchDirRequest,
) -> Result<impl Stream<Item = Result<WatchDirResponse, EnvdError>> + Send + 'static, EnvdError> {
    let watcher = start_watcher(&fs, &call, &req)?;
    let start = futures_util::stream::once(async { Ok(WatchDirResponse::Start {}) });
    let events = watcher
        .into_stream()
        .map(|event| event.map(|e| WatchDirResponse::Filesystem(Box::new(e))));
    Ok(start.chain(events))
}

async fn create_watcher(
    fs: Filesystem,
    call: Call,
    req: CreateWatcherRequest,
) -> Result<CreateWatcherResponse, EnvdError> {
    let watcher = start_watcher(&fs, &call, &req)?;
    let id = uuid::Uuid::new_v4().to_string();
    let events: Arc<Mutex<Vec<FilesystemEvent>>> = Arc::default();
    let sink = events.clone();
    let root = req.path.clone();
    let (flush, mut flushes) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(8);
    let task = tokio::spawn(async move {
        let mut watcher = watcher;
        loop {
            // `next_event` is cancel-safe: what it read is kept in the watcher's pending queue.
            let result = tokio::select! {
                event = watcher.next_event() => event.map(|e| vec![e]),
                Some(done) = flushes.recv() => {
                    let drained = watcher.drain_ready();
                    let _ = done.send(());
                    drained
                }
            };
            match result {
                Ok(new) => buffer(&sink, new),
                Err(e) => {
                    tracing::warn!(path = %root, error = %e, "watcher stopped");
                    break;
                }
            }
        }
    });
    fs.lock_watchers().insert(
        id.clone(),
        PollingWatcher {
            events,
            flush,
            task,
        },
    );
    Ok(CreateWatcherResponse { watcher_id: id })
}

fn watcher_not_found(id: &str) -> EnvdError {
    EnvdError::not_found(format!("watcher with id {id} not found"))
}

async fn get_watcher_events(
    fs: Filesystem,
    _call: Call,
    req: WatcherRequest,
) -> Result<GetWatcherEventsResponse, EnvdError> {
    let (events, flush) = {
        let watchers = fs.lock_watchers();
        let watcher = watchers
            .get(&req.watcher_id)
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        (watcher.events.clone(), watcher.flush.clone())
    };
    // Changes made before this call must show up in its answer (a client changes a file, then
    // polls): let the watcher add what the kernel has queued. A stopped watcher answers with
    // what it had.
    let (done, flushed) = tokio::sync::oneshot::channel();
    if flush.send(done).await.is_ok() {
        let _ = flushed.await;
    }
    let drained = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(GetWatcherEventsResponse { events: drained })
}

async fn remove_watcher(
    fs: Filesystem,
    _call: Call,
    req: WatcherRequest,
) -> Result<Empty, EnvdError> {
    let removed = fs.lock_watchers().remove(&req.watcher_id);
    match removed {
        Some(watcher) => {
            drop(watcher);
            Ok(Empty {})
        }
        None => Err(watcher_not_found(&req.watcher_id)),
    }
}
