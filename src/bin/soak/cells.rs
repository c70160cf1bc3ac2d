//! The code each run sends, per language. Every line a cell prints is `@<run>#<index>:<payload>`,
//! so the checker can tell whose line it is, whether it is in order and whether it is whole.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    Python,
    JavaScript,
    TypeScript,
    Bash,
    R,
    Java,
}

impl Lang {
    pub const ALL: [Lang; 6] = [
        Lang::Python,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::Bash,
        Lang::R,
        Lang::Java,
    ];

    pub fn parse(s: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.name() == s.trim())
    }

    /// The language name the API takes.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Bash => "bash",
            Lang::R => "r",
            Lang::Java => "java",
        }
    }

    /// The kernelspec folder under `$KERNELBOX_HOME/kernels` that must exist for the language.
    pub fn kernel_dir(self) -> &'static str {
        match self {
            Lang::Python => "python3",
            Lang::JavaScript | Lang::TypeScript => "javascript",
            Lang::Bash => "bash",
            Lang::R => "r",
            Lang::Java => "java",
        }
    }

    /// Whether the kernel runs top-level `await` (the awaiting-cell faults apply).
    pub fn can_await(self) -> bool {
        matches!(self, Lang::Python | Lang::JavaScript | Lang::TypeScript)
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cell printing lines `0..n` of run `run`, each with a payload of `width` `x`s. Python and
/// JavaScript write in batches so that big prints become many stream messages.
pub fn lines(lang: Lang, run: u64, n: usize, width: usize) -> String {
    match lang {
        Lang::Python => format!(
            "import sys\n_p = 'x' * {width}\nfor _j in range(0, {n}, 2000):\n    \
             sys.stdout.write(''.join(f'@{run}#{{_i}}:{{_p}}\\n' for _i in range(_j, min(_j + 2000, {n}))))\n    \
             sys.stdout.flush()\n"
        ),
        Lang::JavaScript | Lang::TypeScript => format!(
            "(() => {{ const p = 'x'.repeat({width}); for (let j = 0; j < {n}; j += 2000) {{ \
             const b = []; for (let i = j; i < Math.min(j + 2000, {n}); i++) b.push(`@{run}#${{i}}:${{p}}`); \
             console.log(b.join('\\n')); }} }})();\n"
        ),
        Lang::Bash => format!("seq -f '@{run}#%.0f:{}' 0 {}\n", "x".repeat(width), n - 1),
        Lang::R => format!(
            "cat(sprintf('@{run}#%d:%s\\n', 0:{}, strrep('x', {width})), sep = '')\n",
            n - 1
        ),
        Lang::Java => format!(
            "{{ String p = \"x\".repeat({width}); StringBuilder sb = new StringBuilder(); \
             for (int i = 0; i < {n}; i++) sb.append(\"@{run}#\").append(i).append(':').append(p).append('\\n'); \
             System.out.print(sb); System.out.flush(); }}\n"
        ),
    }
}

/// A cell that blocks for `secs` seconds; `awaiting` makes it an awaited timer instead of a
/// blocking sleep (Python and JavaScript only).
pub fn sleep(lang: Lang, secs: u64, awaiting: bool) -> String {
    match (lang, awaiting) {
        (Lang::Python, false) => format!("import time\ntime.sleep({secs})\n"),
        (Lang::Python, true) => format!("import asyncio\nawait asyncio.sleep({secs})\n"),
        (Lang::JavaScript | Lang::TypeScript, false) => format!(
            "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, {});\n",
            secs * 1000
        ),
        (Lang::JavaScript | Lang::TypeScript, true) => {
            format!(
                "await new Promise((r) => setTimeout(r, {}));\n",
                secs * 1000
            )
        }
        (Lang::Bash, _) => format!("sleep {secs}\n"),
        (Lang::R, _) => format!("Sys.sleep({secs})\n"),
        (Lang::Java, _) => format!("Thread.sleep({}L);\n", secs * 1000),
    }
}

/// The text every error a run raises carries (bash's error is only an exit status).
pub fn error_marker(run: u64) -> String {
    format!("soakerr-{run}-")
}

/// A cell that fails. bash_kernel reports a failing last command as an error whose value is the
/// exit status, so bash's error carries no marker.
pub fn raise(lang: Lang, run: u64) -> String {
    let m = error_marker(run);
    match lang {
        Lang::Python => format!("raise RuntimeError('{m}')\n"),
        Lang::JavaScript | Lang::TypeScript => format!("throw new Error('{m}');\n"),
        Lang::Bash => "(exit 3)\n".to_string(),
        Lang::R => format!("stop('{m}')\n"),
        Lang::Java => format!("throw new RuntimeException(\"{m}\");\n"),
    }
}

/// The state check: prints line 0 `S=<value of the context's state variable, or LOST>`, sets the
/// variable to `token`, and prints line 1 `P=<the kernel's pid>` (the pid the kill fault uses).
pub fn state_check(lang: Lang, run: u64, token: &str) -> String {
    match lang {
        Lang::Python => format!(
            "import os\nprint('@{run}#0:S=' + globals().get('_soak_s', 'LOST'), flush=True)\n\
             _soak_s = '{token}'\nprint(f'@{run}#1:P={{os.getpid()}}', flush=True)\n"
        ),
        Lang::JavaScript | Lang::TypeScript => format!(
            "console.log('@{run}#0:S=' + (globalThis['_soak_s'] ?? 'LOST'));\n\
             globalThis['_soak_s'] = '{token}';\nconsole.log('@{run}#1:P=' + Deno.pid);\n"
        ),
        Lang::Bash => format!(
            "echo \"@{run}#0:S=${{_soak_s:-LOST}}\"; _soak_s={token}; echo \"@{run}#1:P=$PPID\"\n"
        ),
        Lang::R => format!(
            "cat('@{run}#0:S=', if (exists('soak_s')) soak_s else 'LOST', '\\n', sep = '')\n\
             soak_s <- '{token}'\ncat('@{run}#1:P=', Sys.getpid(), '\\n', sep = '')\n"
        ),
        Lang::Java => format!(
            "System.out.println(\"@{run}#0:S=\" + System.getProperty(\"soak.s\", \"LOST\"));\n\
             System.setProperty(\"soak.s\", \"{token}\");\n\
             System.out.println(\"@{run}#1:P=\" + ProcessHandle.current().pid());\n"
        ),
    }
}
