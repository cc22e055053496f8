//! The PEP 3333 environ. Everything that can be worked out without Python (percent-decoding,
//! header folding, `HTTP_*` names, server and client addresses) is done on the network thread
//! into a `RequestEnv`; the pool thread then only turns those strings into a dict while it
//! holds the GIL.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

use crate::http::conn::ConnInfo;
use crate::http::forwarded::Forwarded;
use crate::http::headers::joined;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyAny, intern};

/// The parts of a request the app sees, as strings already decoded the way PEP 3333 wants
/// ("bytes as latin-1" for everything that came off the wire).
#[derive(Debug, Clone)]
pub struct RequestEnv {
    pub method: Method,
    pub path_info: String,
    pub query_string: String,
    /// Path and query exactly as sent, for logs and for `RAW_URI`/`REQUEST_URI`.
    pub raw_uri: String,
    pub version: Version,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub server_name: String,
    pub server_port: String,
    pub remote_addr: String,
    pub remote_port: String,
    pub url_scheme: &'static str,
    /// `(HTTP_NAME, value)`, repeated headers already joined.
    pub headers: Vec<(String, String)>,
}

/// Why a request cannot be mapped onto the app.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("path is outside the app's root path")]
    OutsideRoot,
}

/// Bytes to `str` the way PEP 3333 says: each byte is one latin-1 code point.
pub fn latin1(bytes: &[u8]) -> String {
    if bytes.is_ascii() {
        // Common case: ASCII needs no remapping.
        return String::from_utf8(bytes.to_vec()).expect("ascii is utf-8");
    }
    bytes.iter().map(|&b| b as char).collect()
}

