//! Trusted proxy headers: who the client really is when a proxy stands in front.
//!
//! Only a peer in the trust list may speak for the client. Its `X-Forwarded-For` (or RFC 7239
//! `Forwarded`) chain is read from the right, skipping addresses that are themselves trusted
//! proxies; the first address that is not is the client. The leftmost entries are whatever the
//! client chose to send, so they are never believed. Anything malformed is ignored, never an
//! error: the request then simply keeps the peer's own address.

use std::net::{IpAddr, SocketAddr};

use http::header::FORWARDED;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::http::headers::{as_text, joined};

// Named once: looking a header up by a string would parse the name on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The list of peers whose forwarding headers are believed.
#[derive(Debug, Clone)]
pub struct TrustList(Vec<IpNet>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("option trusted_proxies: {0:?} is not an IP address or CIDR network")]
pub struct TrustError(pub String);

impl Default for TrustList {
    fn default() -> Self {
        TrustList::parse(["127.0.0.1", "::1"]).expect("defaults are valid")
    }
}

impl TrustList {
    pub fn parse<S: AsRef<str>>(
        items: impl IntoIterator<Item = S>,
    ) -> Result<TrustList, TrustError> {
        let mut nets = Vec::new();
        for item in items {
            let s = item.as_ref().trim();
            if s == "*" {
                nets.push("0.0.0.0/0".parse().expect("valid"));
                nets.push("::/0".parse().expect("valid"));
                continue;
            }
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| TrustError(s.to_string()))?;
            nets.push(net);
        }
        Ok(TrustList(nets))
    }

    /// The trusted networks, each as `address/prefix`.
    pub fn networks(&self) -> Vec<String> {
        self.0.iter().map(IpNet::to_string).collect()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// What a trusted peer told us about the original request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Client address (or an RFC 7239 obfuscated identifier) and port, if given.
    pub client: Option<(String, Option<u16>)>,
    pub proto: Option<&'static str>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// One hop in a chain: an address we can judge, or an identifier we cannot see past.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Ip(IpAddr, Option<u16>),
    Opaque(String),
}

/// The address of an `X-Forwarded-For` entry, if it is one (not `unknown` or a name).
pub(crate) fn node_ip(s: &str) -> Option<IpAddr> {
    match parse_node(s)? {
        Node::Ip(ip, _) => Some(ip),
        Node::Opaque(_) => None,
    }
}

/// What the nearest trusted hop said with `X-Forwarded-Proto` and `X-Forwarded-Host`: the
/// last value of each, when it is one we would believe.
pub(crate) fn proto_and_host(headers: &HeaderMap) -> (Option<&'static str>, Option<String>) {
    (
        last_value(headers, &X_FORWARDED_PROTO).and_then(|p| parse_proto(&p)),
        last_value(headers, &X_FORWARDED_HOST).filter(|h| valid_host(h)),
    )
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<Node> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Node::Ip(ip, None));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(Node::Ip(sa.ip(), Some(sa.port())));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Some(Node::Ip(ip, None));
    }
    None
}

/// RFC 7239 node: an address, `unknown`, or an obfuscated `_name`, optionally with a port
/// (itself possibly obfuscated, which we drop).
fn parse_rfc7239_node(s: &str) -> Option<Node> {
    if s.eq_ignore_ascii_case("unknown") {
        return Some(Node::Opaque("unknown".into()));
    }
    if let Some(name) = s.strip_prefix('_') {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        return ok.then(|| Node::Opaque(s.to_string()));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip = addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            None if after.is_empty() => None,
            Some(p) => rfc7239_port(p)?,
            None => return None,
        };
        return Some(Node::Ip(IpAddr::V6(ip), port));
    }
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (a, rfc7239_port(p)?),
        None => (s, None),
    };
    let ip = addr.parse::<std::net::Ipv4Addr>().ok()?;
    Some(Node::Ip(IpAddr::V4(ip), port))
}

