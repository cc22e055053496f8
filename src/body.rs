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
    Stream(mpsc::Receiver<Chunk>),
    Boxed(UnsyncBoxBody<Bytes, BodyError>),
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

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data))),
            ResponseBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(_) => false,
            ResponseBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Boxed(b) => b.size_hint(),
        }
    }
}