/// `Content-Type` -> `CONTENT_TYPE`, `X-Real-Thing` -> `HTTP_X_REAL_THING`.
fn cgi_name(name: &str) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for c in name.chars() {
        key.push(match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    key
}

fn join_values(headers: &HeaderMap, name: &http::HeaderName, sep: &str) -> String {
    // Latin-1, as PEP 3333 has the environ carry a header's bytes.
    joined(headers, name, sep, |v| {
        Some(Cow::Owned(latin1(v.as_bytes())))
    })
    .unwrap_or_default()
}

/// Splits `host[:port]`, keeping IPv6 brackets off the name.
fn split_host(host: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let name = &rest[..end];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(port) => Some((name, Some(port))),
            None if after.is_empty() => Some((name, None)),
            None => None,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => Some((name, Some(port))),
        None => Some((host, None)),
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

impl RequestEnv {
    pub fn from_parts(
        parts: &Parts,
        root_path: &str,
        conn: &ConnInfo,
        fwd: &Forwarded,
    ) -> Result<RequestEnv, EnvError> {
        let (peer, text) = (conn.peer, &conn.text);
        let uri = &parts.uri;
        let raw_path = uri.path();
        let decoded = percent_encoding::percent_decode(raw_path.as_bytes()).collect::<Vec<u8>>();
        let path = latin1(&decoded);
        let path_info = if root_path.is_empty() {
            path
        } else {
            match path.strip_prefix(root_path) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
                _ => return Err(EnvError::OutsideRoot),
            }
        };
        let query = uri.query().unwrap_or("");
        let raw_uri = match uri.query() {
            Some(q) => format!("{raw_path}?{q}"),
            None => raw_path.to_string(),
        };

        let headers = &parts.headers;
        let mut env_headers = Vec::with_capacity(headers.keys_len());
        for name in headers.keys() {
            if name == CONTENT_TYPE || name == CONTENT_LENGTH {
                continue;
            }
            // An underscore name would collide with a dash name once mapped to HTTP_*: drop
            // it so `X_Forwarded_For` can never pose as `X-Forwarded-For`.
            if name.as_str().contains('_') {
                continue;
            }
            let sep = if name == COOKIE { "; " } else { "," };
            env_headers.push((cgi_name(name.as_str()), join_values(headers, name, sep)));
        }
        let content_type = headers
            .contains_key(CONTENT_TYPE)
            .then(|| join_values(headers, &CONTENT_TYPE, ","));
        let content_length = headers.get(CONTENT_LENGTH).map(|v| latin1(v.as_bytes()));

        // HTTP/2 names the host in `:authority`, and a client need not send `Host` beside it
        // (RFC 9113 8.3.1); an app reads it from HTTP_HOST either way.
        if parts.version == Version::HTTP_2
            && !headers.contains_key(HOST)
            && let Some(authority) = uri.authority()
        {
            env_headers.push(("HTTP_HOST".to_string(), authority.as_str().to_string()));
        }
        // A trusted proxy may tell the real client, scheme and host.
        let url_scheme = fwd.proto.unwrap_or(conn.scheme);
        if let Some(h) = &fwd.host {
            match env_headers.iter_mut().find(|(k, _)| k == "HTTP_HOST") {
                Some(entry) => entry.1 = h.clone(),
                None => env_headers.push(("HTTP_HOST".to_string(), h.clone())),
            }
        }
        let host = fwd.host.clone().or_else(|| {
            uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
                headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
        });
        let default_port = if url_scheme == "https" { "443" } else { "80" };
        let (server_name, mut server_port) = match host.as_deref().and_then(split_host) {
            Some((name, port)) if !name.is_empty() => {
                let port = match port {
                    Some(p) if valid_port(p) => p.to_string(),
                    Some(_) => text.local_port.clone(),
                    None => default_port.to_string(),
                };
                (name.to_ascii_lowercase(), port)
            }
            _ => (text.local_ip.clone(), text.local_port.clone()),
        };
        if let Some(p) = fwd.port {
            server_port = p.to_string();
        }
        let (remote_addr, remote_port) = match &fwd.client {
            Some((addr, port)) => (addr.clone(), port.unwrap_or(peer.port()).to_string()),
            None => (text.peer_ip.clone(), text.peer_port.clone()),
        };

        Ok(RequestEnv {
            method: parts.method.clone(),
            path_info,
            query_string: latin1(query.as_bytes()),
            raw_uri,
            version: parts.version,
            content_type,
            content_length,
            server_name,
            server_port,
            remote_addr,
            remote_port,
            url_scheme,
            headers: env_headers,
        })
    }

    /// Builds this request's environ dict (the only part that needs the GIL): a copy of
    /// `base` (see [`base_environ`]) with the request's own values filled in.
    pub fn to_dict<'py>(
        &self,
        base: &Bound<'py, PyDict>,
        input: Bound<'py, PyAny>,
        errors: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = base.py();
        let d = base.copy()?;
        let s = |v: &str| PyString::new(py, v);
        d.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, &self.method))?;
        d.set_item(intern!(py, "PATH_INFO"), s(&self.path_info))?;
        d.set_item(intern!(py, "QUERY_STRING"), s(&self.query_string))?;
        let raw_uri = s(&self.raw_uri);
        d.set_item(intern!(py, "RAW_URI"), &raw_uri)?;
        d.set_item(intern!(py, "REQUEST_URI"), raw_uri)?;
        let protocol = match self.version {
            Version::HTTP_10 => intern!(py, "HTTP/1.0"),
            Version::HTTP_09 => intern!(py, "HTTP/0.9"),
            Version::HTTP_2 => intern!(py, "HTTP/2"),
            _ => intern!(py, "HTTP/1.1"),
        };
        d.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
        d.set_item(intern!(py, "SERVER_NAME"), s(&self.server_name))?;
        d.set_item(intern!(py, "SERVER_PORT"), s(&self.server_port))?;
        d.set_item(intern!(py, "REMOTE_ADDR"), s(&self.remote_addr))?;
        d.set_item(intern!(py, "REMOTE_PORT"), s(&self.remote_port))?;
        let scheme = if self.url_scheme == "https" {
            d.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
            intern!(py, "https")
        } else {
            intern!(py, "http")
        };
        d.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        d.set_item(intern!(py, "wsgi.input"), input)?;
        d.set_item(intern!(py, "wsgi.errors"), errors)?;
        if let Some(ct) = &self.content_type {
            d.set_item(intern!(py, "CONTENT_TYPE"), s(ct))?;
        }
        if let Some(cl) = &self.content_length {
            d.set_item(intern!(py, "CONTENT_LENGTH"), s(cl))?;
        }
        for (k, v) in &self.headers {
            d.set_item(s(k), s(v))?;
        }
        Ok(d)
    }
}

