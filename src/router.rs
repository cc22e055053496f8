//! Per request: decide who answers. Static mounts and the proxy front plug in here; for now
//! every request goes to the WSGI app.

use std::convert::Infallible;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use crate::server::Shared;
use crate::wsgi::{self, ConnInfo, response::Reply};

pub async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: ConnInfo,
) -> Result<Reply, Infallible> {
    Ok(wsgi::handle(req, &shared.app, &shared.pool, conn).await)
}
