//! File metadata: `X-Metadata-<key>: <value>` upload headers stored as the extended attributes
//! `user.e2b.<lowercased key>` (envd's `shared/pkg/filesystem/xattr.go`). An upload replaces the
//! whole set. Keys and values are printable US-ASCII; a key fits the kernel's 255-byte xattr name
//! limit with the prefix, and all of a file's metadata fits one 4 KiB ext4 block.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

use axum::http::HeaderMap;

/// The xattr namespace of SDK metadata (`user.` is what unprivileged xattrs need).
pub const XATTR_PREFIX: &str = "user.e2b.";
/// The header prefix, lowercase as `http` stores names.
const HEADER_PREFIX: &str = "x-metadata-";
/// The longest key: the kernel caps xattr names at 255 bytes, prefix included.
pub const MAX_KEY_LEN: usize = 255 - XATTR_PREFIX.len();
/// The most metadata per file: names (with prefix) plus values.
pub const MAX_TOTAL_LEN: usize = 4096;

/// Key → value, sorted (so the reply and the xattrs are in a stable order).
pub type Metadata = BTreeMap<String, String>;

/// The request's metadata: every `X-Metadata-*` header with a non-empty key, its first value
/// (envd takes `values[0]`), validated.
pub fn from_headers(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut metadata = Metadata::new();
    for name in headers.keys() {
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        let Some(value) = headers.get(name) else {
            continue;
        };
        let value = value.as_bytes();
        check_printable(&format!("value for key {key:?}"), value)?;
        // Printable ASCII is UTF-8.
        let value = String::from_utf8_lossy(value).into_owned();
        metadata.insert(key.to_ascii_lowercase(), value);
    }
    validate(&metadata)?;
    Ok(metadata)
}

/// envd's `ValidateMetadata`, with its messages.
pub fn validate(metadata: &Metadata) -> Result<(), String> {
    let mut total = 0;
    for (key, value) in metadata {
        if key.is_empty() {
            return Err("metadata key must not be empty".into());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!("metadata key {key:?} exceeds {MAX_KEY_LEN} bytes"));
        }
        check_printable("key", key.as_bytes())?;
        check_printable(&format!("value for key {key:?}"), value.as_bytes())?;
        total += XATTR_PREFIX.len() + key.len() + value.len();
    }
    if total > MAX_TOTAL_LEN {
        return Err(format!(
            "total metadata size {total} exceeds {MAX_TOTAL_LEN} bytes"
        ));
    }
    Ok(())
}

fn check_printable(label: &str, bytes: &[u8]) -> Result<(), String> {
    match bytes.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        None => Ok(()),
        Some(at) => Err(format!(
            "metadata {label} contains non-printable-ASCII byte 0x{:02x} at offset {at}",
            bytes[at]
        )),
    }
}

/// Whether an xattr error means the file system has none (`/proc`, `/sys`, some tmpfs): envd
/// then keeps the file and logs that the metadata was not stored.
pub fn unsupported(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOTSUP)
}

/// Makes `file`'s metadata exactly `metadata`: removes other `user.e2b.*` attributes, sets these.
pub fn write(file: &std::fs::File, metadata: &Metadata) -> io::Result<()> {
    let fd = file.as_raw_fd();
    for name in list(fd)? {
        let Some(key) = name.strip_prefix(XATTR_PREFIX) else {
            continue;
        };
        if metadata.contains_key(key) {
            continue;
        }
        let cname = cstring(&name)?;
        // SAFETY: a valid fd and a NUL-terminated name.
        if unsafe { libc::fremovexattr(fd, cname.as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENODATA) {
                return Err(err);
            }
        }
    }
    for (key, value) in metadata {
        let cname = cstring(&format!("{XATTR_PREFIX}{key}"))?;
        // SAFETY: a valid fd, a NUL-terminated name, and a buffer of the given length.
        let rc =
            unsafe { libc::fsetxattr(fd, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The names of `fd`'s extended attributes.
fn list(fd: libc::c_int) -> io::Result<Vec<String>> {
    loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let size = unsafe { libc::flistxattr(fd, std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        // SAFETY: the buffer is as long as we say.
        let got = unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(err);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn headers_become_lowercased_keys() {
        let mut h = HeaderMap::new();
        h.insert("X-Metadata-Owner", HeaderValue::from_static("bob"));
        h.append("X-Metadata-Owner", HeaderValue::from_static("second"));
        h.insert("X-Metadata-", HeaderValue::from_static("ignored"));
        h.insert("Content-Type", HeaderValue::from_static("x"));
        let md = from_headers(&h).expect("valid");
        assert_eq!(md.len(), 1);
        assert_eq!(md["owner"], "bob");
    }

    #[test]
    fn limits_and_printable_checks() {
        let mut h = HeaderMap::new();
        h.insert(
            "X-Metadata-Bad",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is a valid header value"),
        );
        let err = from_headers(&h).expect_err("non-ASCII");
        assert!(
            err.contains("non-printable-ASCII byte 0xc3 at offset 3"),
            "{err}"
        );

        let long: Metadata = [("k".repeat(MAX_KEY_LEN + 1), "v".to_string())].into();
        assert!(validate(&long)
            .expect_err("long")
            .contains("exceeds 246 bytes"));
        let ok: Metadata = [("k".repeat(MAX_KEY_LEN), "v".to_string())].into();
        assert_eq!(validate(&ok), Ok(()));
        let big: Metadata = (0..5)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect();
        assert!(validate(&big)
            .expect_err("big")
            .contains("exceeds 4096 bytes"));
    }
}
