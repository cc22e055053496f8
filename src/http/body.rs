//! The one response body type every responder returns, so hyper sees a single concrete type:
//! a whole body known up front, chunks streamed from a pool thread, or any other body boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::mpsc;

/// Ends a response early: hyper then closes the connection instead of finishing the message,
/// so the client can tell the body is incomplete.
#[derive(Debug, thiserror::Error)]
#[error("response aborted: {0}")]
pub struct BodyError(pub String);

pub type Chunk = Result<Bytes, BodyError>;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(StreamBody),
    /// An upstream's answer, passed on as it arrives (unboxed: it is every proxied answer).
    Upstream(hyper::body::Incoming),
    Boxed(UnsyncBoxBody<Bytes, BodyError>),
}

/// Chunks from a pool thread. An abort is held back for one poll so that hyper flushes the
/// bytes already written before it drops the connection: the client then gets everything the
/// app produced, and sees the cut only where the app failed.
pub struct StreamBody {
    rx: mpsc::Receiver<Chunk>,
    abort: Option<BodyError>,
    deadline: Option<Deadline>,
}

/// When a streamed body must have ended, and what to do if it has not.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    on_expiry: Option<Box<dyn FnOnce() + Send>>,
}

impl StreamBody {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        StreamBody {
            rx,
            abort: None,
            deadline: None,
        }
    }

    /// The body is cut (the connection closed) if it has not ended by `at`; `on_expiry` runs
    /// then.
    pub fn until(mut self, at: tokio::time::Instant, on_expiry: Box<dyn FnOnce() + Send>) -> Self {
        self.deadline = Some(Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            on_expiry: Some(on_expiry),
        });
        self
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        if let Some(e) = self.abort.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let next = self.rx.poll_recv(cx);
        // Past the deadline only an app that is still making the body is cut: chunks it
        // already made are sent however slowly the client takes them.
        if next.is_pending()
            && let Some(d) = &mut self.deadline
            && d.sleep.as_mut().poll(cx).is_ready()
        {
            if let Some(report) = d.on_expiry.take() {
                report();
            }
            return Poll::Ready(Some(Err(BodyError("the request timed out".to_string()))));
        }
        match next {
            Poll::Ready(Some(Err(e))) => {
                self.abort = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ResponseBody::Full((!b.is_empty()).then_some(b))
    }
}

/// What a body of bytes gives when polled: its next frame, a failure, or its end.
pub type Polled<E> = Poll<Option<Result<Frame<Bytes>, E>>>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<BodyError> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(s) => s.poll_chunk(cx).map(|c| c.map(|c| c.map(Frame::data))),
            ResponseBody::Upstream(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| BodyError(format!("upstream body: {e}"))),
            ResponseBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(_) => false,
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// A whole answer as hyper sends it.
pub type Reply = http::Response<ResponseBody>;