/// RFC 7239 6.1: a port is a number or an obfuscated `_name` (which tells us nothing).
/// `None` means malformed; `Some(None)` a valid port we cannot use.
fn rfc7239_port(p: &str) -> Option<Option<u16>> {
    if let Ok(n) = p.parse::<u16>() {
        return Some(Some(n));
    }
    let obfuscated = p.len() > 1
        && p.starts_with('_')
        && p[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    obfuscated.then_some(None)
}

/// One pass over the few names a request has is cheaper than looking up all five headers
/// in every request, most of which carry none of them.
pub(crate) fn is_forwarding(name: &HeaderName) -> bool {
    *name == FORWARDED || name.as_str().starts_with("x-forwarded-")
}

/// Whether a header says who the client is or how it came (`Forwarded`, every
/// `X-Forwarded-*`, `X-Real-IP`): believed and passed on only from trusted peers, and never
/// from a trailer section.
pub(crate) fn says_who(name: &HeaderName) -> bool {
    name_says_who(name.as_str().as_bytes())
}

/// `says_who` for a field name as read off the wire, in any case.
pub(crate) fn name_says_who(name: &[u8]) -> bool {
    let prefix = b"x-forwarded-";
    name.eq_ignore_ascii_case(b"forwarded")
        || name.eq_ignore_ascii_case(b"x-real-ip")
        || (name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
}

fn all_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    joined(headers, name, ",", as_text)
}

/// The last comma-separated value: what our trusted peer itself set.
fn last_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let all = all_values(headers, name)?;
    let v = all.rsplit(',').next()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn parse_proto(s: &str) -> Option<&'static str> {
    if s.eq_ignore_ascii_case("https") {
        Some("https")
    } else if s.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// A Host header value we are willing to pass on: a name or address, with an optional port.
pub(crate) fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Walks a chain (leftmost first) from the right; returns the index of the client.
fn pick_client(chain: &[Node], trust: &TrustList) -> Option<usize> {
    for (i, node) in chain.iter().enumerate().rev() {
        match node {
            Node::Ip(ip, _) if trust.trusts(*ip) => continue,
            _ => return Some(i),
        }
    }
    // Every hop is a trusted proxy: the leftmost is the best we know.
    (!chain.is_empty()).then_some(0)
}

fn node_client(node: &Node) -> (String, Option<u16>) {
    match node {
        Node::Ip(ip, port) => (ip.to_canonical().to_string(), *port),
        Node::Opaque(s) => (s.clone(), None),
    }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    match v.strip_prefix('"') {
        None => Some(v.to_string()),
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            Some(out)
        }
    }
}

#[derive(Default)]
struct Element {
    node: Option<Node>,
    proto: Option<&'static str>,
    host: Option<String>,
}

/// RFC 7239 `Forwarded`; `None` if any part of it is malformed.
fn parse_forwarded(value: &str) -> Option<Vec<Element>> {
    let mut elements = Vec::new();
    for el in split_unquoted(value, ',') {
        let mut e = Element::default();
        for pair in split_unquoted(el, ';') {
            if pair.trim().is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=')?;
            let v = unquote(v)?;
            match k.trim().to_ascii_lowercase().as_str() {
                "for" => e.node = Some(parse_rfc7239_node(&v)?),
                "proto" => e.proto = Some(parse_proto(&v)?),
                "host" => {
                    if !valid_host(&v) {
                        return None;
                    }
                    e.host = Some(v);
                }
                _ => {}
            }
        }
        elements.push(e);
    }
    Some(elements)
}

/// Who a request comes from, worked out once per request by the pipeline and handed to
/// whoever answers it: the access log and the environ read `told`, the proxy front `trusted`.
#[derive(Debug, Default, Clone)]
pub struct Origin {
    /// The peer is a trusted proxy: its forwarding headers are believed and passed on.
    pub trusted: bool,
    /// What those headers told (empty when the peer is not trusted or said nothing).
    pub told: Forwarded,
}

impl Origin {
    pub fn of(headers: &HeaderMap, peer: IpAddr, trust: &TrustList) -> Origin {
        let trusted = trust.trusts(peer);
        let told = match trusted {
            true => told_by_trusted(headers, trust).unwrap_or_default(),
            false => Forwarded::default(),
        };
        Origin { trusted, told }
    }
}

