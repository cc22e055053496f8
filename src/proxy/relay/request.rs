//! A request head as the relay judges it: whether it is one the relay takes whole, and
//! the head as it goes upstream, with this hop's fields left out and the forwarding fields
//! added.

use crate::config::Config;
use crate::http::checks::HeadLimits;
use crate::http::conn::ConnInfo;
use crate::http::forwarded;
use crate::http::headers::is_connection_scoped;
use crate::proxy::forwarded_node;

/// Header fields of a request parsed on the stack; a head with more goes to the hyper path.
const REQUEST_FIELDS: usize = 64;

/// The forwarding fields this connection adds to every request, spelled out once: the peer
/// and the scheme; the Host is added per request.
pub(crate) struct Stamp {
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and the start of `Forwarded`.
    tail: Vec<u8>,
}

impl Stamp {
    pub(crate) fn new(conn: &ConnInfo) -> Stamp {
        let peer = conn.peer.ip().to_canonical();
        let node = match peer {
            std::net::IpAddr::V4(_) => conn.text.peer_ip.clone(),
            std::net::IpAddr::V6(_) => forwarded_node(peer),
        };
        let tail = format!(
            "X-Forwarded-For: {}\r\nX-Forwarded-Proto: {scheme}\r\nForwarded: for={node};proto={scheme}",
            conn.text.peer_ip,
            scheme = conn.scheme,
        );
        Stamp {
            tail: tail.into_bytes(),
        }
    }

    /// Ends a request head: the forwarding fields for `host`, and the blank line.
    pub(crate) fn finish(&self, out: &mut Vec<u8>, host: &[u8]) {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.tail);
        // A Host that is not a plain name or address could smuggle `;for=` into the element.
        if let Ok(h) = std::str::from_utf8(host)
            && forwarded::valid_host(h)
        {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// A request head this path relays, to `to`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan<T> {
    pub(crate) to: T,
    pub(crate) head_len: usize,
    /// HEAD: the answer has no body, whatever its fields say.
    pub(crate) head_method: bool,
    /// The client said `Connection: close`.
    pub(crate) close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Judged<T> {
    Relay(Plan<T>),
    /// The head has not ended yet.
    Partial,
    /// Not a request this path takes: the hyper path judges it.
    HandBack,
}

/// How a request field is treated.
enum Field {
    Host,
    /// Says how the connection is kept: `keep-alive` and `close` are read here.
    Connection,
    /// Repeated, it is joined or judged on the hyper path.
    Singleton,
    /// `Forwarded`, `X-Forwarded-*`, `X-Real-IP`: dropped from a peer not trusted.
    SaysWho,
    /// Framing, an upgrade, an expectation or another hop-by-hop field: the hyper path's.
    Other,
    Plain,
}

fn classify(name: &[u8]) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    if is("host") {
        Field::Host
    } else if is("connection") {
        Field::Connection
    } else if is("cookie") || is("content-type") {
        Field::Singleton
    } else if forwarded::name_says_who(name) {
        Field::SaysWho
    } else if is_connection_scoped(name) || is("content-length") || is("expect") {
        Field::Other
    } else {
        Field::Plain
    }
}

/// A line end that is a bare LF: the strict reading (`framing`) refuses it, so it is left
/// to the hyper path.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The server's limits on a request head, as the relay judges by them.
pub(crate) struct HeadRules {
    pub(crate) max_head: usize,
    pub(crate) max_fields: usize,
    pub(crate) limits: HeadLimits,
}

impl HeadRules {
    pub(crate) fn of(config: &Config) -> HeadRules {
        HeadRules {
            max_head: config.max_head,
            max_fields: config.max_fields,
            limits: config.head_limits,
        }
    }
}

/// Judges the head at the start of `bytes`; when it is relayed, `out` holds it as it goes
/// upstream. `pick` names where a path goes, or `None` for a path the server answers itself.
pub(crate) fn judge_request<T>(
    bytes: &[u8],
    config: &HeadRules,
    pick: impl Fn(&str) -> Option<T>,
    trusted: bool,
    stamp: &Stamp,
    out: &mut Vec<u8>,
) -> Judged<T> {
    let mut fields = [httparse::EMPTY_HEADER; REQUEST_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Judged::Partial,
        Err(_) => return Judged::HandBack,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Judged::HandBack;
    };
    let head_method = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Judged::HandBack,
    };
    let head = &bytes[..head_len];
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return Judged::HandBack;
    };
    let path = target.split('?').next().unwrap_or(target);
    // A target the http crate builds no request of is hyper's 400 to give; one with a
    // fragment it would pass on cut.
    // Empty lines before a request line (RFC 9112 2.2) are the full path's to skip.
    if !head.starts_with(method.as_bytes())
        || !target.starts_with('/')
        || target.contains('#')
        || http::uri::PathAndQuery::try_from(target).is_err()
        || head_len > config.max_head
        || req.headers.len() > config.max_fields
        || line_end > config.limits.request_line
        || has_bare_lf(head)
    {
        return Judged::HandBack;
    }
    let Some(to) = pick(path) else {
        return Judged::HandBack;
    };
    out.clear();
    out.extend_from_slice(&head[..=line_end]);
    let mut host = None;
    let mut close = false;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.len() + 2 + f.value.len() > config.limits.field_size {
            return Judged::HandBack;
        }
        match classify(name) {
            Field::Host if host.is_some() => return Judged::HandBack,
            Field::Host => host = Some(f.value),
            Field::Connection => {
                for token in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !(token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive")) {
                        return Judged::HandBack;
                    }
                }
                continue;
            }
            // Two cookies are joined and two content types compared there.
            Field::Singleton if count_of(req.headers, name) > 1 => return Judged::HandBack,
            Field::Singleton => {}
            Field::SaysWho if trusted => return Judged::HandBack,
            Field::SaysWho => continue,
            Field::Other => return Judged::HandBack,
            Field::Plain => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    let Some(host) = host else {
        return Judged::HandBack;
    };
    stamp.finish(out, host);
    Judged::Relay(Plan {
        to,
        head_len,
        head_method,
        close,
    })
}

