//! Private static and media roots, served from Rust without touching Python.
//!
//! tower-http's `ServeDir` does the HTTP work (ETag and Last-Modified, `If-None-Match`,
//! `If-Modified-Since`, `Range`, precompressed `.br`/`.gz` siblings, streaming). This module
//! adds what a private root needs on top of it:
//! - hostile paths are refused before any file is looked at (`..`, encoded slashes and
//!   backslashes, NUL, dotfiles, empty segments), all as 404;
//! - every file `ServeDir` opens, precompressed siblings included, is opened so that it must
//!   lie inside the root, symlinks followed ([`RootedBackend`]);
//! - a directory answers 403 and is never listed;
//! - `Cache-Control` (a year and `immutable` for content-hashed names) and a charset on text;
//! - `If-Range`, which `ServeDir` lacks;
//! - answers to plain requests for small files remembered (see `static_cache`).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, ETAG, EXPIRES,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::ServeDir;
use tower_http::services::fs::{
    Backend, DefaultServeDirFallback, File, Metadata, ServeFileSystemResponseBody,
};

use crate::error::{MountError, StartError};
use crate::http::body::{BodyError, ResponseBody};
use crate::http::error_page;
use crate::static_cache::{self, FileStamp, Key, ResponseCache};

type EmptyBody = Empty<Bytes>;

/// One URL prefix served from one directory.
#[derive(Debug, Clone)]
pub struct Mount {
    /// `/static`: no trailing slash.
    pub prefix: String,
    /// The directory, already resolved to its canonical path.
    pub root: PathBuf,
    /// Files users uploaded (Django's media): those a browser would run are sandboxed.
    pub untrusted: bool,
}

impl Mount {
    pub fn new(prefix: &str, dir: &Path, untrusted: bool) -> Result<Mount, MountError> {
        let p = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || p.is_empty() || p.contains(['?', '#', '%', '\\']) {
            return Err(MountError::Prefix(prefix.to_string()));
        }
        let root = std::fs::canonicalize(dir)
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| MountError::Root {
                prefix: p.to_string(),
                dir: dir.to_path_buf(),
            })?;
        Ok(Mount {
            prefix: p.to_string(),
            root,
            untrusted,
        })
    }
}

/// Files at most this big are read whole when opened; larger ones
/// stream in chunks.
const SMALL_FILE: u64 = 256 * 1024;
/// Chunk size for streaming a large file: 256 KiB measured clearly faster than 64 KiB for a
/// 1 MB file (`bench/run static`), and bounds memory per response all the same.
const CHUNK: usize = 256 * 1024;

/// Serves every static mount. Cheap to share: one per server.
pub struct Statics {
    mounts: Vec<(
        Mount,
        ServeDir<DefaultServeDirFallback, RootedBackend>,
        RootedBackend,
    )>,
    max_age: u32,
    cache: ResponseCache,
}

