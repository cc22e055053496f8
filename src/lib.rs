//! `bartizan._bartizan`: the Python-visible server. Python hands over the app and the options;
//! everything else (sockets, HTTP, the pool) lives in Rust and runs on background threads, so
//! `start()` returns at once and the calling process keeps running its own Python.

mod access_log;
mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod http;
mod metrics;
mod pool;
mod proxy;
mod server;
mod static_cache;
mod statics;
mod tls;
mod wsgi;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, Once};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use config::Config;
use error::StartError;
use server::Server;

/// Parses "host:port", "[v6]:port" or a resolvable "name:port".
fn parse_bind(s: &str) -> Result<Vec<SocketAddr>, StartError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let problem = |problem: String| StartError::Address {
        bind: s.to_string(),
        problem,
    };
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| problem(format!("cannot be used: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(problem("resolves to no address".into()));
    }
    Ok(addrs)
}

/// An upstream health path: a request target of origin form.
fn health_target(path: String) -> Result<String, StartError> {
    if path.starts_with('/') && path.parse::<::http::Uri>().is_ok() {
        Ok(path)
    } else {
        Err(error::invalid("upstream_health", "must be a path, e.g. /healthz").into())
    }
}

/// The socket path of a `unix:/path` bind.
fn unix_path(bind: &str) -> Result<Option<std::path::PathBuf>, StartError> {
    let Some(path) = bind.strip_prefix("unix:") else {
        return Ok(None);
    };
    if path.is_empty() {
        return Err(StartError::Address {
            bind: bind.to_string(),
            problem: "names no path (unix:/path/to.sock)".into(),
        });
    }
    Ok(Some(path.into()))
}

fn positive_seconds(option: &'static str, v: f64) -> Result<Duration, StartError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(error::invalid(option, "must be a positive number of seconds").into())
    }
}

fn seconds(option: &'static str, v: f64) -> Result<Duration, StartError> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(error::invalid(option, "must be a number of seconds, 0 or more").into())
    }
}

/// How every forward of one server waits and times out; its upstreams are filled in per use.
fn forwarding(
    wait: f64,
    connect_timeout: f64,
    response_timeout: f64,
    retry_after: u32,
) -> Result<proxy::ProxyConfig, StartError> {
    Ok(proxy::ProxyConfig {
        upstreams: Vec::new(),
        wait: Duration::try_from_secs_f64(wait.max(0.0))
            .map_err(|_| error::invalid("upstream_wait", "must be a number of seconds"))?,
        connect_timeout: positive_seconds("connect_timeout", connect_timeout)?,
        response_timeout: positive_seconds("response_timeout", response_timeout)?,
        retry_after,
        health: None,
    })
}

/// `(prefix, upstream)` pairs as routes; a prefix given more than once gets each upstream,
/// used round-robin.
fn route_configs(
    pairs: Vec<(String, String)>,
    timing: &proxy::ProxyConfig,
) -> Result<Vec<proxy::routes::RouteConfig>, StartError> {
    let mut routes: Vec<proxy::routes::RouteConfig> = Vec::new();
    for (prefix, upstream) in pairs {
        let Some(prefix) = proxy::routes::normalise_prefix(&prefix) else {
            let problem = format!("{prefix:?} must be a plain path under / (e.g. /ajax)");
            return Err(error::invalid("routes", problem).into());
        };
        match routes.iter_mut().find(|r| r.prefix == prefix) {
            Some(r) => r.proxy.upstreams.push(upstream),
            None => routes.push(proxy::routes::RouteConfig {
                prefix,
                proxy: proxy::ProxyConfig {
                    upstreams: vec![upstream],
                    ..timing.clone()
                },
            }),
        }
    }
    Ok(routes)
}

fn access_log_config(
    path: Option<String>,
    format: &str,
) -> Result<Option<access_log::LogConfig>, StartError> {
    let format = match format {
        "combined" => access_log::LogFormat::Combined,
        "json" => access_log::LogFormat::Json,
        other => {
            let problem = format!("{other:?} is not 'combined' or 'json'");
            return Err(error::invalid("access_log_format", problem).into());
        }
    };
    Ok(path.map(|p| access_log::LogConfig {
        path: (p != "-").then(|| p.into()),
        format,
    }))
}

fn tls_files(
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Result<Option<tls::TlsFiles>, StartError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(tls::TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(error::invalid("certfile", "goes together with keyfile").into()),
    }
}

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
struct PyServer {
    app: Option<Py<PyAny>>,
    config: Config,
    multiprocess: bool,
    running: Mutex<Option<Server>>,
}

