//! Error mapping shared by the platform routes (tokens, users, customer service, push).

use actix_web::http::StatusCode;
use wxpay::weixin::{ApiErrorKind, WeixinError};

use crate::error::ApiError;
use crate::platform::PlatformError;

/// WeChat's answer (or its absence) as our error shape. The errcode is always in the
/// message, so a caller can look it up in WeChat's table.
pub fn platform_error(e: PlatformError) -> ApiError {
    match e {
        PlatformError::UnknownApp(a) => ApiError::invalid("unknown_appid", format!("appid {a} is not configured")),
        PlatformError::Store(s) => s.into(),
        PlatformError::Weixin(w) => weixin_error(w),
    }
}

pub fn weixin_error(e: WeixinError) -> ApiError {
    match &e {
        WeixinError::Transport(_) | WeixinError::Decode(_) | WeixinError::Api { kind: ApiErrorKind::Busy, .. } => {
            tracing::warn!(error = %e, "WeChat did not answer usably");
            ApiError::upstream_unavailable("WeChat did not answer; retry")
        }
        WeixinError::Api { kind: ApiErrorKind::InvalidToken | ApiErrorKind::TokenExpired, errcode, .. } => {
            tracing::error!(errcode, "WeChat refused a freshly refreshed access token");
            ApiError::upstream_unavailable(format!(
                "WeChat refused the access token even after a refresh ({errcode}); retry later"
            ))
        }
        WeixinError::Api { kind: ApiErrorKind::RateLimited, errcode, .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("WeChat rate-limits this call ({errcode}); retry later"),
        ),
        WeixinError::Api { kind: ApiErrorKind::WindowClosed, errcode, errmsg } => ApiError::conflict(
            "cs_window_closed",
            format!(
                "WeChat {errcode} ({errmsg}): the user has not written to the app within 48 hours; \
                 customer-service messages can only answer a user's message"
            ),
        ),
        WeixinError::Api { kind: ApiErrorKind::WindowLimit, errcode, errmsg } => ApiError::conflict(
            "cs_message_limit",
            format!(
                "WeChat {errcode} ({errmsg}): 5 messages were already sent since the user's last message; \
                 wait for the user to write again"
            ),
        ),
        WeixinError::Api { kind: ApiErrorKind::InvalidOpenId, errcode, errmsg } => ApiError::invalid(
            "invalid_openid",
            format!("WeChat {errcode} ({errmsg}): the openid is not a user of this app"),
        ),
        WeixinError::Api { kind: ApiErrorKind::InvalidMediaId, errcode, errmsg } => ApiError::invalid(
            "invalid_media_id",
            format!("WeChat {errcode} ({errmsg}): unknown or expired media_id (temporary media last 3 days)"),
        ),
        WeixinError::Api { errcode, errmsg, .. } => ApiError::wechat_rejected(&errcode.to_string(), errmsg),
    }
}