impl Statics {
    pub fn new(mut mounts: Vec<Mount>, max_age: u32) -> Result<Statics, StartError> {
        // Longest prefix first, so `/static/admin` wins over `/static`.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let mounts = mounts
            .into_iter()
            .map(|m| {
                let backend =
                    RootedBackend::new(&m.root).map_err(|source| StartError::StaticRoot {
                        path: m.root.clone(),
                        source,
                    })?;
                let dir = ServeDir::with_backend(&m.root, backend.clone())
                    .append_index_html_on_directories(false)
                    .redirect_to_trailing_slash(false)
                    .precompressed_br()
                    .precompressed_gzip()
                    // One range or the whole file: multipart answers are rarely wanted.
                    .ignore_multi_range_requests(true)
                    .with_buf_chunk_size(CHUNK);
                Ok((m, dir, backend))
            })
            .collect::<Result<_, StartError>>()?;
        Ok(Statics {
            mounts,
            max_age,
            cache: ResponseCache::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    /// Whether a raw request path falls under a mount (and is answered from it).
    pub fn covers(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    /// The mount a raw request path falls under, with the rest of the path.
    fn find<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        self.mounts
            .iter()
            .position(|(m, _, _)| {
                path.strip_prefix(m.prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|i| (i, &path[self.mounts[i].0.prefix.len()..]))
    }

    async fn call(
        &self,
        dir: &ServeDir<DefaultServeDirFallback, RootedBackend>,
        parts: http::request::Parts,
    ) -> io::Result<Response<ServeFileSystemResponseBody>> {
        let req = Request::from_parts(parts, EmptyBody::new());
        dir.clone().try_call(req).await
    }

    /// `ServeDir` has no If-Range: with both it and a Range, the whole file is asked for
    /// first, and the range kept only if the validator still matches what would be sent.
    async fn call_with_if_range(
        &self,
        dir: &ServeDir<DefaultServeDirFallback, RootedBackend>,
        mut parts: http::request::Parts,
    ) -> io::Result<Response<ServeFileSystemResponseBody>> {
        let Some(validator) = parts.headers.remove(IF_RANGE) else {
            return self.call(dir, parts).await;
        };
        if !parts.headers.contains_key(RANGE) {
            return self.call(dir, parts).await;
        }
        let mut whole = parts.clone();
        whole.headers.remove(RANGE);
        let full = self.call(dir, whole).await?;
        if if_range_matches(&validator, full.headers()) {
            self.call(dir, parts).await
        } else {
            Ok(full)
        }
    }

    /// Caching and charset headers of a file served whole, or not modified.
    fn describe(&self, headers: &mut http::HeaderMap, relative: &str) {
        let cache = if is_hashed_name(relative) {
            HeaderValue::from_static("public, max-age=31536000, immutable")
        } else {
            HeaderValue::from_str(&format!("public, max-age={}", self.max_age))
                .unwrap_or_else(|_| HeaderValue::from_static("public"))
        };
        headers.insert(CACHE_CONTROL, cache);
        if let Some(ct) = headers.get(CONTENT_TYPE).and_then(with_charset) {
            headers.insert(CONTENT_TYPE, ct);
        }
    }

    /// Answers the request if its path is under a mount; gives it back otherwise.
    pub async fn serve<B>(&self, req: Request<B>) -> Result<Response<ResponseBody>, Request<B>> {
        let Some((i, rest)) = self.find(req.uri().path()) else {
            return Err(req);
        };
        let rest = rest.to_string();
        let (mount, dir, backend) = &self.mounts[i];
        let memo_key = static_cache::plain_request(req.method(), req.headers()).then(|| Key {
            mount: i,
            path: rest.clone(),
            accept_encoding: req.headers().get(ACCEPT_ENCODING).cloned(),
        });
        if let Some(key) = &memo_key
            && let Some(res) = self.cache.get(key, |p| backend.stamp(p))
        {
            return Ok(res);
        }
        let is_get = req.method() == Method::GET;
        let Some(relative) = safe_relative(&rest) else {
            return Ok(error_page::plain(StatusCode::NOT_FOUND));
        };
        if relative.is_empty() {
            // The mount itself is a directory: never listed.
            return Ok(error_page::plain(StatusCode::FORBIDDEN));
        }
        let (mut parts, _) = req.into_parts();
        let uri = match Uri::builder().path_and_query(rest.as_str()).build() {
            Ok(u) => u,
            Err(_) => return Ok(error_page::plain(StatusCode::NOT_FOUND)),
        };
        parts.uri = uri;
        // RFC 9110 14.2: a Range in a unit other than bytes is ignored, not refused.
        if parts
            .headers
            .get(RANGE)
            .is_some_and(|r| !r.as_bytes().starts_with(b"bytes="))
        {
            parts.headers.remove(RANGE);
        }
        // RFC 9110 15.4.5: a 304 carries the fields its 200 would among Cache-Control,
        // Content-Location, Date, ETag, Expires and Vary; `ServeDir` leaves out `Vary`. So a
        // conditional request keeps what asks for that 200's head, needed only on a 304.
        let conditional = parts.headers.contains_key(IF_NONE_MATCH)
            || parts.headers.contains_key(IF_MODIFIED_SINCE);
        let unconditional = conditional.then(|| {
            let mut head = parts.clone();
            head.method = Method::HEAD;
            for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_RANGE, RANGE] {
                head.headers.remove(name);
            }
            head
        });
        let res = match self.call_with_if_range(dir, parts).await {
            Ok(res) if res.status() != StatusCode::NOT_FOUND => res,
            Ok(_) => return Ok(missing(&mount.root, &relative)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(missing(&mount.root, &relative));
            }
            Err(e) => {
                tracing::warn!("static file {relative}: {e}");
                return Ok(error_page::plain(StatusCode::INTERNAL_SERVER_ERROR));
            }
        };
        let status = res.status();
        let (mut parts, body) = res.into_parts();
        if status == StatusCode::NOT_MODIFIED
            && let Some(head) = unconditional
            && let Ok(full) = self.call(dir, head).await
        {
            for name in [CONTENT_LOCATION, ETAG, EXPIRES, VARY] {
                if let Some(v) = full.headers().get(&name)
                    && !parts.headers.contains_key(&name)
                {
                    parts.headers.insert(name, v.clone());
                }
            }
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            self.describe(&mut parts.headers, &relative);
        }
        guard(&mut parts.headers, mount.untrusted);
        let small = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n <= static_cache::MAX_BODY);
        if let Some(key) = memo_key
            && is_get
            && status == StatusCode::OK
            && small
            && let Some(served) = static_cache::served_file(&relative, &parts.headers)
        {
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    tracing::warn!("static file {relative}: {e}");
                    return Ok(error_page::plain(StatusCode::INTERNAL_SERVER_ERROR));
                }
            };
            if let Some(stamp) = backend.stamp(&served) {
                self.cache
                    .put(key, status, &parts.headers, bytes.clone(), served, stamp);
            }
            return Ok(Response::from_parts(parts, ResponseBody::full(bytes)));
        }
        let body = body
            .map_err(|e| BodyError(format!("reading static file: {e}")))
            .boxed_unsync();
        Ok(Response::from_parts(parts, ResponseBody::Boxed(body)))
    }
}

/// Content types a browser renders as a document that may run scripts.
fn runs_in_a_browser(content_type: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    matches!(
        essence,
        "text/html" | "application/xhtml+xml" | "text/xml" | "application/xml"
    ) || essence.ends_with("+xml")
}

/// A file is what its `Content-Type` says, never sniffed into something else; from an
/// untrusted mount, a document that could run scripts is sandboxed (a unique origin, no
/// scripts): an uploaded SVG with `<script>` cannot act as the site.
fn guard(headers: &mut http::HeaderMap, untrusted: bool) {
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if untrusted
        && headers
            .get(CONTENT_TYPE)
            .is_some_and(|ct| runs_in_a_browser(ct.as_bytes()))
    {
        headers.insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
}

/// The decoded path below a mount, if it is one a private root may serve.
/// `rest` is the raw (still percent-encoded) remainder of the request path.
pub(crate) fn safe_relative(rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    // Encoded separators and NUL would change meaning after decoding.
    if ["%2f", "%5c", "%00"].iter().any(|bad| lower.contains(bad)) || rest.contains('\\') {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()?;
    let trimmed = decoded.strip_prefix('/').unwrap_or(&decoded);
    if trimmed.is_empty() {
        return Some(String::new());
    }
    for seg in trimmed.split('/') {
        // Empty segments (`//`), `.`/`..` and dotfiles (`.env`, `.git`) are never served.
        if seg.is_empty() || seg.starts_with('.') || seg.contains(['\0', ':', '\\']) {
            // A trailing slash asks for a directory; let it reach the 403 check.
            if seg.is_empty() && trimmed.ends_with('/') && !trimmed.contains("//") {
                continue;
            }
            return None;
        }
    }
    let path = Path::new(trimmed);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(trimmed.trim_end_matches('/').to_string())
}

/// Nothing to send: a directory (never listed) is 403, anything else 404.
fn missing(root: &Path, relative: &str) -> Response<ResponseBody> {
    if inside_root(root, &root.join(relative)).is_some_and(|p| p.is_dir()) {
        error_page::plain(StatusCode::FORBIDDEN)
    } else {
        error_page::plain(StatusCode::NOT_FOUND)
    }
}

/// RFC 9110 13.1.5: a strong ETag equal to the current one, or a date equal to the current
/// Last-Modified. Anything else means the client's copy is stale: send it all.
fn if_range_matches(validator: &HeaderValue, current: &HeaderMap) -> bool {
    let v = validator.as_bytes();
    if v.starts_with(b"\"") {
        return current.get(ETAG).is_some_and(|e| e.as_bytes() == v);
    }
    current
        .get(LAST_MODIFIED)
        .is_some_and(|lm| lm.as_bytes() == v)
}

/// `app.3f2a1b4c5d6e.css`: the content hash Django's `ManifestStaticFilesStorage` puts in a
/// name (12 hex digits) makes the file safe to cache for good.
fn is_hashed_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut parts = name.rsplit('.');
    let (Some(_ext), Some(hash), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !stem.is_empty() && hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Text types say their charset, so a browser never has to guess.
fn with_charset(ct: &HeaderValue) -> Option<HeaderValue> {
    let s = ct.to_str().ok()?;
    if s.contains("charset") {
        return None;
    }
    let texty = s.starts_with("text/")
        || matches!(
            s,
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        );
    texty
        .then(|| HeaderValue::from_str(&format!("{s}; charset=utf-8")).ok())
        .flatten()
}

/// `path` with symlinks resolved, if that still lies inside `root` (already canonical).
fn inside_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    real.starts_with(root).then_some(real)
}

/// The file-system backend for `ServeDir`. Nothing that resolves outside the root is ever
/// opened or even stat'ed: on Linux every path is opened with `openat2(RESOLVE_BENEATH)`
/// relative to the root directory, so the kernel itself refuses `..` and any symlink that
/// leaves the root, in one system call; elsewhere the path is resolved and checked first.
///
/// File system calls run in place on the network thread rather than on tokio's blocking
/// pool: on a served (cached) tree an open, a stat or a 64 KiB read takes microseconds,
/// while each hop to the blocking pool costs two thread wake-ups. Measured with
/// `bench/run static`; `sendfile` is not available through hyper's write path.
#[derive(Clone)]
pub struct RootedBackend {
    root: Arc<PathBuf>,
    root_dir: Arc<std::fs::File>,
}

impl RootedBackend {
    fn new(root: &Path) -> io::Result<RootedBackend> {
        Ok(RootedBackend {
            root: Arc::new(root.to_path_buf()),
            root_dir: Arc::new(std::fs::File::open(root)?),
        })
    }

    /// The version stamp of a file under the root, for checking a remembered answer.
    fn stamp(&self, rel: &Path) -> Option<FileStamp> {
        FileStamp::of(&std::fs::metadata(self.root.join(rel)).ok()?)
    }

    /// Opens `path` (under the root) for reading, or for a stat only (`O_PATH`).
    fn open_beneath(&self, path: &Path, path_only: bool) -> io::Result<std::fs::File> {
        let rel = path.strip_prefix(&*self.root).map_err(|_| not_found())?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::{AsRawFd, FromRawFd};
            use std::os::unix::ffi::OsStrExt;
            use std::sync::atomic::{AtomicBool, Ordering};
            static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
            if !NO_OPENAT2.load(Ordering::Relaxed) {
                let rel = if rel.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    rel
                };
                let c =
                    std::ffi::CString::new(rel.as_os_str().as_bytes()).map_err(|_| not_found())?;
                let flags = if path_only {
                    libc::O_PATH
                } else {
                    libc::O_RDONLY
                };
                // SAFETY: open_how is plain data; zeroed is its documented default.
                let mut how: libc::open_how = unsafe { std::mem::zeroed() };
                how.flags = (flags | libc::O_CLOEXEC) as u64;
                how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
                // SAFETY: the directory fd is open for the backend's lifetime, `c` is a valid
                // C string and `how` a valid open_how of the size passed.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_openat2,
                        self.root_dir.as_raw_fd(),
                        c.as_ptr(),
                        &how as *const libc::open_how,
                        std::mem::size_of::<libc::open_how>(),
                    )
                };
                if fd >= 0 {
                    // SAFETY: the kernel just returned this descriptor to us alone.
                    return Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) });
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    // Older kernels (or a sandbox that filters it): resolve and check instead.
                    Some(libc::ENOSYS) | Some(libc::EPERM) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed)
                    }
                    // Escapes the root (EXDEV) or loops (ELOOP): as good as not there.
                    Some(libc::EXDEV) | Some(libc::ELOOP) => return Err(not_found()),
                    _ => return Err(err),
                }
            }
        }
        let real = inside_root(&self.root, path).ok_or_else(not_found)?;
        std::fs::File::open(real)
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file inside the root")
}

