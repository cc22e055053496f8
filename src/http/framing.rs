//! A second, independent reading of where each request on a connection begins and ends, fed
//! the raw bytes as they are read off the socket, before hyper parses them.
//!
//! hyper settles a request framed two ways (`Content-Length` with `Transfer-Encoding`) by
//! dropping `Content-Length` before the service sees the request, so the service alone cannot
//! refuse it as RFC 9112 6.1 asks. Reading the heads here lets the server do so, and a request
//! that this reading and hyper's place differently (another method or target at the same
//! position) is refused too: two parsers disagreeing on a boundary is what smuggling exploits.
//! The rules follow hyper's (httparse for the head, the same chunked grammar); where hyper
//! would fail the connection this reading stops (`Lost`) and judges nothing more.
//!
//! Where hyper is lenient and the strictest origins (llhttp, h11, Gunicorn, Waitress) are
//! not, this reading is what refuses: a bare LF as a line end inside a head (RFC 9112 2.2
//! allows a recipient to read it as one, and a front that keeps it inside a field value
//! reads another request), a chunk-size line outside RFC 9112 7.1's grammar (an extension
//! without a name, any whitespace), and a bare LF in a trailer section. The first refuses
//! that request by its head; the others are the connection's `fault`, which the pipeline
//! checks once the start of the body is read, and which fails any later read.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use http::Method;

/// What this reading saw of one request head, handed to the service in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenHead {
    pub method: Method,
    /// Bytes of the request target as sent.
    pub target_len: usize,
    /// Why the request must be refused, when it must.
    pub refusal: Option<&'static str>,
}

/// What this reading has for the next request hyper parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Head(SeenHead),
    /// It stopped judging, at or past a point where hyper itself refuses.
    Lost,
    /// It found no head there: the two readings disagree on where requests begin.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests or inside a head (its bytes so far are in `pending`).
    Head,
    /// Inside a body of known length: bytes still to come.
    Body(u64),
    /// Inside a chunked body, reading a chunk-size line (in `pending`).
    ChunkSize,
    /// Inside a chunk's data: bytes still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data: bytes of it seen.
    ChunkEnd(u8),
    /// The trailer section after the last chunk (its current line in `pending`).
    Trailers,
    /// Past anything hyper would accept, or past an upgrade: nothing more is judged.
    Lost,
}

/// Longest chunk-size line (size and extensions) or trailer line read; hyper's are smaller.
const LINE_LIMIT: usize = 16 * 1024;
/// Heads seen but not yet taken by the service: past it (a client pipelining a thousand
/// requests ahead of the answers) this reading stops, and the rest meet hyper's rules only.
const QUEUE_LIMIT: usize = 1024;
/// Header fields parsed on the stack; more is parsed into a vector.
const STACK_FIELDS: usize = 128;

#[derive(Debug)]
pub struct Framing {
    state: State,
    /// A body broke the grammar where hyper would go on: what is wrong with it.
    fault: Option<&'static str>,
    pending: Vec<u8>,
    seen: VecDeque<SeenHead>,
    heads: u64,
    trailer_bytes: usize,
    max_head: usize,
    max_fields: usize,
}

impl Framing {
    /// `max_head` and `max_fields` are hyper's own limits: past them hyper refuses the head.
    pub fn new(max_head: usize, max_fields: usize) -> Framing {
        Framing {
            state: State::Head,
            fault: None,
            pending: Vec::new(),
            seen: VecDeque::new(),
            heads: 0,
            trailer_bytes: 0,
            max_head,
            max_fields,
        }
    }

