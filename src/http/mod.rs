//! What every capability (the WSGI app, static files, the proxy front) stands on: response
//! bodies and replies, error pages, header rules, connection facts and forwarding headers.
//! Nothing here knows who answers a request.

pub mod body;
pub mod checks;
pub mod conn;
pub mod error_page;
pub mod forwarded;
pub mod framing;
pub mod headers;
pub mod request_body;
