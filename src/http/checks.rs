//! Request shapes hyper's parser lets through but RFC 9110/9112 say a server must or should
//! refuse, checked in one place before a request is routed (so the app, the static roots and
//! the proxy front all see only well-formed requests). Each refusal closes the connection:
//! a request framed one way here and another way by a proxy in front is how smuggling works.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, StatusCode, Version};

use super::framing::Seen;

/// Limits on a request's head, as nginx and Gunicorn know them.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes of the request line (method, target, version); past it, 414.
    pub request_line: usize,
    /// Bytes of one header field line as it is written, `name: value`; past it, 431.
    pub field_size: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            request_line: 8190,
            field_size: 8190,
        }
    }
}

/// Why a request is refused: its status and a few words for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn refuse(status: StatusCode, reason: &'static str) -> Result<(), Refusal> {
    Err(Refusal { status, reason })
}

/// The request line as the client sent it, in bytes.
fn request_line_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => pq.as_str().len(),
        _ => uri.to_string().len(),
    };
    req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len()
}

/// A field that must appear once: present more than once with different values.
fn differs(headers: &HeaderMap, name: &HeaderName) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    values.any(|v| v != first)
}

pub fn check<B>(req: &Request<B>, limits: &HeadLimits) -> Result<(), Refusal> {
    if request_line_len(req) > limits.request_line {
        return refuse(StatusCode::URI_TOO_LONG, "request line too long");
    }
    let headers = req.headers();
    if headers
        .iter()
        .any(|(n, v)| n.as_str().len() + ": ".len() + v.len() > limits.field_size)
    {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header field too large",
        );
    }
    // RFC 9112 3.2: an HTTP/1.1 request without Host, or with more than one, is malformed.
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 {
        return refuse(StatusCode::BAD_REQUEST, "more than one Host");
    }
    if hosts == 0 && req.version() == Version::HTTP_11 && req.uri().authority().is_none() {
        return refuse(StatusCode::BAD_REQUEST, "no Host");
    }
    // RFC 9113 8.3.1: a Host that names another authority than `:authority` makes an HTTP/2
    // request malformed (an HTTP/1 absolute-form target overrides Host instead, RFC 9112 3.2.2).
    if req.version() == Version::HTTP_2
        && let (Some(authority), Some(host)) = (req.uri().authority(), headers.get(HOST))
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return refuse(StatusCode::BAD_REQUEST, "Host differs from :authority");
    }
    // RFC 9112 6.1: a request with both is framed two ways; refuse rather than pick one.
    // hyper drops the Content-Length of such a request while parsing; `check_seen` refuses
    // it from the raw head. This holds for a request built by other means.
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Content-Length with Transfer-Encoding",
        );
    }
    // RFC 9110 8.6 lets a recipient take one of repeated equal lengths or refuse them;
    // llhttp refuses, and so does this server: a second reader may have taken the other.
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() || differs(headers, &CONTENT_TYPE) {
        return refuse(StatusCode::BAD_REQUEST, "a singleton field repeated");
    }
    // RFC 9112 6.1: chunked is the only transfer coding this server decodes (hyper reads
    // any list that ends in it, and would hand the app a body still coded otherwise), and
    // it is applied once.
    let mut chunked = 0;
    for coding in headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
    {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return refuse(
                StatusCode::NOT_IMPLEMENTED,
                "a transfer coding other than chunked",
            );
        }
        chunked += 1;
    }
    if chunked > 1 {
        return refuse(StatusCode::BAD_REQUEST, "chunked applied twice");
    }
    check_target(req)
}

