//! `EntryInfo` from a path, the way envd fills it in: the entry itself is `lstat`ed (name, size,
//! `permissions` as Go's `FileMode.String()`, owner and group names, times, and `metadata`, the
//! `user.e2b.*` extended attributes without their prefix), but a symlink is typed by what it
//! points to: `type` and `mode` are its target's, and `symlink_target` is the target's fully
//! resolved absolute path. A dangling link has no type (`FILE_TYPE_UNSPECIFIED`) and mode 0.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::envd::connect::json::Timestamp;
use crate::envd::rpc::filesystem::{EntryInfo, FileType};
use crate::envd::users::clean;

/// The prefix of the extended attributes that are an entry's metadata.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Bound on a `getpwuid_r` / `getgrgid_r` buffer and on an xattr list: only stops a loop.
const MAX_BUFFER: usize = 1 << 20;

/// Owner and group names by id, cached for one call (a `ListDir` asks for the same few ids many
/// times, and each libc lookup may read `/etc/passwd`).
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid).unwrap_or_else(|| uid.to_string()))
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| group_name(gid).unwrap_or_else(|| gid.to_string()))
            .clone()
    }
}

/// The entry at `path`: the entry itself, not what a final symlink points to, except for `type`
/// and `mode` (see the module's doc). A symlink always has a `symlink_target`.
pub fn entry_info(path: &Path, names: &mut Names) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let (file_type, mode, symlink_target) = if ft.is_symlink() {
        let (file_type, mode, target) = symlink_kind(path);
        (file_type, mode, Some(target.to_string_lossy().into_owned()))
    } else {
        (kind(ft), meta.mode() & 0o777, None)
    };
    let name = match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => "/".to_string(),
    };
    Ok(EntryInfo {
        name,
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode,
        permissions: go_mode_string(meta.mode()),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: meta.modified().ok().map(Timestamp::from),
        symlink_target,
        metadata: metadata(path),
    })
}

fn kind(ft: std::fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Unspecified
    }
}

/// What the symlink at `path` stands for: its target's type and permission bits, and the
/// target's absolute path with every symlink resolved. A dangling link (or a loop) is
/// `Unspecified` with mode 0 and the absolute path it names.
fn symlink_kind(path: &Path) -> (FileType, u32, PathBuf) {
    if let Ok(resolved) = std::fs::canonicalize(path) {
        if let Ok(target) = std::fs::metadata(&resolved) {
            return (kind(target.file_type()), target.mode() & 0o777, resolved);
        }
    }
    let named = match std::fs::read_link(path) {
        Ok(target) => clean(&path.parent().unwrap_or(Path::new("/")).join(target)),
        // Replaced between the two calls: nothing better to name.
        Err(_) => path.to_path_buf(),
    };
    (FileType::Unspecified, 0, named)
}

/// Go's `FileMode.String()` for a Unix `st_mode`: type and special letters (`d`, `L`, `D`, `p`,
/// `S`, `u`, `g`, `c`, `t`, in Go's order) or `-`, then `rwxrwxrwx`.
pub fn go_mode_string(st_mode: u32) -> String {
    let format = st_mode & libc::S_IFMT;
    let mut out = String::with_capacity(12);
    let letters = [
        (format == libc::S_IFDIR, 'd'),
        (format == libc::S_IFLNK, 'L'),
        (format == libc::S_IFBLK || format == libc::S_IFCHR, 'D'),
        (format == libc::S_IFIFO, 'p'),
        (format == libc::S_IFSOCK, 'S'),
        (st_mode & libc::S_ISUID != 0, 'u'),
        (st_mode & libc::S_ISGID != 0, 'g'),
        (format == libc::S_IFCHR, 'c'),
        (st_mode & libc::S_ISVTX != 0, 't'),
    ];
    for (set, letter) in letters {
        if set {
            out.push(letter);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        out.push(if st_mode & (1 << (8 - i)) != 0 {
            c
        } else {
            '-'
        });
    }
    out
}

/// The `user.e2b.*` attributes of `path` (not following symlinks), prefix stripped. Errors
/// (no xattr support, a race with removal) read as no metadata: metadata is best effort.
fn metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    // SAFETY: a NULL buffer of size 0 asks for the list's size.
    let size = unsafe { libc::llistxattr(cpath.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 || size as usize > MAX_BUFFER {
        return out;
    }
    let mut list = vec![0u8; size as usize];
    // SAFETY: the buffer is `list.len()` bytes long.
    let size = unsafe { libc::llistxattr(cpath.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if size <= 0 {
        return out;
    }
    list.truncate(size as usize);
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        if let Some(value) = xattr_value(&cpath, &cname) {
            out.insert(
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    out
}

fn xattr_value(path: &CStr, name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: size query, then a read into a buffer of the reported size.
    let size = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 || size as usize > MAX_BUFFER {
        return None;
    }
    let mut value = vec![0u8; size as usize];
    let size = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if size < 0 {
        return None;
    }
    value.truncate(size as usize);
    Some(value)
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid_r writes only into the buffers passed; the name points into `buf`.
    with_buffer(|buf| unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        (rc, (!result.is_null()).then(|| cstr(pwd.pw_name)))
    })
}

fn group_name(gid: u32) -> Option<String> {
    // SAFETY: as above, with getgrgid_r.
    with_buffer(|buf| unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result);
        (rc, (!result.is_null()).then(|| cstr(grp.gr_name)))
    })
}

/// # Safety
/// `p` must point to a NUL-terminated string.
unsafe fn cstr(p: *const libc::c_char) -> String {
    CStr::from_ptr(p).to_string_lossy().into_owned()
}

/// Runs a `get*_r` lookup, growing the buffer while it says ERANGE.
fn with_buffer(
    call: impl Fn(&mut Vec<libc::c_char>) -> (libc::c_int, Option<String>),
) -> Option<String> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let (rc, found) = call(&mut buf);
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return if rc == 0 { found } else { None };
    }
}

/// The entries under `dir` down to `depth` levels (1 = its children), depth-first in byte order
/// of names like Go's `filepath.WalkDir`, never following symlinks below `dir`.
pub fn list_dir(dir: &Path, depth: u32, names: &mut Names) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    walk(dir, depth, names, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, names: &mut Names, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    children.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for child in children {
        let entry = match entry_info(&child, names) {
            Ok(entry) => entry,
            // Removed while we walked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // A symlink to a directory is typed as one but never followed.
        let descend =
            depth > 1 && entry.file_type == FileType::Directory && entry.symlink_target.is_none();
        out.push(entry);
        if descend {
            match walk(&child, depth - 1, names, out) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_print_like_go() {
        assert_eq!(go_mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(go_mode_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(libc::S_IFDIR | 0o1777), "dtrwxrwxrwx");
        assert_eq!(go_mode_string(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(go_mode_string(libc::S_IFREG | 0o4755), "urwxr-xr-x");
        assert_eq!(go_mode_string(libc::S_IFIFO | 0o600), "prw-------");
    }
}
