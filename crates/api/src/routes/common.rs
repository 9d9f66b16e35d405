//! What several route modules share: the preamble of a request that creates a money
//! movement (payouts, red packets), and the listings' query-string filters and paging.

use actix_web::{HttpMessage, HttpRequest};
use minipay_config::{AppConfig, Config};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;

/// The app a request is for: the one named (must be configured), else the default app.
pub fn resolve_app<'a>(config: &'a Config, appid: Option<&str>) -> Result<&'a AppConfig, ApiError> {
    match appid {
        Some(a) => config.app(a),
        None => config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured (and there is no default app)"))
}

/// Requests that create money movements must carry an Idempotency-Key.
pub fn require_idempotency_key(req: &HttpRequest) -> Result<(), ApiError> {
    if req.extensions().get::<IdempotencyKey>().is_some() {
        Ok(())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "send an Idempotency-Key header: a retried request must not create a second payout",
        ))
    }
}

/// The checks every request that moves money passes first, in this order: a finance key,
/// an Idempotency-Key, a configured app. Returns the app and the key, which the store
/// writes on the row the request creates: the key names that payout, packet or batch
/// forever, so a retry (even one the key's takeover window lets run again) returns it
/// instead of creating a second one.
pub fn money_request<'a>(
    req: &HttpRequest,
    caller: &Caller,
    config: &'a Config,
    appid: Option<&str>,
) -> Result<(&'a AppConfig, String), ApiError> {
    caller.require(&[Role::Finance])?;
    require_idempotency_key(req)?;
    let key = req.extensions().get::<IdempotencyKey>().map(|k| k.0.clone()).unwrap_or_default();
    Ok((resolve_app(config, appid)?, key))
}

/// An optional listing filter from the query string: absent or empty means "any";
/// anything else must parse (`code` and "unknown {what} …" otherwise).
pub fn query_filter<T>(
    value: Option<&str>,
    code: &'static str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(s) => parse(s).map(Some).ok_or_else(|| ApiError::invalid(code, format!("unknown {what} {s:?}"))),
    }
}

/// A listing's page size: 1–500, default 50.
pub fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, 500)
}

/// The `before_id` of the next page: the last id when the page is full, else none (the
/// last page).
pub fn next_before_id(rows: usize, limit: i64, last_id: Option<i64>) -> Option<i64> {
    if i64::try_from(rows).unwrap_or(0) == limit { last_id } else { None }
}
