//! Files and folders that hold secrets (connection files carry signing keys): readable by the
//! agent's user only; and pipes.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner read/write only.
const PRIVATE_FILE_MODE: u32 = 0o600;
/// Owner only, and searchable so the owner can open files inside.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` with mode 0600 and writes `bytes`. Fails if the file exists: a secret is never
/// written into a file someone else may already have opened.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    f.write_all(bytes)
}

/// Creates `dir` (and its parents) with mode 0700, and tightens it to 0700 if it already existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// A pipe, (read end, write end), both close-on-exec: a child that needs an end gets it by
/// `dup2` before exec, so no other child inherits it.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn modes_are_private_and_files_are_never_reused() {
        let dir = std::env::temp_dir().join(format!("kb-sys-fs-{}", std::process::id()));
        private_dir(&dir).expect("dir");
        let file = dir.join("secret");
        write_private(&file, b"key").expect("file");
        assert_eq!(std::fs::metadata(&dir).expect("meta").mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(&file).expect("meta").mode() & 0o777,
            0o600
        );
        assert!(write_private(&file, b"other").is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