impl PyServer {
    fn with_server<T>(&self, py: Python<'_>, f: impl FnOnce(&Server) -> T) -> PyResult<T> {
        let guard = self
            .running
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(s) => Ok(f(s)),
            None => Err(PyRuntimeError::new_err("the server is not running")),
        }
    }
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (
        app, binds, *, threads=20, min_threads=1, queue=1024, root_path=String::new(),
        max_body=1u64 << 30, body_timeout=60.0, header_timeout=60.0, keep_alive=75.0, request_timeout=0.0, io_threads=2,
        max_head=65536, limit_request_line=8190, limit_request_field_size=8190,
        limit_request_fields=100, max_connections=1000, health_path=None, retry_after=1, statics=Vec::new(), media=Vec::new(), static_max_age=3600,
        trusted_proxies=vec!["127.0.0.1".to_string(), "::1".to_string()],
        upstreams=Vec::new(), routes=Vec::new(), upstream_wait=30.0, connect_timeout=5.0, response_timeout=60.0,
        upstream_health=None, upstream_health_interval=2.0,
        certfile=None, keyfile=None, listen_fds=Vec::new(), access_log=None,
        access_log_format="combined", multiprocess=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        app: Option<Py<PyAny>>,
        binds: Vec<String>,
        threads: usize,
        min_threads: usize,
        queue: usize,
        root_path: String,
        max_body: u64,
        body_timeout: f64,
        header_timeout: f64,
        keep_alive: f64,
        request_timeout: f64,
        io_threads: usize,
        max_head: usize,
        limit_request_line: usize,
        limit_request_field_size: usize,
        limit_request_fields: usize,
        max_connections: usize,
        health_path: Option<String>,
        retry_after: u32,
        statics: Vec<(String, std::path::PathBuf)>,
        media: Vec<(String, std::path::PathBuf)>,
        static_max_age: u32,
        trusted_proxies: Vec<String>,
        upstreams: Vec<String>,
        routes: Vec<(String, String)>,
        upstream_wait: f64,
        connect_timeout: f64,
        response_timeout: f64,
        upstream_health: Option<String>,
        upstream_health_interval: f64,
        certfile: Option<std::path::PathBuf>,
        keyfile: Option<std::path::PathBuf>,
        listen_fds: Vec<i32>,
        access_log: Option<String>,
        access_log_format: &str,
        multiprocess: bool,
    ) -> PyResult<Self> {
        let mut mounts = Vec::new();
        for (untrusted, given) in [(false, &statics), (true, &media)] {
            for (prefix, dir) in given {
                mounts.push(statics::Mount::new(prefix, dir, untrusted).map_err(StartError::from)?);
            }
        }
        let mut addrs = Vec::new();
        let mut unix_binds = Vec::new();
        for b in &binds {
            match unix_path(b)? {
                Some(path) => unix_binds.push(path),
                None => addrs.extend(parse_bind(b)?),
            }
        }
        let timing = forwarding(
            upstream_wait,
            connect_timeout,
            response_timeout,
            retry_after,
        )?;
        let config = Config {
            binds: addrs,
            unix_binds,
            min_threads,
            max_threads: threads,
            queue,
            root_path,
            max_body,
            body_timeout: positive_seconds("body_timeout", body_timeout)?,
            header_timeout: positive_seconds("header_timeout", header_timeout)?,
            keep_alive: seconds("keep_alive", keep_alive)?,
            request_timeout: Some(seconds("request_timeout", request_timeout)?)
                .filter(|t| !t.is_zero()),
            io_threads,
            max_head,
            head_limits: http::checks::HeadLimits {
                request_line: limit_request_line,
                field_size: limit_request_field_size,
            },
            max_fields: limit_request_fields,
            max_connections,
            health_path,
            retry_after,
            mounts,
            static_max_age,
            trusted: http::forwarded::TrustList::parse(&trusted_proxies)
                .map_err(StartError::from)?,
            routes: route_configs(routes, &timing)?,
            proxy: (!upstreams.is_empty()).then_some(proxy::ProxyConfig {
                upstreams,
                health: match upstream_health {
                    Some(path) => Some(proxy::health::HealthCheck {
                        path: health_target(path)?,
                        interval: positive_seconds(
                            "upstream_health_interval",
                            upstream_health_interval,
                        )?,
                    }),
                    None => None,
                },
                ..timing
            }),
            listen_fds,
            access_log: access_log_config(access_log, access_log_format)?,
            tls: tls_files(certfile, keyfile)?,
        }
        .validate()
        .map_err(StartError::from)?;
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

    /// Binds and starts serving on background threads; returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        init_logging();
        let mut guard = self
            .running
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
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
        let server = self
            .running
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(match server {
            Some(mut s) => py.detach(move || s.stop(timeout, retire)),
            None => 0,
        })
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
        let guard = self
            .running
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
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
            .unwrap_or_else(|e| e.into_inner())
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
fn listen(bind: &str) -> PyResult<Vec<i32>> {
    use std::os::fd::IntoRawFd;
    if let Some(path) = unix_path(bind)? {
        let listener =
            server::listeners::listen_unix(&path).map_err(|source| StartError::Listen {
                addr: bind.to_string(),
                source,
            })?;
        return Ok(vec![listener.into_raw_fd()]);
    }
    let mut fds = Vec::new();
    for addr in parse_bind(bind)? {
        let listener =
            server::listeners::listen_tcp(addr).map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        fds.push(listener.into_raw_fd());
    }
    Ok(fds)
}

#[pymodule]
fn _bartizan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(listen, m)?)?;
    m.add_class::<PyServer>()?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add_class::<wsgi::input::WsgiInput>()?;
    m.add_class::<wsgi::response::StartResponse>()?;
    m.add_class::<wsgi::response::WriteCallable>()?;
    Ok(())
}

/// Buffers made on a network thread are often freed on a pool thread and the other way
/// round; mimalloc's per-thread heaps take such frees without the arena lock contention
/// and consolidation glibc's malloc showed in profiles of `bench/run hello`. Built without
/// transparent huge pages, which made a streaming proxy's RSS grow in 2 MB steps, and with
/// dynamic TLS, as a library loaded by `dlopen` needs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
