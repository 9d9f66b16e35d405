//! Customer-service messages we send (`POST /v1/cs/messages`) and the conversation as stored
//! (`GET /v1/cs/messages?appid=&openid=`).
//!
//! WeChat lets an app answer a user for 48 hours after the user's last message, at most 5
//! messages per user message (45015 after the window, 45047 past the count). We send and
//! report WeChat's answer as a stable error code (`cs_window_closed`, `cs_message_limit`,
//! `invalid_openid`, `invalid_media_id`) together with our own view of the window; we do not
//! refuse locally, because WeChat's view (which also counts messages sent by other tools,
//! e.g. the web customer-service tool) is the one that decides.
//!
//! Types: `text {content}`, `image {media_id}` or `image {data_base64, content_type?,
//! filename?}` (uploaded as temporary media first), `link {title, description, url,
//! thumb_url}`, `miniprogrampage {title, pagepath, thumb_media_id}`.

use actix_web::{HttpResponse, web};
use base64::Engine;
use minipay_store::cs_messages::{self, Sent};
use minipay_store::domain::OpenId;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wxpay::weixin::WeixinError;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::platform::{PlatformError, masked};
use crate::routes::platform_common::platform_error;
use crate::state::AppState;

/// Images larger than this are refused before upload (WeChat's limit for temporary images
/// is stated as 10 MB; the API's JSON body limit usually bites first).
const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/cs/messages", web::post().to(send)).route("/v1/cs/messages", web::get().to(list));
}

#[derive(OpenApi)]
#[openapi(paths(send, list), components(schemas(SendMessage)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub appid: Option<String>,
    pub openid: String,
    /// `text`, `image`, `link` or `miniprogrampage`.
    pub msgtype: String,
    #[schema(value_type = Object)]
    pub text: Option<Value>,
    #[schema(value_type = Object)]
    pub image: Option<Value>,
    #[schema(value_type = Object)]
    pub link: Option<Value>,
    #[schema(value_type = Object)]
    pub miniprogrampage: Option<Value>,
}

fn need_str<'a>(obj: &'a Value, field: &str, msgtype: &str) -> Result<&'a str, ApiError> {
    obj.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid("invalid_message", format!("{msgtype}.{field} is required")))
}

/// The message object WeChat takes (uploading an inline image first).
async fn wechat_body(state: &AppState, appid: &str, req: &SendMessage) -> Result<Value, ApiError> {
    let t = req.msgtype.as_str();
    let obj = match t {
        "text" => req.text.as_ref(),
        "image" => req.image.as_ref(),
        "link" => req.link.as_ref(),
        "miniprogrampage" => req.miniprogrampage.as_ref(),
        _ => {
            return Err(ApiError::invalid("invalid_message", "msgtype must be text, image, link or miniprogrampage"));
        }
    }
    .ok_or_else(|| ApiError::invalid("invalid_message", format!("the {t} object is required")))?;
    let inner = match t {
        "text" => {
            let content = need_str(obj, "content", t)?;
            json!({ "content": content })
        }
        "image" => match obj.get("media_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => json!({ "media_id": id }),
            _ => json!({ "media_id": upload_inline_image(state, appid, obj).await? }),
        },
        "link" => json!({
            "title": need_str(obj, "title", t)?, "description": need_str(obj, "description", t)?,
            "url": need_str(obj, "url", t)?, "thumb_url": need_str(obj, "thumb_url", t)?,
        }),
        _ => json!({
            "title": need_str(obj, "title", t)?, "pagepath": need_str(obj, "pagepath", t)?,
            "thumb_media_id": need_str(obj, "thumb_media_id", t)?,
        }),
    };
    Ok(json!({ "touser": req.openid, "msgtype": t, t: inner }))
}

