//! The lockable pool of threads that runs the WSGI app.
//!
//! Python threads share one GIL, so running many requests of Python at once does not make
//! them faster: it only spreads every request over the whole burst and ruins tail latency
//! (20 threads fighting over the GIL gave a p99 of 1 s where one thread gave 158 ms). So the
//! pool runs as many jobs at once as the GIL and the cores have room for, by what each kind
//! of job was measured to do ([`limit`]): one page of Python at a time, any number of waits
//! beside it, C code without the GIL on every core. A thread that finishes a job starts the
//! next queued one at once when it fits; nothing on the way waits for a watcher.
//!
//! The queue is bounded: a job that does not fit is refused at once so the caller can answer
//! 503 instead of letting the client hang.

mod limit;
mod probe;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::Recover;
pub use limit::JobClass;
use limit::{Learner, Measured, Start};
use probe::{OwnClock, Prober, ThreadProbe};

pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Names one run of one job, so that it can be marked stuck from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobKey {
    thread: usize,
    started: Instant,
}

thread_local! {
    static CURRENT_JOB: std::cell::Cell<Option<JobKey>> = const { std::cell::Cell::new(None) };
}

/// The job the calling pool thread is running.
pub fn current_job() -> Option<JobKey> {
    CURRENT_JOB.with(|c| c.get())
}

thread_local! {
    static NOTHING_DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Says that the calling pool thread's job found nothing to do (its client had left): its
/// run shows nothing of its kind and is not learned from.
pub fn nothing_done() {
    NOTHING_DONE.with(|c| c.set(true));
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full")]
    Full,
    #[error("the pool is locked")]
    Locked,
    #[error("the server is stopping")]
    Stopped,
}

/// An idle thread above `min_threads` exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub min_threads: usize,
    pub max_threads: usize,
    pub queue: usize,
}

/// Runs a closure inside some context: see [`Contexts`].
pub type ThreadWrap = Arc<dyn Fn(&mut (dyn FnMut() + Send)) + Send + Sync>;

/// What the pool's threads run inside. For the WSGI pool: `thread` keeps one Python thread
/// state for the thread's whole life, so thread-locals such as Django's database connections
/// survive from one request to the next; `busy` holds the GIL across jobs that follow each
/// other without a pause; `gil` holds the GIL, for the probe ([`probe`]).
#[derive(Clone, Default)]
pub struct Contexts {
    /// The whole life of each pool thread, and of the probe thread.
    pub thread: Option<ThreadWrap>,
    /// Each run of jobs a thread takes back to back, from the first job until it finds the
    /// queue empty or may not start the next.
    pub busy: Option<ThreadWrap>,
    /// Runs a closure holding the lock the jobs share to run their code (the GIL). Without
    /// one, the jobs share nothing but the cores, and no probe runs.
    pub gil: Option<ThreadWrap>,
}

/// Runs `f` inside `wrap`, or plainly when there is none.
fn within(wrap: Option<&ThreadWrap>, f: &mut (dyn FnMut() + Send)) {
    match wrap {
        Some(wrap) => wrap(f),
        None => f(),
    }
}

/// Runs `f` once inside `wrap`: for a thread's whole life.
fn once_within(wrap: Option<&ThreadWrap>, f: impl FnOnce() + Send) {
    let mut f = Some(f);
    within(wrap, &mut || {
        if let Some(f) = f.take() {
            f();
        }
    });
}

pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    limits: PoolLimits,
    contexts: Contexts,
    state: Mutex<State>,
    /// The probe thread sleeps here until a held-back backlog wants a look.
    probe_wanted: Condvar,
    /// `drain` waits here for the last job to finish.
    done: Condvar,
}

/// An idle thread and the condvar (used with the state lock) it sleeps on.
struct Sleeper {
    thread: usize,
    wake: Arc<Condvar>,
}

