//! The mini-program platform services (issue 18) every handler shares: the one access token
//! per app ([`TokenService`]), session keys sealed at rest ([`Sealer`]), and the push
//! readers of the apps whose 消息推送 is configured.
//!
//! ## The access token
//! WeChat's stable token (`cgi-bin/stable_token`, normal mode) is cached in Postgres and in
//! each replica's memory. A replica that finds it missing or within `token_refresh_ahead`
//! of expiry takes the app's advisory lock, reads the row again (another replica may have
//! just refreshed it) and only then asks WeChat — so N replicas make one call. A call
//! answered 40001/42001 triggers one *normal* refresh and one retry; force mode (20 a day,
//! 30 s apart, and it invalidates the token every other replica holds) is never used.
//! Internal services read the token through `GET /v1/wechat/access-token` instead of
//! fetching their own, which would not invalidate ours (stable tokens are separate from
//! `cgi-bin/token` ones) but would spend their own quota and scatter the secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use minipay_config::Config;
use minipay_config::platform::SealKey;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use wxpay::push::{PushCipher, PushReader};
use wxpay::weixin::{WeixinClient, WeixinError};

/// Why a platform call failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("appid {0} is not configured")]
    UnknownApp(String),
    #[error(transparent)]
    Weixin(#[from] WeixinError),
    #[error(transparent)]
    Store(#[from] minipay_store::StoreError),
}

impl From<sqlx::Error> for PlatformError {
    fn from(e: sqlx::Error) -> PlatformError {
        PlatformError::Store(e.into())
    }
}

/// A token and when it expires. `Debug` hides the token.
#[derive(Clone)]
pub struct Token {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("token", &"***").field("expires_at", &self.expires_at).finish()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The shared access token of every configured app.
pub struct TokenService {
    pool: PgPool,
    weixin: WeixinClient,
    secrets: HashMap<String, SecretString>,
    refresh_ahead: chrono::Duration,
    /// Per app: the replica's copy and the in-process single flight.
    slots: Mutex<HashMap<String, Slot>>,
    /// `minipay_wechat_calls_total{endpoint="cgi-bin/stable_token", outcome}`.
    upstream: prometheus::IntCounterVec,
}

impl TokenService {
    /// `upstream`: the api's WeChat-call counter (endpoint, outcome).
    pub fn new(
        config: &Config,
        pool: PgPool,
        weixin: WeixinClient,
        upstream: prometheus::IntCounterVec,
    ) -> TokenService {
        TokenService {
            pool,
            weixin,
            secrets: config.apps.iter().map(|a| (a.appid.clone(), a.secret.clone())).collect(),
            refresh_ahead: chrono::Duration::seconds(config.platform.token_refresh_ahead_secs as i64),
            slots: Mutex::new(HashMap::new()),
            upstream,
        }
    }

    fn slot(&self, appid: &str) -> Slot {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(appid.to_owned()).or_default().clone()
    }

    fn fresh(&self, t: &Token) -> bool {
        Utc::now() + self.refresh_ahead < t.expires_at
    }

    /// A valid token for `appid`, refreshed ahead of expiry by one replica at a time.
    pub async fn get(&self, appid: &str) -> Result<Token, PlatformError> {
        let slot = self.slot(appid);
        let mut local = slot.lock().await;
        if let Some(t) = local.as_ref().filter(|t| self.fresh(t)) {
            return Ok(t.clone());
        }
        let mut conn = self.pool.acquire().await?;
        if let Some(t) = minipay_store::tokens::current(&mut conn, appid).await?.map(to_token).filter(|t| self.fresh(t))
        {
            *local = Some(t.clone());
            return Ok(t);
        }
        drop(conn);
        let t = self.refresh_locked(appid, None).await?;
        *local = Some(t.clone());
        Ok(t)
    }

    /// After WeChat refused `rejected` (40001/42001): one normal refresh, unless another
    /// replica already stored a different token.
    pub async fn refresh_after_rejection(&self, appid: &str, rejected: &SecretString) -> Result<Token, PlatformError> {
        let slot = self.slot(appid);
        let mut local = slot.lock().await;
        if let Some(t) = local.as_ref().filter(|t| t.token.expose_secret() != rejected.expose_secret() && self.fresh(t))
        {
            return Ok(t.clone());
        }
        let t = self.refresh_locked(appid, Some(rejected)).await?;
        *local = Some(t.clone());
        Ok(t)
    }

    /// Under the app's advisory lock: reuse the stored token if it is fresh (and not the
    /// rejected one), else ask WeChat in normal mode and store the answer.
    async fn refresh_locked(&self, appid: &str, rejected: Option<&SecretString>) -> Result<Token, PlatformError> {
        let secret = self.secrets.get(appid).ok_or_else(|| PlatformError::UnknownApp(appid.to_owned()))?;
        let mut tx = self.pool.begin().await?;
        minipay_store::tokens::lock_app(&mut tx, appid).await?;
        let stored = minipay_store::tokens::current(&mut tx, appid).await?.map(to_token);
        let usable =
            |t: &&Token| self.fresh(t) && rejected.is_none_or(|r| r.expose_secret() != t.token.expose_secret());
        if let Some(t) = stored.as_ref().filter(usable) {
            tx.commit().await?;
            return Ok(t.clone());
        }
        // Never force_refresh: it is limited to 20 a day and would invalidate the token
        // every other replica is using.
        let fetched = self.weixin.stable_token(appid, secret, false).await;
        let outcome = match &fetched {
            Ok(_) => "success",
            Err(e) if e.is_token_error() => "token_error",
            Err(WeixinError::Api { .. }) => "failed",
            Err(_) => "unknown",
        };
        self.upstream.with_label_values(&["cgi-bin/stable_token", outcome]).inc();
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                // A token that is still valid (only inside the refresh margin) beats none.
                if let Some(t) = stored.filter(|t| t.expires_at > Utc::now() && rejected.is_none()) {
                    tracing::warn!(appid, error = %e, "access token refresh failed; using the stored token until it expires");
                    return Ok(t);
                }
                return Err(e.into());
            }
        };
        let expires_at = Utc::now() + chrono::Duration::from_std(fetched.expires_in).unwrap_or_default();
        let saved = minipay_store::tokens::save(&mut tx, appid, fetched.token.expose_secret(), expires_at).await?;
        tx.commit().await?;
        tracing::info!(appid, fetches = saved.fetches, expires_at = %saved.expires_at, "access token refreshed");
        Ok(Token { token: fetched.token, expires_at })
    }

    /// Runs one WeChat call with the app's token; a 40001/42001 answer refreshes once
    /// (normal mode) and retries once.
    pub async fn call<T, F, Fut>(&self, appid: &str, f: F) -> Result<T, PlatformError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T, WeixinError>>,
    {
        let t = self.get(appid).await?;
        match f(t.token.clone()).await {
            Err(e) if e.is_token_error() => {
                tracing::warn!(appid, error = %e, "WeChat refused the access token; refreshing once");
                let fresh = self.refresh_after_rejection(appid, &t.token).await?;
                Ok(f(fresh.token).await?)
            }
            other => Ok(other?),
        }
    }

    /// Keeps every app's token fresh in the background (the first round after `every`).
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(svc) = this.upgrade() else { return };
                let appids: Vec<String> = svc.secrets.keys().cloned().collect();
                for appid in appids {
                    if let Err(e) = svc.get(&appid).await {
                        tracing::warn!(appid, error = %e, "background access token refresh failed");
                    }
                }
            }
        });
    }
}

