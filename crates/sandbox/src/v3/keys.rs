//! Per-merchant APIv3 key material: what WeChat holds for one merchant.
//!
//! - The merchant's API certificate is the sandbox's client certificate for that merchant
//!   (as on WeChat, where one `apiclient_key.pem` serves both TLS for v2 and request
//!   signing for v3): its serial is the merchant serial, its public key checks requests.
//! - WeChat's side: a platform certificate (self-signed by [`wxpay::v3::keygen`], valid
//!   from a day ago for five years) and a WeChat Pay public key under the merchant's
//!   `PUB_KEY_ID_…`, each with its private key to sign answers and notifications and to
//!   decrypt OAEP fields. Both exist for every merchant; the mode decides which is used.

use std::path::Path;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private, Public};
use openssl::x509::X509;
use wxpay::v3::keygen;
use wxpay::v3::verify::{AnswerSigner, normalize_serial};

use crate::certs::CertKey;
use crate::config::{MerchantConfig, V3Mode};

/// One merchant's v3 keys (see the module docs).
pub struct V3Keys {
    pub mode: V3Mode,
    /// The merchant API certificate's serial (uppercase hex).
    pub merchant_serial: String,
    pub merchant_public: PKey<Public>,
    /// Platform certificates: the newest signs; the older ones stay listed by
    /// `/v3/certificates` (and usable for OAEP) until they expire, as during WeChat's
    /// rotations. See [`V3Keys::rotate_platform_certificate`].
    platform: std::sync::RwLock<Vec<PlatformCert>>,
    pub public_key_pem: Vec<u8>,
    pub public_key: AnswerSigner,
    public_private: PKey<Private>,
}

impl std::fmt::Debug for V3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Keys")
            .field("mode", &self.mode)
            .field("merchant_serial", &self.merchant_serial)
            .field("platform", &self.platform_signer())
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// One platform certificate with its private key.
#[derive(Clone)]
pub struct PlatformCert {
    pub cert: X509,
    pub signer: AnswerSigner,
    key: PKey<Private>,
}

impl PlatformCert {
    fn generate(not_before: i64) -> Result<PlatformCert, ErrorStack> {
        let key = keygen::rsa_2048()?;
        let cert = keygen::certificate(
            &key,
            &random_serial(),
            "Tenpay.com Root CA",
            not_before,
            not_before + 5 * 365 * 86_400,
        )?;
        Ok(PlatformCert { signer: AnswerSigner::new(serial_hex(&cert)?, key.clone()), cert, key })
    }
}

/// A serial as WeChat prints it: uppercase hex of the certificate's serial number.
pub fn serial_hex(cert: &X509) -> Result<String, ErrorStack> {
    Ok(cert.serial_number().to_bn()?.to_hex_str()?.to_string().to_ascii_uppercase())
}

/// A random 40-hex-digit serial starting with a non-zero digit (WeChat's are 40 digits).
fn random_serial() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut s = format!("{:X}", rng.random_range(1..16u8));
    while s.len() < 40 {
        s.push_str(&format!("{:X}", rng.random_range(0..16u8)));
    }
    s
}

impl V3Keys {
    /// Generates WeChat's keys for `cfg`; `merchant` is the merchant's client identity.
    pub fn generate(cfg: &MerchantConfig, merchant: &CertKey) -> Result<V3Keys, ErrorStack> {
        let now = chrono::Utc::now().timestamp();
        let platform = PlatformCert::generate(now - 86_400)?;
        let public_private = keygen::rsa_2048()?;
        Ok(V3Keys {
            mode: cfg.v3_mode,
            merchant_serial: serial_hex(&merchant.cert)?,
            merchant_public: merchant.cert.public_key()?,
            platform: std::sync::RwLock::new(vec![platform]),
            public_key_pem: public_private.public_key_to_pem()?,
            public_key: AnswerSigner::new(cfg.pub_key_id.clone(), public_private.clone()),
            public_private,
        })
    }