struct Running {
    thread: usize,
    class: JobClass,
    /// The thread's clocks, for the probe to read while the job runs.
    probe: Option<ThreadProbe>,
    started: Instant,
    /// Runs with nothing beside it, to measure its kind uncontended.
    alone: bool,
    /// Past its deadline: its thread cannot be stopped, so it no longer counts against the
    /// thread limit nor holds back another job's start.
    stuck: bool,
}

impl Running {
    /// Tells this job apart from an earlier one on the same thread.
    fn key(&self) -> (usize, Instant) {
        (self.thread, self.started)
    }
}

/// Stuck jobs: how many are stuck now, and how many ever were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stuck {
    pub now: usize,
    pub total: u64,
}

struct State {
    queue: VecDeque<(JobClass, Job)>,
    learner: Learner,
    /// What the learner's times count from.
    epoch: Instant,
    threads: usize,
    /// Threads spawned or woken that have not yet looked at the queue: each will take a
    /// job without further help.
    coming: usize,
    /// Threads asleep waiting for a job, the most recently idle last. Only they need a
    /// wake-up (a futex call each), and the last one is woken first: its caches are warm,
    /// and the threads at the bottom stay asleep long enough to exit.
    idle: Vec<Sleeper>,
    running: Vec<Running>,
    stuck: Stuck,
    locked: bool,
    held: bool,
    /// Callers blocked in `drain`, and what the probe thread does: a condvar notify is a
    /// syscall even with nobody waiting, so these are only notified when someone waits.
    draining: usize,
    prober: Prober,
    has_prober: bool,
    stopping: bool,
    next_thread: usize,
    handles: Vec<thread::JoinHandle<()>>,
}

impl State {
    fn new(learner: Learner, epoch: Instant) -> State {
        State {
            queue: VecDeque::new(),
            learner,
            epoch,
            threads: 0,
            coming: 0,
            idle: Vec::new(),
            running: Vec::new(),
            stuck: Stuck::default(),
            locked: false,
            held: false,
            draining: 0,
            prober: Prober::Busy,
            has_prober: false,
            stopping: false,
            next_thread: 0,
            handles: Vec::new(),
        }
    }

    /// Whether the queue's next job may start now: below the thread limit, as the
    /// learner finds room for it beside the running jobs.
    fn may_start(&self, max_threads: usize) -> Start {
        if self.held {
            return Start::NotYet;
        }
        let Some((next, _)) = self.queue.front() else {
            return Start::NotYet;
        };
        if self.running.len() - self.stuck.now >= max_threads.max(1) {
            return Start::NotYet;
        }
        let now = Instant::now();
        let running = self.running.iter().filter(|r| !r.stuck).map(|r| {
            let holding = r.alone && now.saturating_duration_since(r.started) < limit::ALONE_HOLD;
            (r.class, holding)
        });
        self.learner.start(running, *next, self.since(now))
    }

    /// `at`, as the learner counts time: since the pool began.
    fn since(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    fn pending(&self) -> usize {
        self.queue.len() + self.running.len()
    }
}

impl Pool {
    #[cfg(test)]
    pub fn new(limits: PoolLimits) -> Pool {
        Pool::with_contexts(limits, Contexts::default())
    }

    pub fn with_contexts(limits: PoolLimits, contexts: Contexts) -> Pool {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let shared_lock = contexts.gil.is_some();
        let inner = Arc::new(Inner {
            limits,
            contexts,
            state: Mutex::new(State::new(Learner::new(cores, shared_lock), Instant::now())),
            probe_wanted: Condvar::new(),
            done: Condvar::new(),
        });
        {
            let mut st = inner.lock();
            for _ in 0..limits.min_threads {
                Inner::spawn_thread(&inner, &mut st);
            }
        }
        // Only a shared lock needs a look that job timings cannot give, and only a pool
        // that can run two jobs at once has a start to learn about.
        if shared_lock && limits.max_threads > 1 {
            let prober = Arc::clone(&inner);
            let spawned = thread::Builder::new()
                .name("bartizan-probe".into())
                .spawn(move || {
                    let wrap = prober.contexts.thread.clone();
                    once_within(wrap.as_ref(), move || probe::probe_loop(prober));
                });
            match spawned {
                Ok(handle) => {
                    let mut st = inner.lock();
                    st.has_prober = true;
                    st.handles.push(handle);
                }
                Err(e) => tracing::error!("could not start the pool's probe thread: {e}"),
            }
        }
        Pool { inner }
    }

