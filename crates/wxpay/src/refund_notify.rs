//! The refund-result notification's `req_info`: base64 → AES-256-ECB (key = lowercase hex
//! MD5 of the API key, i.e. 32 ASCII bytes, leading zeros kept) → PKCS#7 → an XML document
//! rooted at `<root>`. The outer notification is not signed; decrypting with our key is
//! the authentication, so a failure here means "not from WeChat (or another key)".
//!
//! [`encrypt_req_info`] is the inverse, for the sandbox that sends refund notifications.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use openssl::symm::{Cipher, decrypt, encrypt};

use chrono::{DateTime, Utc};

use crate::Fen;
use crate::api::refund::RefundStatus;
use crate::api::{ParseError, parse_wechat_time};
use crate::secret::ApiKey;
use crate::xml::{self, Params};

/// Why a `req_info` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("req_info is not base64")]
    Base64,
    #[error("req_info does not decrypt with our key (wrong key, corrupt or forged)")]
    Cipher,
    #[error("decrypted req_info is not a WeChat document: {0}")]
    Xml(#[from] xml::XmlError),
}

/// The AES key: the 32 lowercase hex characters of MD5(API key), as bytes.
fn aes_key(key: &ApiKey) -> [u8; 32] {
    let digest = Md5::digest(key.expose().as_bytes());
    let mut out = [0u8; 32];
    hex::encode_to_slice(digest, &mut out).expect("16 bytes encode to 32 hex chars");
    out
}

/// Decrypts `req_info` into its fields (transaction_id, out_trade_no, refund_id,
/// out_refund_no, total_fee, refund_fee, settlement_refund_fee, refund_status,
/// success_time, refund_recv_accout, refund_account, refund_request_source).
pub fn decrypt_req_info(req_info_b64: &str, key: &ApiKey) -> Result<Params, DecryptError> {
    let cipher_text = STANDARD.decode(req_info_b64.trim().as_bytes()).map_err(|_| DecryptError::Base64)?;
    let plain = decrypt(Cipher::aes_256_ecb(), &aes_key(key), None, &cipher_text).map_err(|_| DecryptError::Cipher)?;
    Ok(xml::decode(&plain)?)
}

/// Encrypts fields the way WeChat does (root `<root>`), for the sandbox.
pub fn encrypt_req_info(fields: &Params, key: &ApiKey) -> String {
    let doc = xml::Document { root: "root".into(), fields: fields.clone(), lists: Default::default() };
    let plain = xml::encode_document(&doc, "item");
    let cipher_text = encrypt(Cipher::aes_256_ecb(), &aes_key(key), None, plain.as_bytes())
        .expect("AES-256-ECB with a 32-byte key cannot fail");
    STANDARD.encode(cipher_text)
}

/// The decrypted refund result, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotifyInfo {
    pub transaction_id: String,
    pub out_trade_no: String,
    pub refund_id: String,
    pub out_refund_no: String,
    pub total_fee: Fen,
    pub refund_fee: Fen,
    pub settlement_refund_fee: Option<Fen>,
    /// SUCCESS, CHANGE or REFUNDCLOSE (PROCESSING is never notified).
    pub refund_status: RefundStatus,
    /// Present when SUCCESS.
    pub success_time: Option<DateTime<Utc>>,
    /// WeChat's spelling ("accout").
    pub refund_recv_accout: Option<String>,
    pub refund_account: Option<String>,
    pub refund_request_source: Option<String>,
}

