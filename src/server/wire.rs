//! One connection's reading of its own bytes, and the waits that follow from it: how long it
//! may sit idle between requests, and how long a head may take. The socket's reader
//! (`watched_io`) feeds it, the pipeline takes each request's head from it, each answer's end
//! is noted on it, and the sweep wakes a connection whose wait ran out.

use std::time::Duration;

use super::coarse_clock::Moment;

use crate::http::conn::FramingFault;
use crate::http::framing::{Framing, Seen};

/// How long a connection may sit without a request, and how long a head may take.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// Between two requests (after an answer).
    pub keep_alive: Duration,
    /// From a head's first byte to its end, and before a connection's first request.
    pub head: Duration,
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing came between requests: the connection closes quietly.
    Idle,
    /// A head began and did not end in time.
    Head,
}

/// One connection's reading of its own bytes, and whether a request is being answered: the
/// socket's reader feeds it, each request takes its head from it, each answer's end is noted.
#[derive(Debug)]
pub struct Wire {
    framing: Framing,
    /// Requests whose answer has not been sent whole.
    active: usize,
    answered: u64,
    idle_since: Moment,
    head_since: Moment,
    /// Written and not flushed yet: an answer's end may still sit in a buffer.
    unflushed: bool,
    upgraded: bool,
    waits: Waits,
    /// Shared with the connection's request bodies.
    fault: FramingFault,
    /// The connection's task, while it waits for the client: woken by the sweep once the
    /// wait has run out.
    waker: Option<std::task::Waker>,
}

impl Wire {
    pub fn new(max_head: usize, max_fields: usize, waits: Waits, fault: FramingFault) -> Wire {
        let now = Moment::now();
        Wire {
            framing: Framing::new(max_head, max_fields),
            active: 0,
            answered: 0,
            idle_since: now,
            head_since: now,
            unflushed: false,
            upgraded: false,
            waits,
            fault,
            waker: None,
        }
    }

    /// The connection speaks HTTP/2: its bytes are frames, not heads, and only the idle
    /// wait between streams applies.
    pub fn multiplexed(&mut self) {
        self.framing.stop();
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let before = self.framing.heads_seen();
        let was_in_head = self.framing.in_head();
        self.framing.feed(bytes);
        if let Some(reason) = self.framing.fault() {
            self.fault.set(reason);
        }
        if self.framing.in_head() && (!was_in_head || self.framing.heads_seen() != before) {
            self.head_since = Moment::now();
        }
    }

    /// What this reading saw where the next request hyper parsed begins.
    pub fn take_head(&mut self) -> Seen {
        self.framing.take()
    }

    /// The connection now carries something else (a WebSocket after 101): it has no more
    /// requests, and no waits of its own.
    pub fn upgraded(&mut self) {
        self.upgraded = true;
        self.framing.stop();
    }

    /// What was written has been flushed to the socket: with no answer pending, the
    /// keep-alive wait runs from now.
    pub fn flushed(&mut self) {
        if self.active == 0 {
            self.unflushed = false;
            self.idle_since = Moment::now();
        }
    }

    /// Bytes were written that are not yet flushed: the answer is still going out.
    pub fn wrote(&mut self) {
        self.unflushed = true;
    }

    pub fn begin(&mut self) {
        self.active += 1;
    }

    pub fn end(&mut self, now: Moment) {
        self.active = self.active.saturating_sub(1);
        self.answered += 1;
        self.idle_since = now;
    }

    /// Notes the task to wake when the wait runs out.
    pub fn wake_me(&mut self, waker: &std::task::Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    /// Wakes the connection's task if its wait has run out by `now`.
    pub fn sweep(&mut self, now: Moment) {
        if self.deadline().is_some_and(|(at, _)| at <= now)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }

    /// When the connection gives up waiting, if it is waiting for the client at all: never
    /// while an answer is being made or sent, nor once it is upgraded.
    pub fn deadline(&self) -> Option<(Moment, Expiry)> {
        let waits = &self.waits;
        if self.upgraded || self.active > 0 || self.unflushed {
            return None;
        }
        // With keep-alive off hyper closes after the answer itself.
        if self.answered > 0 && waits.keep_alive.is_zero() {
            return None;
        }
        if self.framing.in_head() {
            return Some((self.head_since + waits.head, Expiry::Head));
        }
        // A lost reading cannot tell a head from idleness: only the keep-alive wait holds.
        if self.framing.at_boundary() || self.framing.is_lost() {
            let wait = if self.answered == 0 {
                waits.head
            } else {
                waits.keep_alive
            };
            return Some((self.idle_since + wait, Expiry::Idle));
        }
        None
    }
}
