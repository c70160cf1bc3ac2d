//! The sandbox API's TCP connections: identity `/files` transfers served by the agent itself,
//! everything else by hyper.
//!
//! Before hyper takes a connection, its next request's head is *peeked* (nothing is consumed).
//! If it is a plain HTTP/1.1 `GET /files`, or a `POST /files` whose body is an identity
//! `application/octet-stream` of known length, the agent reads the head, runs the request
//! through the same router as any other (auth, paths, errors: the policy is not duplicated),
//! with the socket in place of a body ([`super::direct`]), and writes the answer itself. Then it
//! looks at the next request the same way. Anything else (chunked or encoded bodies, multipart,
//! `Expect`, upgrades, HTTP/2, a head that arrives in pieces) goes to
//! hyper, which serves the rest of the connection as before.
//!
//! Framing is here ([`Head`], [`write_response`]); the zero-copy transport is in
//! [`super::direct`]; the policy stays in the handlers.

use std::future::Future;
use std::os::fd::AsFd;
use std::time::Duration;

use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::direct::{DirectConnection, SendFile, SocketBody};

/// The largest head served directly (a bigger one goes to hyper).
const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a head served directly.
const MAX_HEADERS: usize = 64;
/// How long a head that arrived in part may take to complete before hyper gets it.
const HEAD_PATIENCE: Duration = Duration::from_millis(20);
/// What is read of an unread body before an error reply and a close, and for how long (as the
/// handlers do for hyper's bodies, and Go's server: a client still sending would otherwise see a
/// reset instead of the reply).
const DRAIN_BYTES: u64 = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets requests in flight
/// finish, and closes idle connections. Requests go through `app` whichever way they are
/// served, so its routing (`E2b-Sandbox-Port` included) and policy apply to both. The listener
/// is the caller's (its accept policy: `TCP_NODELAY`, back-off on errors).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Io = TcpStream>,
{
    let (stop_tx, stop) = watch::channel(false);
    // Every connection holds a sender; the server waits for all of them to drop.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, _) = listener.accept() => {
                let conn = Connection { stream, app: app.clone(), stop: stop.clone() };
                tokio::spawn(conn.run(alive.clone()));
            }
            () = &mut shutdown => break,
        }
    }
    let _ = stop_tx.send(true);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

