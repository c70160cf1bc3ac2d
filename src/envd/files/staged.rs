//! Writing one uploaded file, all or nothing.
//!
//! envd opens the target with `O_TRUNC` and streams into it, so a client that goes away half way,
//! a full disk or a corrupt gzip body leaves a truncated file. Here the body streams into a
//! temporary file beside the target (named [`UPLOAD_TEMP_PREFIX`]`<random>`, so it is on the same
//! file system and directory watchers can hide it), which gets the user as owner, the old file's
//! mode and the new metadata, and is renamed over the target only once the whole body (and the
//! gzip trailer) has arrived. Every failure removes it ([`TempFile`]'s `Drop`), including a
//! handler future that is dropped mid-upload: the writer sees its channel close without
//! [`Chunk::End`] and gives up.
//!
//! No fsync before the rename: the promise is about failed requests (the agent sees every one of
//! them), not power loss, and envd makes none either. A sandbox's disk lives and dies with its VM,
//! and flushing a 1 GB upload would cost more than receiving it. On ext4, replacing a file by
//! rename also makes the kernel start writing the new data back at once (`auto_da_alloc`).
//!
//! The disk work runs on one blocking thread per file, fed through a small bounded channel, so an
//! upload of any size holds a few chunks in memory and the async runtime never blocks on the disk.
//! The request side copies the body into a few reused buffers ([`GATHER`] bytes each) that the
//! disk thread hands back once written, rather than passing on the HTTP server's own chunks:
//! those are slices of its read buffer, so holding them in the channel made it allocate a fresh
//! buffer of up to ~400 KB for every read. On the reference machine (a VM, where a page fault is
//! dear) that was ~80,000 page faults and about half of the agent's CPU per GB; the copy costs far
//! less, and no allocator tuning is needed (which slowed the interpreter's large outputs).
//!
//! A symlinked target is followed, so the link stays and its file is replaced. A target with other
//! hard links becomes a new inode: the other names keep the old content (envd would have changed
//! them all); that is the price of never exposing a half-written file.
//!
//! Targets that are not regular files (devices, FIFOs) or that live on kernel pseudo file systems
//! (`/proc`, `/sys`, cgroups), where a temporary file cannot be created or a rename would not
//! mean "write", are written in place as envd does.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::direct::{SocketBody, SpliceError};
use super::error::{go_text, is_no_space, FilesError};
use super::metadata::{self, Metadata};
use crate::envd::UPLOAD_TEMP_PREFIX;

/// Chunks in flight between the request body and the disk thread: enough to keep both busy,
/// few enough that memory stays flat whatever the upload's size (at most this many plus two
/// buffers of [`GATHER`] bytes).
const CHANNEL_CHUNKS: usize = 8;
/// The size of one chunk handed to the disk thread: a multiple of [`WRITE_PIECE`], big enough
/// that the channel costs little per byte.
const GATHER: usize = 4 * WRITE_PIECE;
/// The most one `write(2)` to the file carries; small HTTP chunks are gathered up to it, larger
/// ones are cut into pieces of it. Also the gunzip output buffer.
///
/// Not larger: a write of 128 KB or more lets ext4 put the new file's page cache in large folios,
/// and on the reference machine (a Firecracker VM, kernel 6.18) filling those runs at 0.3–1 GB/s
/// against ~4 GB/s for 64 KB writes (`dd if=/dev/zero bs=64K` vs `bs=128K` to a new file, 1 GB;
/// the time is all in `copy_folio_from_iter_atomic`, so presumably the host backing fresh
/// high-order guest pages). `cp` (`copy_file_range`) writes page by page and never meets it.
pub const WRITE_PIECE: usize = 64 * 1024;
/// Symlinks followed to find the file a path names (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
/// Magic numbers (`statfs.f_type`) of kernel pseudo file systems, written in place.
const PSEUDO_FILE_SYSTEMS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
];

