//! The mini-program platform APIs of issue 18, as WeChat behaves (where its documents are
//! silent the behaviour is a guess, marked *guess*):
//!
//! - `POST /cgi-bin/stable_token` (JSON): normal mode returns the app's current stable token
//!   while it has more than 5 minutes left (with the remaining `expires_in`) and a new one
//!   in its last 5 minutes, the old one staying valid until it expires; force mode
//!   invalidates the current token and mints a new one, at most 20 times per Beijing day
//!   (then 45009) and not within 30 s of the previous forced refresh (then the current
//!   token comes back unchanged: WeChat's document says such a call "does not refresh").
//!   Stable tokens are separate from `cgi-bin/token` ones.
//! - `POST /wxa/business/getuserphonenumber?access_token=` `{code}`: codes minted with
//!   `POST /sandbox/phonecode`, valid 5 minutes (*guess*), single use — a used or unknown
//!   code answers 40029 (*guess*: the documents list only 40029 for bad codes).
//! - `POST /cgi-bin/media/upload?access_token=&type=image` (multipart, field `media`):
//!   temporary media valid 3 days on the sandbox clock.
//! - Customer-service window for `message/custom/send` (see `weixin`): a user who sent a
//!   message (not an event) may receive 5 messages within 48 hours of it; then 45047, and
//!   after 48 hours 45015. Unknown openids answer 40003.
//! - 消息推送: `POST /sandbox/cs/push-config` saves an app's push settings as the console
//!   does — after a GET URL verification of the server (signature + echostr); `POST
//!   /sandbox/cs/push` makes a user send a message (or an event), pushed in the app's format
//!   (XML/JSON) and mode (plain, compat, safe), retried up to 3 attempts when the server
//!   does not answer 200 within `notify_timeout_ms` (WeChat: 5 s).

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Json, Query};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wxpay::push::{Format, PushCipher, encode_fields, msg_signature, url_signature};
use wxpay::secret::{ExposeSecret, SecretString};

use crate::state::{State, Token, nonce};
use crate::weixin::{TOKEN_LIFETIME_SECS, errcode, fault};
use crate::{Shared, openid_for};

pub const PATHS: [&str; 3] = ["/cgi-bin/stable_token", "/wxa/business/getuserphonenumber", "/cgi-bin/media/upload"];

/// WeChat renews a stable token in its last 5 minutes.
const STABLE_RENEW_SECS: i64 = 300;
const FORCE_PER_DAY: u32 = 20;
const FORCE_GAP_SECS: i64 = 30;
const PHONE_CODE_SECS: i64 = 300;
const MEDIA_SECS: i64 = 3 * 86_400;
/// The customer-service window: 48 hours, 5 messages.
pub const WINDOW_SECS: i64 = 48 * 3600;
pub const WINDOW_MESSAGES: u32 = 5;
/// Image upload limit of temporary media (*guess* from the documents: 10 MB).
const MEDIA_LIMIT: usize = 10 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cgi-bin/stable_token", web::post().to(stable_token))
        .route("/wxa/business/getuserphonenumber", web::post().to(phone_number))
        .service(
            web::resource("/cgi-bin/media/upload")
                .app_data(web::PayloadConfig::new(MEDIA_LIMIT + 64 * 1024))
                .route(web::post().to(media_upload)),
        )
        .route("/sandbox/phonecode", web::post().to(phonecode))
        .route("/sandbox/stable-token-calls", web::get().to(stable_calls))
        .route("/sandbox/cs/push-config", web::post().to(push_config))
        .route("/sandbox/cs/push", web::post().to(push))
        .route("/sandbox/cs/pushes", web::get().to(pushes))
        .route("/sandbox/media", web::get().to(list_media));
}

type S = Data<Arc<Shared>>;

/// The current stable token of an app.
#[derive(Debug, Clone)]
pub struct StableSlot {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Forced refreshes on `force_day` (Beijing date).
    pub force_day: Option<NaiveDate>,
    pub force_count: u32,
    pub last_force_at: Option<DateTime<Utc>>,
}

/// One stable_token call as the sandbox saw it.
#[derive(Debug, Clone, Serialize)]
pub struct StableCall {
    pub appid: String,
    pub force_refresh: bool,
    pub at: DateTime<Utc>,
    /// `new` (a token minted), `same` (the current one returned) or `error`.
    pub result: String,
    pub errcode: i64,
}

