//! The access log, off unless asked for: one line per request once its body has been sent,
//! in Combined Log Format with the duration in microseconds appended, or as JSON. The client
//! address is the real one (after trusted-proxy resolution). Lines go through a channel to a
//! writer thread, so a slow disk never stalls a network thread.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{REFERER, USER_AGENT};
use http::{HeaderMap, Method, Version};
use http_body::{Body, SizeHint};

use crate::error::StartError;
use crate::http::body::{BodyError, Polled, ResponseBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Combined,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: LogFormat,
}

/// Lines buffered for the writer before new ones are dropped (and counted) rather than
/// making requests wait.
const BACKLOG: usize = 8192;

pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
}

impl AccessLog {
    pub fn open(config: &LogConfig) -> Result<AccessLog, StartError> {
        let mut out: Box<dyn Write + Send> = match &config.path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| StartError::AccessLog {
                        path: p.clone(),
                        source,
                    })?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = sync_channel::<String>(BACKLOG);
        std::thread::Builder::new()
            .name("bartizan-log".into())
            .spawn(move || {
                let mut buf = String::new();
                while let Ok(line) = rx.recv() {
                    buf.push_str(&line);
                    // Batch whatever else is already waiting into one write.
                    while let Ok(more) = rx.try_recv() {
                        buf.push_str(&more);
                    }
                    let _ = out.write_all(buf.as_bytes());
                    let _ = out.flush();
                    buf.clear();
                }
            })
            .map_err(|source| StartError::Threads { source })?;
        Ok(AccessLog {
            tx,
            format: config.format,
        })
    }

    fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            tracing::warn!("access log writer is behind; a line was dropped");
        }
    }
}

/// What the log line needs from the request, taken before the request is handed on.
pub struct RequestFacts {
    pub remote: String,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub referer: String,
    pub user_agent: String,
    pub started: Instant,
    pub at: SystemTime,
}

impl RequestFacts {
    pub fn new(
        remote: String,
        method: &Method,
        target: String,
        version: Version,
        headers: &HeaderMap,
    ) -> Self {
        let h = |n| {
            headers
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        RequestFacts {
            remote,
            method: method.clone(),
            target,
            version,
            referer: h(REFERER),
            user_agent: h(USER_AGENT),
            started: Instant::now(),
            at: SystemTime::now(),
        }
    }
}

/// `[25/Nov/2026:13:45:01 +0000]` without a date-time crate: civil-from-days on UTC.
fn clf_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Escapes what would break a quoted CLF field or a terminal.
fn clf_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// CLF writes an absent field as `-`.
fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".to_string() } else { s }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

fn line(format: LogFormat, f: &RequestFacts, status: u16, bytes: u64) -> String {
    let micros = f.started.elapsed().as_micros();
    match format {
        LogFormat::Combined => format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {}\n",
            f.remote,
            clf_time(f.at),
            f.method,
            clf_quote(&f.target),
            protocol(f.version),
            status,
            if bytes == 0 {
                "-".to_string()
            } else {
                bytes.to_string()
            },
            dash_if_empty(clf_quote(&f.referer)),
            dash_if_empty(clf_quote(&f.user_agent)),
            micros
        ),
        LogFormat::Json => {
            let mut s = serde_json::json!({
                "time": httpdate::fmt_http_date(f.at),
                "remote_addr": f.remote,
                "method": f.method.as_str(),
                "target": f.target,
                "protocol": protocol(f.version),
                "status": status,
                "bytes": bytes,
                "referer": f.referer,
                "user_agent": f.user_agent,
                "duration_us": micros as u64,
            })
            .to_string();
            s.push('\n');
            s
        }
    }
}

/// A response body that writes the log line when it has been sent (or abandoned).
pub struct LoggedBody {
    inner: ResponseBody,
    log: std::sync::Arc<AccessLog>,
    facts: Option<RequestFacts>,
    status: u16,
    sent: u64,
}

impl LoggedBody {
    pub fn new(
        inner: ResponseBody,
        log: std::sync::Arc<AccessLog>,
        facts: RequestFacts,
        status: u16,
    ) -> Self {
        LoggedBody {
            inner,
            log,
            facts: Some(facts),
            status,
            sent: 0,
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.facts.take() {
            self.log
                .write(line(self.log.format, &f, self.status, self.sent));
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<BodyError> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    me.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => me.finish(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_614_301); // 2026-11-25 13:45:01 UTC
        assert_eq!(clf_time(t), "25/Nov/2026:13:45:01 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn combined_line_escapes_quotes() {
        let mut h = HeaderMap::new();
        h.insert(USER_AGENT, "evil\" agent".parse().unwrap());
        let f = RequestFacts::new(
            "1.2.3.4".into(),
            &Method::GET,
            "/a?b=\"c\"".into(),
            Version::HTTP_11,
            &h,
        );
        let l = line(LogFormat::Combined, &f, 200, 5);
        assert!(l.starts_with("1.2.3.4 - - ["), "{l}");
        assert!(
            l.contains("\"GET /a?b=\\\"c\\\" HTTP/1.1\" 200 5 \"-\" \"evil\\\" agent\" "),
            "{l}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&line(LogFormat::Json, &f, 404, 0)).unwrap();
        assert_eq!(j["status"], 404);
        assert_eq!(j["remote_addr"], "1.2.3.4");
    }
}
