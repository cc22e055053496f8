//! The socket as hyper sees it, with every byte read also fed to the connection's `Wire`
//! (so heads are judged from the bytes themselves), and the connection's two waits kept:
//! the keep-alive wait between requests ends it quietly, a head that takes too long ends it
//! with an error. hyper's own header timer runs from the moment it waits for a head, so it
//! cannot tell an idle connection from a slow head; it stays on only as a backstop.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::http::conn::{Expiry, Waits, Wire};

pub struct WatchedIo<I> {
    io: I,
    wire: Arc<Mutex<Wire>>,
    waits: Waits,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl<I> WatchedIo<I> {
    pub fn new(io: I, wire: Arc<Mutex<Wire>>, waits: Waits) -> Self {
        WatchedIo {
            io,
            wire,
            waits,
            timer: None,
        }
    }

    fn note_written(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written
            && *n > 0
        {
            lock(&self.wire).wrote();
        }
    }

    /// Called when a read found nothing: ends the read if the client kept the server
    /// waiting too long.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = lock(&self.wire).deadline(&self.waits);
        let Some((at, expiry)) = deadline else {
            return Poll::Pending;
        };
        let sleep = match &mut self.timer {
            Some((set, sleep)) => {
                if *set != at {
                    sleep.as_mut().reset(at.into());
                    *set = at;
                }
                sleep
            }
            None => {
                &mut self
                    .timer
                    .insert((at, Box::pin(tokio::time::sleep_until(at.into()))))
                    .1
            }
        };
        if sleep.as_mut().poll(cx).is_pending() {
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
}

fn lock(wire: &Mutex<Wire>) -> std::sync::MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(|e| e.into_inner())
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    lock(&this.wire).feed(read, Instant::now());
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
            lock(&this.wire).flushed(Instant::now());
            // hyper may not read again before it sleeps: the wait must wake it on its own.
            if this.poll_wait(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
        lock(&self.wire).end(Instant::now());
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
