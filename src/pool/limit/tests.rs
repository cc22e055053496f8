//! The learner driven by a simulated machine: one GIL with a 5 ms switch interval, a number
//! of cores shared round robin (with busy neighbours if asked), clients that send their
//! next request as soon as one is answered. Each run is the same every time: the simulated
//! clock is the only clock.

use super::*;
use std::collections::VecDeque;

const TICK: Duration = Duration::from_micros(50);
const SWITCH: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// Python: needs the GIL and a core.
    Py(Duration),
    /// C code without the GIL: needs a core.
    C(Duration),
    /// Blocked on something else: needs nothing.
    Wait(Duration),
}

fn ms(n: f64) -> Duration {
    Duration::from_secs_f64(n / 1000.0)
}

struct Job {
    class: JobClass,
    steps: VecDeque<Step>,
    started: Duration,
    cpu: Duration,
    run_queue: Duration,
    sampled: bool,
    alone: bool,
    client: usize,
    /// When its thread last ran, for the probe's "ran while it waited".
    last_ran: Option<Duration>,
    /// Whether it is inside a `Py` step that waits for the GIL.
    kind: &'static str,
}

struct Sim {
    learner: Learner,
    threads: usize,
    cores: usize,
    neighbours: usize,
    now: Duration,
    queue: VecDeque<Job>,
    running: Vec<Job>,
    gil: Option<usize>,
    gil_since: Duration,
    rotate: usize,
    /// Most jobs running at once, in total and of each kind, since the last reset.
    most: usize,
    most_of: std::collections::HashMap<&'static str, usize>,
    done: usize,
}

