//! Reading a notification body without ever holding more than the limit: a declared
//! `Content-Length` above it is refused unread; a chunked body is read until it crosses it.

use actix_web::HttpRequest;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, BytesMut};
use futures::StreamExt;

/// A body, or the proof that it was too large.
pub enum Body {
    Complete(web::Bytes),
    /// `head`: what was read before giving up (empty when refused on Content-Length);
    /// `size`: the declared length, or at least the bytes seen.
    TooLarge {
        head: web::Bytes,
        size: u64,
    },
}

/// Why reading stopped early for reasons other than size.
#[derive(Debug, thiserror::Error)]
#[error("reading the body failed: {0}")]
pub struct ReadError(String);

pub async fn read(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Body, ReadError> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit as u64
    {
        return Ok(Body::TooLarge { head: web::Bytes::new(), size: n });
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(4096, |n| n as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ReadError(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            let seen = (buf.len() + chunk.len()) as u64;
            buf.extend_from_slice(&chunk[..chunk.len().min(4096)]);
            return Ok(Body::TooLarge { head: buf.freeze(), size: seen });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(buf.freeze()))
}

/// The front half every callback shares: read the body within the limit, hand a complete
/// body to `process`, turn an oversize or unreadable body into a rejection, then reply and
/// count through [`crate::outcome::finish`].
pub async fn receive<F, Fut>(
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    state: &crate::State,
    kind: minipay_store::notifications::NotificationKind,
    reply: crate::outcome::Reply,
    process: F,
) -> actix_web::HttpResponse
where
    F: FnOnce(actix_web::web::Bytes) -> Fut,
    Fut: std::future::Future<Output = crate::outcome::Handled>,
{
    use crate::outcome::Handled;
    let started = std::time::Instant::now();
    let handled = match read(req, payload, state.max_body_bytes).await {
        Ok(Body::Complete(b)) => process(b).await,
        Ok(Body::TooLarge { head, size }) => Handled::Reject {
            reason: "too_large",
            detail: format!("{size} bytes exceed the {}-byte limit", state.max_body_bytes),
            status: actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            body: head,
            size,
        },
        Err(e) => Handled::reject("unreadable", e.to_string(), &actix_web::web::Bytes::new()),
    };
    crate::outcome::finish(state, req, kind, reply, handled, started).await
}
