//! The runner: owns the contexts (slots), executes planned runs on them with faults injected at
//! chosen moments, follows every fault with a state check on the same context, and records what
//! the checker finds.
//!
//! Locking: plain runs share a slot (read lock), so several can queue on one context in the agent;
//! a fault run takes the slot alone (write lock) with its optional bystander and its follow-up, so
//! a state loss is attributed to the fault that caused it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;

use kernelbox::client::Client;

use crate::cells::{self, Lang};
use crate::check::{self, Expect, Verdict};
use crate::live::{Live, Outcome, Step};
use crate::plan::{Kind, Plan};
use crate::procs::{self, Watch};
use crate::report::Stats;

/// Bounds that decide when a stream counts as hung.
pub struct Settings {
    /// No line at all (not even a keepalive) for this long.
    pub silence: Duration,
    /// A stream must end this long after its fault (interrupt, kill) or its `timeout`.
    pub end_bound: Duration,
    /// A run without a fault must end within this.
    pub run_bound: Duration,
    /// A context call (create, delete, interrupt) must answer within this.
    pub control_bound: Duration,
}

/// The live context of a slot; `id` is `None` once the slot could not be (re)opened.
#[derive(Default)]
pub struct Ctx {
    id: Option<String>,
    /// The pid the kernel reported in the last state check (the kill fault's target).
    pid: Option<u32>,
}

pub struct Slot {
    pub lang: Lang,
    /// The value of the context's state variable while its kernel lives.
    token: String,
    ctx: RwLock<Ctx>,
}

/// How a run is disturbed.
enum Inject {
    Nothing,
    CutAfterLines(usize),
    CutAfter(Duration),
    /// After the cell's first `n` lines arrived, wait, then interrupt or kill.
    Interrupt(usize, Duration),
    Kill(usize, Duration, u32),
}

/// A finished run.
struct Done {
    out: Outcome,
    /// When the fault's stream ended or was dropped: follow-up latency counts from here.
    ended: Instant,
    ms: f64,
}

pub struct Runner {
    client: Client,
    pub slots: Vec<Slot>,
    stats: Mutex<Stats>,
    watch: Option<Watch>,
    settings: Settings,
    next_run: AtomicU64,
}

impl Runner {
    pub fn new(client: Client, slots: &[Lang], watch: Option<Watch>, settings: Settings) -> Runner {
        let slots = slots
            .iter()
            .enumerate()
            .map(|(i, lang)| Slot {
                lang: *lang,
                token: format!("tok{i}"),
                ctx: RwLock::new(Ctx::default()),
            })
            .collect();
        Runner {
            client,
            slots,
            stats: Mutex::new(Stats::default()),
            watch,
            settings,
            next_run: AtomicU64::new(1),
        }
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn take_stats(&self) -> Stats {
        std::mem::take(&mut *self.stats())
    }

    /// Opens every slot's context (one at a time: kernels start faster without contention).
    /// Returns the slots that are open; a language whose context cannot start is reported and
    /// left out (e.g. a kernelspec this agent does not support yet).
    pub async fn open_all(&self) -> Vec<(usize, Lang)> {
        let mut open = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let mut ctx = slot.ctx.write().await;
            match self.open(slot, &mut ctx).await {
                Ok(()) => open.push((i, slot.lang)),
                Err(e) => eprintln!("kernelbox-soak: leaving {} out: {e}", slot.lang),
            }
        }
        open
    }

    /// Deletes every context the soak made.
    pub async fn close_all(&self) {
        for slot in &self.slots {
            let mut ctx = slot.ctx.write().await;
            if let Some(id) = ctx.id.take() {
                let deleted = self.control("delete context", self.client.remove_context(&id));
                self.note_failure(deleted.await);
            }
        }
    }

    /// One worker: takes the next planned run until the plan or the time is used up.
    pub async fn work(
        self: Arc<Self>,
        plans: Arc<Vec<Plan>>,
        cursor: Arc<AtomicUsize>,
        stop: Instant,
    ) {
        while Instant::now() < stop {
            let Some(plan) = plans.get(cursor.fetch_add(1, Ordering::SeqCst)) else {
                return;
            };
            let slot = &self.slots[plan.slot];
            match plan.kind {
                Kind::Small | Kind::Big => self.plain(slot, plan).await,
                Kind::Queued => self.queued(slot, plan).await,
                _ => self.fault(slot, plan).await,
            }
        }
    }

