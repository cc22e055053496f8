//! The reverse-proxy front ("portal"): listens publicly and forwards to one or more app
//! servers, so an app server can restart while clients wait instead of failing.
//!
//! - Upstreams are picked round-robin; one that refuses a connection is skipped for a while
//!   (passive health check) and the next one tried.
//! - While no upstream accepts, the request waits and connecting is retried with backoff for up
//!   to `wait`; only then does the client get a 503 with `Retry-After`. A request is only ever retried while it
//!   has not been written upstream (hyper hands it back), so a body is never replayed.
//! - Method, path and query go upstream byte for byte; hop-by-hop headers are dropped;
//!   `X-Forwarded-For` and `Forwarded` get the peer appended, so a client can never pose as
//!   someone else to an app server that trusts this front. From a peer this front does not
//!   trust, the client's own forwarding headers are dropped first: an app that reads the
//!   leftmost entry still sees the real peer.
//! - An upstream that answers `Connection: close` is winding down (a reload): its other idle
//!   connections are dropped too, so the next requests wait for its successor instead of
//!   racing its close.
//! - Connections to each upstream are kept alive and reused; bodies stream both ways.
//! - WebSocket (and any `Upgrade`) handshakes pass through and the two sockets are spliced.
//!
//! A plain HTTP/1.1 connection's bodiless GETs and HEADs go through `relay`, which keeps
//! these rules without hyper's request and response objects; everything else comes here.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::body::{Polled, Reply, ResponseBody};
use crate::http::conn::ConnInfo;
use crate::http::error_page;
use crate::http::forwarded;
use crate::http::headers::{CONNECTION_SCOPED, as_text, connection_tokens, joined};
use crate::http::request_body::{RequestBody, RequestBodyError};
use crate::sync::Recover;

pub mod health;
pub mod relay;
pub mod routes;

/// How long an upstream that refused a connection is skipped while others are tried.
const SKIP_DOWN: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;
/// Times a bodiless idempotent request is sent again after its connection died.
const MAX_REPLAYS: u32 = 3;

