//! The small client for `api.weixin.qq.com` (not the payment host): mini-program login
//! (`sns/jscode2session`), the access token (`cgi-bin/token`) with a central cache, and the
//! customer-service text message (`cgi-bin/message/custom/send`).
//!
//! Secrets: the app secret, `session_key` and access tokens are [`SecretString`]s. They
//! travel in query strings, so every transport error is stripped of its URL before it is
//! returned (reqwest's `Display` would print it).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The official host.
pub const DEFAULT_WEIXIN_BASE_URL: &str = "https://api.weixin.qq.com";

/// `errcode`s we act on; everything else is [`ApiErrorKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 40029: the login code is invalid.
    InvalidCode,
    /// 45011: called too often.
    RateLimited,
    /// 40163: the login code was already used.
    CodeUsed,
    /// -1: WeChat busy, retry later.
    Busy,
    /// 40001: the access token is invalid (e.g. refreshed elsewhere).
    InvalidToken,
    /// 42001: the access token expired.
    TokenExpired,
    /// 40003: the openid is not a user of this app.
    InvalidOpenId,
    /// 45015: the user has not written within 48 hours (customer-service window closed).
    WindowClosed,
    /// 45047: five messages already sent since the user's last message.
    WindowLimit,
    /// 45009: the API's daily quota is used up (e.g. 20 forced token refreshes a day).
    DailyQuota,
    /// 40007: unknown or expired media_id.
    InvalidMediaId,
    Other,
}

impl ApiErrorKind {
    pub fn from_errcode(code: i64) -> ApiErrorKind {
        match code {
            40029 => ApiErrorKind::InvalidCode,
            45011 => ApiErrorKind::RateLimited,
            40163 => ApiErrorKind::CodeUsed,
            -1 => ApiErrorKind::Busy,
            40001 => ApiErrorKind::InvalidToken,
            42001 => ApiErrorKind::TokenExpired,
            40003 => ApiErrorKind::InvalidOpenId,
            45015 => ApiErrorKind::WindowClosed,
            45047 => ApiErrorKind::WindowLimit,
            45009 => ApiErrorKind::DailyQuota,
            40007 => ApiErrorKind::InvalidMediaId,
            _ => ApiErrorKind::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeixinError {
    #[error("weixin api error {errcode}: {errmsg}")]
    Api { kind: ApiErrorKind, errcode: i64, errmsg: String },
    #[error("weixin transport: {0}")]
    Transport(String),
    #[error("weixin answer unreadable: {0}")]
    Decode(String),
}

impl WeixinError {
    /// Whether the access token used must be dropped (40001 / 42001).
    pub fn is_token_error(&self) -> bool {
        matches!(self, WeixinError::Api { kind: ApiErrorKind::InvalidToken | ApiErrorKind::TokenExpired, .. })
    }
}

/// What `jscode2session` returns.
#[derive(Clone)]
pub struct Session {
    pub openid: String,
    pub session_key: SecretString,
    /// Only when the mini-program is bound to an open-platform account.
    pub unionid: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Openids are personal data: log at most a prefix.
        let prefix: String = self.openid.chars().take(6).collect();
        f.debug_struct("Session").field("openid", &format!("{prefix}…")).field("session_key", &"***").finish()
    }
}

/// `phone_info` of getuserphonenumber.
#[derive(Clone, Deserialize, serde::Serialize)]
pub struct PhoneInfo {
    /// With the country code for foreign numbers (`+1…`), bare for mainland ones.
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    #[serde(rename = "purePhoneNumber")]
    pub pure_phone_number: String,
    #[serde(rename = "countryCode")]
    pub country_code: serde_json::Value,
}

impl fmt::Debug for PhoneInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: the last four digits at most.
        let n = &self.pure_phone_number;
        let tail: String = n.chars().skip(n.chars().count().saturating_sub(4)).collect();
        f.debug_struct("PhoneInfo").field("phone", &format!("***{tail}")).finish()
    }
}

