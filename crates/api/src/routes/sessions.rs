//! `POST /v1/sessions`: a mini-program login. The backend forwards the `wx.login` code; we
//! exchange it at WeChat (`sns/jscode2session`) and record the user with its unionid (when
//! WeChat gives one). The session_key never leaves the server: with [platform]
//! session_key_encryption_key set it is kept sealed (AES-256-GCM) for
//! `POST /v1/users/decrypt`; without, it is dropped.

use actix_web::{HttpResponse, web};
use minipay_store::domain::{AppId, OpenId};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use wxpay::weixin::{ApiErrorKind, WeixinError};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sessions", web::post().to(create_session));
}

#[derive(OpenApi)]
#[openapi(paths(create_session), components(schemas(CreateSession, Session)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The mini-program; default: the configured default app.
    pub appid: Option<String>,
    /// The code from `wx.login` (valid 5 minutes, usable once).
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    pub appid: String,
    pub openid: String,
    /// Present when the app is bound to an open-platform account.
    pub unionid: Option<String>,
}

/// Exchanges a login code for the user's openid (and unionid) and records the user.
#[utoipa::path(post, path = "/v1/sessions", tag = "payments", request_body = CreateSession,
    params(("Idempotency-Key" = Option<String>, Header, description = "replay protection")),
    responses((status = 200, body = Session), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn create_session(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateSession>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let app = match &body.appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))?;
    if body.code.is_empty() || body.code.len() > 128 || !body.code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid("invalid_login_code", "code must be the value wx.login returned"));
    }
    let answer = state.weixin.jscode2session(&app.appid, &app.secret, &body.code).await;
    let outcome = match &answer {
        Ok(_) => "success",
        Err(WeixinError::Api { kind: ApiErrorKind::Busy, .. } | WeixinError::Transport(_) | WeixinError::Decode(_)) => {
            "unknown"
        }
        Err(_) => "failed",
    };
    state.metrics.upstream.with_label_values(&["sns/jscode2session", outcome]).inc();
    let session = answer.map_err(|e| match &e {
        WeixinError::Api { kind: ApiErrorKind::InvalidCode | ApiErrorKind::CodeUsed, .. } => {
            ApiError::invalid("invalid_login_code", "WeChat refused the login code (invalid, expired or used)")
        }
        WeixinError::Api { kind: ApiErrorKind::RateLimited, .. } => ApiError::new(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "WeChat rate-limits logins for this app; retry later",
        ),
        WeixinError::Api { kind: ApiErrorKind::Busy, .. } | WeixinError::Transport(_) | WeixinError::Decode(_) => {
            tracing::warn!(error = %e, "jscode2session failed");
            ApiError::upstream_unavailable("WeChat did not answer the login; retry")
        }
        WeixinError::Api { errcode, errmsg, .. } => ApiError::wechat_rejected(&errcode.to_string(), errmsg),
    })?;
    let appid = AppId::parse(app.appid.clone()).map_err(|e| ApiError::internal(&e))?;
    let openid = OpenId::parse(session.openid.clone())
        .map_err(|_| ApiError::upstream_unavailable("WeChat answered an unusable openid"))?;
    let mut conn = state.pool.acquire().await?;
    minipay_store::users::upsert(&mut conn, &appid, &openid, session.unionid.as_deref()).await?;
    if let Some(sealer) = &state.platform.sealer {
        use secrecy::ExposeSecret;
        let sealed = sealer
            .seal(appid.as_str(), openid.as_str(), session.session_key.expose_secret().as_bytes())
            .map_err(|e| ApiError::internal(&e))?;
        minipay_store::users::set_session_key(&mut conn, appid.as_str(), openid.as_str(), &sealed).await?;
    }
    tracing::info!(openid = %openid.masked(), "user logged in");
    Ok(HttpResponse::Ok().json(Session { appid: app.appid.clone(), openid: session.openid, unionid: session.unionid }))
}
