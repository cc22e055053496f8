//! Entry points for the fuzz targets in `fuzz/`: each takes arbitrary bytes, drives one of the
//! parsers this crate owns, and panics when a property that must always hold does not.
//! Built with the `fuzzing` feature, and in the unit tests, which run every input kept in
//! `fuzz/corpus` (and every crash turned into a case there) through its target.

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Request};

use crate::http::checks::{self, HeadLimits};
use crate::http::conn::ConnInfo;
use crate::http::forwarded::{self, TrustList};
use crate::http::framing::{Framing, Seen};
use crate::proxy::relay::answer::{ChunkedEnd, JudgedAnswer, judge_answer};
use crate::proxy::relay::request::{HeadRules, Judged, Stamp, judge_request};
use crate::wsgi::environ::RequestEnv;

/// Splits `data` at `sep` into at most `n` pieces.
fn pieces(data: &[u8], sep: u8, n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == sep).collect()
}

/// A connection's bytes read in pieces whose sizes the first byte picks: the heads found must
/// be the same as when the bytes are read at once, and each head hyper's parser (httparse)
/// accepts goes through the request checks without a panic.
pub fn request_stream(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 17) + 1;
    let mut whole = Framing::new(8192, 100);
    whole.feed(stream);
    let mut split = Framing::new(8192, 100);
    for piece in stream.chunks(step) {
        split.feed(piece);
    }
    assert_eq!(whole.is_lost(), split.is_lost());
    assert_eq!(whole.at_boundary(), split.at_boundary());
    // A body refused whole is refused in pieces, and the other way round.
    assert_eq!(whole.fault(), split.fault());
    loop {
        let next = whole.take();
        assert_eq!(next, split.take());
        if !matches!(next, Seen::Head(_)) {
            break;
        }
    }
    if let Some(req) = parse_head(stream) {
        let seen = {
            let mut f = Framing::new(8192, 100);
            f.feed(stream);
            f.take()
        };
        let _ = checks::check(&req, &HeadLimits::default());
        let _ = checks::check_seen(&req, &seen);
    }
}