pub struct FileMeta(std::fs::Metadata);

impl Metadata for FileMeta {
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn modified(&self) -> io::Result<std::time::SystemTime> {
        self.0.modified()
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
}

/// A small file already in memory, or a large one read chunk by chunk as the client takes it.
pub enum RootedFile {
    Small(io::Cursor<Bytes>, std::fs::Metadata),
    Large(std::fs::File, std::fs::Metadata),
}

impl AsyncRead for RootedFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RootedFile::Small(c, _) => Pin::new(c).poll_read(cx, buf),
            RootedFile::Large(f, _) => {
                let n = io::Read::read(f, buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncSeek for RootedFile {
    fn start_seek(self: Pin<&mut Self>, pos: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            RootedFile::Small(c, _) => Pin::new(c).start_seek(pos),
            RootedFile::Large(f, _) => io::Seek::seek(f, pos).map(drop),
        }
    }
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            RootedFile::Small(c, _) => Pin::new(c).poll_complete(cx),
            RootedFile::Large(f, _) => Poll::Ready(io::Seek::stream_position(f)),
        }
    }
}

type Ready<T> = std::future::Ready<io::Result<T>>;

impl File for RootedFile {
    type Metadata = FileMeta;
    type MetadataFuture<'a> = Ready<FileMeta>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        let m = match self {
            RootedFile::Small(_, m) | RootedFile::Large(_, m) => m.clone(),
        };
        std::future::ready(Ok(FileMeta(m)))
    }
}

