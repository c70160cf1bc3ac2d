//! The protobuf binary wire format, for Connect's `proto` codec (`application/proto`,
//! `application/connect+proto`).
//!
//! Hand-written rather than generated: envd's two services have about thirty small messages whose
//! Rust types already exist as serde structs (see [`json`](super::json)); implementing
//! [`Message`] on those same types keeps one type per message, so handlers never learn which
//! codec a call used, and needs neither `protoc` nor a code generator.
//!
//! How a message type is written (see `rpc::filesystem` for examples):
//! - `encode` writes each field with a [`Writer`] method. Singular proto3 fields are omitted at
//!   their default (`w.string`, `w.uint32`, …); `optional` fields and oneof members are written
//!   whenever they are set, even at the default (`w.string_always`, `w.message`).
//! - `decode` starts from `Default` and matches on [`fields`]: each known number reads its
//!   value with the typed accessor of [`Value`] (which checks the wire type); unknown numbers
//!   fall through to `_ => {}` and are skipped. A oneof member that arrives clears the others
//!   (the last one wins, as in every protobuf runtime).
//! - enums travel as their number; an unknown number reads as the zero value (`from_number`).
//!
//! A singular message field that occurs twice is replaced, not merged; no envd client splits a
//! message that way.

use std::collections::BTreeMap;

use crate::envd::EnvdError;

/// A protobuf message in the binary format.
pub trait Message: Sized {
    /// Appends the message's fields.
    fn encode(&self, w: &mut Writer);

    /// Reads a message; unknown fields are skipped.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError>;

    /// The message's bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A malformed message: the reason, for the `invalid_argument` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<DecodeError> for EnvdError {
    fn from(e: DecodeError) -> EnvdError {
        EnvdError::invalid_argument(format!("unmarshal message: {e}"))
    }
}

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// The four wire types proto3 uses (3 and 4, groups, are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
    Fixed32 = 5,
}

/// Appends `v` as a base-128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint from the front of `buf`, advancing it. More than 10 bytes, or a truncated
/// varint, is an error.
pub fn get_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for (i, byte) in buf.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(v);
        }
    }
    Err(bad(if buf.len() < 10 {
        "truncated varint"
    } else {
        "varint longer than 10 bytes"
    }))
}

/// `sint32`'s zigzag mapping: small negative numbers stay short.
pub fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// A field's value as it came off the wire; the typed accessors check the wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(v) => Ok(v),
            other => Err(bad(format!("expected a varint, got {other:?}"))),
        }
    }

    pub fn len_delimited(self) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Len(b) => Ok(b),
            other => Err(bad(format!(
                "expected a length-delimited field, got {other:?}"
            ))),
        }
    }

    /// `uint32`: a larger varint is truncated, as protobuf runtimes do.
    pub fn uint32(self) -> Result<u32, DecodeError> {
        Ok(self.varint()? as u32)
    }

    /// `int32` and enums (negative numbers arrive sign-extended to 64 bits).
    pub fn int32(self) -> Result<i32, DecodeError> {
        Ok(self.varint()? as i32)
    }

    pub fn int64(self) -> Result<i64, DecodeError> {
        Ok(self.varint()? as i64)
    }

    pub fn sint32(self) -> Result<i32, DecodeError> {
        Ok(unzigzag32(self.varint()? as u32))
    }

    pub fn bool(self) -> Result<bool, DecodeError> {
        Ok(self.varint()? != 0)
    }

    /// An enum's number, for `from_number` (which maps unknown numbers to the zero value).
    pub fn enum_number(self) -> Result<i64, DecodeError> {
        Ok(i64::from(self.int32()?))
    }

    pub fn string(self) -> Result<String, DecodeError> {
        String::from_utf8(self.len_delimited()?.to_vec())
            .map_err(|_| bad("string field is not valid UTF-8"))
    }

    pub fn bytes(self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.len_delimited()?.to_vec())
    }

    pub fn message<M: Message>(self) -> Result<M, DecodeError> {
        M::decode(self.len_delimited()?)
    }

    /// An empty message (a oneof's `keepalive: {}`): any fields in it are unknown ones.
    pub fn empty(self) -> Result<(), DecodeError> {
        fields(self.len_delimited()?).try_for_each(|f| f.map(drop))
    }
}

/// The fields of an encoded message, in wire order, as `(number, value)`.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