/// Which page each client asks for next: (kind name, class, steps).
type Pages = dyn FnMut(usize, Duration) -> (&'static str, JobClass, Vec<Step>);

impl Sim {
    fn new(threads: usize, cores: usize, neighbours: usize) -> Sim {
        Sim {
            learner: Learner::new(cores, true),
            threads,
            cores,
            neighbours,
            now: Duration::ZERO,
            queue: VecDeque::new(),
            running: Vec::new(),
            gil: None,
            gil_since: Duration::ZERO,
            rotate: 0,
            most: 0,
            most_of: Default::default(),
            done: 0,
        }
    }

    fn submit(&mut self, client: usize, pages: &mut Pages) {
        let (kind, class, steps) = pages(client, self.now);
        self.queue.push_back(Job {
            class,
            steps: steps.into(),
            started: Duration::ZERO,
            cpu: Duration::ZERO,
            run_queue: Duration::ZERO,
            sampled: false,
            alone: false,
            client,
            last_ran: None,
            kind,
        });
    }

    fn may_start(&self) -> Start {
        let Some(next) = self.queue.front() else {
            return Start::NotYet;
        };
        if self.running.len() >= self.threads {
            return Start::NotYet;
        }
        let running = self
            .running
            .iter()
            .map(|j| (j.class, j.alone && self.now - j.started < ALONE_HOLD));
        self.learner.start(running, next.class, self.now)
    }

    fn admit(&mut self) {
        loop {
            let alone = match self.may_start() {
                Start::NotYet => break,
                Start::Now => false,
                Start::Alone => true,
            };
            let mut job = self.queue.pop_front().expect("may_start");
            job.started = self.now;
            job.sampled = self.learner.sample(job.class, self.now) || alone;
            job.alone = alone;
            self.running.push(job);
        }
        self.most = self.most.max(self.running.len());
        let mut counts = std::collections::HashMap::new();
        for j in &self.running {
            *counts.entry(j.kind).or_insert(0) += 1;
        }
        for (k, n) in counts {
            let m = self.most_of.entry(k).or_insert(0);
            *m = (*m).max(n);
        }
    }

    fn wants_gil(&self, i: usize) -> bool {
        matches!(self.running[i].steps.front(), Some(Step::Py(_)))
    }

    /// Probes as the pool would: when a backlog is held back below the thread limit.
    fn maybe_probe(&mut self) {
        if self.queue.is_empty()
            || self.may_start() != Start::NotYet
            || self.running.len() >= self.threads
        {
            return;
        }
        let classes = self.running.iter().map(|j| j.class);
        if !self.learner.probe_in(classes, self.now).is_zero() {
            return;
        }
        let python_holder = self.gil.is_some_and(|g| self.wants_gil(g));
        let waited = if python_holder {
            SWITCH
        } else {
            Duration::ZERO
        };
        let held = Duration::from_micros(200);
        let seen: Vec<Seen> = self
            .running
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let recent = j.last_ran.is_some_and(|t| self.now - t <= waited);
                let off_gil = matches!(j.steps.front(), Some(Step::C(_)));
                let waits = matches!(j.steps.front(), Some(Step::Wait(_)));
                Seen {
                    class: j.class,
                    age: self.now - j.started,
                    // Waiting for the GIL is sleeping too.
                    sleeping: waits || (!off_gil && self.gil != Some(i)),
                    before: if recent && !waited.is_zero() {
                        TICK
                    } else {
                        Duration::ZERO
                    },
                    during: if off_gil { held } else { Duration::ZERO },
                    held,
                }
            })
            .collect();
        self.learner.learn_probe(waited, &seen, self.now);
        self.admit();
    }

    fn tick(&mut self, pages: &mut Pages) {
        // The GIL: kept by a holder still in Python until the switch interval passes with
        // others waiting; otherwise handed to the next that wants it.
        let wanting: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.wants_gil(i))
            .collect();
        let keep = self.gil.filter(|&g| {
            self.wants_gil(g) && (wanting.len() == 1 || self.now - self.gil_since < SWITCH)
        });
        if keep.is_none() {
            let after = self.gil.unwrap_or(0);
            self.gil = wanting
                .iter()
                .copied()
                .find(|&i| i > after || self.gil.is_none())
                .or_else(|| wanting.first().copied());
            self.gil_since = self.now;
        }
        // The cores: runnable threads and neighbours take turns.
        let mut runnable: Vec<Option<usize>> = (0..self.running.len())
            .filter(|&i| match self.running[i].steps.front() {
                Some(Step::C(_)) => true,
                Some(Step::Py(_)) => self.gil == Some(i),
                _ => false,
            })
            .map(Some)
            .collect();
        runnable.extend(std::iter::repeat_n(None, self.neighbours));
        let n = runnable.len();
        let on_core: Vec<Option<usize>> = (0..n.min(self.cores))
            .map(|k| runnable[(self.rotate + k) % n])
            .collect();
        self.rotate = self.rotate.wrapping_add(1);
        for i in runnable.iter().flatten() {
            if !on_core.contains(&Some(*i)) {
                self.running[*i].run_queue += TICK;
            }
        }
        for i in 0..self.running.len() {
            let ran = on_core.contains(&Some(i));
            let job = &mut self.running[i];
            if ran {
                job.cpu += TICK;
                job.last_ran = Some(self.now);
            }
            let step = job.steps.front_mut().expect("a running job has steps");
            let left = match step {
                Step::Wait(d) => d,
                Step::Py(d) | Step::C(d) if ran => d,
                _ => continue,
            };
            *left = left.saturating_sub(TICK);
            if left.is_zero() {
                job.steps.pop_front();
            }
        }
        self.now += TICK;
        // Finished jobs are measured; their clients ask again.
        let mut i = 0;
        while i < self.running.len() {
            if !self.running[i].steps.is_empty() {
                i += 1;
                continue;
            }
            let job = self.running.remove(i);
            if self.gil == Some(i) {
                self.gil = None;
            } else if let Some(g) = self.gil.filter(|&g| g > i) {
                self.gil = Some(g - 1);
            }
            if job.sampled {
                let run = Measured {
                    cpu: job.cpu,
                    run_queue: job.run_queue,
                    wall: self.now - job.started,
                };
                self.learner.learn(job.class, run, job.alone, self.now);
            }
            self.done += 1;
            self.submit(job.client, pages);
        }
        self.admit();
        self.maybe_probe();
    }

    fn run(&mut self, clients: usize, pages: &mut Pages, for_: Duration) {
        if self.now.is_zero() {
            for c in 0..clients {
                self.submit(c, pages);
            }
        }
        let end = self.now + for_;
        while self.now < end {
            self.tick(pages);
        }
    }

    fn reset_counts(&mut self) {
        self.most = self.running.len();
        self.most_of.clear();
        self.done = 0;
    }
}

