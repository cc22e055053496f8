use super::*;
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
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
        p.submit(
            JobClass::default(),
            Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }),
        )
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
    p.submit(JobClass::default(), block()).unwrap();
    // Wait for the first job to be taken so the queue holds exactly the next two.
    let t0 = Instant::now();
    while p.queued() > 0 && t0.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(1));
    }
    p.submit(JobClass::default(), block()).unwrap();
    p.submit(JobClass::default(), block()).unwrap();
    assert_eq!(
        p.submit(JobClass::default(), block()),
        Err(SubmitError::Full)
    );
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
        p.submit(
            JobClass::default(),
            Box::new(move || {
                seen.lock().unwrap().insert(thread::current().id());
            }),
        )
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
    // Submitted while the min thread is still starting: it takes them all (they are of a
    // kind not yet measured, so they take turns on the GIL).
    let (p, _gil) = with_fake_gil(4);
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
            gil: None,
        },
    );
    let seen = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..10 {
        let (tx, rx) = mpsc::channel();
        let s = Arc::clone(&seen);
        p.submit(
            JobClass::default(),
            Box::new(move || {
                s.lock().unwrap().insert(thread::current().id());
                tx.send(()).unwrap();
            }),
        )
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
        p.submit(
            JobClass::default(),
            Box::new(move || {
                let c = now.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(c, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(300));
                now.fetch_sub(1, Ordering::SeqCst);
            }),
        )
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
fn locked_pool_refuses_and_held_pool_waits() {
    let p = pool(2, 10);
    p.lock(false);
    assert_eq!(
        p.submit(JobClass::default(), Box::new(|| {})),
        Err(SubmitError::Locked)
    );
    p.unlock();
    p.lock(true);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    p.submit(
        JobClass::default(),
        Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }),
    )
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
    p.submit(
        JobClass::default(),
        Box::new(|| thread::sleep(Duration::from_secs(3))),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    assert_eq!(p.stop(Some(Duration::from_millis(100))), 1);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        p.submit(JobClass::default(), Box::new(|| {})),
        Err(SubmitError::Stopped)
    );
}

/// Stands in for the GIL, as the WSGI pool uses it: a streak of jobs holds it, a job lets
/// go of it to wait, the watcher probes it.
#[derive(Default)]
struct FakeGil {
    locked: Mutex<bool>,
    freed: Condvar,
}

impl FakeGil {
    fn acquire(&self) {
        let mut locked = self.locked.lock().unwrap();
        while *locked {
            locked = self.freed.wait(locked).unwrap();
        }
        *locked = true;
    }

    fn release(&self) {
        *self.locked.lock().unwrap() = false;
        self.freed.notify_one();
    }

    /// Runs `f` with the GIL let go, as C code that releases it does.
    fn without<R>(&self, f: impl FnOnce() -> R) -> R {
        self.release();
        let r = f();
        self.acquire();
        r
    }
}

fn with_fake_gil(max: usize) -> (Pool, Arc<FakeGil>) {
    let gil = Arc::new(FakeGil::default());
    let (probe, busy) = (Arc::clone(&gil), Arc::clone(&gil));
    let pool = Pool::with_contexts(
        PoolLimits {
            min_threads: 1,
            max_threads: max,
            queue: 1000,
        },
        Contexts {
            thread: None,
            busy: Some(Arc::new(move |run: &mut (dyn FnMut() + Send)| {
                busy.acquire();
                run();
                busy.release();
            })),
            gil: Some(Arc::new(move |run: &mut (dyn FnMut() + Send)| {
                probe.acquire();
                run();
                probe.release();
            })),
        },
    );
    (pool, gil)
}

