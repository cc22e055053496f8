//! How many jobs run at once, learned from what the jobs do.
//!
//! Python threads share one GIL: two requests running Python at once only take turns, each
//! twice as slow, and twenty ruin the tail latency. Jobs that wait (a database, a sleep) or
//! run C code that lets go of the GIL (PBKDF2, zlib) leave it to others. So each kind of job
//! (its request's method and first two path segments: [`JobClass`]) carries what its own
//! runs showed:
//!
//! - `share`: the part of a run's wall time its thread was on a core or waiting for one (CPU
//!   time, and run-queue time as much as the job runs rather than sleeps). Python
//!   throughout gives 1; a 20 ms wait around 0.2 ms of work gives 0.01. Counting the
//!   run-queue time keeps a busy machine from making Python look like it waits.
//! - `gil_free`: the part of its time on a core spent without the GIL, as the occasional
//!   probe saw it ([`super::probe`]): 0 for Python, 1 for PBKDF2.
//!
//! A job's demand is `share * (1 - gil_free)` of the GIL and `share` of a core. A queued job
//! starts at once, on the thread that has just finished one, whenever the running jobs leave
//! room for its demand ([`Learner::admits`]); the number that fit is the pool's limit, from
//! 1 to the thread limit, and it moves with every estimate. Nothing on the request path
//! waits for a watcher. A kind never seen counts as pure Python until one of its runs says
//! otherwise, so new work starts one at a time.
//!
//! Waiting for the GIL is sleeping too, so a share measured among jobs that contend for it
//! reads low, and more are let in. Two things keep that from feeding itself. An estimate
//! rises at once with what a run shows and falls only slowly. And a kind several of which
//! run at once, whose runs grow to twice as long as its best recent run, gets one run alone
//! ([`Start::Alone`]: it starts once the pool is empty and nothing starts beside it), whose
//! share is then the truth. A site that goes from waiting to computing thus comes down to
//! one job at a time within a few of its runs; one whose database merely got slower pays
//! one such run and keeps its concurrency.
//!
//! Everything here is plain arithmetic on durations handed in: no clocks, no threads.

use std::time::Duration;

/// Kinds are hashed into this many slots; two kinds in one slot share their estimates.
const KINDS: usize = 256;

/// While the running jobs leave at least this much of the GIL idle, any job may start.
const GIL_IDLE: f32 = 0.5;
/// Otherwise a job starts if the GIL's demand stays within this: a little over one, since
/// demands are averages and a GIL kept just busy serves the most.
const GIL_FULL: f32 = 1.25;
/// The same for the cores: below `cores - CORE_IDLE` anything starts, else up to
/// `cores + CORE_OVER`.
const CORE_IDLE: f32 = 0.5;
const CORE_OVER: f32 = 0.25;

/// How far an estimate moves toward a run that shows more demand, and toward one that
/// shows less (which contention can fake).
const RISE: f32 = 0.5;
const FALL: f32 = 1.0 / 16.0;
/// How far `gil_free` moves toward each probe's reading.
const PROBE_WEIGHT: f32 = 0.25;
/// A run shorter than this shows little but the clocks' own cost, and running such jobs
/// side by side could gain nothing: it is not learned from.
const SHORT: Duration = Duration::from_micros(50);
/// Runs of a kind measured before its runs are sampled, and then the gap between samples.
const FIRST_RUNS: u32 = 8;
const SAMPLE_GAP: Duration = Duration::from_millis(2);

/// How long runs of a kind that runs several at once may grow against its best recent
/// runs before one runs alone; how fast the best follows a faster run (not at once: one odd
/// run is not the kind) and fades toward slower ones; and how often at most.
const SLOWER: f32 = 2.0;
const BEST_FOLLOWS: f32 = 1.0 / 4.0;
const BEST_FADES: f32 = 1.0 / 256.0;
const AVERAGE_WEIGHT: f32 = 1.0 / 8.0;
const ALONE_EVERY: Duration = Duration::from_secs(1);
/// A run alone waits at most this long for the pool to empty, and holds others back at
/// most this long; a kind whose best run is longer never runs alone: a stall of the whole
/// pool is not worth what it would show.
pub const ALONE_HOLD: Duration = Duration::from_millis(100);
/// A kind estimated above this runs one at a time anyway: nothing to check alone.
const SEVERAL: f32 = 0.5;

/// A probe that waited this long for the GIL found it held: what the threads did meanwhile
/// may have been waiting for it.
pub(super) const HELD: Duration = Duration::from_millis(1);
/// A thread that has run its job this long has had its chance to start running.
const SETTLED: Duration = Duration::from_millis(1);
/// How soon a backlog held back by the estimates gets a probe: while a kind running has
/// hardly been probed, and otherwise.
const FIRST_LOOK: Duration = Duration::from_millis(10);
const FRESH: Duration = Duration::from_millis(250);
/// Probe readings of a kind before it counts as seen.
const SEEN_PROBES: u32 = 2;

/// Which kind of job a request is, for its estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct JobClass(u8);

