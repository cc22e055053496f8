//! When another job may start beside the running ones: whenever the GIL is free.
//!
//! CPython says nothing about who holds the GIL or when it is let go, so the watcher thread
//! asks for it and reads the answer's delay. A GIL nobody holds is granted in microseconds.
//! A holder that runs Python gives it up only when the interpreter's switch interval (5 ms)
//! forces it to. A holder that calls into C code which lets go of the GIL (a blocking read,
//! `time.sleep`, PBKDF2) gives it up at that moment. So:
//!
//! 1. **Probe.** Take the GIL and let it go. Waiting [`BUSY_WAIT`] or longer means a job ran
//!    Python that whole time: nothing starts, and the watcher backs off (below).
//! 2. **Blocked.** Granted at once, and every running job's thread sleeps in the kernel: they
//!    all wait on something other than the GIL (nobody holds it), so one more job may start.
//! 3. **Off the GIL on a core.** Granted, but some job's thread is running: it runs C code
//!    without the GIL, or Python between short releases (an SQLite step of 50 µs), which a
//!    probe cannot tell apart: it is granted the GIL at the next release either way. So the
//!    watcher holds the GIL for [`HOLD`] and reads the CPU clocks meanwhile. A thread whose
//!    clock ran through it is off the GIL, on a core; one that stopped is waiting for the
//!    GIL, so it runs Python, and nothing starts. Jobs on a core are capped at the machine's
//!    cores: more would slice the same cores thinner. A thread that wants the GIL waits at
//!    most [`HOLD`] for this, and only when the first probe found the GIL free.
//!
//! While every running job holds its mark "off the GIL", the queue's next job may start,
//! also on the thread that has just finished one (keeping the GIL, see `run_busy`). A
//! sleeping job's mark holds while its thread's CPU clock reads what it read when marked:
//! a thread that has not run since has not gone back to Python. (One woken but still
//! waiting for a core on a saturated machine counts as waiting a little too long: a job may
//! start just before it runs.) A mark of a job on a core, or of a thread without a readable
//! clock, holds for [`TRUST`] and is renewed [`RENEW_AHEAD`] of its end while a backlog
//! waits. A job without a mark is taken to run Python.
//!
//! **What it costs a CPU-bound page.** A probe against a holder running Python waits for the
//! switch interval and then makes the holder hand the GIL over and back: two thread wake-ups.
//! After such a probe the watcher backs off, doubling from [`MIN_BACKOFF`] to
//! [`MAX_BACKOFF`], so a page that never leaves the GIL pays one such hand-off every 20 ms
//! or so. While backing off, the watcher reads the running threads' CPU clocks every
//! [`TICK`] (one cheap syscall each, no GIL) and probes at once when a running one stops: a
//! job that starts to wait is seen within a tick, not at the end of the back-off.
//!
//! **Why not other signals.** CPU clocks and scheduler states alone cannot tell a thread
//! waiting for the GIL from one waiting for a database (both sleep), nor a thread running
//! Python from one running PBKDF2 (both burn CPU). The GIL's own state is a private struct
//! whose layout differs from 3.10 to 3.13. The probe works on every CPython from 3.10 on,
//! through the public API only.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Inner, State, within};

/// A probe that waits this long met a holder running Python.
const BUSY_WAIT: Duration = Duration::from_millis(1);
/// A probe answered within this found the GIL free.
const FREE_WAIT: Duration = Duration::from_micros(200);
/// Between the two looks at blocked threads: time for one woken by the probe to run.
const SETTLE: Duration = Duration::from_micros(100);
/// How long the watcher holds the GIL to see which running threads go on without it.
const HOLD: Duration = Duration::from_micros(100);
/// How long a mark "off the GIL on a core" is believed without another look.
const TRUST: Duration = Duration::from_millis(10);
/// How long before it runs out the watcher renews such a mark.
pub(super) const RENEW_AHEAD: Duration = Duration::from_millis(3);
/// How often, while backing off, the running threads' CPU clocks are read.
const TICK: Duration = Duration::from_micros(500);
const MIN_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(16);
/// While stopping, how often the watcher looks whether it is done.
const STOP_POLL: Duration = Duration::from_millis(10);

/// A running job the watcher saw off the GIL.
#[derive(Clone, Copy)]
pub(super) struct OffGil {
    seen: Instant,
    /// Its thread ran C code on a core without the GIL, rather than sleeping.
    pub(super) on_core: bool,
    /// A sleeping thread's CPU clock when seen: while it reads the same, the thread has not
    /// run since, so it still waits.
    cpu: Option<Duration>,
}