    /// Queues a job, or says at once why it cannot be queued.
    pub fn submit(&self, class: JobClass, job: Job) -> Result<(), SubmitError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if st.stopping {
            return Err(SubmitError::Stopped);
        }
        if st.locked {
            return Err(SubmitError::Locked);
        }
        if st.queue.len() >= inner.limits.queue {
            return Err(SubmitError::Full);
        }
        st.queue.push_back((class, job));
        if inner.startable(&st) > 0 {
            Inner::wake_or_spawn(inner, &mut st);
        } else {
            inner.want_a_look(&st);
        }
        Ok(())
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.inner.lock().pending()
    }

    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Stops taking new jobs. With `hold`, new jobs are queued but not started until `unlock`.
    pub fn lock(&self, hold: bool) {
        let mut st = self.inner.lock();
        if hold {
            st.held = true;
            st.locked = false;
        } else {
            st.locked = true;
        }
    }

    /// Locked or holding: new app requests would not run now.
    /// What marks a running job as stuck (it ran past its deadline), so that another thread
    /// may start in its place; usable where the pool itself is out of reach.
    pub fn marker(&self) -> StuckMarker {
        StuckMarker(Arc::clone(&self.inner))
    }

    pub fn stuck(&self) -> Stuck {
        self.inner.lock().stuck
    }

    pub fn is_locked(&self) -> bool {
        let st = self.inner.lock();
        st.locked || st.held
    }

    pub fn unlock(&self) {
        let mut st = self.inner.lock();
        st.locked = false;
        st.held = false;
        if self.inner.startable(&st) > 0 {
            Inner::wake_or_spawn(&self.inner, &mut st);
        }
        self.inner.want_a_look(&st);
    }

    /// Waits until nothing is pending or `timeout` passes; returns how many are still pending.
    pub fn drain(&self, timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.inner.lock();
        st.draining += 1;
        while st.pending() > 0 {
            match deadline {
                None => st = self.inner.done.wait(st).recover(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    st = self.inner.done.wait_timeout(st, d - now).recover().0;
                }
            }
        }
        st.draining -= 1;
        st.pending()
    }

    /// Refuses new jobs, lets queued and running ones finish for up to `timeout`, then lets
    /// the threads go. Threads still inside the app at the deadline are left to finish on
    /// their own rather than joined, so a stuck request cannot block a stop forever.
    /// Returns how many jobs were still pending at the deadline.
    pub fn stop(&self, timeout: Option<Duration>) -> usize {
        {
            let mut st = self.inner.lock();
            st.held = false;
            st.stopping = true;
            Inner::wake_all(&mut st);
            self.inner.probe_wanted.notify_all();
        }
        let left = self.drain(timeout);
        let handles = {
            let mut st = self.inner.lock();
            // Jobs never started are dropped; their callers see the reply channel close.
            st.queue.clear();
            Inner::wake_all(&mut st);
            self.inner.probe_wanted.notify_all();
            std::mem::take(&mut st.handles)
        };
        if left == 0 {
            for h in handles {
                let _ = h.join();
            }
        }
        left
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.stopping = true;
        Inner::wake_all(&mut st);
        self.inner.probe_wanted.notify_all();
    }
}

/// Marks jobs of one pool stuck: see [`Pool::marker`].
#[derive(Clone)]
pub struct StuckMarker(Arc<Inner>);

impl StuckMarker {
    /// False when that job has ended meanwhile.
    pub fn mark_stuck(&self, job: JobKey) -> bool {
        Inner::mark_stuck(&self.0, job)
    }
}