/// Iterator of [`fields`]; stops after the first error.
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let key = get_varint(&mut self.buf)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=536_870_911).contains(n))
            .ok_or_else(|| bad(format!("invalid field number {}", key >> 3)))?;
        let value = match key & 7 {
            0 => Value::Varint(get_varint(&mut self.buf)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?
                    .try_into()
                    .map_err(|_| bad("truncated fixed64"))?,
            )),
            2 => {
                let len = usize::try_from(get_varint(&mut self.buf)?)
                    .map_err(|_| bad("length out of range"))?;
                Value::Len(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?
                    .try_into()
                    .map_err(|_| bad("truncated fixed32"))?,
            )),
            other => return Err(bad(format!("unsupported wire type {other}"))),
        };
        Ok((number, value))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(bad("truncated message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.read();
        if item.is_err() {
            self.buf = &[];
        }
        Some(item)
    }
}

/// Builds an encoded message. Methods without `_always` skip proto3 defaults.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn key(&mut self, number: u32, wire: WireType) {
        put_varint(&mut self.buf, (u64::from(number) << 3) | wire as u64);
    }

    fn varint_always(&mut self, number: u32, v: u64) {
        self.key(number, WireType::Varint);
        put_varint(&mut self.buf, v);
    }

    fn varint(&mut self, number: u32, v: u64) {
        if v != 0 {
            self.varint_always(number, v);
        }
    }

    pub fn uint32(&mut self, number: u32, v: u32) {
        self.varint(number, v.into());
    }

    pub fn uint32_always(&mut self, number: u32, v: u32) {
        self.varint_always(number, v.into());
    }

    /// `int32` and enum numbers: negative ones are sign-extended to ten bytes.
    pub fn int32(&mut self, number: u32, v: i32) {
        self.varint(number, i64::from(v) as u64);
    }

    pub fn int64(&mut self, number: u32, v: i64) {
        self.varint(number, v as u64);
    }

    pub fn sint32(&mut self, number: u32, v: i32) {
        self.varint(number, zigzag32(v).into());
    }

    pub fn bool(&mut self, number: u32, v: bool) {
        self.varint(number, v.into());
    }

    pub fn bool_always(&mut self, number: u32, v: bool) {
        self.varint_always(number, v.into());
    }

    pub fn bytes_always(&mut self, number: u32, v: &[u8]) {
        self.key(number, WireType::Len);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub fn string(&mut self, number: u32, v: &str) {
        if !v.is_empty() {
            self.bytes_always(number, v.as_bytes());
        }
    }

    pub fn string_always(&mut self, number: u32, v: &str) {
        self.bytes_always(number, v.as_bytes());
    }

    /// A message field that is set (written even when the message is empty).
    pub fn message<M: Message>(&mut self, number: u32, m: &M) {
        self.bytes_always(number, &m.to_bytes());
    }

    /// An empty message set in a oneof (`keepalive: {}`).
    pub fn empty_message(&mut self, number: u32) {
        self.bytes_always(number, &[]);
    }

    /// A nested message written in place, for one that has no Rust type of its own.
    pub fn nested(&mut self, number: u32, write: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        write(&mut inner);
        self.bytes_always(number, &inner.buf);
    }

    /// `map<string, string>`: one entry message (`key` = 1, `value` = 2) per pair, in key order.
    /// Both fields are always written, as the reference runtimes do.
    pub fn string_map(&mut self, number: u32, map: &BTreeMap<String, String>) {
        for (k, v) in map {
            self.nested(number, |entry| {
                entry.string_always(1, k);
                entry.string_always(2, v);
            });
        }
    }
}

/// Reads one `map<string, string>` entry into `map` (a missing key or value is empty).
pub fn merge_string_entry(
    map: &mut BTreeMap<String, String>,
    value: Value<'_>,
) -> Result<(), DecodeError> {
    let (mut key, mut val) = (String::new(), String::new());
    for field in fields(value.len_delimited()?) {
        match field? {
            (1, v) => key = v.string()?,
            (2, v) => val = v.string()?,
            _ => {}
        }
    }
    map.insert(key, val);
    Ok(())
}

/// `google.protobuf.Timestamp`: `seconds` = 1 (int64), `nanos` = 2 (int32).
impl Message for super::json::Timestamp {
    fn encode(&self, w: &mut Writer) {
        w.int64(1, self.seconds);
        w.int32(2, i32::try_from(self.nanos).unwrap_or(i32::MAX));
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut t = Self::default();
        for field in fields(buf) {
            match field? {
                (1, v) => t.seconds = v.int64()?,
                // Negative nanos are invalid in a Timestamp; read them as 0.
                (2, v) => t.nanos = u32::try_from(v.int32()?).unwrap_or(0),
                _ => {}
            }
        }
        Ok(t)
    }
}

/// Unknown fields of every wire type (numbers 1000 to 1003), as a newer peer might add them.
#[cfg(test)]
pub(crate) const UNKNOWN_FIELDS: &[u8] = &[
    0xc0, 0x3e, 0x96, 0x01, // 1000: varint 150
    0xc9, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8, // 1001: fixed64
    0xd2, 0x3e, 2, 0x08, 0x01, // 1002: length-delimited
    0xdd, 0x3e, 1, 2, 3, 4, // 1003: fixed32
];

