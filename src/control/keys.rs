//! API keys: one per line in `$KERNELBOX_HOME/serve/api-keys` (mode 0600, `#` starts a
//! comment). The first start makes one and prints it, so a new user can copy it into
//! `E2B_API_KEY`; more can be added by hand.

use std::path::Path;

/// The keys `serve` accepts.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Vec<String>,
}

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> ApiKeys {
        ApiKeys { keys }
    }

    /// Reads the key file, creating it with one fresh key when it is missing or holds none.
    /// Returns the keys and the new key, if one was made.
    pub fn load_or_create(path: &Path) -> std::io::Result<(ApiKeys, Option<String>)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let keys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        if !keys.is_empty() {
            return Ok((ApiKeys { keys }, None));
        }
        let key = new_key();
        if let Some(dir) = path.parent() {
            crate::sys::private_dir(dir)?;
        }
        let contents =
            format!("# kernelbox serve: API keys (X-API-KEY / E2B_API_KEY), one per line\n{key}\n");
        crate::sys::write_private(path, contents.as_bytes())?;
        Ok((ApiKeys::new(vec![key.clone()]), Some(key)))
    }

    /// Whether `key` is one of ours (compared in constant time per key).
    pub fn accepts(&self, key: &str) -> bool {
        self.keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()))
    }
}

/// `e2b_` and 40 lowercase hex digits: the format every SDK version accepts (older ones check
/// `^e2b_[0-9a-f]+$`).
pub fn new_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("e2b_{a}{}", &b[..8])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_then_read_back() {
        let dir = std::env::temp_dir().join(format!("kb-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("api-keys");
        let (keys, made) = ApiKeys::load_or_create(&path).expect("create");
        let key = made.expect("a new key");
        assert!(key.starts_with("e2b_") && key.len() == 44);
        assert!(key[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(keys.accepts(&key) && !keys.accepts("e2b_wrong"));
        let (again, made) = ApiKeys::load_or_create(&path).expect("read");
        assert!(made.is_none() && again.accepts(&key));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
