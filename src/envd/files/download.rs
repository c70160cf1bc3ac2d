//! `GET /files`: a file's bytes, untouched, as envd serves them (`internal/api/download.go`):
//! Go's `http.ServeContent` for identity (`Range`, `Last-Modified` and conditional requests), or
//! gzip when `Accept-Encoding` prefers it (the JS SDK's fetch always offers it).
//!
//! The file is read on a blocking thread into a few buffers that the response hands back once
//! written (gzip: a small bounded channel), so a download of any size holds a few chunks in
//! memory and a slow client slows the reader down.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::direct::{DirectConnection, SendFile};
use super::encoding::{self, Coding};
use super::error::{go_text, FilesError};
use super::signature::Operation;
use super::{authorise, resolve, FileQuery};
use crate::envd::Envd;

/// Bytes per read of an identity download: one `read` per chunk, and few enough chunks that
/// handing them to the response costs little per byte.
const READ_CHUNK: usize = 1024 * 1024;
/// Buffers of one identity download: being read, waiting, and being written to the socket.
const POOL_BUFFERS: usize = 4;
/// Bytes per gzip output chunk.
const CHUNK: usize = 256 * 1024;
/// gzip chunks in flight towards the client.
const CHANNEL_CHUNKS: usize = 4;
/// What Go's `DetectContentType` looks at.
const SNIFF_LEN: usize = 512;
/// gzip level for downloads. Level 1 compresses several times faster than Go's default (6) for
/// a few percent more bytes; the sandbox's two cores are the scarce resource.
const GZIP_LEVEL: u32 = 1;

pub async fn get_files(
    State(envd): State<Arc<Envd>>,
    direct: Option<Extension<DirectConnection>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, FilesError> {
    let query = FileQuery::parse(&uri)?;
    let caller = authorise(&envd, &headers, &query, Operation::Read)?;
    let raw_path = query.path.as_deref().unwrap_or("");
    let path = resolve(&caller, raw_path)?;

    let stat = match tokio::fs::metadata(&path).await {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FilesError::NotFound(path)),
        Err(e) => {
            return Err(FilesError::Internal(format!(
                "error checking if path exists '{}': {}",
                path.display(),
                go_text(&e)
            )))
        }
    };
    if stat.is_dir() {
        return Err(FilesError::IsDirectory(path));
    }

    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut coding = encoding::negotiate(accept)
        .map_err(|e| FilesError::NotAcceptable(format!("error parsing Accept-Encoding: {e}")))?;
    // Range and conditional requests are answered as Go's ServeContent does, in identity.
    let ranged_or_conditional = [
        header::RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_RANGE,
    ]
    .iter()
    .any(|h| headers.get(h).is_some_and(|v| !v.is_empty()));
    if ranged_or_conditional {
        if !encoding::identity_acceptable(accept) {
            return Err(FilesError::NotAcceptable(
                "identity encoding not acceptable for Range or conditional request".into(),
            ));
        }
        coding = Coding::Identity;
    }

    let open_path = path.clone();
    let (file, sniffed) = tokio::task::spawn_blocking(move || open_and_sniff(&open_path))
        .await
        .map_err(|e| FilesError::Internal(format!("error opening file: {e}")))?
        .map_err(|e| {
            FilesError::Internal(format!(
                "error opening file '{}': {}",
                path.display(),
                go_text(&e)
            ))
        })?;

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut res = match coding {
        Coding::Gzip => {
            let mut res = Response::new(gzip_body(file));
            let h = res.headers_mut();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    type_by_extension(raw_path).unwrap_or("application/octet-stream"),
                ),
            );
            res
        }
        Coding::Identity => {
            let content_type = type_by_extension(raw_path).unwrap_or(sniffed);
            serve_content(
                &method,
                &headers,
                file,
                &stat,
                content_type,
                direct.is_some(),
            )
        }
    };
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// Opens the file and guesses its type from its first bytes (Go sniffs when the extension says
/// nothing).
fn open_and_sniff(path: &Path) -> io::Result<(File, &'static str)> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file).take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, sniff(&head)))
}

