//! A merchant's APIv3 material: how minipay signs its requests and verifies WeChat.
//!
//! ```toml
//! [[merchants]]
//! mch_id = "1900000109"
//! api_version = "v3"
//! mch_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"  # the merchant API certificate's serial
//! private_key_file = "/run/secrets/apiclient_key.pem"           # default: key_pem_file
//! api_v3_key_file = "/run/secrets/apiv3_key"                     # or MINIPAY_MERCHANT_<MCH_ID>_API_V3_KEY
//! verify_mode = "public_key"                                     # certificate | public_key | both
//! public_key_file = "/run/secrets/wechatpay_public_key.pem"
//! public_key_id = "PUB_KEY_ID_0119000001092025120200000000000001"
//! # platform_cert_files = ["/etc/minipay/wechatpay_platform.pem"]  # optional seed (certificate mode)
//! # api_key_file = …   # the v2 key stays optional for a v3 merchant (red packets need it)
//! ```
//!
//! `verify_mode`: `certificate` fetches platform certificates from `/v3/certificates` (and
//! refreshes on an unknown serial); `public_key` verifies with the WeChat Pay public key only
//! and never fetches; `both` is the switch between the two (answers arrive signed by either).
//! Every inconsistency is refused at start-up naming the merchant and the field.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use wxpay::ApiV3Key;
use wxpay::merchant::ApiVersion;
use wxpay::v3::{KeySet, MerchantSigner, Mode, Verifier};

use crate::{Config, ConfigError, RawMerchant, read_bytes, read_secret, read_text};

/// `api_version` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ApiVersionSetting {
    #[default]
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v3")]
    V3,
}

impl ApiVersionSetting {
    pub fn version(self) -> ApiVersion {
        match self {
            ApiVersionSetting::V2 => ApiVersion::V2,
            ApiVersionSetting::V3 => ApiVersion::V3,
        }
    }
}

/// `verify_mode` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    Certificate,
    PublicKey,
    Both,
}

impl VerifyMode {
    pub fn mode(self) -> Mode {
        match self {
            VerifyMode::Certificate => Mode::Certificates,
            VerifyMode::PublicKey => Mode::PublicKey,
            VerifyMode::Both => Mode::Switching,
        }
    }
}

fn has_v3_fields(raw: &RawMerchant) -> bool {
    raw.mch_serial_no.is_some()
        || raw.private_key_file.is_some()
        || raw.api_v3_key.is_some()
        || raw.api_v3_key_file.is_some()
        || raw.verify_mode.is_some()
        || raw.public_key_file.is_some()
        || raw.public_key_id.is_some()
        || !raw.platform_cert_files.is_empty()
}

/// A merchant's resolved APIv3 material (keys loaded and checked).
#[derive(Clone)]
pub struct V3Merchant {
    pub signer: MerchantSigner,
    pub api_v3_key: ApiV3Key,
    pub mode: VerifyMode,
    /// `(PUB_KEY_ID_…, PEM)` in public_key and both modes.
    pub public_key: Option<(String, Vec<u8>)>,
    /// Seed platform certificates (PEM), if configured; more are fetched as needed.
    pub platform_certs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for V3Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Merchant")
            .field("serial_no", &self.signer.serial_no())
            .field("private_key", &"<redacted>")
            .field("api_v3_key", &"<redacted>")
            .field("mode", &self.mode)
            .field("public_key_id", &self.public_key.as_ref().map(|(id, _)| id))
            .field("platform_certs", &self.platform_certs.len())
            .finish()
    }
}

impl V3Merchant {
    /// The key set the merchant starts with: its public key and seed certificates.
    pub fn key_set(&self) -> Result<KeySet, ConfigError> {
        let mut ks = KeySet::new();
        let mch_id = self.signer.mchid();
        if let Some((id, pem)) = &self.public_key {
            ks.add_public_key_pem(id, pem).map_err(|e| field_err(mch_id, "public_key_file", e))?;
        }
        for pem in &self.platform_certs {
            ks.add_certificate_pem(pem).map_err(|e| field_err(mch_id, "platform_cert_files", e))?;
        }
        Ok(ks)
    }

    /// A v3 client for one of the merchant's apps, with the configuration's transport.
    pub fn client(&self, config: &Config, appid: &str) -> Result<wxpay::v3::Client, ConfigError> {
        let mut c = wxpay::v3::ClientConfig::new(appid, self.signer.clone(), self.api_v3_key.clone());
        c.base_url = config.wechat.pay_base_url.clone();
        c.timeout = config.wechat.timeout;
        c.connect_timeout = config.wechat.connect_timeout;
        c.extra_root_ca_pem = config.wechat.extra_root_ca_pem.clone();
        let verifier = Verifier::new(self.mode.mode(), self.key_set()?);
        wxpay::v3::Client::new(c, verifier)
            .map_err(|e| ConfigError::Client { mch_id: self.signer.mchid().into(), message: e.to_string() })
    }
}

