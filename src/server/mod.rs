//! Bind, accept, serve connections, and stop: the network side of a server, on its own tokio
//! runtime so it runs beside whatever the host process does (a CLI, or a game server).

mod coarse_clock;
mod connection;
pub mod listeners;
mod pipeline;
mod redirect;
mod watched_io;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::error::{self, StartError};
use crate::metrics::Metrics;
use crate::pool::{Contexts, Pool, PoolLimits, ThreadWrap};
use crate::proxy::Proxy;
use crate::proxy::routes::Routes;

use crate::http::conn::ConnInfo;
use crate::statics::Statics;
use crate::tls::state::StateDir;
use crate::tls::{self, Certificates, TlsAcceptor};
use crate::wsgi::WsgiApp;
use connection::{Accepted, Builders, ConnWatch};
use listeners::{Bound, Listener, Stream};
use pyo3::Python;
use watched_io::Sweep;

/// Who answers requests that no static mount takes.
pub enum Handler {
    Wsgi(Arc<WsgiApp>),
    Proxy(Proxy),
}

/// What every connection and request shares.
pub struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    pub access_log: Option<Arc<AccessLog>>,
    /// Set when this process hands over to a newer one (reload): connections are closed
    /// after their next response rather than while idle.
    pub retiring: AtomicBool,
    /// Set when the server stops (a reload, a recycle or a shutdown): its health path says so.
    pub draining: AtomicBool,
    pub statics: Statics,
    pub routes: Routes,
    /// Every connection's waits, swept for those that ran out.
    pub sweep: Arc<Sweep>,
    pub pool: Pool,
    pub handler: Handler,
    /// The certificate HTTPS serves, when it does.
    pub certificates: Option<Arc<Certificates>>,
    /// Where a CA's http-01 checks find their answers, with ACME.
    pub acme_state: Option<Arc<StateDir>>,
    /// `Strict-Transport-Security` for HTTPS answers, when asked for.
    pub hsts: Option<http::HeaderValue>,
    /// The port HTTPS is served on, for the redirect listener's URLs.
    pub https_port: Option<u16>,
}

pub struct Server {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    bound: Vec<Bound>,
    /// Unix socket files this server made, removed when it stops.
    socket_files: Vec<PathBuf>,
    shutdown: watch::Sender<bool>,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
    /// Every connection task holds a clone; `recv` gives `None` once the last one ends.
    open_conns: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

/// The pool a server's requests run in: for an app, its threads hold a Python thread state
/// for life and take the GIL per streak of requests; a proxy runs none.
fn app_pool(handler: &Handler, config: &Config) -> Pool {
    let contexts = match handler {
        Handler::Wsgi(_) => {
            let holding_the_gil: ThreadWrap =
                Arc::new(|run: &mut (dyn FnMut() + Send)| Python::attach(|_| run()));
            Contexts {
                // Attach once for the thread's life and run detached: each request then
                // re-attaches to the same thread state instead of creating one.
                thread: Some(Arc::new(|run: &mut (dyn FnMut() + Send)| {
                    Python::attach(|py| py.detach(run));
                })),
                busy: Some(Arc::clone(&holding_the_gil)),
                gil: Some(holding_the_gil),
            }
        }
        Handler::Proxy(_) => Contexts::default(),
    };
    Pool::with_contexts(
        PoolLimits {
            // A proxy never runs Python: no thread until (never) asked for.
            min_threads: match handler {
                Handler::Wsgi(_) => config.min_threads,
                Handler::Proxy(_) => 0,
            },
            max_threads: config.max_threads,
            queue: config.queue,
        },
        contexts,
    )
}

impl Server {
    /// Serves `app`, or forwards to upstreams when the config has a proxy section.
    pub fn start(config: Config, app: Option<WsgiApp>) -> Result<Server, StartError> {
        let handler = match (&config.proxy, app) {
            (Some(p), _) => Handler::Proxy(Proxy::new(p.clone())),
            (None, Some(app)) => Handler::Wsgi(Arc::new(app)),
            (None, None) => {
                return Err(error::invalid("upstreams", "an app or upstreams are needed").into());
            }
        };
        let acme = !config.acme.names.is_empty();
        let acme_state = match (&config.state_dir, acme) {
            (Some(dir), true) => Some(Arc::new(StateDir::new(dir.clone()))),
            _ => None,
        };
        let certificates =
            (acme || config.tls.is_some()).then(|| Arc::new(Certificates::new(acme_state.clone())));
        if let (Some(certs), Some(files)) = (&certificates, &config.tls) {
            certs.load_files(files)?;
        }
        let tls = certificates
            .as_ref()
            .map(|certs| tls::acceptor(Arc::clone(certs), acme));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads)
            .thread_name("bartizan-io")
            .enable_all()
            .build()
            .map_err(|source| StartError::Threads { source })?;
        let (std_listeners, socket_files) = listeners::open(&config)?;
        let redirect_listeners = listeners::open_shared(&config.redirect_binds)?;
        let https_port = std_listeners.iter().find_map(listeners::StdListener::port);
        let pool = app_pool(&handler, &config);
        let statics = Statics::new(config.mounts.clone(), config.static_max_age)?;
        let access_log = match &config.access_log {
            Some(c) => Some(Arc::new(AccessLog::open(c)?)),
            None => None,
        };
        let shared = Arc::new(Shared {
            metrics: Metrics::default(),
            access_log,
            retiring: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            statics,
            routes: Routes::new(&config.routes),
            sweep: Arc::default(),
            hsts: (config.hsts > 0).then(|| {
                http::HeaderValue::from_str(&format!("max-age={}", config.hsts))
                    .expect("digits are a header value")
            }),
            config,
            pool,
            handler,
            certificates,
            acme_state,
            https_port,
        });
        {
            let _guard = runtime.enter();
            if let Handler::Proxy(proxy) = &shared.handler {
                proxy.start_health_checks();
            }
            runtime.spawn(Arc::clone(&shared.sweep).run());
            if let (Some(dir), Some(certs)) = (&shared.acme_state, &shared.certificates) {
                let keep = tls::acme::keep(
                    shared.config.acme.clone(),
                    Arc::clone(dir),
                    Arc::clone(certs),
                );
                runtime.spawn(keep);
            }
        }
        let (shutdown, _) = watch::channel(false);
        let mut bound = Vec::new();
        let mut acceptors = Vec::new();
        let (conn_tx, conn_rx) = mpsc::channel(1);
        for l in std_listeners {
            let _guard = runtime.enter();
            let (listener, at) =
                Listener::from_std(l).map_err(|source| StartError::Threads { source })?;
            let local = match &at {
                Bound::Tcp(addr) => *addr,
                Bound::Unix(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
            };
            bound.push(at);
            acceptors.push(runtime.spawn(accept_loop(
                listener,
                local,
                Arc::clone(&shared),
                tls.clone(),
                shutdown.subscribe(),
                conn_tx.clone(),
            )));
        }
        for l in redirect_listeners {
            let _guard = runtime.enter();
            let (listener, _) =
                Listener::from_std(l).map_err(|source| StartError::Threads { source })?;
            acceptors.push(runtime.spawn(redirect::accept_loop(
                listener,
                Arc::clone(&shared),
                shutdown.subscribe(),
                conn_tx.clone(),
            )));
        }
        tracing::debug!(?bound, "listening");
        Ok(Server {
            runtime: Some(runtime),
            shared,
            bound,
            socket_files,
            shutdown,
            acceptors,
            open_conns: Some((conn_tx, conn_rx)),
        })
    }