struct Connection {
    stream: TcpStream,
    app: Router,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, _alive: mpsc::Sender<()>) {
        loop {
            match self.next_head().await {
                Next::Direct(head) => match self.serve_direct(head).await {
                    Some(kept) => self = kept,
                    None => return,
                },
                Next::Hyper => break,
                Next::Close => return,
            }
        }
        self.hand_to_hyper().await;
    }

    /// Peeks at the next request: direct, hyper's, or none (closed, or shutting down while
    /// idle).
    async fn next_head(&mut self) -> Next {
        let mut buf = vec![0u8; MAX_HEAD];
        let started = tokio::time::Instant::now();
        loop {
            let peeked = tokio::select! {
                peeked = self.stream.peek(&mut buf) => peeked,
                () = stopped(&mut self.stop) => return Next::Close,
            };
            let n = match peeked {
                Ok(0) | Err(_) => return Next::Close,
                Ok(n) => n,
            };
            match Head::parse(&buf[..n]) {
                Parsed::Direct(head) => return Next::Direct(head),
                Parsed::Partial if n < MAX_HEAD && started.elapsed() < HEAD_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => return Next::Hyper,
            }
        }
    }

    /// One request, answered; the connection back if it may carry another.
    ///
    /// While the body or the file moves, the socket is taken out of tokio's poller (`into_std`,
    /// then `from_std`): the kernel would otherwise wake the runtime's thread for every segment
    /// that arrives or is acknowledged, for nothing, which cost more than the copy it saves
    /// (those wake-ups are inter-processor interrupts, dear in a VM).
    async fn serve_direct(mut self, head: Head) -> Option<Connection> {
        let mut consumed = vec![0u8; head.len];
        self.stream.read_exact(&mut consumed).await.ok()?;
        let Connection { stream, app, stop } = self;
        let quiet = stream.into_std().ok()?;
        let close = head.close;
        let (request, body) = head.into_request(&quiet)?;
        let Ok(response) = app.clone().oneshot(request).await;
        let unread = body.as_ref().map_or(0, SocketBody::unread);
        let keep_alive = !close && unread == 0;
        let (parts, body) = response.into_parts();
        let answered = match parts.extensions.get::<SendFile>().cloned() {
            Some(file) => send_file(quiet, parts, file, keep_alive).await,
            None => answer(quiet, parts, body, unread, keep_alive).await,
        };
        match answered {
            Ok(stream) if keep_alive => Some(Connection { stream, app, stop }),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "direct /files answer not delivered");
                None
            }
        }
    }

    /// The rest of the connection, as `axum::serve` would serve it.
    async fn hand_to_hyper(self) {
        let app = self.app;
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move { app.oneshot(req.map(Body::new)).await }
        });
        let builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let conn = builder
            .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(self.stream), service);
        tokio::pin!(conn);
        let mut stop = self.stop;
        tokio::select! {
            _ = conn.as_mut() => {}
            () = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// A [`SendFile`] answer: head and file from a blocking thread, the socket still out of the
/// poller; then back in it.
async fn send_file(
    quiet: std::net::TcpStream,
    parts: Parts,
    file: SendFile,
    keep_alive: bool,
) -> std::io::Result<TcpStream> {
    let head = response_head(parts, Framing::Length(file.len), keep_alive);
    let socket = quiet.as_fd().try_clone_to_owned()?;
    tokio::task::spawn_blocking(move || file.send_to(&socket, &head))
        .await
        .map_err(std::io::Error::other)??;
    TcpStream::from_std(quiet)
}

/// Any other answer, written from the runtime once the socket is back in the poller (after
/// draining what the handler left of the body).
async fn answer(
    quiet: std::net::TcpStream,
    parts: Parts,
    body: Body,
    unread: u64,
    keep_alive: bool,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::from_std(quiet)?;
    if unread > 0 {
        drain(&mut stream, unread).await;
    }
    write_response(&mut stream, parts, body, keep_alive).await?;
    Ok(stream)
}

/// Resolves once the server stops (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Reads and drops up to [`DRAIN_BYTES`] of a body the handler did not take.
async fn drain(stream: &mut TcpStream, unread: u64) {
    let mut left = unread.min(DRAIN_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while left > 0 {
            let want = (left as usize).min(buf.len());
            match stream.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n as u64,
            }
        }
    })
    .await;
}

enum Next {
    Direct(Head),
    Hyper,
    Close,
}

enum Parsed {
    Direct(Head),
    /// The head has not fully arrived.
    Partial,
    /// Anything the agent does not serve itself.
    Other,
}

/// A request head the agent serves itself.
#[derive(Debug)]
struct Head {
    method: Method,
    target: String,
    headers: HeaderMap,
    /// Bytes of the head, up to and including its blank line.
    len: usize,
    body_len: u64,
    /// The client asked to close after this request.
    close: bool,
}

