//! # minipay-config — every service's settings, from one TOML file plus `MINIPAY_…` env
//!
//! [`Config::load`] reads a TOML file (the path given, else `$MINIPAY_CONFIG`, else nothing:
//! all defaults), applies environment overrides, reads every secret and certificate file and
//! checks the result. Services receive a ready [`Config`]; nothing else reads the
//! environment.
//!
//! ## File format
//!
//! ```toml
//! [database]
//! url = "postgres://minipay@127.0.0.1/minipay"
//! max_connections = 20
//!
//! [api]
//! listen = "127.0.0.1:8080"
//!
//! [notify]
//! listen = "127.0.0.1:8081"
//! public_url = "https://pay.example.com"   # notify_url = public_url + /wxpay/notify/pay
//!
//! [wechat]
//! pay_base_url = "https://api.mch.weixin.qq.com"
//! api_base_url = "https://api.weixin.qq.com"
//! ca_file = "/etc/minipay/sandbox-ca.pem"  # extra trusted root, for the sandbox only
//! timeout_ms = 10000
//!
//! [[merchants]]
//! mch_id = "1900000109"
//! api_key_file = "/run/secrets/mch_api_key"
//! sign_type = "MD5"                        # or "HMAC-SHA256"
//! cert_p12_file = "/run/secrets/apiclient_cert.p12"
//! # cert_password_file = …                 # default password: the mch_id
//! # or: cert_pem_file = …, key_pem_file = …
//!
//! [[apps]]
//! appid = "wxd930ea5d5a258f4f"
//! mch_id = "1900000109"
//! secret_file = "/run/secrets/app_secret"
//! default = true
//!
//! [payouts]                                # fen; "daily" = the Asia/Shanghai day
//! approval_threshold = 50000               # above: an approver (another key) decides
//! openid_daily_amount = 500000
//! merchant_daily_amount = 10000000         # all keys: docs/PAYOUTS.md
//! ```
//!
//! ## Environment overrides
//!
//! - Scalar settings: `MINIPAY_<SECTION>_<KEY>`, e.g. `MINIPAY_DATABASE_URL`,
//!   `MINIPAY_API_LISTEN`, `MINIPAY_NOTIFY_PUBLIC_URL`, `MINIPAY_WECHAT_TIMEOUT_MS`, for every
//!   section in [`SECTIONS`].
//! - Secrets of a configured merchant or app: `MINIPAY_MERCHANT_<MCH_ID>_API_KEY`,
//!   `MINIPAY_MERCHANT_<MCH_ID>_CERT_PASSWORD`, `MINIPAY_APP_<APPID>_SECRET` (appid as
//!   written, or upper-cased). They win over the file.
//! - `MINIPAY_CONFIG`: the file to read when [`Config::load`] is given none.
//!
//! Secrets come from the file, secret files or the environment — never from the command
//! line, where `ps` would show them. They are held in redacting types ([`wxpay::ApiKey`],
//! [`SecretString`]) so `Debug` of a [`Config`] never prints one.
//!
//! ## Adding a section (other services)
//!
//! Add a `pub struct` with `#[serde(default, deny_unknown_fields)]` and a `Default`, a field
//! on [`RawConfig`] and [`Config`], copy it across in [`Config::resolve`], and add its name
//! to [`SECTIONS`] so env overrides reach it.

pub mod check;
pub mod platform;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use wxpay::client::{ClientConfig, ClientIdentity};
use wxpay::merchant::MerchantClient;
use wxpay::weixin::{WeixinClient, WeixinConfig};
use wxpay::{ApiKey, SignType};

pub mod merchant_v3;

/// The sandbox's demo merchant and app (public test values from WeChat's documentation,
/// never valid on the real service); the same defaults `minipay-sandbox` starts with.
pub const DEMO_MCH_ID: &str = "1900000109";
pub const DEMO_APPID: &str = "wxd930ea5d5a258f4f";
pub const DEMO_API_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
pub const DEMO_APP_SECRET: &str = "sandbox-demo-app-secret-0123456789";

/// Sections whose scalar keys can be overridden by `MINIPAY_<SECTION>_<KEY>`.
pub const SECTIONS: &[&str] = &["database", "api", "notify", "wechat", "worker", "webhooks", "reconcile", "payouts"];

/// Why a configuration could not be loaded. Messages name the setting, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("WeChat Pay client for merchant {mch_id}: {message}")]
    Client { mch_id: String, message: String },
}

fn invalid<T>(m: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(m.into()))
}

// ---------------------------------------------------------------------------------------
// The file as written (paths, not contents).

