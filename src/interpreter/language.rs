//! The one table of languages: what a request may call a language, which kernelspec runs it, and
//! which syntax env vars are written in.

use super::env::Syntax;

/// A language the interpreter knows by name.
struct Language {
    /// The normalised name (what contexts report).
    name: &'static str,
    /// Other names a request may use.
    aliases: &'static [&'static str],
    /// The kernelspec that runs it.
    kernel: &'static str,
    syntax: Syntax,
}

const LANGUAGES: &[Language] = &[
    Language {
        name: "python",
        aliases: &[""],
        kernel: "python3",
        syntax: Syntax::Python,
    },
    Language {
        name: "javascript",
        aliases: &["js"],
        kernel: "javascript",
        syntax: Syntax::JavaScript,
    },
    Language {
        name: "typescript",
        aliases: &["ts"],
        kernel: "javascript",
        syntax: Syntax::JavaScript,
    },
    Language {
        name: "bash",
        aliases: &[],
        kernel: "bash",
        syntax: Syntax::Bash,
    },
    Language {
        name: "r",
        aliases: &[],
        kernel: "r",
        syntax: Syntax::R,
    },
    Language {
        name: "java",
        aliases: &[],
        kernel: "java",
        syntax: Syntax::Java,
    },
];

fn find(name: &str) -> Option<&'static Language> {
    LANGUAGES.iter().find(|l| l.name == name)
}

/// E2B's normalisation, `lower().strip()`, plus the aliases: `js` → `javascript`, `ts` →
/// `typescript`, nothing → `python`. Unknown names stay as they are (a kernelspec may exist).
pub fn normalise(language: Option<&str>) -> String {
    let l = language.unwrap_or("").trim().to_lowercase();
    LANGUAGES
        .iter()
        .find(|lang| lang.name == l || lang.aliases.contains(&l.as_str()))
        .map_or(l, |lang| lang.name.to_string())
}

/// The kernelspec that runs a normalised language (an unknown one: the kernelspec of that name).
pub fn kernel(language: &str) -> &str {
    find(language).map_or(language, |l| l.kernel)
}

/// The syntax env vars are written in.
pub fn syntax(language: &str) -> Syntax {
    find(language).map_or(Syntax::Unknown, |l| l.syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_kernels() {
        assert_eq!(normalise(None), "python");
        assert_eq!(normalise(Some(" JS ")), "javascript");
        assert_eq!(normalise(Some("ts")), "typescript");
        assert_eq!(normalise(Some("Cobol")), "cobol");
        assert_eq!(kernel("typescript"), "javascript");
        assert_eq!(kernel("python"), "python3");
        assert_eq!(kernel("cobol"), "cobol");
        assert_eq!(syntax("java"), Syntax::Java);
        assert_eq!(syntax("cobol"), Syntax::Unknown);
    }
}
