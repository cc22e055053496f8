//! One `Config` for a server, made from the options table's values (`options.py`), which
//! names, defaults and checks every option. `Options` is that table's mapping as Rust reads
//! it: one field per option, named as in the table, none with a default of its own. Making a
//! `Config` of it only turns values into the types the server runs on; what Python cannot
//! judge (an address that does not resolve, a directory that cannot be opened, a CIDR the
//! network types refuse) is the one thing checked here. `Config::options` reads the values
//! back, so a test can prove that every option of the table arrives.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use pyo3::{FromPyObject, IntoPyObject};

use crate::access_log::{LogConfig, LogFormat};
use crate::error::{StartError, invalid};
use crate::http::checks::HeadLimits;
use crate::http::forwarded::TrustList;
use crate::proxy::health::HealthCheck;
use crate::proxy::routes::RouteConfig;
use crate::proxy::{ProxyConfig, Timing};
use crate::statics::Mount;
use crate::tls::TlsFiles;
use crate::tls::acme::AcmeSettings;

/// The options table's values for one server, checked by `options.py`; `bind` is the
/// final list of places to listen (made from `host` and `port` when not given).
#[derive(Debug, Clone, PartialEq, FromPyObject, IntoPyObject)]
#[pyo3(from_item_all)]
pub struct Options {
    pub bind: Vec<String>,
    pub threads: usize,
    pub min_threads: usize,
    pub queue: usize,
    pub root_path: String,
    pub retry_after: u32,
    pub max_body: u64,
    pub body_timeout: f64,
    pub header_timeout: f64,
    pub keep_alive: f64,
    pub request_timeout: f64,
    pub max_head: usize,
    pub limit_request_line: usize,
    pub limit_request_field_size: usize,
    pub limit_request_fields: usize,
    pub health_path: Option<String>,
    pub max_connections: usize,
    pub http2_max_streams: u32,
    pub io_threads: usize,
    #[pyo3(item("static"))]
    pub statics: Vec<(String, PathBuf)>,
    pub media: Vec<(String, PathBuf)>,
    pub static_max_age: u32,
    pub trusted_proxies: Vec<String>,
    pub upstreams: Vec<String>,
    pub upstream_health: Option<String>,
    pub upstream_health_interval: f64,
    pub upstream_wait: f64,
    pub routes: Vec<(String, String)>,
    pub connect_timeout: f64,
    pub response_timeout: f64,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub https: Vec<String>,
    pub acme_directory: String,
    pub acme_ca: Option<PathBuf>,
    pub acme_email: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub acme_renew_at: f64,
    pub http_redirect: Vec<String>,
    pub hsts: u64,
    pub access_log: Option<String>,
    pub access_log_format: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Every address to listen on (IPv4 and IPv6), as given and as resolved.
    pub bind: Vec<String>,
    pub binds: Vec<SocketAddr>,
    /// Unix socket paths to create and listen on.
    pub unix_binds: Vec<PathBuf>,
    /// Python threads kept alive even when idle.
    pub min_threads: usize,
    /// Upper bound on Python threads, so on requests running the app at once.
    pub max_threads: usize,
    /// Requests that may wait for a thread; past this a request gets 503 at once.
    pub queue: usize,
    /// Mount point of the app (`SCRIPT_NAME`); empty for the site root, never a trailing `/`.
    pub root_path: String,
    /// Largest request body accepted; a bigger `Content-Length` gets 413.
    pub max_body: u64,
    /// How long a body read may wait for the client before the app sees an error.
    pub body_timeout: Duration,
    /// How long a request head may take from its first byte, and a new connection may wait
    /// for its first request.
    pub header_timeout: Duration,
    /// How long an idle connection waits for its next request; zero turns keep-alive off.
    pub keep_alive: Duration,
    /// How long the app may run one request before it is answered for and counted stuck.
    pub request_timeout: Option<Duration>,
    /// Threads running the network side (accept, HTTP, files).
    pub io_threads: usize,
    /// Largest request head (request line + headers) in bytes; past it, 431.
    pub max_head: usize,
    /// Limits on the request line and each header field.
    pub head_limits: HeadLimits,
    /// Most header fields in a request; past it, 431 (hyper counts them).
    pub max_fields: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_streams: u32,
    /// A path answered from Rust with the server's health (200, or 503 while draining).
    pub health_path: Option<String>,
    /// Seconds sent in `Retry-After` with a 503.
    pub retry_after: u32,
    /// Static and media roots served from Rust.
    pub mounts: Vec<Mount>,
    /// `Cache-Control: max-age` for static files whose names carry no content hash.
    pub static_max_age: u32,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are believed.
    pub trusted: TrustList,
    /// How every forward (the proxy front, each route) waits.
    pub forwarding: Timing,
    /// Forward to app servers instead of running an app (the proxy front).
    pub proxy: Option<ProxyConfig>,
    /// Path prefixes forwarded to their own upstreams, before the app or `proxy` is asked.
    pub routes: Vec<RouteConfig>,
    /// Serve HTTPS with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// Serve HTTPS with a certificate over ACME for `acme.names`, when there are any.
    pub acme: AcmeSettings,
    /// Where the ACME account and certificates are kept.
    pub state_dir: Option<PathBuf>,
    /// Plain listeners that answer http-01 checks and redirect to HTTPS, as given and as
    /// resolved.
    pub http_redirect: Vec<String>,
    pub redirect_binds: Vec<SocketAddr>,
    /// `Strict-Transport-Security: max-age` on HTTPS answers; 0 for none.
    pub hsts: u64,
    /// Already-listening sockets handed over by a parent process (workers share them).
    pub listen_fds: Vec<i32>,
    pub access_log: Option<LogConfig>,
    pub access_log_format: LogFormat,
}

