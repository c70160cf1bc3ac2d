//! What the soak counts while it runs, and the tables it prints at the end.

use std::collections::BTreeMap;

use crate::cells::Lang;
use crate::check::{self, Verdict};
use crate::live::Outcome;
use crate::plan::Kind;
use crate::procs::Stat;

#[derive(Debug, Default)]
pub struct KindStats {
    pub runs: usize,
    pub clean: usize,
    pub hung: usize,
    pub lost: usize,
    pub misrouted: usize,
    pub multi_error: usize,
    /// Runs ended by their kernel going away (`ContextRestarting`, `UnexpectedEndOfExecution`).
    pub kernel_gone: usize,
    /// Runs the kernel aborted (`ExecutionAborted`): expected of some interrupts, but for a
    /// run that was not interrupted (plain, bystander, follow-up) its code never ran.
    pub aborted: usize,
    pub stray_cr: usize,
    pub ms: Vec<f64>,
}

/// What the follow-up after a fault found.
#[derive(Debug, Default)]
pub struct StateStats {
    pub checks: usize,
    pub kept: usize,
    /// State lost, and the fault run or the follow-up said `ContextRestarting`.
    pub lost_reported: usize,
    /// State lost without a word.
    pub lost_silent: usize,
    /// The follow-up printed no state (it failed twice).
    pub unknown: usize,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub kinds: BTreeMap<Kind, KindStats>,
    pub follow_ms: BTreeMap<(Kind, Lang), Vec<f64>>,
    pub state: BTreeMap<Kind, StateStats>,
    /// Context API calls (interrupt, create, delete) that did not answer in time.
    pub control_hung: usize,
    pub replaced_contexts: usize,
    pub skipped: usize,
    pub problems: Vec<String>,
    /// Names of errors per run kind, e.g. what an interrupt produces in each language.
    pub error_names: BTreeMap<(Kind, Lang), BTreeMap<String, usize>>,
}

impl Stats {
    pub fn record(&mut self, kind: Kind, lang: Lang, v: &Verdict, out: &Outcome, ms: f64) {
        let gone = check::kernel_gone(out);
        let aborted = check::has_error(out, "ExecutionAborted");
        let k = self.kinds.entry(kind).or_default();
        k.runs += 1;
        k.clean += v.clean() as usize;
        k.hung += v.hung as usize;
        k.lost += v.lost;
        k.misrouted += v.misrouted;
        k.multi_error += v.multi_error as usize;
        k.kernel_gone += gone as usize;
        k.aborted += aborted as usize;
        k.stray_cr += v.stray_cr;
        k.ms.push(ms);
        if let Some(d) = v.detail.as_ref().filter(|_| !v.clean()) {
            self.problem(format!("{kind} [{lang}]: {d}"));
        } else if aborted && !kind.is_fault() {
            self.problem(format!("{kind} [{lang}]: aborted though not interrupted"));
        }
    }

    pub fn problem(&mut self, what: String) {
        if self.problems.len() < 40 {
            self.problems.push(what);
        }
    }

    pub fn totals(&self) -> (usize, usize, usize, usize) {
        let sum = |f: fn(&KindStats) -> usize| self.kinds.values().map(f).sum::<usize>();
        (
            sum(|k| k.hung) + self.control_hung,
            sum(|k| k.lost),
            sum(|k| k.misrouted),
            sum(|k| k.multi_error),
        )
    }
}

