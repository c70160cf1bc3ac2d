//! Per-request environment variables as code for each kernel language.
//!
//! Each request's variables are set by a silent cell sent just before the user's cell (pipelined,
//! so no extra round trip, and the user's line numbers stay their own) and restored by another
//! silent cell afterwards, on every path (code-interpreter-api.md §10 B2, B7, B8). The set cell
//! saves the previous values in the kernel, so restoring puts back exactly what was there, including
//! values the user's own code set earlier. Values are escaped for the language, never interpolated.
//!
//! Java is the exception to "environment": `System.getenv` is an immutable snapshot of the
//! process's environment, so, like E2B's Java kernel, per-request variables are system properties
//! (`System.getProperty("FOO")`). JJava runs `kernels/java/startup.jshell` at every kernel start,
//! which copies the process environment, sandbox-level variables included, into system
//! properties, so restoring puts back the sandbox-level value where there is one.

use serde_json::Value;

pub use crate::sys::env::valid_name as valid_key;

/// The kernel language family that decides the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Python,
    JavaScript,
    R,
    Bash,
    /// JShell (JJava): variables are system properties.
    Java,
    /// A kernel we do not know how to talk to; env vars are not applied.
    Unknown,
}

/// A double-quoted string literal valid in Python, JavaScript, R and Java: JSON escapes (`\"`,
/// `\\`, `\n`, `\u0001`, …) mean the same in all four; non-ASCII stays raw UTF-8. Java turns
/// `\uXXXX` into its character before it lexes, which is harmless here: JSON writes `\u` only for
/// control characters other than `\n`, `\r` (those get short escapes), and a raw control character
/// is legal inside a Java string literal; a `\\` before a `u` is not an escape to Java either.
fn dq(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A single-quoted bash word.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Code that saves the current values of `vars`' keys and sets the new ones.
pub fn set_code(syntax: Syntax, vars: &[(String, String)]) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    let keys = |f: &dyn Fn(&str) -> String| vars.iter().map(|(k, _)| f(k)).collect::<Vec<_>>();
    Some(match syntax {
        Syntax::Python => {
            let mut code = format!(
                "__kernelbox_env = {{k: __import__('os').environ.get(k) for k in [{}]}}\n",
                keys(&dq).join(", ")
            );
            for (k, v) in vars {
                code.push_str(&format!(
                    "__import__('os').environ[{}] = {}\n",
                    dq(k),
                    dq(v)
                ));
            }
            code
        }
        Syntax::JavaScript => {
            let mut code = format!(
                "globalThis.__kernelbox_env = Object.fromEntries([{}].map((k) => [k, process.env[k]]));\n",
                keys(&dq).join(", ")
            );
            for (k, v) in vars {
                code.push_str(&format!("process.env[{}] = {};\n", dq(k), dq(v)));
            }
            code
        }
        Syntax::R => {
            let mut code = format!(
                ".kernelbox_env <- Sys.getenv(c({}), unset = NA, names = TRUE)\n",
                keys(&dq).join(", ")
            );
            let sets: Vec<String> = vars
                .iter()
                .map(|(k, v)| format!("{} = {}", dq(k), dq(v)))
                .collect();
            code.push_str(&format!(
                "invisible(do.call(Sys.setenv, list({})))\n",
                sets.join(", ")
            ));
            code
        }
        Syntax::Bash => {
            let mut code = String::new();
            for (k, v) in vars {
                code.push_str(&format!(
                    "if [ -n \"${{{k}+x}}\" ]; then __kernelbox_had_{k}=1; __kernelbox_old_{k}=\"${k}\"; else __kernelbox_had_{k}=0; fi; export {k}={}\n",
                    sq(v)
                ));
            }
            code
        }
        Syntax::Java => {
            // One declaration and one statement: JShell keeps `__kernelbox_env` between cells.
            let pairs: Vec<String> = vars
                .iter()
                .map(|(k, v)| format!("{{{}, {}}}", dq(k), dq(v)))
                .collect();
            format!(
                "java.util.Map<String, String> __kernelbox_env = new java.util.HashMap<>();\n\
                 for (String[] __kv : new String[][] {{{}}}) {{ __kernelbox_env.put(__kv[0], System.getProperty(__kv[0])); System.setProperty(__kv[0], __kv[1]); }}\n",
                pairs.join(", ")
            )
        }
        Syntax::Unknown => return None,
    })
}

/// Code that puts back what `set_code` saved.
pub fn restore_code(syntax: Syntax, vars: &[(String, String)]) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    Some(match syntax {
        Syntax::Python => "for __k, __v in __kernelbox_env.items():\n    if __v is None:\n        __import__('os').environ.pop(__k, None)\n    else:\n        __import__('os').environ[__k] = __v\ndel __kernelbox_env\n".to_string(),
        Syntax::JavaScript => "for (const [k, v] of Object.entries(globalThis.__kernelbox_env ?? {})) { if (v === undefined) { delete process.env[k]; } else { process.env[k] = v; } }\ndelete globalThis.__kernelbox_env;\n".to_string(),
        Syntax::R => "for (.k in names(.kernelbox_env)) { if (is.na(.kernelbox_env[[.k]])) Sys.unsetenv(.k) else do.call(Sys.setenv, stats::setNames(list(.kernelbox_env[[.k]]), .k)) }\nrm(.kernelbox_env, .k)\n".to_string(),
        Syntax::Bash => {
            let mut code = String::new();
            for (k, _) in vars {
                code.push_str(&format!(
                    "if [ \"$__kernelbox_had_{k}\" = 1 ]; then export {k}=\"$__kernelbox_old_{k}\"; else unset {k}; fi; unset __kernelbox_had_{k} __kernelbox_old_{k}\n"
                ));
            }
            code
        }
        Syntax::Java => "if (__kernelbox_env != null) { __kernelbox_env.forEach((__k, __v) -> { if (__v == null) System.clearProperty(__k); else System.setProperty(__k, __v); }); __kernelbox_env = null; }\n".to_string(),
        Syntax::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key("A_1"));
        assert!(valid_key("_x"));
        assert!(!valid_key("1A"));
        assert!(!valid_key("A-B"));
        assert!(!valid_key(""));
        assert!(!valid_key("A;rm"));
    }

    #[test]
    fn escaping() {
        assert_eq!(sq("it's"), r"'it'\''s'");
        assert_eq!(dq("a\"b\\\n"), r#""a\"b\\\n""#);
        // What Java's unicode pre-translation could trip on: `\\u` stays two characters.
        assert_eq!(dq("\\u0022\u{1}\r"), r#""\\u0022\u0001\r""#);
    }

    #[test]
    fn java_sets_properties_and_restores_them() {
        let vars = vec![("A".to_string(), "x\"y".to_string())];
        let set = set_code(Syntax::Java, &vars).unwrap();
        assert!(set.contains(r#"new String[][] {{"A", "x\"y"}}"#), "{set}");
        assert!(
            set.contains("System.setProperty(__kv[0], __kv[1])"),
            "{set}"
        );
        let restore = restore_code(Syntax::Java, &vars).unwrap();
        assert!(restore.contains("System.clearProperty(__k)"), "{restore}");
    }
}