    /// True between requests: no part of a head, body or trailer is outstanding.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Head && self.pending.is_empty()
    }

    /// True while a head has started but not ended.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && !self.pending.is_empty()
    }

    /// Heads read so far.
    pub fn heads_seen(&self) -> u64 {
        self.heads
    }

    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Why the body being read must be refused, once one had to be: nothing after it on
    /// this connection is read.
    pub fn fault(&self) -> Option<&'static str> {
        self.fault
    }

    /// The next head seen, in the order requests arrive.
    pub fn take(&mut self) -> Seen {
        match self.seen.pop_front() {
            Some(head) => Seen::Head(head),
            None if self.is_lost() => Seen::Lost,
            None => Seen::Missing,
        }
    }

    /// Reads the next bytes of the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Lost => return,
                State::Head => self.feed_head(bytes),
                State::Body(n) => {
                    let (rest, left) = skip(bytes, n);
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    rest
                }
                State::ChunkSize => self.feed_chunk_size(bytes),
                State::ChunkData(n) => {
                    let (rest, left) = skip(bytes, n);
                    self.state = if left == 0 {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(left)
                    };
                    rest
                }
                State::ChunkEnd(seen) => {
                    let want = b"\r\n"[seen as usize];
                    if bytes[0] != want {
                        self.state = State::Lost;
                        return;
                    }
                    self.state = if seen == 1 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(1)
                    };
                    &bytes[1..]
                }
                State::Trailers => self.feed_trailers(bytes),
            };
        }
    }

    /// Appends bytes up to and including the next LF to `pending`; the rest, and whether a
    /// whole line is now in `pending`.
    fn take_line<'a>(&mut self, bytes: &'a [u8]) -> (&'a [u8], bool) {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pending.extend_from_slice(&bytes[..=i]);
                (&bytes[i + 1..], true)
            }
            None => {
                self.pending.extend_from_slice(bytes);
                (&[], false)
            }
        }
    }

    fn feed_head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        // A head that arrives in one read is parsed where it lies, without a copy.
        let (parsed, start) = if self.pending.is_empty() {
            (self.read_head(bytes), 0)
        } else {
            let start = self.pending.len();
            self.pending.extend_from_slice(bytes);
            (self.read_head(&self.pending), start)
        };
        match parsed {
            Read::Partial => {
                if start == 0 {
                    self.pending.extend_from_slice(bytes);
                }
                if self.pending.len() > self.max_head {
                    return self.lose();
                }
                &[]
            }
            Read::Invalid => self.lose(),
            Read::Head(len, head, next) => {
                self.heads += 1;
                if self.seen.len() == QUEUE_LIMIT {
                    // Dropping one would pair every later request with the wrong head.
                    return self.lose();
                }
                self.seen.push_back(head);
                self.pending.clear();
                self.state = next;
                // `len` counts from the start of what was parsed, which held `start` older
                // bytes before these.
                &bytes[len - start..]
            }
        }
    }

    fn read_head(&self, buf: &[u8]) -> Read {
        // Left uninitialised, as hyper does: filling 128 fields cost a 4 KiB write per head.
        if self.max_fields <= STACK_FIELDS {
            let mut fields = [const { MaybeUninit::uninit() }; STACK_FIELDS];
            read_head(buf, &mut fields[..self.max_fields])
        } else {
            let mut fields = Vec::with_capacity(self.max_fields);
            fields.resize_with(self.max_fields, MaybeUninit::uninit);
            read_head(buf, &mut fields)
        }
    }

    fn feed_chunk_size<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (rest, whole) = self.take_line(bytes);
        if !whole {
            if self.pending.len() > LINE_LIMIT {
                return self.lose();
            }
            return rest;
        }
        let size = chunk_size(&self.pending);
        if size.is_some() && !strict_chunk_line(&self.pending) {
            self.fault = Some("a chunk-size line outside RFC 9112 7.1");
            return self.lose();
        }
        self.pending.clear();
        self.state = match size {
            None => return self.lose(),
            Some(0) => {
                self.trailer_bytes = 0;
                State::Trailers
            }
            Some(n) => State::ChunkData(n),
        };
        rest
    }

    fn feed_trailers<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (rest, whole) = self.take_line(bytes);
        if self.trailer_bytes + self.pending.len() > self.max_head {
            return self.lose();
        }
        if whole {
            if !self.pending.ends_with(b"\r\n") {
                self.fault = Some("a bare LF in the trailer section");
                return self.lose();
            }
            let blank = self.pending.len() == 2;
            self.trailer_bytes += self.pending.len();
            self.pending.clear();
            if blank {
                self.state = State::Head;
            }
        }
        rest
    }

    /// Nothing that follows is HTTP (the connection was upgraded): stop reading.
    pub fn stop(&mut self) {
        self.lose();
    }

    fn lose<'a>(&mut self) -> &'a [u8] {
        self.state = State::Lost;
        self.pending = Vec::new();
        &[]
    }
}

/// Skips up to `n` bytes: the rest, and how many of `n` are still to come.
fn skip(bytes: &[u8], n: u64) -> (&[u8], u64) {
    let take = n.min(bytes.len() as u64);
    (&bytes[take as usize..], n - take)
}

