//! Configuration: merchants, apps, users and limits, with defaults that let the sandbox run
//! with no file at all (the demo merchant `1900000109`, app `wxd930ea5d5a258f4f`).
//!
//! A TOML file (`minipay sandbox --config FILE`) replaces the defaults; see the README for the
//! format. Every limit WeChat applies is a number here because copies of WeChat's documents
//! disagree on them.

use serde::Deserialize;
use wxpay::v3::ApiV3Key;
use wxpay::{ApiKey, Fen};

/// The demo merchant number, app id and API key: public test values from WeChat's own
/// documentation, never valid on the real service.
pub const DEMO_MCH_ID: &str = "1900000109";
pub const DEMO_APPID: &str = "wxd930ea5d5a258f4f";
pub const DEMO_API_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
pub const DEMO_APP_SECRET: &str = "sandbox-demo-app-secret-0123456789";
/// The demo merchant's APIv3 key (32 ASCII bytes; a sandbox value, not WeChat's).
pub const DEMO_API_V3_KEY: &str = "minipaySandboxApiV3Key0123456789";
/// The demo merchant's WeChat Pay public key id (the shape WeChat prints; a sandbox value).
pub const DEMO_PUB_KEY_ID: &str = "PUB_KEY_ID_0119000001092025120200000000000001";
/// The demo user, whose real name (`张三`) FORCE_CHECK payouts must match.
pub const DEMO_USER: &str = "demo-user";

/// WeChat's payment-notification retry intervals after the first attempt (24h4m in all).
pub const WECHAT_RETRY_SCHEDULE_SECS: [u64; 15] =
    [15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid sandbox configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid sandbox configuration: {0}")]
    Invalid(String),
}

/// Everything the sandbox needs to start. `Default` is the no-configuration demo setup,
/// listening on 127.0.0.1 with OS-chosen ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Address both listeners bind to.
    pub host: String,
    /// Plain-HTTP port (0 = any free port).
    pub port: u16,
    /// HTTPS port (0 = any free port).
    pub tls_port: u16,
    /// Multiplies every real wait (notification retries, refund processing, payout delays):
    /// `0.001` turns WeChat's 15 s retry into 15 ms. The sandbox clock itself is not scaled.
    pub time_scale: f64,
    /// Sandbox seconds a refund stays PROCESSING before it succeeds.
    pub refund_delay_secs: u64,
    /// Sandbox seconds a v3 transfer bill waits for the user's confirmation before it is
    /// CANCELLED (WeChat: about 24 hours, *unverified*).
    pub transfer_confirm_secs: u64,
    /// How long one notification POST may take before it counts as failed (real ms).
    pub notify_timeout_ms: u64,
    /// Intervals between notification attempts (seconds, before scaling).
    pub retry_schedule_secs: Vec<u64>,
    /// Actix worker threads per listener.
    pub workers: usize,
    pub merchants: Vec<MerchantConfig>,
    pub apps: Vec<AppConfig>,
    pub users: Vec<UserConfig>,
    /// Host names the HTTPS certificate is valid for besides localhost and the loopback
    /// addresses (`sandbox` when other containers call it by its compose service name).
    pub tls_names: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            host: "127.0.0.1".into(),
            port: 0,
            tls_port: 0,
            time_scale: 1.0,
            refund_delay_secs: 5,
            transfer_confirm_secs: 86_400,
            notify_timeout_ms: 5000,
            retry_schedule_secs: WECHAT_RETRY_SCHEDULE_SECS.to_vec(),
            workers: 2,
            merchants: vec![MerchantConfig::default()],
            apps: vec![AppConfig::default()],
            users: vec![UserConfig::default()],
            tls_names: Vec::new(),
        }
    }
}

/// Which trade-bill layout a merchant's account produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BillLayout {
    /// The current 27-column ALL bill with order and requested-refund amounts.
    #[default]
    Current,
    /// Older accounts: 24 columns and a 5-column summary.
    Legacy,
}

/// One merchant account.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MerchantConfig {
    pub mch_id: String,
    pub api_key: ApiKey,
    /// Apps (mini-programs / official accounts) bound to this merchant.
    pub appids: Vec<String>,
    /// Starting balance of the account payouts and red packets draw on.
    pub balance_fen: i64,
    /// Fee rate in hundred-thousandths (600 = 0.600%, shown as `0.60%` in bills).
    pub fee_rate_per_100k: i64,
    pub bill_layout: BillLayout,
    /// Where refund notifications go when neither the refund request nor the order names one.
    pub refund_notify_url: Option<String>,
    pub limits: Limits,
    /// APIv3: the 32-byte key that encrypts notification resources and certificates.
    pub api_v3_key: ApiV3Key,
    /// APIv3: how WeChat signs answers and notifications for this merchant.
    pub v3_mode: V3Mode,
    /// APIv3: the id of the WeChat Pay public key (`PUB_KEY_ID_…`).
    pub pub_key_id: String,
}

