//! `POST /files`: uploads as envd takes them (`internal/api/upload.go`), written all or nothing
//! (see [`super::staged`]).
//!
//! - `application/octet-stream`: the body is the file at `?path=` (required), optionally
//!   `Content-Encoding: gzip`;
//! - `multipart/form-data`: every part named `file` is a file, at `?path=` if given, else at its
//!   `filename` (a full path; the SDKs' `write_files`). Other parts are skipped. Parts are written
//!   one after the other as they arrive; two parts for one target are refused (400), after the
//!   earlier ones were written, as in envd.
//!
//! `X-Metadata-*` headers apply to every file. The reply lists what was written:
//! `[{"path","name","type":"file","metadata"?}]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::direct::SocketBody;
use super::encoding::{self, Coding};
use super::error::FilesError;
use super::metadata::{self, Metadata};
use super::signature::Operation;
use super::staged::{self, Destination, Encoding, Upload, Written};
use super::{authorise, resolve, FileQuery};
use crate::envd::{Caller, Envd};

/// One written file in the reply (envd's `EntryInfo` as the upload returns it).
#[derive(Debug, Serialize)]
pub struct WrittenEntry {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// What every file of one request shares.
struct Request {
    caller: Caller,
    metadata: Arc<Metadata>,
    content_length: Option<u64>,
}

impl Request {
    /// Where one file goes; `exact_size` when the body is that file, byte for byte.
    fn destination(&self, path: PathBuf, exact_size: Option<u64>) -> Destination {
        Destination {
            path,
            uid: self.caller.user.uid,
            gid: self.caller.user.gid,
            metadata: self.metadata.clone(),
            content_length: self.content_length,
            exact_size,
        }
    }

    fn entry(&self, path: &Path, written: &Written) -> WrittenEntry {
        WrittenEntry {
            path: path.to_string_lossy().into_owned(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: "file",
            metadata: (written.metadata_stored && !self.metadata.is_empty())
                .then(|| (*self.metadata).clone()),
        }
    }
}

pub async fn post_files(
    State(envd): State<Arc<Envd>>,
    socket: Option<Extension<SocketBody>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Json<Vec<WrittenEntry>>, FilesError> {
    let plan = match Plan::of(&envd, &headers, &uri) {
        Ok(plan) => plan,
        Err(e) => {
            drain(body.into_data_stream()).await;
            return Err(e);
        }
    };
    let entries = match plan.kind {
        Kind::Raw { path, encoding } => {
            let exact_size = match encoding {
                Encoding::Identity => plan.request.content_length,
                Encoding::Gzip => None,
            };
            let dest = plan.request.destination(path.clone(), exact_size);
            let written = match (socket, encoding) {
                (Some(Extension(socket)), Encoding::Identity) => {
                    staged::from_socket(dest, socket).await?
                }
                (Some(_), Encoding::Gzip) => return Err(not_direct()),
                (None, _) => pump(body.into_data_stream(), Upload::start(dest, encoding)).await?,
            };
            vec![plan.request.entry(&path, &written)]
        }
        Kind::Multipart { .. } if socket.is_some() => return Err(not_direct()),
        Kind::Multipart { content_type } => {
            multipart(&plan.request, &plan.query, &content_type, body).await?
        }
    };
    Ok(Json(entries))
}

/// A body left in the socket for a request the connection should have given to hyper: never
/// written as an empty file.
fn not_direct() -> FilesError {
    FilesError::Internal("an encoded or multipart body was not read by the HTTP server".into())
}

/// The most of an unread body taken in before an error reply, as Go's server does (256 KB), and
/// for at most [`DRAIN_TIME`]: a client still sending its body when the reply comes and the
/// connection closes sees a broken pipe instead of the reply (the JS SDK then reports `EPIPE`
/// where it should report `AuthenticationError`).
const DRAIN_BYTES: usize = 256 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

async fn drain<E>(mut stream: impl Stream<Item = Result<Bytes, E>> + Unpin) {
    let mut taken = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while taken < DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(data)) => taken += data.len(),
                _ => break,
            }
        }
    })
    .await;
}

/// An upload checked before its body is read.
struct Plan {
    query: FileQuery,
    request: Request,
    kind: Kind,
}

enum Kind {
    Raw { path: PathBuf, encoding: Encoding },
    Multipart { content_type: String },
}

