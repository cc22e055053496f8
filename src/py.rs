//! The Python-visible `Server` (`bartizan.Server` wraps it) and `listen`: the options arrive
//! as the options table's one checked mapping and become a `Config` here, once.

use std::sync::{Mutex, Once};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use crate::config::{self, Config, Options};
use crate::error::{self, StartError};
use crate::server::{self, Server};
use crate::sync::Recover;
use crate::{metrics, wsgi};

fn secs(t: Option<f64>) -> PyResult<Option<Duration>> {
    t.map(|t| {
        Duration::try_from_secs_f64(t.max(0.0))
            .map_err(|_| PyValueError::new_err("timeout must be a number of seconds"))
    })
    .transpose()
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BARTIZAN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init();
    });
}

/// A WSGI server. Thread-safe: every method may be called from any Python thread.
#[pyclass(module = "bartizan._bartizan", name = "Server")]
pub struct PyServer {
    app: Option<Py<PyAny>>,
    config: Config,
    multiprocess: bool,
    running: Mutex<Option<Server>>,
}

impl PyServer {
    fn with_server<T>(&self, py: Python<'_>, f: impl FnOnce(&Server) -> T) -> PyResult<T> {
        let guard = self.running.lock_py_attached(py).recover();
        match guard.as_ref() {
            Some(s) => Ok(f(s)),
            None => Err(PyRuntimeError::new_err("the server is not running")),
        }
    }
}

#[pymethods]
impl PyServer {
    /// `options`: every option of the table that a server takes, as `options.py` checked it.
    #[new]
    #[pyo3(signature = (app, options, listen_fds=Vec::new(), multiprocess=false))]
    fn new(
        app: Option<Py<PyAny>>,
        options: Options,
        listen_fds: Vec<i32>,
        multiprocess: bool,
    ) -> PyResult<Self> {
        let config = Config::from_options(options, listen_fds)?;
        if app.is_none() && config.proxy.is_none() {
            let problem = "an app or upstreams are needed";
            return Err(StartError::from(error::invalid("upstreams", problem)).into());
        }
        Ok(PyServer {
            multiprocess,
            app,
            config,
            running: Mutex::new(None),
        })
    }

    /// The options as the server holds them.
    fn options(&self) -> Options {
        self.config.options()
    }

    /// Binds and starts serving on background threads; returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        init_logging();
        let mut guard = self.running.lock_py_attached(py).recover();
        if guard.is_some() {
            return Err(PyRuntimeError::new_err("the server is already running"));
        }
        let c = &self.config;
        let app = self
            .app
            .as_ref()
            .map(|app| wsgi::WsgiApp::new(py, app.clone_ref(py), c, self.multiprocess))
            .transpose()?;
        let config = self.config.clone();
        let server = py.detach(|| Server::start(config, app))?;
        *guard = Some(server);
        Ok(())
    }

    /// Stops listening and finishes in-flight requests for up to `timeout` seconds (None:
    /// wait for them all). Returns how many requests were still running when it gave up.
    #[pyo3(signature = (timeout=None, retire=false))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>, retire: bool) -> PyResult<usize> {
        let timeout = secs(timeout)?;
        let server = self.running.lock_py_attached(py).recover().take();
        Ok(match server {
            Some(mut s) => py.detach(move || s.stop(timeout, retire)),
            None => 0,
        })
    }

    /// Reads `certfile` and `keyfile` again: handshakes from now on get what they hold.
    fn reload_certificates(&self, py: Python<'_>) -> PyResult<()> {
        self.with_server(py, |s| s.reload_certificates())?
            .map_err(PyErr::from)
    }

    /// New WSGI requests get 503 (or, with `hold`, wait) until `unlock()`.
    #[pyo3(signature = (hold=false))]
    fn lock(&self, py: Python<'_>, hold: bool) -> PyResult<()> {
        self.with_server(py, |s| s.shared().pool.lock(hold))
    }

    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        self.with_server(py, |s| s.shared().pool.unlock())
    }

    /// WSGI requests queued or running.
    #[getter]
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_server(py, |s| s.shared().pool.pending())
    }

    /// Requests answered so far (by the app, the static roots or the proxy front).
    #[getter]
    fn answered(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_server(py, |s| s.shared().metrics.answered())
    }

    /// Requests past `request_timeout` whose threads are still in the app, and how many
    /// ever were: (now, total).
    #[getter]
    fn stuck(&self, py: Python<'_>) -> PyResult<(usize, u64)> {
        self.with_server(py, |s| {
            let stuck = s.shared().pool.stuck();
            (stuck.now, stuck.total)
        })
    }

    /// Waits for in-flight requests; returns how many still run at the deadline.
    #[pyo3(signature = (timeout=None))]
    fn drain(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        let timeout = secs(timeout)?;
        let guard = self.running.lock_py_attached(py).recover();
        let Some(server) = guard.as_ref() else {
            return Ok(0);
        };
        let shared = std::sync::Arc::clone(server.shared());
        drop(guard);
        Ok(py.detach(move || shared.pool.drain(timeout)))
    }

    /// Prometheus text for this process; `labels` like `worker="3"` go on every sample.
    #[pyo3(signature = (labels=""))]
    fn metrics_text(&self, py: Python<'_>, labels: &str) -> PyResult<String> {
        self.with_server(py, |s| {
            let sh = s.shared();
            let pool = metrics::PoolGauges {
                queued: sh.pool.queued(),
                pending: sh.pool.pending(),
                stuck: sh.pool.stuck(),
            };
            sh.metrics.render(labels, &pool)
        })
    }

    #[getter]
    fn running(&self, py: Python<'_>) -> bool {
        self.running
            .lock_py_attached(py)
            .recover()
            .as_ref()
            .is_some_and(|s| s.is_running())
    }

    /// The bound addresses as (host, port) pairs, real ports even when 0 was asked for.
    #[getter]
    fn addresses(&self, py: Python<'_>) -> PyResult<Vec<(String, u16)>> {
        self.with_server(py, |s| {
            s.bound()
                .iter()
                .filter_map(|b| match b {
                    server::listeners::Bound::Tcp(a) => Some((a.ip().to_string(), a.port())),
                    server::listeners::Bound::Unix(_) => None,
                })
                .collect()
        })
    }

    /// The unix socket paths this server listens on.
    #[getter]
    fn unix_paths(&self, py: Python<'_>) -> PyResult<Vec<std::path::PathBuf>> {
        self.with_server(py, |s| {
            s.bound()
                .iter()
                .filter_map(|b| match b {
                    server::listeners::Bound::Unix(p) => Some(p.clone()),
                    server::listeners::Bound::Tcp(_) => None,
                })
                .collect()
        })
    }
}

/// Opens the listening sockets for `bind` ("host:port"; a name may give several) as a server
/// would, and returns their file descriptors: the supervisor opens them once and hands them
/// to every worker.
#[pyfunction]
pub fn listen(bind: &str) -> PyResult<Vec<i32>> {
    use std::os::fd::IntoRawFd;
    if let Some(path) = config::unix_path(bind)? {
        let listener =
            server::listeners::listen_unix(&path).map_err(|source| StartError::Listen {
                addr: bind.to_string(),
                source,
            })?;
        return Ok(vec![listener.into_raw_fd()]);
    }
    let mut fds = Vec::new();
    for addr in config::resolve_bind(bind)? {
        let listener =
            server::listeners::listen_tcp(addr).map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        fds.push(listener.into_raw_fd());
    }
    Ok(fds)
}