/// Figures measured around the runs.
pub struct Summary {
    pub seed: u64,
    pub planned: usize,
    pub secs: f64,
    pub languages: Vec<Lang>,
    pub contexts: usize,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub rss_deleted_kb: u64,
    /// Processes left and the number of kernel groups watched; `None`: the agent's processes
    /// could not be watched (remote agent).
    pub leftovers: Option<(Vec<Stat>, usize)>,
    /// What the same scan found before the contexts were deleted (it must find their kernels).
    pub kernels_live: Option<usize>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Prints every table; returns whether the soak passed.
pub fn print(stats: &Stats, s: &Summary) -> bool {
    let langs: Vec<&str> = s.languages.iter().map(|l| l.name()).collect();
    let runs: usize = stats.kinds.values().map(|k| k.runs).sum();
    println!(
        "kernelbox-soak: seed {}, {} planned runs, {runs} streams in {:.0} s, {} contexts ({})\n",
        s.seed,
        s.planned,
        s.secs,
        s.contexts,
        langs.join(", ")
    );
    print_kinds(stats);
    print_follow_ups(stats, &s.languages);
    print_state(stats);
    print_errors(stats);
    let passed = print_summary(stats, s);
    if !stats.problems.is_empty() {
        println!("\nFirst problems:");
        for p in &stats.problems {
            println!("- {p}");
        }
    }
    passed
}

fn print_kinds(stats: &Stats) {
    println!("| run kind | runs | clean | hung | lost lines | misrouted | >1 error | ended by kernel loss | aborted | p50 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (kind, k) in &stats.kinds {
        println!(
            "| {kind} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
            k.runs,
            k.clean,
            k.hung,
            k.lost,
            k.misrouted,
            k.multi_error,
            k.kernel_gone,
            k.aborted,
            pct(&k.ms, 0.5),
            pct(&k.ms, 1.0)
        );
    }
}

fn print_follow_ups(stats: &Stats, langs: &[Lang]) {
    println!("\nFollow-up latency after each fault (ms from the fault's end to the follow-up's end; p50 / max, n):\n");
    let head: Vec<&str> = langs.iter().map(|l| l.name()).collect();
    println!("| fault | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(langs.len()));
    let kinds: std::collections::BTreeSet<Kind> = stats.follow_ms.keys().map(|k| k.0).collect();
    for kind in kinds {
        let cells: Vec<String> = langs
            .iter()
            .map(|l| match stats.follow_ms.get(&(kind, *l)) {
                Some(v) => format!("{:.0} / {:.0} ({})", pct(v, 0.5), pct(v, 1.0), v.len()),
                None => "-".into(),
            })
            .collect();
        println!("| {kind} | {} |", cells.join(" | "));
    }
}

fn print_state(stats: &Stats) {
    println!("\nContext state after each fault (a variable set at context start, checked by the follow-up):\n");
    println!("| fault | checks | state kept | restarted, reported | restarted, silent | unknown |");
    println!("|---|---|---|---|---|---|");
    for (kind, st) in &stats.state {
        println!(
            "| {kind} | {} | {} | {} | {} | {} |",
            st.checks, st.kept, st.lost_reported, st.lost_silent, st.unknown
        );
    }
}

fn print_errors(stats: &Stats) {
    println!("\nErrors reported per fault and language (name: count):\n");
    println!("| fault | language | errors |");
    println!("|---|---|---|");
    for ((kind, lang), names) in &stats.error_names {
        let list: Vec<String> = names.iter().map(|(n, c)| format!("{n}: {c}")).collect();
        println!("| {kind} | {lang} | {} |", list.join(", "));
    }
}

fn print_summary(stats: &Stats, s: &Summary) -> bool {
    let (hung, lost, misrouted, multi) = stats.totals();
    let mb = |kb: u64| kb as f64 / 1024.0;
    let left = s.leftovers.as_ref().map(|(l, _)| l.len());
    let verdict = |ok: bool| if ok { "ok" } else { "FAIL" };
    println!("\n| measure | value | required | |");
    println!("|---|---|---|---|");
    println!(
        "| streams hung (incl. {} context calls) | {hung} | 0 | {} |",
        stats.control_hung,
        verdict(hung == 0)
    );
    println!("| lost lines | {lost} | 0 | {} |", verdict(lost == 0));
    println!(
        "| misrouted lines or errors | {misrouted} | 0 | {} |",
        verdict(misrouted == 0)
    );
    println!(
        "| executions with more than one error | {multi} | 0 | {} |",
        verdict(multi == 0)
    );
    match left {
        Some(n) => println!(
            "| kernel processes left after deleting all contexts ({} kernel groups watched) | {n} | 0 | {} |",
            s.leftovers.as_ref().map_or(0, |(_, g)| *g),
            verdict(n == 0)
        ),
        None => println!("| kernel processes left after deleting all contexts | not watched (agent pid unknown) | 0 | |"),
    }
    if let Some(n) = s.kernels_live {
        println!("| kernel processes the same scan found before deleting the contexts | {n} | | |");
    }
    println!(
        "| contexts replaced after a hang | {} | | |",
        stats.replaced_contexts
    );
    println!(
        "| runs skipped (context unusable) | {} | | |",
        stats.skipped
    );
    println!(
        "| agent RSS: before / after runs / after deleting contexts | {:.1} / {:.1} / {:.1} MB | | |",
        mb(s.rss_before_kb),
        mb(s.rss_after_kb),
        mb(s.rss_deleted_kb)
    );
    for p in s.leftovers.iter().flat_map(|(l, _)| l) {
        println!(
            "  left: pid {} ({}) state {} ppid {} pgrp {}",
            p.pid, p.comm, p.state, p.ppid, p.pgrp
        );
    }
    hung == 0 && lost == 0 && misrouted == 0 && multi == 0 && left.unwrap_or(0) == 0
}