#[derive(Debug, Clone)]
pub struct PhoneCode {
    pub user: String,
    pub appid: String,
    pub created_at: DateTime<Utc>,
    pub used: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Media {
    pub media_id: String,
    pub appid: String,
    pub kind: String,
    pub bytes: usize,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct CsWindow {
    pub last_user_message_at: Option<DateTime<Utc>>,
    pub sent_since: u32,
}

/// An app's 消息推送 configuration.
#[derive(Clone)]
pub struct PushSettings {
    pub url: String,
    pub token: SecretString,
    pub aes_key: Option<SecretString>,
    pub format: Format,
    /// `plain`, `compat` (plaintext and Encrypt together) or `safe`.
    pub mode: String,
    /// WeChat's original id of the mini-program (`gh_…`), the ToUserName of pushes.
    pub original_id: String,
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings").field("url", &self.url).field("mode", &self.mode).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PushAttempt {
    pub http_status: Option<u16>,
    pub reply: String,
    pub elapsed_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    pub appid: String,
    pub openid: String,
    pub msg_type: String,
    pub msg_id: Option<String>,
    pub delivered: bool,
    pub attempts: Vec<PushAttempt>,
}

/// The app a token belongs to, or WeChat's error answer.
pub(crate) fn token_app(st: &State, token: Option<&str>) -> Result<String, HttpResponse> {
    let Some(token) = token else {
        return Err(errcode(41001, "access_token missing"));
    };
    let now = st.clock.now();
    match st.tokens.get(token) {
        None => Err(errcode(40001, "invalid credential, access_token is invalid or not latest")),
        Some(t) if t.invalidated => Err(errcode(40001, "invalid credential, access_token is invalid or not latest")),
        Some(t) if t.expires_at <= now => Err(errcode(42001, "access_token expired")),
        Some(t) => Ok(t.appid.clone()),
    }
}

fn beijing_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&FixedOffset::east_opt(8 * 3600).expect("+8")).date_naive()
}

fn mint(st: &mut State, appid: &str) -> (String, DateTime<Utc>) {
    let expires_at = st.clock.now() + Duration::seconds(TOKEN_LIFETIME_SECS);
    let token = format!("{}{}{}", nonce(), nonce(), nonce());
    st.tokens.insert(token.clone(), Token { appid: appid.to_owned(), expires_at, invalidated: false });
    (token, expires_at)
}