impl RootedBackend {
    fn open_now(&self, path: &Path) -> io::Result<RootedFile> {
        let file = self.open_beneath(path, false)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() <= SMALL_FILE {
            let mut data = Vec::with_capacity(meta.len() as usize);
            io::Read::read_to_end(&mut &file, &mut data)?;
            return Ok(RootedFile::Small(io::Cursor::new(Bytes::from(data)), meta));
        }
        Ok(RootedFile::Large(file, meta))
    }
}

impl Backend for RootedBackend {
    type File = RootedFile;
    type Metadata = FileMeta;
    type OpenFuture = Ready<RootedFile>;
    type MetadataFuture = Ready<FileMeta>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        std::future::ready(self.open_now(&path))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let meta = self
            .open_beneath(&path, true)
            .and_then(|f| f.metadata())
            .map(FileMeta);
        std::future::ready(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_that_could_run_scripts_are_known() {
        for ct in [
            "image/svg+xml",
            "text/html; charset=utf-8",
            "application/xhtml+xml",
            "text/xml",
            "application/rss+xml",
        ] {
            assert!(runs_in_a_browser(ct.as_bytes()), "{ct}");
        }
        for ct in ["image/png", "text/plain", "text/css", "application/pdf"] {
            assert!(!runs_in_a_browser(ct.as_bytes()), "{ct}");
        }
        let mut h = http::HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
        guard(&mut h, false);
        assert_eq!(h[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!h.contains_key(http::header::CONTENT_SECURITY_POLICY));
        guard(&mut h, true);
        assert_eq!(h[http::header::CONTENT_SECURITY_POLICY], "sandbox");
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/%2E%2E/%2e%2e/x",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%00.css",
            "/.env",
            "/a/.git/config",
            "//etc/passwd",
            "/a//b",
            "/c:/windows",
            "/%ff%fe",
        ] {
            assert_eq!(safe_relative(p), None, "{p}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        assert_eq!(safe_relative("/app.css").as_deref(), Some("app.css"));
        assert_eq!(safe_relative("/a%20b/c.js").as_deref(), Some("a b/c.js"));
        assert_eq!(safe_relative("/dir/").as_deref(), Some("dir"));
        assert_eq!(safe_relative("").as_deref(), Some(""));
        assert_eq!(safe_relative("/").as_deref(), Some(""));
    }

    #[test]
    fn hashed_names() {
        assert!(is_hashed_name("css/app.3f2a1b4c5d6e.css"));
        assert!(!is_hashed_name("css/app.css"));
        assert!(!is_hashed_name("app.3f2a1b4c5d6.css"));
        assert!(!is_hashed_name(".3f2a1b4c5d6e.css"));
        assert!(!is_hashed_name("app.3f2a1b4c5d6g.css"));
    }

    #[test]
    fn charset_for_text_only() {
        let v = |s| with_charset(&HeaderValue::from_static(s));
        assert_eq!(v("text/css").unwrap(), "text/css; charset=utf-8");
        assert!(v("image/png").is_none());
        assert!(v("text/html; charset=latin1").is_none());
    }
}