/// Common methods as interned strings: no new string per request.
fn method_str<'py>(py: Python<'py>, method: &Method) -> Bound<'py, PyString> {
    match *method {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

/// The environ keys that never change for an app, plus every key each request sets, so
/// that filling in a copy replaces values in place instead of growing the dict.
pub fn base_environ<'py>(
    py: Python<'py>,
    script_name: &str,
    file_wrapper: &Bound<'py, PyAny>,
    multiprocess: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for key in [
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "RAW_URI",
        "REQUEST_URI",
        "SERVER_PROTOCOL",
        "SERVER_NAME",
        "SERVER_PORT",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "wsgi.url_scheme",
        "wsgi.input",
        "wsgi.errors",
    ] {
        d.set_item(key, py.None())?;
    }
    d.set_item("SCRIPT_NAME", script_name)?;
    d.set_item("SERVER_SOFTWARE", "bartizan")?;
    d.set_item("wsgi.version", PyTuple::new(py, [1i32, 0])?)?;
    d.set_item("wsgi.multithread", true)?;
    d.set_item("wsgi.multiprocess", multiprocess)?;
    d.set_item("wsgi.run_once", false)?;
    // The input returns EOF at the end of the body, chunked or not.
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.file_wrapper", file_wrapper)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn env_of(req: Request<()>, root: &str) -> Result<RequestEnv, EnvError> {
        let (parts, ()) = req.into_parts();
        let conn = ConnInfo::new(
            "10.0.0.7:5555".parse().unwrap(),
            "127.0.0.1:8000".parse().unwrap(),
            "http",
        );
        let trust = crate::http::forwarded::TrustList::default();
        let origin = crate::http::forwarded::Origin::of(&parts.headers, conn.peer.ip(), &trust);
        RequestEnv::from_parts(&parts, root, &conn, &origin.told)
    }

    #[test]
    fn path_is_percent_decoded_then_latin1() {
        let e = env_of(
            Request::get("/caf%C3%A9/a%20b%2Fc?x=%20y")
                .body(())
                .unwrap(),
            "",
        )
        .unwrap();
        assert_eq!(e.path_info, "/caf\u{c3}\u{a9}/a b/c");
        assert_eq!(e.query_string, "x=%20y");
        assert_eq!(e.raw_uri, "/caf%C3%A9/a%20b%2Fc?x=%20y");
    }

    #[test]
    fn headers_are_joined_and_underscores_dropped() {
        let e = env_of(
            Request::get("/")
                .header("X-Multi", "a")
                .header("X-Multi", "b")
                .header("Cookie", "a=1")
                .header("Cookie", "b=2")
                .header("X_Forwarded_For", "evil")
                .header("Content-Type", "text/plain")
                .header("Content-Length", "3")
                .header("Host", "example.com:8080")
                .body(())
                .unwrap(),
            "",
        )
        .unwrap();
        let get = |k: &str| {
            e.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("HTTP_X_MULTI"), Some("a,b"));
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get("HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
        assert_eq!(e.content_length.as_deref(), Some("3"));
        assert_eq!(e.server_name, "example.com");
        assert_eq!(e.server_port, "8080");
        assert_eq!(e.remote_addr, "10.0.0.7");
    }

    #[test]
    fn host_forms() {
        assert_eq!(split_host("[::1]:80"), Some(("::1", Some("80"))));
        assert_eq!(split_host("[::1]"), Some(("::1", None)));
        assert_eq!(split_host("[::1]x"), None);
        assert_eq!(split_host("a.b"), Some(("a.b", None)));
        let e = env_of(Request::get("/").body(()).unwrap(), "").unwrap();
        assert_eq!(e.server_name, "127.0.0.1");
        assert_eq!(e.server_port, "8000");
    }

    #[test]
    fn root_path_is_stripped() {
        let e = env_of(Request::get("/app/x").body(()).unwrap(), "/app").unwrap();
        assert_eq!(e.path_info, "/x");
        let e = env_of(Request::get("/app").body(()).unwrap(), "/app").unwrap();
        assert_eq!(e.path_info, "");
        assert_eq!(
            env_of(Request::get("/apple").body(()).unwrap(), "/app").unwrap_err(),
            EnvError::OutsideRoot
        );
    }
}
