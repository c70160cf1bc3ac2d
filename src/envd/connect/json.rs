//! The proto3 JSON mapping, for message types written as plain serde structs (envd-api.md §3.4).
//!
//! How a message type is written (see `rpc::filesystem` for examples):
//! - `#[serde(rename_all = "camelCase", default)]` on the struct: keys are lowerCamelCase and
//!   absent fields take their default; serde ignores unknown fields (never add
//!   `deny_unknown_fields`: newer SDKs may send fields we do not know).
//! - a multi-word field also takes `#[serde(alias = "snake_name")]`: proto3 JSON parsers accept
//!   the original field name too.
//! - request fields take `deserialize_with` one of [`nullable`], [`uint`] or [`int64`]: `null`
//!   means the default, and numbers may come as strings.
//! - response fields take `skip_serializing_if` (defaults are omitted) and 64-bit integers
//!   `serialize_with = "json::int64_string"` (proto3 JSON writes them as strings).
//! - enums come from [`proto_enum!`](crate::proto_enum): names on the wire, numbers accepted,
//!   unknown names read as the zero value instead of failing the call.
//! - `bytes` fields use [`base64`]; timestamps are [`Timestamp`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `null` reads as the default value.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer that may come as a JSON number or a string (proto3 JSON accepts both); `null` is 0.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer, as a number or a string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
            if v.fract() == 0.0 && v.abs() < 1e38 {
                Ok(v as i128)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
            v.trim()
                .parse()
                .map_err(|_| E::custom(format!("{v:?} is not an integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i128, E> {
            Ok(0)
        }
        fn visit_none<E: de::Error>(self) -> Result<i128, E> {
            Ok(0)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<i128, D::Error> {
            integer(d)
        }
    }
    d.deserialize_any(V)
}

/// A `uint32` (or any unsigned integer type) field, from a number or a string.
pub fn uint<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let v = integer(d)?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range")))
}

/// An `int64` field, from a number or a string.
pub fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    uint(d)
}

/// Writes a 64-bit integer as a string, as proto3 JSON does.
pub fn int64_string<S: Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// True for a type's default value: `skip_serializing_if = "json::is_default"`.
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `google.protobuf.Timestamp` in proto3 JSON: RFC 3339 in UTC, with 0, 3, 6 or 9 fractional
/// digits (as protojson writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before it).
    pub seconds: i64,
    pub nanos: u32,
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(before) => {
                let d: Duration = before.duration();
                let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    seconds -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Timestamp { seconds, nanos }
            }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::sys::time::rfc3339(self.seconds, self.nanos))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `bytes` fields: standard base64 with padding on output; padded or unpadded, standard or
/// URL-safe on input (proto3 JSON parsers accept all of them).
pub mod base64 {
    use ::base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
    use ::base64::engine::DecodePaddingMode;
    use ::base64::{alphabet, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    const LENIENT_URL: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        decode(&text).map_err(serde::de::Error::custom)
    }

    /// Decodes proto3 JSON `bytes`.
    pub fn decode(text: &str) -> Result<Vec<u8>, ::base64::DecodeError> {
        LENIENT.decode(text).or_else(|_| LENIENT_URL.decode(text))
    }
}

/// Declares a protobuf enum: serialized as its name, deserialized from a name or a number, and
/// an unknown name or number reads as the first (zero) variant rather than failing the call
/// (envd-api.md §3.4).
///
/// ```ignore
/// proto_enum! {
///     /// Doc.
///     pub enum Signal {
///         Unspecified = 0 => "SIGNAL_UNSPECIFIED",
///         Sigterm = 15 => "SIGNAL_SIGTERM",
///     }
/// }
/// ```
#[macro_export]
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $zero:ident = 0 => $zero_name:literal,
            $($variant:ident = $number:literal => $wire:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis enum $name {
            #[default]
            $zero,
            $($variant),*
        }

        #[allow(dead_code)]
        impl $name {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::$zero => $zero_name,
                    $($name::$variant => $wire),*
                }
            }

            /// The protobuf number.
            pub fn number(self) -> i32 {
                match self {
                    $name::$zero => 0,
                    $($name::$variant => $number),*
                }
            }

            /// From a name or number; unknown ones read as the zero value.
            pub fn from_name(name: &str) -> $name {
                match name {
                    $($wire => $name::$variant,)*
                    _ => $name::$zero,
                }
            }

            pub fn from_number(number: i64) -> $name {
                match number {
                    $($number => $name::$variant,)*
                    _ => $name::$zero,
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                match ::serde_json::Value::deserialize(d)? {
                    ::serde_json::Value::String(s) => Ok($name::from_name(&s)),
                    ::serde_json::Value::Number(n) => {
                        Ok(n.as_i64().map($name::from_number).unwrap_or_default())
                    }
                    ::serde_json::Value::Null => Ok($name::$zero),
                    other => Err(::serde::de::Error::custom(format!(
                        "invalid value for enum {}: {other}",
                        stringify!($name)
                    ))),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::proto_enum! {
        enum Color {
            Unspecified = 0 => "COLOR_UNSPECIFIED",
            Red = 1 => "COLOR_RED",
        }
    }

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(rename_all = "camelCase", default)]
    struct Msg {
        #[serde(alias = "some_name", deserialize_with = "nullable")]
        some_name: String,
        #[serde(deserialize_with = "uint", skip_serializing_if = "is_default")]
        depth: u32,
        #[serde(
            deserialize_with = "int64",
            serialize_with = "int64_string",
            skip_serializing_if = "is_default"
        )]
        size: i64,
        #[serde(skip_serializing_if = "is_default")]
        color: Color,
    }

    #[test]
    fn proto3_json_in_both_spellings_with_unknowns() {
        let parse = |s: &str| serde_json::from_str::<Msg>(s).expect(s);
        let want = Msg {
            some_name: "a".into(),
            depth: 2,
            size: 5,
            color: Color::Red,
        };
        assert_eq!(
            parse(r#"{"someName":"a","depth":2,"size":"5","color":"COLOR_RED","new":{"x":1}}"#),
            want
        );
        assert_eq!(
            parse(r#"{"some_name":"a","depth":"2","size":5,"color":1}"#),
            want
        );
        assert_eq!(
            parse(r#"{"someName":null,"color":"COLOR_FROM_THE_FUTURE","depth":null}"#),
            Msg::default()
        );
        assert!(serde_json::from_str::<Msg>(r#"{"depth":-1}"#).is_err());
        assert!(serde_json::from_str::<Msg>(r#"{"depth":"x"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&want).expect("encode"),
            r#"{"someName":"a","depth":2,"size":"5","color":"COLOR_RED"}"#
        );
        assert_eq!(
            serde_json::to_string(&Msg::default()).expect("encode"),
            r#"{"someName":""}"#
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = |seconds, nanos| Timestamp { seconds, nanos }.to_string();
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1_700_000_000, 500_000_000), "2023-11-14T22:13:20.500Z");
        assert_eq!(t(951_782_400, 1_000), "2000-02-29T00:00:00.000001Z");
        assert_eq!(t(-1, 1), "1969-12-31T23:59:59.000000001Z");
    }

    #[test]
    fn bytes_are_base64() {
        assert_eq!(base64::decode("aGk=").expect("padded"), b"hi");
        assert_eq!(base64::decode("aGk").expect("unpadded"), b"hi");
        assert_eq!(base64::decode("-_8").expect("url-safe"), [0xfb, 0xff]);
        assert!(base64::decode("!!").is_err());
    }
}
