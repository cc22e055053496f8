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

#[cfg(test)]
mod tests {
    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 4] = [
        ("request_stream", super::request_stream),
        ("environ", super::environ),
        ("static_path", super::static_path),
        ("forwarded_headers", super::forwarded_headers),
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