impl OffGil {
    /// Whether the job is still off the GIL: a sleeping one for as long as its thread has
    /// not run; any other for [`TRUST`].
    pub(super) fn holds(self, thread: Option<ThreadProbe>, now: Instant) -> bool {
        match self.cpu {
            Some(cpu) => thread.and_then(|t| t.cpu()) == Some(cpu),
            None => now.saturating_duration_since(self.seen) < TRUST,
        }
    }
}

/// A running job as the watcher samples it, with the state lock released.
struct Sampled {
    key: (usize, Instant),
    thread: Option<ThreadProbe>,
    off: Option<OffGil>,
}

impl Sampled {
    /// Sleeps in the kernel now: known from a mark that still holds, or read from /proc.
    fn sleeping(&self) -> bool {
        let marked = self
            .off
            .is_some_and(|o| o.cpu.is_some() && o.holds(self.thread, Instant::now()));
        marked || self.thread.is_none_or(|t| t.sleeping())
    }
}

enum Verdict {
    /// Some job runs Python (or the GIL is held outside the pool).
    Busy,
    /// Every sampled job is off the GIL, as marked.
    Off(Vec<((usize, Instant), OffGil)>),
}

/// The watcher thread: judges whenever a backlog waits behind running jobs.
pub(super) fn watch_loop(inner: Arc<Inner>) {
    let mut backoff: Option<Duration> = None;
    let mut st = inner.lock();
    loop {
        loop {
            if st.stopping && st.queue.is_empty() && st.running.is_empty() {
                return;
            }
            if inner.needs_judging(&st) {
                break;
            }
            // With a backlog, marks of jobs on a core run out without anyone saying so:
            // they are renewed before they do.
            let nap = if st.stopping {
                Some(STOP_POLL)
            } else if !st.queue.is_empty() {
                Some(TRUST - RENEW_AHEAD)
            } else {
                None
            };
            st.watcher_asleep = true;
            st = match nap {
                Some(nap) => {
                    inner
                        .watch
                        .wait_timeout(st, nap)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => inner.watch.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.watcher_asleep = false;
        }
        let mut jobs = sample(&st);
        drop(st);
        if let Some(wait) = backoff {
            wait_for_a_stall(&inner, &jobs, Instant::now() + wait);
            st = inner.lock();
            if !inner.needs_judging(&st) {
                continue;
            }
            jobs = sample(&st);
            drop(st);
        }
        let verdict = judge(&inner, &jobs);
        st = inner.lock();
        match verdict {
            Verdict::Busy => {
                backoff = Some(backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF)));
            }
            Verdict::Off(seen) => {
                if mark(&mut st, &seen) {
                    backoff = None;
                }
                tracing::trace!(
                    running = st.running.len(),
                    queued = st.queue.len(),
                    "running requests are off the GIL"
                );
                Inner::wake_or_spawn(&inner, &mut st);
            }
        }
    }
}

fn sample(st: &State) -> Vec<Sampled> {
    // A stuck job holds nothing back (see `Running::stuck`): nothing to learn from it.
    st.running
        .iter()
        .filter(|r| !r.stuck)
        .map(|r| Sampled {
            key: r.key(),
            thread: r.thread,
            off: r.off,
        })
        .collect()
}

/// Marks the sampled jobs still running as off the GIL; says whether there was any.
fn mark(st: &mut State, seen: &[((usize, Instant), OffGil)]) -> bool {
    let mut any = false;
    for r in st.running.iter_mut() {
        if let Some((_, off)) = seen.iter().find(|(k, _)| *k == r.key()) {
            r.off = Some(*off);
            any = true;
        }
    }
    any
}

/// Sleeps until `until`, or until a sampled thread that was running stops (it has started
/// to wait), or until the jobs running are no longer the sampled ones. Threads already
/// asleep do not count: their jobs hold marks, or will be judged with the rest.
fn wait_for_a_stall(inner: &Inner, jobs: &[Sampled], until: Instant) {
    let mut last = cpu_clocks(jobs);
    let mut ran = vec![false; jobs.len()];
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        thread::sleep(TICK.min(until - now));
        let clocks = cpu_clocks(jobs);
        let mut stalled = false;
        for (i, (a, b)) in last.iter().zip(&clocks).enumerate() {
            if let (Some(a), Some(b)) = (a, b) {
                let running = b.saturating_sub(*a) >= TICK / 4;
                stalled |= ran[i] && !running;
                ran[i] = running;
            }
        }
        if stalled {
            return;
        }
        last = clocks;
        let st = inner.lock();
        let live = || st.running.iter().filter(|r| !r.stuck);
        let same = live().count() == jobs.len() && live().zip(jobs).all(|(r, j)| r.key() == j.key);
        if !same || !inner.needs_judging(&st) {
            return;
        }
    }
}

