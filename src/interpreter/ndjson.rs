//! JSON written the way Python's `json.dumps` writes it: `", "` and `": "` separators and every
//! non-ASCII character escaped as `\uXXXX`. The JS SDK decodes each network chunk on its own, so a
//! multi-byte UTF-8 character split across chunks would be corrupted (code-interpreter-api.md §4.1).

use serde_json::Value;

/// Appends `v` to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_str(out, k);
                out.extend_from_slice(b": ");
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `s` as an ASCII-only JSON string. Runs of plain ASCII are copied as slices, so a 50 MB
/// print costs one pass.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if (0x20..=0x7f).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if b < 0x80 {
            escape_ascii(out, b);
            i += 1;
        } else if let Some(c) = s[i..].chars().next() {
            // `i` is always on a char boundary: ASCII advances by one, others by their length.
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                push_u(out, *unit);
            }
            i += c.len_utf8();
        }
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a JSON string literal that is already valid JSON (`raw`, quotes included, as a kernel
/// sent it) re-encoded the Python way, without unescaping it first: escapes are kept (normalised
/// as `json.dumps` writes them) and raw non-ASCII characters become `\uXXXX`. This is how a 50 MB
/// print reaches the HTTP body with no copy between the kernel's frame and the line.
pub fn write_raw_json_str(out: &mut Vec<u8>, raw: &str) {
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let bytes = inner.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        i = skip_plain(bytes, i);
        let Some(&b) = bytes.get(i) else { break };
        if b != b'\\' && b < 0x80 {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if b == b'\\' {
            match bytes.get(i + 1) {
                Some(b'u') => {
                    let unit = inner
                        .get(i + 2..i + 6)
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                        .unwrap_or(0xfffd);
                    match u8::try_from(unit) {
                        Ok(c) if c < 0x80 => write_ascii(out, c),
                        _ => push_u(out, unit),
                    }
                    i += 6;
                }
                Some(b'/') => {
                    out.push(b'/');
                    i += 2;
                }
                Some(&c) => {
                    out.push(b'\\');
                    out.push(c);
                    i += 2;
                }
                None => i += 1,
            }
        } else if let Some(c) = inner[i..].chars().next() {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                push_u(out, *unit);
            }
            i += c.len_utf8();
        }
        start = i.min(bytes.len());
    }
    out.extend_from_slice(&bytes[start.min(bytes.len())..]);
    out.push(b'"');
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte lane of `w` that equals `b` (and possibly in higher lanes after a
/// match, which only matters for "is there any").
fn lanes_eq(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW * u64::from(b));
    x.wrapping_sub(LOW) & !x & HIGH
}

fn load(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&chunk[..8]);
    u64::from_le_bytes(word)
}

/// From `i`, skips bytes that a raw JSON literal passes through unchanged (ASCII other than `\\`),
/// sixteen at a time: a 50 MB print is mostly such bytes.
fn skip_plain(bytes: &[u8], i: usize) -> usize {
    let mut n = i;
    for chunk in bytes[i..].chunks_exact(16) {
        let (a, b) = (load(&chunk[..8]), load(&chunk[8..]));
        if ((a | b) & HIGH) | lanes_eq(a, b'\\') | lanes_eq(b, b'\\') != 0 {
            break;
        }
        n += 16;
    }
    n
}

/// From `i`, skips bytes a JSON string decoder copies as they are: not `"`, not `\\`, not a
/// control character. Sixteen at a time.
fn skip_unescaped(bytes: &[u8], i: usize) -> usize {
    let mut n = i;
    for chunk in bytes[i..].chunks_exact(16) {
        let (a, b) = (load(&chunk[..8]), load(&chunk[8..]));
        // A control byte (< 0x20) has no bit in 0x60 and no high bit.
        let control = |w: u64| !(w | (w & (LOW * 0x60)).wrapping_add(LOW * 0x60)) & HIGH & !w;
        let special = lanes_eq(a, b'"')
            | lanes_eq(b, b'"')
            | lanes_eq(a, b'\\')
            | lanes_eq(b, b'\\')
            | control(a)
            | control(b);
        if special != 0 {
            break;
        }
        n += 16;
    }
    n
}

/// Decodes the JSON string literal at the start of `bytes` (opening quote included). Returns the
/// text and the number of bytes consumed, or `None` if it is not a well-formed literal. Plain
/// runs are copied as slices, so a 50 MB line costs one pass (the client's side of `write_str`).
pub fn read_str(bytes: &[u8]) -> Option<(String, usize)> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len().min(1 << 20));
    let mut i = 1;
    loop {
        let start = i;
        i = skip_unescaped(bytes, i);
        while let Some(&b) = bytes.get(i) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            i += 1;
        }
        out.extend_from_slice(&bytes[start..i]);
        match *bytes.get(i)? {
            b'"' => return String::from_utf8(out).ok().map(|s| (s, i + 1)),
            b'\\' => {
                let esc = *bytes.get(i + 1)?;
                i += 2;
                let c = match esc {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hex = |at: usize| -> Option<u32> {
                            u32::from_str_radix(
                                std::str::from_utf8(bytes.get(at..at + 4)?).ok()?,
                                16,
                            )
                            .ok()
                        };
                        let unit = hex(i)?;
                        i += 4;
                        if (0xd800..0xdc00).contains(&unit)
                            && bytes.get(i) == Some(&b'\\')
                            && bytes.get(i + 1) == Some(&b'u')
                        {
                            match hex(i + 2) {
                                Some(low) if (0xdc00..0xe000).contains(&low) => {
                                    i += 6;
                                    char::from_u32(
                                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00),
                                    )?
                                }
                                _ => '\u{fffd}',
                            }
                        } else {
                            char::from_u32(unit).unwrap_or('\u{fffd}')
                        }
                    }
                    _ => return None,
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None, // a raw control character
        }
    }
}