impl Config {
    pub fn from_options(o: Options, listen_fds: Vec<i32>) -> Result<Config, StartError> {
        let mut mounts = Vec::new();
        for (untrusted, given) in [(false, &o.statics), (true, &o.media)] {
            for (prefix, dir) in given {
                mounts.push(Mount::new(prefix, dir, untrusted)?);
            }
        }
        let mut binds = Vec::new();
        let mut unix_binds = Vec::new();
        for b in &o.bind {
            match unix_path(b)? {
                Some(path) => unix_binds.push(path),
                None => binds.extend(resolve_bind(b)?),
            }
        }
        let forwarding = Timing {
            wait: duration("upstream_wait", o.upstream_wait)?,
            connect_timeout: duration("connect_timeout", o.connect_timeout)?,
            response_timeout: duration("response_timeout", o.response_timeout)?,
            retry_after: o.retry_after,
        };
        let health = match o.upstream_health {
            Some(path) => Some(HealthCheck {
                path,
                interval: duration("upstream_health_interval", o.upstream_health_interval)?,
            }),
            None => None,
        };
        let mut redirect_binds = Vec::new();
        for b in &o.http_redirect {
            redirect_binds.extend(resolve_bind(b)?);
        }
        let acme = AcmeSettings {
            names: o.https,
            directory: o.acme_directory,
            ca: o.acme_ca,
            email: o.acme_email,
            renew_at: o.acme_renew_at,
            http_listener: !o.http_redirect.is_empty(),
        };
        let access_log_format = match o.access_log_format.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Combined,
        };
        Ok(Config {
            bind: o.bind,
            binds,
            unix_binds,
            min_threads: o.min_threads,
            max_threads: o.threads,
            queue: o.queue,
            root_path: o.root_path.trim_end_matches('/').to_string(),
            max_body: o.max_body,
            body_timeout: duration("body_timeout", o.body_timeout)?,
            header_timeout: duration("header_timeout", o.header_timeout)?,
            keep_alive: duration("keep_alive", o.keep_alive)?,
            request_timeout: Some(duration("request_timeout", o.request_timeout)?)
                .filter(|t| !t.is_zero()),
            io_threads: o.io_threads,
            max_head: o.max_head,
            head_limits: HeadLimits {
                request_line: o.limit_request_line,
                field_size: o.limit_request_field_size,
            },
            max_fields: o.limit_request_fields,
            max_connections: o.max_connections,
            http2_max_streams: o.http2_max_streams,
            health_path: o.health_path,
            retry_after: o.retry_after,
            mounts,
            static_max_age: o.static_max_age,
            trusted: TrustList::parse(&o.trusted_proxies)?,
            forwarding,
            routes: route_configs(o.routes, forwarding)?,
            proxy: (!o.upstreams.is_empty()).then_some(ProxyConfig {
                upstreams: o.upstreams,
                timing: forwarding,
                health,
            }),
            tls: match (o.certfile, o.keyfile) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            acme,
            state_dir: o.state_dir,
            http_redirect: o.http_redirect,
            redirect_binds,
            hsts: o.hsts,
            listen_fds,
            access_log: o.access_log.map(|p| LogConfig {
                path: (p != "-").then(|| p.into()),
                format: access_log_format,
            }),
            access_log_format,
        })
    }

    /// The options this config was made from, as the table names them.
    pub fn options(&self) -> Options {
        let mounts = |untrusted: bool| {
            self.mounts
                .iter()
                .filter(|m| m.untrusted == untrusted)
                .map(|m| (m.prefix.clone(), m.root.clone()))
                .collect()
        };
        let health = self.proxy.as_ref().and_then(|p| p.health.as_ref());
        let routes = self
            .routes
            .iter()
            .flat_map(|r| {
                r.proxy
                    .upstreams
                    .iter()
                    .map(|u| (r.prefix.clone(), u.clone()))
            })
            .collect();
        Options {
            bind: self.bind.clone(),
            threads: self.max_threads,
            min_threads: self.min_threads,
            queue: self.queue,
            root_path: self.root_path.clone(),
            retry_after: self.retry_after,
            max_body: self.max_body,
            body_timeout: self.body_timeout.as_secs_f64(),
            header_timeout: self.header_timeout.as_secs_f64(),
            keep_alive: self.keep_alive.as_secs_f64(),
            request_timeout: self.request_timeout.unwrap_or_default().as_secs_f64(),
            max_head: self.max_head,
            limit_request_line: self.head_limits.request_line,
            limit_request_field_size: self.head_limits.field_size,
            limit_request_fields: self.max_fields,
            health_path: self.health_path.clone(),
            max_connections: self.max_connections,
            http2_max_streams: self.http2_max_streams,
            io_threads: self.io_threads,
            statics: mounts(false),
            media: mounts(true),
            static_max_age: self.static_max_age,
            trusted_proxies: self.trusted.networks(),
            upstreams: self
                .proxy
                .as_ref()
                .map(|p| p.upstreams.clone())
                .unwrap_or_default(),
            upstream_health: health.map(|h| h.path.clone()),
            upstream_health_interval: health.map_or(0.0, |h| h.interval.as_secs_f64()),
            upstream_wait: self.forwarding.wait.as_secs_f64(),
            routes,
            connect_timeout: self.forwarding.connect_timeout.as_secs_f64(),
            response_timeout: self.forwarding.response_timeout.as_secs_f64(),
            certfile: self.tls.as_ref().map(|t| t.cert.clone()),
            keyfile: self.tls.as_ref().map(|t| t.key.clone()),
            https: self.acme.names.clone(),
            acme_directory: self.acme.directory.clone(),
            acme_ca: self.acme.ca.clone(),
            acme_email: self.acme.email.clone(),
            state_dir: self.state_dir.clone(),
            acme_renew_at: self.acme.renew_at,
            http_redirect: self.http_redirect.clone(),
            hsts: self.hsts,
            access_log: self.access_log.as_ref().map(|l| match &l.path {
                Some(p) => p.to_string_lossy().into_owned(),
                None => "-".into(),
            }),
            access_log_format: match self.access_log_format {
                LogFormat::Json => "json",
                LogFormat::Combined => "combined",
            }
            .into(),
        }
    }
}

