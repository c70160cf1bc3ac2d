//! The Jupyter wire format: one message as a list of ZeroMQ frames, and its HMAC signature.
//!
//! Framing is kept apart from sockets (`connection`) and from what a message means (`interpreter`):
//! this module only knows how to turn a [`Message`] into frames and back. Bodies stay
//! `serde_json::Value`, read through lenient accessors, because real kernels leave out fields,
//! send odd dates and invent status values (jupyter-kernels.md §6).

use std::borrow::Cow;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// Separates routing identities from the signed part of a message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// The protocol version kernelbox speaks; every kernel tested accepts it.
pub const PROTOCOL_VERSION: &str = "5.3";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter in a {0}-frame message")]
    NoDelimiter(usize),
    #[error("message has {0} frames after the delimiter, at least 5 are needed")]
    TooFewFrames(usize),
    #[error("invalid signature")]
    BadSignature,
    #[error("unsigned message on a signed connection")]
    MissingSignature,
    #[error("unsupported signature scheme '{0}' (only hmac-sha256 is supported)")]
    Scheme(String),
    #[error("unusable signing key: {0}")]
    Key(String),
    #[error("invalid JSON in the {part}: {source}")]
    Json {
        part: &'static str,
        source: serde_json::Error,
    },
}

/// One Jupyter message. The four dictionaries are kept as JSON values; `buffers` are the raw frames
/// after `content` (unsigned, used only by comms).
///
/// `stream` messages are the exception: their `content` holds only `name`, and the text stays in
/// the received frame, as the JSON literal the kernel wrote, until [`Message::stream_text_json`]
/// borrows it. One print can be tens of megabytes; this way it is parsed once and never copied
/// into a `Value` on its way to the HTTP body.
#[derive(Debug, Clone)]
pub struct Message {
    pub header: Value,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
    /// For a received `stream` message: its content frame and where the `text` literal lies in it.
    pub stream_text: Option<(Bytes, std::ops::Range<usize>)>,
}

impl Message {
    /// A new request in `session`, with a fresh msg_id and the current time.
    pub fn request(session: &str, msg_type: &str, content: Value) -> Message {
        Message {
            header: json!({
                "msg_id": uuid::Uuid::new_v4().to_string(),
                "username": "kernelbox",
                "session": session,
                "msg_type": msg_type,
                "version": PROTOCOL_VERSION,
                "date": now_rfc3339(),
            }),
            parent_header: json!({}),
            metadata: json!({}),
            content,
            buffers: Vec::new(),
            stream_text: None,
        }
    }

    pub fn msg_id(&self) -> &str {
        str_field(&self.header, "msg_id")
    }

    pub fn msg_type(&self) -> &str {
        str_field(&self.header, "msg_type")
    }