/// What the forwarding headers of a request from a trusted peer say.
fn told_by_trusted(headers: &HeaderMap, trust: &TrustList) -> Option<Forwarded> {
    if !headers.keys().any(is_forwarding) {
        return None;
    }
    if let Some(value) = all_values(headers, &FORWARDED) {
        // RFC 7239 wins when both are present: it ties proto and host to the same hop.
        let elements = parse_forwarded(&value)?;
        let chain: Vec<Node> = elements.iter().filter_map(|e| e.node.clone()).collect();
        if chain.len() != elements.len() {
            // A hop without `for=` makes the chain unreadable; believe none of it.
            return None;
        }
        let i = pick_client(&chain, trust)?;
        return Some(Forwarded {
            client: Some(node_client(&chain[i])),
            proto: elements[i].proto,
            host: elements[i].host.clone(),
            port: None,
        });
    }
    let mut fwd = Forwarded::default();
    if let Some(xff) = all_values(headers, &X_FORWARDED_FOR) {
        let chain: Option<Vec<Node>> = xff.split(',').map(parse_node).collect();
        if let Some(chain) = chain
            && let Some(i) = pick_client(&chain, trust)
        {
            fwd.client = Some(node_client(&chain[i]));
        }
    }
    (fwd.proto, fwd.host) = proto_and_host(headers);
    fwd.port = last_value(headers, &X_FORWARDED_PORT).and_then(|p| p.parse().ok());
    (fwd != Forwarded::default()).then_some(fwd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarding headers as `Origin::of` reads them: from a trusted peer only.
    fn resolve(headers: &HeaderMap, peer: IpAddr, trust: &TrustList) -> Option<Forwarded> {
        trust
            .trusts(peer)
            .then(|| told_by_trusted(headers, trust))
            .flatten()
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn client(f: Option<Forwarded>) -> Option<String> {
        f.and_then(|f| f.client).map(|c| c.0)
    }

    #[test]
    fn rightmost_untrusted_address_is_the_client() {
        let t = TrustList::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let hd = h(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            client(resolve(&hd, local(), &t)).as_deref(),
            Some("1.2.3.4")
        );
    }

    #[test]
    fn untrusted_peer_changes_nothing() {
        let t = TrustList::default();
        let hd = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(resolve(&hd, "8.8.8.8".parse().unwrap(), &t), None);
    }

    #[test]
    fn malformed_chain_is_ignored() {
        let t = TrustList::default();
        let hd = h(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(client(resolve(&hd, local(), &t)), None);
        let hd = h(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(resolve(&hd, local(), &t), None);
    }

    #[test]
    fn ipv6_peers_and_entries() {
        let t = TrustList::default();
        let hd = h(&[("x-forwarded-for", "2001:db8::1")]);
        assert_eq!(
            client(resolve(&hd, "::1".parse().unwrap(), &t)).as_deref(),
            Some("2001:db8::1")
        );
        let hd = h(&[("x-forwarded-for", "[2001:db8::2]:443")]);
        assert_eq!(
            client(resolve(&hd, local(), &t)).as_deref(),
            Some("2001:db8::2")
        );
        // An IPv4-mapped peer is judged as the IPv4 address it is.
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rfc7239_forwarded() {
        let t = TrustList::default();
        let hd = h(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;host=example.com, for=127.0.0.1"#,
        )]);
        let f = resolve(&hd, local(), &t).unwrap();
        assert_eq!(f.client, Some(("2001:db8:cafe::17".into(), Some(4711))));
        assert_eq!(f.proto, Some("https"));
        assert_eq!(f.host.as_deref(), Some("example.com"));
        let hd = h(&[("forwarded", "for=_hidden;proto=http")]);
        assert_eq!(
            client(resolve(&hd, local(), &t)).as_deref(),
            Some("_hidden")
        );
        let hd = h(&[("forwarded", "for=unknown")]);
        assert_eq!(
            client(resolve(&hd, local(), &t)).as_deref(),
            Some("unknown")
        );
        // Unbalanced quotes or a bad address: the whole header is ignored.
        for bad in [
            r#"for="[::1"#,
            "for=999.1.1.1",
            "for=1.2.3.4;proto=ftp",
            "junk",
        ] {
            assert_eq!(
                resolve(&h(&[("forwarded", bad)]), local(), &t),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn trust_list_parsing() {
        assert!(TrustList::parse(["10.0.0.0/8", "::1", "fd00::/8"]).is_ok());
        assert!(TrustList::parse(["nonsense"]).is_err());
        let all = TrustList::parse(["*"]).unwrap();
        assert!(all.trusts("8.8.8.8".parse().unwrap()));
    }
}
