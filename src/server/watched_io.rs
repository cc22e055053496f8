//! The socket as hyper sees it, with every byte read also fed to the connection's `Wire`
//! (so heads are judged from the bytes themselves), and the connection's two waits kept:
//! the keep-alive wait between requests ends it quietly, a head that takes too long ends it
//! with an error. hyper's own header timer runs from the moment it waits for a head, so it
//! cannot tell an idle connection from a slow head; it is off.
//!
//! No timer per connection: a deadline moves with every request, and resetting a timer on
//! each (this one's and hyper's) cost about 1,000 instructions per request (`bench/
//! instructions hello`). A sweep (`Sweep`) looks at every connection a few times a second
//! instead and wakes those whose wait has run out, so a wait ends up to `SWEEP_EVERY` late.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::coarse_clock::Moment;
use super::wire::{Expiry, Wire};
use crate::sync::Recover;

pub struct WatchedIo<I> {
    io: I,
    /// Bytes read from `io` before it was watched (to tell its protocol), read again first.
    first: Bytes,
    wire: Arc<Mutex<Wire>>,
}

impl<I> WatchedIo<I> {
    pub fn new(io: I, first: Bytes, wire: Arc<Mutex<Wire>>) -> Self {
        WatchedIo { io, first, wire }
    }

    fn note_written(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written
            && *n > 0
        {
            self.wire.lock().recover().wrote();
        }
    }

    /// Called when a read found nothing: ends the read if the client kept the server
    /// waiting too long, else leaves the task for the sweep to wake when the wait runs out.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        wait_on(&mut self.wire.lock().recover(), cx)
    }
}

/// Whether the wait `wire` is in has run out; if it has not, the sweep wakes `cx` once it
/// does.
fn wait_on(wire: &mut Wire, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let Some((at, expiry)) = wire.deadline() else {
        return Poll::Pending;
    };
    if Moment::now() < at {
        wire.wake_me(cx.waker());
        return Poll::Pending;
    }
    match expiry {
        // An end of stream between requests: hyper closes the connection without a word.
        Expiry::Idle => Poll::Ready(Ok(())),
        Expiry::Head => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request head took too long",
        ))),
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = if this.first.has_remaining() {
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..n]);
            this.first.advance(n);
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.io).poll_read(cx, buf)
        };
        match read {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.wire.lock().recover().feed(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_wait(cx),
            failed => failed,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note_written(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note_written(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            let mut wire = this.wire.lock().recover();
            wire.flushed();
            // hyper may not read again before it sleeps: the wait must wake it on its own.
            if wait_on(&mut wire, cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How often the sweep looks at the connections' waits.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Every open connection's `Wire`, looked at by `run` every `SWEEP_EVERY`.
#[derive(Default)]
pub struct Sweep {
    wires: Mutex<Vec<std::sync::Weak<Mutex<Wire>>>>,
}

impl Sweep {
    pub fn add(&self, wire: &Arc<Mutex<Wire>>) {
        self.wires.lock().recover().push(Arc::downgrade(wire));
    }

    /// Wakes the connections whose wait has run out, and forgets those that have ended.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Moment::now();
            let mut wires = self.wires.lock().recover();
            wires.retain(|w| match w.upgrade() {
                Some(wire) => {
                    wire.lock().recover().sweep(now);
                    true
                }
                None => false,
            });
        }
    }
}

/// A response body that tells the connection's `Wire` when the answer is over (sent whole,
/// or dropped with the connection), so the keep-alive wait starts only then.
pub struct Answering<B> {
    body: B,
    wire: Arc<Mutex<Wire>>,
}

impl<B> Answering<B> {
    pub fn new(body: B, wire: Arc<Mutex<Wire>>) -> Self {
        Answering { body, wire }
    }
}

impl<B> Drop for Answering<B> {
    fn drop(&mut self) {
        self.wire.lock().recover().end(Moment::now());
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
