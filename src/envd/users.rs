//! Linux users as envd sees them: who a request acts as (uid, gid, groups, home) and where its
//! paths point. envd resolves every path for a user: empty → the default workdir, `~` → the user's
//! home, relative → joined to the home (`permissions/path.go` in E2B's envd).

use std::ffi::{CStr, CString};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// envd's wording, which the SDKs show to users.
    #[error("error looking up user '{0}': user: unknown user {0}")]
    Unknown(String),
}

/// A Linux account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The home from the user database.
    pub home: PathBuf,
}

/// Bound on a `getpw*_r` string buffer: the database's lines are short; this only stops a loop.
const MAX_PASSWD_BUFFER: usize = 1 << 20;

impl User {
    /// Looks a user up by name in the system's user database.
    pub fn lookup(name: &str) -> Result<User, UserError> {
        let unknown = || UserError::Unknown(name.to_string());
        let cname = CString::new(name).map_err(|_| unknown())?;
        // SAFETY: getpwnam_r writes only into the buffers we pass and reports their size needs.
        lookup_with(|pwd, buf, result| unsafe {
            libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result)
        })
        .ok_or_else(unknown)
    }

    /// The user this process runs as (for an agent outside a sandbox).
    pub fn current() -> Option<User> {
        // SAFETY: geteuid cannot fail; getpwuid_r as above.
        let uid = unsafe { libc::geteuid() };
        lookup_with(|pwd, buf, result| unsafe {
            libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result)
        })
    }
}

/// Resolves a request's path, lexically (`..` cannot climb above `/`): empty → `workdir`,
/// `~`/`~/x` → `home`, relative → under `home`.
pub fn resolve(path: &str, home: &Path, workdir: &Path) -> PathBuf {
    {
        let joined = if path.is_empty() {
            workdir.to_path_buf()
        } else if path == "~" {
            home.to_path_buf()
        } else if let Some(rest) = path.strip_prefix("~/") {
            home.join(rest)
        } else if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            home.join(path)
        };
        clean(&joined)
    }
}

/// Runs one `getpw*_r` call, growing its buffer while it says ERANGE.
fn lookup_with(
    call: impl Fn(&mut libc::passwd, &mut Vec<libc::c_char>, &mut *mut libc::passwd) -> libc::c_int,
) -> Option<User> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is a plain C struct; all-zero is a valid "empty" value for it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && buf.len() < MAX_PASSWD_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success the strings point into `buf`, which is alive here.
        let text =
            |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        return Some(User {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(text(pwd.pw_dir)),
        });
    }
}

/// Lexical clean-up of an absolute path, as Go's `filepath.Clean`: no `.`, no `..` above `/`, no
/// repeated or trailing slashes.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_envd() {
        let (home, work) = (Path::new("/home/u"), Path::new("/work/dir"));
        let r = |p: &str| resolve(p, home, work);
        assert_eq!(r(""), PathBuf::from("/work/dir"));
        assert_eq!(r("~"), PathBuf::from("/home/u"));
        assert_eq!(r("~/a/b"), PathBuf::from("/home/u/a/b"));
        assert_eq!(r("a/./b/../c"), PathBuf::from("/home/u/a/c"));
        assert_eq!(r("/x/../../y//z/"), PathBuf::from("/y/z"));
        assert_eq!(r("../../.."), PathBuf::from("/"));
    }

    #[test]
    fn users_come_from_the_user_database() {
        let root = User::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(matches!(
            User::lookup("no-such-user-kernelbox"),
            Err(UserError::Unknown(_))
        ));
        assert!(User::lookup("bad\0name").is_err());
    }
}