fn page(kind: &'static str, class: u8, steps: &[Step]) -> (&'static str, JobClass, Vec<Step>) {
    (kind, JobClass::numbered(class), steps.to_vec())
}

fn waits() -> Vec<Step> {
    vec![Step::Py(ms(0.2)), Step::Wait(ms(20.0)), Step::Py(ms(0.1))]
}

#[test]
fn waits_reach_the_thread_limit() {
    let mut sim = Sim::new(20, 2, 0);
    let pages: &mut Pages = &mut |_, _| page("io", 1, &waits());
    sim.run(32, pages, Duration::from_secs(1));
    sim.reset_counts();
    sim.run(32, pages, Duration::from_secs(1));
    assert_eq!(sim.most, 20);
    assert_eq!(sim.learner.limit_for(JobClass::numbered(1), 20), 20);
    // Twenty waits of ~20 ms each at once: close to 1,000 a second.
    assert!(sim.done > 900, "{} done", sim.done);
}

#[test]
fn pure_python_runs_one_at_a_time() {
    for neighbours in [0, 2] {
        let mut sim = Sim::new(8, 2, neighbours);
        let pages: &mut Pages = &mut |_, _| page("py", 2, &[Step::Py(ms(2.0))]);
        sim.run(8, pages, Duration::from_secs(2));
        assert_eq!(sim.most, 1, "with {neighbours} busy neighbours");
        assert_eq!(sim.learner.limit_for(JobClass::numbered(2), 8), 1);
    }
}

#[test]
fn gil_free_c_code_reaches_the_cores() {
    let mut sim = Sim::new(8, 2, 0);
    let pages: &mut Pages = &mut |_, _| page("hash", 3, &[Step::Py(ms(0.1)), Step::C(ms(40.0))]);
    sim.run(4, pages, Duration::from_secs(1));
    sim.reset_counts();
    sim.run(4, pages, Duration::from_secs(2));
    assert_eq!(sim.most, 2, "both cores and no more");
    // Two at a time, 40 ms each: about 50 a second.
    assert!(sim.done >= 90, "{} done", sim.done);
}

#[test]
fn fast_pages_and_waits_mixed_keep_the_waits_overlapped() {
    let mut sim = Sim::new(20, 2, 0);
    let mut n = 0usize;
    let pages: &mut Pages = &mut move |_, _| {
        n += 1;
        if n.is_multiple_of(10) {
            page("io", 1, &waits())
        } else {
            page("hello", 4, &[Step::Py(ms(0.08))])
        }
    };
    sim.run(32, pages, Duration::from_secs(1));
    sim.reset_counts();
    sim.run(32, pages, Duration::from_secs(1));
    // The hellos take turns on the GIL, the waits pile up beside them.
    assert!(sim.most_of["io"] >= 10, "{:?}", sim.most_of);
    assert!(sim.most_of["hello"] <= 2, "{:?}", sim.most_of);
    // A hello each 0.08 ms of GIL, nine in ten requests: several thousand a second.
    assert!(sim.done > 5000, "{} done", sim.done);
}

#[test]
fn waits_beside_python_keep_python_one_at_a_time() {
    let mut sim = Sim::new(4, 2, 0);
    let pages: &mut Pages = &mut |client, _| {
        if client < 3 {
            page("sleep", 1, &[Step::Wait(ms(20.0))])
        } else {
            page("py", 2, &[Step::Py(ms(20.0))])
        }
    };
    sim.run(7, pages, Duration::from_secs(3));
    assert_eq!(sim.most_of["sleep"], 3);
    assert_eq!(sim.most_of["py"], 1);
}

