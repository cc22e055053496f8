//! The lockable worker pool that runs the WSGI app.
//!
//! Python threads share one GIL, so running many requests at once does not make a CPU-bound
//! app faster: it only spreads every request over the whole burst and ruins tail latency
//! (20 threads fighting over the GIL gave a p99 of 1 s where one thread gave 158 ms). The pool
//! therefore runs one job at a time and hands a queued job to another thread only while every
//! running job is blocked (waiting on a database, a socket, a sleep, a slow client). "Blocked"
//! is read off each running thread's CPU clock and scheduler state: a thread whose CPU time does
//! not advance over a short tick, and that sleeps in the kernel, is not running Python. More
//! threads then never cost latency; they only add concurrency where the app actually waits.
//!
//! The queue is bounded: a job that does not fit is refused at once so the caller can answer
//! 503 instead of letting the client hang.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub type Job = Box<dyn FnOnce() + Send + 'static>;

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

/// How often the admission watcher looks at the running threads' CPU clocks.
const TICK: Duration = Duration::from_millis(1);
/// Running jobs are only sampled once all of them are at least this old.
const JUDGE_AFTER: Duration = Duration::from_millis(1);
/// Ticks in a row a job must be seen blocked before another may start beside it.
const STALL_TICKS: u32 = 8;
/// Where a thread has no readable CPU clock, a job running this long is taken as blocked.
const BLIND_STALL: Duration = Duration::from_millis(10);
/// An idle thread above `min_threads` exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// Jobs always allowed to run at once, blocked or not.
const FLOOR: usize = 1;

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
/// other without a pause.
#[derive(Clone, Default)]
pub struct Contexts {
    /// The whole life of each worker thread.
    pub thread: Option<ThreadWrap>,
    /// Each run of jobs a worker takes back to back, from the first job until it finds the
    /// queue empty.
    pub busy: Option<ThreadWrap>,
}

pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    limits: PoolLimits,
    contexts: Contexts,
    state: Mutex<State>,
    /// The watcher waits here for a backlog behind running jobs.
    watch: Condvar,
    /// `drain` waits here for the last job to finish.
    done: Condvar,
}

/// An idle worker and the condvar (used with the state lock) it sleeps on.
struct Sleeper {
    worker: usize,
    wake: Arc<Condvar>,
}

struct Running {
    worker: usize,
    probe: Option<ThreadProbe>,
    started: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    /// Threads spawned or woken that have not yet looked at the queue: each will take a
    /// job without further help.
    coming: usize,
    /// Workers asleep waiting for a job, the most recently idle last. Only they need a
    /// wake-up (a futex call each), and the last one is woken first: its caches are warm,
    /// and the threads at the bottom stay asleep long enough to exit.
    idle: Vec<Sleeper>,
    running: Vec<Running>,
    /// Extra admissions granted by the watcher beyond `FLOOR`.
    grants: usize,
    locked: bool,
    held: bool,
    /// Callers blocked in `drain`, and whether the watcher sleeps: a condvar notify is a
    /// syscall even with nobody waiting, so these are only notified when someone is.
    draining: usize,
    watcher_asleep: bool,
    stopping: bool,
    next_worker: usize,
    handles: Vec<thread::JoinHandle<()>>,
}

impl State {
    fn admissible(&self) -> bool {
        self.startable() > 0
    }

    /// A backlog sits behind jobs that may be blocked: the watcher's cue.
    fn backlog_behind_running(&self, max: usize) -> bool {
        !self.stopping
            && !self.held
            && !self.queue.is_empty()
            && self.grants == 0
            && self.running.len() >= FLOOR
            && self.running.len() < max
    }

    /// Queued jobs that may start now.
    fn startable(&self) -> usize {
        if self.held {
            return 0;
        }
        let slots = FLOOR.saturating_sub(self.running.len()) + self.grants;
        self.queue.len().min(slots)
    }

    fn pending(&self) -> usize {
        self.queue.len() + self.running.len()
    }
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Pool {
        Pool::with_contexts(limits, Contexts::default())
    }

