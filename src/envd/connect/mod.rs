//! The Connect RPC protocol (connectrpc.com/docs/protocol) on axum, JSON codec: what envd's
//! services speak on port 49983 (envd-api.md §3).
//!
//! # Why hand-written
//!
//! The spec's lead was the `connectrpc` 0.9.1 crate (with `buffa` messages generated from .proto
//! files by `connectrpc-build`). A time-boxed spike rejected it on evidence:
//! - its JSON decoding calls `serde_json::from_slice` on `buffa` types without setting `buffa`'s
//!   thread-local `ignore_unknown_enum_values`, so an enum name from a newer SDK fails the call
//!   with `invalid_argument`; envd-api.md §3.4 requires tolerating them;
//! - `connectrpc-build` shells out to `protoc` (or `buf`), which a fresh machine lacks;
//! - it adds about 30 crates to the tree, with a C build (`zstd-sys`) under default features;
//! - the envd specifics (keepalive events, a deadline that ends streams, `StreamInput`'s one
//!   message before end-stream, `Start`'s deadline bounding a process) need our own code anyway.
//!
//! Both official SDKs use only the JSON codec (`connect+json`), so this module implements exactly
//! that in a few hundred lines, with messages as plain serde structs (see [`json`] for the
//! mapping rules). No protobuf crate is involved. Cost: the binary codec (`application/proto`,
//! `connect+proto`), gRPC and gRPC-Web are not served (they answer 415); a third-party client
//! needing them would bring in prost behind this same API.
//!
//! # How to add a service
//!
//! One file of messages under `envd::rpc`, one module with handlers, and routes:
//!
//! ```ignore
//! use crate::envd::connect::{self, Call};
//! Router::new()
//!     .route("/pkg.Service/Get", connect::unary(get))           // Req -> Res
//!     .route("/pkg.Service/Watch", connect::server_stream(watch)) // Req -> stream of Res
//!     .route("/pkg.Service/Feed", connect::client_stream(feed))   // stream of Req -> Res
//!     .with_state(state)
//!
//! async fn get(state: S, call: Call, req: GetRequest) -> Result<GetResponse, EnvdError>;
//! async fn watch(state: S, call: Call, req: WatchRequest)
//!     -> Result<impl Stream<Item = Result<WatchResponse, EnvdError>> + Send + 'static, EnvdError>;
//! async fn feed(state: S, call: Call, reqs: Messages<FeedRequest>) -> Result<FeedResponse, EnvdError>;
//! ```
//!
//! - [`Call`] carries the headers: the user ([`Call::username`], `Authorization: Basic`), the
//!   deadline ([`Call::timeout`], `Connect-Timeout-Ms`) and the keepalive interval.
//! - Deadlines: a unary or client-stream call that outlives `Connect-Timeout-Ms` is answered
//!   `deadline_exceeded` (its handler future is dropped); a server stream ends with a
//!   `deadline_exceeded` end-stream. A handler that must do more at the deadline (kill a process)
//!   reads [`Call::timeout`] itself.
//! - Server-stream responses implement [`Keepalive`]: the message sent after
//!   `Keepalive-Ping-Interval` seconds (default 90) without any other message.
//! - Errors: `Err(EnvdError)` becomes a unary error (status from [`Code`]) or the end-stream
//!   error (HTTP 200). Bad content types answer 415; bad JSON or envelopes `invalid_argument`.
//! - The response stream is dropped when the client goes away: tie resources (watchers,
//!   subscriptions) to its `Drop`.

pub mod envelope;
pub mod json;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envd::{Code, EnvdError};
use envelope::{Decoder, FLAG_END_STREAM};

/// Content type of unary JSON calls.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of streaming JSON calls.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";
/// Largest request message accepted (connect-go has no default limit; this one only stops a bad
/// length prefix or body from exhausting memory).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;
/// Keepalive interval when the client sends no `Keepalive-Ping-Interval` (envd's default).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

const TIMEOUT_HEADER: &str = "connect-timeout-ms";
const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";

/// What a handler knows about its call besides the request message.
#[derive(Debug, Clone)]
pub struct Call {
    headers: HeaderMap,
    timeout: Option<Duration>,
    keepalive: Duration,
}