enum Read {
    Partial,
    Invalid,
    /// Bytes of the head, what was seen, and the state after it.
    Head(usize, SeenHead, State),
}

fn read_head<'a>(buf: &'a [u8], fields: &mut [MaybeUninit<httparse::Header<'a>>]) -> Read {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Read::Partial,
        Err(_) => return Read::Invalid,
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Read::Invalid;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Read::Invalid;
    };
    let bare_lf = buf[..len]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'));
    let mut lengths = Vec::new();
    let mut chunked = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // As hyper reads it: the last field's last coding decides.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let mut refusal = bare_lf.then_some("a bare LF in the head");
    // RFC 9110 8.6 lets a recipient take one of repeated equal lengths or refuse them;
    // hyper keeps one silently, llhttp refuses, and so does this reading.
    if chunked.is_none() && lengths.len() > 1 {
        refusal = refusal.or(Some("Content-Length repeated"));
    }
    let next = match chunked {
        // hyper refuses Transfer-Encoding in HTTP/1.0, and any not ending in chunked.
        Some(_) if minor == 0 => State::Lost,
        Some(false) => State::Lost,
        Some(true) => {
            if !lengths.is_empty() {
                refusal = refusal.or(Some("Content-Length with Transfer-Encoding"));
            }
            State::ChunkSize
        }
        None => match content_length(&lengths) {
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => State::Lost,
        },
    };
    // A tunnel's bytes after CONNECT are not HTTP.
    let next = if method == Method::CONNECT {
        State::Lost
    } else {
        next
    };
    let head = SeenHead {
        method,
        // The http crate keeps no fragment; neither is it compared.
        target_len: target.split('#').next().unwrap_or_default().len(),
        refusal,
    };
    Read::Head(len, head, next)
}

/// The one length all Content-Length fields agree on, read as hyper's server reads them
/// (digits only, each field alike): 0 with none, `None` for what hyper refuses.
fn content_length(values: &[&[u8]]) -> Option<u64> {
    let mut length = None;
    for v in values {
        let v = v.trim_ascii();
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(length.unwrap_or(0))
}

/// The size on a chunk-size line as hyper reads one: hex digits, optional spaces or tabs,
/// optional extensions after `;`, then CRLF (a bare LF is refused).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // hyper limits the value, not the digits: leading zeros are allowed.
    let zeros = line[..digits].iter().take_while(|&&b| b == b'0').count();
    if digits == 0 || digits - zeros.min(digits - 1) > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| b == b'\r' || b == b'\n') {
        return None;
    }
    u64::from_str_radix(
        std::str::from_utf8(&line[zeros.min(digits - 1)..digits]).ok()?,
        16,
    )
    .ok()
}

/// Whether a chunk-size line (hyper accepts it) is also in RFC 9112 7.1's grammar, without
/// the optional whitespace (BWS) it allows around `;` and `=`, which llhttp refuses and no
/// client sends:
///
/// ```text
/// chunk-size [ chunk-ext ] CRLF
/// chunk-ext = *( ";" chunk-ext-name [ "=" chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// ```
///
/// Written out by hand: httparse's chunk reader is as lenient as hyper's.
fn strict_chunk_line(line: &[u8]) -> bool {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return false;
    };
    let mut at = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let token = |at: &mut usize| {
        let start = *at;
        while line.get(*at).copied().is_some_and(is_tchar) {
            *at += 1;
        }
        *at > start
    };
    while at < line.len() {
        if line.get(at) != Some(&b';') {
            return false;
        }
        at += 1;
        if !token(&mut at) {
            return false;
        }
        if line.get(at) == Some(&b'=') {
            at += 1;
            if line.get(at) == Some(&b'"') {
                let Some(len) = quoted_string(&line[at..]) else {
                    return false;
                };
                at += len;
            } else if !token(&mut at) {
                return false;
            }
        }
    }
    true
}

