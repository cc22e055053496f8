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
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::{Link, MAX_IDLE, MAX_REPLAYS, Proxy, ProxyError, Upstream};
use crate::config::Config;
use crate::http::body::{Reply, ResponseBody};
use crate::http::checks::HeadLimits;
use crate::http::conn::ConnInfo;
use crate::http::forwarded;
use crate::metrics::Metrics;
use crate::sync::Recover;

/// Header fields of a request parsed on the stack; a head with more goes to the hyper path.
const REQUEST_FIELDS: usize = 64;
/// Header fields of an upstream's answer, as hyper's client allows.
const RESPONSE_FIELDS: usize = 100;
/// Largest upstream response head read.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Longest chunk-size line or trailer section passed through.
const CHUNK_LINE_LIMIT: usize = 16 * 1024;
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

fn recycle(idle: &Mutex<Vec<RawLink>>, link: RawLink) {
    let mut idle = idle.lock().recover();
    if idle.len() < MAX_IDLE {
        idle.push(link);
    }
}

/// The forwarding fields this connection adds to every request, spelled out once: the peer
/// and the scheme; the Host is added per request.
struct Stamp {
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and the start of `Forwarded`.
    tail: Vec<u8>,
}

impl Stamp {
    fn new(conn: &ConnInfo) -> Stamp {
        let peer = conn.peer.ip().to_canonical();
        let node = match peer {
            std::net::IpAddr::V4(_) => conn.text.peer_ip.clone(),
            std::net::IpAddr::V6(_) => super::forwarded_node(peer),
        };
        let tail = format!(
            "X-Forwarded-For: {}\r\nX-Forwarded-Proto: {scheme}\r\nForwarded: for={node};proto={scheme}",
            conn.text.peer_ip,
            scheme = conn.scheme,
        );
        Stamp {
            tail: tail.into_bytes(),
        }
    }

    /// Ends a request head: the forwarding fields for `host`, and the blank line.
    fn finish(&self, out: &mut Vec<u8>, host: &[u8]) {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.tail);
        // A Host that is not a plain name or address could smuggle `;for=` into the element.
        if let Ok(h) = std::str::from_utf8(host)
            && forwarded::valid_host(h)
        {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// A request head this path relays, to `to`.
#[derive(Debug, PartialEq, Eq)]
struct Plan<T> {
    to: T,
    head_len: usize,
    /// HEAD: the answer has no body, whatever its fields say.
    head_method: bool,
    /// The client said `Connection: close`.
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Judged<T> {
    Relay(Plan<T>),
    /// The head has not ended yet.
    Partial,
    /// Not a request this path takes: the hyper path judges it.
    HandBack,
}

/// How a request field is treated.
enum Field {
    Host,
    /// Says how the connection is kept: `keep-alive` and `close` are read here.
    Connection,
    /// Repeated, it is joined or judged on the hyper path.
    Singleton,
    /// `Forwarded`, `X-Forwarded-*`, `X-Real-IP`: dropped from a peer not trusted.
    SaysWho,
    /// Framing, an upgrade, an expectation or another hop-by-hop field: the hyper path's.
    Other,
    Plain,
}

fn classify(name: &[u8]) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let starts =
        |s: &str| name.len() >= s.len() && name[..s.len()].eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        4 if is("host") => Field::Host,
        10 if is("connection") => Field::Connection,
        6 if is("cookie") => Field::Singleton,
        12 if is("content-type") => Field::Singleton,
        9 if is("forwarded") || is("x-real-ip") => Field::SaysWho,
        _ if starts("x-forwarded-") => Field::SaysWho,
        2 if is("te") => Field::Other,
        6 if is("expect") => Field::Other,
        7 if is("upgrade") || is("trailer") => Field::Other,
        10 if is("keep-alive") => Field::Other,
        14 if is("content-length") => Field::Other,
        16 if is("proxy-connection") => Field::Other,
        17 if is("transfer-encoding") => Field::Other,
        _ => Field::Plain,
    }
}

/// A line end that is a bare LF: the strict reading (`framing`) refuses it, so it is left
/// to the hyper path.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The server's limits on a request head, as the relay judges by them.
struct HeadRules {
    max_head: usize,
    max_fields: usize,
    limits: HeadLimits,
}

impl HeadRules {
    fn of(config: &Config) -> HeadRules {
        HeadRules {
            max_head: config.max_head,
            max_fields: config.max_fields,
            limits: config.head_limits,
        }
    }
}

/// Judges the head at the start of `bytes`; when it is relayed, `out` holds it as it goes
/// upstream. `pick` names where a path goes, or `None` for a path the server answers itself.
fn judge_request<T>(
    bytes: &[u8],
    config: &HeadRules,
    pick: impl Fn(&str) -> Option<T>,
    trusted: bool,
    stamp: &Stamp,
    out: &mut Vec<u8>,
) -> Judged<T> {
    let mut fields = [httparse::EMPTY_HEADER; REQUEST_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Judged::Partial,
        Err(_) => return Judged::HandBack,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Judged::HandBack;
    };
    let head_method = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Judged::HandBack,
    };
    let head = &bytes[..head_len];
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return Judged::HandBack;
    };
    let path = target.split('?').next().unwrap_or(target);
    if !target.starts_with('/')
        || head_len > config.max_head
        || req.headers.len() > config.max_fields
        || line_end > config.limits.request_line
        || has_bare_lf(head)
    {
        return Judged::HandBack;
    }
    let Some(to) = pick(path) else {
        return Judged::HandBack;
    };
    out.clear();
    out.extend_from_slice(&head[..=line_end]);
    let mut host = None;
    let mut close = false;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.len() + 2 + f.value.len() > config.limits.field_size {
            return Judged::HandBack;
        }
        match classify(name) {
            Field::Host if host.is_some() => return Judged::HandBack,
            Field::Host => host = Some(f.value),
            Field::Connection => {
                for token in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !(token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive")) {
                        return Judged::HandBack;
                    }
                }
                continue;
            }
            // Two cookies are joined and two content types compared there.
            Field::Singleton if count_of(req.headers, name) > 1 => return Judged::HandBack,
            Field::Singleton => {}
            Field::SaysWho if trusted => return Judged::HandBack,
            Field::SaysWho => continue,
            Field::Other => return Judged::HandBack,
            Field::Plain => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    let Some(host) = host else {
        return Judged::HandBack;
    };
    stamp.finish(out, host);
    Judged::Relay(Plan {
        to,
        head_len,
        head_method,
        close,
    })
}