/// Go's `http.ServeContent` without ETags: `Last-Modified`, `If-Unmodified-Since` (412),
/// `If-Modified-Since` / `If-None-Match: *` (304), `If-Range` by date, and one byte range (206 or
/// 416). Several ranges get the whole file (allowed by RFC 9110; Go sends multipart/byteranges).
fn serve_content(
    method: &Method,
    headers: &HeaderMap,
    file: File,
    stat: &std::fs::Metadata,
    content_type: &'static str,
    direct: bool,
) -> Response {
    let size = stat.len();
    let modified = stat
        .modified()
        .ok()
        .filter(|t| t.duration_since(UNIX_EPOCH).is_ok_and(|d| d.as_secs() > 0));
    let mut res = Response::new(Body::empty());
    if let Some(modified) = modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            res.headers_mut().insert(header::LAST_MODIFIED, v);
        }
    }
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let modified_secs = modified.map(unix_secs);

    // Preconditions, in Go's order (checkPreconditions).
    let if_match = header_str(header::IF_MATCH);
    let precondition_failed = match if_match {
        // No ETag: only `*` matches.
        Some(v) => !v.split(',').any(|t| t.trim() == "*"),
        None => match (
            header_str(header::IF_UNMODIFIED_SINCE).and_then(parse_date),
            modified_secs,
        ) {
            (Some(since), Some(m)) => m > since,
            _ => false,
        },
    };
    if precondition_failed {
        *res.status_mut() = StatusCode::PRECONDITION_FAILED;
        return res;
    }
    let not_modified = match header_str(header::IF_NONE_MATCH) {
        Some(v) => get_or_head && v.split(',').any(|t| t.trim() == "*"),
        None => {
            get_or_head
                && matches!(
                    (header_str(header::IF_MODIFIED_SINCE).and_then(parse_date), modified_secs),
                    (Some(since), Some(m)) if m <= since
                )
        }
    };
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }
    let mut range = header_str(header::RANGE).filter(|_| get_or_head);
    if let Some(if_range) = header_str(header::IF_RANGE) {
        // An ETag never matches (there is none); a date must equal the modification time.
        let same = match (parse_date(if_range), modified_secs) {
            (Some(date), Some(m)) => date == m,
            _ => false,
        };
        if !same {
            range = None;
        }
    }

    let (status, start, len) = match range.map(|r| parse_range(r, size)) {
        None | Some(Ok(Ranges::Whole)) => (StatusCode::OK, 0, size),
        Some(Ok(Ranges::One { start, len })) => {
            let v = format!("bytes {}-{}/{size}", start, start + len - 1);
            if let Ok(v) = HeaderValue::from_str(&v) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        Some(Err(e)) => return range_not_satisfiable(e, size),
    };
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method != Method::HEAD {
        if direct {
            res.extensions_mut().insert(SendFile::new(file, start, len));
        } else {
            *res.body_mut() = file_body(file, start, len);
        }
    }
    res
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_date(v: &str) -> Option<u64> {
    httpdate::parse_http_date(v.trim()).ok().map(unix_secs)
}

fn range_not_satisfiable(err: RangeError, size: u64) -> Response {
    let mut res = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", err.message()),
    )
        .into_response();
    if err == RangeError::NoOverlap {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// What a `Range` header asks for, within a file of known size.
#[derive(Debug, PartialEq, Eq)]
enum Ranges {
    Whole,
    One { start: u64, len: u64 },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum RangeError {
    Invalid,
    NoOverlap,
}

impl RangeError {
    fn message(self) -> &'static str {
        match self {
            RangeError::Invalid => "invalid range",
            RangeError::NoOverlap => "invalid range: failed to overlap",
        }
    }
}

/// Go's `parseRange`, then `ServeContent`'s choice: one satisfiable range is served, several
/// (or ranges adding up to more than the file) mean the whole file.
fn parse_range(header: &str, size: u64) -> Result<Ranges, RangeError> {
    let Some(spec) = header.strip_prefix("bytes=") else {
        return Err(RangeError::Invalid);
    };
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for part in spec.split(',') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        let Some((start, end)) = part.split_once('-') else {
            return Err(RangeError::Invalid);
        };
        let (start, end) = (
            start.trim_matches([' ', '\t']),
            end.trim_matches([' ', '\t']),
        );
        let digits = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RangeError::Invalid);
            }
            s.parse().map_err(|_| RangeError::Invalid)
        };
        if start.is_empty() {
            // A suffix: the last `end` bytes.
            let n = digits(end)?;
            let n = n.min(size);
            if n == 0 {
                // Go: "bytes=-0" selects nothing.
                no_overlap = true;
                continue;
            }
            ranges.push((size - n, n));
        } else {
            let first = digits(start)?;
            if first >= size {
                no_overlap = true;
                continue;
            }
            let last = if end.is_empty() {
                size - 1
            } else {
                let last = digits(end)?;
                if first > last {
                    return Err(RangeError::Invalid);
                }
                last.min(size - 1)
            };
            ranges.push((first, last - first + 1));
        }
    }
    if no_overlap && ranges.is_empty() {
        return Err(RangeError::NoOverlap);
    }
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    match ranges.as_slice() {
        [(start, len)] if total <= size => Ok(Ranges::One {
            start: *start,
            len: *len,
        }),
        _ => Ok(Ranges::Whole),
    }
}

