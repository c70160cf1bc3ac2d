//! The checker: from what one stream delivered and what its cell printed, counts lines lost
//! (missing, out of order, duplicated, corrupt, or the stream cut short) and lines or errors
//! misrouted (carrying another run's marker, or on the wrong stream), and flags more than one
//! error in one execution.

use crate::cells::error_marker;
use crate::live::Outcome;

/// What a run's cell prints: lines `0..n` marked with `run`.
#[derive(Debug, Clone)]
pub struct Expect {
    pub run: u64,
    pub n: usize,
    /// Every line's payload is `width` `x`s; `None` for state lines, whose payload varies.
    pub width: Option<usize>,
    /// All `n` lines must arrive; otherwise any in-order prefix is fine (the run was cut short
    /// on purpose, or its kernel went away).
    pub complete: bool,
    /// The run must end with `end_of_execution` (not a disconnect).
    pub must_end: bool,
    /// How many errors the run must report (`None`: zero or one).
    pub errors: Option<usize>,
}

/// The checker's findings for one run.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The run's own lines that arrived, in order.
    pub got: usize,
    /// Payloads of those lines (kept only for state lines).
    pub payloads: Vec<String>,
    pub lost: usize,
    pub misrouted: usize,
    pub multi_error: bool,
    pub hung: bool,
    /// Lines ending in a stray `\r`: bash_kernel turns `\r\n` from its pty into `\n` one
    /// message at a time, so a pair split across two messages leaves the `\r`. Reported only.
    pub stray_cr: usize,
    /// The first problem found, for the report.
    pub detail: Option<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.misrouted == 0 && !self.multi_error && !self.hung
    }

    fn note(&mut self, what: String) {
        self.detail.get_or_insert(what);
    }
}

/// Whether the run was ended by its kernel going away (kill, restart, delete).
pub fn kernel_gone(out: &Outcome) -> bool {
    has_error(out, "ContextRestarting") || has_error(out, "UnexpectedEndOfExecution")
}

/// Whether the run was cut short by an error that says so: its kernel went away, or the kernel
/// aborted the request. Such a run need not print all its lines.
pub fn cut_by_error(out: &Outcome) -> bool {
    kernel_gone(out) || has_error(out, "ExecutionAborted")
}

pub fn has_error(out: &Outcome, name: &str) -> bool {
    out.errors.iter().any(|(n, _)| n == name)
}

/// Judges one run.
pub fn judge(out: &Outcome, expect: &Expect) -> Verdict {
    let mut v = Verdict::default();
    if let Some(e) = &out.failed {
        v.lost += expect.n.max(1);
        v.note(format!("request failed: {e}"));
        return v;
    }
    // A stream cut short may end inside a line: only whole lines count.
    let stdout = match out.cut || out.hung.is_some() {
        true => out.stdout.rfind('\n').map_or("", |i| &out.stdout[..=i]),
        false => &out.stdout,
    };
    check_stdout(stdout, expect, &mut v);
    check_foreign(&out.stderr, "stderr", expect.run, &mut v);
    check_errors(out, expect, &mut v);
    if let Some(d) = v.detail.take() {
        v.detail = Some(format!("{d} ({})", error_list(out)));
    }
    if let Some(h) = &out.hung {
        v.hung = true;
        v.note(format!("hung: {h}"));
    } else if expect.must_end && !out.ended {
        v.lost += 1;
        v.note("stream closed without end_of_execution".into());
    }
    if out.bad_lines > 0 {
        v.lost += out.bad_lines;
        v.note(format!("{} malformed lines", out.bad_lines));
    }
    v
}

/// Splits `@<run>#<index>:<payload>`.
fn parse(line: &str) -> Option<(u64, usize, &str)> {
    let rest = line.strip_prefix('@')?;
    let (run, rest) = rest.split_once('#')?;
    let (idx, payload) = rest.split_once(':')?;
    Some((run.parse().ok()?, idx.parse().ok()?, payload))
}