impl Call {
    /// Reads the protocol headers. A malformed `Connect-Timeout-Ms` is `invalid_argument`, as in
    /// connect-go; a malformed or zero keepalive interval means the default.
    pub fn from_headers(headers: HeaderMap) -> Result<Call, EnvdError> {
        let timeout = match headers.get(TIMEOUT_HEADER) {
            None => None,
            Some(v) => {
                let text = v.to_str().unwrap_or_default();
                // Connect allows at most 10 digits.
                let ms = (!text.is_empty() && text.len() <= 10)
                    .then(|| text.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| {
                        EnvdError::invalid_argument(format!(
                            "protocol error: invalid Connect-Timeout-Ms {text:?}"
                        ))
                    })?;
                Some(Duration::from_millis(ms))
            }
        };
        let keepalive = headers
            .get(KEEPALIVE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_KEEPALIVE, Duration::from_secs);
        Ok(Call {
            headers,
            timeout,
            keepalive,
        })
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The call's deadline from its start (`Connect-Timeout-Ms`), if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Interval between keepalive messages on a server stream.
    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }

    /// The user named by `Authorization: Basic base64("<user>:")` (how the SDKs pick the Linux
    /// user), or `None` without the header. A header that is not valid Basic credentials is
    /// `unauthenticated`, as envd's authn middleware answers.
    pub fn username(&self) -> Result<Option<String>, EnvdError> {
        let Some(value) = self.headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let bad = || EnvdError::unauthenticated("invalid authorization header");
        let text = value.to_str().map_err(|_| bad())?;
        let (scheme, credentials) = text.trim().split_once(' ').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let user = decoded.split_once(':').map_or(&*decoded, |(user, _)| user);
        Ok((!user.is_empty()).then(|| user.to_string()))
    }
}

/// A server-stream response message that has a keepalive form (`{"keepalive":{}}` and the like).
pub trait Keepalive {
    fn keepalive() -> Self;
}

/// The request messages of a client stream, decoded as they arrive. Ends when the client closes
/// its side; yields an error (and then ends) on a bad envelope or message.
pub type Messages<Req> = Pin<Box<dyn Stream<Item = Result<Req, EnvdError>> + Send>>;

/// A unary call: `POST` with `application/json`, answered with the response message or an error
/// status and `{"code","message"}`.
pub fn unary<S, Req, Res, F, Fut>(handler: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
    F: Fn(S, Call, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            if let Err(response) = check_content_type(&headers, CONTENT_TYPE_JSON) {
                return response;
            }
            let call = match Call::from_headers(headers) {
                Ok(call) => call,
                Err(e) => return e.into_response(),
            };
            let timeout = call.timeout();
            let work = async move {
                let bytes = read_body(body).await?;
                let request = decode::<Req>(&bytes)?;
                let response = handler(state, call, request).await?;
                encode(&response)
            };
            match with_deadline(timeout, work).await {
                Ok(bytes) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, CONTENT_TYPE_JSON)],
                    bytes,
                )
                    .into_response(),
                Err(e) => e.into_response(),
            }
        },
    )
}

/// A server-streaming call: one request envelope in; data envelopes, keepalives and the
/// end-stream envelope out (HTTP 200 even for errors).
pub fn server_stream<S, Req, Res, F, Fut, St>(handler: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Keepalive + Send + 'static,
    F: Fn(S, Call, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<St, EnvdError>> + Send + 'static,
    St: Stream<Item = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            if let Err(response) = check_content_type(&headers, CONTENT_TYPE_STREAM_JSON) {
                return response;
            }
            let call = match Call::from_headers(headers) {
                Ok(call) => call,
                Err(e) => return stream_response(Body::from(end_stream(Some(&e)))),
            };
            let deadline = call.timeout().map(|t| tokio::time::Instant::now() + t);
            let keepalive = call.keepalive();
            let start = async move {
                let bytes = read_body(body).await?;
                let request = single_message::<Req>(&bytes)?;
                handler(state, call, request).await
            };
            let started = match deadline {
                Some(at) => tokio::time::timeout_at(at, start)
                    .await
                    .unwrap_or_else(|_| Err(deadline_exceeded())),
                None => start.await,
            };
            match started {
                Ok(messages) => stream_response(Body::from_stream(pump(
                    Box::pin(messages),
                    keepalive,
                    deadline,
                ))),
                Err(e) => stream_response(Body::from(end_stream(Some(&e)))),
            }
        },
    )
}

