//! 消息推送: where WeChat pushes what users send to the mini-program's customer service.
//!
//! - `GET /wechat/push/{appid}`: URL verification when the console saves the settings —
//!   `signature` = sha1 of the sorted token, timestamp and nonce; the answer is `echostr`
//!   verbatim (anything else and the console refuses the URL).
//! - `POST /wechat/push/{appid}`: a message or event, XML or JSON, plaintext or safe mode
//!   (compat mode is read as safe mode). Refused with 401/400 and nothing stored when the
//!   signature, `msg_signature`, ciphertext or appid suffix is wrong.
//!
//! WeChat waits 5 seconds for the answer, then retries (three tries in all) and at last
//! tells the user the service is unavailable. So the answer does not wait for a slow
//! database: the message is stored by a task of its own, and if that has not finished
//! within `push_reply_budget_ms` (3 s by default) we answer `success` anyway and let it
//! finish. A store that *fails* before the budget answers 500, so WeChat retries; the
//! retry is harmless because messages are deduplicated by MsgId (events by FromUserName +
//! CreateTime). Stored messages are announced to client backends as `cs_message.received`
//! webhooks in the same transaction.
//!
//! With `transfer_to_customer_service` the answer to a user's message is WeChat's
//! `transfer_customer_service` reply (encrypted in safe mode), which hands the conversation
//! to the web customer-service tool.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::OpenApi;
use wxpay::push::{Format, PushError, PushMessage, PushQuery};

use crate::platform::masked;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/wechat/push/{appid}").route(web::get().to(verify_url)).route(web::post().to(receive)));
}

#[derive(OpenApi)]
#[openapi(paths(verify_url, receive))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

fn plain(status: actix_web::http::StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(body)
}

/// WeChat's URL verification.
#[utoipa::path(get, path = "/wechat/push/{appid}", tag = "wechat callbacks",
    responses((status = 200, description = "echostr"), (status = 401, description = "bad signature")))]
#[tracing::instrument(skip_all, fields(appid = %appid))]
pub async fn verify_url(
    state: web::Data<AppState>,
    appid: web::Path<String>,
    q: web::Query<PushQuery>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(app) = state.platform.push.get(appid.as_str()) else {
        return plain(StatusCode::NOT_FOUND, "unknown app");
    };
    match app.reader.verify_url(&q) {
        Some(echo) => {
            tracing::info!("push URL verified");
            HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(echo.to_owned())
        }
        None => {
            tracing::warn!("push URL verification with a bad signature");
            plain(StatusCode::UNAUTHORIZED, "invalid signature")
        }
    }
}

/// A pushed message or event.
#[utoipa::path(post, path = "/wechat/push/{appid}", tag = "wechat callbacks",
    responses((status = 200, description = "success"), (status = 401, description = "bad signature"),
              (status = 400, description = "unreadable")))]
#[tracing::instrument(skip_all, fields(appid = %appid))]
pub async fn receive(
    state: web::Data<AppState>,
    appid: web::Path<String>,
    q: web::Query<PushQuery>,
    body: web::Bytes,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let appid = appid.into_inner();
    let Some(app) = state.platform.push.get(appid.as_str()) else {
        return plain(StatusCode::NOT_FOUND, "unknown app");
    };
    let (msg, format, safe) = match app.reader.read(&q, &body) {
        Ok(m) => m,
        Err(e @ PushError::Signature) => {
            tracing::warn!(error = %e, "push refused");
            return plain(StatusCode::UNAUTHORIZED, "invalid signature");
        }
        Err(e) => {
            tracing::warn!(error = %e, "push refused");
            return plain(StatusCode::BAD_REQUEST, "unreadable message");
        }
    };
    tracing::info!(openid = %masked(&msg.from_user_name), msg_type = %msg.msg_type, safe, "push received");
    let pool = state.pool.clone();
    let stored = tokio::spawn(store(pool, appid.clone(), msg.clone(), safe));
    match tokio::time::timeout(state.platform.push_reply_budget, stored).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %crate::error::chain(&e), "push not stored; WeChat will retry");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "retry");
        }
        Ok(Err(join)) => {
            tracing::error!(error = %join, "push store task failed; WeChat will retry");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "retry");
        }
        Err(_) => {
            // The task keeps running; WeChat must have its answer within 5 s.
            tracing::warn!(
                budget_ms = state.platform.push_reply_budget.as_millis() as u64,
                "storing the push is slow; answered success, the store continues"
            );
        }
    }
    if app.transfer_to_customer_service && msg.event.is_none() {
        let (ts, nonce) = (q.timestamp.clone().unwrap_or_default(), q.nonce.clone().unwrap_or_default());
        match app.reader.transfer_reply(&msg, format, safe, &ts, &nonce) {
            Ok(reply) => {
                let ct = match format {
                    Format::Xml => "text/xml; charset=utf-8",
                    Format::Json => "application/json",
                };
                return HttpResponse::Ok().content_type(ct).body(reply);
            }
            Err(e) => tracing::error!(error = %e, "transfer reply not built; answering success"),
        }
    }
    plain(StatusCode::OK, "success")
}

/// Stores one message, retrying briefly on a connection failure (the caller may already
/// have answered WeChat).
async fn store(
    pool: sqlx::PgPool,
    appid: String,
    msg: PushMessage,
    safe: bool,
) -> Result<(), minipay_store::StoreError> {
    let key = msg.dedupe_key();
    let body = Value::Object(msg.fields.clone());
    let wechat_time: Option<DateTime<Utc>> = DateTime::from_timestamp(msg.create_time, 0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: Result<Option<i64>, minipay_store::StoreError> = async {
            let mut tx = pool.begin().await?;
            let id = minipay_store::cs_messages::insert_received(
                &mut tx,
                &minipay_store::cs_messages::Received {
                    appid: &appid,
                    openid: &msg.from_user_name,
                    dedupe_key: &key,
                    msg_type: &msg.msg_type,
                    event: msg.event.as_deref(),
                    wechat_time,
                    safe_mode: safe,
                    body: &body,
                },
            )
            .await?;
            tx.commit().await?;
            Ok(id)
        }
        .await;
        match result {
            Ok(Some(id)) => {
                tracing::info!(id, "push stored");
                return Ok(());
            }
            Ok(None) => {
                tracing::info!("push already stored (WeChat retry)");
                return Ok(());
            }
            Err(e) if attempt < 3 => {
                tracing::warn!(error = %crate::error::chain(&e), attempt, "storing the push failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