/// The TOML file as written: secrets may still be file paths.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub notify: NotifyConfig,
    pub wechat: RawWechat,
    pub worker: WorkerConfig,
    pub webhooks: WebhookConfig,
    pub reconcile: ReconcileConfig,
    pub payouts: PayoutsConfig,
    pub merchants: Vec<RawMerchant>,
    pub apps: Vec<RawApp>,
    /// Issue 18: access token, session keys, customer-service pushes.
    pub platform: platform::RawPlatform,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The database URL may carry a password: it is redacted in `Debug`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Group commit (hot write paths: order creation, payment notifications): the most
    /// concurrent requests written by one statement. 1 turns grouping off.
    pub group_max: usize,
    /// Group commit in the notify service: statements of one kind running at once (each
    /// holds a connection); the api's is `[api] group_in_flight`.
    pub group_in_flight: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: SecretString::from("postgres://minipay@127.0.0.1:5432/minipay"),
            max_connections: 20,
            group_max: 64,
            group_in_flight: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port`; port 0 lets the OS choose (tests).
    pub listen: String,
    /// Largest JSON body accepted (bytes); larger bodies get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Actix worker threads (0 = one per core).
    pub workers: usize,
    /// An order still open after this long is settled by orderquery on read.
    pub stale_after_secs: u64,
    /// Default time to pay when a request gives no `expires_in` (WeChat's own default
    /// is 2 hours, after which the prepay_id is useless).
    pub default_expires_in_secs: u64,
    /// `spbill_create_ip` sent with unifiedorder. A mini-program backend rarely knows the
    /// payer's IP; WeChat accepts the server's (guess from its documentation's wording,
    /// "调用微信支付API的机器IP" for JSAPI/NATIVE). Fixed, so retries send identical parameters.
    pub spbill_create_ip: String,
    /// Group commit on the order path: grouped statements of one kind running at once
    /// (`[database] group_in_flight` is the notify service's). One by default: an order's
    /// statements are cheap next to their fixed cost, so fewer, larger groups win (measured:
    /// 4,299 vs 3,636 orders/s at 64 senders; open loop at 3,000/s, p99 67 vs 112 ms).
    pub group_in_flight: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            workers: 0,
            stale_after_secs: 60,
            default_expires_in_secs: 2 * 3600,
            spbill_create_ip: "127.0.0.1".into(),
            group_in_flight: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    pub listen: String,
    /// How WeChat reaches the notify service from outside (scheme + host [+ path prefix]).
    pub public_url: String,
    pub workers: usize,
    /// Largest notification body accepted; anything bigger is refused unread (64 KiB).
    pub max_body_bytes: usize,
    /// How many refused bodies the forensic table keeps (newest first; ≤ 4 KiB each).
    pub rejected_keep: i64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            listen: "127.0.0.1:8081".into(),
            public_url: "http://127.0.0.1:8081".into(),
            workers: 0,
            max_body_bytes: 64 * 1024,
            rejected_keep: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWechat {
    pub pay_base_url: String,
    pub api_base_url: String,
    pub ca_file: Option<PathBuf>,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for RawWechat {
    fn default() -> Self {
        RawWechat {
            pay_base_url: wxpay::client::DEFAULT_BASE_URL.into(),
            api_base_url: wxpay::weixin::DEFAULT_WEIXIN_BASE_URL.into(),
            ca_file: None,
            timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
        }
    }
}

/// Background jobs (intervals in milliseconds, so tests and `dev` can run them fast).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    pub expiry_interval_ms: u64,
    pub webhook_interval_ms: u64,
    /// Orders closed per expiry pass (bounded so one pass stays short).
    pub expiry_batch: i64,
    /// Where `serve worker` answers `/healthz`, `/readyz` and `/metrics` (empty: nowhere).
    pub metrics_listen: String,
    /// On SIGTERM, how long jobs in flight may finish before the process exits.
    pub drain_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            expiry_interval_ms: 30_000,
            webhook_interval_ms: 2_000,
            expiry_batch: 100,
            metrics_listen: "127.0.0.1:9090".into(),
            drain_secs: 20,
        }
    }
}

/// Nightly reconciliation (`[reconcile]`, per-merchant overrides in `[[reconcile.merchants]]`).
/// Times are the merchant's: WeChat's bill for day D is ready from about 09:00 Beijing time
/// on D+1, so the default run is 10:30 Asia/Shanghai for yesterday.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// Cron with seconds (`sec min hour dom mon dow`), in `timezone`.
    pub schedule: String,
    pub timezone: String,
    /// `Bill Creating` (or a failed download): try again this often…
    pub retry_interval_secs: u64,
    /// …until this local time (`HH:MM`) on the day after the bill date, then alert.
    pub deadline: String,
    /// Also download and match the fund-flow bill (Basic account; needs the certificate).
    pub fund_flow: bool,
    /// WeChat's fee rate for the merchant, e.g. `"0.60%"`; unset: fees are not checked per row.
    pub fee_rate: Option<String>,
    /// A payment or refund this close to midnight (seconds) that is missing from its day's
    /// bill is held for the neighbouring days' bills instead of being called missing.
    pub cross_day_window_secs: u64,
    /// How many following days' bills may still settle a held item.
    pub hold_days: u32,
    /// A run not finished after this long (its worker died) may be taken over.
    pub lease_secs: u64,
    pub merchants: Vec<MerchantReconcileConfig>,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            enabled: true,
            schedule: "0 30 10 * * *".into(),
            timezone: "Asia/Shanghai".into(),
            retry_interval_secs: 1800,
            deadline: "20:00".into(),
            fund_flow: true,
            fee_rate: None,
            cross_day_window_secs: 900,
            hold_days: 3,
            lease_secs: 1800,
            merchants: Vec::new(),
        }
    }
}

/// Per-merchant reconciliation overrides; unset fields take the `[reconcile]` value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MerchantReconcileConfig {
    pub mch_id: String,
    pub enabled: Option<bool>,
    pub schedule: Option<String>,
    pub fund_flow: Option<bool>,
    pub fee_rate: Option<String>,
}

/// Payouts to balance and red packets (`[payouts]`). Amounts are fen; "daily" is the
/// Asia/Shanghai day, as WeChat counts it. WeChat's own limits differ between copies of its
/// documentation (per-user daily payouts of 5,000 or 20,000 yuan, …): set these to the
/// merchant's contract, the defaults are conservative guesses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutsConfig {
    /// Per payout; WeChat refuses below about 1 yuan (AMOUNT_LIMIT).
    pub min_amount: i64,
    pub max_amount: i64,
    /// Payouts above this wait for an approver (a different key than the requester's).
    pub approval_threshold: i64,
    /// What one API key may have approved automatically (each at or below
    /// `approval_threshold`) per day; beyond it every payout of that key waits for an
    /// approver, so one finance key alone cannot empty the merchant's daily limit.
    pub auto_approve_daily_per_maker: i64,
    pub openid_daily_amount: i64,
    pub openid_daily_count: i32,
    pub merchant_daily_amount: i64,
    /// Every payout must name the payee (FORCE_CHECK).
    pub require_real_name: bool,
    /// Rows allowed in one CSV batch.
    pub batch_max_rows: usize,
    /// `spbill_create_ip` sent with payouts (the calling machine's address).
    pub spbill_create_ip: String,
    /// Red packets: total amount range per request, approval threshold and daily limits.
    pub redpack_min_amount: i64,
    pub redpack_max_amount: i64,
    pub redpack_approval_threshold: i64,
    /// As `auto_approve_daily_per_maker`, for red packets.
    pub redpack_auto_approve_daily_per_maker: i64,
    pub redpack_openid_daily_amount: i64,
    pub redpack_openid_daily_count: i32,
    pub redpack_merchant_daily_amount: i64,
    /// Per packet (a group packet's average): WeChat's 1–200 yuan unless a scene_id is given.
    pub redpack_min_per_packet: i64,
    pub redpack_max_per_packet: i64,
    /// Group packets: how many people share one.
    pub redpack_group_min_num: i32,
    pub redpack_group_max_num: i32,
    /// `client_ip` sent with normal red packets (the calling machine's address).
    pub redpack_client_ip: String,
    /// Default `send_name` when a request gives none.
    pub redpack_send_name: String,
    /// How often the worker sends what is due.
    pub send_interval_ms: u64,
    /// How long a claimed request is the sender's; raised to twice the WeChat timeout if lower.
    pub lease_ms: u64,
    /// First retry of an unknown outcome; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How often a sent red packet is checked (received, or refunded after 24 h).
    pub redpack_followup_ms: u64,
}

impl Default for PayoutsConfig {
    fn default() -> Self {
        PayoutsConfig {
            min_amount: 100,
            max_amount: 2_000_000,
            approval_threshold: 50_000,
            auto_approve_daily_per_maker: 200_000,
            openid_daily_amount: 500_000,
            openid_daily_count: 10,
            merchant_daily_amount: 10_000_000,
            require_real_name: false,
            batch_max_rows: 1000,
            spbill_create_ip: "127.0.0.1".into(),
            redpack_min_amount: 100,
            redpack_max_amount: 2_000_000,
            redpack_approval_threshold: 20_000,
            redpack_auto_approve_daily_per_maker: 100_000,
            redpack_openid_daily_amount: 100_000,
            redpack_openid_daily_count: 10,
            redpack_merchant_daily_amount: 10_000_000,
            redpack_min_per_packet: 100,
            redpack_max_per_packet: 20_000,
            redpack_group_min_num: 3,
            redpack_group_max_num: 20,
            redpack_client_ip: "127.0.0.1".into(),
            redpack_send_name: "minipay".into(),
            send_interval_ms: 2_000,
            lease_ms: 60_000,
            retry_initial_ms: 5_000,
            retry_max_ms: 600_000,
            redpack_followup_ms: 2 * 3_600_000,
        }
    }
}

impl PayoutsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("min_amount", self.min_amount),
            ("redpack_min_amount", self.redpack_min_amount),
            ("redpack_min_per_packet", self.redpack_min_per_packet),
        ];
        for (k, v) in positive {
            if v < 1 {
                return invalid(format!("payouts.{k} must be at least 1 fen"));
            }
        }
        if self.max_amount < self.min_amount || self.redpack_max_amount < self.redpack_min_amount {
            return invalid("payouts: a max_amount is below its min_amount");
        }
        if self.redpack_max_per_packet < self.redpack_min_per_packet {
            return invalid("payouts.redpack_max_per_packet is below redpack_min_per_packet");
        }
        if self.redpack_group_min_num < 3 || self.redpack_group_max_num < self.redpack_group_min_num {
            return invalid("payouts: group red packets need redpack_group_min_num >= 3 and max >= min");
        }
        if self.batch_max_rows == 0 || self.send_interval_ms == 0 || self.lease_ms == 0 {
            return invalid("payouts: batch_max_rows, send_interval_ms and lease_ms must be positive");
        }
        Ok(())
    }
}

/// Webhook delivery to client backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub timeout_ms: u64,
    /// After this many failed attempts an event is marked `dead`.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Events delivered per pass.
    pub batch: i64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_ms: 5_000,
            max_attempts: 12,
            initial_backoff_ms: 10_000,
            max_backoff_ms: 6 * 3600 * 1000,
            batch: 50,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMerchant {
    pub mch_id: String,
    pub api_key: Option<ApiKey>,
    pub api_key_file: Option<PathBuf>,
    pub sign_type: SignType,
    pub cert_p12_file: Option<PathBuf>,
    pub cert_password: Option<SecretString>,
    pub cert_password_file: Option<PathBuf>,
    pub cert_pem_file: Option<PathBuf>,
    pub key_pem_file: Option<PathBuf>,
    /// `"v2"` (default) or `"v3"`: the protocol payments and refunds use.
    pub api_version: merchant_v3::ApiVersionSetting,
    // APIv3 material (see [`merchant_v3`]); required when `api_version = "v3"`.
    pub mch_serial_no: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub api_v3_key: Option<SecretString>,
    pub api_v3_key_file: Option<PathBuf>,
    pub verify_mode: Option<merchant_v3::VerifyMode>,
    pub public_key_file: Option<PathBuf>,
    pub public_key_id: Option<String>,
    pub platform_cert_files: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawApp {
    pub appid: String,
    pub mch_id: String,
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    pub default: bool,
}

// ---------------------------------------------------------------------------------------
// The resolved configuration.

/// WeChat hosts and transport settings, with the extra root CA already read.
#[derive(Clone)]
pub struct WechatConfig {
    pub pay_base_url: String,
    pub api_base_url: String,
    /// PEM of an extra trusted root (the sandbox's CA); `None` in production.
    pub extra_root_ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatConfig")
            .field("pay_base_url", &self.pay_base_url)
            .field("api_base_url", &self.api_base_url)
            .field("extra_root_ca_pem", &self.extra_root_ca_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One merchant account with its key and (optional) client certificate loaded.
#[derive(Clone, Debug)]
pub struct MerchantConfig {
    pub mch_id: String,
    /// The v2 key: required for a v2 merchant; optional for a v3 one (its red packets and
    /// v2 transfers need it).
    pub api_key: Option<ApiKey>,
    pub sign_type: SignType,
    /// Needed for refunds, payouts and red packets.
    pub identity: Option<ClientIdentity>,
    /// The protocol payments and refunds use.
    pub api_version: wxpay::merchant::ApiVersion,
    /// The APIv3 material, when configured (always for a v3 merchant).
    pub v3: Option<merchant_v3::V3Merchant>,
}

/// One mini-program / official account.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub appid: String,
    pub mch_id: String,
    pub secret: SecretString,
    /// The app used when a request names none.
    pub default: bool,
}

/// Everything the services need, validated, secrets loaded.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub notify: NotifyConfig,
    pub wechat: WechatConfig,
    pub worker: WorkerConfig,
    pub webhooks: WebhookConfig,
    pub reconcile: ReconcileConfig,
    pub payouts: PayoutsConfig,
    pub merchants: Vec<MerchantConfig>,
    pub apps: Vec<AppConfig>,
    /// Issue 18: access token, session keys, customer-service pushes.
    pub platform: platform::PlatformConfig,
}

/// Where the sandbox is and how to trust it: what [`Config::demo`] needs.
#[derive(Clone)]
pub struct SandboxEndpoints {
    /// The sandbox's HTTPS base URL (payment host).
    pub pay_base_url: String,
    /// The sandbox's base URL for `api.weixin.qq.com` paths (jscode2session).
    pub api_base_url: String,
    /// The sandbox CA (PEM).
    pub ca_pem: Vec<u8>,
    /// The demo merchant's client certificate (PKCS#12, password = mch_id).
    pub client_p12: Vec<u8>,
    /// Set: the demo merchant speaks APIv3 with this material (its v2 key stays, for red
    /// packets and v2 transfers).
    pub v3: Option<merchant_v3::V3Merchant>,
}

impl Config {
    /// Reads `path` (else `$MINIPAY_CONFIG`, else defaults only), applies the process
    /// environment and loads every secret file.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os("MINIPAY_CONFIG").map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        let (text, base) = match &path {
            Some(p) => (read_text(p)?, p.parent().map(Path::to_path_buf).unwrap_or_default()),
            None => (String::new(), PathBuf::from(".")),
        };
        Config::from_toml_with_env(&text, std::env::vars(), &base)
    }

    /// Parses `text`, applies the `env` pairs (only `MINIPAY_…` ones are looked at) and
    /// resolves relative secret paths against `base`. [`Config::load`] without the process.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("MINIPAY_")).collect();
        let mut doc: toml::Table = toml::from_str(text)?;
        apply_env_overrides(&mut doc, &env)?;
        let raw: RawConfig = toml::Value::Table(doc).try_into()?;
        Config::resolve(raw, &env, base)
    }

    /// Loads the secrets and files a [`RawConfig`] names and checks the whole.
    pub fn resolve(raw: RawConfig, env: &[(String, String)], base: &Path) -> Result<Config, ConfigError> {
        let path = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        let lookup = |name: String| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let extra_root_ca_pem = match &raw.wechat.ca_file {
            Some(p) => Some(read_bytes(&path(p))?),
            None => None,
        };
        let wechat = WechatConfig {
            pay_base_url: raw.wechat.pay_base_url,
            api_base_url: raw.wechat.api_base_url,
            extra_root_ca_pem,
            timeout: Duration::from_millis(raw.wechat.timeout_ms),
            connect_timeout: Duration::from_millis(raw.wechat.connect_timeout_ms),
        };
        let mut merchants = Vec::new();
        for m in raw.merchants {
            let api_version = m.api_version.version();
            let api_key =
                match (lookup(format!("MINIPAY_MERCHANT_{}_API_KEY", m.mch_id)), &m.api_key_file, m.api_key.clone()) {
                    (Some(k), _, _) => Some(ApiKey::new(k)),
                    (None, Some(f), _) => Some(ApiKey::new(read_secret(&path(f))?)),
                    (None, None, Some(k)) => Some(k),
                    (None, None, None) if api_version == wxpay::merchant::ApiVersion::V3 => None,
                    (None, None, None) => {
                        return invalid(format!(
                            "merchant {}: api_key, api_key_file or MINIPAY_MERCHANT_{}_API_KEY is required",
                            m.mch_id, m.mch_id
                        ));
                    }
                };
            let v3 = merchant_v3::resolve(&m, api_version, &lookup, &path)?;
            let password = match (lookup(format!("MINIPAY_MERCHANT_{}_CERT_PASSWORD", m.mch_id)), &m.cert_password_file)
            {
                (Some(p), _) => Some(SecretString::from(p)),
                (None, Some(f)) => Some(SecretString::from(read_secret(&path(f))?)),
                (None, None) => m.cert_password,
            };
            let identity = match (&m.cert_p12_file, &m.cert_pem_file, &m.key_pem_file) {
                (Some(p12), None, None) => Some(ClientIdentity::Pkcs12 { der: read_bytes(&path(p12))?, password }),
                (None, Some(cert), Some(key)) => Some(ClientIdentity::Pem {
                    cert_pem: read_bytes(&path(cert))?,
                    key_pem: SecretString::from(read_text(&path(key))?),
                }),
                (None, None, None) => None,
                _ => {
                    return invalid(format!(
                        "merchant {}: give either cert_p12_file, or both cert_pem_file and key_pem_file",
                        m.mch_id
                    ));
                }
            };
            merchants.push(MerchantConfig {
                mch_id: m.mch_id,
                api_key,
                sign_type: m.sign_type,
                identity,
                api_version,
                v3,
            });
        }
        let mut apps = Vec::new();
        for a in raw.apps {
            let env_secret = lookup(format!("MINIPAY_APP_{}_SECRET", a.appid))
                .or_else(|| lookup(format!("MINIPAY_APP_{}_SECRET", a.appid.to_ascii_uppercase())));
            let secret = match (env_secret, &a.secret_file, a.secret) {
                (Some(s), _, _) => SecretString::from(s),
                (None, Some(f), _) => SecretString::from(read_secret(&path(f))?),
                (None, None, Some(s)) => s,
                (None, None, None) => {
                    return invalid(format!(
                        "app {}: secret, secret_file or MINIPAY_APP_<APPID>_SECRET is required",
                        a.appid
                    ));
                }
            };
            apps.push(AppConfig { appid: a.appid, mch_id: a.mch_id, secret, default: a.default });
        }
        let cfg = Config {
            database: raw.database,
            api: raw.api,
            notify: raw.notify,
            wechat,
            worker: raw.worker,
            webhooks: raw.webhooks,
            reconcile: raw.reconcile,
            payouts: raw.payouts,
            merchants,
            apps,
            platform: platform::PlatformConfig::resolve(raw.platform, &path, &lookup)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A configuration for the sandbox's demo merchant and app: what `minipay dev` and the
    /// end-to-end tests run with. Listeners on loopback port 0; `database_url` as given.
    pub fn demo(database_url: &str, sandbox: SandboxEndpoints) -> Config {
        Config {
            database: DatabaseConfig { url: SecretString::from(database_url.to_owned()), ..DatabaseConfig::default() },
            api: ApiConfig { listen: "127.0.0.1:0".into(), ..ApiConfig::default() },
            notify: NotifyConfig { listen: "127.0.0.1:0".into(), ..NotifyConfig::default() },
            wechat: WechatConfig {
                pay_base_url: sandbox.pay_base_url,
                api_base_url: sandbox.api_base_url,
                extra_root_ca_pem: Some(sandbox.ca_pem),
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(3),
            },
            worker: WorkerConfig::default(),
            webhooks: WebhookConfig::default(),
            reconcile: ReconcileConfig::default(),
            payouts: PayoutsConfig::default(),
            merchants: vec![MerchantConfig {
                mch_id: DEMO_MCH_ID.into(),
                api_key: Some(ApiKey::new(DEMO_API_KEY)),
                sign_type: SignType::Md5,
                identity: Some(ClientIdentity::Pkcs12 { der: sandbox.client_p12, password: None }),
                api_version: if sandbox.v3.is_some() {
                    wxpay::merchant::ApiVersion::V3
                } else {
                    wxpay::merchant::ApiVersion::V2
                },
                v3: sandbox.v3,
            }],
            apps: vec![AppConfig {
                appid: DEMO_APPID.into(),
                mch_id: DEMO_MCH_ID.into(),
                secret: SecretString::from(DEMO_APP_SECRET.to_owned()),
                default: true,
            }],
            platform: platform::PlatformConfig::default(),
        }
    }

    /// Refuses configurations the services cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.payouts.validate()?;
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1");
        }
        if self.database.group_max == 0 || self.database.group_in_flight == 0 || self.api.group_in_flight == 0 {
            return invalid("database.group_max, database.group_in_flight and api.group_in_flight must be at least 1");
        }
        if self.api.max_body_bytes < 256 {
            return invalid("api.max_body_bytes must be at least 256");
        }
        for (name, url) in
            [("wechat.pay_base_url", &self.wechat.pay_base_url), ("wechat.api_base_url", &self.wechat.api_base_url)]
        {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid(format!("{name} must be an http(s) URL"));
            }
        }
        if !(self.notify.public_url.starts_with("https://") || self.notify.public_url.starts_with("http://")) {
            return invalid("notify.public_url must be an http(s) URL");
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.merchants {
            if m.mch_id.is_empty() || !m.mch_id.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(format!("mch_id {:?} must be digits", m.mch_id));
            }
            if !seen.insert(m.mch_id.as_str()) {
                return invalid(format!("merchant {} appears twice", m.mch_id));
            }
            if m.api_key.as_ref().is_some_and(|k| k.expose().is_empty()) {
                return invalid(format!("merchant {} has an empty api_key", m.mch_id));
            }
            if m.api_version == wxpay::merchant::ApiVersion::V3 && m.v3.is_none() {
                return invalid(format!("merchant {}: api_version = \"v3\" needs the v3 material", m.mch_id));
            }
        }
        let mut apps = std::collections::BTreeSet::new();
        for a in &self.apps {
            if a.appid.is_empty() || !a.appid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return invalid(format!("appid {:?} must be alphanumeric", a.appid));
            }
            if !apps.insert(a.appid.as_str()) {
                return invalid(format!("app {} appears twice", a.appid));
            }
            if self.merchant(&a.mch_id).is_none() {
                return invalid(format!("app {} names merchant {}, which is not configured", a.appid, a.mch_id));
            }
            if a.secret.expose_secret().is_empty() {
                return invalid(format!("app {} has an empty secret", a.appid));
            }
        }
        if self.apps.iter().filter(|a| a.default).count() > 1 {
            return invalid("at most one app may be marked default");
        }
        Ok(())
    }

    pub fn merchant(&self, mch_id: &str) -> Option<&MerchantConfig> {
        self.merchants.iter().find(|m| m.mch_id == mch_id)
    }

    pub fn app(&self, appid: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    /// The app used when a request names none: the one marked `default`, else the only one.
    pub fn default_app(&self) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.default).or(if self.apps.len() == 1 { self.apps.first() } else { None })
    }

    /// The app a merchant's own calls carry (its default app, else its first).
    pub fn merchant_app(&self, mch_id: &str) -> Option<&AppConfig> {
        let mut of = self.apps.iter().filter(|a| a.mch_id == mch_id);
        self.apps.iter().find(|a| a.mch_id == mch_id && a.default).or_else(|| of.next())
    }

    /// Where WeChat sends payment notifications.
    pub fn pay_notify_url(&self) -> String {
        format!("{}/wxpay/notify/pay", self.notify.public_url.trim_end_matches('/'))
    }

    /// Where WeChat sends refund notifications.
    pub fn refund_notify_url(&self) -> String {
        format!("{}/wxpay/notify/refund", self.notify.public_url.trim_end_matches('/'))
    }

    /// The WeChat Pay client for a merchant, carrying the merchant's default app.
    pub fn wxpay_client(&self, mch_id: &str) -> Result<wxpay::Client, ConfigError> {
        let app = self.merchant_app(mch_id).map(|a| a.appid.clone()).unwrap_or_default();
        self.wxpay_client_for(mch_id, &app)
    }

    /// The WeChat Pay client for a merchant acting for one of its apps (`appid` goes into
    /// every request; WeChat checks that it is bound to the merchant).
    pub fn wxpay_client_for(&self, mch_id: &str, appid: &str) -> Result<wxpay::Client, ConfigError> {
        let m = self
            .merchant(mch_id)
            .ok_or_else(|| ConfigError::Client { mch_id: mch_id.into(), message: "merchant not configured".into() })?;
        let key = m.api_key.clone().ok_or_else(|| ConfigError::Client {
            mch_id: mch_id.into(),
            message: "no v2 api_key configured (a v3 merchant needs one for red packets and v2 transfers)".into(),
        })?;
        let mut c = ClientConfig::new(mch_id, appid, key);
        c.base_url = self.wechat.pay_base_url.clone();
        c.sign_type = m.sign_type;
        c.timeout = self.wechat.timeout;
        c.connect_timeout = self.wechat.connect_timeout;
        c.identity = m.identity.clone();
        c.extra_root_ca_pem = self.wechat.extra_root_ca_pem.clone();
        wxpay::Client::new(c).map_err(|e| ConfigError::Client { mch_id: mch_id.into(), message: e.to_string() })
    }

    /// The payment and refund client for a merchant acting for one of its apps, in the
    /// merchant's protocol.
    pub fn merchant_client_for(&self, mch_id: &str, appid: &str) -> Result<MerchantClient, ConfigError> {
        let m = self
            .merchant(mch_id)
            .ok_or_else(|| ConfigError::Client { mch_id: mch_id.into(), message: "merchant not configured".into() })?;
        match (m.api_version, &m.v3) {
            (wxpay::merchant::ApiVersion::V3, Some(v3)) => Ok(MerchantClient::V3(v3.client(self, appid)?)),
            _ => Ok(MerchantClient::V2(self.wxpay_client_for(mch_id, appid)?)),
        }
    }

    /// The v3 client of a merchant that has v3 material (transfer-bills, certificates).
    pub fn v3_client_for(&self, mch_id: &str, appid: &str) -> Result<wxpay::v3::Client, ConfigError> {
        let m = self
            .merchant(mch_id)
            .ok_or_else(|| ConfigError::Client { mch_id: mch_id.into(), message: "merchant not configured".into() })?;
        match &m.v3 {
            Some(v3) => v3.client(self, appid),
            None => Err(ConfigError::Client { mch_id: mch_id.into(), message: "no APIv3 material configured".into() }),
        }
    }

    /// Where WeChat sends the payment notifications of `mch_id`'s orders, in its protocol.
    pub fn pay_notify_url_for(&self, mch_id: &str) -> String {
        match self.merchant(mch_id).map(|m| m.api_version) {
            Some(wxpay::merchant::ApiVersion::V3) => self.v3_pay_notify_url(mch_id),
            _ => self.pay_notify_url(),
        }
    }

    /// Where WeChat sends the refund notifications of `mch_id`, in its protocol.
    pub fn refund_notify_url_for(&self, mch_id: &str) -> String {
        match self.merchant(mch_id).map(|m| m.api_version) {
            Some(wxpay::merchant::ApiVersion::V3) => self.v3_refund_notify_url(mch_id),
            _ => self.refund_notify_url(),
        }
    }

    /// Where WeChat sends a v3 merchant's payment notifications. The path names the
    /// merchant because a v3 notification says which merchant it is for only inside its
    /// encrypted resource, and the APIv3 key that decrypts it is per merchant.
    pub fn v3_pay_notify_url(&self, mch_id: &str) -> String {
        format!("{}/wxpay/v3/notify/{mch_id}/pay", self.notify.public_url.trim_end_matches('/'))
    }

    /// Where WeChat sends a v3 merchant's refund notifications.
    pub fn v3_refund_notify_url(&self, mch_id: &str) -> String {
        format!("{}/wxpay/v3/notify/{mch_id}/refund", self.notify.public_url.trim_end_matches('/'))
    }

    /// The `api.weixin.qq.com` client (login, tokens).
    pub fn weixin_client(&self) -> Result<WeixinClient, ConfigError> {
        WeixinClient::new(WeixinConfig {
            base_url: self.wechat.api_base_url.clone(),
            connect_timeout: self.wechat.connect_timeout,
            timeout: self.wechat.timeout,
            extra_root_ca_pem: self.wechat.extra_root_ca_pem.clone(),
        })
        .map_err(|e| ConfigError::Invalid(format!("weixin client: {e}")))
    }
}

fn read_bytes(p: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })
}

fn read_text(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })
}

/// A secret file's content without the trailing newline editors and `echo` add.
fn read_secret(p: &Path) -> Result<String, ConfigError> {
    Ok(read_text(p)?.trim_end_matches(['\r', '\n']).to_owned())
}

/// Applies `MINIPAY_<SECTION>_<KEY>` to the parsed file. The value keeps the type the file
/// gave the key (a string stays a string even if it looks like a number); a key absent
/// from the file is typed by its looks (integer, float, boolean, else string) and checked
/// by the section's deserializer.
fn apply_env_overrides(doc: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("MINIPAY_") else { continue };
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            lower.strip_prefix(s).and_then(|r| r.strip_prefix('_')).filter(|k| !k.is_empty()).map(|k| (*s, k))
        }) else {
            continue;
        };
        let table = doc
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Invalid(format!("[{section}] must be a table")))?;
        let typed = match table.get(key) {
            Some(toml::Value::String(_)) => toml::Value::String(value.clone()),
            _ => guess_value(value),
        };
        table.insert(key.to_owned(), typed);
    }
    Ok(())
}

fn guess_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Ok(f) = v.parse::<f64>() {
        toml::Value::Float(f)
    } else {
        toml::Value::String(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const FILE: &str = r#"
        [database]
        url = "postgres://u:pw@db/minipay"
        [api]
        listen = "0.0.0.0:8080"
        [notify]
        public_url = "https://pay.example.com/"
        [[merchants]]
        mch_id = "1900000109"
        api_key = "192006250b4c09247ec02edce69f6a2d"
        sign_type = "HMAC-SHA256"
        [[apps]]
        appid = "wxd930ea5d5a258f4f"
        mch_id = "1900000109"
        secret = "s3cret-app"
        default = true
    "#;

    #[test]
    fn defaults_load_without_a_file() {
        let c = Config::from_toml_with_env("", env(&[]), Path::new(".")).unwrap();
        assert_eq!(c.wechat.pay_base_url, "https://api.mch.weixin.qq.com");
        assert_eq!(c.wechat.api_base_url, "https://api.weixin.qq.com");
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert!(c.merchants.is_empty());
    }

    #[test]
    fn file_and_env_overrides() {
        let e = env(&[
            ("MINIPAY_DATABASE_URL", "postgres://other/db"),
            ("MINIPAY_DATABASE_MAX_CONNECTIONS", "7"),
            ("MINIPAY_API_LISTEN", "127.0.0.1:9999"),
            ("MINIPAY_WECHAT_TIMEOUT_MS", "1234"),
            ("MINIPAY_MERCHANT_1900000109_API_KEY", "from-env-key"),
            ("MINIPAY_APP_WXD930EA5D5A258F4F_SECRET", "from-env-secret"),
            ("UNRELATED", "x"),
        ]);
        let c = Config::from_toml_with_env(FILE, e, Path::new(".")).unwrap();
        assert_eq!(c.database.url.expose_secret(), "postgres://other/db");
        assert_eq!(c.database.max_connections, 7);
        assert_eq!(c.api.listen, "127.0.0.1:9999");
        assert_eq!(c.wechat.timeout, Duration::from_millis(1234));
        assert_eq!(c.merchants[0].api_key.as_ref().unwrap().expose(), "from-env-key");
        assert_eq!(c.merchants[0].sign_type, SignType::HmacSha256);
        assert_eq!(c.apps[0].secret.expose_secret(), "from-env-secret");
        assert_eq!(c.pay_notify_url(), "https://pay.example.com/wxpay/notify/pay");
        assert_eq!(c.default_app().unwrap().appid, "wxd930ea5d5a258f4f");
    }

    #[test]
    fn a_numeric_looking_string_stays_a_string() {
        let c = Config::from_toml_with_env(FILE, env(&[("MINIPAY_API_LISTEN", "8080")]), Path::new(".")).unwrap();
        assert_eq!(c.api.listen, "8080");
    }

    #[test]
    fn secrets_from_files_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "file-api-key-0001\n").unwrap();
        std::fs::write(dir.path().join("secret"), "file-app-secret\n").unwrap();
        let text = r#"
            [[merchants]]
            mch_id = "1230000109"
            api_key_file = "key"
            [[apps]]
            appid = "wx1"
            mch_id = "1230000109"
            secret_file = "secret"
        "#;
        let c = Config::from_toml_with_env(text, env(&[]), dir.path()).unwrap();
        assert_eq!(c.merchants[0].api_key.as_ref().unwrap().expose(), "file-api-key-0001");
        assert_eq!(c.apps[0].secret.expose_secret(), "file-app-secret");
        let d = format!("{c:?}");
        for secret in ["file-api-key-0001", "file-app-secret", "minipay@127.0.0.1"] {
            assert!(!d.contains(secret), "{secret} leaked into {d}");
        }
        assert_eq!(c.merchant_app("1230000109").unwrap().appid, "wx1");
    }

    #[test]
    fn refuses_bad_configurations() {
        let bad = [
            "[[merchants]]\nmch_id = \"19x\"\napi_key = \"k\"",
            "[[merchants]]\nmch_id = \"1900000109\"",
            "[[apps]]\nappid = \"wx1\"\nmch_id = \"1900000109\"\nsecret = \"s\"",
            "[wechat]\npay_base_url = \"ftp://x\"",
            "[api]\nlisten = \"x\"\nnonsense = 1",
            "[[merchants]]\nmch_id = \"1900000109\"\napi_key = \"k\"\ncert_pem_file = \"c.pem\"",
        ];
        for text in bad {
            assert!(Config::from_toml_with_env(text, env(&[]), Path::new(".")).is_err(), "accepted: {text}");
        }
        let missing =
            Config::from_toml_with_env("[wechat]\nca_file = \"/nonexistent/ca.pem\"", env(&[]), Path::new("."));
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
