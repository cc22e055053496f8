//! Running a request through the WSGI app: the network side collects the request, the pool
//! runs the app on a Python thread, and the reply comes back over a channel.

mod deadline;
pub mod environ;
pub mod file_wrapper;
pub mod input;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use crate::http::request_body::RequestBody;
use crate::sync::Recover;
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use http_body::Body;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::{Py, PyAny, intern};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::http::error_page;
use crate::http::forwarded::Forwarded;
use crate::pool::{JobClass, Pool, SubmitError};
use environ::{EnvError, RequestEnv};
use file_wrapper::FileWrapper;
use input::{BodySlot, WsgiInput};
use response::{ResponseState, Sent, SharedState, StartResponse};

use crate::http::body::{Reply, ResponseBody};
use crate::http::conn::ConnInfo;
use deadline::{Overdue, Started};

/// The app and what every call of it needs.
pub struct WsgiApp {
    app: Py<PyAny>,
    /// The environ's keys that are the same for every request; each request's environ
    /// starts as a copy of it.
    base_environ: Py<PyDict>,
    /// Kept to read `sys.stderr` per request (the app may replace it) without an import,
    /// which costs a failed attribute lookup each time.
    sys: Py<PyAny>,
    root_path: String,
    max_body: u64,
    body_timeout: Duration,
    request_timeout: Option<Duration>,
    retry_after: u32,
}

impl WsgiApp {
    /// `multiprocess`: other processes serve the same app (workers), PEP 3333's
    /// `wsgi.multiprocess`.
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        config: &Config,
        multiprocess: bool,
    ) -> PyResult<WsgiApp> {
        let file_wrapper = py.get_type::<FileWrapper>().into_any();
        let base_environ =
            environ::base_environ(py, &config.root_path, &file_wrapper, multiprocess)?;
        let sys = py.import(intern!(py, "sys"))?.into_any().unbind();
        Ok(WsgiApp {
            app,
            base_environ: base_environ.unbind(),
            sys,
            root_path: config.root_path.clone(),
            max_body: config.max_body,
            body_timeout: config.body_timeout,
            request_timeout: config.request_timeout,
            retry_after: config.retry_after,
        })
    }
}

struct Job {
    env: RequestEnv,
    body: BodySlot,
    reply: oneshot::Sender<Reply>,
    handle: Handle,
    /// Told where the request runs, when it has a deadline.
    started: Option<oneshot::Sender<Started>>,
}