/// A client-streaming call: request envelopes in as [`Messages`]; out, exactly one data envelope
/// with the response and then the end-stream envelope (the Python SDK insists on the message),
/// or only an end-stream error.
pub fn client_stream<S, Req, Res, F, Fut>(handler: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
    F: Fn(S, Call, Messages<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            if let Err(response) = check_content_type(&headers, CONTENT_TYPE_STREAM_JSON) {
                return response;
            }
            let call = match Call::from_headers(headers) {
                Ok(call) => call,
                Err(e) => return stream_response(Body::from(end_stream(Some(&e)))),
            };
            let timeout = call.timeout();
            let messages = request_messages::<Req>(body);
            let work = async move { encode(&handler(state, call, messages).await?) };
            let out = match with_deadline(timeout, work).await {
                Ok(message) => {
                    let mut out = envelope::encode(0, &message).to_vec();
                    out.extend_from_slice(&end_stream(None));
                    out
                }
                Err(e) => end_stream(Some(&e)).to_vec(),
            };
            stream_response(Body::from(out))
        },
    )
}

/// Decodes a client stream's body into messages, envelope by envelope.
pub fn request_messages<Req: DeserializeOwned + Send + 'static>(body: Body) -> Messages<Req> {
    struct St {
        body: axum::body::BodyDataStream,
        decoder: Decoder,
        done: bool,
    }
    let state = St {
        body: body.into_data_stream(),
        decoder: Decoder::new(MAX_MESSAGE_BYTES),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.decoder.next_envelope() {
                Ok(Some(env)) if env.is_end_stream() => {
                    st.done = true;
                    let e = EnvdError::invalid_argument(
                        "protocol error: end-stream envelope in a request",
                    );
                    return Some((Err(e), st));
                }
                Ok(Some(env)) => {
                    let message = decode::<Req>(&env.data);
                    st.done = message.is_err();
                    return Some((message, st));
                }
                Ok(None) => {}
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.decoder.push(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    let e = EnvdError::new(Code::Canceled, format!("reading the request: {e}"));
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    return st.decoder.finish().err().map(|e| (Err(e), st));
                }
            }
        }
    }))
}

/// The response body of a server stream: messages, keepalives when idle, and the end-stream
/// envelope at the end, on the first error or at the deadline.
fn pump<Res, St>(
    messages: Pin<Box<St>>,
    keepalive: Duration,
    deadline: Option<tokio::time::Instant>,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send
where
    Res: Serialize + Keepalive + Send + 'static,
    St: Stream<Item = Result<Res, EnvdError>> + Send + 'static,
{
    struct Pump<St> {
        messages: Pin<Box<St>>,
        keepalive: Duration,
        idle: Pin<Box<tokio::time::Sleep>>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        done: bool,
    }
    let state = Pump {
        messages,
        keepalive,
        idle: Box::pin(tokio::time::sleep(keepalive)),
        deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let deadline = async {
            match st.deadline.as_mut() {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            biased;
            next = st.messages.next() => match next {
                Some(Ok(message)) => match encode(&message) {
                    Ok(json) => Ok(envelope::encode(0, &json)),
                    Err(e) => Err(Some(e)),
                },
                Some(Err(e)) => Err(Some(e)),
                None => Err(None),
            },
            () = deadline => Err(Some(deadline_exceeded())),
            () = st.idle.as_mut() => encode(&Res::keepalive())
                .map(|json| envelope::encode(0, &json))
                .map_err(Some),
        };
        let bytes = match frame {
            Ok(bytes) => {
                let next = tokio::time::Instant::now() + st.keepalive;
                st.idle.as_mut().reset(next);
                bytes
            }
            Err(error) => {
                st.done = true;
                end_stream(error.as_ref())
            }
        };
        Some((Ok(bytes), st))
    })
}

/// The end-stream envelope: `{}` or `{"error":{"code","message"}}`.
pub fn end_stream(error: Option<&EnvdError>) -> Bytes {
    let json = match error {
        None => b"{}".to_vec(),
        Some(e) => {
            // A deadline or an unavailable peer is the client's business; these are ours.
            if matches!(e.code, Code::Internal | Code::Unknown | Code::DataLoss) {
                tracing::warn!(code = e.code.as_str(), error = %e.message, "envd stream failed");
            }
            serde_json::json!({ "error": e.to_json() })
                .to_string()
                .into_bytes()
        }
    };
    envelope::encode(FLAG_END_STREAM, &json)
}

fn deadline_exceeded() -> EnvdError {
    EnvdError::new(Code::DeadlineExceeded, "the operation timed out")
}

async fn with_deadline<T>(
    timeout: Option<Duration>,
    work: impl Future<Output = Result<T, EnvdError>>,
) -> Result<T, EnvdError> {
    match timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
        None => work.await,
    }
}

fn stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_STREAM_JSON),
    );
    response
}

/// Refuses a codec other than `expected` (415, as connect-go: the binary codec, gRPC, gRPC-Web).
#[allow(clippy::result_large_err)]
fn check_content_type(headers: &HeaderMap, expected: &str) -> Result<(), Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err((
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        [("accept-post", expected)],
        format!("unsupported content type {content_type:?}; this server speaks {expected}"),
    )
        .into_response())
}

