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

/// From `i`, skips bytes that a raw JSON literal passes through unchanged (ASCII other than `\\`),
/// eight at a time: a 50 MB print is mostly such bytes.
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const BACKSLASH: u64 = LOW * b'\\' as u64;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let x = w ^ BACKSLASH;
        // Any byte with its high bit set, or equal to a backslash (a zero byte in `x`).
        if (w | (x.wrapping_sub(LOW) & !x)) & HIGH != 0 {
            break;
        }
        i += 8;
    }
    i
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
}