fn check_stdout(text: &str, expect: &Expect, v: &mut Verdict) {
    let filler = expect.width.map(|w| "x".repeat(w));
    for line in text.split('\n').filter(|l| l.starts_with('@')) {
        let line = match line.strip_suffix('\r') {
            Some(l) => {
                v.stray_cr += 1;
                l
            }
            None => line,
        };
        let Some((run, idx, payload)) = parse(line) else {
            v.lost += 1;
            v.note(format!("corrupt line {:?}", clip(line)));
            continue;
        };
        if run != expect.run {
            v.misrouted += 1;
            v.note(format!("line of run {run} in run {}", expect.run));
        } else if idx >= expect.n || idx < v.got {
            v.lost += 1;
            v.note(format!("line {idx} out of order (expected {})", v.got));
        } else if filler.as_deref().is_some_and(|f| f != payload) {
            v.lost += 1;
            v.note(format!("line {idx} corrupt: {:?}", clip(payload)));
        } else {
            if idx > v.got {
                v.lost += idx - v.got;
                v.note(format!("lines {}..{idx} missing", v.got));
            }
            v.got = idx + 1;
            if filler.is_none() {
                v.payloads.push(payload.to_string());
            }
        }
    }
    if expect.complete && v.got < expect.n {
        v.lost += expect.n - v.got;
        v.note(format!("{} of {} lines arrived", v.got, expect.n));
    }
}

/// The errors of a run, for a problem's detail.
fn error_list(out: &Outcome) -> String {
    let all: Vec<String> = out
        .errors
        .iter()
        .map(|(n, v)| format!("{n}: {}", clip(v)))
        .collect();
    format!("errors [{}]", all.join("; "))
}

/// Marked lines on a stream the cell does not print to: another run's, or this run's on the
/// wrong stream.
fn check_foreign(text: &str, stream: &str, run: u64, v: &mut Verdict) {
    for line in text.split('\n').filter(|l| parse(l).is_some()) {
        v.misrouted += 1;
        v.note(format!("{stream} carries {:?} in run {run}", clip(line)));
    }
}

fn check_errors(out: &Outcome, expect: &Expect, v: &mut Verdict) {
    let own = error_marker(expect.run);
    for (name, value) in &out.errors {
        if value.contains("soakerr-") && !value.contains(&own) {
            v.misrouted += 1;
            v.note(format!("error {name}: {value:?} of another run"));
        }
    }
    let n = out.errors.len();
    if n > 1 {
        v.multi_error = true;
        let names: Vec<&str> = out.errors.iter().map(|(n, _)| n.as_str()).collect();
        v.note(format!("{n} errors in one execution: {}", names.join(", ")));
    }
    if let Some(want) = expect.errors {
        if n < want && out.hung.is_none() && !out.cut {
            v.lost += want - n;
            v.note(format!("expected {want} error(s), got {n}"));
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(n: usize, complete: bool) -> Expect {
        Expect {
            run: 7,
            n,
            width: Some(2),
            complete,
            must_end: true,
            errors: Some(0),
        }
    }

    fn outcome(stdout: &str) -> Outcome {
        Outcome {
            stdout: stdout.into(),
            ended: true,
            ..Default::default()
        }
    }

    #[test]
    fn in_order_lines_pass() {
        let v = judge(&outcome("@7#0:xx\n@7#1:xx\n"), &expect(2, true));
        assert!(v.clean(), "{v:?}");
    }

    #[test]
    fn gaps_reorders_and_foreign_lines_are_caught() {
        let v = judge(&outcome("@7#1:xx\n@7#0:xx\n"), &expect(2, true));
        assert_eq!(v.lost, 2, "{v:?}");
        let v = judge(&outcome("@7#0:xx\n@8#0:xx\n@7#1:x\n"), &expect(2, true));
        assert_eq!((v.lost, v.misrouted), (2, 1), "{v:?}");
        let v = judge(&outcome("@7#0:xx\n"), &expect(3, false));
        assert!(
            v.clean(),
            "a prefix is fine when completeness is not required"
        );
    }

    #[test]
    fn two_errors_are_a_violation() {
        let mut out = outcome("");
        out.errors = vec![
            ("ExecutionAborted".into(), "".into()),
            ("TimeoutError".into(), "".into()),
        ];
        let v = judge(&out, &expect(0, true));
        assert!(v.multi_error);
    }
}
