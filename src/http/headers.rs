//! Header rules shared by the app's responses and the proxy front.

use std::borrow::Cow;

use http::header;
use http::{HeaderMap, HeaderName, HeaderValue};

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

/// Whether a field name as read off the wire, in any case, is one of `CONNECTION_SCOPED`.
pub fn is_connection_scoped(name: &[u8]) -> bool {
    CONNECTION_SCOPED
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// PEP 3333's hop-by-hop headers, which an application must not set: the connection's own,
/// and the proxy-authentication pair, which concerns the hop to a proxy.
pub fn is_hop_by_hop_for_wsgi(name: &HeaderName) -> bool {
    CONNECTION_SCOPED.contains(name)
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
}

/// The tokens of every `Connection` field, trimmed (`close`, `upgrade`, names of headers that
/// are only for this hop).
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The values of a repeated header as one, joined by `sep` (RFC 9110 5.3), each decoded by
/// `decode`; `None` when there is none, or one that does not decode.
pub fn joined<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    sep: &str,
    decode: impl Fn(&'a HeaderValue) -> Option<Cow<'a, str>>,
) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let text = decode(value)?;
        match &mut out {
            Some(o) => {
                o.push_str(sep);
                o.push_str(&text);
            }
            None => out = Some(text.into_owned()),
        }
    }
    out
}

/// A header value as visible ASCII text, the only kind the forwarding headers may carry.
pub fn as_text(value: &HeaderValue) -> Option<Cow<'_, str>> {
    value.to_str().ok().map(Cow::Borrowed)
}
