//! The request body as the app and the proxy front read it: hyper's body, with the start of a
//! chunked body read ahead so that its trailer section is judged before anyone is handed the
//! request. A trailer field that would change how the message is framed, routed or
//! authenticated (RFC 9110 6.5.1) makes a small body's request a 400 that reaches no one, and
//! a larger body's read fail where the trailers arrive; such a field is never passed on.
//! A chunk line the connection's framing reading refuses (`framing`'s fault) fails the read
//! the same way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::Polled;
use super::checks::Refusal;
use super::conn::FramingFault;
use super::forwarded;

/// Bytes of a chunked body read before the request is routed.
pub const READ_AHEAD: usize = 64 * 1024;

/// Fields a trailer section must not carry: framing, routing, authentication, request
/// modifiers and content metadata (RFC 9110 6.5.1), and who the client is.
pub fn forbidden_in_trailers(name: &HeaderName) -> bool {
    const NAMES: [&str; 24] = [
        "content-length",
        "transfer-encoding",
        "host",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "content-type",
        "content-encoding",
        "content-range",
        "trailer",
        "te",
        "connection",
        "upgrade",
        "expect",
        "max-forwards",
        "range",
        "cache-control",
        "pragma",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
    ];
    NAMES.contains(&name.as_str()) || forwarded::says_who(name)
}

fn forbidden_field(trailers: &HeaderMap) -> Option<&HeaderName> {
    trailers.keys().find(|n| forbidden_in_trailers(n))
}

#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("{0}")]
    Read(#[from] hyper::Error),
    #[error("the trailer field {0} is not allowed")]
    Trailer(HeaderName),
    #[error("{0}")]
    Framing(&'static str),
}

pub struct RequestBody {
    early: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    /// The connection's framing fault, for a chunked body still to come.
    fault: Option<FramingFault>,
}

impl RequestBody {
    pub fn new(body: Incoming) -> Self {
        RequestBody {
            early: VecDeque::new(),
            rest: Some(body),
            fault: None,
        }
    }
}

/// Reads the start of a chunked body, up to `READ_AHEAD` bytes, and refuses the request if
/// its trailer section is among them and carries a forbidden field. A body that is not
/// chunked, or waits for `100 Continue`, is left to be read when asked for.
pub async fn read_ahead(
    req: Request<Incoming>,
    wait: Duration,
    fault: &FramingFault,
) -> Result<Request<RequestBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let chunked = parts.headers.contains_key(TRANSFER_ENCODING);
    let continues = parts
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !chunked {
        return Ok(Request::from_parts(parts, RequestBody::new(body)));
    }
    if continues {
        let body = RequestBody {
            fault: Some(fault.clone()),
            ..RequestBody::new(body)
        };
        return Ok(Request::from_parts(parts, body));
    }
    let mut early = VecDeque::new();
    let mut read = 0;
    let mut rest = Some(body);
    while read < READ_AHEAD {
        let Some(body) = rest.as_mut() else { break };
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(refusal(StatusCode::REQUEST_TIMEOUT, "body timed out")),
            Ok(None) => {
                rest = None;
                break;
            }
            Ok(Some(Err(_))) => return Err(refusal(StatusCode::BAD_REQUEST, "bad chunked body")),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(trailers) = frame.trailers_ref()
            && forbidden_field(trailers).is_some()
        {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "a forbidden trailer field",
            ));
        }
        read += frame.data_ref().map_or(0, Bytes::len);
        early.push_back(frame);
    }
    // The framing reading has seen every chunk line of what was read ahead.
    if let Some(reason) = fault.get() {
        return Err(refusal(StatusCode::BAD_REQUEST, reason));
    }
    let fault = rest.is_some().then(|| fault.clone());
    Ok(Request::from_parts(
        parts,
        RequestBody { early, rest, fault },
    ))
}

fn refusal(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<RequestBodyError> {
        let this = self.get_mut();
        if let Some(frame) = this.early.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::task::ready!(Pin::new(rest).poll_frame(cx));
        let fault = this.fault.as_ref().and_then(FramingFault::get);
        if let (Some(fault), Some(Ok(_))) = (fault, &polled) {
            this.rest = None;
            return Poll::Ready(Some(Err(RequestBodyError::Framing(fault))));
        }
        Poll::Ready(match polled {
            None => {
                this.rest = None;
                None
            }
            Some(Err(e)) => Some(Err(e.into())),
            Some(Ok(frame)) => match frame.trailers_ref().and_then(forbidden_field) {
                Some(name) => {
                    let name = name.clone();
                    this.rest = None;
                    Some(Err(RequestBodyError::Trailer(name)))
                }
                None => Some(Ok(frame)),
            },
        })
    }

    fn is_end_stream(&self) -> bool {
        self.early.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let early: u64 = self
            .early
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        // A body with trailers is sent on chunked, which alone can carry them.
        let trailers = self.early.iter().any(Frame::is_trailers);
        match &self.rest {
            None if !trailers => SizeHint::with_exact(early),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(early);
                hint
            }
            Some(rest) => {
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + early);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + early);
                }
                sum
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_routing_and_credentials_are_forbidden_in_trailers() {
        for name in [
            "content-length",
            "host",
            "authorization",
            "x-forwarded-for",
            "forwarded",
        ] {
            assert!(
                forbidden_in_trailers(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in ["x-checksum", "server-timing", "digest"] {
            assert!(
                !forbidden_in_trailers(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }
}
