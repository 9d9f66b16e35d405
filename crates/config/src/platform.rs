//! `[platform]`: the mini-program platform services of issue 18 — the shared access token,
//! session keys at rest, and customer-service message pushes (消息推送).
//!
//! ```toml
//! [platform]
//! token_refresh_ahead_secs = 300          # WeChat renews stable tokens 5 min before expiry
//! token_refresh_interval_secs = 60        # background check; 0 = only on demand
//! session_key_encryption_key_file = "/run/secrets/session_key_key"   # 32 bytes, base64
//! push_reply_budget_ms = 3000             # answer WeChat by then even if storing lags
//!
//! [[platform.push]]
//! appid = "wxd930ea5d5a258f4f"
//! token_file = "/run/secrets/push_token"             # the console's Token
//! encoding_aes_key_file = "/run/secrets/push_aes"    # 43 characters; safe mode
//! transfer_to_customer_service = false               # hand chats to the web tool
//! ```
//! Secrets may also come from `MINIPAY_PUSH_<APPID>_TOKEN`, `MINIPAY_PUSH_<APPID>_AES_KEY`
//! and `MINIPAY_PLATFORM_SESSION_KEY_KEY`.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::ConfigError;

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPlatform {
    pub token_refresh_ahead_secs: u64,
    pub token_refresh_interval_secs: u64,
    pub session_key_encryption_key: Option<SecretString>,
    pub session_key_encryption_key_file: Option<PathBuf>,
    pub push_reply_budget_ms: u64,
    pub push: Vec<RawPush>,
}

