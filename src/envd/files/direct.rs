//! Zero-copy bodies for `/files`: an upload spliced from the client's socket into the file, a
//! download sent from the file into the socket with `sendfile(2)`.
//!
//! Through hyper, every byte of a 1 GB upload is copied twice in the agent before the kernel
//! copies it into the page cache (socket → hyper's buffer → the staging buffer → the file), and
//! the two threads involved hand each buffer over; a download is read into a buffer and written
//! out again. `cp` copies once. When [`super::connection`] serves a request itself (an identity
//! body on plain HTTP/1.1, see there), it hands the handlers the socket instead of a body:
//! - [`SocketBody`] (a request extension): the upload's body is still in the socket; the disk
//!   thread moves it through a pipe into the file with `splice(2)`, so the agent copies each byte
//!   once, as `cp` does, and no buffer crosses threads.
//! - [`SendFile`] (a response extension): the download's bytes go from the page cache to the
//!   socket with `sendfile(2)`, also one copy.
//!
//! Both run on blocking threads (disk I/O) against a duplicate of the socket's descriptor, so a
//! connection that goes away mid-transfer never leaves a thread with a reused descriptor number.
//! The socket stays non-blocking (tokio's); the loops wait for it with `poll(2)`, at most
//! [`IDLE_TIMEOUT`] without progress.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a transfer waits for its peer to send or take anything before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most one `sendfile(2)` moves.
const SENDFILE_CHUNK: usize = 1 << 20;
/// The pipe between socket and file: large, so one splice empties much of the socket's receive
/// queue and the sender keeps going while the file is written.
const PIPE_CAPACITY: usize = 1 << 20;

/// A request extension: the connection can send a response's bytes with [`SendFile`].
#[derive(Clone, Copy, Debug)]
pub struct DirectConnection;

/// An upload's body, still in the client's socket: `length` bytes right after the head.
#[derive(Clone, Debug)]
pub struct SocketBody {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    socket: OwnedFd,
    length: u64,
    /// Bytes taken out of the socket so far: the connection reuses the socket for its next
    /// request only when the whole body was.
    taken: AtomicU64,
}

impl SocketBody {
    /// `length` bytes to come on `socket` (duplicated here).
    pub fn new(socket: BorrowedFd<'_>, length: u64) -> io::Result<SocketBody> {
        Ok(SocketBody {
            inner: Arc::new(Inner {
                socket: socket.try_clone_to_owned()?,
                length,
                taken: AtomicU64::new(0),
            }),
        })
    }

    /// Bytes of the body not yet taken out of the socket.
    pub fn unread(&self) -> u64 {
        self.inner.length - self.inner.taken.load(Ordering::Acquire)
    }

    /// Moves the whole body into `file` at its current offset; blocking. `UnexpectedEof` when
    /// the client closes early, `TimedOut` when it stalls for [`IDLE_TIMEOUT`], otherwise the
    /// file's own error (a full disk).
    ///
    /// One thread takes turns: all the socket holds (up to the pipe's size) into the pipe, then
    /// all of the pipe into the file. Measured on 1 GB against the alternatives: taking turns
    /// per 64 KB piece was 40 % slower (more, smaller socket reads, each waking the sender), and a
    /// second thread for the file side took as long at 1.8x the CPU (handing the pipe back and
    /// forth).
    ///
    /// `piece` is the most one splice writes into the file (the caller's write size: see
    /// `staged::WRITE_PIECE` for why it is small).
    pub fn splice_into(&self, file: &File, piece: usize) -> Result<(), SpliceError> {
        let socket = self.inner.socket.as_raw_fd();
        let (pipe_out, pipe_in) = crate::sys::pipe().map_err(SpliceError::Socket)?;
        // SAFETY: fcntl on a pipe we own; a refusal (over /proc/sys/fs/pipe-max-size) leaves the
        // default 64 KB, which only means more, smaller splices.
        let capacity = unsafe {
            libc::fcntl(
                pipe_in.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_CAPACITY as libc::c_int,
            )
        };
        let capacity = usize::try_from(capacity).unwrap_or(0).max(piece);
        while self.unread() > 0 {
            let want = self.unread().min(capacity as u64) as usize;
            let mut in_pipe = match splice(socket, pipe_in.as_raw_fd(), want) {
                Ok(0) => {
                    return Err(SpliceError::Socket(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the whole body",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(socket, libc::POLLIN).map_err(SpliceError::Socket)?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SpliceError::Socket(e)),
            };
            self.inner.taken.fetch_add(in_pipe as u64, Ordering::AcqRel);
            while in_pipe > 0 {
                match splice(pipe_out.as_raw_fd(), file.as_raw_fd(), in_pipe.min(piece)) {
                    Ok(n) => in_pipe -= n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(SpliceError::File(e)),
                }
            }
        }
        Ok(())
    }
}

/// Which side of a splice failed.
#[derive(Debug)]
pub enum SpliceError {
    /// The client's side: gone, stalled.
    Socket(io::Error),
    /// The file's side: a full disk, an I/O error.
    File(io::Error),
}

/// A download's bytes: `len` from `start` of `file`, for the connection to send.
#[derive(Clone, Debug)]
pub struct SendFile {
    file: Arc<Mutex<Option<File>>>,
    start: u64,
    pub len: u64,
}

impl SendFile {
    pub fn new(file: File, start: u64, len: u64) -> SendFile {
        SendFile {
            file: Arc::new(Mutex::new(Some(file))),
            start,
            len,
        }
    }

    /// Writes `head`, then the bytes, to `socket`; blocking. Taken once: a second call sends
    /// only the head.
    pub fn send_to(&self, socket: &OwnedFd, head: &[u8]) -> io::Result<()> {
        write_all(socket.as_raw_fd(), head)?;
        let Some(file) = self.file.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let mut offset = self.start as libc::off_t;
        let end = offset + self.len as libc::off_t;
        while offset < end {
            let want = ((end - offset) as usize).min(SENDFILE_CHUNK);
            // SAFETY: both descriptors are open for the call; the kernel updates `offset`.
            let n =
                unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut offset, want) };
            match n {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    ))
                }
                n if n > 0 => {}
                _ => retry_or_fail(socket.as_raw_fd(), libc::POLLOUT)?,
            }
        }
        Ok(())
    }
}

/// All of `data` into the non-blocking `fd`, waiting for room as needed.
fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a live slice to a descriptor we hold open.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
        } else {
            retry_or_fail(fd, libc::POLLOUT)?;
        }
    }
    Ok(())
}

/// After a failed call on `fd`: waits if it would have blocked, returns if interrupted, fails
/// otherwise.
fn retry_or_fail(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => wait(fd, events),
        io::ErrorKind::Interrupted => Ok(()),
        _ => Err(e),
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; null offsets use (and advance) the
    // descriptors' own positions.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits until `fd` is ready for `events`, or fails after [`IDLE_TIMEOUT`].
fn wait(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: poll on one descriptor we hold open.
        let n = unsafe { libc::poll(&mut pollfd, 1, IDLE_TIMEOUT.as_millis() as libc::c_int) };
        match n {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client sent or took nothing for {IDLE_TIMEOUT:?}"),
                ))
            }
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