#[test]
fn a_site_that_turns_from_waiting_to_computing_comes_down_within_a_second() {
    let mut sim = Sim::new(20, 2, 0);
    let pages: &mut Pages = &mut |_, now| {
        if now < Duration::from_secs(2) {
            page("io", 1, &waits())
        } else {
            page("py", 1, &[Step::Py(ms(3.0))])
        }
    };
    sim.run(32, pages, Duration::from_secs(2));
    assert_eq!(sim.learner.limit_for(JobClass::numbered(1), 20), 20);
    sim.run(32, pages, Duration::from_secs(1));
    sim.reset_counts();
    sim.run(32, pages, Duration::from_millis(500));
    assert!(
        sim.most <= 2,
        "{} at once a second after the change",
        sim.most
    );
}

#[test]
fn a_kind_is_read_from_the_method_and_the_first_two_segments() {
    let a = JobClass::of("GET", "/articles/2024/one");
    assert_eq!(a, JobClass::of("GET", "/articles/2024/two?x=1"));
    assert_eq!(JobClass::of("GET", "/a?b/c"), JobClass::of("GET", "/a"));
    let distinct = [
        JobClass::of("GET", "/"),
        JobClass::of("GET", "/io"),
        JobClass::of("GET", "/cpu"),
        JobClass::of("POST", "/io"),
    ];
    for (i, x) in distinct.iter().enumerate() {
        for y in &distinct[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

#[test]
fn without_a_shared_lock_only_the_cores_limit() {
    let mut l = Learner::new(2, false);
    let class = JobClass::numbered(9);
    l.learn(
        class,
        Measured {
            cpu: ms(1.0),
            run_queue: Duration::ZERO,
            wall: ms(1.0),
        },
        false,
        Duration::ZERO,
    );
    assert_eq!(l.limit_for(class, 8), 2);
}

fn run(cpu: f64, wall: f64) -> Measured {
    Measured {
        cpu: ms(cpu),
        run_queue: Duration::ZERO,
        wall: ms(wall),
    }
}

#[test]
fn a_run_alone_holds_the_pool_back_only_briefly() {
    let mut l = Learner::new(2, true);
    let (waits, other) = (JobClass::numbered(1), JobClass::numbered(2));
    let mut now = Duration::from_secs(5);
    for _ in 0..20 {
        l.learn(waits, run(0.2, 20.0), false, now);
    }
    // Its runs grow to three times as long: one is to run alone.
    for _ in 0..20 {
        l.learn(waits, run(0.2, 60.0), false, now);
        now += ms(1.0);
    }
    assert_eq!(
        l.start(std::iter::once((other, false)), waits, now),
        Start::NotYet
    );
    // Until the pool empties, or for at most ALONE_HOLD, after which it starts as any other.
    assert_eq!(l.start(std::iter::empty(), waits, now), Start::Alone);
    let later = now + ALONE_HOLD;
    assert_eq!(
        l.start(std::iter::once((other, false)), waits, later),
        Start::Now
    );
    // A run alone holds others back only while the caller says it does.
    assert_eq!(
        l.start(std::iter::once((waits, true)), other, now),
        Start::NotYet
    );
    assert_eq!(
        l.start(std::iter::once((waits, false)), waits, later),
        Start::Now
    );
}

#[test]
fn a_kind_of_long_runs_never_runs_alone() {
    let mut l = Learner::new(2, true);
    let polls = JobClass::numbered(3);
    let mut now = Duration::from_secs(5);
    for wall in [500.0, 2000.0, 5000.0, 9000.0, 30000.0].repeat(4) {
        l.learn(polls, run(1.0, wall), false, now);
        now += ms(10.0);
        assert_eq!(
            l.start(std::iter::once((polls, false)), polls, now),
            Start::Now
        );
    }
}
