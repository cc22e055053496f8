//! `request_timeout`: a request still in the app past its deadline is answered for (504 if
//! nothing was sent, a cut connection otherwise), its thread's Python stack goes to the error
//! log with the request line, and the thread is counted as stuck: it cannot be stopped safely,
//! so it no longer takes a place in the pool's limit and another thread works instead.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::pool::{JobKey, StuckMarker};

/// Where a request runs, told by its pool thread when the app is called.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// `threading.get_ident()` of the thread: the key of `sys._current_frames()`.
    pub py_thread: u64,
    pub job: Option<JobKey>,
}

impl Started {
    /// Called on the pool thread that runs the request.
    pub fn here() -> Started {
        // SAFETY: pthread_self has no preconditions; CPython's thread ident is this value.
        let me = unsafe { libc::pthread_self() };
        Started {
            py_thread: me as u64,
            job: crate::pool::current_job(),
        }
    }
}

/// What the deadline's report says about a request.
pub struct Overdue {
    pub request_line: String,
    pub after: Duration,
    pub started: Started,
    pub pool: StuckMarker,
}

impl Overdue {
    /// Marks the request's job stuck, and logs where its thread is, off the network threads
    /// (reading the stack needs the GIL, which the stuck thread may be holding for a while).
    pub fn report(self, answered: &'static str) {
        let Overdue {
            request_line,
            after,
            started,
            pool,
        } = self;
        let stuck = started.job.is_some_and(|job| pool.mark_stuck(job));
        if !stuck {
            // It ended just now: nothing is stuck and its stack is gone.
            return;
        }
        let report = move || {
            let stack = Python::attach(|py| stack_of(py, started.py_thread))
                .unwrap_or_else(|e| format!("(its stack could not be read: {e})"));
            tracing::error!(
                "request timed out after {} s, {answered}: {request_line}; its thread is \
                 counted as stuck, and is at:\n{}",
                after.as_secs_f64(),
                stack.trim_end()
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(report)),
            Err(_) => report(),
        }
    }
}

/// The Python stack of one thread, innermost call last, as `traceback` prints it.
fn stack_of(py: Python<'_>, thread: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let frames = frames.cast::<PyDict>()?;
    let Some(frame) = frames.get_item(thread)? else {
        return Ok("(the thread has left the app)".to_string());
    };
    let lines = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?;
    let text: Vec<String> = lines.extract()?;
    Ok(text.concat())
}
