//! The one error type of the API: every failure is `{"error":{"code","message"}}` with a
//! fitting HTTP status. Codes are stable snake_case strings clients may match on; the
//! message is for humans and may change. Internal causes are logged (with the request id
//! of the span) and never returned.
//!
//! Codes (status): `unauthorized` (401), `forbidden` (403), `not_found`, `order_not_found`,
//! `refund_not_found` (404), `method_not_allowed` (405), `malformed_json` (400),
//! `unsupported_media_type` (415), `payload_too_large` (413), `invalid_request`,
//! `invalid_amount`, `invalid_out_trade_no`, `invalid_out_refund_no`, `invalid_openid`,
//! `invalid_appid`, `invalid_description`, `invalid_expires_in`, `invalid_idempotency_key`,
//! `unknown_appid`, `unknown_openid`, `invalid_login_code` (422), `out_trade_no_used`,
//! `out_refund_no_used`, `order_not_paid`, `order_not_open`, `order_paid`, `order_closed`,
//! `refund_exceeds_refundable`, `refund_failed`, `idempotency_key_reused`, `request_in_progress` (409),
//! `rate_limited` (429), `wechat_rejected` (502), `upstream_unavailable`,
//! `database_unavailable` (503), `internal_error` (500).

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure: status, stable code, human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A field the caller sent is not acceptable (422).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// WeChat's answer is not known (timeout, SYSTEMERROR…); the request may be retried.
    pub fn upstream_unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable", message)
    }

    /// WeChat refused for a reason the caller cannot fix by retrying.
    pub fn wechat_rejected(code: &str, message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "wechat_rejected", format!("WeChat refused: {code}: {message}"))
    }

    /// Logs the cause chain and returns a 500 that reveals nothing about it.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %chain(cause), "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error; see the server logs")
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message.clone() } }
    }
}

/// `a: b: c` from an error and its sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body())
    }
}

impl From<minipay_store::StoreError> for ApiError {
    fn from(e: minipay_store::StoreError) -> ApiError {
        use minipay_store::StoreError;
        match &e {
            StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                tracing::error!(error = %chain(&e), "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry",
                )
            }
            _ => ApiError::internal(&e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        minipay_store::StoreError::from(e).into()
    }
}

/// Maps actix's JSON extractor errors to our shape: syntax errors are `malformed_json`,
/// well-formed JSON of the wrong shape is `invalid_request`.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        }
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::invalid("invalid_request", e.to_string()),
        E::Deserialize(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {e}"))
        }
        E::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", other.to_string()),
    }
}
