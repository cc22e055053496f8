//! Active health checks of the upstreams (`upstream_health`): every interval each upstream is
//! asked for the health path on a connection of its own. One that answers anything but 2xx or
//! 3xx, or does not answer in time, is taken out: no request is sent to it until it passes
//! again. While every upstream is out, requests wait for one to come back, as they wait for an
//! app server that restarts. A Bartizan app server answers 503 there from the moment it
//! drains, so traffic moves off it before its connections close.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Upstream, UpstreamBody};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// What one check found: healthy, or why not.
async fn probe(addr: &str, path: &str, limit: Duration) -> Result<(), String> {
    let ask = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("no connection: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, addr)
            .header(header::CONNECTION, "close")
            .header(header::USER_AGENT, "bartizan-health-check")
            .body(UpstreamBody::Empty)
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        // Read through, so the upstream sees the exchange end cleanly.
        let _ = res.into_body().collect().await;
        if passes(status) {
            Ok(())
        } else {
            Err(format!("answered {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(limit, ask).await {
        Ok(found) => found,
        Err(_) => Err(format!("no answer within {} s", limit.as_secs_f64())),
    }
}

/// Checks one upstream for as long as the runtime runs.
pub(super) async fn watch(up: Arc<Upstream>, check: HealthCheck, limit: Duration) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let found = probe(&up.addr, &check.path, limit).await;
        let was_out = up.out.load(Ordering::Relaxed);
        match found {
            Ok(()) if was_out => {
                up.out.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "upstream {} passes its health check again: back in",
                    up.addr
                );
            }
            Err(why) if !was_out => {
                up.out.store(true, Ordering::Relaxed);
                up.forget_idle();
                tracing::warn!(
                    "upstream {} failed its health check ({why}): taken out",
                    up.addr
                );
            }
            _ => {}
        }
    }
}

/// Whether a status from a health path says "send traffic here".
fn passes(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_and_3xx_pass() {
        assert!(passes(StatusCode::OK) && passes(StatusCode::NO_CONTENT));
        assert!(passes(StatusCode::FOUND));
        assert!(!passes(StatusCode::SERVICE_UNAVAILABLE) && !passes(StatusCode::NOT_FOUND));
    }
}