/// Counts jobs inside a section at once, and the most seen.
#[derive(Default)]
struct Overlap {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Overlap {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// Runs `n` copies of `job` and waits for them all.
fn run_all(p: &Pool, n: usize, job: impl Fn() + Send + Sync + 'static) {
    let job = Arc::new(job);
    for _ in 0..n {
        let job = Arc::clone(&job);
        p.submit(JobClass::default(), Box::new(move || job()))
            .unwrap();
    }
    assert_eq!(p.drain(Some(Duration::from_secs(30))), 0);
}

fn spin(d: Duration) {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[test]
fn jobs_that_wait_off_the_gil_reach_the_thread_limit() {
    let (p, gil) = with_fake_gil(8);
    let waiting = Arc::new(Overlap::default());
    let w = Arc::clone(&waiting);
    run_all(&p, 24, move || {
        gil.without(|| {
            w.enter();
            thread::sleep(Duration::from_millis(200));
            w.leave();
        })
    });
    assert_eq!(waiting.most(), 8);
}

#[test]
fn jobs_that_hold_the_gil_run_one_at_a_time() {
    let (p, gil) = with_fake_gil(8);
    let inside = Arc::new(Overlap::default());
    let i = Arc::clone(&inside);
    run_all(&p, 10, move || {
        i.enter();
        spin(Duration::from_millis(20));
        i.leave();
    });
    // Nothing was admitted beside the holder: one thread did all the work.
    assert_eq!(inside.most(), 1);
    assert_eq!(p.inner.lock().threads, 1);
    drop(gil);
}

#[test]
fn gil_free_work_on_a_core_runs_beside_other_such_work() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let (p, gil) = with_fake_gil(8);
    let computing = Arc::new(Overlap::default());
    let c = Arc::clone(&computing);
    run_all(&p, 8, move || {
        gil.without(|| {
            c.enter();
            spin(Duration::from_millis(150));
            c.leave();
        })
    });
    assert!(
        computing.most() >= cores.min(2),
        "GIL-free work never shared the cores: {}",
        computing.most()
    );
}

#[test]
fn a_job_that_leaves_the_gil_mid_way_lets_the_next_start() {
    // Python, then a long wait, then Python again: the queue moves while it waits.
    let (p, gil) = with_fake_gil(2);
    let second_started = Arc::new(AtomicBool::new(false));
    let seen_while_waiting = Arc::new(AtomicBool::new(false));
    {
        let (gil, started, seen) = (
            Arc::clone(&gil),
            Arc::clone(&second_started),
            Arc::clone(&seen_while_waiting),
        );
        p.submit(
            JobClass::default(),
            Box::new(move || {
                spin(Duration::from_millis(20));
                gil.without(|| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_secs(5) && !started.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                });
                seen.store(started.load(Ordering::SeqCst), Ordering::SeqCst);
            }),
        )
        .unwrap();
    }
    {
        let started = Arc::clone(&second_started);
        p.submit(
            JobClass::default(),
            Box::new(move || started.store(true, Ordering::SeqCst)),
        )
        .unwrap();
    }
    assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
    assert!(seen_while_waiting.load(Ordering::SeqCst));
}

#[test]
fn python_that_lets_go_of_the_gil_briefly_still_runs_one_at_a_time() {
    // Like a page of Python between short SQLite steps: the GIL is free for a few
    // microseconds every 100, which a probe alone would take for C code on a core.
    let (p, gil) = with_fake_gil(8);
    let inside = Arc::new(Overlap::default());
    let i = Arc::clone(&inside);
    run_all(&p, 8, move || {
        i.enter();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            spin(Duration::from_micros(80));
            gil.without(|| spin(Duration::from_micros(20)));
        }
        i.leave();
    });
    assert_eq!(inside.most(), 1);
}

#[test]
fn a_job_marked_stuck_gives_up_its_place() {
    // One thread allowed: a job waiting off the GIL (a view asleep on a dead socket) holds
    // back every other, as the limit says, until it is marked stuck; then the next runs
    // beside it, and the counts say so.
    let (p, gil) = with_fake_gil(1);
    let (key_tx, key_rx) = mpsc::channel();
    let release = Arc::new(AtomicBool::new(false));
    {
        let release = Arc::clone(&release);
        let gil = Arc::clone(&gil);
        p.submit(
            JobClass::default(),
            Box::new(move || {
                key_tx.send(current_job()).unwrap();
                gil.without(|| {
                    while !release.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(1));
                    }
                });
            }),
        )
        .unwrap();
    }
    let key = key_rx.recv().unwrap().expect("a pool thread knows its job");
    let (done_tx, done_rx) = mpsc::channel();
    p.submit(
        JobClass::default(),
        Box::new(move || done_tx.send(()).unwrap()),
    )
    .unwrap();
    assert!(done_rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(p.marker().mark_stuck(key));
    assert!(!p.marker().mark_stuck(key), "marked once");
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(p.stuck(), Stuck { now: 1, total: 1 });
    release.store(true, Ordering::SeqCst);
    assert_eq!(p.drain(Some(Duration::from_secs(10))), 0);
    assert_eq!(p.stuck(), Stuck { now: 0, total: 1 });
    assert!(!p.marker().mark_stuck(key), "an ended job is not marked");
}