impl Inner {
    fn mark_stuck(inner: &Arc<Inner>, job: JobKey) -> bool {
        let mut st = inner.lock();
        let Some(r) = st
            .running
            .iter_mut()
            .find(|r| r.key() == (job.thread, job.started) && !r.stuck)
        else {
            return false;
        };
        r.stuck = true;
        st.stuck.now += 1;
        st.stuck.total += 1;
        Inner::wake_or_spawn(inner, &mut st);
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a job is caught before it can poison the lock; be safe anyway.
        self.state.lock().recover()
    }

    /// Queued jobs that may start now.
    fn startable(&self, st: &State) -> usize {
        usize::from(st.may_start(self.limits.max_threads) != Start::NotYet)
    }

    /// A backlog waits that the estimates hold back, below the thread limit: what a probe
    /// could free.
    fn held_back(&self, st: &State) -> bool {
        !st.queue.is_empty()
            && !st.held
            && st.running.len() - st.stuck.now < self.limits.max_threads
            && st.may_start(self.limits.max_threads) == Start::NotYet
    }

    /// Wakes the probe thread if it sleeps and a held-back backlog wants a look. A napping
    /// one wakes on its own; only the sleeper costs a wake-up, once per backlog.
    fn want_a_look(&self, st: &State) {
        if st.has_prober && st.prober == Prober::Idle && self.held_back(st) {
            self.probe_wanted.notify_one();
        }
    }

    fn job_done(&self, st: &State) {
        if st.draining > 0 && st.pending() == 0 {
            self.done.notify_all();
        }
    }

    /// Gets an admissible job started unless a thread is already on its way to it: wakes
    /// the most recently idle thread, or starts a thread when none sleeps.
    fn wake_or_spawn(inner: &Arc<Inner>, st: &mut State) {
        if st.coming >= inner.startable(st) {
            return;
        }
        if let Some(sleeper) = st.idle.pop() {
            st.coming += 1;
            sleeper.wake.notify_one();
        } else if st.threads < inner.limits.max_threads + st.stuck.now {
            Inner::spawn_thread(inner, st);
        }
    }

    fn wake_all(st: &mut State) {
        st.coming += st.idle.len();
        for sleeper in st.idle.drain(..) {
            sleeper.wake.notify_one();
        }
    }

    fn spawn_thread(inner: &Arc<Inner>, st: &mut State) {
        let id = st.next_thread;
        st.next_thread += 1;
        st.threads += 1;
        st.coming += 1;
        let me = Arc::clone(inner);
        match thread::Builder::new()
            .name(format!("bartizan-wsgi-{id}"))
            .spawn(move || {
                let wrap = me.contexts.thread.clone();
                once_within(wrap.as_ref(), move || me.thread_loop(id));
            }) {
            Ok(h) => st.handles.push(h),
            Err(e) => {
                st.threads -= 1;
                st.coming -= 1;
                tracing::error!("could not start a pool thread: {e}");
            }
        }
    }

    fn thread_loop(self: Arc<Self>, id: usize) {
        let probe = ThreadProbe::current();
        let clock = OwnClock::open();
        let wake = Arc::new(Condvar::new());
        let mut st = self.lock();
        st.coming -= 1;
        loop {
            if let Some(job) = self.take_job(&mut st, id, probe) {
                drop(st);
                self.run_busy(id, probe, &clock, job);
                st = self.lock();
                // Counted in `coming` by `run_busy` when its streak ended.
                st.coming -= 1;
                continue;
            }
            if st.stopping && st.queue.is_empty() {
                break;
            }
            st.idle.push(Sleeper {
                thread: id,
                wake: Arc::clone(&wake),
            });
            // Whoever wakes this thread takes it off `idle` first; still on it means a
            // spurious wake-up, or the idle time is up.
            let idle_until = Instant::now() + IDLE_EXIT;
            let mut timed_out = false;
            loop {
                let Some(at) = st.idle.iter().position(|s| s.thread == id) else {
                    st.coming -= 1;
                    break;
                };
                let now = Instant::now();
                if now >= idle_until {
                    st.idle.remove(at);
                    timed_out = true;
                    break;
                }
                st = wake.wait_timeout(st, idle_until - now).recover().0;
            }
            if timed_out
                && st.queue.is_empty()
                && st.threads > self.limits.min_threads
                && !st.stopping
            {
                break;
            }
        }
        st.threads -= 1;
    }

