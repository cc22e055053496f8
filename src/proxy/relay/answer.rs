//! An upstream's answer as the relay passes it on: how it is framed, its head as it goes to
//! the client, and where a chunked body ends.

use crate::http::headers::is_connection_scoped;

/// Header fields of an upstream's answer, as hyper's client allows.
const RESPONSE_FIELDS: usize = 100;
/// Longest chunk-size line or trailer section passed through.
const CHUNK_LINE_LIMIT: usize = 16 * 1024;

/// How an upstream's answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLen {
    None,
    Length(u64),
    /// Passed through chunk by chunk, trailers included, as the upstream coded it.
    Chunked,
    /// Until the upstream closes; the client's connection closes after it.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    pub(crate) body: BodyLen,
    /// The upstream said it closes (a reload under way, or HTTP/1.0).
    pub(crate) upstream_close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JudgedAnswer {
    /// A 1xx: read past, as hyper's client does.
    Interim(usize),
    Final(Answer),
}

/// Judges the answer at the start of `bytes`; for a final one, `out` holds its head as it
/// goes to the client (`closing`: with `Connection: close`).
pub(crate) fn judge_answer(
    bytes: &[u8],
    head_method: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<Option<JudgedAnswer>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; RESPONSE_FIELDS];
    let mut res = httparse::Response::new(&mut fields);
    let head_len = match res.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("an unreadable response head"),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err("an unreadable response head");
    };
    if status < 100 {
        return Err("a status below 100");
    }
    if status == 101 {
        return Err("a switch of protocols nobody asked for");
    }
    if (100..200).contains(&status) {
        return Ok(Some(JudgedAnswer::Interim(head_len)));
    }
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked_last = false;
    let (mut close_token, mut keep_token) = (false, false);
    let mut named: Vec<&[u8]> = Vec::new();
    let mut dated = false;
    for f in res.headers.iter() {
        let name = f.name.as_bytes();
        dated |= name.eq_ignore_ascii_case(b"date");
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(f.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("two Content-Lengths");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
            let last = f.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close_token = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_token = true;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        }
    }
    // HTTP/1.0 closes unless it says otherwise.
    let upstream_close = close_token || (version == 0 && !keep_token);
    let body = if head_method || status == 204 || status == 304 {
        BodyLen::None
    } else if coded {
        if chunked_last {
            BodyLen::Chunked
        } else {
            BodyLen::UntilClose
        }
    } else if let Some(n) = length {
        BodyLen::Length(n)
    } else {
        BodyLen::UntilClose
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length_sent = false;
    for f in res.headers.iter() {
        let name = f.name.as_bytes();
        // The framing fields the body is copied by go on as the client must read it, whatever
        // `Connection` names: Transfer-Encoding only when it ends in chunked, and it
        // overrides a length (RFC 9112 6.3); one Content-Length for repeated equal ones.
        let framing = if name.eq_ignore_ascii_case(b"transfer-encoding") {
            Some(body == BodyLen::Chunked)
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let first = !coded && !length_sent;
            length_sent |= first;
            Some(first)
        } else {
            None
        };
        let kept = match framing {
            Some(kept) => kept,
            None => {
                !is_connection_scoped(name) && !named.iter().any(|n| name.eq_ignore_ascii_case(n))
            }
        };
        if !kept {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 6.6.1: a response forwarded without a Date gets the time it was received.
    if !dated {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if closing || body == BodyLen::UntilClose {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(JudgedAnswer::Final(Answer {
        head_len,
        status,
        body,
        upstream_close,
    })))
}

/// Where a chunked body passed through ends: the chunked grammar of RFC 9112 7.1, read only
/// as far as telling each chunk's size and the end of the trailer section. (`framing` reads
/// a request's chunks to judge the request; this finds where an upstream's answer ends.)
#[derive(Debug, Default)]
pub(crate) struct ChunkedEnd {
    state: ChunkState,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size: an extension or the line's end follows.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

impl ChunkedEnd {
    /// Reads the next bytes of the body: how many of them end it, once it has ended.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let broken = "a broken chunked body";
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Data => {
                    let left = bytes.len() - i;
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(left);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits > 0 && b == b';' => self.state = ChunkState::Extension,
                    None if self.digits > 0 && matches!(b, b' ' | b'\t') => {
                        self.state = ChunkState::SizeSpace;
                    }
                    None if self.digits > 0 && b == b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(broken),
                },
                ChunkState::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(broken),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => return Err(broken),
                    _ => self.count_line()?,
                },
                ChunkState::SizeLf if b == b'\n' => {
                    self.line = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::DataCr if b == b'\r' => self.state = ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => {
                    self.digits = 0;
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart if b == b'\r' => self.state = ChunkState::EndLf,
                ChunkState::TrailerStart | ChunkState::TrailerLine if b != b'\n' => {
                    self.count_line()?;
                    self.state = if b == b'\r' {
                        ChunkState::TrailerLf
                    } else {
                        ChunkState::TrailerLine
                    };
                }
                ChunkState::TrailerLf if b == b'\n' => self.state = ChunkState::TrailerStart,
                ChunkState::EndLf if b == b'\n' => return Ok(Some(i + 1)),
                _ => return Err(broken),
            }
            i += 1;
        }
        Ok(None)
    }

    fn count_line(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        match self.line > CHUNK_LINE_LIMIT {
            true => Err("a chunk line or trailer section too long"),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_loses_its_hop_fields_and_keeps_its_framing() {
        let head = "HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nX-Kept: 1\r\n\r\nhello";
        let mut out = Vec::new();
        let j = judge_answer(head.as_bytes(), false, false, &mut out).unwrap();
        assert_eq!(
            j,
            Some(JudgedAnswer::Final(Answer {
                head_len: head.len() - 5,
                status: 200,
                body: BodyLen::Length(5),
                upstream_close: true,
            }))
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nX-Kept: 1\r\n\r\n"
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let mut out = Vec::new();
        let Some(JudgedAnswer::Final(a)) =
            judge_answer(chunked.as_bytes(), false, true, &mut out).unwrap()
        else {
            panic!("a final answer")
        };
        assert_eq!(a.body, BodyLen::Chunked);
        // Undated, it is dated on its way.
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\nConnection: close\r\n\r\n"), "{out}");
        let mut out = Vec::new();
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(judge_answer(bad.as_bytes(), false, false, &mut out).is_err());
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204";
        assert_eq!(
            judge_answer(interim.as_bytes(), false, false, &mut out),
            Ok(Some(JudgedAnswer::Interim(
                interim.len() - "HTTP/1.1 204".len()
            )))
        );
        let head_only = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let Some(JudgedAnswer::Final(a)) =
            judge_answer(head_only.as_bytes(), true, false, &mut out).unwrap()
        else {
            panic!("a final answer")
        };
        assert_eq!(a.body, BodyLen::None);
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_do() {
        let body = b"5 ;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut end = ChunkedEnd::default();
            let first = end.feed(&body[..split]).unwrap();
            let at = match first {
                Some(n) => n,
                None => split + end.feed(&body[split..]).unwrap().unwrap(),
            };
            assert_eq!(at, body.len() - 4, "split at {split}");
        }
        for broken in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"5 x\r\n",
        ] {
            assert!(ChunkedEnd::default().feed(broken).is_err(), "{broken:?}");
        }
    }

    /// The head sent on for `answer`, as text.
    fn sent(answer: &str) -> Result<String, &'static str> {
        let mut out = Vec::new();
        judge_answer(answer.as_bytes(), false, false, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_fields_an_answer_is_framed_by_go_on_as_read() {
        // `Connection` cannot take away the length the body is copied by.
        let named =
            sent("HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n");
        assert!(named.unwrap().contains("\r\nContent-Length: 5\r\n"));
        // Repeated equal lengths go on as one.
        let twice = sent("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(twice.unwrap().matches("Content-Length").count(), 1);
        // A coding that does not end in chunked runs until close and is not named.
        let coded = sent("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert!(
            !coded.contains("Transfer-Encoding") && !coded.contains("Content-Length"),
            "{coded}"
        );
        assert!(coded.ends_with("Connection: close\r\n\r\n"), "{coded}");
        assert!(sent("HTTP/1.1 042 Odd\r\n\r\n").is_err());
    }
}
