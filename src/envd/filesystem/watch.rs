//! Directory watching on raw inotify (libc; no crate: the tree stays lean and the mapping to
//! envd's events is ours to decide), reporting events as envd's fsnotify-based watcher does:
//! names relative to the watched directory, one event per operation, `CREATE` for anything moved
//! in, `RENAME` for anything moved away, subdirectories followed when recursive.
//!
//! A [`Watcher`] owns its inotify descriptor: dropping it (with the stream that serves it)
//! closes the descriptor, which removes every inotify watch it had.
//!
//! Staged uploads: `/files` writes a temporary file named `UPLOAD_TEMP_PREFIX…` in the target's
//! directory and renames it over the target. The watcher hides every event of such a temporary
//! name and reports the rename onto the target as `CREATE`, `CHMOD`, `WRITE` on the target's
//! name: what envd reports when it writes a new file in place (create, chown, write), so clients
//! that wait for a `WRITE` (or count the three events of a new file) see what they expect. Over an
//! existing file envd would report `WRITE`, `CHMOD`, `WRITE`; a rename cannot tell the two apart,
//! so kernelbox reports the first form for both.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures_util::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::entry::{entry_info, Names};
use crate::envd::rpc::filesystem::{EventType, FilesystemEvent};
use crate::envd::{EnvdError, UPLOAD_TEMP_PREFIX};

/// What every watch listens for.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MOVE_SELF
    | libc::IN_DONT_FOLLOW;
/// Read buffer: room for many events (each is 16 bytes plus a name of up to 256).
const READ_BUFFER: usize = 64 * 1024;
/// Rename cookies remembered to pair `MOVED_FROM` with `MOVED_TO`; the pair normally arrives
/// back to back, so a few suffice and old ones are forgotten.
const MAX_COOKIES: usize = 256;

/// Filesystem types that inotify cannot watch reliably (NFS, CIFS, SMB, SMB2, FUSE), refused
/// unless the request allows network mounts, as envd does.
const NETWORK_FS_MAGIC: [i64; 5] = [0x6969, 0xFF53_4D42, 0x517B, 0xFE53_4D42, 0x6573_5546];

/// An inotify instance watching one directory (and its subdirectories when recursive).
pub struct Watcher {
    fd: AsyncFd<OwnedFd>,
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
    /// Watch descriptor → directory relative to the root (empty for the root).
    dirs: HashMap<i32, PathBuf>,
    /// Rename cookie → whether the name moved away was an upload's temporary file.
    cookies: HashMap<u32, bool>,
    /// Events decoded but not yet handed out.
    pending: std::collections::VecDeque<FilesystemEvent>,
    buf: Vec<u8>,
    names: Names,
}