    /// Where this server listens.
    pub fn bound(&self) -> &[Bound] {
        &self.bound
    }

    fn remove_socket_files(&mut self) {
        for path in self.socket_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Reads the certificate files again, for the handshakes from now on.
    pub fn reload_certificates(&self) -> Result<(), StartError> {
        match (&self.shared.certificates, &self.shared.config.tls) {
            (Some(certs), Some(files)) => certs.load_files(files),
            _ => Ok(()),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn is_running(&self) -> bool {
        self.runtime.is_some()
    }

    /// Stops listening, closes idle connections, lets in-flight requests finish for up to
    /// `timeout`, then stops the threads. Returns how many requests were cut off.
    /// Must be called without the GIL: the requests being finished need it.
    /// With `retire`, connections are handed over gently (reload): each is closed after its
    /// next response, or after a short idle grace, so no client sees its idle connection cut
    /// just as it sends a request.
    pub fn stop(&mut self, timeout: Option<Duration>, retire: bool) -> usize {
        let Some(runtime) = self.runtime.take() else {
            return 0;
        };
        self.shared.retiring.store(retire, Ordering::Relaxed);
        self.shared.draining.store(true, Ordering::Relaxed);
        let deadline = timeout.map(|t| Instant::now() + t);
        let _ = self.shutdown.send(true);
        let acceptors = std::mem::take(&mut self.acceptors);
        let open_conns = self.open_conns.take();
        let finished = runtime.block_on(async move {
            let all = async {
                for a in acceptors {
                    let _ = a.await;
                }
                if let Some((tx, mut rx)) = open_conns {
                    drop(tx);
                    // Connections close as their in-flight request ends (idle ones at once).
                    let _ = rx.recv().await;
                }
            };
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), all).await.is_ok(),
                None => {
                    all.await;
                    true
                }
            }
        });
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let cut = self
            .shared
            .pool
            .stop(if finished { left } else { Some(Duration::ZERO) });
        runtime.shutdown_timeout(Duration::from_millis(100));
        self.remove_socket_files();
        cut
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _ = self.shutdown.send(true);
            rt.shutdown_background();
        }
        self.remove_socket_files();
    }
}

async fn accept_loop(
    listener: Listener,
    local: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    open_conns: mpsc::Sender<()>,
) {
    let builders = Builders::new(&shared);
    // Past the limit, the next connection waits in the kernel's backlog until one ends.
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.config.max_connections));
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let conn = Accepted {
            shared: Arc::clone(&shared),
            info: ConnInfo::new(peer, local, scheme),
            builders: builders.clone(),
            watch: ConnWatch {
                shutdown: shutdown.clone(),
                _open: open_conns.clone(),
            },
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match stream {
                Stream::Tcp(s) => connection::serve(s, tls, conn).await,
                Stream::Unix(s) => connection::serve(s, tls, conn).await,
            }
        });
    }
}
