//! Per request: decide who answers, and count and log the answer. Requests the server can judge on its own (a missing
//! `Host`, an oversized head) are answered here; then static mounts, then routes by path
//! prefix; everything else goes to the WSGI app, or upstream in proxy mode.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::watched_io::Answering;
use super::wire::Wire;
use super::{Handler, Shared};
use crate::access_log::{LoggedBody, RequestFacts};
use crate::http::body::Reply;
use crate::http::body::ResponseBody;
use crate::http::checks::{self, Refusal};
use crate::http::conn::ConnInfo;
use crate::http::error_page;
use crate::http::forwarded::Origin;
use crate::http::request_body;
use crate::sync::Recover;
use crate::wsgi;

/// Bytes of request line and headers, as counted against `max_head`.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// Answers one request; the answer's body tells the connection's `Wire` when it is sent.
pub async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: ConnInfo,
    wire: Arc<Mutex<Wire>>,
) -> Result<Response<Answering<ResponseBody>>, Infallible> {
    wire.lock().recover().begin();
    let started = Instant::now();
    let _in_flight = shared.metrics.start();
    let origin = Origin::of(req.headers(), conn.peer.ip(), &shared.config.trusted);
    let facts = shared
        .access_log
        .as_ref()
        .map(|_| log_facts(&req, &conn, &origin));
    let mut res = dispatch(req, &shared, &conn, &wire, &origin).await;
    shared
        .metrics
        .record(res.status().as_u16(), started.elapsed());
    if shared.retiring.load(Ordering::Relaxed) && res.status() != StatusCode::SWITCHING_PROTOCOLS {
        // This process is handing over: the client reconnects, to a newer one.
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(hsts) = &shared.hsts
        && conn.scheme == "https"
    {
        res.headers_mut()
            .entry(http::header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    if let (Some(log), Some(facts)) = (&shared.access_log, facts) {
        let status = res.status().as_u16();
        res = res.map(|body| {
            ResponseBody::Boxed(
                LoggedBody::new(body, Arc::clone(log), facts, status).boxed_unsync(),
            )
        });
    }
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        wire.lock().recover().upgraded();
    }
    Ok(res.map(|body| Answering::new(body, wire)))
}

/// The health path, answered here without the app: 200 while this server takes work, 503
/// from the moment it stops taking it (draining for a stop or reload, or locked), so that a
/// load balancer moves traffic away before connections close.
fn health(shared: &Shared) -> Reply {
    if shared.draining.load(Ordering::Relaxed) || shared.pool.is_locked() {
        return error_page::unavailable(shared.config.retry_after);
    }
    error_page::plain(StatusCode::OK)
}

/// An answer to a request the server will not pass on, said in the debug log: the connection
/// closes after it, since what follows on it may be framed differently than a proxy in front
/// believes.
fn refused(refusal: Refusal, conn: &ConnInfo) -> Reply {
    tracing::debug!("refused a request from {}: {}", conn.peer, refusal.reason);
    let mut res = error_page::plain(refusal.status);
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

fn log_facts(req: &Request<Incoming>, conn: &ConnInfo, origin: &Origin) -> RequestFacts {
    let remote = match &origin.told.client {
        Some((client, _)) => client.clone(),
        None => conn.text.peer_ip.clone(),
    };
    let target = match req.uri().path_and_query() {
        Some(pq) if req.uri().authority().is_none() => pq.as_str().to_string(),
        _ => req.uri().to_string(),
    };
    RequestFacts::new(remote, req.method(), target, req.version(), req.headers())
}

async fn dispatch(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    wire: &Mutex<Wire>,
    origin: &Origin,
) -> Reply {
    // Taken for every request, refused or not, so each next one meets its own head.
    let seen = wire.lock().recover().take_head();
    let fault = conn.fault.get();
    // A body before this one broke the grammar: nothing after it on the connection is read
    // as a request.
    if let Some(reason) = fault {
        let refusal = Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        };
        return refused(refusal, conn);
    }
    if let Err(refusal) = checks::check_seen(&req, &seen) {
        return refused(refusal, conn);
    }
    // hyper bounds its read buffer, not the parsed head; the configured limit is enforced here.
    if head_size(&req) > shared.config.max_head {
        let too_large = Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "request head too large",
        };
        return refused(too_large, conn);
    }
    if let Err(refusal) = checks::check(&req, &shared.config.head_limits) {
        return refused(refusal, conn);
    }
    if shared
        .config
        .health_path
        .as_deref()
        .is_some_and(|p| p == req.uri().path())
    {
        return health(shared);
    }
    let req = match request_body::read_ahead(req, shared.config.body_timeout, &conn.fault).await {
        Ok(req) => req,
        Err(refusal) => return refused(refusal, conn),
    };
    let req = if shared.statics.is_empty() {
        req
    } else {
        // Boxed, like the proxy's: a request's future is as large as its largest branch, and
        // every connection keeps room for one (3.4 KiB unboxed, 2 KiB boxed).
        match Box::pin(shared.statics.serve(req)).await {
            Ok(res) => return res,
            Err(req) => req,
        }
    };
    if !shared.routes.is_empty()
        && let Some(proxy) = shared.routes.find(req.uri().path())
    {
        return Box::pin(proxy.handle(req, conn, origin.trusted)).await;
    }
    match &shared.handler {
        Handler::Wsgi(app) => wsgi::handle(req, app, &shared.pool, conn, &origin.told).await,
        Handler::Proxy(proxy) => Box::pin(proxy.handle(req, conn, origin.trusted)).await,
    }
}