/// What goes upstream: the client's body as it streams in, or nothing (a replayed request).
pub enum UpstreamBody {
    Client(RequestBody),
    Empty,
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<RequestBodyError> {
        match self.get_mut() {
            // A trailer field that would reframe or reroute fails the body before it is sent.
            UpstreamBody::Client(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `host:port` of each app server.
    pub upstreams: Vec<String>,
    pub timing: Timing,
    /// The upstreams' health path, asked every interval; off when `None`.
    pub health: Option<health::HealthCheck>,
}

/// How every forward of one server waits and gives up, whichever upstreams it goes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long a request waits for an upstream to accept a connection.
    pub wait: Duration,
    pub connect_timeout: Duration,
    /// How long the upstream may take to send response headers.
    pub response_timeout: Duration,
    /// Seconds in the `Retry-After` of the 503 a request gets when no upstream came back.
    pub retry_after: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no upstream accepted a connection in time")]
    Unavailable,
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream failed: {0}")]
    Upstream(String),
}

impl ProxyError {
    /// No upstream to ask is the service being away (503, come back later); a broken or
    /// slow answer is the gateway's failure (502, 504).
    fn reply(&self, retry_after: u32) -> Reply {
        match self {
            ProxyError::Unavailable => error_page::unavailable(retry_after),
            ProxyError::Upstream(_) => error_page::plain(StatusCode::BAD_GATEWAY),
            ProxyError::Timeout => error_page::plain(StatusCode::GATEWAY_TIMEOUT),
        }
    }
}

struct Upstream {
    addr: String,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
    /// Idle connections of the plain HTTP/1.1 relay, which speaks to them itself.
    raw_idle: Mutex<Vec<relay::RawLink>>,
    down_until: Mutex<Option<Instant>>,
    /// Failed its last health check: sent nothing until it passes one.
    out: AtomicBool,
}

impl Upstream {
    fn is_down(&self) -> bool {
        let d = self.down_until.lock().recover();
        d.is_some_and(|t| Instant::now() < t)
    }

    fn mark(&self, down: bool) {
        let mut d = self.down_until.lock().recover();
        *d = down.then(|| Instant::now() + SKIP_DOWN);
    }

    fn forget_idle(&self) {
        self.idle.lock().recover().clear();
        self.raw_idle.lock().recover().clear();
    }

    /// A pooled connection ready for a request. Busy ones (a response still streaming) stay
    /// for later; closed ones are dropped.
    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().recover();
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().rposition(|s| s.is_ready())?;
        Some(idle.swap_remove(i))
    }

    /// Puts a connection back at once: it becomes ready again when its response has been
    /// read through, and `take_idle` only hands out ready ones.
    fn recycle(&self, sender: SendRequest<UpstreamBody>) {
        let mut idle = self.idle.lock().recover();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> std::io::Result<SendRequest<UpstreamBody>> {
        let stream = TcpStream::connect(&self.addr).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }
}

/// A kept-alive connection to an upstream, of the kind one way of forwarding speaks over.
trait Link: Sized {
    /// An idle connection ready for a request.
    fn take_idle(up: &Upstream) -> Option<Self>;
    fn connect(up: &Upstream) -> impl Future<Output = std::io::Result<Self>> + Send;
}

impl Link for SendRequest<UpstreamBody> {
    fn take_idle(up: &Upstream) -> Option<Self> {
        up.take_idle()
    }

    fn connect(up: &Upstream) -> impl Future<Output = std::io::Result<Self>> + Send {
        up.connect()
    }
}

pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    config: ProxyConfig,
}

fn says_close(headers: &HeaderMap) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("close"))
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Drops hop-by-hop headers, including those the `Connection` header names. With `upgrade`,
/// `Upgrade` and `Connection: upgrade` stay so the handshake reaches the other side.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none: one look at the few names present costs less than a removal
    // per connection-scoped name.
    if !headers.keys().any(|n| CONNECTION_SCOPED.contains(n)) {
        return;
    }
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(CONNECTION_SCOPED.iter()) {
        headers.remove(name);
    }
    if upgrade && let Some(u) = upgrade_value {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// RFC 7239 node for an address: IPv6 quoted and bracketed.
fn forwarded_node(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Adds `value` to a list-valued header, keeping what earlier hops wrote in one field.
fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let made = match joined(headers, &name, ", ", as_text) {
        Some(mut prev) => {
            prev.push_str(", ");
            prev.push_str(value);
            HeaderValue::from_str(&prev)
        }
        None => HeaderValue::from_str(value),
    };
    if let Ok(v) = made {
        headers.insert(name, v);
    }
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Proxy {
        let upstreams = config
            .upstreams
            .iter()
            .map(|a| {
                Arc::new(Upstream {
                    addr: a.clone(),
                    idle: Mutex::new(Vec::new()),
                    raw_idle: Mutex::new(Vec::new()),
                    down_until: Mutex::new(None),
                    out: AtomicBool::new(false),
                })
            })
            .collect();
        Proxy {
            upstreams,
            next: AtomicUsize::new(0),
            config,
        }
    }

    /// Starts checking each upstream's health path, if one is set; inside a runtime.
    pub fn start_health_checks(&self) {
        let Some(check) = &self.config.health else {
            return;
        };
        let limit = self
            .config
            .timing
            .response_timeout
            .min(check.interval.max(Duration::from_secs(1)));
        for up in &self.upstreams {
            tokio::spawn(health::watch(Arc::clone(up), check.clone(), limit));
        }
    }

    #[cfg(test)]
    pub fn upstream_addrs(&self) -> &[String] {
        &self.config.upstreams
    }

    /// A connection to some upstream, waiting (with backoff) until `deadline` for one to
    /// accept.
    async fn checkout<L: Link>(&self, deadline: Instant) -> Result<(Arc<Upstream>, L), ProxyError> {
        let n = self.upstreams.len();
        let mut backoff = BACKOFF_START;
        let mut timed_out = false;
        loop {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let in_service = |u: &&Arc<Upstream>| !u.out.load(Ordering::Relaxed);
            let all_down = self
                .upstreams
                .iter()
                .filter(in_service)
                .all(|u| u.is_down());
            for k in 0..n {
                let up = &self.upstreams[(start + k) % n];
                if !in_service(&up) || (up.is_down() && !all_down) {
                    continue;
                }
                if let Some(s) = L::take_idle(up) {
                    return Ok((Arc::clone(up), s));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let limit = self
                    .config
                    .timing
                    .connect_timeout
                    .min(left.max(BACKOFF_START));
                match tokio::time::timeout(limit, L::connect(up)).await {
                    Ok(Ok(s)) => {
                        up.mark(false);
                        return Ok((Arc::clone(up), s));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!("upstream {}: {e}", up.addr);
                        up.mark(true);
                    }
                    Err(_) => {
                        timed_out = true;
                        up.mark(true);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(if timed_out {
                    ProxyError::Timeout
                } else {
                    ProxyError::Unavailable
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Forwards one request; every failure becomes a short plain error page. `trusted` says
    /// whether the peer's own forwarding headers are passed on (with the peer appended).
    pub async fn handle(
        &self,
        mut req: Request<RequestBody>,
        conn: &ConnInfo,
        trusted: bool,
    ) -> Reply {
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if !trusted && parts.headers.keys().any(forwarded::says_who) {
            let named: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|n| forwarded::says_who(n))
                .cloned()
                .collect();
            for name in named {
                parts.headers.remove(name);
            }
        }
        if let Err(status) = rewrite_head(&mut parts, conn, upgrade, trusted) {
            return error_page::plain(status);
        }
        // A bodiless idempotent request may be sent again if its connection dies before an
        // answer (RFC 9110 9.2.2): keep its head to rebuild it. A body is never replayed.
        let replayable =
            (!upgrade && body.is_end_stream() && parts.method.is_idempotent()).then(|| {
                (
                    parts.method.clone(),
                    parts.uri.clone(),
                    parts.headers.clone(),
                )
            });
        let req = Request::from_parts(parts, UpstreamBody::Client(body));
        let res = match self.send(req, replayable).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!("proxy: {e}");
                return e.reply(self.config.timing.retry_after);
            }
        };
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            return match client_upgrade {
                Some(client) => splice_upgrade(res, client),
                None => error_page::plain(StatusCode::BAD_GATEWAY),
            };
        }
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, ResponseBody::Upstream(body))
    }

    /// Sends `req` to an upstream, waiting for one until the deadline, trying again while
    /// nothing was written, and replaying a `replayable` request whose connection died.
    async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        replayable: Option<(Method, Uri, HeaderMap)>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let deadline = Instant::now() + self.config.timing.wait;
        let mut replays = 0;
        loop {
            let (up, mut sender) = self.checkout::<SendRequest<_>>(deadline).await?;
            let sent = tokio::time::timeout(
                self.config.timing.response_timeout,
                sender.try_send_request(req),
            )
            .await;
            let mut e = match sent {
                Err(_) => return Err(ProxyError::Timeout),
                Ok(Ok(res)) => {
                    if says_close(res.headers()) {
                        up.forget_idle();
                    } else if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                        up.recycle(sender);
                    }
                    return Ok(res);
                }
                Ok(Err(e)) => e,
            };
            // Not written upstream (a stale kept-alive connection, say): try again.
            if let Some(back) = e.take_message() {
                req = back;
                continue;
            }
            // The connection died under the request: its upstream is likely gone, and so
            // are its other pooled connections.
            up.forget_idle();
            match &replayable {
                Some((method, uri, headers))
                    if replays < MAX_REPLAYS && Instant::now() < deadline =>
                {
                    replays += 1;
                    let mut again = Request::new(UpstreamBody::Empty);
                    *again.method_mut() = method.clone();
                    *again.uri_mut() = uri.clone();
                    *again.headers_mut() = headers.clone();
                    req = again;
                }
                _ => return Err(ProxyError::Upstream(e.into_error().to_string())),
            }
        }
    }
}

/// The request as it goes upstream: origin form, exactly the bytes the client sent; no
/// hop-by-hop headers; `X-Forwarded-*` and `Forwarded` saying who asked.
fn rewrite_head(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    upgrade: bool,
    trusted: bool,
) -> Result<(), StatusCode> {
    let sent_host = parts.headers.get(header::HOST).cloned();
    let host = sent_host.clone().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // An HTTP/1.1 request is in origin form already; an HTTP/2 one or an absolute-form one
    // goes on as its path and query.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| StatusCode::BAD_REQUEST)?;
    }
    // Upstreams are spoken to in HTTP/1: an HTTP/2 request goes on as HTTP/1.1 (it always
    // names its host, so the upstream gets a Host).
    if parts.version == http::Version::HTTP_2 {
        parts.version = http::Version::HTTP_11;
    }
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrade);
    // An HTTP/2 client may send its cookies as several fields; HTTP/1.1 takes one
    // (RFC 9113 8.2.3).
    if h.get_all(header::COOKIE).iter().nth(1).is_some() {
        let values: Vec<&[u8]> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if let Ok(joined) = HeaderValue::from_bytes(&values.join(&b"; "[..])) {
            h.insert(header::COOKIE, joined);
        }
    }
    let xfh = HeaderName::from_static("x-forwarded-host");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    // Only forwarding headers from a trusted peer are still here: how it was reached (a TLS
    // front's https) is kept, and told in `Forwarded` too.
    carry_chain_into_forwarded(h);
    if let Some(host) = &host {
        if sent_host.is_none() {
            h.insert(header::HOST, host.clone());
        }
        if !(trusted && h.contains_key(&xfh)) {
            h.insert(xfh, host.clone());
        }
    }
    let peer = conn.peer.ip().to_canonical();
    // The connection's peer, spelled out once per connection.
    let peer_text = &conn.text.peer_ip;
    append(h, HeaderName::from_static("x-forwarded-for"), peer_text);
    if !(trusted && h.contains_key(&xfp)) {
        h.insert(xfp, HeaderValue::from_static(conn.scheme));
    }
    let mut fwd = String::with_capacity(64);
    fwd.push_str("for=");
    match peer {
        IpAddr::V4(_) => fwd.push_str(peer_text),
        IpAddr::V6(_) => fwd.push_str(&forwarded_node(peer)),
    }
    fwd.push_str(";proto=");
    fwd.push_str(conn.scheme);
    // A Host that is not a plain name or address could smuggle `;for=` into the element.
    if let Some(host) = host
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .filter(|h| forwarded::valid_host(h))
    {
        fwd.push_str(";host=\"");
        fwd.push_str(host);
        fwd.push('"');
    }
    append(h, header::FORWARDED, &fwd);
    Ok(())
}

