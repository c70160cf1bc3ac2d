//! The Connect RPC protocol (connectrpc.com/docs/protocol) on axum, with the JSON and the binary
//! protobuf codecs: what envd's services speak on port 49983 (envd-api.md §3).
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
//! Both official SDKs use only the JSON codec (`connect+json`); other Connect clients default to
//! the binary one. So each message is one plain Rust type with two codecs: serde for JSON (see
//! [`json`] for the mapping rules) and a hand-written [`proto::Message`] impl for the binary
//! format (see [`proto`]). No protobuf crate is involved. gRPC and gRPC-Web are not served
//! (they answer 415).
//!
//! # Codecs
//!
//! The request's content type picks the [`Codec`] (`application/json` or `application/proto`
//! for unary calls, `application/connect+json` or `application/connect+proto` for streams) and
//! the response uses the same one. Handlers never see it. Whatever the codec, unary errors are
//! JSON bodies and the end-stream envelope is JSON, as the protocol prescribes.
//!
//! # How to add a service
//!
//! One file of messages under `envd::rpc` (each a serde type that also implements
//! [`proto::Message`]), one module with handlers, and routes:
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
//!   error (HTTP 200). Bad content types answer 415; bad messages or envelopes
//!   `invalid_argument`.
//! - The response stream is dropped when the client goes away: tie resources (watchers,
//!   subscriptions) to its `Drop`.

pub mod envelope;
pub mod json;
pub mod proto;

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
use proto::Message;

/// Content type of unary JSON calls.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of streaming JSON calls.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";
/// Content type of unary binary protobuf calls.
pub const CONTENT_TYPE_PROTO: &str = "application/proto";
/// Content type of streaming binary protobuf calls.
pub const CONTENT_TYPE_STREAM_PROTO: &str = "application/connect+proto";
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

/// How messages are written: chosen by the request's content type, and the response uses the same
/// one. Only message bodies differ: envelopes, unary errors and the end-stream envelope are JSON
/// under both codecs, as the Connect protocol prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// The codec a unary content type names (`application/json`, `application/proto`).
    fn unary(content_type: &str) -> Option<Codec> {
        match content_type {
            t if t.eq_ignore_ascii_case(CONTENT_TYPE_JSON) => Some(Codec::Json),
            t if t.eq_ignore_ascii_case(CONTENT_TYPE_PROTO) => Some(Codec::Proto),
            _ => None,
        }
    }

    /// The codec a streaming content type names (`application/connect+json`, `…+proto`).
    fn stream(content_type: &str) -> Option<Codec> {
        match content_type {
            t if t.eq_ignore_ascii_case(CONTENT_TYPE_STREAM_JSON) => Some(Codec::Json),
            t if t.eq_ignore_ascii_case(CONTENT_TYPE_STREAM_PROTO) => Some(Codec::Proto),
            _ => None,
        }
    }

    fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Json => CONTENT_TYPE_JSON,
            Codec::Proto => CONTENT_TYPE_PROTO,
        }
    }

    fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Json => CONTENT_TYPE_STREAM_JSON,
            Codec::Proto => CONTENT_TYPE_STREAM_PROTO,
        }
    }

    /// Decodes one message; an empty body is the empty message under both codecs.
    pub fn decode<T: DeserializeOwned + Message>(self, bytes: &[u8]) -> Result<T, EnvdError> {
        match self {
            Codec::Json => decode(bytes),
            Codec::Proto => Ok(T::decode(bytes)?),
        }
    }

    pub fn encode<T: Serialize + Message>(self, message: &T) -> Result<Bytes, EnvdError> {
        match self {
            Codec::Json => encode(message),
            Codec::Proto => Ok(Bytes::from(message.to_bytes())),
        }
    }
}

/// The request messages of a client stream, decoded as they arrive. Ends when the client closes
/// its side; yields an error (and then ends) on a bad envelope or message.
pub type Messages<Req> = Pin<Box<dyn Stream<Item = Result<Req, EnvdError>> + Send>>;