/// RFC 9110 5.6.2: a token's characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The length of the quoted-string (RFC 9110 5.6.4) that `bytes` begins with.
fn quoted_string(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                if !(next == b'\t' || (b' '..=b'~').contains(&next) || next >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | b'!' | b'#'..=b'[' | b']'..=b'~' | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(stream: &[u8], piece: usize) -> (Vec<SeenHead>, Framing) {
        let mut f = Framing::new(65536, 100);
        for part in stream.chunks(piece) {
            f.feed(part);
        }
        let mut out = Vec::new();
        while let Seen::Head(h) = f.take() {
            out.push(h);
        }
        (out, f)
    }

    fn methods(stream: &[u8], piece: usize) -> Vec<(String, Option<&'static str>)> {
        heads(stream, piece)
            .0
            .into_iter()
            .map(|h| (h.method.to_string(), h.refusal))
            .collect()
    }

    #[test]
    fn pipelined_requests_with_bodies_are_placed_whatever_the_reads() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /\
            PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nGET\r\n0\r\nX-Trailer: GET / HTTP/1.1\r\n\r\n\
            DELETE /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for piece in [1, 2, 3, 7, stream.len()] {
            let (seen, f) = heads(stream, piece);
            let got: Vec<_> = seen.iter().map(|h| h.method.as_str()).collect();
            assert_eq!(got, ["POST", "PUT", "DELETE"], "read {piece} at a time");
            assert_eq!(seen[2].target_len, 2);
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn both_framings_are_refused_in_either_order() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                methods(head, 4),
                [(
                    "POST".to_string(),
                    Some("Content-Length with Transfer-Encoding")
                )]
            );
        }
    }

    #[test]
    fn what_hyper_refuses_ends_the_reading() {
        for stream in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"CONNECT x:1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"\x00\x01 garbage\r\n\r\n",
        ] {
            let (_, f) = heads(stream, 5);
            assert!(f.is_lost(), "{:?}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn a_head_in_progress_is_seen_as_such() {
        let mut f = Framing::new(65536, 100);
        assert!(f.at_boundary());
        f.feed(b"GET / HT");
        assert!(f.in_head() && !f.at_boundary());
        f.feed(b"TP/1.1\r\n\r\n");
        assert!(f.at_boundary());
        assert!(matches!(f.take(), Seen::Head(h) if h.method == Method::GET));
        assert_eq!(f.take(), Seen::Missing);
    }

    #[test]
    fn leading_blank_lines_and_zeros_read_as_hyper_reads_them() {
        let stream = b"\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\
            PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            00000000000000000002\r\nok\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let got: Vec<_> = methods(stream, 3).into_iter().map(|(m, _)| m).collect();
        assert_eq!(got, ["POST", "PUT", "GET"]);
        // A list in one field is refused by hyper's server: this reading stops there too.
        let (_, f) = heads(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok", 4);
        assert!(f.is_lost());
    }

    #[test]
    fn a_bare_lf_in_a_head_refuses_the_request() {
        for stream in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nDummy: x\nContent-Length: 0\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            for piece in [1, 3, stream.len()] {
                assert_eq!(
                    methods(stream, piece),
                    [("GET".to_string(), Some("a bare LF in the head"))],
                    "{:?}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    /// A chunked request whose first chunk-size line is `line`.
    fn chunked_with(line: &[u8]) -> Vec<u8> {
        let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        stream.extend_from_slice(line);
        stream.extend_from_slice(b"\r\nok\r\n0\r\n\r\n");
        stream
    }

    #[test]
    fn chunk_lines_outside_the_grammar_are_a_fault() {
        for line in [
            &b"2;"[..],
            b"2 ",
            b"2\t",
            b"2;=v",
            b"2;a=",
            b"2;a=\"v",
            b"2 ;a b",
            b"2 ; a = b",
        ] {
            let stream = chunked_with(line);
            for piece in [1, 4, stream.len()] {
                let (_, f) = heads(&stream, piece);
                assert!(
                    f.fault().is_some() && f.is_lost(),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        for line in [
            &b"2"[..],
            b"2;a",
            b"2;a=b",
            b"2;a=\"q \\\" s\";b;c=d",
            b"02;name=value",
        ] {
            let (seen, f) = heads(&chunked_with(line), 3);
            assert_eq!(seen.len(), 1);
            assert!(
                f.fault().is_none() && f.at_boundary(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn an_oversized_head_ends_the_reading() {
        let mut f = Framing::new(64, 100);
        f.feed(b"GET / HTTP/1.1\r\nX-Long: ");
        f.feed(&[b'a'; 100]);
        assert!(f.is_lost());
    }
}
