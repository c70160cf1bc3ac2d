//! Where kernelbox keeps things. Everything it installs or creates lives under `$KERNELBOX_HOME`
//! (default `~/.kernelbox`), so a machine can be cleaned by deleting one folder.

use std::path::PathBuf;

/// `$KERNELBOX_HOME`, or `~/.kernelbox`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("KERNELBOX_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    user_home.join(".kernelbox")
}

/// The default working directory of contexts: `/home/user` where it exists (E2B's templates), else
/// `$KERNELBOX_HOME/workspace`.
pub fn default_workdir(home: &std::path::Path) -> PathBuf {
    let e2b = PathBuf::from("/home/user");
    if e2b.is_dir() {
        e2b
    } else {
        home.join("workspace")
    }
}