    async fn open(&self, slot: &Slot, ctx: &mut Ctx) -> Result<(), String> {
        let lang = slot.lang.name();
        let created = self.control(
            "create context",
            self.client.create_context(Some(lang), None),
        );
        let info = created.await?;
        ctx.id = Some(info.id);
        ctx.pid = None;
        self.state_check(slot, ctx).await;
        match ctx.pid {
            Some(_) => Ok(()),
            None => Err(format!(
                "the first state check in a new {lang} context failed"
            )),
        }
    }

    /// Deletes a context that hung and opens a new one in its slot.
    async fn replace(&self, slot: &Slot, ctx: &mut Ctx) {
        if let Some(id) = ctx.id.take() {
            let deleted = self.control("delete hung context", self.client.remove_context(&id));
            self.note_failure(deleted.await);
        }
        self.stats().replaced_contexts += 1;
        if let Err(e) = self.open(slot, ctx).await {
            self.stats()
                .problem(format!("[{}] slot given up: {e}", slot.lang));
            ctx.id = None;
        }
    }

    /// A context call bounded in time; a call that does not answer counts as hung.
    async fn control<T, E: std::fmt::Display>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.settings.control_bound, call).await {
            Ok(result) => result.map_err(|e| format!("{what}: {e}")),
            Err(_) => {
                let e = format!("{what}: no answer within {:?}", self.settings.control_bound);
                let mut stats = self.stats();
                stats.control_hung += 1;
                stats.problem(e.clone());
                Err(e)
            }
        }
    }

    /// Records a failed context call that did answer.
    fn note_failure<T>(&self, result: Result<T, String>) {
        if let Err(e) = result {
            self.stats().problem(e);
        }
    }

    /// A small or big print on a shared slot.
    async fn plain(&self, slot: &Slot, plan: &Plan) {
        let ctx = slot.ctx.read().await;
        let Some(id) = ctx.id.clone() else {
            self.stats().skipped += 1;
            return;
        };
        let hung = self
            .printing_run(slot.lang, &id, plan.kind, plan.n, plan.width, plan.timeout)
            .await;
        drop(ctx);
        if hung {
            self.replace_if_current(slot, &id).await;
        }
    }

    /// Three prints sent at once to one context: the agent queues them.
    async fn queued(&self, slot: &Slot, plan: &Plan) {
        let ctx = slot.ctx.read().await;
        let Some(id) = ctx.id.clone() else {
            self.stats().skipped += 1;
            return;
        };
        let runs = (0..3).map(|i| {
            self.printing_run(
                slot.lang,
                &id,
                Kind::Queued,
                plan.n + i,
                plan.width,
                plan.timeout,
            )
        });
        let hung = futures_util::future::join_all(runs).await.contains(&true);
        drop(ctx);
        if hung {
            self.replace_if_current(slot, &id).await;
        }
    }

    async fn replace_if_current(&self, slot: &Slot, hung_id: &str) {
        let mut ctx = slot.ctx.write().await;
        if ctx.id.as_deref() == Some(hung_id) {
            self.replace(slot, &mut ctx).await;
        }
    }

    /// A run that prints `n` lines and should end normally. Returns whether it hung.
    async fn printing_run(
        &self,
        lang: Lang,
        id: &str,
        kind: Kind,
        n: usize,
        width: usize,
        timeout: Option<f64>,
    ) -> bool {
        let run = self.next_run.fetch_add(1, Ordering::SeqCst);
        let code = cells::lines(lang, run, n, width);
        let done = self.run_cell(id, &code, timeout, Inject::Nothing).await;
        let gone = check::cut_by_error(&done.out);
        let expect = Expect {
            run,
            n,
            width: Some(width),
            complete: !gone,
            must_end: true,
            errors: (!gone).then_some(0),
        };
        self.judge(kind, lang, &done, &expect).hung
    }

    /// A fault run, with its bystander queued behind it and its follow-up right after it.
    async fn fault(&self, slot: &Slot, plan: &Plan) {
        let mut guard = slot.ctx.write().await;
        let ctx = &mut *guard;
        let Some(id) = ctx.id.clone() else {
            self.stats().skipped += 1;
            return;
        };
        let run = self.next_run.fetch_add(1, Ordering::SeqCst);
        let (code, inject, mut expect) = self.fault_cell(slot.lang, run, plan, ctx.pid);
        let main = async {
            let done = self.run_cell(&id, &code, plan.timeout, inject).await;
            if check::cut_by_error(&done.out) {
                expect.complete = false;
                expect.errors = None;
            }
            if self.judge(plan.kind, slot.lang, &done, &expect).hung {
                self.replace(slot, ctx).await;
            } else {
                self.follow_up(slot, ctx, plan.kind, &done).await;
            }
        };
        let bystander = async {
            if plan.bystander {
                // Sent once the fault run's request is in, so it queues behind it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.printing_run(slot.lang, &id, Kind::Bystander, 3, 10, None)
                    .await;
            }
        };
        tokio::join!(main, bystander);
    }

    /// The code, disturbance and expectation of a fault run.
    fn fault_cell(
        &self,
        lang: Lang,
        run: u64,
        plan: &Plan,
        pid: Option<u32>,
    ) -> (String, Inject, Expect) {
        let (n, delay) = (plan.n, Duration::from_millis(plan.delay_ms));
        let lines = cells::lines(lang, run, n, plan.width);
        let sleeping = lines.clone() + &cells::sleep(lang, 300, plan.kind.awaiting());
        let mut expect = Expect {
            run,
            n,
            width: Some(plan.width),
            complete: true,
            must_end: true,
            errors: None,
        };
        let safe_pid = pid.filter(|p| self.watch.as_ref().is_some_and(|w| w.note(*p)));
        if plan.kind == Kind::Kill && safe_pid.is_none() {
            let why = format!(
                "SIGKILL [{lang}]: no pid known to be the agent's kernel; disconnecting instead"
            );
            self.stats().problem(why);
        }
        let (code, inject) = match (plan.kind, plan.cut_after_lines, safe_pid) {
            (Kind::Error, ..) => (lines + &cells::raise(lang, run), Inject::Nothing),
            (Kind::Timeout | Kind::AwaitTimeout, ..) => (sleeping, Inject::Nothing),
            (Kind::Disconnect, Some(k), _) => (lines, Inject::CutAfterLines(k)),
            (Kind::Interrupt | Kind::AwaitInterrupt, ..) => (sleeping, Inject::Interrupt(n, delay)),
            (Kind::Kill, _, Some(pid)) => (sleeping, Inject::Kill(n, delay, pid)),
            // Disconnects, and kills without a pid known to be the agent's kernel.
            _ => (sleeping, Inject::CutAfter(delay)),
        };
        match (plan.kind, &inject) {
            (Kind::Error | Kind::Timeout | Kind::AwaitTimeout, _) => expect.errors = Some(1),
            (_, Inject::CutAfterLines(_) | Inject::CutAfter(_)) => {
                expect.complete = false;
                expect.must_end = false;
            }
            _ => {}
        }
        (code, inject, expect)
    }

    /// Sends one cell and reads its stream, disturbing it as `inject` says.
    async fn run_cell(&self, id: &str, code: &str, timeout: Option<f64>, inject: Inject) -> Done {
        let s = &self.settings;
        let started = Instant::now();
        let end_by =
            started + timeout.map_or(s.run_bound, |t| Duration::from_secs_f64(t) + s.end_bound);
        let out = match Live::start(&self.client, id, code, timeout, s.silence).await {
            Err(e) if e.starts_with("no response") => Outcome {
                hung: Some(e),
                ..Default::default()
            },
            Err(e) => Outcome {
                failed: Some(e),
                ..Default::default()
            },
            Ok(mut live) => match inject {
                Inject::Nothing => live.finish(end_by).await,
                Inject::CutAfterLines(k) => {
                    let step = live.until(end_by, |o| o.stdout_lines >= k).await;
                    live.conclude(step)
                }
                Inject::CutAfter(d) => match live.until(started + d, |_| false).await {
                    Step::Deadline => live.cut(),
                    step => live.conclude(step),
                },
                Inject::Interrupt(n, d) => self.strike(live, id, end_by, n, d, None).await,
                Inject::Kill(n, d, pid) => self.strike(live, id, end_by, n, d, Some(pid)).await,
            },
        };
        Done {
            out,
            ended: Instant::now(),
            ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// Waits for the cell's first `n` lines and `delay` more, then interrupts the context (or
    /// kills `pid`); the stream must end within the end bound after that.
    async fn strike(
        &self,
        mut live: Live,
        id: &str,
        end_by: Instant,
        n: usize,
        delay: Duration,
        pid: Option<u32>,
    ) -> Outcome {
        let step = live.until(end_by, |o| o.stdout_lines >= n).await;
        if step != Step::Met {
            return live.conclude(step);
        }
        let step = live.until(Instant::now() + delay, |_| false).await;
        if step != Step::Deadline {
            return live.conclude(step);
        }
        let struck = Instant::now();
        let interrupt = match pid {
            Some(pid) => {
                procs::kill9(pid);
                None
            }
            None => {
                let (client, id) = (self.client.clone(), id.to_string());
                Some(tokio::spawn(
                    async move { client.interrupt_context(&id).await },
                ))
            }
        };
        let out = live.finish(struck + self.settings.end_bound).await;
        if let Some(task) = interrupt {
            let answer = async {
                task.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            };
            self.note_failure(self.control("interrupt", answer).await);
        }
        out
    }

    /// Runs the checker on a finished run and records its verdict.
    fn judge(&self, kind: Kind, lang: Lang, done: &Done, expect: &Expect) -> Verdict {
        let verdict = check::judge(&done.out, expect);
        let mut stats = self.stats();
        stats.record(kind, lang, &verdict, &done.out, done.ms);
        if kind.is_fault() {
            let names = stats.error_names.entry((kind, lang)).or_default();
            if done.out.errors.is_empty() {
                *names.entry("(none)".into()).or_default() += 1;
            }
            for (name, _) in &done.out.errors {
                *names.entry(name.clone()).or_default() += 1;
            }
        }
        verdict
    }

    /// The state check after a fault: its latency, and whether the context kept its state (one
    /// retry when the first check prints nothing, e.g. it reports the restart as its error).
    async fn follow_up(&self, slot: &Slot, ctx: &mut Ctx, after: Kind, fault: &Done) {
        let mut reported = says_restarted(&fault.out);
        let mut state = None;
        for attempt in 0..2 {
            let (seen, out) = self.state_check(slot, ctx).await;
            if attempt == 0 {
                let ms = fault.ended.elapsed().as_secs_f64() * 1000.0;
                self.stats()
                    .follow_ms
                    .entry((after, slot.lang))
                    .or_default()
                    .push(ms);
            }
            reported |= says_restarted(&out);
            if out.hung.is_some() {
                self.replace(slot, ctx).await;
                break;
            }
            if seen.is_some() {
                state = seen;
                break;
            }
        }
        let mut stats = self.stats();
        let st = stats.state.entry(after).or_default();
        st.checks += 1;
        match state {
            Some(true) => st.kept += 1,
            Some(false) if reported => st.lost_reported += 1,
            Some(false) => st.lost_silent += 1,
            None => st.unknown += 1,
        }
    }

    /// Runs the state cell: `Some(true)` if the state variable survived, `Some(false)` if it
    /// was gone; records the kernel's pid for the kill fault and the leak scan.
    async fn state_check(&self, slot: &Slot, ctx: &mut Ctx) -> (Option<bool>, Outcome) {
        let Some(id) = ctx.id.clone() else {
            return (None, Outcome::default());
        };
        let run = self.next_run.fetch_add(1, Ordering::SeqCst);
        let code = cells::state_check(slot.lang, run, &slot.token);
        let done = self.run_cell(&id, &code, None, Inject::Nothing).await;
        let gone = check::cut_by_error(&done.out);
        let expect = Expect {
            run,
            n: 2,
            width: None,
            complete: !gone,
            must_end: true,
            errors: None,
        };
        let verdict = self.judge(Kind::FollowUp, slot.lang, &done, &expect);
        let payload = |i: usize, tag: &str| {
            verdict
                .payloads
                .get(i)?
                .strip_prefix(tag)
                .map(str::to_string)
        };
        if let Some(pid) = payload(1, "P=").and_then(|p| p.trim().parse().ok()) {
            ctx.pid = Some(pid);
            if let Some(w) = &self.watch {
                w.note(pid);
            }
        }
        let seen = payload(0, "S=").and_then(|s| match s.trim() {
            "LOST" => Some(false),
            t if t == slot.token => Some(true),
            _ => None,
        });
        (seen, done.out)
    }
}

fn says_restarted(out: &Outcome) -> bool {
    out.errors
        .iter()
        .any(|(name, _)| name == "ContextRestarting")
}

impl Runner {
    /// Kernel processes still alive after every context was deleted, given `settle` to exit;
    /// `None` when the agent's processes are not watched.
    pub async fn leftovers(&self, settle: Duration) -> Option<(Vec<procs::Stat>, usize)> {
        let watch = self.watch.as_ref()?;
        let until = Instant::now() + settle;
        loop {
            let left = watch.leftovers();
            if left.is_empty() || Instant::now() >= until {
                return Some((left, watch.groups_seen()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