    /// The parent's msg_id, or `None` for `{}`, `null` or a missing header.
    pub fn parent_msg_id(&self) -> Option<&str> {
        self.parent_header
            .get("msg_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The header date as sent, if any (ijavascript sends none).
    pub fn date(&self) -> Option<&str> {
        self.header.get("date").and_then(Value::as_str)
    }

    /// The `text` of a `stream` message as a JSON string literal (quotes and escapes included),
    /// borrowed from the received frame.
    pub fn stream_text_json(&self) -> Cow<'_, str> {
        match &self.stream_text {
            Some((frame, range)) => {
                Cow::Borrowed(std::str::from_utf8(&frame[range.clone()]).unwrap_or("\"\""))
            }
            None => Cow::Owned(Value::String(self.content_str("text").to_string()).to_string()),
        }
    }

    /// A string field of `content`, `""` when missing or not a string.
    pub fn content_str(&self, key: &str) -> &str {
        str_field(&self.content, key)
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The only signature scheme kernelbox signs with (and the one every kernel supports).
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// HMAC-SHA256 signing with the connection's key. An empty key means unsigned messages, as the
/// protocol allows; a non-empty key means every message in both directions is signed, and a
/// received message without a valid signature is rejected.
#[derive(Clone)]
pub struct Signer {
    mac: Option<Hmac<Sha256>>,
}

impl Signer {
    /// A signer for `scheme` and `key`. Anything that cannot sign as asked is an error rather than
    /// a silent fall-back to unsigned messages, which would accept forged ones.
    pub fn new(scheme: &str, key: &[u8]) -> Result<Signer, WireError> {
        if key.is_empty() {
            return Ok(Signer { mac: None });
        }
        if scheme != SIGNATURE_SCHEME {
            return Err(WireError::Scheme(scheme.to_string()));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| WireError::Key(e.to_string()))?;
        Ok(Signer { mac: Some(mac) })
    }

    fn mac_over(mac: &Hmac<Sha256>, parts: [&[u8]; 4]) -> Hmac<Sha256> {
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// Lowercase hex signature of the four signed frames (empty when unsigned).
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match &self.mac {
            Some(mac) => hex(&Self::mac_over(mac, parts).finalize().into_bytes()),
            None => String::new(),
        }
    }

    /// Constant-time check of a received signature over the exact received bytes. Without a key
    /// every message passes; with one, a missing or malformed signature fails like a wrong one.
    pub fn verify(&self, signature: &[u8], parts: [&[u8]; 4]) -> Result<(), WireError> {
        let Some(mac) = &self.mac else {
            return Ok(());
        };
        if signature.is_empty() {
            return Err(WireError::MissingSignature);
        }
        let raw = unhex(signature).ok_or(WireError::BadSignature)?;
        Self::mac_over(mac, parts)
            .verify_slice(&raw)
            .map_err(|_| WireError::BadSignature)
    }
}

/// Serialises and signs `msg`, prefixed by routing `identities` (empty for DEALER sockets).
pub fn encode(msg: &Message, signer: &Signer, identities: &[Bytes]) -> Vec<Bytes> {
    let header = to_bytes(&msg.header);
    let parent = to_bytes(&msg.parent_header);
    let metadata = to_bytes(&msg.metadata);
    let content = to_bytes(&msg.content);
    let signature = signer.sign([&header, &parent, &metadata, &content]);
    let mut frames = Vec::with_capacity(identities.len() + 6 + msg.buffers.len());
    frames.extend(identities.iter().cloned());
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signature));
    frames.push(header);
    frames.push(parent);
    frames.push(metadata);
    frames.push(content);
    frames.extend(msg.buffers.iter().cloned());
    frames
}

fn to_bytes(v: &Value) -> Bytes {
    // Serialising a Value cannot fail (all keys are strings).
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Parses and verifies one multipart message. Identities and topic frames before the delimiter are
/// skipped: ipykernel prefixes iopub frames with topics, Deno sends none.
pub fn decode(frames: Vec<Bytes>, signer: &Signer) -> Result<Message, WireError> {
    let n = frames.len();
    let start = frames
        .iter()
        .position(|f| f.as_ref() == DELIMITER)
        .ok_or(WireError::NoDelimiter(n))?;
    let rest = &frames[start + 1..];
    if rest.len() < 5 {
        return Err(WireError::TooFewFrames(rest.len()));
    }
    let parts = [&rest[1][..], &rest[2][..], &rest[3][..], &rest[4][..]];
    signer.verify(&rest[0], parts)?;
    let parse = |part: &'static str, bytes: &Bytes| -> Result<Value, WireError> {
        if bytes.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(bytes).map_err(|source| WireError::Json { part, source })
    };
    let header = parse("header", &rest[1])?;
    let content_frame = &rest[4];
    let mut stream_text = None;
    let content = if header.get("msg_type").and_then(Value::as_str) == Some("stream") {
        // One pass: the name, and where the text literal lies in the frame (see `Message`).
        #[derive(serde::Deserialize)]
        struct Stream<'a> {
            #[serde(default)]
            name: String,
            #[serde(borrow, default)]
            text: Option<&'a serde_json::value::RawValue>,
        }
        let parsed: Stream<'_> =
            serde_json::from_slice(content_frame).map_err(|source| WireError::Json {
                part: "content",
                source,
            })?;
        if let Some(raw) = parsed.text.filter(|t| t.get().starts_with('"')) {
            let start = raw.get().as_ptr() as usize - content_frame.as_ptr() as usize;
            stream_text = Some((content_frame.clone(), start..start + raw.get().len()));
        }
        json!({ "name": parsed.name })
    } else {
        parse("content", content_frame)?
    };
    Ok(Message {
        header,
        parent_header: parse("parent_header", &rest[2])?,
        metadata: parse("metadata", &rest[3])?,
        content,
        buffers: rest[5..].to_vec(),
        stream_text,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Now as RFC 3339 UTC with microseconds and `Z`, the form ipykernel itself sends.
pub fn now_rfc3339() -> String {
    now_utc("Z")
}

/// The current time with microseconds and the given UTC suffix (`Z` or `+00:00`).
fn now_utc(suffix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs() as i64, i64::from(now.subsec_micros()), suffix)
}

fn format_utc(epoch_secs: i64, micros: i64, suffix: &str) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}{suffix}")
}