    /// Takes the next job this thread may start, and says whether to measure it.
    fn take_job(
        self: &Arc<Self>,
        st: &mut State,
        id: usize,
        thread: Option<ThreadProbe>,
    ) -> Option<Taken> {
        let alone = match st.may_start(self.limits.max_threads) {
            Start::NotYet => return None,
            Start::Now => false,
            Start::Alone => {
                tracing::debug!("a kind of request whose runs grew slower runs alone once");
                true
            }
        };
        let (class, job) = st.queue.pop_front().expect("a job may start");
        let started = Instant::now();
        let measure = st.learner.sample(class, st.since(started)) || alone;
        st.running.push(Running {
            thread: id,
            class,
            probe: thread,
            started,
            alone,
            stuck: false,
        });
        CURRENT_JOB.with(|c| {
            c.set(Some(JobKey {
                thread: id,
                started,
            }))
        });
        // The next may fit beside this one: another thread is to take it; or it is held
        // back, which the probe may want to look at.
        if self.startable(st) > 0 {
            Inner::wake_or_spawn(self, st);
        } else {
            self.want_a_look(st);
        }
        Some(Taken {
            class,
            job,
            measure,
            alone,
        })
    }

    /// Runs `first`, then every job that may start the moment the previous one ends, inside
    /// the `busy` context. Under load the WSGI pool thus keeps the GIL from one request to
    /// the next instead of dropping it in between. Each drop would wake any thread waiting
    /// for the GIL, only for this thread to take it back first: such a waiter was woken once
    /// per request and, under load, could wait seconds to get in.
    fn run_busy(
        self: &Arc<Self>,
        id: usize,
        probe: Option<ThreadProbe>,
        clock: &OwnClock,
        first: Taken,
    ) {
        let mut next = Some(first);
        let mut streak = || {
            while let Some(Taken {
                class,
                job,
                measure,
                alone,
            }) = next.take()
            {
                let before = measure.then(|| (Instant::now(), clock.read()));
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a request handler panicked; the server goes on");
                }
                let skip = NOTHING_DONE.with(|c| c.replace(false));
                let run = before.filter(|_| !skip).map(|(at, was)| {
                    let is = clock.read();
                    Measured {
                        cpu: is.cpu.saturating_sub(was.cpu),
                        run_queue: is.run_queue.saturating_sub(was.run_queue),
                        wall: at.elapsed(),
                    }
                });
                CURRENT_JOB.with(|c| c.set(None));
                let mut st = self.lock();
                if let Some(at) = st.running.iter().position(|r| r.thread == id) {
                    if st.running.remove(at).stuck {
                        st.stuck.now -= 1;
                    }
                }
                if let Some(run) = run {
                    let now = st.since(Instant::now());
                    st.learner.learn(class, run, alone, now);
                }
                self.job_done(&st);
                next = self.take_job(&mut st, id, probe);
                if next.is_none() {
                    // Until this thread is back in `thread_loop`, it is neither running nor
                    // idle: a job submitted meanwhile must wait for it, not start a thread.
                    st.coming += 1;
                    self.want_a_look(&st);
                }
            }
        };
        within(self.contexts.busy.as_ref(), &mut streak);
    }
}

/// A job taken off the queue, with its kind and whether its run is measured.
struct Taken {
    class: JobClass,
    job: Job,
    measure: bool,
    alone: bool,
}

#[cfg(test)]
mod tests;