impl JobClass {
    /// From the request's method and path: the path up to its third `/` or its query, so
    /// `/articles/2024/slug` and `/articles/2024/other` are one kind.
    pub fn of(method: &str, path: &str) -> JobClass {
        // FNV-1a: a few instructions a byte, enough to spread a site's pages over the slots.
        let mut h: u32 = 0x811c_9dc5;
        let mut feed = |b: u8| {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        };
        method.bytes().for_each(&mut feed);
        feed(b' ');
        let mut slashes = 0;
        for b in path.bytes() {
            if b == b'?' {
                break;
            }
            if b == b'/' {
                slashes += 1;
                if slashes > 2 {
                    break;
                }
            }
            feed(b);
        }
        JobClass((h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8)
    }

    #[cfg(test)]
    pub fn numbered(n: u8) -> JobClass {
        JobClass(n)
    }
}

/// What a running job asks of the GIL and of the cores.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Demand {
    pub gil: f32,
    pub core: f32,
}

/// One measured run: its thread's CPU time, its time waiting for a core, its wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub cpu: Duration,
    pub run_queue: Duration,
    pub wall: Duration,
}

/// What the probe saw of one running job while it waited for the GIL and then held it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub class: JobClass,
    /// How long the job had been running.
    pub age: Duration,
    /// Its thread sleeps in the kernel (not runnable).
    pub sleeping: bool,
    /// Its thread's CPU time while the probe waited for the GIL.
    pub before: Duration,
    /// Its thread's CPU time while the probe held the GIL, and how long that was.
    pub during: Duration,
    pub held: Duration,
}

impl Seen {
    /// The part of the hold its thread ran: running without the GIL.
    fn gil_free(&self) -> f32 {
        if self.held.is_zero() {
            return 0.0;
        }
        (self.during.as_secs_f32() / self.held.as_secs_f32()).min(1.0)
    }

    fn on_core(&self) -> bool {
        !self.before.is_zero() || !self.during.is_zero()
    }

    /// Asleep throughout, long enough into its job to have run: it waits on something.
    fn waiting(&self) -> bool {
        !self.on_core() && self.sleeping && self.age >= SETTLED
    }
}

/// Whether the queue's next job may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Now,
    /// Now, and nothing else until it ends: its run is to show its kind's share uncontended.
    Alone,
    NotYet,
}

#[derive(Debug, Clone, Copy)]
struct Kind {
    share: f32,
    runs: u32,
    /// Runs chosen to be measured, learned from or not.
    measured: u32,
    gil_free: f32,
    probes: u32,
    /// When its last sampled run started.
    sampled: Option<Duration>,
    /// Its best recent wall time (fading up toward later ones), and its average.
    best: f32,
    average: f32,
    /// One run is to go alone, until when at the latest; when one last did.
    alone_wanted: bool,
    alone_until: Duration,
    alone_at: Option<Duration>,
}

const UNKNOWN: Kind = Kind {
    share: 1.0,
    runs: 0,
    measured: 0,
    gil_free: 0.0,
    probes: 0,
    sampled: None,
    best: 0.0,
    average: 0.0,
    alone_wanted: false,
    alone_until: Duration::ZERO,
    alone_at: None,
};

/// The estimates of every kind, and when the probe last looked. Times are durations since
/// one fixed instant of the caller's choosing.
pub struct Learner {
    kinds: Box<[Kind]>,
    cores: f32,
    last_probe: Option<Duration>,
}

impl Learner {
    /// `shared_lock`: whether the jobs share a GIL at all. Without one, every kind counts
    /// as running off it and only the cores limit them.
    pub fn new(cores: usize, shared_lock: bool) -> Learner {
        let start = Kind {
            gil_free: if shared_lock { 0.0 } else { 1.0 },
            ..UNKNOWN
        };
        Learner {
            kinds: vec![start; KINDS].into_boxed_slice(),
            cores: cores.max(1) as f32,
            last_probe: None,
        }
    }

    fn kind(&self, class: JobClass) -> &Kind {
        &self.kinds[usize::from(class.0)]
    }

    fn kind_mut(&mut self, class: JobClass) -> &mut Kind {
        &mut self.kinds[usize::from(class.0)]
    }

    pub fn demand(&self, class: JobClass) -> Demand {
        let k = self.kind(class);
        Demand {
            gil: k.share * (1.0 - k.gil_free),
            core: k.share,
        }
    }

    /// Whether a job of kind `next` may start at `now` beside `running` (the live jobs, and
    /// whether each runs alone and has done so for less than [`ALONE_HOLD`]; the thread
    /// limit is the caller's).
    pub fn start(
        &self,
        running: impl Iterator<Item = (JobClass, bool)>,
        next: JobClass,
        now: Duration,
    ) -> Start {
        let k = self.kind(next);
        let alone = k.alone_wanted && now < k.alone_until;
        let (mut gil, mut core, mut any) = (0.0, 0.0, false);
        for (class, runs_alone) in running {
            if runs_alone || alone {
                return Start::NotYet;
            }
            let d = self.demand(class);
            gil += d.gil;
            core += d.core;
            any = true;
        }
        if !any {
            return if alone { Start::Alone } else { Start::Now };
        }
        let d = self.demand(next);
        let gil_room = gil <= GIL_IDLE || gil + d.gil <= GIL_FULL;
        let core_room = core <= self.cores - CORE_IDLE || core + d.core <= self.cores + CORE_OVER;
        if gil_room && core_room {
            Start::Now
        } else {
            Start::NotYet
        }
    }

