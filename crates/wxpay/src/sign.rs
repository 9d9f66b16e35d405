//! The v2 signature: every non-empty parameter except `sign`, sorted by ASCII byte order,
//! joined as `k=v&…`, then `&key=<API key>`, hashed with MD5 or HMAC-SHA256 (key = API key),
//! uppercase hex. The same rule signs `wx.requestPayment` parameters (camelCase names).

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::ApiKey;
use crate::xml::Params;

/// Which hash a signature uses. MD5 is WeChat's default when `sign_type` is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum SignType {
    #[default]
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
}

impl SignType {
    /// The value WeChat uses in `sign_type` / `signType`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    pub fn parse(s: &str) -> Option<SignType> {
        match s {
            "MD5" => Some(SignType::Md5),
            "HMAC-SHA256" => Some(SignType::HmacSha256),
            _ => None,
        }
    }

    /// The hex length of a signature of this type (32 for MD5, 64 for HMAC-SHA256).
    pub fn hex_len(self) -> usize {
        match self {
            SignType::Md5 => 32,
            SignType::HmacSha256 => 64,
        }
    }
}

/// Why a received signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no sign field")]
    Missing,
    #[error("unknown sign_type {0:?}")]
    UnknownSignType(String),
    #[error("sign has the wrong length for {0:?}")]
    WrongLength(SignType),
    #[error("signature mismatch")]
    Mismatch,
}

/// The string that is hashed, *without* the `&key=` suffix: what `minipay sign` shows.
pub fn string_to_sign(params: &Params) -> String {
    let mut s = String::with_capacity(256);
    for (k, v) in params {
        if k == "sign" || v.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// The names of the fields that take part in the signature, in signing order.
pub fn signed_fields(params: &Params) -> Vec<&str> {
    params.iter().filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()).map(|(k, _)| k.as_str()).collect()
}

/// Computes the signature (uppercase hex) over `params` with `key`.
pub fn sign(params: &Params, key: &ApiKey, sign_type: SignType) -> String {
    let mut msg = string_to_sign(params);
    if !msg.is_empty() {
        msg.push('&');
    }
    msg.push_str("key=");
    msg.push_str(key.expose());
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(msg.as_bytes())),
        SignType::HmacSha256 => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(msg.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Adds `sign` (and `sign_type` when it is not the MD5 default) to `params`.
pub fn sign_params(params: &mut Params, key: &ApiKey, sign_type: SignType) {
    params.remove("sign");
    if sign_type != SignType::Md5 {
        params.insert("sign_type".into(), sign_type.as_str().into());
    }
    let s = sign(params, key, sign_type);
    params.insert("sign".into(), s);
}

/// Decides which hash a received document uses: its `sign_type` when present, otherwise the
/// signature length (64 hex = HMAC-SHA256, anything else is treated as MD5).
pub fn detect_sign_type(params: &Params) -> Result<SignType, SignError> {
    let sign = params.get("sign").ok_or(SignError::Missing)?;
    match params.get("sign_type").map(String::as_str) {
        Some("") | None => Ok(if sign.len() == 64 { SignType::HmacSha256 } else { SignType::Md5 }),
        Some(t) => SignType::parse(t).ok_or_else(|| SignError::UnknownSignType(t.to_owned())),
    }
}

/// Verifies a received document's `sign` over all its fields as received (unknown fields
/// included), in constant time. Returns the sign type that matched.
pub fn verify(params: &Params, key: &ApiKey) -> Result<SignType, SignError> {
    let t = detect_sign_type(params)?;
    verify_as(params, key, t).map(|()| t)
}

/// Verifies with a given sign type (for calls whose type is fixed, e.g. transfers are MD5).
pub fn verify_as(params: &Params, key: &ApiKey, sign_type: SignType) -> Result<(), SignError> {
    let received = params.get("sign").ok_or(SignError::Missing)?;
    if received.len() != sign_type.hex_len() {
        return Err(SignError::WrongLength(sign_type));
    }
    let expected = sign(params, key, sign_type);
    // WeChat always sends uppercase hex; accept lowercase too (some SDKs emit it).
    let received = received.to_ascii_uppercase();
    if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) { Ok(()) } else { Err(SignError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn key() -> ApiKey {
        ApiKey::new("192006250b4c09247ec02edce69f6a2d")
    }

    fn vector1() -> Params {
        p(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }

    #[test]
    fn public_vector_md5() {
        assert_eq!(sign(&vector1(), &key(), SignType::Md5), "9A0A8659F005D6984697E2CA0A9CF3B7");
        let v2 = p(&[("test1", "test1"), ("test2", "test2")]);
        assert_eq!(sign(&v2, &key(), SignType::Md5), "1E3A8D73B5A4AEE787C0F68B5DAB8520");
    }

    #[test]
    fn public_vector_hmac() {
        assert_eq!(
            sign(&vector1(), &key(), SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
        let v2 = p(&[("test1", "test1"), ("test2", "test2")]);
        assert_eq!(
            sign(&v2, &key(), SignType::HmacSha256),
            "EDAC6D70D2FDF5A2382F8204FC96A1918017E46ACC5297F565ED1A7610ACF659"
        );
    }

    #[test]
    fn string_to_sign_skips_sign_and_empty() {
        let mut params = vector1();
        params.insert("sign".into(), "X".into());
        params.insert("attach".into(), String::new());
        assert_eq!(
            string_to_sign(&params),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
        );
    }

    #[test]
    fn verify_detects_type_and_rejects_tampering() {
        for t in [SignType::Md5, SignType::HmacSha256] {
            let mut params = vector1();
            sign_params(&mut params, &key(), t);
            assert_eq!(verify(&params, &key()), Ok(t));
            let mut bad = params.clone();
            bad.insert("body".into(), "test2".into());
            assert_eq!(verify(&bad, &key()), Err(SignError::Mismatch));
            assert_eq!(verify(&params, &ApiKey::new("other")), Err(SignError::Mismatch));
        }
        assert_eq!(verify(&vector1(), &key()), Err(SignError::Missing));
    }

    proptest::proptest! {
        #[test]
        fn roundtrip_and_any_change_fails(
            fields in proptest::collection::btree_map("[a-z_]{1,12}", "[^\u{0}]{1,20}", 1..12),
            hmac in proptest::bool::ANY,
            pick in 0usize..100,
        ) {
            let t = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
            let mut params: Params = fields;
            params.remove("sign");
            params.remove("sign_type");
            sign_params(&mut params, &key(), t);
            proptest::prop_assert_eq!(verify(&params, &key()), Ok(t));
            let names: Vec<String> = params.keys().filter(|k| *k != "sign" && *k != "sign_type").cloned().collect();
            proptest::prop_assume!(!names.is_empty());
            let name = &names[pick % names.len()];
            let mut changed = params.clone();
            changed.get_mut(name).unwrap().push('x');
            proptest::prop_assert!(verify(&changed, &key()).is_err());
        }
    }
}