/// A request that came with `X-Forwarded-For` but no `Forwarded` gets that chain as
/// `Forwarded` elements first, so the `Forwarded` this hop appends tells the whole way and not
/// just the last hop (an app that prefers `Forwarded` would otherwise see only this peer).
/// The last element, the peer's word on its own client, carries the peer's
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn carry_chain_into_forwarded(h: &mut HeaderMap) {
    let xff = HeaderName::from_static("x-forwarded-for");
    if h.contains_key(header::FORWARDED) {
        return;
    }
    let Some(chain) = joined(h, &xff, ",", as_text) else {
        return;
    };
    let (proto, host) = forwarded::proto_and_host(h);
    let mut elements: Vec<String> = chain
        .split(',')
        .map(|node| match forwarded::node_ip(node) {
            Some(ip) => format!("for={}", forwarded_node(ip)),
            None => "for=unknown".to_string(),
        })
        .collect();
    if let Some(last) = elements.last_mut() {
        if let Some(p) = proto {
            last.push_str(&format!(";proto={p}"));
        }
        if let Some(host) = host {
            last.push_str(&format!(";host=\"{host}\""));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&elements.join(", ")) {
        h.insert(header::FORWARDED, v);
    }
}

/// Answers 101 and joins the client's and the upstream's upgraded connections.
fn splice_upgrade(mut res: Response<Incoming>, client: hyper::upgrade::OnUpgrade) -> Reply {
    let upstream = hyper::upgrade::on(&mut res);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
            return;
        };
        let _ =
            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream))
                .await;
    });
    let (parts, _) = res.into_parts();
    Response::from_parts(parts, ResponseBody::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn an_x_forwarded_for_chain_becomes_forwarded_elements() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.7, ::1, bogus".parse().unwrap(),
        );
        carry_chain_into_forwarded(&mut h);
        assert_eq!(
            h[header::FORWARDED],
            "for=203.0.113.7, for=\"[::1]\", for=unknown"
        );
        // A TLS front's word on how its client came rides on its element.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "game.example".parse().unwrap());
        carry_chain_into_forwarded(&mut h);
        assert_eq!(
            h[header::FORWARDED],
            "for=203.0.113.7;proto=https;host=\"game.example\""
        );
        // A request that already says `Forwarded` keeps its own.
        h.insert(header::FORWARDED, "for=1.2.3.4".parse().unwrap());
        carry_chain_into_forwarded(&mut h);
        assert_eq!(h[header::FORWARDED], "for=1.2.3.4");
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        append(
            &mut h,
            HeaderName::from_static("x-forwarded-for"),
            "1.2.3.4",
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 1.2.3.4");
        assert_eq!(forwarded_node("::1".parse().unwrap()), "\"[::1]\"");
        assert_eq!(forwarded_node("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4");
    }
}
