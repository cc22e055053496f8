//! Request counters for Prometheus: answers by status, requests in flight, and a histogram of
//! the time to the response head. Plain atomics, so counting costs nothing worth measuring.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    /// Index `status - 100`, for 100..=599.
    by_status: Vec<AtomicU64>,
    in_flight: AtomicI64,
    /// Cumulative counts are computed when rendering; each slot counts its own bucket.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicI64::new(0),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// What the app's pool reports beside the request counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGauges {
    pub queued: usize,
    pub pending: usize,
    pub stuck: crate::pool::Stuck,
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.by_status
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.by_status.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `labels` (e.g. `worker="12"`) go on every sample.
    pub fn render(&self, labels: &str, pool: &PoolGauges) -> String {
        let PoolGauges {
            queued,
            pending,
            stuck,
        } = *pool;
        let l = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{labels}}}"),
            (false, false) => format!("{{{labels},{extra}}}"),
        };
        let mut out = String::new();
        out.push_str("# HELP bartizan_requests_total Requests answered, by status code.\n");
        out.push_str("# TYPE bartizan_requests_total counter\n");
        for (i, c) in self.by_status.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "bartizan_requests_total{} {n}",
                    l(&format!("status=\"{}\"", i + 100))
                );
            }
        }
        out.push_str("# HELP bartizan_requests_in_flight Requests not yet answered.\n");
        out.push_str("# TYPE bartizan_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "bartizan_requests_in_flight{} {}",
            l(""),
            self.in_flight.load(Ordering::Relaxed).max(0)
        );
        out.push_str("# HELP bartizan_queue_length App requests waiting for a thread.\n");
        out.push_str("# TYPE bartizan_queue_length gauge\n");
        let _ = writeln!(out, "bartizan_queue_length{} {queued}", l(""));
        out.push_str("# HELP bartizan_app_pending App requests queued or running.\n");
        out.push_str("# TYPE bartizan_app_pending gauge\n");
        let _ = writeln!(out, "bartizan_app_pending{} {pending}", l(""));
        out.push_str(
            "# HELP bartizan_stuck_requests App requests past the request timeout whose \
             threads are still in the app.\n",
        );
        out.push_str("# TYPE bartizan_stuck_requests gauge\n");
        let _ = writeln!(out, "bartizan_stuck_requests{} {}", l(""), stuck.now);
        out.push_str(
            "# HELP bartizan_stuck_requests_total App requests that ran past the request \
             timeout.\n",
        );
        out.push_str("# TYPE bartizan_stuck_requests_total counter\n");
        let _ = writeln!(
            out,
            "bartizan_stuck_requests_total{} {}",
            l(""),
            stuck.total
        );
        out.push_str(
            "# HELP bartizan_request_duration_seconds Time from request to response head.\n",
        );
        out.push_str("# TYPE bartizan_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .enumerate()
        {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "bartizan_request_duration_seconds_bucket{} {cumulative}",
                l(&format!("le=\"{bound}\""))
            );
        }
        let _ = writeln!(
            out,
            "bartizan_request_duration_seconds_sum{} {}",
            l(""),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "bartizan_request_duration_seconds_count{} {cumulative}",
            l("")
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        {
            let _g = m.start();
            m.record(200, Duration::from_micros(500));
            m.record(200, Duration::from_millis(30));
            m.record(503, Duration::from_secs(20));
        }
        let pool = PoolGauges {
            queued: 2,
            pending: 3,
            stuck: crate::pool::Stuck { now: 1, total: 4 },
        };
        let text = m.render("worker=\"1\"", &pool);
        assert!(text.contains("bartizan_requests_total{worker=\"1\",status=\"200\"} 2"));
        assert!(text.contains("bartizan_requests_total{worker=\"1\",status=\"503\"} 1"));
        assert!(
            text.contains("bartizan_request_duration_seconds_bucket{worker=\"1\",le=\"0.001\"} 1")
        );
        assert!(
            text.contains("bartizan_request_duration_seconds_bucket{worker=\"1\",le=\"0.05\"} 2")
        );
        assert!(
            text.contains("bartizan_request_duration_seconds_bucket{worker=\"1\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("bartizan_requests_in_flight{worker=\"1\"} 0"));
        assert!(text.contains("bartizan_queue_length{worker=\"1\"} 2"));
        assert!(text.contains("bartizan_stuck_requests{worker=\"1\"} 1"));
        assert!(text.contains("bartizan_stuck_requests_total{worker=\"1\"} 4"));
    }
}