/// How WeChat signs APIv3 answers and notifications for a merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum V3Mode {
    /// Platform certificates (merchants onboarded before late 2024); `/v3/certificates` serves them.
    Certificate,
    /// The WeChat Pay public key only; `/v3/certificates` answers 404 `RESOURCE_NOT_EXISTS`.
    #[default]
    PublicKey,
    /// Both while the merchant switches: each answer and notification is signed at random by
    /// either key (WeChat's documented behaviour during the switch).
    Switching,
}

impl Default for MerchantConfig {
    fn default() -> MerchantConfig {
        MerchantConfig {
            mch_id: DEMO_MCH_ID.into(),
            api_key: ApiKey::new(DEMO_API_KEY),
            appids: vec![DEMO_APPID.into()],
            balance_fen: 100_000_000,
            fee_rate_per_100k: 600,
            bill_layout: BillLayout::Current,
            refund_notify_url: None,
            limits: Limits::default(),
            api_v3_key: ApiV3Key::new(DEMO_API_V3_KEY).expect("the demo APIv3 key is 32 bytes"),
            v3_mode: V3Mode::PublicKey,
            pub_key_id: DEMO_PUB_KEY_ID.into(),
        }
    }
}

/// Payout and red-packet limits (all amounts in fen).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Smallest payout (AMOUNT_LIMIT below it).
    pub transfer_min_fen: i64,
    /// Largest single payout (AMOUNT_LIMIT above it).
    pub transfer_max_fen: i64,
    /// Per user per day (MONEY_LIMIT above it).
    pub transfer_daily_user_fen: i64,
    /// Payouts per user per day (SENDNUM_LIMIT above it).
    pub transfer_daily_user_count: u32,
    /// Per merchant per day (MONEY_LIMIT above it).
    pub transfer_daily_total_fen: i64,
    /// Red packet range without scene_id (MONEY_LIMIT outside it).
    pub redpack_min_fen: i64,
    pub redpack_max_fen: i64,
    /// Red packet range with a scene_id.
    pub redpack_scene_min_fen: i64,
    pub redpack_scene_max_fen: i64,
    /// Red packets per user per day (SENDNUM_LIMIT above it).
    pub redpack_daily_user_count: u32,
    /// Largest number of shares in a group red packet.
    pub group_max_num: u32,
    /// v3 transfer-bill calls per second per merchant (429 `FREQUENCY_LIMITED` above it;
    /// WeChat: about 100/s).
    pub transfer_bill_calls_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            transfer_min_fen: 100,
            transfer_max_fen: 2_000_000,
            transfer_daily_user_fen: 2_000_000,
            transfer_daily_user_count: 10,
            transfer_daily_total_fen: 100_000_000,
            redpack_min_fen: 100,
            redpack_max_fen: 20_000,
            redpack_scene_min_fen: 30,
            redpack_scene_max_fen: 499_900,
            redpack_daily_user_count: 10,
            group_max_num: 20,
            transfer_bill_calls_per_sec: 100,
        }
    }
}

/// One app (mini-program) with its secret for jscode2session and cgi-bin/token.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub appid: String,
    pub secret: wxpay::secret::SecretString,
    /// Whether the app is bound to an open-platform account (then logins carry a unionid).
    pub unionid: bool,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig").field("appid", &self.appid).field("secret", &"***").finish()
    }
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig { appid: DEMO_APPID.into(), secret: DEMO_APP_SECRET.to_owned().into(), unionid: true }
    }
}

/// A WeChat user. Openids are derived from `id` and the app, so they are stable across runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub id: String,
    /// The verified real name FORCE_CHECK payouts compare against; `None` = not verified.
    pub real_name: Option<String>,
    /// The phone number bound to the user's WeChat (getuserphonenumber); `None` = one derived
    /// from the id (`139` + 8 digits).
    pub phone: Option<String>,
}

impl Default for UserConfig {
    fn default() -> UserConfig {
        UserConfig { id: DEMO_USER.into(), real_name: Some("张三".into()), phone: Some("13800138000".into()) }
    }
}

impl SandboxConfig {
    /// The demo setup tuned for tests: waits 1000× shorter (a 15 s retry takes 15 ms),
    /// refunds settle after 2 sandbox seconds, one worker thread.
    pub fn for_tests() -> SandboxConfig {
        SandboxConfig { time_scale: 0.001, refund_delay_secs: 2, workers: 1, ..SandboxConfig::default() }
    }