/// Where an upload goes and as whom.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The resolved request path (what the reply names).
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub metadata: Arc<Metadata>,
    /// The request's `Content-Length`, for envd's "attempted to write N bytes" message.
    pub content_length: Option<u64>,
    /// The file's exact size when the request tells it (an identity octet-stream body): the
    /// temporary file's blocks are allocated up front (see [`preallocate`]).
    pub exact_size: Option<u64>,
}

/// The body's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// What the request side hands the disk thread.
enum Chunk {
    /// A buffer to write, full unless it is the last; handed back once written.
    Data(Vec<u8>),
    /// The body is complete: commit.
    End,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// Whether the metadata is on disk (false where the file system has no xattrs).
    pub metadata_stored: bool,
}

/// One file being uploaded: a disk thread fed by [`Upload::send`].
pub struct Upload {
    tx: mpsc::Sender<Chunk>,
    /// Buffers the disk thread has written, for reuse.
    returned: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The bytes gathered for the next chunk.
    gathering: Vec<u8>,
    done: tokio::task::JoinHandle<Result<Written, FilesError>>,
}

impl Upload {
    pub fn start(dest: Destination, encoding: Encoding) -> Upload {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (give_back, returned) = std::sync::mpsc::channel();
        let chunks = Chunks::new(rx, give_back);
        let done =
            tokio::task::spawn_blocking(move || write(&dest, Source::Chunks { chunks, encoding }));
        Upload {
            tx,
            returned,
            gathering: Vec::new(),
            done,
        }
    }

    /// Copies a piece of the body towards the disk thread, so the caller's buffer is free again
    /// at once; `false` when the disk thread has stopped (then [`Upload::finish`] says why).
    pub async fn send(&mut self, mut data: Bytes) -> bool {
        while !data.is_empty() {
            if self.gathering.capacity() == 0 {
                self.gathering = self
                    .returned
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(GATHER));
            }
            let n = (GATHER - self.gathering.len()).min(data.len());
            self.gathering.extend_from_slice(&data.split_to(n));
            if self.gathering.len() == GATHER && !self.hand_over().await {
                return false;
            }
        }
        true
    }

    /// Sends the gathered bytes to the disk thread.
    async fn hand_over(&mut self) -> bool {
        let full = std::mem::take(&mut self.gathering);
        self.tx.send(Chunk::Data(full)).await.is_ok()
    }

    /// The body is complete: commits the file, or returns why the disk thread failed.
    pub async fn finish(mut self) -> Result<Written, FilesError> {
        if !self.gathering.is_empty() {
            self.hand_over().await;
        }
        let _ = self.tx.send(Chunk::End).await;
        drop(self.tx);
        joined(self.done).await
    }

    /// The body failed with `why`: the disk thread removes its temporary file, and this waits
    /// for that so nothing is left once the request is answered.
    pub async fn abort(self, why: FilesError) -> FilesError {
        drop(self.tx);
        match joined(self.done).await {
            // The disk thread had already failed on its own: that is the cause.
            Err(own) if !matches!(own, FilesError::ClientGone(_)) => own,
            _ => why,
        }
    }
}

async fn joined(
    done: tokio::task::JoinHandle<Result<Written, FilesError>>,
) -> Result<Written, FilesError> {
    done.await
        .unwrap_or_else(|e| Err(FilesError::Internal(format!("upload writer failed: {e}"))))
}

