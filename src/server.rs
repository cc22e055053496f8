//! Bind, accept, serve connections, and stop: the network side of a server, on its own tokio
//! runtime so it runs beside whatever the host process does (a CLI, or a game server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::config::Config;
use crate::pool::{Pool, PoolLimits};
use crate::router;
use crate::statics::Statics;
use crate::wsgi::{ConnInfo, WsgiApp};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the network threads: {0}")]
    Runtime(std::io::Error),
}

/// What every connection and request shares.
pub struct Shared {
    pub config: Config,
    pub statics: Statics,
    pub pool: Pool,
    pub app: Arc<WsgiApp>,
}

pub struct Server {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Resolves when every accept loop has handed its connections to `graceful`.
    acceptors: Vec<tokio::task::JoinHandle<GracefulShutdown>>,
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // One socket per family keeps `--bind [::]:80 --bind 0.0.0.0:80` from colliding.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Server {
    pub fn start(config: Config, app: WsgiApp) -> Result<Server, ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads)
            .thread_name("bartizan-io")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let mut std_listeners = Vec::new();
        for addr in &config.binds {
            let l = listen(*addr).map_err(|source| ServerError::Bind {
                addr: *addr,
                source,
            })?;
            std_listeners.push(l);
        }
        let pool = Pool::new(PoolLimits {
            min_threads: config.min_threads,
            max_threads: config.max_threads,
            queue: config.queue,
        });
        let statics = Statics::new(config.mounts.clone(), config.static_max_age);
        let shared = Arc::new(Shared {
            statics,
            config,
            pool,
            app: Arc::new(app),
        });
        let (shutdown, _) = watch::channel(false);
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        for l in std_listeners {
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(l).map_err(ServerError::Runtime)?;
            let local = listener.local_addr().map_err(ServerError::Runtime)?;
            addrs.push(local);
            acceptors.push(runtime.spawn(accept_loop(
                listener,
                local,
                Arc::clone(&shared),
                shutdown.subscribe(),
            )));
        }
        tracing::debug!(?addrs, "listening");
        Ok(Server {
            runtime: Some(runtime),
            shared,
            addrs,
            shutdown,
            acceptors,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
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
    pub fn stop(&mut self, timeout: Option<Duration>) -> usize {
        let Some(runtime) = self.runtime.take() else {
            return 0;
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let _ = self.shutdown.send(true);
        let acceptors = std::mem::take(&mut self.acceptors);
        let finished = runtime.block_on(async move {
            let all = async {
                for a in acceptors {
                    if let Ok(graceful) = a.await {
                        graceful.shutdown().await;
                    }
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
        cut
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _ = self.shutdown.send(true);
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .keep_alive(true)
        .title_case_headers(true)
        .max_buf_size(shared.config.max_head.max(8192));
    loop {
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
        let _ = stream.set_nodelay(true);
        let conn_info = ConnInfo {
            peer,
            local,
            scheme: "http",
        };
        let shared = Arc::clone(&shared);
        let svc = service_fn(move |req| router::route(req, Arc::clone(&shared), conn_info));
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    graceful
}