/// The first head in `bytes` as hyper would build it, if httparse and the http crate take it.
fn parse_head(bytes: &[u8]) -> Option<Request<()>> {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut fields);
    parsed.parse(bytes).ok()?.is_complete().then_some(())?;
    let mut builder = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(if parsed.version? == 0 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    for h in parsed.headers.iter() {
        builder = builder.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    builder.body(()).ok()
}

/// A request target, Host and root path as the environ reads them: never a panic, and a
/// PATH_INFO that is always under the root path it was asked for.
pub fn environ(data: &[u8]) {
    let parts = pieces(data, b'\n', 3);
    let target = String::from_utf8_lossy(parts[0]);
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    let mut req = Request::builder().uri(uri);
    if let Some(host) = parts.get(1).and_then(|h| HeaderValue::from_bytes(h).ok()) {
        req = req.header(http::header::HOST, host);
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let root = parts
        .get(2)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| r.starts_with('/') && !r.ends_with('/'))
        .unwrap_or_default();
    let (parts, ()) = req.into_parts();
    let conn = ConnInfo::new(
        "10.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:8000".parse().unwrap(),
        "http",
    );
    let origin = forwarded::Origin::of(&parts.headers, conn.peer.ip(), &TrustList::default());
    let _ = RequestEnv::from_parts(&parts, &root, &conn, &origin.told);
}

/// A static file path below a mount: what is served is always a plain relative path with no
/// `..`, no dotfile and no absolute part.
pub fn static_path(data: &[u8]) {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(relative) = crate::statics::safe_relative(rest) {
        let path = std::path::Path::new(&relative);
        assert!(
            path.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{rest:?} gave {relative:?}"
        );
        assert!(!relative.split('/').any(|s| s.starts_with('.')), "{rest:?}");
    }
}

/// Forwarding headers from a trusted peer: never a panic, and the client found is an address
/// or an obfuscated name, never text with a separator in it.
pub fn forwarded_headers(data: &[u8]) {
    let parts = pieces(data, b'\n', 5);
    let names = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in names.iter().zip(parts) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let trust = TrustList::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Some((client, _)) = forwarded::Origin::of(&headers, peer, &trust).told.client {
        assert!(!client.contains([',', ';', ' ', '"']), "{client:?}");
    }
    let _ = forwarded::proto_and_host(&headers);
}

/// A request head the proxy's relay takes is one the full path takes as it is: the strict
/// reading (`framing`) sees it whole with no refusal and no body, hyper's parser and the
/// request checks take it, and what goes upstream parses back to the same request line with
/// one Host, none of this hop's fields and one `X-Forwarded-For`. The first byte says whether
/// the peer is trusted.
pub fn relay_request(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let conn = ConnInfo::new(
        "10.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:8000".parse().unwrap(),
        "http",
    );
    let rules = HeadRules {
        max_head: 8192,
        max_fields: 100,
        limits: HeadLimits::default(),
    };
    let mut out = Vec::new();
    let trusted = flags & 1 == 1;
    let judged = judge_request(
        bytes,
        &rules,
        |_| Some(()),
        trusted,
        &Stamp::new(&conn),
        &mut out,
    );
    let Judged::Relay(plan) = judged else {
        return;
    };
    let head = &bytes[..plan.head_len];
    let mut framing = Framing::new(8192, 100);
    framing.feed(head);
    assert!(framing.at_boundary(), "a body or more head after {head:?}");
    match framing.take() {
        Seen::Head(seen) => assert_eq!(seen.refusal, None, "{head:?}"),
        other => panic!("{other:?} for {head:?}"),
    }
    let req = parse_head(head).unwrap_or_else(|| panic!("hyper refuses {head:?}"));
    assert_eq!(
        checks::check(&req, &HeadLimits::default()),
        Ok(()),
        "{head:?}"
    );
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut sent = httparse::Request::new(&mut fields);
    let parsed = sent.parse(&out);
    assert_eq!(parsed, Ok(httparse::Status::Complete(out.len())), "{out:?}");
    assert_eq!(sent.method, Some(req.method().as_str()));
    assert_eq!(sent.path, req.uri().path_and_query().map(|p| p.as_str()));
    let count = |name: &str| {
        sent.headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1, "{out:?}");
    assert_eq!(count("x-forwarded-for"), 1, "{out:?}");
    for hop in crate::http::headers::CONNECTION_SCOPED {
        assert_eq!(count(hop.as_str()), 0, "{out:?}");
    }
    assert_eq!(count("content-length"), 0, "{out:?}");
}

/// An upstream's answer as the relay reads it: never a panic; a chunked body ends at the same
/// byte whether it arrives at once or in pieces (the first byte picks their size), and the
/// head sent on parses back with the same status and none of the upstream's hop fields.
pub fn relay_answer(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    if let Ok(Some(JudgedAnswer::Final(answer))) =
        judge_answer(stream, step & 1 == 1, false, &mut out)
    {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut sent = httparse::Response::new(&mut fields);
        assert_eq!(
            sent.parse(&out),
            Ok(httparse::Status::Complete(out.len())),
            "{out:?}"
        );
        assert_eq!(sent.code, Some(answer.status));
        // The one `Connection` sent is the front's own close, after a body that runs until
        // the upstream closes.
        let closes = sent
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .count();
        let until_close = answer.body == crate::proxy::relay::answer::BodyLen::UntilClose;
        assert_eq!(closes, usize::from(until_close), "{out:?}");
        for hop in ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            let present = sent
                .headers
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(hop));
            assert!(!present, "{hop} in {out:?}");
        }
    }
    let step = usize::from(step / 2 % 17) + 1;
    let whole = ChunkedEnd::default().feed(stream);
    let mut split = ChunkedEnd::default();
    let mut at = 0;
    let mut pieces = Ok(None);
    for piece in stream.chunks(step) {
        pieces = split.feed(piece).map(|end| end.map(|n| at + n));
        if !matches!(pieces, Ok(None)) {
            break;
        }
        at += piece.len();
    }
    assert_eq!(whole.is_err(), pieces.is_err(), "{stream:?}");
    if let (Ok(whole), Ok(pieces)) = (whole, pieces) {
        assert_eq!(whole, pieces, "{stream:?}");
    }
}

#[cfg(test)]
mod tests {
    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 6] = [
        ("request_stream", super::request_stream),
        ("environ", super::environ),
        ("static_path", super::static_path),
        ("forwarded_headers", super::forwarded_headers),
        ("relay_request", super::relay_request),
        ("relay_answer", super::relay_answer),
    ];

    #[test]
    fn every_kept_input_still_passes_its_target() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut ran = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {path:?}");
                ran += 1;
            }
            assert!(ran > 0, "{name}: no inputs in {dir:?}");
        }
    }
}