impl Plan {
    fn of(envd: &Envd, headers: &HeaderMap, uri: &Uri) -> Result<Plan, FilesError> {
        let query = FileQuery::parse(uri)?;
        let caller = authorise(envd, headers, &query, Operation::Write)?;
        let coding = encoding::content_encoding(
            headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        )
        .map_err(|e| FilesError::BadRequest(format!("error decompressing request body: {e}")))?;
        let metadata = metadata::from_headers(headers)
            .map_err(|e| FilesError::BadRequest(format!("invalid metadata: {e}")))?;
        let request = Request {
            caller,
            metadata: Arc::new(metadata),
            content_length: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let kind = Self::kind(&request, &query, content_type, coding)?;
        Ok(Plan {
            query,
            request,
            kind,
        })
    }

    fn kind(
        request: &Request,
        query: &FileQuery,
        content_type: &str,
        coding: Coding,
    ) -> Result<Kind, FilesError> {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media_type == "application/octet-stream" {
            let raw = query.path.as_deref().ok_or_else(|| {
                FilesError::BadRequest(
                    "path query parameter is required for raw body upload".into(),
                )
            })?;
            let encoding = match coding {
                Coding::Identity => Encoding::Identity,
                Coding::Gzip => Encoding::Gzip,
            };
            let path = resolve(&request.caller, raw)?;
            Ok(Kind::Raw { path, encoding })
        } else if media_type.starts_with("multipart/") {
            if coding == Coding::Gzip {
                // The SDKs compress only octet-stream bodies.
                return Err(FilesError::BadRequest(
                    "error decompressing request body: gzip is supported for application/octet-stream uploads only"
                        .into(),
                ));
            }
            Ok(Kind::Multipart {
                content_type: content_type.to_string(),
            })
        } else {
            Err(FilesError::BadRequest(format!(
                "unsupported content type: {content_type}, expected multipart/form-data or application/octet-stream"
            )))
        }
    }
}

/// Feeds a body to an upload; a body that fails (the client went away) aborts it.
async fn pump<E: std::fmt::Display>(
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    mut upload: Upload,
) -> Result<Written, FilesError> {
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(data) => {
                if !upload.send(data).await {
                    // The writer stopped: finishing returns its error.
                    return upload.finish().await;
                }
            }
            Err(e) => return Err(upload.abort(FilesError::ClientGone(e.to_string())).await),
        }
    }
    upload.finish().await
}

async fn multipart(
    request: &Request,
    query: &FileQuery,
    content_type: &str,
    body: Body,
) -> Result<Vec<WrittenEntry>, FilesError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| FilesError::BadRequest(format!("error parsing multipart form: {e}")))?;
    let shared = SharedBody(Arc::new(std::sync::Mutex::new(body.into_data_stream())));
    let mut form = multer::Multipart::new(shared.clone(), boundary);
    let mut entries: Vec<WrittenEntry> = Vec::new();
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(form_error(e)),
        };
        if field.name() != Some("file") {
            continue;
        }
        let raw = match (&query.path, field.file_name()) {
            (Some(path), _) => path.clone(),
            (None, Some(name)) => name.to_string(),
            (None, None) => {
                return Err(FilesError::BadRequest(
                    "error getting multipart custom part file name: filename not found in Content-Disposition header"
                        .into(),
                ))
            }
        };
        let path = resolve(&request.caller, &raw)?;
        let shown = path.to_string_lossy();
        if entries.iter().any(|e| e.path == shown) {
            return Err(FilesError::BadRequest(conflict_message(&shown, &entries)));
        }
        let mut upload = Upload::start(request.destination(path.clone(), None), Encoding::Identity);
        let written = loop {
            match field.chunk().await {
                Ok(Some(data)) => {
                    if !upload.send(data).await {
                        break upload.finish().await?;
                    }
                }
                Ok(None) => break upload.finish().await?,
                Err(e) => return Err(upload.abort(form_error(e)).await),
            }
        };
        entries.push(request.entry(&path, &written));
    }
    drop(form);
    drain(shared).await;
    Ok(entries)
}

/// The request body shared by the multipart parser and its handler, so that what follows the
/// closing boundary (a chunked body's last, empty chunk; an epilogue) is read before the reply:
/// hyper closes a connection whose request was not read to its end, and a client still writing
/// that last chunk then gets a broken pipe instead of the reply. Undici (the JS SDK) sends it in
/// a write of its own, so through the gateway about one upload in three failed that way.
#[derive(Clone)]
struct SharedBody(Arc<std::sync::Mutex<axum::body::BodyDataStream>>);

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut stream = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::pin::Pin::new(&mut *stream).poll_next(cx)
    }
}

/// A multipart failure: the body itself failing means the client went away; anything else is a
/// malformed form.
fn form_error(e: multer::Error) -> FilesError {
    match e {
        multer::Error::StreamReadFailed(e) => FilesError::ClientGone(e.to_string()),
        e => FilesError::BadRequest(format!("error reading form: {e}")),
    }
}

/// envd's words for a second part aimed at an already written target.
fn conflict_message(path: &str, written: &[WrittenEntry]) -> String {
    let mut message = format!(
        "you cannot upload multiple files to the same path '{path}' in one upload request, only the first specified file was uploaded"
    );
    let others: Vec<&str> = written
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| *p != path)
        .collect();
    if others.len() > 1 {
        message.push_str(&format!(
            ", also the following files were uploaded: {}",
            others.join(", ")
        ));
    }
    message
}
