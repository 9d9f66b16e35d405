//! Users across apps and their personal data, served from the server side where the app
//! secret and session keys live:
//! - `GET /v1/users?unionid=` or `?openid=&appid=`: the user's openids in every configured
//!   app bound to the same open-platform account (UnionID, seed §5);
//! - `POST /v1/users/phone-number {appid, code, openid?}`: the phone number behind a
//!   getPhoneNumber code (single use: never sent twice once WeChat answered; WeChat bills
//!   each success since 2023, so calls are metered), cached on the user;
//!   `GET /v1/users/phone-number?appid=&openid=` reads the cache without a billed call;
//! - `POST /v1/users/decrypt {appid, openid, encrypted_data, iv}`: `wx.getUserInfo`-style
//!   data decrypted with the session_key kept (sealed) from the last login — the key itself
//!   is never returned.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use minipay_store::domain::OpenId;
use minipay_store::users::{self, PhoneCodeClaim};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wxpay::weixin::{ApiErrorKind, WeixinError};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::platform::{PlatformError, masked};
use crate::routes::platform_common::platform_error;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/users", web::get().to(find_users))
        .route("/v1/users/phone-number", web::post().to(phone_number))
        .route("/v1/users/phone-number", web::get().to(cached_phone_number))
        .route("/v1/users/decrypt", web::post().to(decrypt));
}

#[derive(OpenApi)]
#[openapi(
    paths(find_users, phone_number, cached_phone_number, decrypt),
    components(schemas(UserLinks, AppOpenId, PhoneRequest, PhoneNumber, DecryptRequest))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

fn app_of<'a>(state: &'a AppState, appid: Option<&String>) -> Result<&'a minipay_config::AppConfig, ApiError> {
    match appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))
}

fn parse_openid(s: &str) -> Result<OpenId, ApiError> {
    OpenId::parse(s.to_owned()).map_err(|_| ApiError::invalid("invalid_openid", "openid is not a WeChat openid"))
}

