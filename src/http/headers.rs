//! Header rules shared by the app's responses and the proxy front.

use http::HeaderName;
use http::header;

/// Headers that describe one connection and are never passed on: RFC 9110 7.6.1's, with
/// the obsolete `Keep-Alive` and `Proxy-Connection` that clients still send.
pub const CONNECTION_SCOPED: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// PEP 3333's hop-by-hop headers, which an application must not set: the connection's own,
/// and the proxy-authentication pair, which concerns the hop to a proxy.
pub fn is_hop_by_hop_for_wsgi(name: &HeaderName) -> bool {
    CONNECTION_SCOPED.contains(name)
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
}
