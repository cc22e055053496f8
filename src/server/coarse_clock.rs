//! The clock a connection's waits are measured on: the kernel's coarse monotonic clock, which
//! advances at the scheduler's tick (a few ms) and is read in a few ns, where `Instant::now`
//! costs about 20. Those waits are seconds long and swept every 250 ms, and a request reads
//! the clock several times, so the cheaper reading is the one to take.

use std::ops::Add;
use std::time::Duration;

/// A moment on the coarse monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(Duration);

#[cfg(target_os = "linux")]
const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(not(target_os = "linux"))]
const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

impl Moment {
    pub fn now() -> Moment {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; a monotonic clock always exists.
        unsafe { libc::clock_gettime(CLOCK, &mut ts) };
        Moment(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;

    fn add(self, wait: Duration) -> Moment {
        Moment(self.0 + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_advance_with_time() {
        let before = Moment::now();
        std::thread::sleep(Duration::from_millis(30));
        let after = Moment::now();
        assert!(after > before);
        assert!(after < before + Duration::from_secs(5));
    }
}
