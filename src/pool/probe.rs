//! The occasional look at the GIL that the job timings cannot give, and the clocks both read.
//!
//! A job's own timings cannot tell C code running without the GIL (PBKDF2: it could share
//! the machine's cores with another) from Python (it could not): both keep a core busy. Nor
//! can they tell a wait for the GIL from a wait for a database. So, while a backlog is held
//! back by the estimates below the thread limit, and only then, the probe thread takes the
//! GIL, holds it for [`HOLD`], and reads the running jobs' CPU clocks meanwhile. A thread
//! that runs on while the GIL is held runs without it; one that ran while the probe waited
//! for the GIL and stops once it is held wants the GIL. A probe that waited long for the
//! GIL and found several jobs wanting it has found them contending. What it saw goes to
//! [`Learner::learn_probe`]; it never decides a single start. It runs every few
//! milliseconds while a new kind of job runs, four times a second otherwise, and not at
//! all when nothing could start anyway (no backlog, or the thread limit reached).
//!
//! What it costs: a probe against a holder running Python waits for the switch interval
//! (5 ms) asleep, then takes the GIL over for [`HOLD`].
//!
//! The GIL's own state is a private struct whose layout differs from 3.10 to 3.13; the
//! probe uses only the public API, so it works on every CPython from 3.10 on, and on one
//! built without the GIL it finds every job running on (the jobs are then limited by the
//! cores and the thread limit alone).

use std::fs::File;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::limit::{JobClass, Seen};
use super::{Inner, within};
use crate::sync::Recover;

/// How long the probe holds the GIL to see which running threads go on without it.
const HOLD: Duration = Duration::from_micros(200);

/// The probe thread: sleeps until a held-back backlog wants a look, then looks.
pub(super) fn probe_loop(inner: Arc<Inner>) {
    let mut st = inner.lock();
    loop {
        if st.stopping {
            return;
        }
        if !inner.held_back(&st) {
            st.prober = Prober::Idle;
            st = inner.probe_wanted.wait(st).recover();
            st.prober = Prober::Busy;
            continue;
        }
        let now = st.since(Instant::now());
        let wait = st.learner.probe_in(st.running.iter().map(|r| r.class), now);
        if !wait.is_zero() {
            // Napping: the pool does not wake it for every job, it looks again on its own.
            st.prober = Prober::Napping;
            st = inner.probe_wanted.wait_timeout(st, wait).recover().0;
            st.prober = Prober::Busy;
            continue;
        }
        let jobs: Vec<Looked> = st
            .running
            .iter()
            .filter(|r| !r.stuck)
            .map(|r| Looked {
                class: r.class,
                started: r.started,
                thread: r.probe,
            })
            .collect();
        drop(st);
        let (waited, seen) = look(&inner, &jobs);
        st = inner.lock();
        let now = st.since(Instant::now());
        st.learner.learn_probe(waited, &seen, now);
        Inner::wake_or_spawn(&inner, &mut st);
    }
}

/// Whether the probe thread sleeps until woken, naps until its next look, or works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Prober {
    #[default]
    Busy,
    Napping,
    Idle,
}

/// A running job the probe looks at.
struct Looked {
    class: JobClass,
    started: Instant,
    thread: Option<ThreadProbe>,
}

/// Waits for the GIL, holds it for [`HOLD`], and reads the jobs' clocks around both.
fn look(inner: &Inner, jobs: &[Looked]) -> (Duration, Vec<Seen>) {
    let clocks = || -> Vec<Option<Duration>> {
        jobs.iter()
            .map(|j| j.thread.and_then(|t| t.cpu()))
            .collect()
    };
    let first = clocks();
    let asked = Instant::now();
    let mut readings = None;
    let mut hold = || {
        let got = Instant::now();
        let at_got = clocks();
        thread::sleep(HOLD);
        let at_end = clocks();
        readings = Some((got, at_got, at_end, got.elapsed()));
    };
    within(inner.contexts.gil.as_ref(), &mut hold);
    let (got, at_got, at_end, held) = readings.expect("the hold ran");
    let waited = got - asked;
    let seen = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| {
            let (a, b, c) = (first[i]?, at_got[i]?, at_end[i]?);
            Some(Seen {
                class: j.class,
                age: got.saturating_duration_since(j.started),
                sleeping: j.thread.is_some_and(|t| t.sleeping()),
                before: b.saturating_sub(a),
                during: c.saturating_sub(b),
                held,
            })
        })
        .collect();
    (waited, seen)
}

/// Reads one thread's CPU clock from another thread.
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
        read_clock(self.clock)
    }

    #[cfg(not(target_os = "linux"))]
    fn cpu(self) -> Option<Duration> {
        None
    }

    /// True when the thread sleeps (`S`/`D`): blocked, not merely waiting for a core (`R`).
    #[cfg(target_os = "linux")]
    fn sleeping(self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{}/stat", self.tid)) else {
            return false;
        };
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        matches!(state, Some('S' | 'D'))
    }

    #[cfg(not(target_os = "linux"))]
    fn sleeping(self) -> bool {
        false
    }
}

#[cfg(target_os = "linux")]
fn read_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; an exited thread's clock gives an error, not UB.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// A pool thread's readings of itself, to measure a job: its CPU time and the time it
/// waited for a core.
pub(super) struct OwnClock {
    /// `/proc/thread-self/schedstat`, kept open: one read a measurement.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    schedstat: Option<File>,
}

/// One reading of [`OwnClock`].
#[derive(Clone, Copy, Default)]
pub(super) struct OwnTimes {
    pub(super) cpu: Duration,
    pub(super) run_queue: Duration,
}

impl OwnClock {
    pub(super) fn open() -> OwnClock {
        #[cfg(target_os = "linux")]
        let schedstat = File::open("/proc/thread-self/schedstat").ok();
        #[cfg(not(target_os = "linux"))]
        let schedstat = None;
        OwnClock { schedstat }
    }

    /// The CPU clock is read apart from schedstat: schedstat's CPU time stops at the
    /// thread's last tick, the clock is exact. Without either, zeros: the job's share then
    /// reads as a wait, which only lets more start.
    #[cfg(target_os = "linux")]
    pub(super) fn read(&self) -> OwnTimes {
        let cpu = read_clock(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or_default();
        let run_queue = self
            .schedstat
            .as_ref()
            .and_then(read_run_delay)
            .unwrap_or_default();
        OwnTimes { cpu, run_queue }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn read(&self) -> OwnTimes {
        OwnTimes::default()
    }
}

/// The second field of schedstat: nanoseconds spent runnable, waiting for a core.
#[cfg(target_os = "linux")]
fn read_run_delay(file: &File) -> Option<Duration> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let ns = text.split_ascii_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}
