//! The response side of PEP 3333: `start_response` (with its `exc_info` rules), the `write()`
//! callable, and handing status, headers and body chunks to the network side.
//!
//! A body that is whole when the head is known (a list, or a first chunk that fills the
//! declared `Content-Length`, which is what Django sends) goes out in one message. Anything
//! else streams through a small bounded channel, so a generator of any size costs a few
//! chunks of memory, and a send that fails tells the app's driver that the client has gone.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use hyper::ext::ReasonPhrase;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};

use crate::http::body::{BodyError, Chunk, Reply, ResponseBody, StreamBody};
use crate::http::error_page;
use crate::http::headers::is_hop_by_hop_for_wsgi;
use crate::sync::Recover;

/// Chunks a streaming response may have in flight between the app and the socket.
const STREAM_DEPTH: usize = 4;

/// What happened to one body chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// The client is gone; the app's output can stop.
    ClientGone,
}

struct Head {
    status: StatusCode,
    reason: Option<ReasonPhrase>,
    headers: HeaderMap,
    declared_len: Option<u64>,
}

pub struct ResponseState {
    head: Option<Head>,
    /// Until the head goes out.
    reply: Option<oneshot::Sender<Reply>>,
    /// After the head went out with a streamed body.
    stream: Option<mpsc::Sender<Chunk>>,
    /// Body bytes handed on so far.
    sent: u64,
    /// The body is complete (declared length reached); further data is dropped.
    complete: bool,
}

pub type SharedState = Arc<Mutex<ResponseState>>;

impl ResponseState {
    pub fn new(reply: oneshot::Sender<Reply>) -> SharedState {
        Arc::new(Mutex::new(ResponseState {
            head: None,
            reply: Some(reply),
            stream: None,
            sent: 0,
            complete: false,
        }))
    }

    pub fn head_sent(&self) -> bool {
        self.reply.is_none()
    }

    fn build(&mut self, body: ResponseBody) -> Option<Reply> {
        let head = self.head.as_ref()?;
        let mut res = Response::new(body);
        *res.status_mut() = head.status;
        *res.headers_mut() = head.headers.clone();
        if let Some(r) = &head.reason {
            res.extensions_mut().insert(r.clone());
        }
        Some(res)
    }

    /// Takes `data` as the next piece of body. Returns the sender to push it through when the
    /// body streams (the caller sends it without holding the lock or the GIL).
    fn accept(&mut self, mut data: Bytes) -> PyResult<Option<(mpsc::Sender<Chunk>, Bytes)>> {
        let Some(head) = &self.head else {
            return Err(PyAssertionError::new_err(
                "start_response() must be called before the response body is sent",
            ));
        };
        if self.complete || data.is_empty() {
            return Ok(None);
        }
        // Never send more than the app declared: the rest would corrupt the connection.
        if let Some(len) = head.declared_len {
            let room = len.saturating_sub(self.sent);
            if (data.len() as u64) > room {
                data.truncate(room as usize);
            }
            if self.sent + data.len() as u64 == len {
                self.complete = true;
            }
        }
        self.sent += data.len() as u64;
        if let Some(reply) = self.reply.take() {
            if self.complete {
                if let Some(res) = self.build(ResponseBody::full(data)) {
                    let _ = reply.send(res);
                }
                return Ok(None);
            }
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            if let Some(res) = self.build(ResponseBody::Stream(StreamBody::new(rx))) {
                let _ = reply.send(res);
            }
            self.stream = Some(tx);
        }
        let tx = self.stream.clone();
        if self.complete {
            // Last piece: closing our end lets the stream finish once it is delivered.
            self.stream = None;
        }
        Ok(tx.map(|tx| (tx, data)))
    }

    /// The app is done: send the head if it has not gone out, end the stream.
    pub fn finish(&mut self) -> PyResult<()> {
        if self.head.is_none() {
            return Err(PyAssertionError::new_err(
                "the application returned without calling start_response()",
            ));
        }
        if let Some(reply) = self.reply.take()
            && let Some(res) = self.build(ResponseBody::empty())
        {
            let _ = reply.send(res);
        }
        if let (Some(tx), Some(head)) = (self.stream.take(), &self.head)
            && head.declared_len.is_some_and(|len| self.sent < len)
        {
            // Short of the declared length: abort rather than leave the client waiting.
            let _ = tx.try_send(Err(BodyError("body shorter than Content-Length".into())));
        }
        Ok(())
    }

    /// The app failed: a 500 if nothing went out yet, else cut the connection.
    pub fn fail(&mut self) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(error_page::plain(StatusCode::INTERNAL_SERVER_ERROR));
        }
        if let Some(tx) = self.stream.take() {
            let _ = tx.try_send(Err(BodyError("application error".into())));
        }
    }

    pub fn client_gone(&self) -> bool {
        match (&self.reply, &self.stream) {
            (Some(r), _) => r.is_closed(),
            (None, Some(s)) => s.is_closed(),
            (None, None) => false,
        }
    }
}

/// Hands one chunk on, waiting (without the GIL) while the client is slow.
pub fn send_chunk(py: Python<'_>, state: &SharedState, data: Bytes) -> PyResult<Sent> {
    let pushed = state.lock_py_attached(py).recover().accept(data)?;
    match pushed {
        None => Ok(Sent::Ok),
        Some((tx, data)) => match py.detach(|| tx.blocking_send(Ok(data))) {
            Ok(()) => Ok(Sent::Ok),
            Err(_) => Ok(Sent::ClientGone),
        },
    }
}

fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<(StatusCode, Option<ReasonPhrase>)> {
    let s = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?;
    let s = s.to_str()?;
    let b = s.as_bytes();
    let bad = || PyValueError::new_err(format!("invalid status {s:?}: expected '200 OK' form"));
    if b.len() < 4 || b[3] != b' ' || !b[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(&b[..3]).map_err(|_| bad())?;
    if code.as_u16() < 200 {
        // 1xx answers belong to the server, not to a WSGI app.
        return Err(bad());
    }
    let reason = &s[4..];
    let reason = if code.canonical_reason() == Some(reason) {
        None
    } else {
        let bytes = reason.chars().map(|c| c as u32).collect::<Vec<_>>();
        if bytes.iter().any(|&c| c > 0xff) {
            return Err(bad());
        }
        let bytes: Vec<u8> = bytes.into_iter().map(|c| c as u8).collect();
        Some(ReasonPhrase::try_from(bytes).map_err(|_| bad())?)
    };
    Ok((code, reason))
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let mut map = HeaderMap::new();
    let mut declared = None;
    for item in headers.try_iter().map_err(|_| {
        PyTypeError::new_err("response headers must be a list of (name, value) tuples")
    })? {
        let item = item?;
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("each response header must be a (name, value) tuple")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each response header must be a (name, value) tuple",
            ));
        }
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
            return Err(PyTypeError::new_err(
                "response header names and values must be str",
            ));
        };
        // RFC 9110 5.5: a field value has no leading or trailing whitespace; apps do write
        // `" csrftoken=..."`.
        let (name, value) = (name.to_str()?, value.to_str()?.trim_matches([' ', '\t']));
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
        if is_hop_by_hop_for_wsgi(&hname) {
            return Err(PyValueError::new_err(format!(
                "hop-by-hop header {name:?} is not allowed from a WSGI application"
            )));
        }
        let latin: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(c as u32).ok()).collect();
        let hvalue = latin
            .and_then(|v| HeaderValue::from_bytes(&v).ok())
            .ok_or_else(|| {
                PyValueError::new_err(format!("invalid value for header {name:?}: {value:?}"))
            })?;
        if hname == CONTENT_LENGTH {
            let n = value
                .trim()
                .parse::<u64>()
                .map_err(|_| PyValueError::new_err(format!("invalid Content-Length {value:?}")))?;
            declared = Some(n);
        }
        map.append(hname, hvalue);
    }
    Ok((map, declared))
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "bartizan._bartizan")]
pub struct StartResponse {
    state: SharedState,
}

impl StartResponse {
    pub fn new(state: SharedState) -> Self {
        StartResponse { state }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<WriteCallable> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = self.state.lock_py_attached(py).recover();
            if st.head.is_some() {
                match exc_info {
                    None => {
                        return Err(PyAssertionError::new_err(
                            "start_response() called a second time without exc_info",
                        ));
                    }
                    // Too late to change the head: the error goes back to the app.
                    Some(ei) if st.head_sent() => {
                        return Err(PyErr::from_value(ei.get_item(1)?));
                    }
                    Some(_) => {}
                }
            }
        }
        let (status, reason) = parse_status(status)?;
        let (headers, declared_len) = parse_headers(headers)?;
        let mut st = self.state.lock_py_attached(py).recover();
        st.head = Some(Head {
            status,
            reason,
            headers,
            declared_len,
        });
        Ok(WriteCallable {
            state: Arc::clone(&self.state),
        })
    }
}

/// The legacy `write(data)` callable `start_response` returns.
#[pyclass(module = "bartizan._bartizan")]
pub struct WriteCallable {
    state: SharedState,
}

#[pymethods]
impl WriteCallable {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        match send_chunk(py, &self.state, Bytes::copy_from_slice(data.as_bytes()))? {
            Sent::Ok => Ok(()),
            Sent::ClientGone => Err(pyo3::exceptions::PyConnectionAbortedError::new_err(
                "client disconnected",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(declared: Option<u64>) -> Head {
        Head {
            status: StatusCode::OK,
            reason: None,
            headers: HeaderMap::new(),
            declared_len: declared,
        }
    }

    #[test]
    fn chunk_filling_declared_length_goes_out_whole() {
        let (tx, mut rx) = oneshot::channel();
        let st = ResponseState::new(tx);
        let mut st = st.lock().unwrap();
        st.head = Some(head(Some(5)));
        assert!(
            st.accept(Bytes::from_static(b"hello world"))
                .unwrap()
                .is_none()
        );
        let res = rx.try_recv().unwrap();
        assert!(matches!(res.body(), ResponseBody::Full(Some(b)) if b == "hello"));
        // Anything after the declared length is dropped.
        assert!(st.accept(Bytes::from_static(b"more")).unwrap().is_none());
    }

    #[test]
    fn undeclared_body_streams() {
        let (tx, mut rx) = oneshot::channel();
        let st = ResponseState::new(tx);
        let mut st = st.lock().unwrap();
        st.head = Some(head(None));
        let (_, data) = st.accept(Bytes::from_static(b"abc")).unwrap().unwrap();
        assert_eq!(data, "abc");
        assert!(matches!(
            rx.try_recv().unwrap().body(),
            ResponseBody::Stream(_)
        ));
    }

    #[test]
    fn body_before_start_response_is_an_error() {
        let (tx, _rx) = oneshot::channel();
        let st = ResponseState::new(tx);
        assert!(st.lock().unwrap().accept(Bytes::from_static(b"x")).is_err());
    }
}