impl Watcher {
    /// Starts watching `root`, which must be an existing directory: missing → `not_found`, not a
    /// directory or a network mount (unless allowed) → `invalid_argument`. Must run inside the
    /// tokio runtime.
    pub fn new(
        root: &Path,
        recursive: bool,
        include_entry: bool,
        allow_network_mounts: bool,
    ) -> Result<Watcher, EnvdError> {
        let shown = root.display().to_string();
        let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => EnvdError::not_found(format!("path {shown} not found: {e}")),
            _ => EnvdError::io(&format!("error statting path {shown}"), &e),
        })?;
        if !meta.is_dir() {
            return Err(EnvdError::invalid_argument(format!(
                "path {shown} not a directory"
            )));
        }
        if !allow_network_mounts && is_network_mount(root) {
            return Err(EnvdError::invalid_argument(format!(
                "cannot watch path {shown}: it is on a network filesystem mount"
            )));
        }
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(EnvdError::io("cannot create an inotify instance", &e));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
        // the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| EnvdError::io("cannot register the inotify instance", &e.into()))?;
        let mut watcher = Watcher {
            fd,
            root: root.to_path_buf(),
            recursive,
            include_entry,
            dirs: HashMap::new(),
            cookies: HashMap::new(),
            pending: Default::default(),
            buf: vec![0; READ_BUFFER],
            names: Names::default(),
        };
        watcher
            .add(PathBuf::new())
            .map_err(|e| EnvdError::io(&format!("cannot watch {shown}"), &e))?;
        if recursive {
            watcher.add_subdirs(Path::new(""));
        }
        Ok(watcher)
    }

    /// Watches `root/rel`.
    fn add(&mut self, rel: PathBuf) -> io::Result<()> {
        let path = self.root.join(&rel);
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, rel);
        Ok(())
    }

    /// Watches every directory below `root/rel` (not following symlinks). Directories that
    /// vanish or cannot be read meanwhile are skipped: the watch goes on for the rest.
    fn add_subdirs(&mut self, rel: &Path) {
        let Ok(entries) = std::fs::read_dir(self.root.join(rel)) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = rel.join(entry.file_name());
                if self.add(child.clone()).is_ok() {
                    self.add_subdirs(&child);
                }
            }
        }
    }

    /// Stops watching `rel` and everything below it (a directory moved away).
    fn remove_tree(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, dir)| dir.starts_with(rel))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            // SAFETY: removing a watch of our own descriptor; an already gone one is EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
    }

    /// The next event.
    pub async fn next_event(&mut self) -> Result<FilesystemEvent, EnvdError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| EnvdError::io("waiting for inotify", &e))?;
            let read = guard.try_io(|fd| {
                // SAFETY: reading into our buffer of its own length.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => self.decode(n),
                Ok(Err(e)) => return Err(EnvdError::io("reading inotify events", &e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Turns the events in `buf[..n]` into pending events.
    fn decode(&mut self, n: usize) {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut offset = 0;
        while offset + header <= n {
            // SAFETY: the kernel writes whole events; read_unaligned copes with any alignment.
            let raw: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(self.buf[offset..].as_ptr().cast()) };
            let name_end = (offset + header + raw.len as usize).min(n);
            let name_bytes = &self.buf[offset + header..name_end];
            let name_len = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            let name = std::ffi::OsStr::from_bytes(&name_bytes[..name_len]).to_owned();
            offset = name_end;
            self.handle(raw.wd, raw.mask, raw.cookie, PathBuf::from(name));
        }
    }

    fn handle(&mut self, wd: i32, mask: u32, cookie: u32, name: PathBuf) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            tracing::warn!(root = %self.root.display(), "inotify queue overflow: events lost");
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            self.dirs.remove(&wd);
            return;
        }
        let Some(dir) = self.dirs.get(&wd).cloned() else {
            return;
        };
        let is_dir = mask & libc::IN_ISDIR != 0;
        if name.as_os_str().is_empty() {
            // An event on a watched directory itself. For subdirectories the parent's watch
            // reports the same thing by name; only the root's own events count.
            if !dir.as_os_str().is_empty() {
                return;
            }
            let kind = if mask & libc::IN_DELETE_SELF != 0 {
                EventType::Remove
            } else if mask & libc::IN_MOVE_SELF != 0 {
                EventType::Rename
            } else if mask & libc::IN_ATTRIB != 0 {
                EventType::Chmod
            } else if mask & libc::IN_MODIFY != 0 {
                EventType::Write
            } else {
                return;
            };
            self.push(PathBuf::from("."), kind);
            return;
        }
        let rel = dir.join(&name);
        let temp = name
            .as_os_str()
            .as_bytes()
            .starts_with(UPLOAD_TEMP_PREFIX.as_bytes());
        if mask & libc::IN_MOVED_FROM != 0 {
            if self.cookies.len() >= MAX_COOKIES {
                self.cookies.clear();
            }
            self.cookies.insert(cookie, temp);
            if is_dir {
                self.remove_tree(&rel);
            }
            if !temp {
                self.push(rel, EventType::Rename);
            }
            return;
        }
        if mask & libc::IN_MOVED_TO != 0 {
            let from_upload = self.cookies.remove(&cookie).unwrap_or(false);
            if temp {
                return;
            }
            if from_upload {
                // A staged upload landing on its target (see the module's doc).
                self.push(rel.clone(), EventType::Create);
                self.push(rel.clone(), EventType::Chmod);
                self.push(rel, EventType::Write);
                return;
            }
            if is_dir && self.recursive {
                self.watch_new_dir(&rel);
            }
            self.push(rel, EventType::Create);
            return;
        }
        if temp {
            return;
        }
        if mask & libc::IN_CREATE != 0 {
            if is_dir && self.recursive {
                self.watch_new_dir(&rel);
            }
            self.push(rel, EventType::Create);
        } else if mask & libc::IN_MODIFY != 0 {
            self.push(rel, EventType::Write);
        } else if mask & libc::IN_DELETE != 0 {
            self.push(rel, EventType::Remove);
        } else if mask & libc::IN_ATTRIB != 0 {
            self.push(rel, EventType::Chmod);
        }
    }

    /// Follows a directory that appeared under a recursive watch, and what is already in it.
    fn watch_new_dir(&mut self, rel: &Path) {
        if self.add(rel.to_path_buf()).is_ok() {
            self.add_subdirs(rel);
        }
    }

    fn push(&mut self, rel: PathBuf, event_type: EventType) {
        let entry = (self.include_entry
            && !matches!(event_type, EventType::Remove | EventType::Rename))
        .then(|| entry_info(&self.root.join(&rel), &mut self.names).ok())
        .flatten();
        self.pending.push_back(FilesystemEvent {
            name: rel.to_string_lossy().into_owned(),
            event_type,
            entry,
        });
    }

    /// Everything already queued: pending events plus what the kernel holds right now, without
    /// waiting. A poll that follows a change sees it, however late the watcher's task runs.
    pub fn drain_ready(&mut self) -> Result<Vec<FilesystemEvent>, EnvdError> {
        loop {
            // SAFETY: a non-blocking read into our buffer of its own length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n > 0 {
                self.decode(n as usize);
                continue;
            }
            let e = io::Error::last_os_error();
            if n == 0 || e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(EnvdError::io("reading inotify events", &e));
            }
        }
        Ok(self.pending.drain(..).collect())
    }

    /// The events as a stream; it ends after the first error. Dropping it drops the watcher.
    pub fn into_stream(self) -> impl Stream<Item = Result<FilesystemEvent, EnvdError>> + Send {
        futures_util::stream::unfold(Some(self), |watcher| async move {
            let mut watcher = watcher?;
            match watcher.next_event().await {
                Ok(event) => Some((Ok(event), Some(watcher))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// True if `path` is on NFS, CIFS, SMB or FUSE.
fn is_network_mount(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct we pass.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(cpath.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as i64;
    NETWORK_FS_MAGIC.contains(&magic)
}
