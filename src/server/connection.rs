//! One accepted connection, from its TLS handshake to its close: which HTTP it speaks (ALPN
//! over TLS; over plain TCP, whether it opens with the HTTP/2 preface, "h2c with prior
//! knowledge"), the hyper connection that serves it, and its graceful end when the server
//! stops or hands over.
//!
//! The protocol is chosen here rather than by hyper-util's auto builder because the two paths
//! differ in more than the parser: an HTTP/1 connection feeds its bytes to the connection's
//! framing reading (`wire`), an HTTP/2 connection must not (its bytes are frames), and the
//! two end differently on a reload.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::watched_io::WatchedIo;
use super::wire::{Waits, Wire};
use super::{Handler, Shared, pipeline};
use crate::http::conn::ConnInfo;
use crate::proxy::relay::{self, RelayContext, Relayed};
use crate::tls::TlsAcceptor;

/// What every HTTP/2 connection opens with (RFC 9113 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may open and reset before they are answered, at once (CVE-2023-44487,
/// "rapid reset"): hyper's own default, kept here so that it is seen.
const MAX_PENDING_RESETS: usize = 20;

/// How long a retiring process keeps an idle keep-alive connection for a last request.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// Ties a connection to the server's lifetime: told when to wind down, and counted as open
/// until it ends.
pub struct ConnWatch {
    pub shutdown: watch::Receiver<bool>,
    pub _open: mpsc::Sender<()>,
}

/// How the server's connections are served, built once per listener.
#[derive(Clone)]
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(shared: &Shared) -> Builders {
        let config = &shared.config;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // WatchedIo keeps the keep-alive and head waits, apart; hyper's own timer would
            // time both as one, and costs a timer reset per request.
            .header_read_timeout(None)
            .keep_alive(!config.keep_alive.is_zero())
            .title_case_headers(true)
            .max_headers(config.max_fields)
            .max_buf_size(config.max_head.max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2_max_streams)
            // The whole head of a request, as HPACK-decoded; CONTINUATION frames count too,
            // so a head spread over endless frames is refused at this size.
            .max_header_list_size(u32::try_from(config.max_head).unwrap_or(u32::MAX))
            // Past this many rapid resets at once the connection is closed.
            .max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            // Streams this server has to reset for the client's errors, over the connection's
            // life: past this the client is misbehaving and the connection goes.
            .max_local_error_reset_streams(Some(1024));
        Builders { http1, http2 }
    }
}

/// An accepted connection and what serving it needs.
pub struct Accepted {
    pub shared: Arc<Shared>,
    pub info: ConnInfo,
    pub builders: Builders,
    pub watch: ConnWatch,
}

/// Serves one connection, over TLS when the server has a certificate.
pub async fn serve<I>(io: I, tls: Option<TlsAcceptor>, conn: Accepted)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.info.peer;
    let Some(acceptor) = tls else {
        let wait = conn.shared.config.header_timeout;
        let mut io = io;
        match tokio::time::timeout(wait, opening(&mut io)).await {
            Ok(Ok((first, false))) => {
                let Some((io, first)) = relay(io, first, &conn).await else {
                    return;
                };
                serve_http(io, first, conn, false).await;
            }
            Ok(Ok((first, true))) => serve_http(io, first, conn, true).await,
            Ok(Err(e)) => tracing::debug!("connection from {peer}: {e}"),
            Err(_) => tracing::debug!("connection from {peer} sent nothing in time"),
        }
        return;
    };
    let handshake = acceptor.accept(io);
    match tokio::time::timeout(conn.shared.config.header_timeout, handshake).await {
        Ok(Ok(io)) => match io.get_ref().1.alpn_protocol() {
            // A CA's tls-alpn-01 check: the handshake was all it wanted (RFC 8737 3).
            Some(crate::tls::ACME_TLS_ALPN) => {}
            Some(b"h2") => serve_http(io, Bytes::new(), conn, true).await,
            _ => serve_http(io, Bytes::new(), conn, false).await,
        },
        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
    }
}