fn field_err(mch_id: &str, field: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("merchant {mch_id}: {field}: {e}"))
}

fn missing(mch_id: &str, what: &str) -> ConfigError {
    ConfigError::Invalid(format!("merchant {mch_id}: api_version = \"v3\" needs {what}"))
}

/// Resolves the v3 fields of one merchant. `None` for a v2 merchant without v3 fields; a
/// v2 merchant may carry complete v3 material (for transfer-bills), never half of it.
pub(crate) fn resolve(
    raw: &RawMerchant,
    version: ApiVersion,
    lookup: &dyn Fn(String) -> Option<String>,
    path: &dyn Fn(&PathBuf) -> PathBuf,
) -> Result<Option<V3Merchant>, ConfigError> {
    let mch_id = raw.mch_id.as_str();
    let env_key = lookup(format!("MINIPAY_MERCHANT_{mch_id}_API_V3_KEY"));
    if version == ApiVersion::V2 && !has_v3_fields(raw) && env_key.is_none() {
        return Ok(None);
    }
    let serial = raw
        .mch_serial_no
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing(mch_id, "mch_serial_no (the merchant API certificate's serial number)"))?;
    if !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(field_err(mch_id, "mch_serial_no", "must be the certificate serial in hex"));
    }
    let key_file = raw
        .private_key_file
        .as_ref()
        .map(path)
        .or_else(|| raw.key_pem_file.as_ref().map(path))
        .ok_or_else(|| missing(mch_id, "private_key_file (apiclient_key.pem)"))?;
    let pem = SecretString::from(read_text(&key_file)?);
    let signer = MerchantSigner::from_pem(mch_id, serial, pem.expose_secret().as_bytes())
        .map_err(|e| field_err(mch_id, "private_key_file", e))?;
    let key = match (env_key, &raw.api_v3_key_file, &raw.api_v3_key) {
        (Some(k), _, _) => k,
        (None, Some(f), _) => read_secret(&path(f))?,
        (None, None, Some(k)) => k.expose_secret().to_owned(),
        (None, None, None) => {
            return Err(missing(
                mch_id,
                &format!("api_v3_key, api_v3_key_file or MINIPAY_MERCHANT_{mch_id}_API_V3_KEY"),
            ));
        }
    };
    let api_v3_key = ApiV3Key::new(key).map_err(|e| field_err(mch_id, "api_v3_key", e))?;
    let mode = raw.verify_mode.ok_or_else(|| missing(mch_id, "verify_mode (certificate, public_key or both)"))?;
    let public_key = match (mode, &raw.public_key_file, &raw.public_key_id) {
        (VerifyMode::Certificate, None, None) => None,
        (VerifyMode::Certificate, _, _) => {
            return Err(field_err(
                mch_id,
                "verify_mode",
                "is \"certificate\" but a public key is configured: use \"both\" while switching, or \"public_key\"",
            ));
        }
        (_, Some(f), Some(id)) => {
            let id = id.trim();
            if !id.starts_with("PUB_KEY_ID_") {
                return Err(field_err(mch_id, "public_key_id", "must start with PUB_KEY_ID_"));
            }
            Some((id.to_owned(), read_bytes(&path(f))?))
        }
        (_, None, _) => return Err(missing(mch_id, "public_key_file in public_key and both modes")),
        (_, _, None) => return Err(missing(mch_id, "public_key_id in public_key and both modes")),
    };
    if mode == VerifyMode::PublicKey && !raw.platform_cert_files.is_empty() {
        return Err(field_err(
            mch_id,
            "platform_cert_files",
            "given with verify_mode = \"public_key\": use \"both\" while switching",
        ));
    }
    let platform_certs = raw.platform_cert_files.iter().map(|f| read_bytes(&path(f))).collect::<Result<_, _>>()?;
    let m = V3Merchant { signer, api_v3_key, mode, public_key, platform_certs };
    m.key_set()?;
    Ok(Some(m))
}

