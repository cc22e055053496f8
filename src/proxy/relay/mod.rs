//! The proxy front's plain HTTP/1.1 path, hand-written on purpose. For the request a front
//! sees most (a bodiless GET or HEAD on a kept-alive HTTP/1.1 connection) one task reads the
//! client's head, writes it to a kept-alive upstream connection with the forwarding fields
//! added, and copies the answer back as the upstream framed it: no request or response
//! objects, no body channels, no task per upstream connection. On this path hyper's server
//! and client machinery was most of the front's own CPU per request (`bench/run proxy`,
//! against nginx in the same run); this path is what brings the hop level with nginx.
//!
//! It relays only what it can judge whole (`judge_request`). Anything else (a body, an
//! upgrade, HTTP/1.0, a head past a limit or outside the strict grammar, a trusted peer's own
//! forwarding fields, the health path) is handed back with the bytes not yet consumed, from
//! the start of that request, and the hyper path serves the rest of the connection: every
//! request-shape rule and every error answer there holds unchanged.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Link, MAX_IDLE, MAX_REPLAYS, Proxy, ProxyError, Upstream};
use crate::config::Config;
use crate::http::body::{Reply, ResponseBody};
use crate::http::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::sync::Recover;

pub(crate) mod answer;
pub(crate) mod request;
mod waits;

use answer::{Answer, BodyLen, ChunkedEnd, JudgedAnswer, judge_answer};
use request::{HeadRules, Judged, Plan, Stamp, judge_request};
use waits::{Deadline, Waits, Wake, read_client};

/// Largest upstream response head read.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read-ahead from an upstream while an answer is copied.
const READ_CHUNK: usize = 16 * 1024;

/// What the relay needs of the server it runs in.
pub struct RelayContext<'a> {
    /// Where a request's path goes: the front it is forwarded by, or `None` for a path the
    /// server answers itself (its health path, a static mount).
    pub pick: &'a (dyn Fn(&str) -> Option<&'a Proxy> + Sync),
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub retiring: &'a AtomicBool,
    pub shutdown: watch::Receiver<bool>,
    /// How long a retiring server keeps an idle connection for a last request.
    pub retire_grace: Duration,
}

impl RelayContext<'_> {
    /// Once the server stops: whether the connection waits out a retiring server's grace for
    /// a last request (its wait cut to that), rather than closing at once.
    fn keeps_for_grace(&self, waits: &mut Waits) -> bool {
        let retiring = self.retiring.load(Ordering::Relaxed);
        if retiring {
            waits.stop_by(Instant::now() + self.retire_grace);
        }
        retiring
    }
}

/// How the relay left a connection.
pub enum Relayed<I> {
    /// Closed.
    Ended,
    /// A request this path does not take: the connection, and its bytes from the start of
    /// that request.
    HandedBack(I, Bytes),
}

/// An upstream connection the relay writes heads to and reads answers from itself.
pub(super) struct RawLink(TcpStream);

