//! The two ciphers of APIv3.
//!
//! - **AEAD_AES_256_GCM** for `resource` objects (notifications, `/v3/certificates`): key =
//!   the APIv3 key's 32 bytes, IV = `nonce` (12 characters, used as bytes), AAD =
//!   `associated_data` (may be absent or empty), `ciphertext` = base64(ct ‖ 16-byte tag).
//!   Decryption authenticates: a wrong key, nonce, AAD or a flipped bit is
//!   [`CryptoError::Aead`], never garbage plaintext. Encryption exists for the sandbox.
//! - **RSAES-OAEP with SHA-1 and MGF1-SHA1** for sensitive request fields (`user_name` of a
//!   transfer bill), under the platform certificate or the public key; at most
//!   [`OAEP_MAX_PLAINTEXT`] bytes for RSA-2048. Decryption (private key) is for the sandbox
//!   and tests; WeChat never sends us OAEP fields on the calls minipay makes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};
use serde::{Deserialize, Serialize};

use super::verify::KeySet;
use crate::secret::ApiV3Key;

/// The only `algorithm` WeChat uses for resources.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

const TAG_LEN: usize = 16;

/// RSA-2048 OAEP-SHA1: 256 − 2·20 − 2 bytes.
pub const OAEP_MAX_PLAINTEXT: usize = 214;

/// Why a decryption or encryption was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("ciphertext is not base64")]
    Base64,
    #[error("ciphertext shorter than its 16-byte tag")]
    TooShort,
    #[error("empty nonce")]
    Nonce,
    #[error("does not decrypt with the APIv3 key (wrong key, nonce or associated data, or tampered)")]
    Aead,
    #[error("decrypted resource is not UTF-8")]
    Utf8,
    #[error("plaintext of {0} bytes is longer than the key allows")]
    TooLong(usize),
    #[error("RSA-OAEP failed (wrong key or corrupt ciphertext)")]
    Oaep,
    #[error("no valid platform certificate or public key to encrypt with")]
    NoEncryptionKey,
}

/// A sensitive field encrypted for WeChat, with the serial of the key used: the request
/// that carries it must send that serial as `Wechatpay-Serial`.
/// Serialises as the bare base64 ciphertext, the form the request field takes.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedField {
    pub ciphertext: String,
    pub serial: String,
}

impl Serialize for EncryptedField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.ciphertext)
    }
}

impl std::fmt::Debug for EncryptedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ciphertext is safe to show, but long and useless in a log line.
        f.debug_struct("EncryptedField").field("serial", &self.serial).finish_non_exhaustive()
    }
}

/// Encrypts a sensitive field (e.g. a payee's real name) with the key set's encryption key
/// ([`KeySet::encryption_key`]: the public key, else the newest valid certificate).
pub fn encrypt_field(keys: &KeySet, plaintext: &str, now: i64) -> Result<EncryptedField, CryptoError> {
    let key = keys.encryption_key(now).ok_or(CryptoError::NoEncryptionKey)?;
    Ok(EncryptedField { ciphertext: oaep_encrypt(&key.public, plaintext)?, serial: key.serial.clone() })
}

/// An encrypted `resource` object as WeChat sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    pub nonce: String,
    /// `transaction`, `refund`, `mch_payment`, `certificate`…; absent means empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    /// The payload's type name (`transaction`, `refund`, `mch_payment`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

