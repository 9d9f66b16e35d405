//! What several route modules share: the preamble of a request that creates a money
//! movement (payouts, red packets), who may see an order, amounts, numbers derived from an
//! Idempotency-Key, and the listings' query-string filters and paging.

use actix_web::{HttpMessage, HttpRequest};
use chrono::Utc;
use minipay_config::{AppConfig, Config};
use sha2::{Digest, Sha256};
use wxpay::Fen;

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

/// Largest order amount accepted (fen): 100 million yuan, far above any mini-program sale;
/// a guard against unit mistakes (yuan sent as fen × 100).
pub const MAX_AMOUNT: i64 = 10_000_000_000;

/// Client keys see their own orders only; staff roles see all. Others' orders are 404, so
/// their existence does not leak.
pub fn check_visible(caller: &Caller, client_id: Option<uuid::Uuid>) -> Result<(), ApiError> {
    if caller.role == Role::Client && client_id != Some(caller.id) {
        return Err(ApiError::not_found("order_not_found", "no such order"));
    }
    Ok(())
}

/// Parses an amount in integer fen: `invalid_amount` for anything else.
pub fn parse_amount(v: &serde_json::Value, max: i64) -> Result<Fen, ApiError> {
    match v.as_i64() {
        Some(n) if n > 0 && n <= max => Ok(Fen::new(n)),
        Some(_) => Err(ApiError::invalid("invalid_amount", format!("amount must be between 1 and {max} fen"))),
        None => Err(ApiError::invalid("invalid_amount", "amount must be an integer number of fen")),
    }
}

/// A number derived from the client and its Idempotency-Key (32 hex digits), else a new
/// time-ordered random one.
pub fn generate_number(caller: &Caller, key: Option<&IdempotencyKey>, prefix: &str) -> String {
    match key {
        Some(IdempotencyKey(k)) => {
            let h = hex::encode(Sha256::digest(format!("{prefix}:{}:{k}", caller.id)));
            h[..32].to_owned()
        }
        None => {
            use rand::Rng;
            let tail: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(18).map(char::from).collect();
            format!("{}{tail}", Utc::now().format("%Y%m%d%H%M%S"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refund or order number derived from an Idempotency-Key is the same on every retry
    /// (issue 22: a retry must reach the same refund, never a second one).
    #[test]
    fn numbers_from_an_idempotency_key_are_deterministic() {
        let caller = Caller { id: uuid::Uuid::new_v4(), name: "shop".into(), role: Role::Client };
        let key = IdempotencyKey("retry-me".into());
        let first = generate_number(&caller, Some(&key), "refund:T1");
        assert_eq!(first, generate_number(&caller, Some(&key), "refund:T1"));
        assert!(minipay_store::domain::OutRefundNo::parse(first.clone()).is_ok());
        assert_ne!(first, generate_number(&caller, Some(&key), "refund:T2"), "per order");
        let other = Caller { id: uuid::Uuid::new_v4(), ..caller.clone() };
        assert_ne!(first, generate_number(&other, Some(&key), "refund:T1"), "per client");
    }
}
