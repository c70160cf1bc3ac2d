//! The seeded mix: the whole sequence of runs is drawn up front from `--seed`, so a failing mix
//! can be replayed (the interleaving across workers still varies with timing).

use std::fmt;

use crate::cells::Lang;
use crate::prng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A few short lines.
    Small,
    /// 1–5 MB of lines.
    Big,
    /// Three small runs sent at once to one context: they queue behind each other.
    Queued,
    /// Lines, then a raised error.
    Error,
    /// Lines, then a blocking sleep cut by the request's `timeout`.
    Timeout,
    /// The client drops the response at a random moment (big print or sleep).
    Disconnect,
    /// Lines, a blocking sleep, `POST /contexts/{id}/interrupt`.
    Interrupt,
    /// Lines, a blocking sleep, SIGKILL to the kernel.
    Kill,
    /// The awaiting-cell variants: an awaited timer instead of a blocking sleep.
    AwaitTimeout,
    AwaitDisconnect,
    AwaitInterrupt,
    /// A small run queued behind a fault run on the same context.
    Bystander,
    /// The state check right after a fault.
    FollowUp,
}

impl Kind {
    /// Kinds drawn for the mix, with their weights.
    const MIX: [(Kind, u64); 11] = [
        (Kind::Small, 20),
        (Kind::Big, 6),
        (Kind::Queued, 6),
        (Kind::Error, 10),
        (Kind::Timeout, 8),
        (Kind::Disconnect, 10),
        (Kind::Interrupt, 8),
        (Kind::Kill, 6),
        (Kind::AwaitTimeout, 5),
        (Kind::AwaitDisconnect, 5),
        (Kind::AwaitInterrupt, 5),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Small => "small print",
            Kind::Big => "big print",
            Kind::Queued => "queued (3 at once)",
            Kind::Error => "error",
            Kind::Timeout => "timeout",
            Kind::Disconnect => "disconnect",
            Kind::Interrupt => "interrupt",
            Kind::Kill => "SIGKILL",
            Kind::AwaitTimeout => "await + timeout",
            Kind::AwaitDisconnect => "await + disconnect",
            Kind::AwaitInterrupt => "await + interrupt",
            Kind::Bystander => "bystander (queued behind a fault)",
            Kind::FollowUp => "follow-up state check",
        }
    }

    /// Faults are followed by a state check on the same context.
    pub fn is_fault(self) -> bool {
        !matches!(
            self,
            Kind::Small | Kind::Big | Kind::Queued | Kind::Bystander | Kind::FollowUp
        )
    }

    pub fn awaiting(self) -> bool {
        matches!(
            self,
            Kind::AwaitTimeout | Kind::AwaitDisconnect | Kind::AwaitInterrupt
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub slot: usize,
    /// Lines the cell prints (before sleeping or failing).
    pub n: usize,
    pub width: usize,
    /// The request's `timeout` field.
    pub timeout: Option<f64>,
    /// When the fault strikes: ms after the request (disconnect), or after the lines arrived
    /// (interrupt, kill).
    pub delay_ms: u64,
    /// Disconnect after this many stdout lines instead (a big print cut mid-stream).
    pub cut_after_lines: Option<usize>,
    /// Queue a small run behind this one on the same context.
    pub bystander: bool,
}

/// Draws `runs` runs over the given context slots (slot index and language). First every kind
/// once in every language (in random order), so that even a soak cut short by `--max-secs`
/// covers them all; then the weighted mix.
pub fn make(seed: u64, runs: usize, slots: &[(usize, Lang)]) -> Vec<Plan> {
    let mut rng = SplitMix64::new(seed);
    let mut langs: Vec<Lang> = slots.iter().map(|(_, l)| *l).collect();
    langs.dedup();
    let mut plans = Vec::new();
    for lang in langs {
        let own: Vec<usize> = slots
            .iter()
            .filter(|(_, l)| *l == lang)
            .map(|(i, _)| *i)
            .collect();
        for (kind, _) in Kind::MIX
            .iter()
            .filter(|(k, _)| !k.awaiting() || lang.can_await())
        {
            let slot = own[rng.range(0, own.len() as u64 - 1) as usize];
            plans.push(params(&mut rng, *kind, slot));
        }
    }
    shuffle(&mut rng, &mut plans);
    plans.truncate(runs);
    while plans.len() < runs {
        plans.push(draw(&mut rng, slots));
    }
    plans
}

/// Fisher-Yates.
fn shuffle(rng: &mut SplitMix64, plans: &mut [Plan]) {
    for i in (1..plans.len()).rev() {
        plans.swap(i, rng.range(0, i as u64) as usize);
    }
}

fn draw(rng: &mut SplitMix64, slots: &[(usize, Lang)]) -> Plan {
    let (slot, lang) = slots[rng.range(0, slots.len() as u64 - 1) as usize];
    let weights: Vec<u64> = Kind::MIX
        .iter()
        .map(|(k, w)| {
            if k.awaiting() && !lang.can_await() {
                0
            } else {
                *w
            }
        })
        .collect();
    let kind = Kind::MIX[rng.weighted(&weights)].0;
    params(rng, kind, slot)
}

/// The random sizes, timeouts and moments of one run of `kind`.
fn params(rng: &mut SplitMix64, kind: Kind, slot: usize) -> Plan {
    let mut plan = Plan {
        kind,
        slot,
        n: rng.range(1, 3) as usize,
        width: rng.range(0, 40) as usize,
        timeout: None,
        delay_ms: 0,
        cut_after_lines: None,
        bystander: kind.is_fault() && rng.chance(40),
    };
    match kind {
        Kind::Small | Kind::Queued => {
            plan.n = rng.range(1, 20) as usize;
            // A timeout that never fires: the field alone must change nothing.
            plan.timeout = rng.chance(30).then_some(120.0);
        }
        Kind::Big => big(rng, &mut plan, 1, 5),
        Kind::Error => plan.n = rng.range(1, 5) as usize,
        Kind::Timeout | Kind::AwaitTimeout => {
            plan.timeout = Some(rng.range(20, 40) as f64 / 10.0);
        }
        Kind::Disconnect if rng.chance(50) => {
            big(rng, &mut plan, 1, 3);
            plan.cut_after_lines = Some(rng.range(1, plan.n as u64) as usize);
        }
        Kind::Disconnect | Kind::AwaitDisconnect => plan.delay_ms = rng.range(0, 2000),
        Kind::Interrupt | Kind::AwaitInterrupt => plan.delay_ms = rng.range(0, 1000),
        Kind::Kill => plan.delay_ms = rng.range(0, 500),
        Kind::Bystander | Kind::FollowUp => {}
    }
    plan
}

/// A print of `lo..=hi` MB in lines of 60–200 bytes.
fn big(rng: &mut SplitMix64, plan: &mut Plan, lo: u64, hi: u64) {
    let bytes = rng.range(lo << 20, hi << 20) as usize;
    plan.width = rng.range(60, 200) as usize;
    plan.n = bytes / (plan.width + 10);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan_and_every_kind_in_every_language_first() {
        let slots = [(0, Lang::Python), (1, Lang::Python), (2, Lang::Bash)];
        let a = make(5, 40, &slots);
        let b = make(5, 40, &slots);
        let key = |p: &Plan| (p.kind, p.slot, p.n, p.width, p.delay_ms);
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>()
        );
        // 11 kinds in Python, 8 in bash (no awaiting cells): all among the first 19.
        let lang = |p: &Plan| slots[p.slot].1;
        let first: std::collections::HashSet<_> =
            a[..19].iter().map(|p| (p.kind, lang(p))).collect();
        assert_eq!(first.len(), 19);
        assert!(a
            .iter()
            .all(|p| !(p.kind.awaiting() && lang(p) == Lang::Bash)));
    }
}