/// Answers one request through the app; never fails, every problem is a status.
pub async fn handle(
    req: Request<RequestBody>,
    app: &Arc<WsgiApp>,
    pool: &Pool,
    conn: &ConnInfo,
    told: &Forwarded,
) -> Reply {
    let (parts, body) = req.into_parts();
    let env = match RequestEnv::from_parts(&parts, &app.root_path, conn, told) {
        Ok(env) => env,
        Err(EnvError::OutsideRoot) => return error_page::plain(StatusCode::NOT_FOUND),
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body) {
        return error_page::plain(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let request_line = app
        .request_timeout
        .map(|_| format!("{} {} {:?}", parts.method, env.raw_uri, parts.version));
    let class = JobClass::of(parts.method.as_str(), parts.uri.path());
    // `env` holds copies of all the app needs from the head: release the head (and its
    // share of the connection's read buffer) now, not after the app has answered.
    drop(parts);
    let body = (!body.is_end_stream()).then_some(body);
    let (body, started) = match request_line {
        None => (BodySlot::Owned(body), None),
        Some(_) => (BodySlot::shared(body), Some(oneshot::channel())),
    };
    let slot = body.handle();
    let (tx, rx) = oneshot::channel();
    let (started_tx, started_rx) = match started {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let job = Job {
        env,
        body,
        reply: tx,
        handle: Handle::current(),
        started: started_tx,
    };
    let runner = Arc::clone(app);
    match pool.submit(class, Box::new(move || run(&runner, job))) {
        Ok(()) => {}
        Err(SubmitError::Full | SubmitError::Locked | SubmitError::Stopped) => {
            return error_page::unavailable(app.retry_after);
        }
    }
    match (app.request_timeout, request_line, started_rx, slot) {
        (Some(limit), Some(request_line), Some(started), Some(slot)) => {
            // Boxed: only requests with a deadline carry its state.
            let watch = Watch {
                limit,
                request_line,
                started,
                slot,
            };
            Box::pin(watch.answer(rx, app, pool)).await
        }
        _ => match rx.await {
            Ok(reply) => reply,
            // The job was dropped unrun: the server is stopping.
            Err(_) => error_page::unavailable(app.retry_after),
        },
    }
}

/// A request with a deadline, waited for on the network side.
struct Watch {
    limit: Duration,
    request_line: String,
    started: oneshot::Receiver<Started>,
    slot: BodySlot,
}

impl Watch {
    async fn answer(
        self,
        mut rx: oneshot::Receiver<Reply>,
        app: &Arc<WsgiApp>,
        pool: &Pool,
    ) -> Reply {
        let Watch {
            limit,
            request_line,
            started,
            slot,
        } = self;
        // The deadline runs from the app's call, not from the wait for a thread.
        let Ok(started) = started.await else {
            return rx
                .await
                .unwrap_or_else(|_| error_page::unavailable(app.retry_after));
        };
        let at = tokio::time::Instant::now() + limit;
        let overdue = Overdue {
            request_line,
            after: limit,
            started,
            pool: pool.marker(),
        };
        match tokio::time::timeout_at(at, &mut rx).await {
            Ok(Ok(reply)) => reply.map(|body| match body {
                ResponseBody::Stream(stream) => ResponseBody::Stream(
                    stream.until(at, Box::new(move || overdue.report("its connection cut"))),
                ),
                whole => whole,
            }),
            Ok(Err(_)) => error_page::unavailable(app.retry_after),
            Err(_) => {
                overdue.report("answered 504");
                // hyper waits for a body to be read before the next request: the stuck app
                // never will, so the body goes, and the connection with it.
                slot.cut();
                let mut res = error_page::plain(StatusCode::GATEWAY_TIMEOUT);
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                res
            }
        }
    }
}

/// On a pool thread: call the app and hand its response on.
fn run(app: &WsgiApp, job: Job) {
    if job.reply.is_closed() {
        // The client left while the request waited in the queue.
        crate::pool::nothing_done();
        return;
    }
    let Job {
        env,
        body,
        reply,
        handle,
        started,
    } = job;
    if let Some(started) = started {
        let _ = started.send(Started::here());
    }
    let state = ResponseState::new(reply);
    Python::attach(|py| {
        let result = call_app(py, app, &env, body, handle, &state);
        if let Err(e) = result {
            report(py, &env, &e);
            state.lock_py_attached(py).recover().fail();
        }
    });
}

fn call_app(
    py: Python<'_>,
    app: &WsgiApp,
    env: &RequestEnv,
    body: BodySlot,
    handle: Handle,
    state: &SharedState,
) -> PyResult<()> {
    let input = Bound::new(
        py,
        WsgiInput::new(body, handle, app.body_timeout, app.max_body),
    )?;
    let errors = app.sys.bind(py).getattr(intern!(py, "stderr"))?;
    let environ = env.to_dict(app.base_environ.bind(py), input.into_any(), errors)?;
    let start_response = Bound::new(py, StartResponse::new(Arc::clone(state)))?;
    let result = app.app.bind(py).call1((environ, start_response))?;
    let sent = send_body(py, &result, state);
    // PEP 3333: close() is called however the iteration ended, client gone included.
    // Lists and tuples have no close(); asking would raise and swallow an AttributeError.
    let plain = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    let close = if plain {
        Ok(None)
    } else {
        result.getattr_opt(intern!(py, "close"))
    };
    let closed = match close {
        Ok(Some(close)) => close.call0().map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    sent?;
    closed?;
    state.lock_py_attached(py).recover().finish()
}

fn as_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let b = item.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the response body must be an iterable of bytes, got {}",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    Ok(Bytes::copy_from_slice(b.as_bytes()))
}

/// Sends the iterable's items; stops early (without error) when the client is gone.
fn send_body(py: Python<'_>, result: &Bound<'_, PyAny>, state: &SharedState) -> PyResult<()> {
    // A list or tuple is whole already: one message, one copy.
    let seq = if let Ok(list) = result.cast::<PyList>() {
        Some(list.iter().collect::<Vec<_>>())
    } else if let Ok(tuple) = result.cast::<PyTuple>() {
        Some(tuple.iter().collect::<Vec<_>>())
    } else {
        None
    };
    if let Some(items) = seq {
        let data = match items.as_slice() {
            [one] => as_bytes(one)?,
            many => {
                let mut buf = BytesMut::new();
                for item in many {
                    let b = item.cast::<PyBytes>().map_err(|_| {
                        PyTypeError::new_err("the response body must be an iterable of bytes")
                    })?;
                    buf.extend_from_slice(b.as_bytes());
                }
                buf.freeze()
            }
        };
        response::send_chunk(py, state, data)?;
        return Ok(());
    }
    for item in result.try_iter()? {
        let data = as_bytes(&item?)?;
        if response::send_chunk(py, state, data)? == Sent::ClientGone {
            break;
        }
        if state.lock_py_attached(py).recover().client_gone() {
            break;
        }
    }
    Ok(())
}

/// The traceback goes to the error log; the client only ever sees a plain 500.
fn report(py: Python<'_>, env: &RequestEnv, e: &PyErr) {
    tracing::error!(
        "error in the application for {} {}",
        env.method,
        env.raw_uri
    );
    e.display(py);
}
