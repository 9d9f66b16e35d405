//! `Idempotency-Key` on every POST, as a middleware so route modules get it for free.
//!
//! For an authenticated POST with the header: the body is read (bounded by
//! `api.max_body_bytes`), its SHA-256 is the request's fingerprint, and
//! `minipay_store::idempotency` decides:
//! - first use → the handler runs; its JSON response (status < 500) is stored and returned;
//!   a 5xx releases the key so a retry runs again. That is safe because the handlers are
//!   themselves safe to repeat: orders and refunds derive their number from the key, and
//!   payouts, red packets and batches store the key on the row they create, so a repeat
//!   finds and returns that row (`minipay_store::payouts::create` and friends);
//! - same key, same method, path and body, response stored → the stored response is
//!   replayed with `Idempotent-Replayed: true`;
//! - same key with a different request → 409 `idempotency_key_reused`;
//! - same key while the first request still runs → wait (polling, up to
//!   [`IN_PROGRESS_WAIT`]) for its response, then 409 `request_in_progress`.
//!
//! Handlers can read the key ([`IdempotencyKey`] in the request extensions), e.g. to derive
//! an out_trade_no when the client sent none, so a retried request targets the same order.
//!
//! The claim is one statement (grouped with concurrent requests' claims) before the handler
//! runs, except on `POST /v1/orders`, whose handler writes it in the statement that inserts
//! the order, and leaves its `prepaid` mark to the statement that stores the response
//! ([`ClaimTicket`]): two statements per order instead of four. The decisions above are the
//! same on both paths.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use futures::StreamExt;
use minipay_store::idempotency::{self, Begin, Claim, Completion, KeyedRequest};
use minipay_store::orders;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// How long a duplicate waits for the first request's response before 409.
pub const IN_PROGRESS_WAIT: Duration = Duration::from_secs(10);
/// A key whose request never finished (crash) is reused after this long. Safe for money:
/// the repeat finds what the first run committed (see the module docs).
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

/// Routes whose handler claims the key itself, in the same statement as its first write
/// (see [`ClaimTicket`]).
const HANDLER_CLAIMS: &[&str] = &["/v1/orders"];

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
    let claim = Claim {
        client_id: caller.id,
        key: key.clone(),
        method: req.method().to_string(),
        path: req.path().to_owned(),
        request_hash: hex::encode(Sha256::digest(&body)),
    };
    req.set_payload(actix_web::dev::Payload::from(body));
    req.extensions_mut().insert(IdempotencyKey(key));
    if HANDLER_CLAIMS.contains(&claim.path.as_str()) {
        return handler_claims(req, next, &state, claim).await;
    }

    // The common case, a new key, is claimed together with concurrent requests' keys; any
    // other case (a repeat, a clash, a failed group) is decided by `begin` below.
    if state.groups.claims.submit(claim.clone()).await != Ok(true) {
        match decide(&state, &claim).await.map_err(actix_web::Error::from)? {
            Decision::Started => {}
            Decision::Respond(res) => {
                let (r, _) = req.into_parts();
                return Ok(ServiceResponse::new(r, res));
            }
        }
    }
    match next.call(req).await {
        Ok(res) => Ok(finish(&state, &claim, res, None).await?),
        Err(e) => {
            idempotency::release(&state.pool_async, claim.client_id, &claim.key).await.ok();
            Err(e)
        }
    }
}

/// What the stored row says about a key this request could not claim in a group.
enum Decision {
    /// The key is now this request's: run it.
    Started,
    /// Answer this instead: the stored response, or why the key cannot be used.
    Respond(HttpResponse),
}

/// Claims `claim`'s key on its own, or decides the answer from the stored row: a replay, a
/// 409 for a different request, or — after waiting up to [`IN_PROGRESS_WAIT`] for a request
/// still running with the key — a 409 `request_in_progress`.
async fn decide(state: &AppState, claim: &Claim) -> Result<Decision, ApiError> {
    let keyed = KeyedRequest {
        client_id: claim.client_id,
        key: &claim.key,
        method: &claim.method,
        path: &claim.path,
        request_hash: &claim.request_hash,
    };
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        let e = match idempotency::begin(&state.pool_async, &keyed, ABANDONED_AFTER).await? {
            Begin::Started => return Ok(Decision::Started),
            Begin::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let res = HttpResponse::build(status).insert_header(("Idempotent-Replayed", "true")).json(body);
                return Ok(Decision::Respond(res));
            }
            Begin::Mismatch => ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key",
            ),
            Begin::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Begin::InProgress => {
                ApiError::conflict("request_in_progress", "a request with this Idempotency-Key is still running")
            }
        };
        return Ok(Decision::Respond(actix_web::ResponseError::error_response(&e)));
    }
}