impl Default for RawPlatform {
    fn default() -> RawPlatform {
        RawPlatform {
            token_refresh_ahead_secs: 300,
            token_refresh_interval_secs: 60,
            session_key_encryption_key: None,
            session_key_encryption_key_file: None,
            push_reply_budget_ms: 3000,
            push: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPush {
    pub appid: String,
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub encoding_aes_key: Option<SecretString>,
    pub encoding_aes_key_file: Option<PathBuf>,
    pub transfer_to_customer_service: bool,
}

/// One app's push settings, secrets loaded.
#[derive(Clone)]
pub struct PushConfig {
    pub appid: String,
    pub token: SecretString,
    /// `None`: plaintext mode only.
    pub encoding_aes_key: Option<SecretString>,
    pub transfer_to_customer_service: bool,
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("appid", &self.appid)
            .field("token", &"***")
            .field("encoding_aes_key", &self.encoding_aes_key.as_ref().map(|_| "***"))
            .field("transfer_to_customer_service", &self.transfer_to_customer_service)
            .finish()
    }
}

/// The 32-byte key that seals session keys at rest.
#[derive(Clone)]
pub struct SealKey(pub [u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(***)")
    }
}

/// The resolved section.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    pub token_refresh_ahead_secs: u64,
    pub token_refresh_interval_secs: u64,
    /// `None`: session keys are not kept (decrypting user data is then unavailable).
    pub session_key_encryption_key: Option<SealKey>,
    pub push_reply_budget_ms: u64,
    pub push: Vec<PushConfig>,
}

impl Default for PlatformConfig {
    fn default() -> PlatformConfig {
        let raw = RawPlatform::default();
        PlatformConfig {
            token_refresh_ahead_secs: raw.token_refresh_ahead_secs,
            token_refresh_interval_secs: raw.token_refresh_interval_secs,
            session_key_encryption_key: None,
            push_reply_budget_ms: raw.push_reply_budget_ms,
            push: Vec::new(),
        }
    }
}

fn read_secret(p: &Path) -> Result<SecretString, ConfigError> {
    let text =
        std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
    Ok(SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Parses a base64 32-byte key.
pub fn parse_seal_key(s: &SecretString) -> Result<SealKey, ConfigError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.expose_secret().trim())
        .map_err(|_| ConfigError::Invalid("platform.session_key_encryption_key must be base64".into()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ConfigError::Invalid("platform.session_key_encryption_key must be 32 bytes".into()))?;
    Ok(SealKey(key))
}

impl PlatformConfig {
    pub fn push_for(&self, appid: &str) -> Option<&PushConfig> {
        self.push.iter().find(|p| p.appid == appid)
    }

    /// Loads the secrets `raw` names; `path` resolves relative files, `lookup` reads env.
    pub fn resolve(
        raw: RawPlatform,
        path: &dyn Fn(&PathBuf) -> PathBuf,
        lookup: &dyn Fn(String) -> Option<String>,
    ) -> Result<PlatformConfig, ConfigError> {
        let key = match (
            lookup("MINIPAY_PLATFORM_SESSION_KEY_KEY".into()),
            &raw.session_key_encryption_key_file,
            &raw.session_key_encryption_key,
        ) {
            (Some(k), _, _) => Some(parse_seal_key(&SecretString::from(k))?),
            (None, Some(f), _) => Some(parse_seal_key(&read_secret(&path(f))?)?),
            (None, None, Some(k)) => Some(parse_seal_key(k)?),
            (None, None, None) => None,
        };
        let mut push = Vec::new();
        for p in raw.push {
            let up = p.appid.to_ascii_uppercase();
            let token = match (lookup(format!("MINIPAY_PUSH_{up}_TOKEN")), &p.token_file, p.token) {
                (Some(t), _, _) => SecretString::from(t),
                (None, Some(f), _) => read_secret(&path(f))?,
                (None, None, Some(t)) => t,
                (None, None, None) => {
                    return Err(ConfigError::Invalid(format!(
                        "platform.push {}: token, token_file or MINIPAY_PUSH_{up}_TOKEN is required",
                        p.appid
                    )));
                }
            };
            let aes = match (lookup(format!("MINIPAY_PUSH_{up}_AES_KEY")), &p.encoding_aes_key_file, p.encoding_aes_key)
            {
                (Some(k), _, _) => Some(SecretString::from(k)),
                (None, Some(f), _) => Some(read_secret(&path(f))?),
                (None, None, k) => k,
            };
            if aes.as_ref().is_some_and(|k| k.expose_secret().len() != 43) {
                return Err(ConfigError::Invalid(format!(
                    "platform.push {}: encoding_aes_key must be the console's 43 characters",
                    p.appid
                )));
            }
            if token.expose_secret().is_empty() {
                return Err(ConfigError::Invalid(format!("platform.push {}: empty token", p.appid)));
            }
            push.push(PushConfig {
                appid: p.appid,
                token,
                encoding_aes_key: aes,
                transfer_to_customer_service: p.transfer_to_customer_service,
            });
        }
        Ok(PlatformConfig {
            token_refresh_ahead_secs: raw.token_refresh_ahead_secs,
            token_refresh_interval_secs: raw.token_refresh_interval_secs,
            session_key_encryption_key: key,
            push_reply_budget_ms: raw.push_reply_budget_ms,
            push,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    const FILE: &str = r#"
        [platform]
        token_refresh_ahead_secs = 240
        session_key_encryption_key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
        [[platform.push]]
        appid = "wxd930ea5d5a258f4f"
        token = "push-token"
        encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
        transfer_to_customer_service = true
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, crate::ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml_with_env(text, env, Path::new("."))
    }

    #[test]
    fn defaults_and_a_full_section() {
        let c = load("", &[]).unwrap();
        assert_eq!((c.platform.token_refresh_ahead_secs, c.platform.push_reply_budget_ms), (300, 3000));
        assert!(c.platform.session_key_encryption_key.is_none() && c.platform.push.is_empty());
        let c = load(FILE, &[]).unwrap();
        assert_eq!(c.platform.token_refresh_ahead_secs, 240);
        assert_eq!(c.platform.session_key_encryption_key.as_ref().unwrap().0, [7u8; 32]);
        let p = c.platform.push_for("wxd930ea5d5a258f4f").unwrap();
        assert!(p.transfer_to_customer_service && p.encoding_aes_key.is_some());
        // Debug never shows a secret.
        let dbg = format!("{:?}", c.platform);
        assert!(!dbg.contains("push-token") && !dbg.contains("abcdefgh") && !dbg.contains("BwcH"), "{dbg}");
    }

    #[test]
    fn secrets_from_the_environment_and_bad_values() {
        let c = load(FILE, &[("MINIPAY_PUSH_WXD930EA5D5A258F4F_TOKEN", "from-env")]).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(c.platform.push[0].token.expose_secret(), "from-env");
        let short = FILE.replace("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "short");
        assert!(load(&short, &[]).is_err());
        let bad_key = FILE.replace("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "AAAA");
        assert!(load(&bad_key, &[]).is_err());
        let no_token = FILE.replace("token = \"push-token\"", "");
        assert!(load(&no_token, &[]).is_err());
    }
}
