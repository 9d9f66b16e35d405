//! `GET /v1/wechat/access-token?appid=`: the app's shared access token for our internal
//! services (role `internal`). They must not fetch their own: one holder refreshes it
//! ahead of expiry, and only normal-mode refreshes are made (see `crate::platform`).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::platform_common::platform_error;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/wechat/access-token", web::get().to(access_token));
}

#[derive(OpenApi)]
#[openapi(paths(access_token), components(schemas(AccessToken)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, IntoParams)]
pub struct TokenQuery {
    /// The mini-program; default: the configured default app.
    pub appid: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessToken {
    pub appid: String,
    pub access_token: String,
    /// Use it until then; ask again afterwards (the answer is cached, asking is cheap).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The shared access token of an app.
#[utoipa::path(get, path = "/v1/wechat/access-token", tag = "platform", params(TokenQuery),
    responses((status = 200, body = AccessToken), (status = 403, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(appid))]
pub async fn access_token(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Internal])?;
    let app = match &q.appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))?;
    tracing::Span::current().record("appid", app.appid.as_str());
    let t = state.platform.tokens.get(&app.appid).await.map_err(platform_error)?;
    use secrecy::ExposeSecret;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(AccessToken {
        appid: app.appid.clone(),
        access_token: t.token.expose_secret().to_owned(),
        expires_at: t.expires_at,
    }))
}
