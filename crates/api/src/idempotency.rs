//! `Idempotency-Key` on every POST, as a middleware so route modules get it for free.
//!
//! For an authenticated POST with the header: the body is read (bounded by
//! `api.max_body_bytes`), its SHA-256 is the request's fingerprint, and
//! `minipay_store::idempotency` decides:
//! - first use → the handler runs; its JSON response (status < 500) is stored and returned;
//!   a 5xx releases the key so a retry runs again (the handlers are themselves safe to
//!   repeat: fixed out_trade_no / out_refund_no);
//! - same key, same method, path and body, response stored → the stored response is
//!   replayed with `Idempotent-Replayed: true`;
//! - same key with a different request → 409 `idempotency_key_reused`;
//! - same key while the first request still runs → wait (polling, up to
//!   [`IN_PROGRESS_WAIT`]) for its response, then 409 `request_in_progress`.
//!
//! Handlers can read the key ([`IdempotencyKey`] in the request extensions), e.g. to derive
//! an out_trade_no when the client sent none, so a retried request targets the same order.

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use futures::StreamExt;
use minipay_store::idempotency::{self, Begin, Claim, Completion, KeyedRequest};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// How long a duplicate waits for the first request's response before 409.
pub const IN_PROGRESS_WAIT: Duration = Duration::from_secs(10);
/// A key whose request never finished (crash) is reused after this long.
const ABANDONED_AFTER: Duration = Duration::from_secs(120);

/// The `Idempotency-Key` of the current request, for handlers.
#[derive(Clone, Debug)]
pub struct IdempotencyKey(pub String);

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
}

fn respond(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    let (r, _) = req.into_parts();
    ServiceResponse::new(r, actix_web::ResponseError::error_response(&e))
}

/// Reads the whole body (at most `limit` bytes).
async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut payload = req.take_payload();
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Middleware (inside [`crate::auth::authenticate`]).
pub async fn idempotency(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.method() != Method::POST {
        return next.call(req).await;
    }
    let Some(key) = req.headers().get(HEADER).map(|v| v.to_str().map(str::to_owned)) else {
        return next.call(req).await;
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // Not authenticated: the handler answers 401 and nothing is remembered.
        return next.call(req).await;
    };
    let key = match key {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => k,
        _ => {
            let e =
                ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters");
            return Ok(respond(req, e));
        }
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let body = match read_body(&mut req, state.config.api.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return Ok(respond(req, e)),
    };
    let hash = hex::encode(Sha256::digest(&body));
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let keyed = KeyedRequest { client_id: caller.id, key: &key, method: &method, path: &path, request_hash: &hash };

    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    // The common case, a new key, is claimed together with concurrent requests' keys; any
    // other case (a repeat, a clash, a failed group) is decided by `begin` below.
    let claim = Claim {
        client_id: caller.id,
        key: key.clone(),
        method: method.clone(),
        path: path.clone(),
        request_hash: hash.clone(),
    };
    let mut claimed = state.groups.claims.submit(claim).await == Ok(true);
    while !claimed {
        match idempotency::begin(&state.pool_async, &keyed, ABANDONED_AFTER).await.map_err(ApiError::from)? {
            Begin::Started => claimed = true,
            Begin::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let res = HttpResponse::build(status).insert_header(("Idempotent-Replayed", "true")).json(body);
                let (r, _) = req.into_parts();
                return Ok(ServiceResponse::new(r, res));
            }
            Begin::Mismatch => {
                let e = ApiError::conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request; use a new key",
                );
                return Ok(respond(req, e));
            }
            Begin::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Begin::InProgress => {
                let e =
                    ApiError::conflict("request_in_progress", "a request with this Idempotency-Key is still running");
                return Ok(respond(req, e));
            }
        }
    }

    req.set_payload(actix_web::dev::Payload::from(body));
    req.extensions_mut().insert(IdempotencyKey(key.clone()));
    let res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => {
            idempotency::release(&state.pool_async, caller.id, &key).await.ok();
            return Err(e);
        }
    };
    let status = res.status();
    let (http_req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(b) => b,
        Err(_) => {
            idempotency::release(&state.pool_async, caller.id, &key).await.ok();
            let e = ApiError::internal(&std::io::Error::other("response body could not be read"));
            return Ok(ServiceResponse::new(http_req, actix_web::ResponseError::error_response(&e)));
        }
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    match json {
        Some(v) if status.as_u16() < 500 => {
            let done = Completion { client_id: caller.id, key: key.clone(), status: status.as_u16(), body: v };
            if let Err(v) = submit_completion(&state, done).await {
                idempotency::complete(&state.pool_async, caller.id, &key, status.as_u16(), &v)
                    .await
                    .map_err(ApiError::from)?;
            }
        }
        _ => {
            idempotency::release(&state.pool_async, caller.id, &key).await.ok();
        }
    }
    let response = head.set_body(BoxBody::new(bytes));
    Ok(ServiceResponse::new(http_req, response))
}

/// Stores the response through the group; gives the body back when the group did not.
async fn submit_completion(state: &AppState, done: Completion) -> Result<(), serde_json::Value> {
    let body = done.body.clone();
    match state.groups.completions.submit(done).await {
        Ok(true) => Ok(()),
        _ => Err(body),
    }
}