/// What the connection's own reading of the bytes (`framing`) found for this request: a
/// framing hyper settled silently (it drops `Content-Length` beside `Transfer-Encoding`), or
/// a request where that reading saw another one, or none. Once that reading has stopped
/// (past what hyper itself refuses, or a thousand heads ahead), hyper's rules alone apply.
pub fn check_seen<B>(req: &Request<B>, seen: &Seen) -> Result<(), Refusal> {
    let seen = match seen {
        Seen::Head(head) => head,
        Seen::Lost => return Ok(()),
        Seen::Missing => return refuse(StatusCode::BAD_REQUEST, "request framed two ways"),
    };
    let uri = req.uri();
    let target_len = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(pq)) if uri.authority().is_none() => pq.as_str().len(),
        // Rebuilt by the http crate; only origin-form keeps its bytes as sent.
        _ => seen.target_len,
    };
    if seen.method != req.method() || seen.target_len != target_len {
        return refuse(StatusCode::BAD_REQUEST, "request framed two ways");
    }
    match seen.refusal {
        Some(reason) => refuse(StatusCode::BAD_REQUEST, reason),
        None => Ok(()),
    }
}

/// RFC 9112 3.2: `*` is only for OPTIONS and authority-form (`host:port`) only for CONNECT,
/// which an origin server does not implement.
fn check_target<B>(req: &Request<B>) -> Result<(), Refusal> {
    let uri = req.uri();
    let asterisk = uri.scheme().is_none() && uri.authority().is_none() && uri.path() == "*";
    if asterisk && req.method() != Method::OPTIONS {
        return refuse(StatusCode::BAD_REQUEST, "* target without OPTIONS");
    }
    if req.method() == Method::CONNECT {
        return refuse(StatusCode::NOT_IMPLEMENTED, "CONNECT");
    }
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if authority_form {
        return refuse(
            StatusCode::BAD_REQUEST,
            "authority-form target without CONNECT",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn status(r: &Request<()>) -> Option<u16> {
        check(r, &HeadLimits::default())
            .err()
            .map(|e| e.status.as_u16())
    }

    #[test]
    fn well_formed_requests_pass() {
        for r in [
            req("GET", "/a?b=c", &[("host", "x")]),
            req("OPTIONS", "*", &[("host", "x")]),
            req("GET", "http://x/abs", &[]),
            req(
                "POST",
                "/",
                &[("host", "x"), ("transfer-encoding", "chunked")],
            ),
            req(
                "POST",
                "/",
                &[("host", "x"), ("transfer-encoding", "Chunked")],
            ),
        ] {
            assert_eq!(status(&r), None, "{r:?}");
        }
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_are_refused() {
        for (te, want) in [
            ("gzip, chunked", 501),
            ("identity", 501),
            ("chunked, chunked", 400),
        ] {
            let r = req("POST", "/", &[("host", "x"), ("transfer-encoding", te)]);
            assert_eq!(status(&r), Some(want), "{te}");
        }
        let twice = req(
            "POST",
            "/",
            &[
                ("host", "x"),
                ("content-length", "3"),
                ("content-length", "3"),
            ],
        );
        assert_eq!(status(&twice), Some(400));
    }

    #[test]
    fn ambiguous_shapes_are_refused() {
        let cases: [(Request<()>, u16); 8] = [
            (req("GET", "/", &[("host", "a"), ("host", "b")]), 400),
            (req("GET", "/", &[]), 400),
            (
                req(
                    "POST",
                    "/",
                    &[
                        ("host", "x"),
                        ("content-length", "3"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                400,
            ),
            (
                req(
                    "POST",
                    "/",
                    &[
                        ("host", "x"),
                        ("content-type", "text/plain"),
                        ("content-type", "application/json"),
                    ],
                ),
                400,
            ),
            (req("GET", "*", &[("host", "x")]), 400),
            (req("GET", "x:80", &[("host", "x")]), 400),
            (req("CONNECT", "x:443", &[("host", "x")]), 501),
            (
                req("GET", &format!("/{}", "a".repeat(9000)), &[("host", "x")]),
                414,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(status(&r), Some(want), "{:?} {:?}", r.method(), r.headers());
        }
        let big = "v".repeat(8200);
        assert_eq!(
            status(&req("GET", "/", &[("host", "x"), ("x-big", &big)])),
            Some(431)
        );
    }
}