impl RefundNotifyInfo {
    pub fn from_params(p: &Params) -> Result<RefundNotifyInfo, ParseError> {
        let opt = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        let req = |k: &'static str| opt(k).ok_or(ParseError::Missing(k));
        let fen = |k: &'static str, v: String| {
            Fen::parse_fen(&v).map_err(|_| ParseError::Invalid { field: k.into(), value: v })
        };
        let status = req("refund_status")?;
        Ok(RefundNotifyInfo {
            transaction_id: req("transaction_id")?,
            out_trade_no: req("out_trade_no")?,
            refund_id: req("refund_id")?,
            out_refund_no: req("out_refund_no")?,
            total_fee: fen("total_fee", req("total_fee")?)?,
            refund_fee: fen("refund_fee", req("refund_fee")?)?,
            settlement_refund_fee: opt("settlement_refund_fee").map(|v| fen("settlement_refund_fee", v)).transpose()?,
            refund_status: RefundStatus::parse(&status)
                .ok_or(ParseError::UnknownState { field: "refund_status", value: status })?,
            success_time: match opt("success_time") {
                None => None,
                Some(v) => {
                    Some(parse_wechat_time(&v).ok_or(ParseError::Invalid { field: "success_time".into(), value: v })?)
                }
            },
            refund_recv_accout: opt("refund_recv_accout"),
            refund_account: opt("refund_account"),
            refund_request_source: opt("refund_request_source"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public vector from go-pay/gopay's refund-notification test (also used by other
    /// SDKs): a real WeChat notification.
    const VECTOR: &str = "YYwp8C48th0wnQzTqeI+41pflB26v+smFj9z6h9RPBgxTyZyxc+4YNEz7QEgZNWj/6rIb2MfyWMZmCc41CfjKSssoSZPXxOhUayb6KvNSZ1p6frOX1PDWzhyruXK7ouNND+gDsG4yZ0XXzsL4/pYNwLLba/71QrnkJ/BHcByk4EXnglju5DLup9pJQSnTxjomI9Rxu57m9jg5lLQFxMWXyeASZJNvof0ulnHlWJswS4OxKOkmW7VEyKyLGV6npoOm03Qsx2wkRxLsSa9gPpg4hdaReeUqh1FMbm7aWjyrVYT/MEZWg98p4GomEIYvz34XfDncTezX4bf/ZiSLXt79aE1/YTZrYfymXeCrGjlbe0rg/T2ezJHAC870u2vsVbY1/KcE2A443N+DEnAziXlBQ1AeWq3Rqk/O6/TMM0lomzgctAOiAMg+bh5+Gu1ubA9O3E+vehULydD5qx2o6i3+qA9ORbH415NyRrQdeFq5vmCiRikp5xYptWiGZA0tkoaLKMPQ4ndE5gWHqiBbGPfULZWokI+QjjhhBmwgbd6J0VqpRorwOuzC/BHdkP72DCdNcm7IDUpggnzBIy0+seWIkcHEryKjge3YDHpJeQCqrAH0CgxXHDt1xtbQbST1VqFyuhPhUjDXMXrknrGPN/oE1t0rLRq+78cI+k8xe5E6seeUXQsEe8r3358mpcDYSmXWSXVZxK6er9EF98APqHwcndyEJD2YyCh/mMVhERuX+7kjlRXSiNUWa/Cv/XAKFQuvUYA5ea2eYWtPRHa4DpyuF1SNsaqVKfgqKXZrJHfAgslVpSVqUpX4zkKszHF4kwMZO3M7J1P94Mxa7Tm9mTOJePOoHPXeEB+m9rX6pSfoi3mJDQ5inJ+Vc4gOkg/Wd/lqiy6TTyP/dHDN6/v+AuJx5AXBo/2NDD3fWhHjkqEKIuARr2ClZt9ZRQO4HkXdZo7CN06sGCHk48Tg8PmxnxKcMZm7Aoquv5yMIM2gWSWIRJhwJ8cUpafIHc+GesDlbF6Zbt+/KXkafJAQq2RklEN+WvZ/zFz113EPgWPjp16TwBoziq96MMekvWKY/vdhjol8VFtGH9F61Oy1Xwf6DJtPw==";
    const VECTOR_KEY: &str = "ziR0QKsTUfMOuochC9RfCdmfHECorQAP";

    #[test]
    fn decrypts_the_public_gopay_vector() {
        let p = decrypt_req_info(VECTOR, &ApiKey::new(VECTOR_KEY)).unwrap();
        assert_eq!(p["out_refund_no"], "50fd012ed1b311e7af7800163e32c503");
        assert_eq!(p["refund_fee"], "6");
        assert_eq!(p["refund_status"], "SUCCESS");
        assert_eq!(p["success_time"], "2017-11-25 15:36:17");
        assert_eq!(p["refund_recv_accout"], "支付用户零钱");
        assert_eq!(p["transaction_id"], "4200000015201711256947025404");
        let info = RefundNotifyInfo::from_params(&p).unwrap();
        assert_eq!(info.refund_fee, Fen::new(6));
        assert_eq!(info.refund_status, RefundStatus::Success);
        assert_eq!(info.success_time.unwrap().to_rfc3339(), "2017-11-25T07:36:17+00:00");
    }

    #[test]
    fn wrong_key_or_garbage_is_refused() {
        assert_eq!(
            decrypt_req_info(VECTOR, &ApiKey::new("another-key-another-key-another-")),
            Err(DecryptError::Cipher)
        );
        assert_eq!(decrypt_req_info("not base64!!", &ApiKey::new(VECTOR_KEY)), Err(DecryptError::Base64));
    }

    #[test]
    fn encrypt_round_trips_and_reencrypts_the_vector() {
        let key = ApiKey::new(VECTOR_KEY);
        let p = decrypt_req_info(VECTOR, &key).unwrap();
        let again = decrypt_req_info(&encrypt_req_info(&p, &key), &key).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn key_derivation_keeps_leading_zeros() {
        // Hex MD5 is always 32 characters, lowercase.
        let k = aes_key(&ApiKey::new(VECTOR_KEY));
        assert!(k.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
    }
}