/// A unary call: `POST` with `application/json` or `application/proto`, answered with the
/// response message in the same codec, or an error status and a JSON `{"code","message"}`.
pub fn unary<S, Req, Res, F, Fut>(handler: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Message + Send + 'static,
    Res: Serialize + Message + Send + 'static,
    F: Fn(S, Call, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            let codec = match codec_of(&headers, Codec::unary, UNARY_TYPES) {
                Ok(codec) => codec,
                Err(response) => return response,
            };
            let call = match Call::from_headers(headers) {
                Ok(call) => call,
                Err(e) => return e.into_response(),
            };
            let timeout = call.timeout();
            let work = async move {
                let bytes = read_body(body).await?;
                let request = codec.decode::<Req>(&bytes)?;
                let response = handler(state, call, request).await?;
                codec.encode(&response)
            };
            match with_deadline(timeout, work).await {
                Ok(bytes) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, codec.unary_content_type())],
                    bytes,
                )
                    .into_response(),
                // Unary errors are JSON under every codec (the Connect protocol says so).
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
    Req: DeserializeOwned + Message + Send + 'static,
    Res: Serialize + Message + Keepalive + Send + 'static,
    F: Fn(S, Call, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<St, EnvdError>> + Send + 'static,
    St: Stream<Item = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            let (codec, call) = match stream_call(headers) {
                Ok(opened) => opened,
                Err(response) => return response,
            };
            let deadline = call.timeout().map(|t| tokio::time::Instant::now() + t);
            let keepalive = call.keepalive();
            let start = async move {
                let bytes = read_body(body).await?;
                let request = single_message::<Req>(codec, &bytes)?;
                handler(state, call, request).await
            };
            let started = match deadline {
                Some(at) => tokio::time::timeout_at(at, start)
                    .await
                    .unwrap_or_else(|_| Err(deadline_exceeded())),
                None => start.await,
            };
            match started {
                Ok(messages) => stream_response(
                    codec,
                    Body::from_stream(pump(codec, Box::pin(messages), keepalive, deadline)),
                ),
                Err(e) => stream_response(codec, Body::from(end_stream(Some(&e)))),
            }
        },
    )
}

/// The codec and call of a streaming request, or the response that refuses it: a bad content
/// type as HTTP, a bad header as an end-stream error.
/// (A `Response` error, like [`codec_of`]: it is returned at once, never carried around.)
#[allow(clippy::result_large_err)]
fn stream_call(headers: HeaderMap) -> Result<(Codec, Call), Response> {
    let codec = codec_of(&headers, Codec::stream, STREAM_TYPES)?;
    Call::from_headers(headers)
        .map(|call| (codec, call))
        .map_err(|e| stream_response(codec, Body::from(end_stream(Some(&e)))))
}

/// A client-streaming call: request envelopes in as [`Messages`]; out, exactly one data envelope
/// with the response and then the end-stream envelope (the Python SDK insists on the message),
/// or only an end-stream error.
pub fn client_stream<S, Req, Res, F, Fut>(handler: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Message + Send + 'static,
    Res: Serialize + Message + Send + 'static,
    F: Fn(S, Call, Messages<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, EnvdError>> + Send + 'static,
{
    post(
        move |State(state): State<S>, headers: HeaderMap, body: Body| async move {
            let (codec, call) = match stream_call(headers) {
                Ok(opened) => opened,
                Err(response) => return response,
            };
            let timeout = call.timeout();
            let messages = request_messages::<Req>(codec, body);
            let work = async move { codec.encode(&handler(state, call, messages).await?) };
            let out = match with_deadline(timeout, work).await {
                Ok(message) => {
                    let mut out = envelope::encode(0, &message).to_vec();
                    out.extend_from_slice(&end_stream(None));
                    out
                }
                Err(e) => end_stream(Some(&e)).to_vec(),
            };
            stream_response(codec, Body::from(out))
        },
    )
}

/// Decodes a client stream's body into messages, envelope by envelope.
pub fn request_messages<Req>(codec: Codec, body: Body) -> Messages<Req>
where
    Req: DeserializeOwned + Message + Send + 'static,
{
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
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut st| async move {
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
                        let message = codec.decode::<Req>(&env.data);
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
        },
    ))
}

