//! `bartizan._bartizan`: the extension module. Python hands over the app and the options
//! (`py`); everything else (sockets, HTTP, the pool) lives in Rust and runs on background
//! threads, so `start()` returns at once and the calling process keeps running its own Python.

mod access_log;
mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod http;
mod metrics;
mod pool;
mod proxy;
mod py;
mod server;
mod static_cache;
mod statics;
mod sync;
mod tls;
mod wsgi;

use pyo3::prelude::*;

#[pymodule]
fn _bartizan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py::listen, m)?)?;
    m.add_class::<py::PyServer>()?;
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
