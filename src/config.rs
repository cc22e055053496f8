//! One `Config` for a server: plain data, validated once at start so that a bad value is a
//! clear message naming the option instead of a failure deep inside a request.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{ConfigError, invalid};

#[derive(Debug, Clone)]
pub struct Config {
    /// Every address to listen on (IPv4 and IPv6).
    pub binds: Vec<SocketAddr>,
    /// Unix socket paths to create and listen on.
    pub unix_binds: Vec<std::path::PathBuf>,
    /// Python threads kept alive even when idle.
    pub min_threads: usize,
    /// Upper bound on Python threads, so on requests running the app at once.
    pub max_threads: usize,
    /// Requests that may wait for a thread; past this a request gets 503 at once.
    pub queue: usize,
    /// Mount point of the app (`SCRIPT_NAME`); empty for the site root.
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
    pub head_limits: crate::http::checks::HeadLimits,
    /// Most header fields in a request; past it, 431 (hyper counts them).
    pub max_fields: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A path answered from Rust with the server's health (200, or 503 while draining).
    pub health_path: Option<String>,
    /// Seconds sent in `Retry-After` with a 503.
    pub retry_after: u32,
    /// Static and media roots served from Rust.
    pub mounts: Vec<crate::statics::Mount>,
    /// `Cache-Control: max-age` for static files whose names carry no content hash.
    pub static_max_age: u32,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are believed.
    pub trusted: crate::http::forwarded::TrustList,
    /// Forward to app servers instead of running an app (the proxy front).
    pub proxy: Option<crate::proxy::ProxyConfig>,
    /// Path prefixes forwarded to their own upstreams, before the app or `proxy` is asked.
    pub routes: Vec<crate::proxy::routes::RouteConfig>,
    /// Serve HTTPS with this certificate chain and key.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Already-listening sockets handed over by a parent process (workers share them).
    pub listen_fds: Vec<i32>,
    pub access_log: Option<crate::access_log::LogConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            binds: vec![SocketAddr::from(([127, 0, 0, 1], 8000))],
            unix_binds: Vec::new(),
            min_threads: 1,
            max_threads: 20,
            queue: 1024,
            root_path: String::new(),
            max_body: 1 << 30,
            body_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(75),
            request_timeout: None,
            io_threads: 2,
            max_head: 64 * 1024,
            head_limits: crate::http::checks::HeadLimits::default(),
            max_fields: 100,
            max_connections: 1000,
            health_path: None,
            retry_after: 1,
            mounts: Vec::new(),
            static_max_age: 3600,
            trusted: crate::http::forwarded::TrustList::default(),
            proxy: None,
            routes: Vec::new(),
            tls: None,
            listen_fds: Vec::new(),
            access_log: None,
        }
    }
}

impl Config {
    /// Checks every option and normalises `root_path` (no trailing slash).
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.binds.is_empty() && self.unix_binds.is_empty() && self.listen_fds.is_empty() {
            return Err(invalid("bind", "at least one address is needed"));
        }
        if self.max_threads == 0 {
            return Err(invalid("threads", "must be at least 1"));
        }
        if self.max_threads > 1024 {
            return Err(invalid("threads", "must be at most 1024"));
        }
        if self.min_threads > self.max_threads {
            return Err(invalid(
                "min_threads",
                format!(
                    "{} is more than threads ({})",
                    self.min_threads, self.max_threads
                ),
            ));
        }
        if self.io_threads == 0 || self.io_threads > 64 {
            return Err(invalid("io_threads", "must be between 1 and 64"));
        }
        if self.max_head < 1024 {
            return Err(invalid("max_head", "must be at least 1024 bytes"));
        }
        let root = self.root_path.trim_end_matches('/');
        if !root.is_empty() && !root.starts_with('/') {
            return Err(invalid(
                "root_path",
                format!("{:?} must start with '/'", self.root_path),
            ));
        }
        if root.contains(['?', '#', '%']) || root.contains("//") {
            return Err(invalid(
                "root_path",
                format!("{:?} must be a plain path", self.root_path),
            ));
        }
        if let Some(p) = &self.proxy
            && p.upstreams.is_empty()
        {
            return Err(invalid("upstream", "at least one upstream is needed"));
        }
        self.root_path = root.to_string();
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn root_path_is_normalised() {
        let c = Config {
            root_path: "/app/".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap().root_path, "/app");
        let c = Config {
            root_path: "/".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap().root_path, "");
    }

    #[test]
    fn bad_values_name_the_option() {
        let c = Config {
            root_path: "app".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("root_path"));
        let c = Config {
            min_threads: 5,
            max_threads: 2,
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("min_threads")
        );
        let c = Config {
            max_threads: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("threads"));
    }
}