/// The response body of a server stream: messages, keepalives when idle, and the end-stream
/// envelope at the end, on the first error or at the deadline.
fn pump<Res, St>(
    codec: Codec,
    messages: Pin<Box<St>>,
    keepalive: Duration,
    deadline: Option<tokio::time::Instant>,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send
where
    Res: Serialize + Message + Keepalive + Send + 'static,
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
    futures_util::stream::unfold(state, move |mut st| async move {
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
                Some(Ok(message)) => match codec.encode(&message) {
                    Ok(data) => Ok(envelope::encode(0, &data)),
                    Err(e) => Err(Some(e)),
                },
                Some(Err(e)) => Err(Some(e)),
                None => Err(None),
            },
            () = deadline => Err(Some(deadline_exceeded())),
            () = st.idle.as_mut() => codec.encode(&Res::keepalive())
                .map(|data| envelope::encode(0, &data))
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

fn stream_response(codec: Codec, body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    );
    response
}

/// What a unary call's `Accept-Post` lists on a 415.
const UNARY_TYPES: &str = "application/json, application/proto";
/// What a streaming call's `Accept-Post` lists on a 415.
const STREAM_TYPES: &str = "application/connect+json, application/connect+proto";

/// The codec of the request's content type (`parse` is [`Codec::unary`] or [`Codec::stream`]);
/// anything else is 415, as connect-go answers for gRPC, gRPC-Web or a unary type on a stream.
#[allow(clippy::result_large_err)]
fn codec_of(
    headers: &HeaderMap,
    parse: fn(&str) -> Option<Codec>,
    accepted: &'static str,
) -> Result<Codec, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    parse(essence).ok_or_else(|| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [("accept-post", accepted)],
            format!("unsupported content type {content_type:?}; this server speaks {accepted}"),
        )
            .into_response()
    })
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
fn single_message<T: DeserializeOwned + Message>(
    codec: Codec,
    bytes: &[u8],
) -> Result<T, EnvdError> {
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
    codec.decode(&first.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use serde::Deserialize;
    use tower::ServiceExt;

    #[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
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

    /// `value` = 1 (int64), `keepalive` = 2 (bool).
    impl Message for Num {
        fn encode(&self, w: &mut proto::Writer) {
            w.int64(1, self.value);
            w.bool(2, self.keepalive);
        }

        fn decode(buf: &[u8]) -> Result<Num, proto::DecodeError> {
            let mut m = Num::default();
            for field in proto::fields(buf) {
                match field? {
                    (1, v) => m.value = v.int64()?,
                    (2, v) => m.keepalive = v.bool()?,
                    _ => {}
                }
            }
            Ok(m)
        }
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
        let (status, _) = call("/t.T/Double", "application/grpc", &[], vec![]).await;
        assert_eq!(status, 415);
        let (status, _) = call("/t.T/Double", CONTENT_TYPE_STREAM_PROTO, &[], vec![]).await;
        assert_eq!(status, 415, "a streaming type on a unary method");
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

    fn num(value: i64) -> Num {
        Num {
            value,
            keepalive: false,
        }
    }

    fn proto_env(n: &Num) -> Vec<u8> {
        envelope::encode(0, &n.to_bytes()).to_vec()
    }

    /// Splits a `connect+proto` body into data messages and the JSON end-stream message.
    fn proto_envelopes(mut body: &[u8]) -> (Vec<Num>, serde_json::Value) {
        let mut messages = Vec::new();
        loop {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            let (flags, data) = (body[0], &body[5..5 + len]);
            body = &body[5 + len..];
            if flags == FLAG_END_STREAM {
                assert!(body.is_empty());
                return (messages, serde_json::from_slice(data).expect("json"));
            }
            messages.push(Num::decode(data).expect("proto"));
        }
    }

    #[tokio::test]
    async fn proto_calls_answer_in_proto_with_json_errors() {
        let (status, body) = call("/t.T/Double", CONTENT_TYPE_PROTO, &[], vec![0x08, 21]).await;
        assert_eq!((status, body), (200, vec![0x08, 42]));
        // An empty body is the empty message; the answer is empty too.
        assert_eq!(
            call("/t.T/Double", "application/proto; x=y", &[], vec![]).await,
            (200, vec![])
        );
        // Errors stay JSON; so does a body that is not protobuf.
        let mut minus_one = vec![0x08];
        minus_one.extend([0xff; 9]);
        minus_one.push(0x01);
        let (status, body) = call("/t.T/Double", CONTENT_TYPE_PROTO, &[], minus_one).await;
        assert_eq!(status, 404);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
            serde_json::json!({"code": "not_found", "message": "negative"})
        );
        let (status, body) = call("/t.T/Double", CONTENT_TYPE_PROTO, &[], vec![0x0a]).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("invalid_argument"));
    }

    #[tokio::test(start_paused = true)]
    async fn proto_streams_use_binary_data_and_json_end_stream() {
        let ct = CONTENT_TYPE_STREAM_PROTO;
        let ka = [("keepalive-ping-interval", "1")];
        let (status, body) = call("/t.T/Count", ct, &ka, proto_env(&num(3))).await;
        assert_eq!(status, 200);
        let keepalive = Num {
            value: 0,
            keepalive: true,
        };
        assert_eq!(
            proto_envelopes(&body),
            (
                vec![num(0), num(1), keepalive, num(2)],
                serde_json::json!({})
            )
        );
        let (messages, end) =
            proto_envelopes(&call("/t.T/Count", ct, &[], proto_env(&num(5))).await.1);
        assert_eq!(messages.len(), 3);
        assert_eq!(end["error"]["code"], "internal");

        let body = [proto_env(&num(1)), proto_env(&num(2))].concat();
        let (status, out) = call("/t.T/Sum", ct, &[], body).await;
        assert_eq!(status, 200);
        assert_eq!(proto_envelopes(&out), (vec![num(3)], serde_json::json!({})));
        let bad = [proto_env(&num(1)), envelope::encode(0, &[0x08]).to_vec()].concat();
        let (messages, end) = proto_envelopes(&call("/t.T/Sum", ct, &[], bad).await.1);
        assert!(messages.is_empty());
        assert_eq!(end["error"]["code"], "invalid_argument");
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