#[derive(Deserialize)]
struct StableRequest {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(body: web::Bytes, shared: S) -> HttpResponse {
    if let Some(r) = fault(&shared, "/cgi-bin/stable_token").await {
        return r;
    }
    // POST JSON only, as WeChat's document says.
    let Ok(req) = serde_json::from_slice::<StableRequest>(&body) else {
        return errcode(47001, "data format error");
    };
    if req.grant_type.as_deref() != Some("client_credential") {
        return errcode(40002, "invalid grant_type");
    }
    let (Some(appid), Some(secret)) = (&req.appid, &req.secret) else {
        return errcode(41002, "appid missing");
    };
    match shared.apps.get(appid.as_str()) {
        None => return errcode(40013, "invalid appid"),
        Some(a) if a.secret.expose_secret() != secret => return errcode(40125, "invalid appsecret"),
        Some(_) => {}
    }
    let mut st = shared.lock();
    let now = st.clock.now();
    let current = st.stable.get(appid.as_str()).cloned();
    let valid =
        |s: &StableSlot, st: &State| st.tokens.get(&s.token).is_some_and(|t| !t.invalidated && t.expires_at > now);
    let record = |st: &mut State, result: &str, code: i64| {
        st.stable_calls.push(StableCall {
            appid: appid.clone(),
            force_refresh: req.force_refresh,
            at: now,
            result: result.into(),
            errcode: code,
        });
    };
    let answer = |token: &str, expires_at: DateTime<Utc>| {
        HttpResponse::Ok().json(json!({"access_token": token, "expires_in": (expires_at - now).num_seconds()}))
    };
    if req.force_refresh {
        let mut slot = current.unwrap_or(StableSlot {
            token: String::new(),
            expires_at: now,
            force_day: None,
            force_count: 0,
            last_force_at: None,
        });
        let today = beijing_day(now);
        if slot.force_day != Some(today) {
            slot.force_day = Some(today);
            slot.force_count = 0;
        }
        if slot.force_count >= FORCE_PER_DAY {
            record(&mut st, "error", 45009);
            return errcode(45009, "reach max api daily quota limit");
        }
        if slot.last_force_at.is_some_and(|t| now - t < Duration::seconds(FORCE_GAP_SECS)) && valid(&slot, &st) {
            record(&mut st, "same", 0);
            let r = answer(&slot.token, slot.expires_at);
            return r;
        }
        if let Some(t) = st.tokens.get_mut(&slot.token) {
            t.invalidated = true;
        }
        let (token, expires_at) = mint(&mut st, appid);
        slot.token = token.clone();
        slot.expires_at = expires_at;
        slot.force_count += 1;
        slot.last_force_at = Some(now);
        st.stable.insert(appid.clone(), slot);
        record(&mut st, "new", 0);
        return answer(&token, expires_at);
    }
    if let Some(slot) = current.as_ref().filter(|s| valid(s, &st)) {
        if slot.expires_at - now > Duration::seconds(STABLE_RENEW_SECS) {
            record(&mut st, "same", 0);
            return answer(&slot.token, slot.expires_at);
        }
    }
    // No token, an invalidated one, or the last 5 minutes: a new token; the old one (if
    // still valid) keeps working until it expires.
    let (token, expires_at) = mint(&mut st, appid);
    let mut slot = current.unwrap_or(StableSlot {
        token: String::new(),
        expires_at,
        force_day: None,
        force_count: 0,
        last_force_at: None,
    });
    slot.token = token.clone();
    slot.expires_at = expires_at;
    st.stable.insert(appid.clone(), slot);
    record(&mut st, "new", 0);
    answer(&token, expires_at)
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A user's phone number: configured, else derived from the id.
fn phone_of(shared: &Shared, user: &str) -> String {
    if let Some(p) = shared.users.get(user).and_then(|u| u.phone.clone()) {
        return p;
    }
    use md5::{Digest, Md5};
    let h = Md5::digest(format!("phone:{user}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % 100_000_000;
    format!("139{n:08}")
}

async fn phone_number(q: Query<TokenQuery>, body: web::Bytes, shared: S) -> HttpResponse {
    if let Some(r) = fault(&shared, "/wxa/business/getuserphonenumber").await {
        return r;
    }
    let mut st = shared.lock();
    let appid = match token_app(&st, q.access_token.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned));
    let Some(code) = code else {
        return errcode(47001, "data format error");
    };
    let now = st.clock.now();
    let Some(c) = st.phone_codes.get_mut(&code) else {
        return errcode(40029, "invalid code");
    };
    if c.used || c.appid != appid || now - c.created_at > Duration::seconds(PHONE_CODE_SECS) {
        return errcode(40029, "invalid code");
    }
    c.used = true;
    let user = c.user.clone();
    drop(st);
    let phone = phone_of(&shared, &user);
    HttpResponse::Ok().json(json!({
        "errcode": 0, "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone, "purePhoneNumber": phone, "countryCode": "86",
            "watermark": {"timestamp": now.timestamp(), "appid": appid},
        }
    }))
}

async fn media_upload(req: HttpRequest, q: Query<TokenQuery>, body: web::Bytes, shared: S) -> HttpResponse {
    if let Some(r) = fault(&shared, "/cgi-bin/media/upload").await {
        return r;
    }
    let mut st = shared.lock();
    let appid = match token_app(&st, q.access_token.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let kind = q.kind.clone().unwrap_or_default();
    if !["image", "voice", "video", "thumb"].contains(&kind.as_str()) {
        return errcode(40004, "invalid media type");
    }
    let ct = req.headers().get("content-type").and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(boundary) = ct.strip_prefix("multipart/form-data").and_then(|r| r.split("boundary=").nth(1)) else {
        return errcode(41005, "media data missing");
    };
    let boundary = boundary.trim_matches('"');
    let Some(bytes) = multipart_media(&body, boundary) else {
        return errcode(41005, "media data missing");
    };
    if bytes == 0 {
        return errcode(41005, "media data missing");
    }
    let now = st.clock.now();
    let seq = st.next_seq();
    let media_id = format!("{}_{seq}", nonce());
    st.media.insert(
        media_id.clone(),
        Media { media_id: media_id.clone(), appid, kind: kind.clone(), bytes, created_at: now },
    );
    HttpResponse::Ok().json(json!({"type": kind, "media_id": media_id, "created_at": now.timestamp()}))
}

/// The size of the `media` part of a multipart body, if there is one.
fn multipart_media(body: &[u8], boundary: &str) -> Option<usize> {
    let delim = format!("--{boundary}");
    let text = body;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
    };
    let mut pos = find(text, delim.as_bytes(), 0)?;
    loop {
        let start = pos + delim.len();
        let headers_end = find(text, b"\r\n\r\n", start)?;
        let headers = String::from_utf8_lossy(&text[start..headers_end]);
        let next = find(text, delim.as_bytes(), headers_end + 4)?;
        if headers.contains("name=\"media\"") {
            let end = next.checked_sub(2)?; // the CRLF before the delimiter
            return Some(end.saturating_sub(headers_end + 4));
        }
        pos = next;
    }
}

/// The customer-service rules of `message/custom/send` for a message to `touser` of
/// `appid`: Ok(()) counts the message in the window.
pub(crate) fn check_custom(st: &mut State, shared: &Shared, appid: &str, msg: &Value) -> Result<(), HttpResponse> {
    let touser = msg.get("touser").and_then(Value::as_str).unwrap_or("");
    let msgtype = msg.get("msgtype").and_then(Value::as_str).unwrap_or("");
    let known = st.known_openids.get(touser).is_some_and(|(_, a)| a == appid)
        || shared.openids.get(touser).is_some_and(|u| openid_for(u, appid) == touser);
    if touser.is_empty() || !known {
        return Err(errcode(40003, "invalid openid"));
    }
    let obj = msg.get(msgtype);
    let field = |k: &str| obj.and_then(|o| o.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let now = st.clock.now();
    let media_ok = |st: &State, id: Option<&str>| {
        id.and_then(|id| st.media.get(id))
            .is_some_and(|m| m.appid == appid && now - m.created_at < Duration::seconds(MEDIA_SECS))
    };
    match msgtype {
        "text" => {
            if field("content").is_none() {
                return Err(errcode(44003, "empty news data"));
            }
        }
        "image" => {
            if !media_ok(st, field("media_id")) {
                return Err(errcode(40007, "invalid media_id"));
            }
        }
        "link" => {
            if ["title", "description", "url", "thumb_url"].iter().any(|k| field(k).is_none()) {
                return Err(errcode(47001, "data format error"));
            }
        }
        "miniprogrampage" => {
            if field("title").is_none() || field("pagepath").is_none() {
                return Err(errcode(47001, "data format error"));
            }
            if !media_ok(st, field("thumb_media_id")) {
                return Err(errcode(40007, "invalid media_id"));
            }
        }
        _ => return Err(errcode(40008, "invalid message type")),
    }
    let w = st.cs_windows.entry((appid.to_owned(), touser.to_owned())).or_default();
    match w.last_user_message_at {
        Some(at) if now - at <= Duration::seconds(WINDOW_SECS) => {}
        _ => return Err(errcode(45015, "response out of time limit or subscription is canceled")),
    }
    if w.sent_since >= WINDOW_MESSAGES {
        return Err(errcode(45047, "out of response count limit"));
    }
    w.sent_since += 1;
    Ok(())
}

fn bad(code: &str, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(StatusCode::BAD_REQUEST).json(json!({"error": {"code": code, "message": message.to_string()}}))
}

fn app_or_default(shared: &Shared, appid: Option<&String>) -> Result<String, HttpResponse> {
    let appid = appid.cloned().unwrap_or_else(|| shared.cfg.apps.first().map(|a| a.appid.clone()).unwrap_or_default());
    if shared.apps.contains_key(&appid) {
        Ok(appid)
    } else {
        Err(bad("unknown_app", format!("appid {appid} is not configured")))
    }
}

#[derive(Deserialize)]
struct UserApp {
    user: String,
    appid: Option<String>,
}

/// Mints a getPhoneNumber code (what the user's tap on the button gives the mini-program).
async fn phonecode(shared: S, req: Json<UserApp>) -> HttpResponse {
    let appid = match app_or_default(&shared, req.appid.as_ref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let code = format!("{}{}", nonce(), nonce());
    let mut st = shared.lock();
    let now = st.clock.now();
    st.phone_codes
        .insert(code.clone(), PhoneCode { user: req.user.clone(), appid: appid.clone(), created_at: now, used: false });
    let openid = openid_for(&req.user, &appid);
    st.known_openids.insert(openid.clone(), (req.user.clone(), appid.clone()));
    drop(st);
    HttpResponse::Ok()
        .json(json!({"code": code, "appid": appid, "openid": openid, "phone": phone_of(&shared, &req.user)}))
}

async fn stable_calls(shared: S) -> HttpResponse {
    HttpResponse::Ok().json(&shared.lock().stable_calls)
}

async fn list_media(shared: S) -> HttpResponse {
    let st = shared.lock();
    let mut v: Vec<&Media> = st.media.values().collect();
    v.sort_by_key(|m| m.created_at);
    HttpResponse::Ok().json(v)
}

async fn pushes(shared: S) -> HttpResponse {
    HttpResponse::Ok().json(&shared.lock().pushes)
}

#[derive(Deserialize)]
struct PushConfigReq {
    appid: Option<String>,
    url: String,
    token: String,
    encoding_aes_key: Option<String>,
    #[serde(default = "xml")]
    format: String,
    #[serde(default = "plain")]
    mode: String,
    original_id: Option<String>,
}

fn xml() -> String {
    "xml".into()
}
fn plain() -> String {
    "plain".into()
}

/// Saves an app's push settings after verifying the URL, as the console's 提交 does.
async fn push_config(shared: S, req: Json<PushConfigReq>) -> HttpResponse {
    let appid = match app_or_default(&shared, req.appid.as_ref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let format = match req.format.as_str() {
        "xml" | "XML" => Format::Xml,
        "json" | "JSON" => Format::Json,
        other => return bad("invalid_format", format!("format {other:?}: xml or json")),
    };
    if !["plain", "compat", "safe"].contains(&req.mode.as_str()) {
        return bad("invalid_mode", "mode: plain, compat or safe");
    }
    let aes_key = req.encoding_aes_key.clone().map(SecretString::from);
    if req.mode != "plain" {
        match &aes_key {
            Some(k) if PushCipher::new(k, &appid).is_ok() => {}
            _ => return bad("invalid_aes_key", "compat and safe modes need a 43-character EncodingAESKey"),
        }
    }
    let token = SecretString::from(req.token.clone());
    // The console checks the server before saving: GET with signature and echostr.
    let (ts, n, echo) = (shared.lock().clock.now().timestamp().to_string(), nonce(), nonce());
    let sig = url_signature(&token, &ts, &n);
    let got = shared
        .http
        .get(&req.url)
        .query(&[("signature", sig.as_str()), ("timestamp", &ts), ("nonce", &n), ("echostr", &echo)])
        .timeout(std::time::Duration::from_millis(shared.cfg.notify_timeout_ms))
        .send()
        .await;
    let answer = match got {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => return HttpResponse::Ok().json(json!({"verified": false, "error": e.without_url().to_string()})),
    };
    if answer.0 != 200 || answer.1 != echo {
        return HttpResponse::Ok().json(json!({"verified": false, "http_status": answer.0, "reply": answer.1.chars().take(200).collect::<String>()}));
    }
    let original_id =
        req.original_id.clone().unwrap_or_else(|| format!("gh_{}", &appid[appid.len().saturating_sub(12)..]));
    shared.lock().push_settings.insert(
        appid.clone(),
        PushSettings { url: req.url.clone(), token, aes_key, format, mode: req.mode.clone(), original_id },
    );
    HttpResponse::Ok().json(json!({"verified": true, "appid": appid}))
}

#[derive(Deserialize)]
struct PushReq {
    appid: Option<String>,
    user: String,
    /// `text` (default), `image`, `miniprogrampage` or `event`.
    msgtype: Option<String>,
    content: Option<String>,
    /// For `event`: e.g. `user_enter_tempsession`.
    event: Option<String>,
    /// Extra fields copied into the message (PicUrl, Title, PagePath…).
    #[serde(default)]
    fields: Map<String, Value>,
    /// Reuse a MsgId (WeChat's own retries carry the same one).
    msg_id: Option<String>,
    create_time: Option<i64>,
    /// Faults a real attacker (or a misconfiguration) would produce.
    #[serde(default)]
    bad_signature: bool,
    /// Encrypt with another appid suffix.
    wrong_appid: Option<String>,
}

/// A user sends a message: it is pushed to the app's server and opens the window.
async fn push(shared: S, req: Json<PushReq>) -> HttpResponse {
    let appid = match app_or_default(&shared, req.appid.as_ref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(settings) = shared.lock().push_settings.get(&appid).cloned() else {
        return bad("push_not_configured", "configure the push URL first: POST /sandbox/cs/push-config");
    };
    let openid = openid_for(&req.user, &appid);
    let msgtype = req.msgtype.clone().unwrap_or_else(|| "text".into());
    let (now, msg_id) = {
        let mut st = shared.lock();
        let now = st.clock.now();
        let seq = st.next_seq();
        st.known_openids.insert(openid.clone(), (req.user.clone(), appid.clone()));
        let id =
            (msgtype != "event").then(|| req.msg_id.clone().unwrap_or_else(|| format!("{}{seq:06}", now.timestamp())));
        (now, id)
    };
    let create_time = req.create_time.unwrap_or(now.timestamp());
    let mut m = Map::new();
    m.insert("ToUserName".into(), Value::String(settings.original_id.clone()));
    m.insert("FromUserName".into(), Value::String(openid.clone()));
    m.insert("CreateTime".into(), Value::from(create_time));
    m.insert("MsgType".into(), Value::String(msgtype.clone()));
    match msgtype.as_str() {
        "text" => {
            m.insert("Content".into(), Value::String(req.content.clone().unwrap_or_else(|| "你好".into())));
        }
        "event" => {
            m.insert(
                "Event".into(),
                Value::String(req.event.clone().unwrap_or_else(|| "user_enter_tempsession".into())),
            );
        }
        _ => {}
    }
    for (k, v) in &req.fields {
        m.insert(k.clone(), v.clone());
    }
    if let Some(id) = &msg_id {
        // JSON pushes carry MsgId as a number, XML ones as text.
        let v = id.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(id.clone()));
        m.insert("MsgId".into(), v);
    }
    let plain = encode_fields(&m, settings.format);
    let ts = now.timestamp().to_string();
    let n = nonce();
    let mut query: Vec<(String, String)> = vec![
        ("signature".into(), url_signature(&settings.token, &ts, &n)),
        ("timestamp".into(), ts.clone()),
        ("nonce".into(), n.clone()),
    ];
    let body = if settings.mode == "plain" {
        plain
    } else {
        let key = settings.aes_key.as_ref().expect("checked at push-config");
        let suffix = req.wrong_appid.clone().unwrap_or_else(|| appid.clone());
        let enc = match PushCipher::new(key, &suffix).and_then(|c| c.encrypt(&plain)) {
            Ok(e) => e,
            Err(e) => return bad("encrypt", e),
        };
        let msig = msg_signature(&settings.token, &ts, &n, &enc);
        query.push(("encrypt_type".into(), "aes".into()));
        query.push(("msg_signature".into(), msig));
        let mut env = if settings.mode == "compat" { m.clone() } else { Map::new() };
        env.insert("ToUserName".into(), Value::String(settings.original_id.clone()));
        env.insert("Encrypt".into(), Value::String(enc));
        encode_fields(&env, settings.format)
    };
    if req.bad_signature {
        for (k, v) in query.iter_mut() {
            if k == "signature" || k == "msg_signature" {
                *v = "0".repeat(40);
            }
        }
    }
    let content_type = match settings.format {
        Format::Xml => "text/xml",
        Format::Json => "application/json",
    };
    // WeChat waits 5 s for an answer and tries three times in all.
    let mut attempts = Vec::new();
    let mut delivered = false;
    for _ in 0..3 {
        let started = Instant::now();
        let r = shared
            .http
            .post(&settings.url)
            .query(&query)
            .header("content-type", content_type)
            .body(body.clone())
            .timeout(std::time::Duration::from_millis(shared.cfg.notify_timeout_ms))
            .send()
            .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let reply = resp.text().await.unwrap_or_default();
                let ok = status == 200;
                attempts.push(PushAttempt {
                    http_status: Some(status),
                    reply: reply.chars().take(2000).collect(),
                    elapsed_ms,
                    error: None,
                });
                if ok {
                    delivered = true;
                    break;
                }
            }
            Err(e) => attempts.push(PushAttempt {
                http_status: None,
                reply: String::new(),
                elapsed_ms,
                error: Some(e.without_url().to_string()),
            }),
        }
    }
    let record = PushRecord {
        appid: appid.clone(),
        openid: openid.clone(),
        msg_type: msgtype.clone(),
        msg_id: msg_id.clone(),
        delivered,
        attempts,
    };
    {
        let mut st = shared.lock();
        // A message from the user opens (re-opens) the 48-hour window, whatever our server
        // answered: the user did write. Events do not (*guess*).
        if msgtype != "event" {
            let w = st.cs_windows.entry((appid.clone(), openid.clone())).or_default();
            w.last_user_message_at = Some(now);
            w.sent_since = 0;
        }
        st.pushes.push(record.clone());
    }
    HttpResponse::Ok().json(json!({
        "appid": appid, "openid": openid, "msg_id": msg_id, "create_time": create_time,
        "delivered": record.delivered, "attempts": record.attempts,
    }))
}