/// How many fields of the head carry `name`.
fn count_of(fields: &[httparse::Header<'_>], name: &[u8]) -> usize {
    fields
        .iter()
        .filter(|f| f.name.as_bytes().eq_ignore_ascii_case(name))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HeadRules {
        HeadRules {
            max_head: 8192,
            max_fields: 100,
            limits: HeadLimits::default(),
        }
    }

    /// Every path is forwarded but the server's own.
    fn pick(path: &str) -> Option<()> {
        (path != "/health").then_some(())
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(
            "203.0.113.9:5000".parse().unwrap(),
            "127.0.0.1:8000".parse().unwrap(),
            "http",
        )
    }

    fn judge(head: &str, trusted: bool) -> (Judged<()>, String) {
        let mut out = Vec::new();
        let j = judge_request(
            head.as_bytes(),
            &rules(),
            pick,
            trusted,
            &Stamp::new(&conn()),
            &mut out,
        );
        (j, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_get_goes_upstream_with_who_asked() {
        let head = "GET /a?b=1 HTTP/1.1\r\nHost: game.example\r\nConnection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\nGET /next";
        let (j, out) = judge(head, false);
        assert_eq!(
            j,
            Judged::Relay(Plan {
                to: (),
                head_len: head.len() - "GET /next".len(),
                head_method: false,
                close: false
            })
        );
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: game.example\r\nAccept: */*\r\n\
             X-Forwarded-Host: game.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
             X-Forwarded-Proto: http\r\nForwarded: for=203.0.113.9;proto=http;host=\"game.example\"\r\n\r\n"
        );
    }

    #[test]
    fn what_this_path_cannot_judge_whole_goes_back() {
        let back = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost a\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in back {
            assert_eq!(judge(head, false).0, Judged::HandBack, "{head:?}");
        }
        // A trusted peer's own chain is joined on the hyper path.
        let chained = "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        assert_eq!(judge(chained, true).0, Judged::HandBack);
        assert!(matches!(judge(chained, false).0, Judged::Relay(_)));
        assert_eq!(
            judge("GET / HTTP/1.1\r\nHost: a\r\n", false).0,
            Judged::Partial
        );
    }
}
