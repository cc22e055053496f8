//! Every error answer the server gives itself, in one place: a short plain-text page with the
//! right status, never a traceback or an internal detail.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::http::body::ResponseBody;

/// A plain-text answer for `status`, e.g. "404 Not Found".
pub fn plain(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let len = text.len();
    let mut res = Response::new(ResponseBody::full(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}

/// 503 with `Retry-After`, for a full queue, a locked pool or a server that is stopping.
pub fn unavailable(retry_after: u32) -> Response<ResponseBody> {
    let mut res = plain(StatusCode::SERVICE_UNAVAILABLE);
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    res
}