/// `len` bytes of `file` from `start`, read on a blocking thread into a few reused buffers.
///
/// Each chunk leaves as `Bytes` that owns its buffer and hands it back to the reader when the
/// response has written it, so a download of any size holds at most `POOL_BUFFERS` buffers and
/// allocates nothing after its first chunks (fresh allocations each chunk cost page faults).
/// The reader waits for a returned buffer when all are in flight, which is also what slows it
/// down to a slow client's pace.
fn file_body(mut file: File, start: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(POOL_BUFFERS);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut unallocated = POOL_BUFFERS;
        let mut left = len;
        while left > 0 {
            let mut buf = if unallocated > 0 {
                unallocated -= 1;
                // A small download gets a buffer of its own size.
                vec![0; left.min(READ_CHUNK as u64) as usize]
            } else {
                match returned.recv() {
                    Ok(buf) => buf,
                    Err(_) => return,
                }
            };
            let want = left.min(buf.len() as u64) as usize;
            let n = loop {
                match file.read(&mut buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match n {
                Ok(0) => {
                    // The file shrank: end the body short, so the client sees a broken transfer
                    // rather than a wrong length.
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    )));
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    let chunk = Bytes::from_owner(PooledChunk {
                        buf,
                        len: n,
                        give_back: give_back.clone(),
                    });
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    channel_body(rx)
}

/// The first `len` bytes of a pooled buffer, which goes back to its reader once sent.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    give_back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        // The reader may be gone (download finished or failed): then the buffer is freed here.
        let _ = self.give_back.send(std::mem::take(&mut self.buf));
    }
}

/// The whole file, gzip-compressed as it is read.
fn gzip_body(mut file: File) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::new(GZIP_LEVEL));
        let mut buf = vec![0u8; CHUNK];
        let result = loop {
            match file.read(&mut buf) {
                Ok(0) => break gz.try_finish().and_then(|()| gz.get_mut().flush()),
                Ok(n) => {
                    if let Err(e) = gz.write_all(&buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "error writing gzip response");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    channel_body(rx)
}

/// Compressed output, gathered into chunks and handed to the response body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

fn channel_body(rx: mpsc::Receiver<io::Result<Bytes>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// `inline; filename=…` as Go's `mime.FormatMediaType` writes it: a bare token, a quoted string,
/// or RFC 2231 `filename*=utf-8''…` for non-ASCII names.
pub fn content_disposition(name: &str) -> String {
    let tspecial = |c: u8| b"()<>@,;:\\\"/[]?=".contains(&c);
    let needs_encoding = name.chars().any(|c| !(' '..='~').contains(&c) && c != '\t');
    if needs_encoding {
        let mut out = String::from("inline; filename*=utf-8''");
        for &b in name.as_bytes() {
            if b <= b' ' || b >= 0x7f || b == b'*' || b == b'\'' || b == b'%' || tspecial(b) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(b as char);
            }
        }
        return out;
    }
    let token = !name.is_empty() && name.bytes().all(|b| b > b' ' && b < 0x7f && !tspecial(b));
    if token {
        return format!("inline; filename={name}");
    }
    let mut out = String::from("inline; filename=\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The type of a file from its extension (Go's built-in table plus the common text types).
fn type_by_extension(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "avif" => "image/avif",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "gif" => "image/gif",
        "gz" => "application/gzip",
        "htm" | "html" => "text/html; charset=utf-8",
        "jpeg" | "jpg" => "image/jpeg",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "md" => "text/markdown; charset=utf-8",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "tar" => "application/x-tar",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "webp" => "image/webp",
        "xml" => "text/xml; charset=utf-8",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// A small `http.DetectContentType`: a few signatures, then text unless a binary byte shows up.
fn sniff(head: &[u8]) -> &'static str {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
        (b"PK\x03\x04", "application/zip"),
        (b"\0asm", "application/wasm"),
    ];
    for (magic, kind) in SIGNATURES {
        if head.starts_with(magic) {
            return kind;
        }
    }
    let binary = head
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f));
    if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_go() {
        let one = |start, len| Ok(Ranges::One { start, len });
        assert_eq!(parse_range("bytes=0-4", 10), one(0, 5));
        assert_eq!(parse_range("bytes=5-", 10), one(5, 5));
        assert_eq!(parse_range("bytes=-3", 10), one(7, 3));
        assert_eq!(parse_range("bytes=-30", 10), one(0, 10));
        assert_eq!(parse_range("bytes=8-100", 10), one(8, 2));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ok(Ranges::Whole));
        assert_eq!(parse_range("bytes=10-", 10), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=0-", 0), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=5-1", 10), Err(RangeError::Invalid));
        assert_eq!(parse_range("items=0-1", 10), Err(RangeError::Invalid));
        assert_eq!(parse_range("bytes=x-1", 10), Err(RangeError::Invalid));
        assert_eq!(parse_range("bytes=-", 10), Err(RangeError::Invalid));
    }

    #[test]
    fn content_disposition_like_go() {
        assert_eq!(content_disposition("a.txt"), "inline; filename=a.txt");
        assert_eq!(
            content_disposition("my file.txt"),
            "inline; filename=\"my file.txt\""
        );
        assert_eq!(
            content_disposition("a\"b.txt"),
            "inline; filename=\"a\\\"b.txt\""
        );
        assert_eq!(
            content_disposition("é.txt"),
            "inline; filename*=utf-8''%C3%A9.txt"
        );
    }

    #[test]
    fn types_by_extension_then_content() {
        assert_eq!(type_by_extension("/x/a.JSON"), Some("application/json"));
        assert_eq!(type_by_extension("/x.d/noext"), None);
        assert_eq!(sniff(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01"), "application/octet-stream");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), "image/png");
    }
}