/// Asserts that `m` survives encode and decode, with and without unknown fields around it.
#[cfg(test)]
pub(crate) fn assert_round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.to_bytes();
    assert_eq!(M::decode(&bytes).as_ref(), Ok(m), "{bytes:?}");
    let noisy = [UNKNOWN_FIELDS, &bytes, UNKNOWN_FIELDS].concat();
    assert_eq!(M::decode(&noisy).as_ref(), Ok(m), "with unknown fields");
}

#[cfg(test)]
mod tests {
    use super::super::json::Timestamp;
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varints_match_the_reference_encoding() {
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(1), [1]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(150), [0x96, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let bytes = varint(v);
            let mut slice = bytes.as_slice();
            assert_eq!(get_varint(&mut slice), Ok(v));
            assert!(slice.is_empty());
        }
        assert!(get_varint(&mut [0x80u8, 0x80].as_slice()).is_err());
        assert!(get_varint(&mut [0xffu8; 11].as_slice()).is_err());
    }

    #[test]
    fn zigzag_keeps_small_negatives_short() {
        for (v, z) in [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            assert_eq!(zigzag32(v), z);
            assert_eq!(unzigzag32(z), v);
        }
        assert_eq!(zigzag32(i32::MIN), u32::MAX);
        assert_eq!(unzigzag32(u32::MAX), i32::MIN);
        assert_eq!(unzigzag32(zigzag32(i32::MAX)), i32::MAX);
    }

    #[test]
    fn writer_skips_defaults_and_encodes_keys() {
        let mut w = Writer::default();
        w.uint32(1, 0);
        w.string(2, "");
        w.bool(3, false);
        assert!(w.into_bytes().is_empty());
        let mut w = Writer::default();
        w.uint32(1, 150);
        w.string(2, "hi");
        w.int32(3, -1);
        w.sint32(4, -1);
        w.bool_always(5, false);
        w.empty_message(16);
        let mut want = vec![0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x18];
        want.extend([0xff; 9]);
        want.extend([0x01, 0x20, 0x01, 0x28, 0x00, 0x82, 0x01, 0x00]);
        assert_eq!(w.into_bytes(), want);
    }

    #[test]
    fn fields_skip_every_wire_type_and_refuse_bad_input() {
        // 1: varint 7; 2: fixed64; 3: "ab"; 4: fixed32.
        let mut buf = vec![0x08, 7, 0x11];
        buf.extend(1u64.to_le_bytes());
        buf.extend([0x1a, 2, b'a', b'b', 0x25]);
        buf.extend(2u32.to_le_bytes());
        let got: Vec<_> = fields(&buf).collect::<Result<_, _>>().expect("valid");
        assert_eq!(
            got,
            [
                (1, Value::Varint(7)),
                (2, Value::Fixed64(1)),
                (3, Value::Len(b"ab")),
                (4, Value::Fixed32(2)),
            ]
        );
        for bad in [
            &[0x0b][..],      // group start
            &[0x00, 1],       // field 0
            &[0x1a, 5, b'a'], // length past the end
            &[0x11, 1, 2, 3], // short fixed64
            &[0x08],          // missing varint
        ] {
            assert!(fields(bad).any(|f| f.is_err()), "{bad:?}");
        }
        assert_eq!(fields(UNKNOWN_FIELDS).filter(Result::is_ok).count(), 4);
        assert!(Value::Varint(1).string().is_err());
        assert!(Value::Len(&[0xff]).string().is_err());
        assert_eq!(Value::Varint(u64::MAX).int32(), Ok(-1));
    }

    #[test]
    fn maps_and_timestamps_round_trip() {
        let map: BTreeMap<_, _> = [("a".to_string(), "1".to_string()), ("b".into(), "".into())]
            .into_iter()
            .collect();
        let mut w = Writer::default();
        w.string_map(7, &map);
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..8], [0x3a, 6, 0x0a, 1, b'a', 0x12, 1, b'1']);
        assert_eq!(&bytes[8..], [0x3a, 5, 0x0a, 1, b'b', 0x12, 0]);
        let mut back = BTreeMap::new();
        for field in fields(&bytes) {
            let (n, v) = field.expect("valid");
            assert_eq!(n, 7);
            merge_string_entry(&mut back, v).expect("entry");
        }
        assert_eq!(back, map);

        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(Timestamp::decode(&t.to_bytes()), Ok(t));
        assert!(Timestamp::default().to_bytes().is_empty());
    }
}