impl Head {
    fn parse(buf: &[u8]) -> Parsed {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Other,
        };
        let method = match req.method {
            Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            _ => return Parsed::Other,
        };
        let target = req.path.unwrap_or("");
        let files = target == "/files" || target.starts_with("/files?");
        if req.version != Some(1) || !files {
            return Parsed::Other;
        }
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) else {
                return Parsed::Other;
            };
            headers.append(name, value);
        }
        match Head::body_len(&method, &headers) {
            Some(body_len) => Parsed::Direct(Head {
                close: has_token(&headers, header::CONNECTION, "close"),
                method,
                target: target.to_string(),
                headers,
                len,
                body_len,
            }),
            None => Parsed::Other,
        }
    }

    /// The request for the router: the socket stands in for the body (a POST's, as
    /// [`SocketBody`]), and [`DirectConnection`] says a [`SendFile`] answer may be given.
    fn into_request(
        self,
        socket: &std::net::TcpStream,
    ) -> Option<(Request<Body>, Option<SocketBody>)> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = self.target.parse().ok()?;
        *request.headers_mut() = self.headers;
        request.extensions_mut().insert(DirectConnection);
        let body = match self.method {
            Method::POST => Some(SocketBody::new(socket.as_fd(), self.body_len).ok()?),
            _ => None,
        };
        *request.method_mut() = self.method;
        if let Some(body) = &body {
            request.extensions_mut().insert(body.clone());
        }
        Some((request, body))
    }

    /// The body's length if this request is one to serve directly.
    fn body_len(method: &Method, headers: &HeaderMap) -> Option<u64> {
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let hyper_only = [header::TRANSFER_ENCODING, header::EXPECT, header::UPGRADE]
            .into_iter()
            .any(|h| headers.contains_key(h))
            || has_token(headers, header::CONNECTION, "upgrade");
        if hyper_only || headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            return None;
        }
        let length = match text(header::CONTENT_LENGTH) {
            Some(v) => Some(v.trim().parse::<u64>().ok()?),
            None => None,
        };
        match *method {
            Method::GET => (length.unwrap_or(0) == 0).then_some(0),
            Method::POST => {
                let media = text(header::CONTENT_TYPE)?.split(';').next()?.trim();
                let identity = text(header::CONTENT_ENCODING).is_none_or(|c| {
                    c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity")
                });
                (media.eq_ignore_ascii_case("application/octet-stream") && identity)
                    .then_some(length?)
            }
            _ => None,
        }
    }
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// How a response's body is delimited.
enum Framing {
    /// No body (1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    fn of(status: StatusCode, body: &Body) -> Framing {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::None;
        }
        match axum::body::HttpBody::size_hint(body).exact() {
            Some(len) => Framing::Length(len),
            None => Framing::Chunked,
        }
    }
}

/// The status line and headers (with `Date`, the framing, and `Connection: close` when the
/// connection ends after this response).
fn response_head(parts: Parts, framing: Framing, keep_alive: bool) -> Vec<u8> {
    let mut headers = parts.headers;
    if !headers.contains_key(header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(v) = HeaderValue::from_str(&now) {
            headers.insert(header::DATE, v);
        }
    }
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        Framing::Chunked => {
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
    let status = parts.status;
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes a response whose body the handler made (JSON, an error, a gzip stream).
async fn write_response(
    stream: &mut TcpStream,
    parts: Parts,
    body: Body,
    keep_alive: bool,
) -> std::io::Result<()> {
    let framing = Framing::of(parts.status, &body);
    let chunked = matches!(framing, Framing::Chunked);
    let bodiless = matches!(framing, Framing::None);
    let head = response_head(parts, framing, keep_alive);
    if bodiless {
        return stream.write_all(&head).await;
    }
    write_body(stream, head, body, chunked).await
}

/// A body after its head: small ones in the same write as the head.
async fn write_body(
    stream: &mut TcpStream,
    mut pending: Vec<u8>,
    body: Body,
    chunked: bool,
) -> std::io::Result<()> {
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let data: Bytes = frame.map_err(std::io::Error::other)?;
        if data.is_empty() {
            continue;
        }
        if chunked {
            pending.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if pending.len() + data.len() <= MAX_HEAD {
            pending.extend_from_slice(&data);
        } else {
            stream.write_all(&pending).await?;
            pending.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            pending.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        pending.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&pending).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Option<Head> {
        match Head::parse(head.as_bytes()) {
            Parsed::Direct(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn identity_octet_stream_uploads_and_plain_downloads_are_direct() {
        let up = parsed("POST /files?path=a HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello")
            .expect("direct upload");
        assert_eq!((up.body_len, up.close), (5, false));
        assert_eq!(up.len, up.len.min(200));
        let down = parsed("GET /files?path=a HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("direct download");
        assert!(down.close);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "POST /files?path=a HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 5\r\n\r\n",
            "POST /files?path=a HTTP/1.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /files?path=a HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
            "POST /files?path=a HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            "POST /files?path=a HTTP/1.1\r\nContent-Type: application/octet-stream\r\n\r\n",
            "POST /files?path=a HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "GET /files?path=a HTTP/1.0\r\n\r\n",
            "GET /filesystem HTTP/1.1\r\n\r\n",
            "GET /files?path=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "PUT /files?path=a HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(parsed(head).is_none(), "{head}");
        }
        assert!(matches!(
            Head::parse(b"GET /files?path=a HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
    }
}
