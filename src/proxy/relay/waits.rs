//! How long the relay waits for a client: between requests, within a head, and for a
//! retiring server's last request; the timer behind each wait is set without an operation per
//! request.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::config::Config;

/// A deadline that moves with every request without a timer operation per request: its
/// timer is set again only when it fires before the deadline, or when the deadline comes
/// sooner than the timer is set for.
pub(super) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    pub(super) fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    pub(super) fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ends once the deadline has passed.
    pub(super) async fn passed(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }
}

/// The client's waits: the keep-alive wait while nothing of the next head has come, the head
/// wait from its first byte, and a retiring server's last grace.
pub(super) struct Waits {
    pub(super) keep_alive: Duration,
    pub(super) head: Duration,
    pub(super) idle_since: Instant,
    pub(super) head_since: Option<Instant>,
    pub(super) answered: bool,
    pub(super) stop_by: Option<Instant>,
    pub(super) timer: Deadline,
}

impl Waits {
    pub(super) fn new(config: &Config) -> Waits {
        let now = Instant::now();
        Waits {
            keep_alive: config.keep_alive,
            head: config.header_timeout,
            idle_since: now,
            head_since: None,
            answered: false,
            stop_by: None,
            timer: Deadline::new(now + config.header_timeout),
        }
    }

    pub(super) fn moved(&mut self) {
        let at = match (self.head_since, self.answered) {
            (Some(since), _) => since + self.head,
            (None, false) => self.idle_since + self.head,
            (None, true) => self.idle_since + self.keep_alive,
        };
        self.timer.set(self.stop_by.map_or(at, |s| s.min(at)));
    }

    pub(super) fn head_begun(&mut self) {
        if self.head_since.is_none() {
            self.head_since = Some(Instant::now());
            self.moved();
        }
    }

    pub(super) fn answered(&mut self, now: Instant) {
        self.answered = true;
        self.head_since = None;
        self.idle_since = now;
        self.moved();
    }

    pub(super) fn stop_by(&mut self, at: Instant) {
        self.stop_by = Some(at);
        self.moved();
    }
}

pub(super) enum Wake {
    Read,
    /// The client closed, a wait ran out, or the read failed.
    Done,
    Stop,
}

/// More of the client's bytes, or why none come.
pub(super) async fn read_client<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    waits: &mut Waits,
    shutdown: &mut watch::Receiver<bool>,
    stop_heard: bool,
) -> Wake {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8192);
    }
    tokio::select! {
        biased;
        read = io.read_buf(buf) => match read {
            Ok(n) if n > 0 => Wake::Read,
            _ => Wake::Done,
        },
        () = waits.timer.passed() => Wake::Done,
        _ = shutdown.changed(), if !stop_heard => Wake::Stop,
    }
}