async fn read_body(body: Body) -> Result<Bytes, EnvdError> {
    axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|e| EnvdError::invalid_argument(format!("reading the request: {e}")))
}

/// Decodes one JSON message; an empty body is the empty message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EnvdError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| EnvdError::invalid_argument(format!("unmarshal message: {e}")))
}

fn encode<T: Serialize>(message: &T) -> Result<Bytes, EnvdError> {
    serde_json::to_vec(message)
        .map(Bytes::from)
        .map_err(|e| EnvdError::internal(format!("marshal message: {e}")))
}

/// The one message of a server-stream request body.
fn single_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EnvdError> {
    let mut decoder = Decoder::new(MAX_MESSAGE_BYTES);
    decoder.push(bytes);
    let first = decoder.next_envelope()?.ok_or_else(|| {
        EnvdError::invalid_argument("protocol error: the request has no complete message")
    })?;
    if first.is_end_stream() || decoder.next_envelope()?.is_some() {
        return Err(EnvdError::invalid_argument(
            "protocol error: a server-stream request takes exactly one message",
        ));
    }
    decoder.finish()?;
    decode(&first.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use serde::Deserialize;
    use tower::ServiceExt;

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Num {
        #[serde(
            deserialize_with = "json::int64",
            serialize_with = "json::int64_string"
        )]
        value: i64,
        #[serde(skip_serializing_if = "json::is_default")]
        keepalive: bool,
    }

    impl Keepalive for Num {
        fn keepalive() -> Num {
            Num {
                value: 0,
                keepalive: true,
            }
        }
    }

    async fn double(_: (), _: Call, n: Num) -> Result<Num, EnvdError> {
        if n.value < 0 {
            return Err(EnvdError::not_found("negative"));
        }
        Ok(Num {
            value: n.value * 2,
            keepalive: false,
        })
    }

    async fn sleep_then(_: (), _: Call, n: Num) -> Result<Num, EnvdError> {
        tokio::time::sleep(Duration::from_millis(n.value as u64)).await;
        Ok(n)
    }

    /// `value` messages 0..n, one every 1.5 s when `slow`.
    async fn count(
        _: (),
        _: Call,
        n: Num,
    ) -> Result<impl Stream<Item = Result<Num, EnvdError>>, EnvdError> {
        if n.value < 0 {
            return Err(EnvdError::invalid_argument("negative"));
        }
        Ok(futures_util::stream::iter(0..n.value).then(|i| async move {
            if i == 2 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            if i == 3 {
                return Err(EnvdError::internal("three"));
            }
            Ok(Num {
                value: i,
                keepalive: false,
            })
        }))
    }

    async fn sum(_: (), _: Call, mut messages: Messages<Num>) -> Result<Num, EnvdError> {
        let mut total = 0;
        while let Some(n) = messages.next().await {
            total += n?.value;
        }
        Ok(Num {
            value: total,
            keepalive: false,
        })
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route("/t.T/Double", unary(double))
            .route("/t.T/Sleep", unary(sleep_then))
            .route("/t.T/Count", server_stream(count))
            .route("/t.T/Sum", client_stream(sum))
            .with_state(())
    }

    async fn call(
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut req = Request::post(path).header("content-type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, bytes.to_vec())
    }

    /// Splits a response body into (flags, json) envelopes.
    fn envelopes(mut body: &[u8]) -> Vec<(u8, serde_json::Value)> {
        let mut out = Vec::new();
        while !body.is_empty() {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            let json = serde_json::from_slice(&body[5..5 + len]).expect("json");
            out.push((body[0], json));
            body = &body[5 + len..];
        }
        out
    }

    fn env(json: &str) -> Vec<u8> {
        envelope::encode(0, json.as_bytes()).to_vec()
    }

    #[tokio::test]
    async fn unary_calls_and_their_errors() {
        let ok = call(
            "/t.T/Double",
            "application/json",
            &[],
            br#"{"value":"21","x":1}"#.to_vec(),
        )
        .await;
        assert_eq!(ok, (200, br#"{"value":"42"}"#.to_vec()));
        let (status, body) = call(
            "/t.T/Double",
            "application/json",
            &[],
            br#"{"value":-1}"#.to_vec(),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
            serde_json::json!({"code": "not_found", "message": "negative"})
        );
        let (status, body) = call("/t.T/Double", "application/json", &[], b"{nope".to_vec()).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("invalid_argument"));
        let (status, _) = call("/t.T/Double", "application/proto", &[], vec![]).await;
        assert_eq!(status, 415);
        let slow = call(
            "/t.T/Sleep",
            "application/json",
            &[("connect-timeout-ms", "50")],
            br#"{"value":5000}"#.to_vec(),
        )
        .await;
        assert_eq!(slow.0, 504);
        assert!(String::from_utf8_lossy(&slow.1).contains("deadline_exceeded"));
        let bad = call(
            "/t.T/Sleep",
            "application/json",
            &[("connect-timeout-ms", "soon")],
            vec![],
        )
        .await;
        assert_eq!(bad.0, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn server_streams_with_keepalives_errors_and_deadlines() {
        let ct = "application/connect+json";
        let ka = [("keepalive-ping-interval", "1")];
        let (status, body) = call("/t.T/Count", ct, &ka, env(r#"{"value":3}"#)).await;
        assert_eq!(status, 200);
        let got = envelopes(&body);
        assert_eq!(
            got,
            vec![
                (0, serde_json::json!({"value": "0"})),
                (0, serde_json::json!({"value": "1"})),
                (0, serde_json::json!({"value": "0", "keepalive": true})),
                (0, serde_json::json!({"value": "2"})),
                (2, serde_json::json!({})),
            ]
        );
        // An error mid-stream and an error before the first message both end the stream.
        let got = envelopes(&call("/t.T/Count", ct, &[], env(r#"{"value":5}"#)).await.1);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[3],
            (
                2,
                serde_json::json!({"error": {"code": "internal", "message": "three"}})
            )
        );
        let (status, body) = call("/t.T/Count", ct, &[], env(r#"{"value":-1}"#)).await;
        assert_eq!(status, 200);
        assert_eq!(envelopes(&body)[0].1["error"]["code"], "invalid_argument");
        // The deadline ends the stream.
        let got = envelopes(
            &call(
                "/t.T/Count",
                ct,
                &[("connect-timeout-ms", "1000")],
                env(r#"{"value":3}"#),
            )
            .await
            .1,
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].1["error"]["code"], "deadline_exceeded");
        // Bad envelopes: none, two, truncated.
        for body in [
            vec![],
            [env("{}"), env("{}")].concat(),
            env("{}")[..4].to_vec(),
        ] {
            let got = envelopes(&call("/t.T/Count", ct, &[], body).await.1);
            assert_eq!(got[0].1["error"]["code"], "invalid_argument", "{got:?}");
        }
        assert_eq!(
            call("/t.T/Count", "application/json", &[], vec![]).await.0,
            415
        );
    }

    #[tokio::test]
    async fn client_streams_answer_one_message_then_end_stream() {
        let ct = "application/connect+json";
        let body = [env(r#"{"value":1}"#), env(r#"{"value":"2"}"#), env("{}")].concat();
        let (status, out) = call("/t.T/Sum", ct, &[], body).await;
        assert_eq!(status, 200);
        assert_eq!(
            envelopes(&out),
            vec![
                (0, serde_json::json!({"value": "3"})),
                (2, serde_json::json!({}))
            ]
        );
        let (_, out) = call("/t.T/Sum", ct, &[], vec![]).await;
        assert_eq!(envelopes(&out)[0], (0, serde_json::json!({"value": "0"})));
        let bad = [env(r#"{"value":1}"#), env("{oops")].concat();
        let got = envelopes(&call("/t.T/Sum", ct, &[], bad).await.1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 2);
        assert_eq!(got[0].1["error"]["code"], "invalid_argument");
        let truncated = env(r#"{"value":1}"#)[..7].to_vec();
        let got = envelopes(&call("/t.T/Sum", ct, &[], truncated).await.1);
        assert_eq!(got[0].1["error"]["code"], "invalid_argument");
    }

    #[test]
    fn basic_auth_names_the_user() {
        let call = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            Call::from_headers(headers).expect("call").username()
        };
        assert_eq!(call(None).expect("none"), None);
        assert_eq!(
            call(Some("Basic cm9vdDo=")).expect("root"),
            Some("root".into())
        );
        assert_eq!(
            call(Some("basic dXNlcg==")).expect("no colon"),
            Some("user".into())
        );
        assert_eq!(call(Some("Basic Og==")).expect("empty"), None);
        assert_eq!(
            call(Some("Bearer x")).unwrap_err().code,
            Code::Unauthenticated
        );
        assert_eq!(
            call(Some("Basic !!")).unwrap_err().code,
            Code::Unauthenticated
        );
    }
}