/// A temporary file that is removed unless [`TempFile::commit`] renamed it into place.
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    /// Creates `dir/.kernelbox-upload-<random>` (mode `0666` less the umask, like envd's files).
    fn create(dir: &Path) -> io::Result<(File, TempFile)> {
        loop {
            let path = dir.join(format!(
                "{UPLOAD_TEMP_PREFIX}{}",
                uuid::Uuid::new_v4().simple()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => {
                    return Ok((
                        file,
                        TempFile {
                            path,
                            committed: false,
                        },
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn commit(mut self, target: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove an upload's temporary file");
            }
        }
    }
}

/// Where the disk thread takes the body from.
enum Source {
    /// Buffers from the request side (any body hyper read).
    Chunks { chunks: Chunks, encoding: Encoding },
    /// An identity body still in the client's socket.
    Socket(SocketBody),
}

/// Writes an identity body that is still in the client's socket (see [`super::direct`]),
/// all or nothing as any other upload.
pub async fn from_socket(dest: Destination, body: SocketBody) -> Result<Written, FilesError> {
    joined(tokio::task::spawn_blocking(move || {
        write(&dest, Source::Socket(body))
    }))
    .await
}

/// The disk thread: everything from creating the parents to the rename.
fn write(dest: &Destination, source: Source) -> Result<Written, FilesError> {
    let parent = dest.path.parent().unwrap_or(Path::new("/"));
    ensure_dirs(parent, dest.uid, dest.gid).map_err(|e| match e {
        DirError::NotADir(p) => FilesError::Internal(format!(
            "error ensuring directories: path is a file: {}",
            p.display()
        )),
        DirError::Io(e) => FilesError::io("error ensuring directories", &e),
    })?;
    let target = follow_symlinks(&dest.path)
        .map_err(|e| FilesError::Internal(format!("error getting file info: {}", go_text(&e))))?;
    let old = match std::fs::symlink_metadata(&target) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(FilesError::Internal(format!(
                "error getting file info: {}",
                go_text(&e)
            )))
        }
    };
    if old.as_ref().is_some_and(|md| md.is_dir()) {
        return Err(FilesError::TargetIsDirectory(dest.path.clone()));
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let in_place = old.as_ref().is_some_and(|md| !md.is_file()) || on_pseudo_fs(dir);
    if in_place {
        return write_in_place(dest, &target, source);
    }

    let (file, temp) = TempFile::create(dir).map_err(|e| {
        if is_no_space(&e) {
            FilesError::NoSpace(format!("not enough inodes available: {}", go_text(&e)))
        } else {
            FilesError::Internal(format!("error opening file: {}", go_text(&e)))
        }
    })?;
    chown(&file, dest.uid, dest.gid)?;
    if let Some(size) = dest.exact_size {
        preallocate(&file, size).map_err(|e| write_error(&e, dest.content_length))?;
    }
    copy_body(source, &file, dest.content_length)?;
    let metadata_stored = set_metadata(&file, dest)?;
    if let Some(old) = &old {
        // After the chown, which clears set-id bits.
        file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
            .map_err(|e| {
                FilesError::Internal(format!("error setting file mode: {}", go_text(&e)))
            })?;
    }
    temp.commit(&target)
        .map_err(|e| FilesError::io("error replacing file", &e))?;
    Ok(Written { metadata_stored })
}

/// envd's behaviour, for targets that cannot be replaced by a rename.
fn write_in_place(
    dest: &Destination,
    target: &Path,
    source: Source,
) -> Result<Written, FilesError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_CLOEXEC)
        .open(target)
        .map_err(|e| FilesError::io("error opening file", &e))?;
    chown(&file, dest.uid, dest.gid)?;
    copy_body(source, &file, dest.content_length)?;
    let metadata_stored = set_metadata(&file, dest)?;
    Ok(Written { metadata_stored })
}

fn chown(file: &File, uid: u32, gid: u32) -> Result<(), FilesError> {
    std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|e| {
        FilesError::Internal(format!("error changing file ownership: {}", go_text(&e)))
    })
}

/// Replaces the file's metadata; `false` where the file system has no xattrs (logged, as envd).
fn set_metadata(file: &File, dest: &Destination) -> Result<bool, FilesError> {
    match metadata::write(file, &dest.metadata) {
        Ok(()) => Ok(true),
        Err(e) if metadata::unsupported(&e) => {
            if !dest.metadata.is_empty() {
                tracing::warn!(path = %dest.path.display(), "file system has no xattrs; metadata not stored");
            }
            Ok(false)
        }
        Err(e) if is_no_space(&e) || e.raw_os_error() == Some(libc::E2BIG) => {
            Err(FilesError::NoSpace(format!(
                "not enough space for file metadata: {}",
                go_text(&e)
            )))
        }
        Err(e) => Err(FilesError::Internal(format!(
            "error writing file metadata: {}",
            go_text(&e)
        ))),
    }
}