    pub fn with_contexts(limits: PoolLimits, contexts: Contexts) -> Pool {
        let inner = Arc::new(Inner {
            limits,
            contexts,
            state: Mutex::new(State::default()),
            watch: Condvar::new(),
            done: Condvar::new(),
        });
        {
            let mut st = inner.lock();
            for _ in 0..limits.min_threads {
                Inner::spawn_worker(&inner, &mut st);
            }
        }
        let watcher = Arc::clone(&inner);
        let handle = thread::Builder::new()
            .name("bartizan-admit".into())
            .spawn(move || watcher.watch_loop())
            .expect("spawning the pool watcher thread");
        inner.lock().handles.push(handle);
        Pool { inner }
    }

    /// Queues a job, or says at once why it cannot be queued.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
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
        st.queue.push_back(job);
        if st.admissible() {
            Inner::wake_or_spawn(inner, &mut st);
        } else {
            inner.poke_watcher(&st);
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

    pub fn unlock(&self) {
        let mut st = self.inner.lock();
        st.locked = false;
        st.held = false;
        if st.admissible() {
            Inner::wake_or_spawn(&self.inner, &mut st);
        }
        self.inner.watch.notify_one();
    }

    pub fn is_locked(&self) -> bool {
        let st = self.inner.lock();
        st.locked || st.held
    }

    /// Waits until nothing is pending or `timeout` passes; returns how many are still pending.
    pub fn drain(&self, timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.inner.lock();
        st.draining += 1;
        while st.pending() > 0 {
            match deadline {
                None => st = self.inner.done.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    st = self
                        .inner
                        .done
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
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
            self.inner.watch.notify_all();
        }
        let left = self.drain(timeout);
        let handles = {
            let mut st = self.inner.lock();
            // Jobs never started are dropped; their callers see the reply channel close.
            st.queue.clear();
            Inner::wake_all(&mut st);
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
        self.inner.watch.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a job is caught before it can poison the lock; be safe anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the watcher if there is a backlog for it to judge and it sleeps.
    fn poke_watcher(&self, st: &State) {
        if st.watcher_asleep && st.backlog_behind_running(self.limits.max_threads) {
            self.watch.notify_one();
        }
    }

    fn job_done(&self, st: &State) {
        if st.draining > 0 && st.pending() == 0 {
            self.done.notify_all();
        }
    }

    /// Gets an admissible job started unless a thread is already on its way to it: wakes
    /// the most recently idle worker, or starts a thread when none sleeps.
    fn wake_or_spawn(inner: &Arc<Inner>, st: &mut State) {
        if st.coming >= st.startable() {
            return;
        }
        if let Some(sleeper) = st.idle.pop() {
            st.coming += 1;
            sleeper.wake.notify_one();
        } else if st.threads < inner.limits.max_threads {
            Inner::spawn_worker(inner, st);
        }
    }

    fn wake_all(st: &mut State) {
        st.coming += st.idle.len();
        for sleeper in st.idle.drain(..) {
            sleeper.wake.notify_one();
        }
    }

    fn spawn_worker(inner: &Arc<Inner>, st: &mut State) {
        let id = st.next_worker;
        st.next_worker += 1;
        st.threads += 1;
        st.coming += 1;
        let me = Arc::clone(inner);
        match thread::Builder::new()
            .name(format!("bartizan-wsgi-{id}"))
            .spawn(move || match me.contexts.thread.clone() {
                Some(wrap) => {
                    let mut run = Some(me);
                    wrap(&mut || {
                        if let Some(me) = run.take() {
                            me.worker_loop(id);
                        }
                    });
                }
                None => me.worker_loop(id),
            }) {
            Ok(h) => st.handles.push(h),
            Err(e) => {
                st.threads -= 1;
                st.coming -= 1;
                tracing::error!("could not start a pool thread: {e}");
            }
        }
    }

    fn worker_loop(self: Arc<Self>, id: usize) {
        let probe = ThreadProbe::current();
        let wake = Arc::new(Condvar::new());
        let mut st = self.lock();
        st.coming -= 1;
        loop {
            if let Some(job) = self.take_job(&mut st, id, probe) {
                drop(st);
                self.run_busy(id, probe, job);
                st = self.lock();
                // Counted in `coming` by `run_busy` when its streak ended.
                st.coming -= 1;
                continue;
            }
            if st.stopping && st.queue.is_empty() {
                break;
            }
            st.idle.push(Sleeper {
                worker: id,
                wake: Arc::clone(&wake),
            });
            // Whoever wakes this worker takes it off `idle` first; still on it means a
            // spurious wake-up, or the idle time is up.
            let idle_until = Instant::now() + IDLE_EXIT;
            let mut timed_out = false;
            loop {
                let Some(at) = st.idle.iter().position(|s| s.worker == id) else {
                    st.coming -= 1;
                    break;
                };
                let now = Instant::now();
                if now >= idle_until {
                    st.idle.remove(at);
                    timed_out = true;
                    break;
                }
                st = wake
                    .wait_timeout(st, idle_until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
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

    /// Takes the next job this worker may start, and counts it as running.
    fn take_job(&self, st: &mut State, id: usize, probe: Option<ThreadProbe>) -> Option<Job> {
        if !st.admissible() {
            return None;
        }
        let job = st.queue.pop_front().expect("admissible implies a job");
        if st.running.len() >= FLOOR {
            st.grants -= 1;
        }
        st.running.push(Running {
            worker: id,
            probe,
            started: Instant::now(),
        });
        // The watcher sleeps while a grant is outstanding; this one is now used.
        self.poke_watcher(st);
        Some(job)
    }

    /// Runs `first`, then every job ready the moment the previous one ends, inside the
    /// `busy` context. Under load the WSGI pool thus keeps the GIL from one request to the
    /// next instead of dropping it in between. Each drop would wake any thread waiting for
    /// the GIL, only for this thread to take it back first: such a waiter was woken once per
    /// request and, under load, could wait seconds to get in.
    fn run_busy(&self, id: usize, probe: Option<ThreadProbe>, first: Job) {
        let mut next = Some(first);
        let mut streak = || {
            while let Some(job) = next.take() {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a request handler panicked; the server goes on");
                }
                let mut st = self.lock();
                st.running.retain(|r| r.worker != id);
                self.job_done(&st);
                self.poke_watcher(&st);
                next = self.take_job(&mut st, id, probe);
                if next.is_none() {
                    // Until this thread is back in `worker_loop`, it is neither running nor
                    // idle: a job submitted meanwhile must wait for it, not start a thread.
                    st.coming += 1;
                }
            }
        };
        match &self.contexts.busy {
            Some(busy) => busy(&mut streak),
            None => streak(),
        }
    }

    /// Grants one more admission each time every running job has been blocked for a while.
    fn watch_loop(self: Arc<Self>) {
        let mut streaks: HashMap<(usize, Instant), (Option<Duration>, u32)> = HashMap::new();
        let mut st = self.lock();
        loop {
            while !st.stopping && !st.backlog_behind_running(self.limits.max_threads) {
                st.watcher_asleep = true;
                st = self.watch.wait(st).unwrap_or_else(|e| e.into_inner());
                st.watcher_asleep = false;
            }
            if st.stopping {
                // Keep admitting while draining so a blocked job cannot starve the queue.
                if st.queue.is_empty() && st.running.is_empty() {
                    return;
                }
                if !st.backlog_behind_running(usize::MAX) {
                    st = self
                        .watch
                        .wait_timeout(st, TICK * 10)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
            }
            // Sampling starts once every running job is JUDGE_AFTER old: most jobs end
            // sooner, so under load the watcher sleeps instead of reading /proc every tick.
            // A blocked job is then seen after JUDGE_AFTER plus STALL_TICKS ticks.
            let youngest_age = st.running.iter().map(|r| r.started.elapsed()).min();
            if let Some(age) = youngest_age.filter(|a| *a < JUDGE_AFTER) {
                st = self
                    .watch
                    .wait_timeout(st, JUDGE_AFTER - age)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            // Sample every running job; a job counts as blocked once it has slept without
            // using the CPU for STALL_TICKS ticks in a row. A thread waiting for the GIL
            // gets it back within the interpreter's switch interval (5 ms), so it never
            // builds such a streak: only real waits (I/O, sleeps, locks) do. The sampling
            // reads /proc, so it happens with the lock released.
            let sampled: Vec<((usize, Instant), Option<ThreadProbe>)> = st
                .running
                .iter()
                .map(|r| ((r.worker, r.started), r.probe))
                .collect();
            drop(st);
            for (key, probe) in sampled {
                let cpu = probe.and_then(|p| p.cpu());
                let entry = streaks.entry(key).or_insert((cpu, 0));
                let stalled = match (entry.0, cpu) {
                    (Some(a), Some(b)) => {
                        b.saturating_sub(a) < TICK / 2 && probe.is_some_and(|p| p.sleeping())
                    }
                    _ => key.1.elapsed() >= BLIND_STALL,
                };
                *entry = (cpu, if stalled { entry.1 + 1 } else { 0 });
            }
            thread::sleep(TICK);
            st = self.lock();
            streaks.retain(|k, _| st.running.iter().any(|r| (r.worker, r.started) == *k));
            let all_blocked = !st.running.is_empty()
                && st.running.iter().all(|r| {
                    streaks
                        .get(&(r.worker, r.started))
                        .is_some_and(|(_, n)| *n >= STALL_TICKS)
                });
            if all_blocked && st.backlog_behind_running(usize::MAX) {
                tracing::debug!(
                    running = st.running.len(),
                    queued = st.queue.len(),
                    "every running request is blocked; admitting one more"
                );
                st.grants += 1;
                streaks.clear();
                Inner::wake_or_spawn(&self, &mut st);
            }
        }
    }
}

/// Looks at one thread from another: its CPU time, and whether it sleeps in the kernel.
/// CPU time alone cannot tell "waiting for the database" from "runnable but the OS gave the
/// core to someone else" on a busy 2-core box; the scheduler state can.
#[derive(Clone, Copy)]
struct ThreadProbe {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    clock: libc::clockid_t,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    tid: libc::pid_t,
}

impl ThreadProbe {
    #[cfg(target_os = "linux")]
    fn current() -> Option<ThreadProbe> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() is always valid for the calling thread and `clock` is a valid
        // out-pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        (rc == 0).then_some(ThreadProbe { clock, tid })
    }

    #[cfg(not(target_os = "linux"))]
    fn current() -> Option<ThreadProbe> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn pool(max: usize, queue: usize) -> Pool {
        Pool::new(PoolLimits {
            min_threads: 1,
            max_threads: max,
            queue,
        })
    }

    #[test]
    fn runs_jobs_and_drains() {
        let p = pool(4, 100);
        let n = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let n = Arc::clone(&n);
            p.submit(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
        assert_eq!(n.load(Ordering::SeqCst), 50);
        assert_eq!(p.stop(Some(Duration::from_secs(5))), 0);
    }

    #[test]
    fn full_queue_is_refused_at_once() {
        let p = pool(1, 2);
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let block = || {
            let rx = Arc::clone(&rx);
            Box::new(move || {
                let _ = rx.lock().unwrap().recv();
            }) as Job
        };
        p.submit(block()).unwrap();
        // Wait for the first job to be taken so the queue holds exactly the next two.
        let t0 = Instant::now();
        while p.queued() > 0 && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
        }
        p.submit(block()).unwrap();
        p.submit(block()).unwrap();
        assert_eq!(p.submit(block()), Err(SubmitError::Full));
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
    }

    /// Runs `jobs` quick jobs one after another and returns the threads they ran on.
    fn threads_used(p: &Pool, jobs: usize, one_at_a_time: bool) -> HashSet<thread::ThreadId> {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        for _ in 0..jobs {
            let seen = Arc::clone(&seen);
            p.submit(Box::new(move || {
                seen.lock().unwrap().insert(thread::current().id());
            }))
            .unwrap();
            if one_at_a_time {
                assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
            }
        }
        assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
        let seen = seen.lock().unwrap();
        seen.clone()
    }

    #[test]
    fn work_arriving_before_the_first_thread_is_up_starts_no_other() {
        // Submitted while the min thread is still starting: it takes them all.
        let p = pool(4, 100);
        assert_eq!(threads_used(&p, 20, false).len(), 1);
        assert_eq!(p.inner.lock().threads, 1);
    }

    #[test]
    fn the_most_recently_idle_thread_takes_the_next_job() {
        let p = Pool::new(PoolLimits {
            min_threads: 3,
            max_threads: 3,
            queue: 10,
        });
        let t0 = Instant::now();
        while p.inner.lock().idle.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
        }
        // A sleeping pool hands each job to the warm thread, not round the sleepers.
        assert_eq!(threads_used(&p, 10, true).len(), 1);
    }

    #[test]
    fn work_arriving_as_a_busy_streak_ends_waits_for_its_thread() {
        // The streak's context takes a while to leave (for the WSGI pool: handing back the
        // GIL); work submitted meanwhile is this thread's to take, not a new thread's.
        let slow_exit: ThreadWrap = Arc::new(|run: &mut (dyn FnMut() + Send)| {
            run();
            thread::sleep(Duration::from_millis(5));
        });
        let p = Pool::with_contexts(
            PoolLimits {
                min_threads: 1,
                max_threads: 4,
                queue: 100,
            },
            Contexts {
                thread: None,
                busy: Some(slow_exit),
            },
        );
        let seen = Arc::new(Mutex::new(HashSet::new()));
        for _ in 0..10 {
            let (tx, rx) = mpsc::channel();
            let s = Arc::clone(&seen);
            p.submit(Box::new(move || {
                s.lock().unwrap().insert(thread::current().id());
                tx.send(()).unwrap();
            }))
            .unwrap();
            // The job has run; its thread is now leaving the streak.
            rx.recv().unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(p.inner.lock().threads, 1);
    }

    #[test]
    fn blocked_jobs_let_others_run() {
        // Each job sleeps (blocked, no CPU): with 8 threads they must come to overlap.
        let p = pool(8, 100);
        let max_seen = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        for _ in 0..8 {
            let (max_seen, now) = (Arc::clone(&max_seen), Arc::clone(&now));
            p.submit(Box::new(move || {
                let c = now.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(c, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(300));
                now.fetch_sub(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        assert_eq!(p.drain(Some(Duration::from_secs(30))), 0);
        assert!(
            max_seen.load(Ordering::SeqCst) >= 4,
            "sleeping jobs barely overlapped: {}",
            max_seen.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn busy_jobs_run_one_at_a_time() {
        // CPU-bound jobs must not be admitted side by side while one is computing.
        let p = pool(8, 100);
        let max_seen = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        for _ in 0..6 {
            let (max_seen, now) = (Arc::clone(&max_seen), Arc::clone(&now));
            p.submit(Box::new(move || {
                let c = now.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(c, Ordering::SeqCst);
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(30) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                now.fetch_sub(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        assert_eq!(p.drain(Some(Duration::from_secs(20))), 0);
        // A preempted busy thread can look idle for a tick on a loaded machine, so allow one
        // spurious admission but never the whole burst at once.
        assert!(max_seen.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn locked_pool_refuses_and_held_pool_waits() {
        let p = pool(2, 10);
        p.lock(false);
        assert_eq!(p.submit(Box::new(|| {})), Err(SubmitError::Locked));
        p.unlock();
        p.lock(true);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        p.submit(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        thread::sleep(Duration::from_millis(50));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(p.pending(), 1);
        p.unlock();
        assert_eq!(p.drain(Some(Duration::from_secs(5))), 0);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stop_gives_up_on_a_stuck_job() {
        let p = pool(1, 10);
        p.submit(Box::new(|| thread::sleep(Duration::from_secs(3))))
            .unwrap();
        thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        assert_eq!(p.stop(Some(Duration::from_millis(100))), 1);
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(p.submit(Box::new(|| {})), Err(SubmitError::Stopped));
    }
}