/// Seconds as a `Duration`; the table has already refused negative and endless ones, so an
/// error here means the extension was called around it.
fn duration(option: &'static str, seconds: f64) -> Result<Duration, StartError> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| invalid(option, "must be a finite number of seconds, not negative").into())
}

/// Parses "host:port", "[v6]:port" or a resolvable "name:port".
pub fn resolve_bind(s: &str) -> Result<Vec<SocketAddr>, StartError> {
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

/// The socket path of a `unix:/path` bind.
pub fn unix_path(bind: &str) -> Result<Option<PathBuf>, StartError> {
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

/// `(prefix, upstream)` pairs as routes; a prefix given more than once gets each upstream,
/// used round-robin.
fn route_configs(
    pairs: Vec<(String, String)>,
    timing: Timing,
) -> Result<Vec<RouteConfig>, StartError> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (prefix, upstream) in pairs {
        let Some(prefix) = crate::proxy::routes::normalise_prefix(&prefix) else {
            let problem = format!("{prefix:?} must be a plain path under / (e.g. /ajax)");
            return Err(invalid("routes", problem).into());
        };
        match routes.iter_mut().find(|r| r.prefix == prefix) {
            Some(r) => r.proxy.upstreams.push(upstream),
            None => routes.push(RouteConfig {
                prefix,
                proxy: ProxyConfig {
                    upstreams: vec![upstream],
                    timing,
                    health: None,
                },
            }),
        }
    }
    Ok(routes)
}