/// Serves a plain HTTP/1 connection of a proxy front by the relay while its requests are ones
/// the relay takes; what it hands back (the connection and its unread bytes) is for hyper.
/// The relay keeps no access log: with one, every request goes through hyper.
async fn relay<I>(io: I, first: Bytes, conn: &Accepted) -> Option<(I, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &conn.shared;
    let Handler::Proxy(proxy) = &shared.handler else {
        return Some((io, first));
    };
    if shared.access_log.is_some() {
        return Some((io, first));
    }
    // The pipeline's order: the health path, then the static mounts, then the routes.
    let pick = |path: &str| {
        let own = shared.config.health_path.as_deref() == Some(path) || shared.statics.covers(path);
        (!own).then(|| shared.routes.find(path).unwrap_or(proxy))
    };
    let cx = RelayContext {
        pick: &pick,
        config: &shared.config,
        metrics: &shared.metrics,
        retiring: &shared.retiring,
        shutdown: conn.watch.shutdown.clone(),
        retire_grace: RETIRE_GRACE,
    };
    match relay::relay(io, first, &conn.info, cx).await {
        Relayed::Ended => None,
        Relayed::HandedBack(io, rest) => Some((io, rest)),
    }
}

/// Reads a plain connection's first bytes, as far as they can still be the HTTP/2 preface:
/// those bytes (read again by whoever reads the connection next), and whether it is HTTP/2.
async fn opening<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Bytes, bool)> {
    let mut first = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut first).await? == 0 {
            break;
        }
        let seen = first.len().min(PREFACE.len());
        if first[..seen] != PREFACE[..seen] || seen == PREFACE.len() {
            break;
        }
    }
    let http2 = first.starts_with(PREFACE);
    Ok((first.freeze(), http2))
}

/// The connection's reading of its bytes and its waits, swept with every other connection's.
fn wire_of(shared: &Shared, info: &ConnInfo, http2: bool) -> Arc<Mutex<Wire>> {
    let config = &shared.config;
    let waits = Waits {
        keep_alive: config.keep_alive,
        head: config.header_timeout,
    };
    let mut wire = Wire::new(
        config.max_head.max(8192),
        config.max_fields,
        waits,
        info.fault.clone(),
    );
    if http2 {
        wire.multiplexed();
    }
    let wire = Arc::new(Mutex::new(wire));
    shared.sweep.add(&wire);
    wire
}

/// One connection in the protocol it speaks, watched for graceful shutdown; `first`, bytes
/// already read from it.
async fn serve_http<I>(io: I, first: Bytes, conn: Accepted, http2: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        shared,
        info,
        builders,
        mut watch,
    } = conn;
    let peer = info.peer;
    let wire = wire_of(&shared, &info, http2);
    let io = TokioIo::new(WatchedIo::new(io, first, Arc::clone(&wire)));
    let svc = {
        let shared = Arc::clone(&shared);
        service_fn(move |req| {
            pipeline::route(req, Arc::clone(&shared), info.clone(), Arc::clone(&wire))
        })
    };
    let stop = async {
        // The guard `wait_for` returns must not live across an await.
        let _ = watch.shutdown.wait_for(|stop| *stop).await.map(|_| ());
    };
    let result = if http2 {
        // On a stop or a reload, GOAWAY at once: the streams already open are answered, and
        // the client opens new ones on a new connection.
        let conn = builders.http2.serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = stop => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        // Upgrades let WebSocket handshakes through the proxy front.
        let conn = builders.http1.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        // Written here rather than with hyper-util's GracefulShutdown, which closes an idle
        // connection at once: a retiring worker keeps each for RETIRE_GRACE instead, so that
        // a request a client is already sending on it is answered, not reset.
        tokio::select! {
            r = conn.as_mut() => r,
            () = stop => {
                let retiring = shared.retiring.load(std::sync::atomic::Ordering::Relaxed);
                let handed_over = match retiring {
                    true => tokio::time::timeout(RETIRE_GRACE, conn.as_mut()).await.ok(),
                    false => None,
                };
                match handed_over {
                    Some(r) => r,
                    None => {
                        // Finish the request in flight, close at once if idle.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection from {peer}: {e}");
    }
}
