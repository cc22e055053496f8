//! The plain-HTTP listener of an HTTPS site (`--http-redirect`): a CA's http-01 check gets
//! its answer from the state directory, every other request a 308 to the same URL over
//! HTTPS, so that a browser that typed the bare name lands on the site.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONNECTION, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::listeners::{Listener, Stream};
use crate::http::body::ResponseBody;
use crate::http::error_page;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Accepts on one redirect listener until the server stops.
pub async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    open_conns: mpsc::Sender<()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .keep_alive(false);
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Stream::Tcp(stream) = stream else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let builder = builder.clone();
        let open = open_conns.clone();
        tokio::spawn(async move {
            let _open = open;
            let svc = service_fn(move |req| answer(req, Arc::clone(&shared)));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ResponseBody>, Infallible> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        let found = shared
            .acme_state
            .as_ref()
            .and_then(|dir| dir.http_challenge(token));
        return Ok(match found {
            Some(key_authorization) => {
                let mut res = Response::new(ResponseBody::full(key_authorization));
                res.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                res
            }
            None => error_page::plain(StatusCode::NOT_FOUND),
        });
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .map(host_name);
    let Some(host) = host.filter(|h| crate::http::forwarded::valid_host(h)) else {
        return Ok(error_page::plain(StatusCode::BAD_REQUEST));
    };
    let port = match shared.https_port {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{target}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return Ok(error_page::plain(StatusCode::BAD_REQUEST));
    };
    let mut res = error_page::plain(StatusCode::PERMANENT_REDIRECT);
    res.headers_mut().insert(LOCATION, location);
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Ok(res)
}

/// The name of a `Host` value, without its port: `[::1]:80` is `[::1]`.
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_port_comes_off() {
        assert_eq!(host_name("example.com:80"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }
}