/// Pulls chunks off the channel and hands written ones back; remembers whether the body ended
/// or was abandoned.
struct Chunks {
    rx: mpsc::Receiver<Chunk>,
    give_back: std::sync::mpsc::Sender<Vec<u8>>,
    /// [`Chunk::End`] arrived.
    ended: bool,
    /// The channel closed without it: the request side gave up.
    abandoned: bool,
    /// The chunk being read through [`Read`], and how far.
    current: Vec<u8>,
    read: usize,
}

impl Chunks {
    fn new(rx: mpsc::Receiver<Chunk>, give_back: std::sync::mpsc::Sender<Vec<u8>>) -> Chunks {
        Chunks {
            rx,
            give_back,
            ended: false,
            abandoned: false,
            current: Vec::new(),
            read: 0,
        }
    }

    /// The next chunk, or `None` at the end or when the request side went away.
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Chunk::Data(data)) => Some(data),
            Some(Chunk::End) => {
                self.ended = true;
                None
            }
            None => {
                self.abandoned = true;
                None
            }
        }
    }

    /// A written chunk goes back to the request side to be filled again.
    fn reuse(&self, mut chunk: Vec<u8>) {
        chunk.clear();
        // The request side may be gone (the body is complete): then the buffer is freed here.
        let _ = self.give_back.send(chunk);
    }
}

/// The compressed side of a gzip upload, as a reader for the decoder.
impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.read == self.current.len() {
            let done = std::mem::take(&mut self.current);
            if done.capacity() > 0 {
                self.reuse(done);
            }
            self.read = 0;
            match self.next() {
                Some(data) => self.current = data,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.read);
        buf[..n].copy_from_slice(&self.current[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

/// Allocates the temporary file's blocks before the body arrives (`FALLOC_FL_KEEP_SIZE`: the
/// size still grows with the writes, so a short body never shows as zeros). ext4 then writes
/// the page cache into allocated, unwritten extents instead of reserving delayed allocation
/// page by page: 1 GB in 64 KB writes took 0.13–0.14 s of system time against 0.22–0.37 s on
/// the reference machine. A full disk is found before the first byte; file systems without
/// `fallocate` just skip it.
fn preallocate(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(size) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the descriptor is open for the call; fallocate touches no memory of ours.
    if unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if is_no_space(&e) {
        Err(e)
    } else {
        Ok(())
    }
}

/// A failed write of the file, in envd's words.
fn write_error(e: &io::Error, content_length: Option<u64>) -> FilesError {
    if is_no_space(e) {
        let base = "not enough disk space available";
        FilesError::NoSpace(match content_length {
            Some(n) if n > 0 => format!("attempted to write {n} bytes: {base}"),
            _ => base.to_string(),
        })
    } else {
        FilesError::Internal(format!("error writing file: {}", go_text(e)))
    }
}

/// Streams the body into `file` (decompressing it if need be) and flushes it.
fn copy_body(source: Source, file: &File, content_length: Option<u64>) -> Result<(), FilesError> {
    let write_error = |e: io::Error| write_error(&e, content_length);
    let (mut chunks, encoding) = match source {
        Source::Chunks { chunks, encoding } => (chunks, encoding),
        Source::Socket(body) => {
            return body.splice_into(file, WRITE_PIECE).map_err(|e| match e {
                SpliceError::Socket(e) => FilesError::ClientGone(e.to_string()),
                SpliceError::File(e) => write_error(e),
            })
        }
    };
    let mut out = BufWriter::with_capacity(WRITE_PIECE, Pieces(file));
    match encoding {
        Encoding::Identity => {
            while let Some(data) = chunks.next() {
                out.write_all(&data).map_err(write_error)?;
                chunks.reuse(data);
            }
        }
        Encoding::Gzip => {
            // Multi-member, as Go's gzip reader: concatenated gzip files are one body.
            let mut decoder = flate2::read::MultiGzDecoder::new(&mut chunks);
            let mut buf = vec![0u8; WRITE_PIECE];
            loop {
                let n = match decoder.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(_) if decoder.get_ref().abandoned => {
                        return Err(FilesError::ClientGone("the body ended early".into()))
                    }
                    Err(e) => {
                        return Err(FilesError::BadRequest(format!(
                            "error decompressing request body: {e}"
                        )))
                    }
                };
                out.write_all(&buf[..n]).map_err(write_error)?;
            }
        }
    }
    if !chunks.ended {
        return Err(FilesError::ClientGone("the body ended early".into()));
    }
    out.flush().map_err(write_error)?;
    Ok(())
}

/// A file written at most [`WRITE_PIECE`] bytes per `write(2)` (see there why).
struct Pieces<'a>(&'a File);

impl Write for Pieces<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write(&data[..data.len().min(WRITE_PIECE)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum DirError {
    NotADir(PathBuf),
    Io(io::Error),
}

/// `mkdir -p` with each created directory owned by the user (envd's `EnsureDirs`).
fn ensure_dirs(dir: &Path, uid: u32, gid: u32) -> Result<(), DirError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        match std::fs::metadata(d) {
            Ok(md) if md.is_dir() => break,
            Ok(_) => return Err(DirError::NotADir(d.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d),
            Err(e) => return Err(DirError::Io(e)),
        }
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DirError::Io(e)),
        }
        // Also when another request created it first: chown is idempotent.
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(DirError::Io)?;
    }
    Ok(())
}

