//! Per request: decide who answers. Requests the server can judge on its own (a missing
//! `Host`, an oversized head) are answered here; static mounts and the proxy front plug in
//! here too; everything else goes to the WSGI app, or upstream in proxy mode.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::HOST;
use http::{Request, StatusCode, Version};
use hyper::body::Incoming;

use crate::errors;
use crate::server::{Handler, Shared};
use crate::wsgi::{self, ConnInfo, response::Reply};

/// Bytes of request line and headers, as counted against `max_head`.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

pub async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: ConnInfo,
) -> Result<Reply, Infallible> {
    // hyper bounds its read buffer, not the parsed head; the configured limit is enforced here.
    if head_size(&req) > shared.config.max_head {
        return Ok(errors::plain(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
    // RFC 9112 3.2: an HTTP/1.1 request without Host is malformed.
    if req.version() == Version::HTTP_11
        && req.uri().authority().is_none()
        && !req.headers().contains_key(HOST)
    {
        return Ok(errors::plain(StatusCode::BAD_REQUEST));
    }
    let req = if shared.statics.is_empty() {
        req
    } else {
        match shared.statics.serve(req).await {
            Ok(res) => return Ok(res),
            Err(req) => req,
        }
    };
    Ok(match &shared.handler {
        Handler::Wsgi(app) => wsgi::handle(req, app, &shared.pool, conn).await,
        Handler::Proxy(proxy) => proxy.handle(req, conn).await,
    })
}