/// Turns any date a kernel sends into the server's timestamp form,
/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (code-interpreter-api.md §4.2). Kernels send microseconds
/// (ipykernel), milliseconds (Deno), no date at all (ijavascript) or odd offsets (IJava); anything
/// unreadable becomes the current time rather than an error.
pub fn timestamp_from_kernel(date: Option<&str>) -> String {
    date.and_then(parse_utc)
        .unwrap_or_else(|| now_utc("+00:00"))
}

fn parse_utc(date: &str) -> Option<String> {
    let (epoch, micros) = crate::sys::time::parse_rfc3339(date)?;
    Some(format_utc(epoch, micros, "+00:00"))
}

/// Seconds since the epoch → (year, month, day, hour, minute, second), proleptic Gregorian.
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_signed() {
        let signer = Signer::new(SIGNATURE_SCHEME, b"secret").expect("signer");
        let mut msg = Message::request("s", "execute_request", json!({"code": "1+1"}));
        msg.buffers.push(Bytes::from_static(b"raw"));
        let frames = encode(&msg, &signer, &[Bytes::from_static(b"id")]);
        let back = decode(frames.clone(), &signer).expect("decodes");
        assert_eq!(back.msg_type(), "execute_request");
        assert_eq!(back.content["code"], "1+1");
        assert_eq!(back.buffers.len(), 1);
        let stream = Message::request("s", "stream", json!({"name": "stdout", "text": "a\"b"}));
        let back = decode(encode(&stream, &signer, &[]), &signer).expect("decodes");
        assert_eq!(back.content_str("name"), "stdout");
        assert_eq!(back.stream_text_json(), r#""a\"b""#);
        assert!(matches!(
            decode(
                frames,
                &Signer::new(SIGNATURE_SCHEME, b"other").expect("signer")
            ),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn short_messages_are_errors_not_panics() {
        let signer = Signer::new(SIGNATURE_SCHEME, b"k").expect("signer");
        let frames = vec![Bytes::from_static(DELIMITER), Bytes::from_static(b"x")];
        assert!(matches!(
            decode(frames, &signer),
            Err(WireError::TooFewFrames(1))
        ));
        assert!(matches!(
            decode(vec![], &signer),
            Err(WireError::NoDelimiter(0))
        ));
    }

    #[test]
    fn signed_connections_reject_unsigned_messages() {
        let signed = Signer::new(SIGNATURE_SCHEME, b"secret").expect("signer");
        let unsigned = Signer::new(SIGNATURE_SCHEME, b"").expect("signer");
        let msg = Message::request("s", "status", json!({}));
        assert!(matches!(
            decode(encode(&msg, &unsigned, &[]), &signed),
            Err(WireError::MissingSignature)
        ));
        let mut frames = encode(&msg, &signed, &[]);
        frames[1] = Bytes::from_static(b"not hex");
        assert!(matches!(
            decode(frames, &signed),
            Err(WireError::BadSignature)
        ));
        // Without a key, anything goes (the protocol's unsigned mode).
        assert!(decode(encode(&msg, &signed, &[]), &unsigned).is_ok());
        assert!(matches!(
            Signer::new("hmac-md5", b"secret"),
            Err(WireError::Scheme(_))
        ));
    }

    #[test]
    fn lenient_dates() {
        assert_eq!(
            parse_utc("2026-11-27T00:38:41.843099Z").as_deref(),
            Some("2026-11-27T00:38:41.843099+00:00")
        );
        assert_eq!(
            parse_utc("2026-11-27T00:38:41.843Z").as_deref(),
            Some("2026-11-27T00:38:41.843000+00:00")
        );
        assert_eq!(
            parse_utc("2026-11-27T17:21+0100").as_deref(),
            Some("2026-11-27T16:21:00.000000+00:00")
        );
        assert_eq!(
            parse_utc("2026-01-01T00:30:00-01:00").as_deref(),
            Some("2026-01-01T01:30:00.000000+00:00")
        );
        assert_eq!(parse_utc("yesterday"), None);
        assert!(timestamp_from_kernel(None).ends_with("+00:00"));
    }
}