async fn upload_inline_image(state: &AppState, appid: &str, obj: &Value) -> Result<String, ApiError> {
    let data = need_str(obj, "data_base64", "image")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| ApiError::invalid("invalid_message", "image.data_base64 is not base64"))?;
    if bytes.is_empty() || bytes.len() > MAX_IMAGE_BYTES {
        return Err(ApiError::invalid("invalid_message", "image must be 1 byte to 10 MB"));
    }
    let content_type = obj.get("content_type").and_then(Value::as_str).unwrap_or("image/jpeg").to_owned();
    if !content_type.starts_with("image/") {
        return Err(ApiError::invalid("invalid_message", "image.content_type must be image/*"));
    }
    let filename = obj.get("filename").and_then(Value::as_str).unwrap_or("image.jpg").to_owned();
    let weixin = state.weixin.clone();
    let bytes = std::sync::Arc::new(bytes);
    state
        .platform
        .tokens
        .call(appid, |token| {
            let (weixin, bytes, ct, name) = (weixin.clone(), bytes.clone(), content_type.clone(), filename.clone());
            async move { weixin.upload_image(&token, &name, &ct, &bytes).await }
        })
        .await
        .map_err(platform_error)
}

/// Sends a customer-service message.
#[utoipa::path(post, path = "/v1/cs/messages", tag = "platform", request_body = SendMessage,
    responses((status = 200, description = "sent"), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(appid, msgtype = %body.msgtype))]
pub async fn send(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<SendMessage>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let app = match &body.appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))?;
    tracing::Span::current().record("appid", app.appid.as_str());
    let openid = OpenId::parse(body.openid.clone())
        .map_err(|_| ApiError::invalid("invalid_openid", "openid is not a WeChat openid"))?;
    let message = wechat_body(&state, &app.appid, &body).await?;
    let weixin = state.weixin.clone();
    let msg = std::sync::Arc::new(message.clone());
    let answer = state
        .platform
        .tokens
        .call(&app.appid, |token| {
            let (weixin, msg) = (weixin.clone(), msg.clone());
            async move { weixin.send_custom(&token, &msg).await }
        })
        .await;
    let (errcode, errmsg) = match &answer {
        Err(PlatformError::Weixin(WeixinError::Api { errcode, errmsg, .. })) => (Some(*errcode), Some(errmsg.clone())),
        _ => (None, None),
    };
    let outcome = match &answer {
        Ok(()) => "success",
        Err(PlatformError::Weixin(WeixinError::Api { .. })) => "failed",
        Err(_) => "unknown",
    };
    state.metrics.upstream.with_label_values(&["cgi-bin/message/custom/send", outcome]).inc();
    // Unknown outcomes (timeouts) are recorded as failed: WeChat may or may not have
    // delivered; the caller decides whether to send again.
    let id = cs_messages::insert_sent(
        &state.pool,
        &Sent {
            appid: &app.appid,
            openid: openid.as_str(),
            msg_type: &body.msgtype,
            body: &message,
            ok: answer.is_ok(),
            errcode,
            errmsg: errmsg.as_deref(),
            sent_by: Some(caller.id),
        },
    )
    .await?;
    let window = cs_messages::window(&state.pool, &app.appid, openid.as_str()).await?;
    if let Err(e) = answer {
        tracing::info!(openid = %masked(openid.as_str()), ?errcode, "customer-service message refused");
        let mut err = platform_error(e);
        if let Some(at) = window.last_user_message_at {
            err.message
                .push_str(&format!(" (our records: the user last wrote at {at}, {} sent since)", window.sent_since));
        }
        return Err(err);
    }
    tracing::info!(openid = %masked(openid.as_str()), "customer-service message sent");
    Ok(HttpResponse::Ok().json(json!({ "id": id, "status": "sent", "msgtype": body.msgtype, "window": window })))
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    pub appid: Option<String>,
    pub openid: String,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<i64>,
}

/// The stored conversation with one user, both directions, newest first.
#[utoipa::path(get, path = "/v1/cs/messages", tag = "platform", params(ListQuery),
    responses((status = 200, description = "messages and window")))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Viewer])?;
    let app = match &q.appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let messages = cs_messages::list(&state.pool, &app.appid, &q.openid, limit).await?;
    let window = cs_messages::window(&state.pool, &app.appid, &q.openid).await?;
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "window": window })))
}
