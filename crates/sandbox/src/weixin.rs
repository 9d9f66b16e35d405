//! The WeChat (not Pay) API a mini-program backend uses: `GET /sns/jscode2session`,
//! `GET /cgi-bin/token`, `POST /cgi-bin/message/custom/send` (its customer-service rules
//! and the other platform APIs live in `platform`). JSON answers with WeChat's
//! `errcode` / `errmsg`. Faults on these paths: `error` answers `{"errcode": -1, "errmsg":
//! "system error"}` (the err_code is ignored), `http500`, `delay`, `drop`.

use std::sync::Arc;

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{Value, json};
use wxpay::secret::ExposeSecret;

use crate::faults::FaultKind;
use crate::state::{Message, Token, nonce};
use crate::wire::Reply;
use crate::{Shared, openid_for, unionid_for};

pub const PATHS: [&str; 6] = [
    "/sns/jscode2session",
    "/cgi-bin/token",
    "/cgi-bin/message/custom/send",
    "/cgi-bin/stable_token",
    "/wxa/business/getuserphonenumber",
    "/cgi-bin/media/upload",
];

/// Login codes last five minutes (WeChat's documented lifetime).
const CODE_LIFETIME_SECS: i64 = 300;
/// Access tokens last 7200 s on the sandbox clock.
pub const TOKEN_LIFETIME_SECS: i64 = 7200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sns/jscode2session", web::get().to(jscode2session))
        .route("/cgi-bin/token", web::get().to(token))
        .route("/cgi-bin/message/custom/send", web::post().to(custom_send));
}

pub(crate) fn errcode(code: i64, msg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": code, "errmsg": msg}))
}

/// Applies a fault for a WeChat API path; `Some` is the answer to give instead.
pub(crate) async fn fault(shared: &Shared, path: &str) -> Option<HttpResponse> {
    let f = shared.lock().faults.take(path)?;
    match f {
        FaultKind::Http500 => Some(Reply::Http500.into_http()),
        FaultKind::Drop | FaultKind::LostAnswer => Some(Reply::Drop.into_http()),
        FaultKind::Error { .. } | FaultKind::ReturnFail { .. } => Some(errcode(-1, "system error")),
        FaultKind::Delay { delay_ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            None
        }
        FaultKind::Duplicate
        | FaultKind::Reorder { .. }
        | FaultKind::Unsigned
        | FaultKind::SignTest
        | FaultKind::CorruptBill => None,
    }
}

/// Checks appid and secret; `Err` is WeChat's answer.
fn check_app(shared: &Shared, appid: &str, secret: &str) -> Result<(), HttpResponse> {
    let Some(app) = shared.apps.get(appid) else {
        return Err(errcode(40013, "invalid appid"));
    };
    if app.secret.expose_secret() != secret {
        return Err(errcode(40125, "invalid appsecret"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct CodeQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

async fn jscode2session(q: web::Query<CodeQuery>, shared: Data<Arc<Shared>>) -> HttpResponse {
    if let Some(r) = fault(&shared, "/sns/jscode2session").await {
        return r;
    }
    let (Some(appid), Some(secret), Some(code)) = (&q.appid, &q.secret, &q.js_code) else {
        return errcode(41002, "appid missing");
    };
    if q.grant_type.as_deref() != Some("authorization_code") {
        return errcode(40002, "invalid grant_type");
    }
    if let Err(r) = check_app(&shared, appid, secret) {
        return r;
    }
    let mut st = shared.lock();
    let now = st.clock.now();
    let Some(c) = st.codes.get_mut(code.as_str()) else {
        return errcode(40029, "invalid code");
    };
    if c.appid != *appid || now - c.created_at > Duration::seconds(CODE_LIFETIME_SECS) {
        return errcode(40029, "invalid code");
    }
    if c.used {
        return errcode(40163, "code been used");
    }
    c.used = true;
    let user = c.user.clone();
    let mut body = json!({
        "openid": openid_for(&user, appid),
        "session_key": base64_key(),
    });
    if shared.apps.get(appid.as_str()).is_some_and(|a| a.unionid) {
        body["unionid"] = Value::String(unionid_for(&user));
    }
    HttpResponse::Ok().json(body)
}

/// A session key looks like WeChat's: base64 of 16 random bytes.
fn base64_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Deserialize)]
struct TokenQuery {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
}

async fn token(q: web::Query<TokenQuery>, shared: Data<Arc<Shared>>) -> HttpResponse {
    if let Some(r) = fault(&shared, "/cgi-bin/token").await {
        return r;
    }
    if q.grant_type.as_deref() != Some("client_credential") {
        return errcode(40002, "invalid grant_type");
    }
    let (Some(appid), Some(secret)) = (&q.appid, &q.secret) else {
        return errcode(41002, "appid missing");
    };
    if let Err(r) = check_app(&shared, appid, secret) {
        return r;
    }
    let mut st = shared.lock();
    let expires_at = st.clock.now() + Duration::seconds(TOKEN_LIFETIME_SECS);
    // WeChat's tokens are long opaque strings; earlier tokens stay valid until they expire.
    let token = format!("{}{}", nonce(), nonce());
    st.tokens.insert(token.clone(), Token { appid: appid.clone(), expires_at, invalidated: false });
    HttpResponse::Ok().json(json!({"access_token": token, "expires_in": TOKEN_LIFETIME_SECS}))
}

#[derive(Deserialize)]
struct SendQuery {
    access_token: Option<String>,
}

async fn custom_send(
    req: HttpRequest,
    q: web::Query<SendQuery>,
    body: web::Bytes,
    shared: Data<Arc<Shared>>,
) -> HttpResponse {
    let _ = req;
    if let Some(r) = fault(&shared, "/cgi-bin/message/custom/send").await {
        return r;
    }
    let mut st = shared.lock();
    let now = st.clock.now();
    let appid = match crate::platform::token_app(&st, q.access_token.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let touser = msg.get("touser").and_then(Value::as_str).unwrap_or("").to_owned();
    let msgtype = msg.get("msgtype").and_then(Value::as_str).unwrap_or("").to_owned();
    // Known openid, message shape, media, and the 48-hour / 5-message window.
    if let Err(r) = crate::platform::check_custom(&mut st, &shared, &appid, &msg) {
        return r;
    }
    st.messages.push(Message { appid, at: now, touser, msgtype, body: msg });
    errcode(0, "ok")
}
