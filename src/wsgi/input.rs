//! `wsgi.input`: the request body as a Python file object that pulls bytes from the connection
//! only when the app asks for them, so an upload is never buffered whole, and `Expect:
//! 100-continue` is answered only once the app starts reading. The GIL is released while it
//! waits for the network.

use std::sync::Mutex;
use std::time::Duration;

use crate::http::request_body::RequestBody;
use crate::sync::Recover;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use pyo3::exceptions::{PyOSError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyList};
use tokio::runtime::Handle;

/// The request body as `wsgi.input` reads it: its own, or, for a request with a deadline,
/// shared with the request's network side, which takes it from an app stuck past the
/// deadline (hyper then stops waiting for the app to read it, and closes the connection
/// after the 504).
pub enum BodySlot {
    Owned(Option<RequestBody>),
    Shared(std::sync::Arc<Mutex<SharedBody>>),
}

pub struct SharedBody {
    body: Option<RequestBody>,
    cut: bool,
}

impl BodySlot {
    pub fn shared(body: Option<RequestBody>) -> Self {
        BodySlot::Shared(std::sync::Arc::new(Mutex::new(SharedBody {
            body,
            cut: false,
        })))
    }

    /// What the network side keeps to `cut` a shared body.
    pub fn handle(&self) -> Option<BodySlot> {
        match self {
            BodySlot::Shared(s) => Some(BodySlot::Shared(std::sync::Arc::clone(s))),
            BodySlot::Owned(_) => None,
        }
    }

    fn take(&mut self) -> Option<RequestBody> {
        match self {
            BodySlot::Owned(b) => b.take(),
            BodySlot::Shared(s) => s.lock().recover().body.take(),
        }
    }

    /// Back after a read, unless the body was cut meanwhile.
    fn put_back(&mut self, body: RequestBody) {
        match self {
            BodySlot::Owned(b) => *b = Some(body),
            BodySlot::Shared(s) => {
                let mut st = s.lock().recover();
                if !st.cut {
                    st.body = Some(body);
                }
            }
        }
    }

    /// Drops a shared body now (if no read holds it) or when the read in progress ends.
    pub fn cut(&self) {
        if let BodySlot::Shared(s) = self {
            let body = {
                let mut st = s.lock().recover();
                st.cut = true;
                st.body.take()
            };
            drop(body);
        }
    }
}

#[pyclass(module = "bartizan._bartizan", name = "Input")]
pub struct WsgiInput {
    state: Mutex<InputState>,
}

struct InputState {
    /// Empty once the body has ended (or there was none).
    body: BodySlot,
    handle: Handle,
    buf: BytesMut,
    timeout: Duration,
    /// Bytes the body may still bring before it is too large.
    allowance: u64,
}

impl WsgiInput {
    pub fn new(body: BodySlot, handle: Handle, timeout: Duration, max_body: u64) -> Self {
        WsgiInput {
            state: Mutex::new(InputState {
                body,
                handle,
                buf: BytesMut::new(),
                timeout,
                allowance: max_body,
            }),
        }
    }
}

impl InputState {
    /// Pulls the next piece of the body into `buf`; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        loop {
            let Some(mut body) = self.body.take() else {
                return Ok(false);
            };
            let (handle, timeout) = (&self.handle, self.timeout);
            // The timer must be created inside the runtime, hence the async block.
            let next = py.detach(|| {
                handle.block_on(async { tokio::time::timeout(timeout, body.frame()).await })
            });
            // Ended or failed, it is dropped here; with a piece, it goes back for the next.
            if let Ok(Some(Ok(_))) = &next {
                self.body.put_back(body);
            }
            match next {
                Err(_) => {
                    return Err(PyTimeoutError::new_err(
                        "timed out waiting for the request body",
                    ));
                }
                Ok(None) => {
                    return Ok(false);
                }
                Ok(Some(Err(e))) => {
                    return Err(PyOSError::new_err(format!(
                        "request body could not be read: {e}"
                    )));
                }
                Ok(Some(Ok(frame))) => {
                    // Trailers carry no body bytes; keep reading.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let n = data.len() as u64;
                    if n > self.allowance {
                        return Err(PyOSError::new_err("request body too large"));
                    }
                    self.allowance -= n;
                    if data.is_empty() {
                        continue;
                    }
                    self.buf.extend_from_slice(&data);
                    return Ok(true);
                }
            }
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        self.buf.advance(n);
        out
    }

    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match size {
            Some(n) if n >= 0 => {
                let n = n as usize;
                while self.buf.len() < n && self.fill(py)? {}
                Ok(self.take(py, n))
            }
            _ => {
                while self.fill(py)? {}
                Ok(self.take(py, self.buf.len()))
            }
        }
    }

    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size.filter(|n| *n >= 0).map(|n| n as usize);
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            scanned = self.buf.len();
            if let Some(l) = limit
                && self.buf.len() >= l
            {
                return Ok(self.take(py, l));
            }
            if !self.fill(py)? {
                return Ok(self.take(py, self.buf.len()));
            }
        }
    }
}

#[pymethods]
impl WsgiInput {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.state.lock_py_attached(py).recover().read(py, size)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.state.lock_py_attached(py).recover().readline(py, size)
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = hint.filter(|h| *h > 0).map(|h| h as usize);
        let lines = PyList::empty(py);
        let mut total = 0;
        let mut st = self.state.lock_py_attached(py).recover();
        loop {
            let line = st.readline(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Lines until the body ends, as a file's iterator gives them.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    /// Closing is the server's business; the app may call it and nothing breaks.
    fn close(&self) {}
}