/// An access token and its lifetime as WeChat stated it.
#[derive(Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken").field("token", &"***").field("expires_in", &self.expires_in).finish()
    }
}

#[derive(Debug, Clone)]
pub struct WeixinConfig {
    pub base_url: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Extra trusted root CA (PEM), e.g. the sandbox's.
    pub extra_root_ca_pem: Option<Vec<u8>>,
}

impl Default for WeixinConfig {
    fn default() -> Self {
        WeixinConfig {
            base_url: DEFAULT_WEIXIN_BASE_URL.into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            extra_root_ca_pem: None,
        }
    }
}

/// Client for `api.weixin.qq.com`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WeixinClient {
    http: reqwest::Client,
    base_url: String,
}

/// The union of the JSON answers we read; WeChat omits `errcode` or sends 0 on success.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn transport(e: reqwest::Error) -> WeixinError {
    WeixinError::Transport(e.without_url().to_string())
}

impl WeixinClient {
    pub fn new(cfg: WeixinConfig) -> Result<WeixinClient, WeixinError> {
        let mut b =
            reqwest::Client::builder().tls_backend_native().connect_timeout(cfg.connect_timeout).timeout(cfg.timeout);
        if let Some(pem) = &cfg.extra_root_ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(transport)?);
        }
        Ok(WeixinClient {
            http: b.build().map_err(transport)?,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn read(resp: Result<reqwest::Response, reqwest::Error>) -> Result<Answer, WeixinError> {
        let resp = resp.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(WeixinError::Transport(format!("HTTP {status}")));
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let a: Answer = serde_json::from_slice(&bytes).map_err(|e| WeixinError::Decode(e.to_string()))?;
        if a.errcode != 0 {
            return Err(WeixinError::Api {
                kind: ApiErrorKind::from_errcode(a.errcode),
                errcode: a.errcode,
                errmsg: a.errmsg,
            });
        }
        Ok(a)
    }

    /// Exchanges a `wx.login` code for the user's openid and session key.
    pub async fn jscode2session(&self, appid: &str, secret: &SecretString, code: &str) -> Result<Session, WeixinError> {
        let resp = self
            .http
            .get(format!("{}/sns/jscode2session", self.base_url))
            .query(&[
                ("appid", appid),
                ("secret", secret.expose_secret()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await;
        let a = Self::read(resp).await?;
        Ok(Session {
            openid: a.openid.filter(|s| !s.is_empty()).ok_or_else(|| WeixinError::Decode("no openid".into()))?,
            session_key: a
                .session_key
                .map(SecretString::from)
                .ok_or_else(|| WeixinError::Decode("no session_key".into()))?,
            unionid: a.unionid.filter(|s| !s.is_empty()),
        })
    }

    /// Fetches a fresh access token. Prefer [`TokenCache::get`]: every fetch invalidates
    /// the previous token after a short grace period, so only one place may call this.
    pub async fn access_token(&self, appid: &str, secret: &SecretString) -> Result<AccessToken, WeixinError> {
        let resp = self
            .http
            .get(format!("{}/cgi-bin/token", self.base_url))
            .query(&[("grant_type", "client_credential"), ("appid", appid), ("secret", secret.expose_secret())])
            .send()
            .await;
        let a = Self::read(resp).await?;
        Ok(AccessToken {
            token: a
                .access_token
                .map(SecretString::from)
                .ok_or_else(|| WeixinError::Decode("no access_token".into()))?,
            expires_in: Duration::from_secs(a.expires_in.unwrap_or(7200)),
        })
    }

    /// `POST /cgi-bin/stable_token`: the stable access token. Normal mode (`force_refresh:
    /// false`) returns the current token while it has more than 5 minutes left and a new one
    /// in its last 5 minutes (both valid then); force mode invalidates the current token and
    /// is limited to 20 calls a day, 30 s apart — never use it to recover from 40001.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &SecretString,
        force_refresh: bool,
    ) -> Result<AccessToken, WeixinError> {
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret.expose_secret(),
            "force_refresh": force_refresh,
        });
        let resp = self.http.post(format!("{}/cgi-bin/stable_token", self.base_url)).json(&body).send().await;
        let a = Self::read(resp).await?;
        Ok(AccessToken {
            token: a
                .access_token
                .map(SecretString::from)
                .ok_or_else(|| WeixinError::Decode("no access_token".into()))?,
            expires_in: Duration::from_secs(a.expires_in.unwrap_or(7200)),
        })
    }

    /// A JSON answer as a value, after the errcode check.
    async fn read_value(resp: Result<reqwest::Response, reqwest::Error>) -> Result<serde_json::Value, WeixinError> {
        let resp = resp.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(WeixinError::Transport(format!("HTTP {status}")));
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| WeixinError::Decode(e.to_string()))?;
        let errcode = v.get("errcode").and_then(serde_json::Value::as_i64).unwrap_or(0);
        if errcode != 0 {
            let errmsg = v.get("errmsg").and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
            return Err(WeixinError::Api { kind: ApiErrorKind::from_errcode(errcode), errcode, errmsg });
        }
        Ok(v)
    }

    /// `POST /wxa/business/getuserphonenumber`: the phone number behind a
    /// `getPhoneNumber` button code (single use; WeChat charges per success).
    pub async fn user_phone_number(&self, token: &SecretString, code: &str) -> Result<PhoneInfo, WeixinError> {
        let resp = self
            .http
            .post(format!("{}/wxa/business/getuserphonenumber", self.base_url))
            .query(&[("access_token", token.expose_secret())])
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await;
        let v = Self::read_value(resp).await?;
        let info = v.get("phone_info").cloned().ok_or_else(|| WeixinError::Decode("no phone_info".into()))?;
        serde_json::from_value(info).map_err(|e| WeixinError::Decode(e.to_string()))
    }

    /// `POST /cgi-bin/media/upload?type=image`: a temporary image (3 days) for an image
    /// customer-service message; returns the media_id.
    pub async fn upload_image(
        &self,
        token: &SecretString,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<String, WeixinError> {
        // reqwest is built without its multipart feature; the form is one part, written here.
        let boundary = format!("----minipay{:016x}", rand::random::<u64>());
        let safe_name: String =
            filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
        let mut body = Vec::with_capacity(bytes.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
                if safe_name.is_empty() { "image.jpg" } else { &safe_name }
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .http
            .post(format!("{}/cgi-bin/media/upload", self.base_url))
            .query(&[("access_token", token.expose_secret()), ("type", "image")])
            .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
            .await;
        let v = Self::read_value(resp).await?;
        v.get("media_id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| WeixinError::Decode("no media_id".into()))
    }

    /// `POST /cgi-bin/message/custom/send` with a whole message (`touser`, `msgtype` and
    /// the type's object).
    pub async fn send_custom(&self, token: &SecretString, message: &serde_json::Value) -> Result<(), WeixinError> {
        let resp = self
            .http
            .post(format!("{}/cgi-bin/message/custom/send", self.base_url))
            .query(&[("access_token", token.expose_secret())])
            .json(message)
            .send()
            .await;
        Self::read_value(resp).await.map(|_| ())
    }

    /// Sends a customer-service text message.
    pub async fn send_custom_message(&self, token: &SecretString, openid: &str, text: &str) -> Result<(), WeixinError> {
        let body = serde_json::json!({ "touser": openid, "msgtype": "text", "text": { "content": text } });
        let resp = self
            .http
            .post(format!("{}/cgi-bin/message/custom/send", self.base_url))
            .query(&[("access_token", token.expose_secret())])
            .json(&body)
            .send()
            .await;
        Self::read(resp).await.map(|_| ())
    }
}

struct Cached {
    token: SecretString,
    expires_at: Instant,
}

/// The one place that fetches access tokens. Per appid: single-flight (concurrent callers
/// wait for one fetch), refresh ahead of expiry, and invalidation on 40001/42001. If a
/// refresh ahead of expiry fails, the still-valid token is returned.
pub struct TokenCache {
    client: WeixinClient,
    refresh_ahead: Duration,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache").field("refresh_ahead", &self.refresh_ahead).finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `refresh_ahead`: how long before expiry a token is replaced (5 minutes is typical).
    pub fn new(client: WeixinClient, refresh_ahead: Duration) -> TokenCache {
        TokenCache { client, refresh_ahead, slots: Mutex::new(HashMap::new()) }
    }

    fn slot(&self, appid: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(appid.to_owned()).or_default().clone()
    }

    /// A valid token for `appid`, fetching one when none is cached or it is about to expire.
    pub async fn get(&self, appid: &str, secret: &SecretString) -> Result<SecretString, WeixinError> {
        let slot = self.slot(appid);
        let mut cached = slot.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref().filter(|c| now + self.refresh_ahead < c.expires_at) {
            return Ok(c.token.clone());
        }
        match self.client.access_token(appid, secret).await {
            Ok(t) => {
                *cached = Some(Cached { token: t.token.clone(), expires_at: Instant::now() + t.expires_in });
                Ok(t.token)
            }
            Err(e) => match cached.as_ref() {
                Some(c) if now < c.expires_at => Ok(c.token.clone()),
                Some(_) | None => Err(e),
            },
        }
    }

    /// Drops `failed` if it is still the cached token for `appid` (a newer one stays).
    pub async fn invalidate(&self, appid: &str, failed: &SecretString) {
        let slot = self.slot(appid);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.token.expose_secret() == failed.expose_secret()) {
            *cached = None;
        }
    }

    /// Sends a text message with a cached token; on 40001/42001 the token is invalidated
    /// and the message sent once more with a fresh one.
    pub async fn send_custom_message(
        &self,
        appid: &str,
        secret: &SecretString,
        openid: &str,
        text: &str,
    ) -> Result<(), WeixinError> {
        let token = self.get(appid, secret).await?;
        match self.client.send_custom_message(&token, openid, text).await {
            Err(e) if e.is_token_error() => {
                self.invalidate(appid, &token).await;
                let fresh = self.get(appid, secret).await?;
                self.client.send_custom_message(&fresh, openid, text).await
            }
            other => other,
        }
    }
}

/// Decrypts `wx.getUserInfo`-style `encryptedData` with the user's session_key
/// (AES-128-CBC, PKCS#7, key = base64-decoded session_key, IV from the mini-program) and
/// checks its `watermark.appid`.
pub fn decrypt_user_data(
    session_key: &SecretString,
    encrypted_data: &str,
    iv: &str,
    appid: &str,
) -> Result<serde_json::Value, WeixinError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |what: &str| WeixinError::Decode(what.to_owned());
    let key = b64.decode(session_key.expose_secret()).map_err(|_| bad("session_key is not base64"))?;
    let iv = b64.decode(iv).map_err(|_| bad("iv is not base64"))?;
    let data = b64.decode(encrypted_data).map_err(|_| bad("encryptedData is not base64"))?;
    if key.len() != 16 || iv.len() != 16 {
        return Err(bad("session_key and iv must be 16 bytes"));
    }
    let plain = openssl::symm::decrypt(openssl::symm::Cipher::aes_128_cbc(), &key, Some(&iv), &data)
        .map_err(|_| bad("encryptedData does not decrypt with this session_key (stale session?)"))?;
    let v: serde_json::Value = serde_json::from_slice(&plain).map_err(|_| bad("decrypted data is not JSON"))?;
    if v.pointer("/watermark/appid").and_then(serde_json::Value::as_str) != Some(appid) {
        return Err(bad("watermark appid does not match"));
    }
    Ok(v)
}
