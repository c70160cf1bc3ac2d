//! Pseudo-terminals for `pty.create`: the agent keeps the master (non-blocking, driven by tokio);
//! the child gets the slave as stdin, stdout, stderr and controlling terminal (it starts a new
//! session, so job control and Ctrl+C work as in a terminal).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

impl PtySize {
    fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// The master side of a pseudo-terminal.
pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Opens a terminal of `size`; returns the master and the slave for the child.
    pub fn open(size: PtySize) -> io::Result<(Pty, OwnedFd)> {
        let (mut master, mut slave) = (-1, -1);
        let ws = size.winsize();
        // SAFETY: openpty writes two fds into the locals; the name buffer and termios are optional.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        set_cloexec_nonblocking(&master)?;
        set_cloexec(&slave)?;
        // SAFETY: the OwnedFd is open and the AsyncFd owns it from here on.
        let master = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
        Ok((Pty { master }, slave))
    }

    /// Reads terminal output. `Ok(0)` once every slave is closed (Linux reports EIO then).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| raw_read(fd.as_raw_fd(), buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` to the terminal (the child's keyboard).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| raw_write(fd.as_raw_fd(), data)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Changes the terminal's size; the child gets SIGWINCH.
    pub fn resize(&self, size: PtySize) -> io::Result<()> {
        let ws = size.winsize();
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// In the child, before exec: a new session with the terminal on fd 0 as its controlling
/// terminal. Async-signal-safe.
pub fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: plain syscalls on the child's own session and stdin.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn raw_read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn raw_write(fd: i32, data: &[u8]) -> io::Result<usize> {
    // SAFETY: writes at most data.len() bytes from data.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_cloexec_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    set_cloexec(fd)?;
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