/// Stores the handler's response for the key this request holds (a 5xx, or a body that is
/// not JSON, releases the key instead, so a retry runs again), with the order's prepay
/// mark when the handler left one (see [`ClaimTicket::defer_prepaid`]).
async fn finish(
    state: &AppState,
    claim: &Claim,
    res: ServiceResponse<BoxBody>,
    prepaid: Option<(String, String)>,
) -> Result<ServiceResponse<BoxBody>, ApiError> {
    let status = res.status();
    let (http_req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.ok();
    let json: Option<serde_json::Value> = bytes.as_deref().and_then(|b| serde_json::from_slice(b).ok());
    match json {
        Some(v) if status.as_u16() < 500 => {
            let done = Completion {
                client_id: claim.client_id,
                key: claim.key.clone(),
                status: status.as_u16(),
                body: v,
                prepaid,
            };
            if let Err(done) = submit_completion(state, done).await {
                mark_prepaid(state, done.prepaid.as_ref()).await?;
                idempotency::complete(&state.pool_async, done.client_id, &done.key, done.status, &done.body).await?;
            }
        }
        _ => {
            mark_prepaid(state, prepaid.as_ref()).await?;
            idempotency::release(&state.pool_async, claim.client_id, &claim.key).await.ok();
        }
    }
    let Some(bytes) = bytes else {
        let e = ApiError::internal(&std::io::Error::other("response body could not be read"));
        return Ok(ServiceResponse::new(http_req, actix_web::ResponseError::error_response(&e)));
    };
    Ok(ServiceResponse::new(http_req, head.set_body(BoxBody::new(bytes))))
}

/// Writes a prepay mark the handler left (see [`ClaimTicket::defer_prepaid`]) on its own,
/// when no grouped completion carried it.
async fn mark_prepaid(state: &AppState, prepaid: Option<&(String, String)>) -> Result<(), ApiError> {
    if let Some((number, prepay_id)) = prepaid {
        orders::mark_prepaid(&state.pool_async, number, prepay_id).await?;
    }
    Ok(())
}

/// Stores the response through the group; gives it back when the group did not.
async fn submit_completion(state: &AppState, done: Completion) -> Result<(), Completion> {
    let copy = done.clone();
    match state.groups.completions.submit(done).await {
        Ok(true) => Ok(()),
        _ => Err(copy),
    }
}

/// The key of a request to a [`HANDLER_CLAIMS`] route, which its handler claims in the
/// statement of its first write instead of in a statement of its own before it runs (for
/// `POST /v1/orders`: with the order insert, one statement and one commit fewer per order;
/// see `minipay_store::orders::claim_and_insert_group`).
///
/// The handler must [`take`](ClaimTicket::take) the claim before it writes anything, then
/// either [`hold`](ClaimTicket::hold) it (its statement claimed the key) or
/// [`claim`](ClaimTicket::claim) it on its own (answering what that says when the key is
/// not new). A handler that answers without taking it (a validation error) has written
/// nothing; the middleware then claims the key and stores that answer, so every request
/// with a key is still decided by the key's first response, as on the other routes.
#[derive(Clone)]
pub struct ClaimTicket(Arc<Mutex<Ticket>>);

struct Ticket {
    phase: Phase,
    claim: Claim,
    prepaid: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not taken by the handler.
    Deferred,
    /// Taken; not yet known whether its statement claimed the key.
    Taken,
    /// The key is this request's: the middleware stores the response.
    Held,
    /// The key was not new; the handler answers what [`decide`] said.
    Decided,
}

impl ClaimTicket {
    fn new(claim: Claim) -> ClaimTicket {
        ClaimTicket(Arc::new(Mutex::new(Ticket { phase: Phase::Deferred, claim, prepaid: None })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ticket> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claim to write with the handler's first statement (once).
    pub fn take(&self) -> Option<Claim> {
        let mut t = self.lock();
        (t.phase == Phase::Deferred).then(|| {
            t.phase = Phase::Taken;
            t.claim.clone()
        })
    }

    /// The handler's statement claimed the key.
    pub fn hold(&self) {
        self.lock().phase = Phase::Held;
    }

    /// Claims the key on its own (the handler's statement did not). `Err` is the answer to
    /// send instead: the key's stored response, or a 409.
    pub async fn claim(&self, state: &AppState) -> Result<(), HttpResponse> {
        let claim = self.lock().claim.clone();
        let decision = decide(state, &claim).await;
        let mut t = self.lock();
        match decision {
            Ok(Decision::Started) => {
                t.phase = Phase::Held;
                Ok(())
            }
            Ok(Decision::Respond(res)) => {
                t.phase = Phase::Decided;
                Err(res)
            }
            Err(e) => {
                t.phase = Phase::Decided;
                Err(actix_web::ResponseError::error_response(&e))
            }
        }
    }

    /// Leaves the order's prepay mark to be written with the stored response (one statement
    /// for both). False when this request does not hold the key: the caller writes it.
    pub fn defer_prepaid(&self, out_trade_no: &str, prepay_id: &str) -> bool {
        let mut t = self.lock();
        if t.phase != Phase::Held {
            return false;
        }
        t.prepaid = Some((out_trade_no.to_owned(), prepay_id.to_owned()));
        true
    }
}

/// [`idempotency`] for a [`HANDLER_CLAIMS`] route (see [`ClaimTicket`]).
async fn handler_claims(
    req: ServiceRequest,
    next: Next<BoxBody>,
    state: &AppState,
    claim: Claim,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let ticket = ClaimTicket::new(claim.clone());
    req.extensions_mut().insert(ticket.clone());
    let result = next.call(req).await;
    let (phase, prepaid) = {
        let mut t = ticket.lock();
        (t.phase, t.prepaid.take())
    };
    match (phase, result) {
        (Phase::Decided, result) => result,
        (Phase::Held, Ok(res)) => Ok(finish(state, &claim, res, prepaid).await?),
        (Phase::Held, Err(e)) => {
            mark_prepaid(state, prepaid.as_ref()).await.ok();
            idempotency::release(&state.pool_async, claim.client_id, &claim.key).await.ok();
            Err(e)
        }
        (Phase::Deferred | Phase::Taken, Err(e)) => Err(e),
        (Phase::Deferred | Phase::Taken, Ok(res)) if res.status().is_server_error() => Ok(res),
        (Phase::Deferred | Phase::Taken, Ok(res)) => match decide(state, &claim).await? {
            Decision::Started => Ok(finish(state, &claim, res, None).await?),
            Decision::Respond(answer) => {
                let (r, _) = res.into_parts();
                Ok(ServiceResponse::new(r, answer))
            }
        },
    }
}