#[derive(Deserialize, IntoParams)]
pub struct UserQuery {
    pub unionid: Option<String>,
    pub openid: Option<String>,
    /// With `openid`; default: the configured default app.
    pub appid: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AppOpenId {
    pub appid: String,
    pub openid: String,
    /// First login to this app.
    pub since: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct UserLinks {
    /// Absent when the user's app is not bound to an open-platform account.
    pub unionid: Option<String>,
    pub users: Vec<AppOpenId>,
}

/// The user's openids across the configured apps.
#[utoipa::path(get, path = "/v1/users", tag = "platform", params(UserQuery),
    responses((status = 200, body = UserLinks), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn find_users(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<UserQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Internal])?;
    let found = match (&q.unionid, &q.openid) {
        (Some(u), None) if q.appid.is_none() => {
            if u.is_empty() || u.len() > 64 {
                return Err(ApiError::invalid("invalid_unionid", "unionid must be WeChat's value"));
            }
            users::by_unionid(&state.pool, u).await?
        }
        (None, Some(o)) => {
            let app = app_of(&state, q.appid.as_ref())?;
            let openid = parse_openid(o)?;
            match users::by_openid(&state.pool, &app.appid, openid.as_str()).await? {
                Some(u) => match &u.unionid {
                    Some(union) => users::by_unionid(&state.pool, union).await?,
                    None => vec![u],
                },
                None => vec![],
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_request",
                "give either unionid, or openid (with appid for a non-default app)",
            ));
        }
    };
    // Only apps of this deployment: a unionid spans the whole open-platform account.
    let found: Vec<_> = found.into_iter().filter(|u| state.config.app(&u.appid).is_some()).collect();
    if found.is_empty() {
        return Err(ApiError::not_found("user_not_found", "no user with this id has logged in"));
    }
    let unionid = found.iter().find_map(|u| u.unionid.clone());
    Ok(HttpResponse::Ok().json(UserLinks {
        unionid,
        users: found.into_iter().map(|u| AppOpenId { appid: u.appid, openid: u.openid, since: u.created_at }).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneRequest {
    pub appid: Option<String>,
    /// The code of the `getPhoneNumber` button (single use).
    pub code: String,
    /// When given (and the user has logged in), the number is cached on the user.
    pub openid: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneNumber {
    pub appid: String,
    pub openid: Option<String>,
    /// With the country code for foreign numbers.
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
    /// Whether the number is now cached on the user.
    pub cached: bool,
}

fn country(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// The phone number behind a getPhoneNumber code.
#[utoipa::path(post, path = "/v1/users/phone-number", tag = "platform", request_body = PhoneRequest,
    responses((status = 200, body = PhoneNumber), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(appid))]
pub async fn phone_number(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<PhoneRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let app = app_of(&state, body.appid.as_ref())?;
    tracing::Span::current().record("appid", app.appid.as_str());
    if body.code.is_empty() || body.code.len() > 128 || !body.code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid("invalid_phone_code", "code must be the value getPhoneNumber returned"));
    }
    let openid = body.openid.as_deref().map(parse_openid).transpose()?;
    let code_hash = hex::encode(Sha256::digest(format!("{}:{}", app.appid, body.code)));
    let id = match users::claim_phone_code(&state.pool, &app.appid, &code_hash, openid.as_ref().map(|o| o.as_str()))
        .await?
    {
        PhoneCodeClaim::Go(id) => id,
        PhoneCodeClaim::InProgress => {
            return Err(ApiError::conflict("request_in_progress", "this code is being exchanged right now"));
        }
        PhoneCodeClaim::Used { status, errcode } => {
            let answer = match errcode {
                Some(c) => format!("WeChat answered {c}"),
                None => format!("WeChat answered {status}"),
            };
            return Err(ApiError::conflict(
                "phone_code_used",
                format!(
                    "this getPhoneNumber code was already used ({answer}); codes are single-use — \
                     ask the user to tap the button again for a new one"
                ),
            ));
        }
    };
    let weixin = state.weixin.clone();
    let code = body.code.clone();
    let answer = state
        .platform
        .tokens
        .call(&app.appid, |token| {
            let (weixin, code) = (weixin.clone(), code.clone());
            async move { weixin.user_phone_number(&token, &code).await }
        })
        .await;
    let (status, errcode) = match &answer {
        Ok(_) => ("success", None),
        Err(PlatformError::Weixin(WeixinError::Api { kind: ApiErrorKind::Busy, errcode, .. })) => {
            ("unknown", Some(*errcode))
        }
        Err(PlatformError::Weixin(e @ WeixinError::Api { errcode, .. })) if !e.is_token_error() => {
            ("failed", Some(*errcode))
        }
        Err(_) => ("unknown", None),
    };
    users::finish_phone_code(&state.pool, id, status, errcode).await?;
    state.metrics.upstream.with_label_values(&["wxa/business/getuserphonenumber", status]).inc();
    let info = answer.map_err(|e| match e {
        PlatformError::Weixin(WeixinError::Api { kind: ApiErrorKind::InvalidCode, errcode, errmsg }) => {
            ApiError::invalid(
                "invalid_phone_code",
                format!("WeChat {errcode} ({errmsg}): the code is invalid, expired or already used"),
            )
        }
        other => platform_error(other),
    })?;
    let mut cached = false;
    if let Some(o) = &openid {
        cached = users::set_phone(
            &state.pool,
            &app.appid,
            o.as_str(),
            &info.phone_number,
            &info.pure_phone_number,
            &country(&info.country_code),
        )
        .await?;
        tracing::info!(openid = %masked(o.as_str()), cached, "phone number obtained");
    }
    Ok(HttpResponse::Ok().json(PhoneNumber {
        appid: app.appid.clone(),
        openid: openid.map(|o| o.as_str().to_owned()),
        country_code: country(&info.country_code),
        phone_number: info.phone_number,
        pure_phone_number: info.pure_phone_number,
        cached,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct PhoneQuery {
    pub appid: Option<String>,
    pub openid: String,
}

/// The phone number cached on a user (no WeChat call, nothing billed).
#[utoipa::path(get, path = "/v1/users/phone-number", tag = "platform", params(PhoneQuery),
    responses((status = 200, body = PhoneNumber), (status = 404, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn cached_phone_number(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<PhoneQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let app = app_of(&state, q.appid.as_ref())?;
    let openid = parse_openid(&q.openid)?;
    let p = users::phone(&state.pool, &app.appid, openid.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("phone_not_cached", "no phone number is cached for this user"))?;
    Ok(HttpResponse::Ok().json(PhoneNumber {
        appid: app.appid.clone(),
        openid: Some(openid.as_str().to_owned()),
        phone_number: p.phone_number,
        pure_phone_number: p.pure_phone_number,
        country_code: p.country_code,
        cached: true,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    pub appid: Option<String>,
    pub openid: String,
    /// `encryptedData` from the mini-program (base64).
    pub encrypted_data: String,
    /// `iv` from the mini-program (base64).
    pub iv: String,
}

/// Decrypts `wx.getUserInfo`-style data with the session key kept from the user's last
/// login (the watermark's appid is checked).
#[utoipa::path(post, path = "/v1/users/decrypt", tag = "platform", request_body = DecryptRequest,
    responses((status = 200, description = "the decrypted JSON"), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn decrypt(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<DecryptRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let app = app_of(&state, body.appid.as_ref())?;
    let openid = parse_openid(&body.openid)?;
    let sealer = state.platform.sealer.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "session_keys_not_kept",
            "session keys are not kept: set [platform] session_key_encryption_key",
        )
    })?;
    let sealed = users::session_key(&state.pool, &app.appid, openid.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("session_not_found", "no session key for this user: log in first"))?;
    let key = sealer
        .open(&app.appid, openid.as_str(), &sealed)
        .ok_or_else(|| ApiError::internal(&std::io::Error::other("a sealed session key does not open")))?;
    let key = secrecy::SecretString::from(String::from_utf8_lossy(&key).into_owned());
    let data = wxpay::weixin::decrypt_user_data(&key, &body.encrypted_data, &body.iv, &app.appid)
        .map_err(|e| ApiError::invalid("decrypt_failed", e.to_string()))?;
    Ok(HttpResponse::Ok().json(data))
}