    /// Whether to measure a run of `class` starting at `now`: each of a kind's first runs,
    /// then one every [`SAMPLE_GAP`], so fast pages pay for almost no readings.
    pub fn sample(&mut self, class: JobClass, now: Duration) -> bool {
        let k = self.kind_mut(class);
        let due = k.measured < FIRST_RUNS || k.sampled.is_none_or(|at| now >= at + SAMPLE_GAP);
        if due {
            k.sampled = Some(now);
            k.measured = k.measured.saturating_add(1);
        }
        due
    }

    /// Learns from one measured run of `class`, which ran alone or not, ending at `now`.
    pub fn learn(&mut self, class: JobClass, run: Measured, alone: bool, now: Duration) {
        if run.wall < SHORT {
            return;
        }
        let wall = run.wall.as_secs_f32();
        let (cpu, queued) = (run.cpu.as_secs_f32(), run.run_queue.as_secs_f32());
        // Time waiting for a core counts as much as the job runs rather than sleeps: all of
        // it for Python preempted on a busy machine (it holds the GIL meanwhile), a share of
        // it for a job woken from a wait to find the cores taken (by the database it waited
        // for, say).
        let awake = (wall - queued).max(cpu);
        let runs = if awake > 0.0 { cpu / awake } else { 1.0 };
        let busy = ((cpu + queued * runs) / wall).clamp(0.0, 1.0);
        let k = self.kind_mut(class);
        if alone {
            // Only a share too low can feed itself; a lower one is learned as any other.
            k.share = k.share.max(busy);
            k.runs = k.runs.saturating_add(1);
            k.best = wall;
            k.average = wall;
            k.alone_wanted = false;
            k.alone_at = Some(now);
            return;
        }
        if k.best == 0.0 {
            k.best = wall;
            k.average = wall;
        } else {
            let toward = if wall < k.best {
                BEST_FOLLOWS
            } else {
                BEST_FADES
            };
            k.best += toward * (wall - k.best);
            k.average += AVERAGE_WEIGHT * (wall - k.average);
        }
        self.learn_share(class, busy);
        let k = self.kind_mut(class);
        if k.alone_wanted && now >= k.alone_until {
            // The pool never emptied for it in time: try again later.
            k.alone_wanted = false;
            k.alone_at = Some(now);
        }
        let recently = k.alone_at.is_some_and(|at| now < at + ALONE_EVERY);
        let short = Duration::from_secs_f32(k.best) <= ALONE_HOLD;
        if !k.alone_wanted && k.share < SEVERAL && k.average > SLOWER * k.best && short && !recently
        {
            k.alone_wanted = true;
            k.alone_until = now + ALONE_HOLD;
        }
    }

    fn learn_share(&mut self, class: JobClass, busy: f32) {
        let k = self.kind_mut(class);
        k.share = if k.runs == 0 {
            busy
        } else if busy > k.share {
            k.share + RISE * (busy - k.share)
        } else {
            k.share + FALL * (busy - k.share)
        };
        k.runs = k.runs.saturating_add(1);
    }

    /// How long until a backlog held back by the estimates of `running` gets a probe
    /// (zero: now).
    pub fn probe_in(&self, mut running: impl Iterator<Item = JobClass>, now: Duration) -> Duration {
        let Some(last) = self.last_probe else {
            return Duration::ZERO;
        };
        let every = if running.any(|c| self.kind(c).probes < SEEN_PROBES) {
            FIRST_LOOK
        } else {
            FRESH
        };
        (last + every).saturating_sub(now)
    }

    /// Learns from one probe: how long it waited for the GIL, and what each running job
    /// did meanwhile.
    pub fn learn_probe(&mut self, waited: Duration, seen: &[Seen], now: Duration) {
        self.last_probe = Some(now);
        for s in seen.iter().filter(|s| s.on_core()) {
            let k = self.kind_mut(s.class);
            let reading = s.gil_free();
            k.gil_free = if k.probes == 0 {
                reading
            } else {
                k.gil_free + PROBE_WEIGHT * (reading - k.gil_free)
            };
            k.probes = k.probes.saturating_add(1);
        }
        if waited < HELD {
            // The GIL was free, so a thread asleep throughout waits on something else: what
            // its run will show when it ends, said now, so that a first run that waits
            // long does not hold back its kind until then.
            for s in seen.iter().filter(|s| s.waiting()) {
                self.learn_share(s.class, 0.0);
            }
        }
    }

    /// How many jobs of `class` alone would run at once, by the current estimates.
    #[cfg(test)]
    pub fn limit_for(&self, class: JobClass, threads: usize) -> usize {
        let mut n = 1;
        let now = Duration::ZERO;
        while n < threads
            && self.start(std::iter::repeat_n((class, false), n), class, now) == Start::Now
        {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests;
