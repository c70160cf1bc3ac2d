//! Environment variables as lists of pairs, shared by everything that starts processes.

/// A valid variable name: `^[A-Za-z_][A-Za-z0-9_]*$` (what every shell and kernel accepts).
pub fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sets `vars` in `env`, replacing the values of keys it already has, keeping its order.
pub fn merge(env: &mut Vec<(String, String)>, vars: &[(String, String)]) {
    for (key, value) in vars {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_merging() {
        assert!(valid_name("_A1") && valid_name("path"));
        assert!(!valid_name("1A") && !valid_name("A-B") && !valid_name(""));
        let mut env = vec![("A".to_string(), "1".to_string())];
        merge(
            &mut env,
            &[("B".into(), "2".into()), ("A".into(), "3".into())],
        );
        assert_eq!(env, [("A".into(), "3".into()), ("B".into(), "2".into())]);
    }
}
