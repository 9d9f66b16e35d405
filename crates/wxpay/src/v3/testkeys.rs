//! Keys shared by the v3 tests, generated once per test binary (RSA generation is slow).

use std::sync::OnceLock;

use openssl::pkey::{PKey, Private, Public};
use openssl::x509::X509;

use super::keygen;
use super::sign::MerchantSigner;

pub const MCHID: &str = "1900000001";
pub const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F";
pub const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0117000800002025045698789500001779";

struct Keys {
    merchant: PKey<Private>,
    platform: PKey<Private>,
    wechat_public: PKey<Private>,
    platform_cert: X509,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let platform = keygen::rsa_2048().unwrap();
        let now = chrono::Utc::now().timestamp();
        let platform_cert =
            keygen::certificate(&platform, PLATFORM_SERIAL, "Tenpay.com Root", now - 86_400, now + 5 * 365 * 86_400)
                .unwrap();
        Keys {
            merchant: keygen::rsa_2048().unwrap(),
            platform,
            wechat_public: keygen::rsa_2048().unwrap(),
            platform_cert,
        }
    })
}

pub fn merchant() -> MerchantSigner {
    MerchantSigner::new(MCHID, MERCHANT_SERIAL, keys().merchant.clone())
}

pub fn merchant_public() -> PKey<Public> {
    public_of(&keys().merchant)
}

/// The platform certificate's private key (WeChat's side).
pub fn platform_private() -> PKey<Private> {
    keys().platform.clone()
}

pub fn platform_cert() -> X509 {
    keys().platform_cert.clone()
}

/// The private half of the "WeChat Pay public key" (WeChat's side).
pub fn wechat_public_private() -> PKey<Private> {
    keys().wechat_public.clone()
}

pub fn wechat_public_pem() -> Vec<u8> {
    keys().wechat_public.public_key_to_pem().unwrap()
}

pub fn public_of(k: &PKey<Private>) -> PKey<Public> {
    PKey::public_key_from_der(&k.public_key_to_der().unwrap()).unwrap()
}