/// The material of a merchant whose keys are at hand (the sandbox's demo merchant in
/// tests, `minipay dev` and benchmarks), checked as [`resolve`] checks a file's.
pub fn demo_material(
    mch_id: &str,
    serial: &str,
    key_pem: &[u8],
    api_v3_key: &ApiV3Key,
    mode: VerifyMode,
    public_key: Option<(&str, &[u8])>,
) -> Result<V3Merchant, ConfigError> {
    let signer = MerchantSigner::from_pem(mch_id, serial, key_pem).map_err(|e| field_err(mch_id, "private key", e))?;
    let public_key = match mode {
        VerifyMode::Certificate => None,
        _ => Some(public_key.ok_or_else(|| missing(mch_id, "the public key in public_key and both modes"))?),
    };
    let m = V3Merchant {
        signer,
        api_v3_key: api_v3_key.clone(),
        mode,
        public_key: public_key.map(|(id, pem)| (id.to_owned(), pem.to_vec())),
        platform_certs: Vec::new(),
    };
    m.key_set()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const APP: &str = r#"
        [[apps]]
        appid = "wxd930ea5d5a258f4f"
        mch_id = "1900000109"
        secret = "s3cret-app"
    "#;

    /// A directory with a merchant key, a WeChat Pay public key and an APIv3 key file.
    fn keys_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let key = wxpay::v3::keygen::rsa_2048().unwrap();
        std::fs::write(dir.path().join("apiclient_key.pem"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let wechat = wxpay::v3::keygen::rsa_2048().unwrap();
        std::fs::write(dir.path().join("pub.pem"), wechat.public_key_to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("apiv3"), "minipaySandboxApiV3Key0123456789\n").unwrap();
        dir
    }

    fn load(merchant: &str, dir: &Path) -> Result<Config, ConfigError> {
        let text = format!("[[merchants]]\nmch_id = \"1900000109\"\n{merchant}\n{APP}");
        Config::from_toml_with_env(&text, Vec::new(), dir)
    }

    const COMPLETE: &str = r#"
        api_version = "v3"
        mch_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
        private_key_file = "apiclient_key.pem"
        api_v3_key_file = "apiv3"
        verify_mode = "public_key"
        public_key_file = "pub.pem"
        public_key_id = "PUB_KEY_ID_0119000001092025120200000000000001"
    "#;

    #[test]
    fn a_complete_v3_merchant_loads_without_a_v2_key() {
        let dir = keys_dir();
        let c = load(COMPLETE, dir.path()).unwrap();
        let m = &c.merchants[0];
        assert_eq!(m.api_version, ApiVersion::V3);
        assert!(m.api_key.is_none());
        let v3 = m.v3.as_ref().unwrap();
        assert_eq!(v3.mode, VerifyMode::PublicKey);
        assert_eq!(v3.signer.serial_no(), "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        let shown = format!("{c:?}");
        assert!(!shown.contains("minipaySandboxApiV3Key"), "the APIv3 key never shows: {shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert_eq!(c.pay_notify_url_for("1900000109"), "http://127.0.0.1:8081/wxpay/v3/notify/1900000109/pay");
        let client = c.merchant_client_for("1900000109", "wxd930ea5d5a258f4f").unwrap();
        assert_eq!(client.version(), ApiVersion::V3);
    }

    #[test]
    fn incomplete_or_contradictory_v3_merchants_are_refused_by_field() {
        let dir = keys_dir();
        let without = |field: &str| {
            COMPLETE.lines().filter(|l| !l.trim_start().starts_with(field)).collect::<Vec<_>>().join("\n")
        };
        let cases: Vec<(String, &str)> = vec![
            (without("mch_serial_no"), "mch_serial_no"),
            (without("private_key_file"), "private_key_file"),
            (without("api_v3_key_file"), "api_v3_key"),
            (without("verify_mode"), "verify_mode"),
            (without("public_key_file"), "public_key_file"),
            (without("public_key_id"), "public_key_id"),
            (COMPLETE.replace("PUB_KEY_ID_0119", "0119"), "public_key_id"),
            (COMPLETE.replace("\"public_key\"", "\"certificate\""), "verify_mode"),
            (COMPLETE.replace("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", "not-hex"), "mch_serial_no"),
            (COMPLETE.replace("api_v3_key_file = \"apiv3\"", "api_v3_key = \"short\""), "api_v3_key"),
            (format!("{COMPLETE}\nplatform_cert_files = [\"pub.pem\"]"), "platform_cert_files"),
            // A v2 merchant without its v2 key.
            ("api_version = \"v2\"".to_owned(), "api_key"),
            // Half of the v3 material on a v2 merchant.
            ("api_key = \"k\"\nmch_serial_no = \"5157F0\"".to_owned(), "private_key_file"),
        ];
        for (merchant, field) in cases {
            let e = load(&merchant, dir.path()).expect_err(&merchant).to_string();
            assert!(e.contains("1900000109") && e.contains(field), "{field}: {e}\n{merchant}");
        }
    }

    #[test]
    fn both_mode_keeps_the_public_key_and_accepts_seed_certificates() {
        let dir = keys_dir();
        let c = load(&COMPLETE.replace("\"public_key\"", "\"both\""), dir.path()).unwrap();
        let v3 = c.merchants[0].v3.as_ref().unwrap();
        assert_eq!(v3.mode.mode(), Mode::Switching);
        assert_eq!(v3.key_set().unwrap().keys().count(), 1);
    }
}