impl RawLink {
    /// Still open and quiet: an upstream that closed it while it was idle (a reload) has
    /// made it readable, which the runtime already knows without a system call.
    fn is_quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.0.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Link for RawLink {
    fn take_idle(up: &Upstream) -> Option<Self> {
        let mut idle = up.raw_idle.lock().recover();
        while let Some(link) = idle.pop() {
            if link.is_quiet() {
                return Some(link);
            }
        }
        None
    }

    async fn connect(up: &Upstream) -> io::Result<Self> {
        let stream = TcpStream::connect(&up.addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(RawLink(stream))
    }
}

/// Puts a link back for the next request. The oldest is looked at on the way: one its
/// upstream has closed is dropped, so a closed link does not sit in the pool holding its socket.
fn recycle(idle: &Mutex<Vec<RawLink>>, link: RawLink) {
    let mut idle = idle.lock().recover();
    if idle.first().is_some_and(|oldest| !oldest.is_quiet()) {
        idle.remove(0);
    }
    if idle.len() < MAX_IDLE {
        idle.push(link);
    }
}

/// Serves a plain HTTP/1.1 connection of the proxy front for as long as its requests are
/// ones this path takes; `first`, bytes already read from it.
pub async fn relay<I>(
    mut io: I,
    first: Bytes,
    conn: &ConnInfo,
    mut cx: RelayContext<'_>,
) -> Relayed<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let config = cx.config;
    let rules = HeadRules::of(config);
    let trusted = config.trusted.trusts(conn.peer.ip());
    let stamp = Stamp::new(conn);
    let mut buf = BytesMut::with_capacity(8192);
    buf.extend_from_slice(&first);
    let mut scratch = Scratch::default();
    let mut waits = Waits::new(config);
    let mut stop_heard = false;
    loop {
        // A stop ends the connection here, between requests: at once, or after the retiring
        // server's grace for a last request.
        if !stop_heard && *cx.shutdown.borrow() {
            stop_heard = true;
            if !cx.keeps_for_grace(&mut waits) {
                return Relayed::Ended;
            }
        }
        let plan = loop {
            if !buf.is_empty() {
                match judge_request(&buf, &rules, cx.pick, trusted, &stamp, &mut scratch.request) {
                    Judged::Relay(plan) => break plan,
                    Judged::Partial if buf.len() <= rules.max_head => waits.head_begun(),
                    Judged::Partial | Judged::HandBack => {
                        return Relayed::HandedBack(io, buf.freeze());
                    }
                }
            }
            match read_client(&mut io, &mut buf, &mut waits, &mut cx.shutdown, stop_heard).await {
                Wake::Read => {}
                Wake::Done => return Relayed::Ended,
                Wake::Stop => {
                    stop_heard = true;
                    if !cx.keeps_for_grace(&mut waits) {
                        return Relayed::Ended;
                    }
                }
            }
        };
        buf.advance(plan.head_len);
        let in_flight = cx.metrics.start();
        let started = Instant::now();
        let closing = plan.close
            || stop_heard
            || *cx.shutdown.borrow()
            || cx.retiring.load(Ordering::Relaxed)
            || waits.keep_alive.is_zero();
        let sent = forward(&mut io, &plan, closing, started, &mut scratch).await;
        let now = Instant::now();
        cx.metrics.record(sent.status, now - started);
        drop(in_flight);
        if closing || !sent.client_ok {
            let _ = io.shutdown().await;
            return Relayed::Ended;
        }
        waits.answered(now);
    }
}

/// Buffers a connection reuses from one request to the next.
#[derive(Default)]
struct Scratch {
    /// The request head as it goes upstream.
    request: Vec<u8>,
    /// What goes to the client next: an answer's head and the body bytes read with it.
    answer: Vec<u8>,
    /// Bytes read from the upstream.
    upstream: BytesMut,
    /// When the upstream must have begun its answer.
    answer_by: Option<Deadline>,
}

/// What became of one forward.
struct Sent {
    status: u16,
    /// The client's connection can take another request.
    client_ok: bool,
}

/// Why asking an upstream failed.
enum Asked {
    /// Nothing came back at all: the connection died before the request reached anyone
    /// (an upstream that closed it idle), so a bodiless GET or HEAD may be sent again.
    Stale,
    Timeout,
    Broken(&'static str),
}

/// Sends the request in `scratch` upstream and passes the answer to the client.
async fn forward<I>(
    io: &mut I,
    plan: &Plan<&Proxy>,
    closing: bool,
    started: Instant,
    scratch: &mut Scratch,
) -> Sent
where
    I: AsyncWrite + Unpin,
{
    let proxy = plan.to;
    let timing = proxy.config.timing;
    let deadline = started.into_std() + timing.wait;
    let mut replays = 0;
    let (up, mut link, answer) = loop {
        let (up, mut link) = match proxy.checkout::<RawLink>(deadline).await {
            Ok(got) => got,
            Err(e) => return refuse(io, e, plan, closing).await,
        };
        let answer_by = Instant::now() + timing.response_timeout;
        match scratch.answer_by.as_mut() {
            Some(timer) => timer.set(answer_by),
            None => scratch.answer_by = Some(Deadline::new(answer_by)),
        }
        match ask(&mut link, plan.head_method, closing, scratch).await {
            Ok(answer) => break (up, link, answer),
            Err(Asked::Stale) => {
                // Its upstream is likely gone, and so are its other idle connections.
                up.forget_idle();
                if replays < MAX_REPLAYS && std::time::Instant::now() < deadline {
                    replays += 1;
                    continue;
                }
                let e = ProxyError::Upstream("the connection closed before an answer".into());
                return refuse(io, e, plan, closing).await;
            }
            Err(Asked::Timeout) => {
                return refuse(io, ProxyError::Timeout, plan, closing).await;
            }
            Err(Asked::Broken(why)) => {
                let e = ProxyError::Upstream(why.into());
                return refuse(io, e, plan, closing).await;
            }
        }
    };
    if answer.upstream_close {
        up.forget_idle();
    }
    let passed = pass_body(io, &mut link, &answer, scratch).await;
    let client_ok = match passed {
        Passed::Whole { reusable } => {
            if reusable && !answer.upstream_close {
                recycle(&up.raw_idle, link);
            }
            answer.body != BodyLen::UntilClose
        }
        Passed::ClientGone => false,
        Passed::UpstreamCut(why) => {
            tracing::warn!("proxy: an answer from {} was cut off: {why}", up.addr);
            false
        }
    };
    Sent {
        status: answer.status,
        client_ok,
    }
}

/// Writes the request and reads the answer's head, past any 1xx, within the response timeout.
async fn ask(
    link: &mut RawLink,
    head_method: bool,
    closing: bool,
    scratch: &mut Scratch,
) -> Result<Answer, Asked> {
    let Scratch {
        request,
        upstream,
        answer,
        answer_by,
    } = scratch;
    upstream.clear();
    let read = async {
        if link.0.write_all(request).await.is_err() {
            return Err(Asked::Stale);
        }
        let mut heard = false;
        loop {
            if !upstream.is_empty() {
                match judge_answer(upstream, head_method, closing, answer) {
                    Ok(Some(JudgedAnswer::Interim(n))) => {
                        upstream.advance(n);
                        continue;
                    }
                    Ok(Some(JudgedAnswer::Final(answer))) => return Ok(answer),
                    Ok(None) if upstream.len() > MAX_RESPONSE_HEAD => {
                        return Err(Asked::Broken("a response head too large"));
                    }
                    Ok(None) => {}
                    Err(why) => return Err(Asked::Broken(why)),
                }
            }
            upstream.reserve(READ_CHUNK);
            match link.0.read_buf(upstream).await {
                Ok(n) if n > 0 => heard = true,
                _ if !heard => return Err(Asked::Stale),
                _ => return Err(Asked::Broken("the upstream closed in a response head")),
            }
        }
    };
    let Some(timer) = answer_by else {
        return read.await;
    };
    tokio::select! {
        biased;
        asked = read => asked,
        () = timer.passed() => Err(Asked::Timeout),
    }
}

enum Passed {
    /// The answer went through whole; `reusable`, the upstream sent nothing past it.
    Whole {
        reusable: bool,
    },
    ClientGone,
    UpstreamCut(&'static str),
}

/// Copies the answer whose head `scratch.answer` holds to the client, as the upstream framed
/// it.
async fn pass_body<I>(
    io: &mut I,
    link: &mut RawLink,
    answer: &Answer,
    scratch: &mut Scratch,
) -> Passed
where
    I: AsyncWrite + Unpin,
{
    let Scratch {
        answer: out,
        upstream,
        ..
    } = scratch;
    upstream.advance(answer.head_len);
    let mut chunked = ChunkedEnd::default();
    // Bytes of the body still to come; `None` while it is framed otherwise.
    let mut left = match answer.body {
        BodyLen::Length(n) => Some(n),
        _ => None,
    };
    loop {
        // Of the bytes at hand, those that belong to the body, and whether it ends in them.
        let (take, ended) = match answer.body {
            BodyLen::None => (0, true),
            BodyLen::Length(_) => {
                let n = left.unwrap_or(0);
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(upstream.len());
                left = Some(n - take as u64);
                (take, left == Some(0))
            }
            BodyLen::Chunked => match chunked.feed(upstream) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (upstream.len(), false),
                Err(why) => {
                    // The client gets the head, then the close that tells it the body broke.
                    let _ = io.write_all(out).await;
                    return Passed::UpstreamCut(why);
                }
            },
            BodyLen::UntilClose => (upstream.len(), false),
        };
        let written = if out.is_empty() {
            io.write_all(&upstream[..take]).await
        } else {
            out.extend_from_slice(&upstream[..take]);
            let w = io.write_all(out).await;
            out.clear();
            w
        };
        if written.is_err() {
            return Passed::ClientGone;
        }
        if ended {
            let reusable = upstream.len() == take;
            upstream.clear();
            return match io.flush().await {
                Ok(()) => Passed::Whole { reusable },
                Err(_) => Passed::ClientGone,
            };
        }
        upstream.clear();
        upstream.reserve(READ_CHUNK);
        match link.0.read_buf(upstream).await {
            Ok(n) if n > 0 => {}
            Ok(_) if answer.body == BodyLen::UntilClose => {
                return match io.flush().await {
                    Ok(()) => Passed::Whole { reusable: false },
                    Err(_) => Passed::ClientGone,
                };
            }
            _ => return Passed::UpstreamCut("the upstream closed in a body"),
        }
    }
}

/// Answers the client with the error page for `e`: without its body for a HEAD, and saying
/// `Connection: close` when the connection ends after it.
async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    e: ProxyError,
    plan: &Plan<&Proxy>,
    closing: bool,
) -> Sent {
    tracing::warn!("proxy: {e}");
    let mut reply = e.reply(plan.to.config.timing.retry_after);
    if closing {
        reply.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let status = reply.status().as_u16();
    let page = serialized(reply, plan.head_method);
    let client_ok = io.write_all(&page).await.is_ok() && io.flush().await.is_ok();
    Sent { status, client_ok }
}

/// An error page as HTTP/1.1 bytes, its body left out for a HEAD; the body is whole
/// (`error_page` makes every one so).
fn serialized(reply: Reply, head_method: bool) -> Vec<u8> {
    let (parts, body) = reply.into_parts();
    let status = parts.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    if let (ResponseBody::Full(Some(bytes)), false) = (body, head_method) {
        out.extend_from_slice(&bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error_page;

    #[test]
    fn error_pages_are_the_hyper_paths_own() {
        let page = |head| serialized(error_page::plain(http::StatusCode::BAD_GATEWAY), head);
        let get = String::from_utf8(page(false)).unwrap();
        assert!(get.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{get}");
        assert!(get.ends_with(" GMT\r\n\r\n502 Bad Gateway\n"), "{get}");
        // A HEAD is told the length of the page it does not get.
        let head = String::from_utf8(page(true)).unwrap();
        assert!(head.contains("content-length: 16\r\n"), "{head}");
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
    }
}