/// How many fields of the head carry `name`.
fn count_of(fields: &[httparse::Header<'_>], name: &[u8]) -> usize {
    fields
        .iter()
        .filter(|f| f.name.as_bytes().eq_ignore_ascii_case(name))
        .count()
}

/// How an upstream's answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLen {
    None,
    Length(u64),
    /// Passed through chunk by chunk, trailers included, as the upstream coded it.
    Chunked,
    /// Until the upstream closes; the client's connection closes after it.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
struct Answer {
    head_len: usize,
    status: u16,
    body: BodyLen,
    /// The upstream said it closes (a reload under way, or HTTP/1.0).
    upstream_close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum JudgedAnswer {
    /// A 1xx: read past, as hyper's client does.
    Interim(usize),
    Final(Answer),
}

/// Fields of an answer that are about the upstream's hop alone.
fn hop_only(name: &[u8]) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Judges the answer at the start of `bytes`; for a final one, `out` holds its head as it
/// goes to the client (`closing`: with `Connection: close`).
fn judge_answer(
    bytes: &[u8],
    head_method: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<Option<JudgedAnswer>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; RESPONSE_FIELDS];
    let mut res = httparse::Response::new(&mut fields);
    let head_len = match res.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("an unreadable response head"),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err("an unreadable response head");
    };
    if status == 101 {
        return Err("a switch of protocols nobody asked for");
    }
    if (100..200).contains(&status) {
        return Ok(Some(JudgedAnswer::Interim(head_len)));
    }
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked_last = false;
    let (mut close_token, mut keep_token) = (false, false);
    let mut named: Vec<&[u8]> = Vec::new();
    let mut dated = false;
    for f in res.headers.iter() {
        let name = f.name.as_bytes();
        dated |= name.eq_ignore_ascii_case(b"date");
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(f.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("two Content-Lengths");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
            let last = f.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close_token = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_token = true;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        }
    }
    // HTTP/1.0 closes unless it says otherwise.
    let upstream_close = close_token || (version == 0 && !keep_token);
    let body = if head_method || status == 204 || status == 304 {
        BodyLen::None
    } else if coded {
        if chunked_last {
            BodyLen::Chunked
        } else {
            BodyLen::UntilClose
        }
    } else if let Some(n) = length {
        BodyLen::Length(n)
    } else {
        BodyLen::UntilClose
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for f in res.headers.iter() {
        let name = f.name.as_bytes();
        let dropped = hop_only(name)
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
            // Transfer-Encoding overrides a length (RFC 9112 6.3), which must not go on.
            || (coded && name.eq_ignore_ascii_case(b"content-length"));
        if dropped {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 6.6.1: a response forwarded without a Date gets the time it was received.
    if !dated {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if closing || body == BodyLen::UntilClose {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(JudgedAnswer::Final(Answer {
        head_len,
        status,
        body,
        upstream_close,
    })))
}

/// Where a chunked body passed through ends: the chunked grammar of RFC 9112 7.1, read only
/// as far as telling each chunk's size and the end of the trailer section.
#[derive(Debug, Default)]
struct ChunkedEnd {
    state: ChunkState,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

impl ChunkedEnd {
    /// Reads the next bytes of the body: how many of them end it, once it has ended.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let broken = "a broken chunked body";
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Data => {
                    let left = bytes.len() - i;
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(left);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits > 0 && matches!(b, b';' | b' ' | b'\t') => {
                        self.state = ChunkState::Extension;
                    }
                    None if self.digits > 0 && b == b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(broken),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => return Err(broken),
                    _ => self.count_line()?,
                },
                ChunkState::SizeLf if b == b'\n' => {
                    self.line = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::DataCr if b == b'\r' => self.state = ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => {
                    self.digits = 0;
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart if b == b'\r' => self.state = ChunkState::EndLf,
                ChunkState::TrailerStart | ChunkState::TrailerLine if b != b'\n' => {
                    self.count_line()?;
                    self.state = if b == b'\r' {
                        ChunkState::TrailerLf
                    } else {
                        ChunkState::TrailerLine
                    };
                }
                ChunkState::TrailerLf if b == b'\n' => self.state = ChunkState::TrailerStart,
                ChunkState::EndLf if b == b'\n' => return Ok(Some(i + 1)),
                _ => return Err(broken),
            }
            i += 1;
        }
        Ok(None)
    }

    fn count_line(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        match self.line > CHUNK_LINE_LIMIT {
            true => Err("a chunk line or trailer section too long"),
            false => Ok(()),
        }
    }
}

/// A deadline that moves with every request without a timer operation per request: its
/// timer is set again only when it fires before the deadline, or when the deadline comes
/// sooner than the timer is set for.
struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ends once the deadline has passed.
    async fn passed(&mut self) {
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
struct Waits {
    keep_alive: Duration,
    head: Duration,
    idle_since: Instant,
    head_since: Option<Instant>,
    answered: bool,
    stop_by: Option<Instant>,
    timer: Deadline,
}

impl Waits {
    fn new(config: &Config) -> Waits {
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

    fn moved(&mut self) {
        let at = match (self.head_since, self.answered) {
            (Some(since), _) => since + self.head,
            (None, false) => self.idle_since + self.head,
            (None, true) => self.idle_since + self.keep_alive,
        };
        self.timer.set(self.stop_by.map_or(at, |s| s.min(at)));
    }

    fn head_begun(&mut self) {
        if self.head_since.is_none() {
            self.head_since = Some(Instant::now());
            self.moved();
        }
    }

    fn answered(&mut self, now: Instant) {
        self.answered = true;
        self.head_since = None;
        self.idle_since = now;
        self.moved();
    }

    fn stop_by(&mut self, at: Instant) {
        self.stop_by = Some(at);
        self.moved();
    }
}

enum Wake {
    Read,
    /// The client closed, a wait ran out, or the read failed.
    Done,
    Stop,
}

/// More of the client's bytes, or why none come.
async fn read_client<I: AsyncRead + Unpin>(
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
    let mut stop_heard = *cx.shutdown.borrow();
    loop {
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
                    if !cx.retiring.load(Ordering::Relaxed) {
                        return Relayed::Ended;
                    }
                    waits.stop_by(Instant::now() + cx.retire_grace);
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
            Err(e) => return refuse(io, e, timing.retry_after).await,
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
                return refuse(io, e, timing.retry_after).await;
            }
            Err(Asked::Timeout) => {
                return refuse(io, ProxyError::Timeout, timing.retry_after).await;
            }
            Err(Asked::Broken(why)) => {
                return refuse(io, ProxyError::Upstream(why.into()), timing.retry_after).await;
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

/// Writes the request and reads the answer's head, past any 1xx.
async fn ask(
    link: &mut RawLink,
    head_method: bool,
    closing: bool,
    scratch: &mut Scratch,
) -> Result<Answer, Asked> {
    if link.0.write_all(&scratch.request).await.is_err() {
        return Err(Asked::Stale);
    }
    let Scratch {
        upstream,
        answer,
        answer_by,
        ..
    } = scratch;
    upstream.clear();
    let read = async {
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

/// Answers the client with the error page for `e`.
async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, e: ProxyError, retry_after: u32) -> Sent {
    tracing::warn!("proxy: {e}");
    let reply = e.reply(retry_after);
    let status = reply.status().as_u16();
    let client_ok = io.write_all(&serialized(reply)).await.is_ok() && io.flush().await.is_ok();
    Sent { status, client_ok }
}

/// An error page as HTTP/1.1 bytes; its body is whole (`error_page` makes every one so).
fn serialized(reply: Reply) -> Vec<u8> {
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
    if let ResponseBody::Full(Some(bytes)) = body {
        out.extend_from_slice(&bytes);
    }
    out
}

/// Whether the hyper path's answer for `status` is kept as the relay's own.
#[cfg(test)]
fn page(status: http::StatusCode) -> Vec<u8> {
    serialized(crate::http::error_page::plain(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HeadRules {
        HeadRules {
            max_head: 8192,
            max_fields: 100,
            limits: HeadLimits::default(),
        }
    }

    /// Every path is forwarded but the server's own.
    fn pick(path: &str) -> Option<()> {
        (path != "/health").then_some(())
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(
            "203.0.113.9:5000".parse().unwrap(),
            "127.0.0.1:8000".parse().unwrap(),
            "http",
        )
    }

    fn judge(head: &str, trusted: bool) -> (Judged<()>, String) {
        let mut out = Vec::new();
        let j = judge_request(
            head.as_bytes(),
            &rules(),
            pick,
            trusted,
            &Stamp::new(&conn()),
            &mut out,
        );
        (j, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_get_goes_upstream_with_who_asked() {
        let head = "GET /a?b=1 HTTP/1.1\r\nHost: game.example\r\nConnection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\nGET /next";
        let (j, out) = judge(head, false);
        assert_eq!(
            j,
            Judged::Relay(Plan {
                to: (),
                head_len: head.len() - "GET /next".len(),
                head_method: false,
                close: false
            })
        );
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: game.example\r\nAccept: */*\r\n\
             X-Forwarded-Host: game.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
             X-Forwarded-Proto: http\r\nForwarded: for=203.0.113.9;proto=http;host=\"game.example\"\r\n\r\n"
        );
    }

    #[test]
    fn what_this_path_cannot_judge_whole_goes_back() {
        let back = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost a\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in back {
            assert_eq!(judge(head, false).0, Judged::HandBack, "{head:?}");
        }
        // A trusted peer's own chain is joined on the hyper path.
        let chained = "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        assert_eq!(judge(chained, true).0, Judged::HandBack);
        assert!(matches!(judge(chained, false).0, Judged::Relay(_)));
        assert_eq!(
            judge("GET / HTTP/1.1\r\nHost: a\r\n", false).0,
            Judged::Partial
        );
    }

    #[test]
    fn an_answer_loses_its_hop_fields_and_keeps_its_framing() {
        let head = "HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nX-Kept: 1\r\n\r\nhello";
        let mut out = Vec::new();
        let j = judge_answer(head.as_bytes(), false, false, &mut out).unwrap();
        assert_eq!(
            j,
            Some(JudgedAnswer::Final(Answer {
                head_len: head.len() - 5,
                status: 200,
                body: BodyLen::Length(5),
                upstream_close: true,
            }))
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nX-Kept: 1\r\n\r\n"
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let mut out = Vec::new();
        let Some(JudgedAnswer::Final(a)) =
            judge_answer(chunked.as_bytes(), false, true, &mut out).unwrap()
        else {
            panic!("a final answer")
        };
        assert_eq!(a.body, BodyLen::Chunked);
        // Undated, it is dated on its way.
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\nConnection: close\r\n\r\n"), "{out}");
        let mut out = Vec::new();
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(judge_answer(bad.as_bytes(), false, false, &mut out).is_err());
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204";
        assert_eq!(
            judge_answer(interim.as_bytes(), false, false, &mut out),
            Ok(Some(JudgedAnswer::Interim(
                interim.len() - "HTTP/1.1 204".len()
            )))
        );
        let head_only = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let Some(JudgedAnswer::Final(a)) =
            judge_answer(head_only.as_bytes(), true, false, &mut out).unwrap()
        else {
            panic!("a final answer")
        };
        assert_eq!(a.body, BodyLen::None);
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_do() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut end = ChunkedEnd::default();
            let first = end.feed(&body[..split]).unwrap();
            let at = match first {
                Some(n) => n,
                None => split + end.feed(&body[split..]).unwrap().unwrap(),
            };
            assert_eq!(at, body.len() - 4, "split at {split}");
        }
        for broken in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"5\nhello",
            b"11111111111111111\r\n",
        ] {
            assert!(ChunkedEnd::default().feed(broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn error_pages_are_the_hyper_paths_own() {
        let page = String::from_utf8(page(http::StatusCode::BAD_GATEWAY)).unwrap();
        assert!(page.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\n502 Bad Gateway\n"), "{page}");
    }
}