fn to_token(s: minipay_store::tokens::StoredToken) -> Token {
    Token { token: SecretString::from(s.token), expires_at: s.expires_at }
}

/// Seals session keys at rest: AES-256-GCM, 12-byte random nonce, the (appid, openid) as
/// associated data so a sealed key cannot be moved to another user's row.
#[derive(Clone)]
pub struct Sealer {
    key: SealKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn new(key: SealKey) -> Sealer {
        Sealer { key }
    }

    fn aad(appid: &str, openid: &str) -> Vec<u8> {
        format!("{appid}\n{openid}").into_bytes()
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, appid: &str, openid: &str, plain: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let nonce: [u8; 12] = rand::random();
        let mut tag = [0u8; 16];
        let ct = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &self.key.0,
            Some(&nonce),
            &Self::aad(appid, openid),
            plain,
            &mut tag,
        )?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn open(&self, appid: &str, openid: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 28 {
            return None;
        }
        let (nonce, rest) = sealed.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        openssl::symm::decrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &self.key.0,
            Some(nonce),
            &Self::aad(appid, openid),
            ct,
            tag,
        )
        .ok()
    }
}

/// One app's push endpoint settings.
#[derive(Debug, Clone)]
pub struct PushApp {
    pub reader: PushReader,
    pub transfer_to_customer_service: bool,
}

/// What [`crate::state::AppState`] holds for issue 18.
pub struct Platform {
    pub tokens: Arc<TokenService>,
    pub sealer: Option<Sealer>,
    pub push: HashMap<String, PushApp>,
    pub push_reply_budget: Duration,
}

impl Platform {
    pub fn new(
        config: &Config,
        pool: PgPool,
        weixin: WeixinClient,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Platform, minipay_config::ConfigError> {
        let tokens = Arc::new(TokenService::new(config, pool, weixin, metrics.upstream.clone()));
        if config.platform.token_refresh_interval_secs > 0 {
            tokens.spawn_refresher(Duration::from_secs(config.platform.token_refresh_interval_secs));
        }
        let mut push = HashMap::new();
        for p in &config.platform.push {
            let cipher = match &p.encoding_aes_key {
                Some(k) => Some(
                    PushCipher::new(k, &p.appid)
                        .map_err(|e| minipay_config::ConfigError::Invalid(format!("platform.push {}: {e}", p.appid)))?,
                ),
                None => None,
            };
            push.insert(
                p.appid.clone(),
                PushApp {
                    reader: PushReader { token: p.token.clone(), cipher },
                    transfer_to_customer_service: p.transfer_to_customer_service,
                },
            );
        }
        Ok(Platform {
            tokens,
            sealer: config.platform.session_key_encryption_key.clone().map(Sealer::new),
            push,
            push_reply_budget: Duration::from_millis(config.platform.push_reply_budget_ms),
        })
    }
}

/// An openid fit for a log line: the first six characters.
pub fn masked(openid: &str) -> String {
    let prefix: String = openid.chars().take(6).collect();
    format!("{prefix}…")
}