/// The file `path` names once symlinks are followed (the final one may dangle: writing through
/// it creates its target, as `open(O_CREAT)` would), so the rename replaces the file and keeps
/// the link.
fn follow_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut cur = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => {
                let link = std::fs::read_link(&cur)?;
                cur = if link.is_absolute() {
                    link
                } else {
                    cur.parent().unwrap_or(Path::new("/")).join(link)
                };
            }
            _ => return Ok(cur),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// Whether `dir` is on a kernel pseudo file system.
fn on_pseudo_fs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs only writes into the struct we pass; all-zero is a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    PSEUDO_FILE_SYSTEMS.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The preallocated blocks never show: the size is what was written, and the content is
    /// exact across pieces and gathered small writes.
    #[test]
    fn preallocated_files_keep_the_written_size() {
        let dir = std::env::temp_dir().join(format!("kb-staged-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        let file = File::create(&path).expect("create");
        preallocate(&file, 4 * WRITE_PIECE as u64).expect("preallocate");
        assert_eq!(file.metadata().expect("stat").len(), 0);
        let big: Vec<u8> = (0..WRITE_PIECE * 2 + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut out = BufWriter::with_capacity(WRITE_PIECE, Pieces(&file));
        out.write_all(b"small").expect("small");
        out.write_all(&big).expect("big");
        out.flush().expect("flush");
        drop(out);
        let mut expected = b"small".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(std::fs::read(&path).expect("read"), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pieces_never_exceed_a_piece() {
        let dir = std::env::temp_dir().join(format!("kb-staged-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = File::create(dir.join("f")).expect("create");
        let n = Pieces(&file)
            .write(&vec![1u8; WRITE_PIECE * 3])
            .expect("write");
        assert_eq!(n, WRITE_PIECE);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn symlinks_are_followed_to_their_file() {
        let dir = std::env::temp_dir().join(format!("kb-staged-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::os::unix::fs::symlink("real.txt", dir.join("link")).expect("link");
        assert_eq!(
            follow_symlinks(&dir.join("link")).expect("follow"),
            dir.join("real.txt")
        );
        std::os::unix::fs::symlink("loop", dir.join("loop")).expect("loop");
        assert!(follow_symlinks(&dir.join("loop")).is_err());
        assert!(on_pseudo_fs(Path::new("/proc/self")));
        assert!(!on_pseudo_fs(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