impl EncryptedResource {
    /// Decrypts and authenticates the resource; returns the plaintext (JSON or PEM text).
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<String, CryptoError> {
        if self.algorithm != AEAD_AES_256_GCM {
            return Err(CryptoError::Algorithm(self.algorithm.clone()));
        }
        let aad = self.associated_data.as_deref().unwrap_or("");
        let plain = aead_decrypt(key, self.nonce.as_bytes(), aad.as_bytes(), &self.ciphertext)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypts `plaintext` the way WeChat does (the sandbox's notifications and
    /// certificates). `nonce` should be 12 fresh characters per resource.
    pub fn seal(
        key: &ApiV3Key,
        plaintext: &str,
        nonce: &str,
        associated_data: &str,
        original_type: Option<&str>,
    ) -> Result<EncryptedResource, CryptoError> {
        Ok(EncryptedResource {
            algorithm: AEAD_AES_256_GCM.into(),
            ciphertext: aead_encrypt(key, nonce.as_bytes(), associated_data.as_bytes(), plaintext.as_bytes())?,
            nonce: nonce.to_owned(),
            associated_data: Some(associated_data.to_owned()),
            original_type: original_type.map(str::to_owned),
        })
    }
}

/// AES-256-GCM decryption of base64(ct ‖ tag).
pub fn aead_decrypt(key: &ApiV3Key, nonce: &[u8], aad: &[u8], ciphertext_b64: &str) -> Result<Vec<u8>, CryptoError> {
    if nonce.is_empty() {
        return Err(CryptoError::Nonce);
    }
    let data = STANDARD.decode(ciphertext_b64.trim().as_bytes()).map_err(|_| CryptoError::Base64)?;
    if data.len() < TAG_LEN {
        return Err(CryptoError::TooShort);
    }
    let (ct, tag) = data.split_at(data.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key.expose(), Some(nonce), aad, ct, tag).map_err(|_| CryptoError::Aead)
}

/// AES-256-GCM encryption; returns base64(ct ‖ tag).
pub fn aead_encrypt(key: &ApiV3Key, nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<String, CryptoError> {
    if nonce.is_empty() {
        return Err(CryptoError::Nonce);
    }
    let mut tag = [0u8; TAG_LEN];
    let mut ct = encrypt_aead(Cipher::aes_256_gcm(), key.expose(), Some(nonce), aad, plaintext, &mut tag)
        .map_err(|_| CryptoError::Aead)?;
    ct.extend_from_slice(&tag);
    Ok(STANDARD.encode(ct))
}

/// RSAES-OAEP (SHA-1, MGF1-SHA1) of a sensitive field, base64. Send the key's serial as
/// `Wechatpay-Serial` with the request.
pub fn oaep_encrypt(public: &PKey<Public>, plaintext: &str) -> Result<String, CryptoError> {
    let rsa = public.rsa().map_err(|_| CryptoError::Oaep)?;
    let max = (rsa.size() as usize).saturating_sub(42);
    if plaintext.len() > max {
        return Err(CryptoError::TooLong(plaintext.len()));
    }
    let mut out = vec![0u8; rsa.size() as usize];
    // OpenSSL's PKCS1_OAEP padding is exactly SHA-1 with MGF1-SHA1, what WeChat specifies.
    let n = rsa.public_encrypt(plaintext.as_bytes(), &mut out, Padding::PKCS1_OAEP).map_err(|_| CryptoError::Oaep)?;
    out.truncate(n);
    Ok(STANDARD.encode(out))
}

/// The inverse of [`oaep_encrypt`] with the private key (sandbox and tests).
pub fn oaep_decrypt(private: &PKey<Private>, ciphertext_b64: &str) -> Result<String, CryptoError> {
    let data = STANDARD.decode(ciphertext_b64.trim().as_bytes()).map_err(|_| CryptoError::Base64)?;
    let rsa = private.rsa().map_err(|_| CryptoError::Oaep)?;
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa.private_decrypt(&data, &mut out, Padding::PKCS1_OAEP).map_err(|_| CryptoError::Oaep)?;
    out.truncate(n);
    String::from_utf8(out).map_err(|_| CryptoError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::testkeys;

    fn key() -> ApiV3Key {
        ApiV3Key::new("0123456789abcdefghijABCDEFGHIJ!@").unwrap()
    }

    /// NIST GCM test case 16 (AES-256, 96-bit IV, AAD) from McGrew & Viega's GCM spec:
    /// a published vector for the primitive, with the key given as raw bytes.
    #[test]
    fn nist_gcm_vector() {
        let k = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308").unwrap();
        let iv = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
        let tag = "76fc6ece0f4e1768cddf8853bb2d551b";
        // The raw NIST key is not ASCII; ApiV3Key holds a String, so go through the primitive.
        let mut t = [0u8; 16];
        let got = encrypt_aead(Cipher::aes_256_gcm(), &k, Some(&iv), &aad, &pt, &mut t).unwrap();
        assert_eq!(hex::encode(&got), ct);
        assert_eq!(hex::encode(t), tag);
        // And our tag-last framing of it decrypts through the same code path as resources.
        let framed = [got, t.to_vec()].concat();
        let (c, tg) = framed.split_at(framed.len() - TAG_LEN);
        assert_eq!(decrypt_aead(Cipher::aes_256_gcm(), &k, Some(&iv), &aad, c, tg).unwrap(), pt);
    }

    #[test]
    fn resource_round_trip_and_json_shape() {
        let plain = r#"{"mchid":"1900000001","out_trade_no":"MP1","trade_state":"SUCCESS"}"#;
        let r = EncryptedResource::seal(&key(), plain, "fdasflkja484", "transaction", Some("transaction")).unwrap();
        assert_eq!(r.decrypt(&key()).unwrap(), plain);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["algorithm"], "AEAD_AES_256_GCM");
        assert_eq!(json["associated_data"], "transaction");
        let back: EncryptedResource = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn missing_associated_data_means_empty() {
        let r = EncryptedResource::seal(&key(), "x", "abcdefghijkl", "", None).unwrap();
        let json =
            format!(r#"{{"algorithm":"AEAD_AES_256_GCM","ciphertext":"{}","nonce":"abcdefghijkl"}}"#, r.ciphertext);
        let parsed: EncryptedResource = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.decrypt(&key()).unwrap(), "x");
    }

    #[test]
    fn wrong_key_nonce_aad_or_tamper_is_refused() {
        let r = EncryptedResource::seal(&key(), "secret payload", "abcdefghijkl", "refund", None).unwrap();
        let other = ApiV3Key::new("ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(r.decrypt(&other), Err(CryptoError::Aead));
        let mut n = r.clone();
        n.nonce = "abcdefghijkm".into();
        assert_eq!(n.decrypt(&key()), Err(CryptoError::Aead));
        let mut a = r.clone();
        a.associated_data = Some("transaction".into());
        assert_eq!(a.decrypt(&key()), Err(CryptoError::Aead));
        let mut bytes = STANDARD.decode(&r.ciphertext).unwrap();
        bytes[0] ^= 1;
        let mut t = r.clone();
        t.ciphertext = STANDARD.encode(&bytes);
        assert_eq!(t.decrypt(&key()), Err(CryptoError::Aead));
        let mut alg = r.clone();
        alg.algorithm = "AES_128_CBC".into();
        assert_eq!(alg.decrypt(&key()), Err(CryptoError::Algorithm("AES_128_CBC".into())));
        let mut short = r.clone();
        short.ciphertext = STANDARD.encode([0u8; 15]);
        assert_eq!(short.decrypt(&key()), Err(CryptoError::TooShort));
        let mut b64 = r;
        b64.ciphertext = "***".into();
        assert_eq!(b64.decrypt(&key()), Err(CryptoError::Base64));
    }

    #[test]
    fn oaep_round_trip_limit_and_randomness() {
        let public = testkeys::public_of(&testkeys::wechat_public_private());
        let c1 = oaep_encrypt(&public, "张三").unwrap();
        let c2 = oaep_encrypt(&public, "张三").unwrap();
        assert_ne!(c1, c2, "OAEP is randomised");
        assert_eq!(STANDARD.decode(&c1).unwrap().len(), 256);
        assert_eq!(oaep_decrypt(&testkeys::wechat_public_private(), &c1).unwrap(), "张三");
        assert_eq!(oaep_decrypt(&testkeys::platform_private(), &c1), Err(CryptoError::Oaep));
        let max = "a".repeat(OAEP_MAX_PLAINTEXT);
        assert_eq!(
            oaep_decrypt(&testkeys::wechat_public_private(), &oaep_encrypt(&public, &max).unwrap()).unwrap(),
            max
        );
        assert_eq!(oaep_encrypt(&public, &format!("{max}a")), Err(CryptoError::TooLong(215)));
    }

    #[test]
    fn encrypt_field_names_the_key_used() {
        let mut ks = KeySet::new();
        assert_eq!(encrypt_field(&ks, "x", 0), Err(CryptoError::NoEncryptionKey));
        ks.add_public_key_pem(testkeys::PUB_KEY_ID, &testkeys::wechat_public_pem()).unwrap();
        let f = encrypt_field(&ks, "李四", 0).unwrap();
        assert_eq!(f.serial, testkeys::PUB_KEY_ID);
        assert_eq!(oaep_decrypt(&testkeys::wechat_public_private(), &f.ciphertext).unwrap(), "李四");
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{}\"", f.ciphertext));
    }

    /// OAEP with SHA-1 specifically: decrypting with an explicit SHA-256 OAEP context must
    /// fail, so a change of digest would be caught.
    #[test]
    fn oaep_uses_sha1() {
        let private = testkeys::wechat_public_private();
        let public = testkeys::public_of(&private);
        let c = STANDARD.decode(oaep_encrypt(&public, "x").unwrap()).unwrap();
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&private).unwrap();
        ctx.decrypt_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
        let mut out = Vec::new();
        assert!(ctx.decrypt_to_vec(&c, &mut out).is_err());
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&private).unwrap();
        ctx.decrypt_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        ctx.set_rsa_oaep_md(openssl::md::Md::sha1()).unwrap();
        ctx.set_rsa_mgf1_md(openssl::md::Md::sha1()).unwrap();
        let mut out = Vec::new();
        ctx.decrypt_to_vec(&c, &mut out).unwrap();
        assert_eq!(out, b"x");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn aead_round_trip_and_flip_fails(
            plain in "\\PC{0,300}",
            nonce in "[A-Za-z0-9]{12}",
            aad in "[a-z_]{0,16}",
            flip in 0usize..10_000,
        ) {
            let r = EncryptedResource::seal(&key(), &plain, &nonce, &aad, None).unwrap();
            proptest::prop_assert_eq!(r.decrypt(&key()).unwrap(), plain);
            let mut bytes = STANDARD.decode(&r.ciphertext).unwrap();
            let i = flip % bytes.len();
            bytes[i] ^= 0x80;
            let mut t = r;
            t.ciphertext = STANDARD.encode(&bytes);
            proptest::prop_assert_eq!(t.decrypt(&key()), Err(CryptoError::Aead));
        }

        #[test]
        fn oaep_round_trip(plain in "\\PC{0,60}") {
            let private = testkeys::wechat_public_private();
            let c = oaep_encrypt(&testkeys::public_of(&private), &plain).unwrap();
            proptest::prop_assert_eq!(oaep_decrypt(&private, &c).unwrap(), plain);
        }
    }
}
