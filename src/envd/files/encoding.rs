//! Content codings on `/files`, as envd's `internal/api/encoding.go`: identity and gzip, chosen
//! by `Accept-Encoding` quality values (RFC 9110 §12.5.3) for downloads and named by
//! `Content-Encoding` for uploads.

/// A coding `/files` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
}

/// envd's list of supported codings as its messages print it (Go's `%v` of `[]string{"gzip"}`).
const SUPPORTED: &str = "[gzip]";

/// One `Accept-Encoding` entry: a lowercased coding and its quality.
fn entries(header: &str) -> Vec<(String, f64)> {
    header
        .split(',')
        .map(|value| {
            let mut parts = value.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut quality = 1.0;
            for param in parts {
                let param = param.trim();
                if param.len() >= 2 && param[..2].eq_ignore_ascii_case("q=") {
                    if let Ok(q) = param[2..].parse::<f64>() {
                        quality = q;
                    }
                }
            }
            (coding, quality)
        })
        .collect()
}

/// Whether identity is excluded: `identity;q=0`, or `*;q=0` without an `identity` entry above 0.
fn identity_rejected(entries: &[(String, f64)]) -> bool {
    let mut rejected = false;
    let mut explicitly_accepted = false;
    let mut wildcard_rejected = false;
    for (coding, q) in entries {
        match coding.as_str() {
            "identity" if *q == 0.0 => rejected = true,
            "identity" => explicitly_accepted = true,
            "*" if *q == 0.0 => wildcard_rejected = true,
            _ => {}
        }
    }
    rejected || (wildcard_rejected && !explicitly_accepted)
}

/// Whether identity is acceptable (always, unless excluded).
pub fn identity_acceptable(header: &str) -> bool {
    header.is_empty() || !identity_rejected(&entries(header))
}

/// The best coding for a response: the highest-quality supported entry (ties keep the header's
/// order), identity when nothing better is offered and it is not excluded.
pub fn negotiate(header: &str) -> Result<Coding, String> {
    if header.is_empty() {
        return Ok(Coding::Identity);
    }
    let mut entries = entries(header);
    let rejected = identity_rejected(&entries);
    // A stable sort: equal qualities keep the client's order.
    entries.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (coding, q) in &entries {
        if *q == 0.0 {
            continue;
        }
        match coding.as_str() {
            "identity" => return Ok(Coding::Identity),
            "*" if rejected => return Ok(Coding::Gzip),
            "*" => return Ok(Coding::Identity),
            "gzip" => return Ok(Coding::Gzip),
            _ => {}
        }
    }
    if rejected {
        Err(format!(
            "no acceptable encoding found, supported: {SUPPORTED}"
        ))
    } else {
        Ok(Coding::Identity)
    }
}

/// The coding of an upload's body from its `Content-Encoding`.
pub fn content_encoding(header: Option<&str>) -> Result<Coding, String> {
    let Some(header) = header.filter(|h| !h.is_empty()) else {
        return Ok(Coding::Identity);
    };
    let coding = header
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match coding.as_str() {
        "identity" => Ok(Coding::Identity),
        "gzip" => Ok(Coding::Gzip),
        _ => Err(format!(
            "unsupported Content-Encoding: {header}, supported: {SUPPORTED}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_envd() {
        assert_eq!(negotiate(""), Ok(Coding::Identity));
        assert_eq!(negotiate("gzip"), Ok(Coding::Gzip));
        assert_eq!(negotiate("gzip, deflate"), Ok(Coding::Gzip));
        assert_eq!(negotiate("deflate, gzip;q=0.5"), Ok(Coding::Gzip));
        assert_eq!(negotiate("identity, gzip;q=0.5"), Ok(Coding::Identity));
        assert_eq!(negotiate("gzip;q=0"), Ok(Coding::Identity));
        assert_eq!(negotiate("br"), Ok(Coding::Identity));
        assert_eq!(negotiate("*"), Ok(Coding::Identity));
        assert_eq!(negotiate("*, identity;q=0"), Ok(Coding::Gzip));
        assert_eq!(
            negotiate("br, identity;q=0"),
            Err("no acceptable encoding found, supported: [gzip]".into())
        );
        assert_eq!(
            negotiate("*;q=0"),
            Err("no acceptable encoding found, supported: [gzip]".into())
        );
        assert!(identity_acceptable("gzip"));
        assert!(!identity_acceptable("gzip, identity;q=0"));
        assert!(identity_acceptable("*;q=0, identity"));
    }

    #[test]
    fn upload_codings() {
        assert_eq!(content_encoding(None), Ok(Coding::Identity));
        assert_eq!(content_encoding(Some("GZIP")), Ok(Coding::Gzip));
        assert!(content_encoding(Some("br")).is_err());
    }
}