/// Probes the GIL, and the running threads, once or twice: see the module's doc.
fn judge(inner: &Inner, jobs: &[Sampled]) -> Verdict {
    let waited = probe(inner);
    if waited >= BUSY_WAIT {
        return Verdict::Busy;
    }
    if waited < FREE_WAIT && jobs.iter().all(Sampled::sleeping) {
        // The second look catches a job that was itself waiting for the GIL behind the
        // probe: it sleeps, but takes the GIL once woken. The clocks are read first, so a
        // thread that runs after them no longer matches its mark.
        thread::sleep(SETTLE);
        let clocks = cpu_clocks(jobs);
        if jobs.iter().all(Sampled::sleeping) && probe(inner) < FREE_WAIT {
            let seen = Instant::now();
            let marks = jobs.iter().zip(clocks).map(|(j, cpu)| {
                let off = OffGil {
                    seen,
                    on_core: false,
                    cpu,
                };
                (j.key, off)
            });
            return Verdict::Off(marks.collect());
        }
    }
    // Some thread runs. Only holding the GIL tells C code without it (which goes on) from
    // Python between short releases (which stops at once, waiting for the GIL).
    let (before, after, held) = holding_the_gil(inner, jobs);
    thread::sleep(SETTLE);
    let later = cpu_clocks(jobs);
    let seen = Instant::now();
    let mut marks = Vec::with_capacity(jobs.len());
    for (j, ((a, b), c)) in jobs.iter().zip(before.iter().zip(&after).zip(&later)) {
        let off = match (a, b, c) {
            (Some(a), Some(b), _) if b.saturating_sub(*a) >= held / 2 => OffGil {
                seen,
                on_core: true,
                cpu: None,
            },
            // Ran neither while the GIL was held nor once it was let go, and sleeps: it
            // waits on something else.
            (Some(a), Some(b), Some(c))
                if a == b && b == c && j.thread.is_none_or(|t| t.sleeping()) =>
            {
                OffGil {
                    seen,
                    on_core: false,
                    cpu: Some(*c),
                }
            }
            (None, _, _) | (_, None, _) => OffGil {
                seen,
                on_core: false,
                cpu: None,
            },
            // Stopped while the GIL was held, ran once it was let go, or waits for a core:
            // it may be running Python.
            _ => return Verdict::Busy,
        };
        marks.push((j.key, off));
    }
    Verdict::Off(marks)
}

/// The running threads' CPU clocks before and after the watcher holds the GIL for
/// [`HOLD`], and how long it held it.
type HeldClocks = (Vec<Option<Duration>>, Vec<Option<Duration>>, Duration);

fn holding_the_gil(inner: &Inner, jobs: &[Sampled]) -> HeldClocks {
    let mut clocks = None;
    let mut measure = || {
        let start = Instant::now();
        let before = cpu_clocks(jobs);
        thread::sleep(HOLD);
        let after = cpu_clocks(jobs);
        clocks = Some((before, after, start.elapsed()));
    };
    within(inner.contexts.gil.as_ref(), &mut measure);
    clocks.expect("the measurement ran")
}

/// How long taking and letting go of the GIL took.
fn probe(inner: &Inner) -> Duration {
    let start = Instant::now();
    within(inner.contexts.gil.as_ref(), &mut || {});
    start.elapsed()
}

fn cpu_clocks(jobs: &[Sampled]) -> Vec<Option<Duration>> {
    jobs.iter()
        .map(|j| j.thread.and_then(|t| t.cpu()))
        .collect()
}

/// Looks at one thread from another: its CPU time, and whether it sleeps in the kernel.
#[derive(Clone, Copy)]
pub(super) struct ThreadProbe {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    clock: libc::clockid_t,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    tid: libc::pid_t,
}

impl ThreadProbe {
    #[cfg(target_os = "linux")]
    pub(super) fn current() -> Option<ThreadProbe> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() is always valid for the calling thread and `clock` is a valid
        // out-pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        (rc == 0).then_some(ThreadProbe { clock, tid })
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn current() -> Option<ThreadProbe> {
        None
    }

    #[cfg(target_os = "linux")]
    fn cpu(self) -> Option<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; an exited thread's clock gives an error, not UB.
        let rc = unsafe { libc::clock_gettime(self.clock, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    #[cfg(not(target_os = "linux"))]
    fn cpu(self) -> Option<Duration> {
        None
    }

    /// True when the thread sleeps (`S`/`D`): blocked, not merely preempted (`R`).
    #[cfg(target_os = "linux")]
    fn sleeping(self) -> bool {
        let path = format!("/proc/self/task/{}/stat", self.tid);
        let Ok(stat) = std::fs::read_to_string(path) else {
            return true;
        };
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        matches!(state, Some('S' | 'D'))
    }

    #[cfg(not(target_os = "linux"))]
    fn sleeping(self) -> bool {
        true
    }
}