/// One ASCII character as `json.dumps` writes it.
fn write_ascii(out: &mut Vec<u8>, c: u8) {
    if (0x20..=0x7f).contains(&c) && c != b'"' && c != b'\\' {
        out.push(c);
    } else {
        escape_ascii(out, c);
    }
}

fn escape_ascii(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        other => push_u(out, u16::from(other)),
    }
}

fn push_u(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dumps(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn python_style() {
        assert_eq!(
            dumps(&json!({"type": "stdout", "text": "é😀\n", "n": [1, 2.5, null, true]})),
            r#"{"type": "stdout", "text": "\u00e9\ud83d\ude00\n", "n": [1, 2.5, null, true]}"#
        );
        assert_eq!(dumps(&json!("a\"b\\c\u{1}\t")), r#""a\"b\\c\u0001\t""#);
        assert_eq!(dumps(&json!("ok é x\"")), r#""ok \u00e9 x\"""#);
        assert_eq!(dumps(&json!({})), "{}");
    }

    #[test]
    fn raw_json_strings_reencode_like_dumps() {
        for text in ["plain", "a\nb\t\"q\" \\ /", "\u{e9}\u{1F600}\u{1}\u{8}", ""] {
            let mut expected = Vec::new();
            write_str(&mut expected, text);
            for raw in [
                serde_json::to_string(text).unwrap(),
                // Kernels may escape differently: \/, upper-case hex, \u for ASCII.
                serde_json::to_string(text).unwrap().replace('/', "\\/"),
            ] {
                let mut got = Vec::new();
                write_raw_json_str(&mut got, &raw);
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(expected.clone()).unwrap(),
                    "{raw}"
                );
            }
        }
        // Special bytes at every offset around the eight-byte fast path.
        for k in 0..20 {
            let text = format!("{}\u{e9}\\\n\"{}", "a".repeat(k), "b".repeat(k));
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            write_str(&mut expected, &text);
            write_raw_json_str(&mut got, &serde_json::to_string(&text).unwrap());
            assert_eq!(got, expected, "offset {k}");
        }
        let mut got = Vec::new();
        write_raw_json_str(&mut got, r#""\u00E9\u0041\u000a""#);
        assert_eq!(String::from_utf8(got).unwrap(), r#""\u00e9A\n""#);
    }

    #[test]
    fn read_str_inverts_write_str() {
        let long = format!("{}\u{1F600}{}", "x".repeat(37), "\"q\" \\ \n".repeat(5));
        for text in [
            "",
            "plain",
            "a\nb\t\"q\" \\ / \u{1}\u{8}\u{c}",
            "\u{e9}\u{1F600}",
            long.as_str(),
        ] {
            let mut line = Vec::new();
            write_str(&mut line, text);
            line.extend_from_slice(b", rest");
            let (back, used) = read_str(&line).expect("decodes");
            assert_eq!(back, text);
            assert_eq!(&line[used..], b", rest");
            // And what serde_json writes (raw UTF-8, other escapes) reads the same.
            let serde = serde_json::to_string(text).unwrap();
            assert_eq!(
                read_str(serde.as_bytes()).map(|r| r.0).as_deref(),
                Some(text)
            );
        }
        assert_eq!(
            read_str(br#""\ud83d\ude00""#).map(|r| r.0).as_deref(),
            Some("\u{1F600}")
        );
        assert!(read_str(b"\"unterminated").is_none());
        assert!(read_str(b"\"raw\ncontrol\"").is_none());
        assert!(read_str(br#""bad \q escape""#).is_none());
        assert!(read_str(b"no quote").is_none());
    }

    #[test]
    fn read_str_agrees_with_serde_json_at_every_offset() {
        for k in 0..40 {
            let text = format!("{}\u{e9}\\\n\"\u{1}{}", "a".repeat(k), "b".repeat(k));
            let mut line = Vec::new();
            write_str(&mut line, &text);
            assert_eq!(
                read_str(&line).map(|r| r.0),
                Some(text.clone()),
                "offset {k}"
            );
        }
    }

    #[test]
    fn raw_reencode_tail() {
        let mut got = Vec::new();
        write_raw_json_str(&mut got, r#""\u00E9\u0041\u000a""#);
        assert_eq!(String::from_utf8(got).unwrap(), r#""\u00e9A\n""#);
    }
}
