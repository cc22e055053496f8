//! What keeps a server from starting, each naming what failed (the option, the path, the file
//! descriptor or the address), and its one conversion into a Python exception: a value the
//! caller can fix is a `ValueError`, a refusal by the operating system an `OSError` carrying
//! its errno (so a missing access-log directory is a `FileNotFoundError`).

use std::io;
use std::path::PathBuf;

use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyValueError};

use crate::http::forwarded::TrustError;

/// A bad value of one option, named as the embedding API spells it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("option {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

/// A static mount that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    #[error("option static: URL prefix {0:?} must start with '/' and name a path")]
    Prefix(String),
    #[error("option static: {dir:?} for {prefix} is not a readable directory")]
    Root { prefix: String, dir: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("option bind: {bind:?} {problem}")]
    Address { bind: String, problem: String },
    #[error("option {option}: {path:?}: {problem}")]
    Tls {
        option: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("cannot listen on {addr}: {}", os_text(.source))]
    Listen { addr: String, source: io::Error },
    #[error("cannot serve on file descriptor {fd}: {}", os_text(.source))]
    Fd { fd: i32, source: io::Error },
    #[error("cannot open the access log {path:?}: {}", os_text(.source))]
    AccessLog { path: PathBuf, source: io::Error },
    #[error("cannot open the static root {path:?}: {}", os_text(.source))]
    StaticRoot { path: PathBuf, source: io::Error },
    #[error("cannot start the server's threads: {}", os_text(.source))]
    Threads { source: io::Error },
}

impl StartError {
    fn os_error(&self) -> Option<&io::Error> {
        match self {
            StartError::Listen { source, .. }
            | StartError::Fd { source, .. }
            | StartError::AccessLog { source, .. }
            | StartError::StaticRoot { source, .. }
            | StartError::Threads { source } => Some(source),
            _ => None,
        }
    }
}

/// The system's words for an I/O error, without Rust's "(os error N)": the errno travels in
/// the Python exception instead.
fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

impl From<StartError> for PyErr {
    fn from(e: StartError) -> PyErr {
        match e.os_error().and_then(io::Error::raw_os_error) {
            Some(errno) => PyOSError::new_err((errno, e.to_string())),
            None if e.os_error().is_some() => PyOSError::new_err(e.to_string()),
            None => PyValueError::new_err(e.to_string()),
        }
    }
}
