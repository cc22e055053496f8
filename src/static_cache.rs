//! A memo of `ServeDir`'s answers to plain requests for small static files.
//!
//! Measured with `bench/run static`: for a 4 KB stylesheet, building each answer anew (path
//! checks, two file-system lookups, validators, a body stream) left Bartizan well behind
//! nginx. The common request, an unconditional GET or HEAD for an unchanged file, gets the
//! same answer every time, so that answer is kept: headers and bytes exactly as `ServeDir`
//! made them. Every use is vouched for by a fresh stat of the file that was served (size,
//! mtime, inode), and an entry is rebuilt at least every second, so a new `.br`/`.gz`
//! sibling is picked up too. Conditional and range requests always go to `ServeDir`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    CONTENT_ENCODING, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::http::body::ResponseBody;
use crate::sync::Recover;

/// An entry is rebuilt through `ServeDir` at least this often.
const REFRESH: Duration = Duration::from_secs(1);
/// Bound on the cached bytes; past it the cache starts afresh.
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Only answers at most this big are kept.
pub const MAX_BODY: usize = 256 * 1024;

/// What identifies a file version: if any of it changes, the cached answer is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: SystemTime,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.modified().ok()?,
        })
    }

    /// The validator `ServeDir` derives from the same metadata. Used only to check, when an
    /// answer is stored, that it was made from the file version just stat'ed; were the
    /// format ever to differ, nothing would be cached, and nothing would be wrong.
    fn etag(&self) -> Option<String> {
        let d = self.mtime.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        Some(format!(
            "\"{:x}.{:08x}-{:x}\"",
            d.as_secs(),
            d.subsec_nanos(),
            self.len
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub mount: usize,
    pub path: String,
    pub accept_encoding: Option<HeaderValue>,
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The file actually sent (a `.br`/`.gz` sibling, perhaps), relative to the mount root.
    served: PathBuf,
    stamp: FileStamp,
    filled: Instant,
}

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<(HashMap<Key, Entry>, usize)>,
}

/// Only plain GET/HEAD requests get the memo: anything conditional or partial is answered by
/// `ServeDir` itself.
pub fn plain_request(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && ![
            RANGE,
            IF_RANGE,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
        ]
        .iter()
        .any(|h| headers.contains_key(h))
}

/// `relative` with the suffix of the variant `ServeDir` chose, if it chose one.
pub fn served_file(relative: &str, headers: &HeaderMap) -> Option<PathBuf> {
    let suffix = match headers.get(CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None => "",
        Some(b"br") => ".br",
        Some(b"gzip") => ".gz",
        Some(_) => return None,
    };
    Some(PathBuf::from(format!("{relative}{suffix}")))
}

impl ResponseCache {
    /// The remembered answer, if the file it came from is unchanged. `stat` looks a file up
    /// under the mount root.
    pub fn get(
        &self,
        key: &Key,
        stat: impl Fn(&Path) -> Option<FileStamp>,
    ) -> Option<Response<ResponseBody>> {
        let (status, headers, body, served, stamp) = {
            let map = self.entries.lock().recover();
            let e = map.0.get(key)?;
            if e.filled.elapsed() >= REFRESH {
                return None;
            }
            (
                e.status,
                e.headers.clone(),
                e.body.clone(),
                e.served.clone(),
                e.stamp,
            )
        };
        if stat(&served) != Some(stamp) {
            let mut map = self.entries.lock().recover();
            if let Some(old) = map.0.remove(key) {
                map.1 -= old.body.len();
            }
            return None;
        }
        let mut res = Response::new(ResponseBody::full(body));
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        Some(res)
    }

    /// Remembers an answer made from the file version `stamp` describes, if its validator
    /// says it was.
    pub fn put(
        &self,
        key: Key,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        served: PathBuf,
        stamp: FileStamp,
    ) {
        let made_from_it = match (headers.get(ETAG), stamp.etag()) {
            (Some(sent), Some(expected)) => sent.as_bytes() == expected.as_bytes(),
            _ => false,
        };
        if !made_from_it || body.len() > MAX_BODY {
            return;
        }
        let mut map = self.entries.lock().recover();
        if map.1 + body.len() > MAX_BYTES {
            *map = (HashMap::new(), 0);
        }
        map.1 += body.len();
        let entry = Entry {
            status,
            headers: headers.clone(),
            body,
            served,
            stamp,
            filled: Instant::now(),
        };
        if let Some(old) = map.0.insert(key, entry) {
            map.1 -= old.body.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_requests() {
        let mut h = HeaderMap::new();
        assert!(plain_request(&Method::GET, &h));
        assert!(plain_request(&Method::HEAD, &h));
        assert!(!plain_request(&Method::POST, &h));
        h.insert(RANGE, "bytes=0-1".parse().unwrap());
        assert!(!plain_request(&Method::GET, &h));
    }

    #[test]
    fn variants_map_to_their_files() {
        let mut h = HeaderMap::new();
        assert_eq!(served_file("a.css", &h), Some(PathBuf::from("a.css")));
        h.insert(CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(served_file("a.css", &h), Some(PathBuf::from("a.css.br")));
        h.insert(CONTENT_ENCODING, "zstd".parse().unwrap());
        assert_eq!(served_file("a.css", &h), None);
    }

    #[test]
    fn stale_or_mismatched_answers_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"one").unwrap();
        let stat = |p: &Path| {
            std::fs::metadata(dir.path().join(p))
                .ok()
                .and_then(|m| FileStamp::of(&m))
        };
        let stamp = stat(Path::new("a.txt")).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, stamp.etag().unwrap().parse().unwrap());
        let cache = ResponseCache::default();
        let key = Key {
            mount: 0,
            path: "/a.txt".into(),
            accept_encoding: None,
        };
        cache.put(
            key.clone(),
            StatusCode::OK,
            &headers,
            Bytes::from_static(b"one"),
            "a.txt".into(),
            stamp,
        );
        assert!(cache.get(&key, stat).is_some());
        // A different length changes the stamp: the answer is dropped.
        std::fs::write(&file, b"three").unwrap();
        assert!(cache.get(&key, stat).is_none());
        assert!(cache.get(&key, stat).is_none());
        // An answer whose validator does not match the stamp is never stored.
        let other = Key {
            path: "/b".into(),
            ..key
        };
        cache.put(
            other.clone(),
            StatusCode::OK,
            &HeaderMap::new(),
            Bytes::new(),
            "a.txt".into(),
            stamp,
        );
        assert!(cache.get(&other, stat).is_none());
    }
}