    /// Reads a TOML file. Sections left out keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<SandboxConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        SandboxConfig::from_toml(&text)
    }

    /// Parses TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<SandboxConfig, ConfigError> {
        let cfg: SandboxConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses configurations the sandbox cannot serve consistently.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return bad("time_scale must be a positive number".into());
        }
        if self.merchants.is_empty() {
            return bad("at least one merchant is needed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.merchants {
            if m.mch_id.is_empty() || !m.mch_id.bytes().all(|b| b.is_ascii_digit()) {
                return bad(format!("mch_id {:?} must be digits", m.mch_id));
            }
            if !seen.insert(m.mch_id.clone()) {
                return bad(format!("mch_id {} appears twice", m.mch_id));
            }
            if m.api_key.expose().is_empty() {
                return bad(format!("merchant {} has an empty api_key", m.mch_id));
            }
            if !m.pub_key_id.starts_with("PUB_KEY_ID_") {
                return bad(format!("merchant {}: pub_key_id must start with PUB_KEY_ID_", m.mch_id));
            }
            if m.fee_rate_per_100k < 0 || m.balance_fen < 0 {
                return bad(format!("merchant {}: negative fee rate or balance", m.mch_id));
            }
        }
        let mut apps = std::collections::BTreeSet::new();
        for a in &self.apps {
            if !apps.insert(a.appid.clone()) {
                return bad(format!("appid {} appears twice", a.appid));
            }
        }
        Ok(())
    }

    /// Scales a sandbox duration into the real time to wait.
    pub fn scaled(&self, d: std::time::Duration) -> std::time::Duration {
        d.mul_f64(self.time_scale)
    }
}

/// Formats a fee rate the way bills show it (`600` → `0.60%`): two decimals of a percent,
/// rounded half up when the configuration is finer than that.
pub fn fee_rate_label(per_100k: i64) -> String {
    let hundredths_of_percent = (per_100k + 5) / 10;
    format!("{}.{:02}%", hundredths_of_percent / 100, hundredths_of_percent % 100)
}

/// The fee on an amount, in thousandths of a fen (bills show five decimals of a yuan).
/// `amount * rate` is exact in milli-fen when the rate is in hundred-thousandths:
/// fen × (per_100k / 100 000) × 1000 = fen × per_100k / 100. The remainder below one
/// milli-fen is rounded half away from zero (guess: WeChat's 四舍五入; its bills only ever
/// show fees with five decimals, so nothing finer is visible).
pub fn fee_millifen(amount: Fen, per_100k: i64) -> i64 {
    let num = amount.get() * per_100k;
    let q = num / 100;
    let r = num % 100;
    if r >= 50 {
        q + 1
    } else if r <= -50 {
        q - 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_parse() {
        SandboxConfig::default().validate().unwrap();
        let cfg = SandboxConfig::from_toml(
            r#"
            time_scale = 0.001
            [[merchants]]
            mch_id = "1230000109"
            api_key = "k"
            appids = ["wx1"]
            bill_layout = "legacy"
            v3_mode = "switching"
            api_v3_key = "0123456789abcdef0123456789abcdef"
            [merchants.limits]
            transfer_min_fen = 30
            [[users]]
            id = "bob"
            real_name = "李四"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.merchants[0].bill_layout, BillLayout::Legacy);
        assert_eq!(cfg.merchants[0].limits.transfer_min_fen, 30);
        assert_eq!(cfg.merchants[0].v3_mode, V3Mode::Switching);
        assert_eq!(cfg.merchants[0].pub_key_id, DEMO_PUB_KEY_ID);
        assert!(
            SandboxConfig::from_toml("[[merchants]]\nmch_id = \"1\"\napi_key = \"k\"\napi_v3_key = \"short\"").is_err()
        );
        assert_eq!(cfg.merchants[0].limits.transfer_max_fen, 2_000_000);
        assert_eq!(cfg.apps[0].appid, DEMO_APPID);
        assert!(!format!("{:?}", cfg.merchants[0]).contains("api_key: \"k\""));
        assert!(SandboxConfig::from_toml("time_scale = 0").is_err());
        assert!(SandboxConfig::from_toml("nonsense = 1").is_err());
    }

    #[test]
    fn fees_are_exact_milli_fen() {
        assert_eq!(fee_millifen(Fen::new(100), 600), 600); // 1.00 yuan at 0.6% = 0.00600
        assert_eq!(fee_millifen(Fen::new(1), 600), 6); // 0.00006
        assert_eq!(fee_millifen(Fen::new(-1), 600), -6);
        assert_eq!(fee_millifen(Fen::new(1), 25), 0); // 0.25 milli-fen rounds down
        assert_eq!(fee_millifen(Fen::new(3), 25), 1); // 0.75 rounds up
        assert_eq!(fee_rate_label(600), "0.60%");
        assert_eq!(fee_rate_label(1000), "1.00%");
        assert_eq!(fee_rate_label(38), "0.04%");
    }
}
