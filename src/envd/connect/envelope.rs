//! Connect's streaming framing: every message is an envelope `[flags: u8][length: u32 BE][data]`.
//! Data envelopes have flags `0x00`; the server's last envelope is the end-stream one (`0x02`)
//! whose data is `{}` or `{"error": …}`. Bit `0x01` marks a compressed message, which kernelbox
//! never negotiates (both SDKs send `identity`), so it is refused.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::envd::EnvdError;

/// Flag of a compressed message.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-stream envelope.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Size of the envelope header.
pub const HEADER_LEN: usize = 5;

/// One envelope: its flags and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub data: Bytes,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

/// Frames `data` in an envelope with `flags`.
pub fn encode(flags: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + data.len());
    out.put_u8(flags);
    // A message over 4 GiB cannot be framed; the messages kernelbox sends are far smaller, and
    // the limit below keeps requests smaller too.
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
    out.freeze()
}

/// Splits a byte stream that arrives in arbitrary chunks into envelopes.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message: usize,
}

impl Decoder {
    /// A decoder that refuses messages larger than `max_message` bytes (`resource_exhausted`,
    /// as connect-go's read limit), so a bad length prefix cannot make it buffer without bound.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max_message,
        }
    }

    /// Adds bytes from the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete envelope, if one is buffered.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvdError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_message {
            return Err(EnvdError::new(
                crate::envd::Code::ResourceExhausted,
                format!(
                    "message size {len} is larger than configured max {}",
                    self.max_message
                ),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(EnvdError::new(
                crate::envd::Code::Internal,
                "protocol error: compressed message without a negotiated encoding",
            ));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Call at the end of the body: an error if a partial envelope is left over.
    pub fn finish(&self) -> Result<(), EnvdError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(EnvdError::invalid_argument(format!(
                "protocol error: incomplete envelope: {} trailing bytes",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envd::Code;

    #[test]
    fn envelopes_round_trip_across_arbitrary_chunks() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(0, br#"{"a":1}"#));
        wire.extend_from_slice(&encode(0, b""));
        wire.extend_from_slice(&encode(FLAG_END_STREAM, b"{}"));
        // Feed one byte at a time: every split point must work.
        let mut decoder = Decoder::new(1024);
        let mut got = Vec::new();
        for byte in &wire {
            decoder.push(&[*byte]);
            while let Some(envelope) = decoder.next_envelope().expect("valid") {
                got.push(envelope);
            }
        }
        decoder.finish().expect("nothing left over");
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0].data[..], br#"{"a":1}"#);
        assert!(got[1].data.is_empty() && !got[1].is_end_stream());
        assert!(got[2].is_end_stream());
    }

    #[test]
    fn bad_envelopes_are_errors() {
        let mut d = Decoder::new(4);
        d.push(&encode(0, b"12345"));
        assert_eq!(d.next_envelope().unwrap_err().code, Code::ResourceExhausted);

        let mut d = Decoder::new(1024);
        d.push(&encode(FLAG_COMPRESSED, b"x"));
        assert_eq!(d.next_envelope().unwrap_err().code, Code::Internal);

        let mut d = Decoder::new(1024);
        d.push(&[0, 0, 0, 0, 9, b'{']);
        assert_eq!(
            d.next_envelope().expect("incomplete is not an error yet"),
            None
        );
        assert_eq!(d.finish().unwrap_err().code, Code::InvalidArgument);
    }
}