    fn platform_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<PlatformCert>> {
        self.platform.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current platform certificate's signer (the newest).
    pub fn platform_signer(&self) -> AnswerSigner {
        self.platform_read().last().expect("at least one platform certificate").signer.clone()
    }

    /// Every platform certificate WeChat lists now, oldest first.
    pub fn platform_certs(&self) -> Vec<X509> {
        self.platform_read().iter().map(|p| p.cert.clone()).collect()
    }

    /// WeChat's rotation: a new platform certificate (valid from now) signs from now on;
    /// the old ones stay listed until they expire. Returns the new serial.
    pub fn rotate_platform_certificate(&self) -> Result<String, ErrorStack> {
        let next = PlatformCert::generate(chrono::Utc::now().timestamp() - 60)?;
        let serial = next.signer.serial().to_owned();
        self.platform.write().unwrap_or_else(|e| e.into_inner()).push(next);
        Ok(serial)
    }

    /// The key that signs the next answer or notification: the mode's key, or either at
    /// random while switching.
    pub fn signer(&self) -> AnswerSigner {
        match self.mode {
            V3Mode::Certificate => self.platform_signer(),
            V3Mode::PublicKey => self.public_key.clone(),
            V3Mode::Switching => {
                if rand::random::<bool>() {
                    self.platform_signer()
                } else {
                    self.public_key.clone()
                }
            }
        }
    }

    /// The private key named by a request's `Wechatpay-Serial`, for OAEP-encrypted fields:
    /// only keys the mode makes available to the merchant count.
    pub fn decryption_key(&self, serial: &str) -> Option<PKey<Private>> {
        let s = normalize_serial(serial);
        if self.mode != V3Mode::PublicKey {
            let certs = self.platform_read();
            if let Some(p) = certs.iter().find(|p| normalize_serial(p.signer.serial()) == s) {
                return Some(p.key.clone());
            }
        }
        (self.mode != V3Mode::Certificate && s == normalize_serial(self.public_key.serial()))
            .then(|| self.public_private.clone())
    }

    /// Writes what a v3 client needs next to the v2 files in `dir`: `apiclient_serial_no.txt`
    /// (the merchant serial), `apiv3_key.txt`, `wechatpay_public_key.pem` +
    /// `wechatpay_public_key_id.txt` (public-key and switching modes),
    /// `wechatpay_platform_cert.pem` (certificate and switching modes) and `v3_mode.txt`.
    /// The signing key is `apiclient_key.pem`, written with the v2 files.
    pub fn write_dir(&self, dir: &Path, cfg: &MerchantConfig) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("apiclient_serial_no.txt"), &self.merchant_serial)?;
        crate::certs::write_private(&dir.join("apiv3_key.txt"), cfg.api_v3_key.expose())?;
        let mode = match self.mode {
            V3Mode::Certificate => "certificate",
            V3Mode::PublicKey => "public_key",
            V3Mode::Switching => "switching",
        };
        std::fs::write(dir.join("v3_mode.txt"), mode)?;
        let (cert_path, pub_path, id_path) = (
            dir.join("wechatpay_platform_cert.pem"),
            dir.join("wechatpay_public_key.pem"),
            dir.join("wechatpay_public_key_id.txt"),
        );
        for p in [&cert_path, &pub_path, &id_path] {
            if p.exists() {
                std::fs::remove_file(p)?;
            }
        }
        if self.mode != V3Mode::PublicKey {
            let current = self.platform_read().last().expect("a platform certificate").cert.to_pem();
            std::fs::write(cert_path, current.map_err(std::io::Error::other)?)?;
        }
        if self.mode != V3Mode::Certificate {
            std::fs::write(pub_path, &self.public_key_pem)?;
            std::fs::write(id_path, self.public_key.serial())?;
        }
        Ok(())
    }
}
