//! Request signing for APIv3: SHA256withRSA (PKCS#1 v1.5) with the merchant's API
//! certificate key over the five-line string, sent as
//! `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
//!
//! The string to sign is, every line ending in `\n` (the last one too):
//!
//! ```text
//! METHOD
//! /path?query        exactly as sent, no scheme or host
//! TIMESTAMP          Unix seconds; more than 5 minutes off is 401 SIGN_ERROR
//! NONCE
//! BODY               the raw JSON as sent; empty for GET
//! ```
//!
//! [`request_message`] builds it (what `minipay sign` will show); [`MerchantSigner`] holds the
//! key and produces the header. The same primitive ([`rsa_sha256_sign`]) signs the v3
//! `wx.requestPayment` parameters ([`super::jsapi`]) and, in the sandbox, WeChat's answers
//! ([`super::verify::AnswerSigner`]).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private, Public};

/// The `Authorization` scheme name (and the only algorithm APIv3 knows).
pub const AUTH_SCHEMA: &str = "WECHATPAY2-SHA256-RSA2048";

/// The HTTP methods minipay's v3 calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key (PKCS#8 or PKCS#1): {0}")]
    Pem(String),
    #[error("the key is {0:?}, APIv3 needs RSA")]
    NotRsa(Id),
    #[error("not a PEM public key or certificate: {0}")]
    Public(String),
}

/// The string to sign for a request: `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`.
pub fn request_message(method: Method, path_and_query: &str, timestamp: i64, nonce: &str, body: &str) -> String {
    let mut s = String::with_capacity(path_and_query.len() + body.len() + 64);
    for part in [method.as_str(), path_and_query, &timestamp.to_string(), nonce, body] {
        s.push_str(part);
        s.push('\n');
    }
    s
}

/// Loads an RSA private key from PEM: `BEGIN PRIVATE KEY` (PKCS#8, what WeChat's
/// certificate tool writes to `apiclient_key.pem`) or `BEGIN RSA PRIVATE KEY` (PKCS#1).
pub fn private_key_from_pem(pem: &[u8]) -> Result<PKey<Private>, KeyError> {
    let key = PKey::private_key_from_pem(pem).map_err(|e| KeyError::Pem(first_reason(&e)))?;
    if key.id() != Id::RSA {
        return Err(KeyError::NotRsa(key.id()));
    }
    Ok(key)
}

/// SHA256withRSA (PKCS#1 v1.5) over `message`, base64 (standard alphabet, padded).
pub fn rsa_sha256_sign(key: &PKey<Private>, message: &[u8]) -> String {
    // Signing with a loaded RSA key only fails on allocation failure inside OpenSSL.
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("SHA256withRSA signer");
    signer.update(message).expect("SHA256withRSA update");
    STANDARD.encode(signer.sign_to_vec().expect("SHA256withRSA sign"))
}

/// Checks a base64 SHA256withRSA signature. Undecodable base64 is simply "does not verify".
pub fn rsa_sha256_verify(key: &PKey<Public>, message: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.as_bytes()) else {
        return false;
    };
    let Ok(mut v) = openssl::sign::Verifier::new(MessageDigest::sha256(), key) else {
        return false;
    };
    v.update(message).is_ok() && v.verify(&sig).unwrap_or(false)
}

/// The merchant's signing identity: mchid, the API certificate's serial number and its
/// private key. `Debug` never shows the key.
#[derive(Clone)]
pub struct MerchantSigner {
    mchid: String,
    serial_no: String,
    key: PKey<Private>,
}

impl fmt::Debug for MerchantSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantSigner")
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .field("key", &"***")
            .finish()
    }
}

impl MerchantSigner {
    /// From `apiclient_key.pem` (PKCS#8 or PKCS#1).
    pub fn from_pem(mchid: impl Into<String>, serial_no: impl Into<String>, pem: &[u8]) -> Result<Self, KeyError> {
        Ok(MerchantSigner::new(mchid, serial_no, private_key_from_pem(pem)?))
    }

    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: PKey<Private>) -> MerchantSigner {
        MerchantSigner { mchid: mchid.into(), serial_no: serial_no.into(), key }
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// The merchant API certificate's serial number (uppercase hex as WeChat shows it).
    pub fn serial_no(&self) -> &str {
        &self.serial_no
    }

    /// The private key, for the few places that sign something other than a request
    /// (`wx.requestPayment`) or decrypt OAEP in tests and the sandbox.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.key
    }

    /// Base64 SHA256withRSA over `message` with the merchant key.
    pub fn sign(&self, message: &[u8]) -> String {
        rsa_sha256_sign(&self.key, message)
    }

    /// The `Authorization` value for one request with a given timestamp and nonce.
    pub fn authorization_at(
        &self,
        method: Method,
        path_and_query: &str,
        body: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Authorization {
        let signature = self.sign(request_message(method, path_and_query, timestamp, nonce, body).as_bytes());
        Authorization {
            mchid: self.mchid.clone(),
            nonce_str: nonce.to_owned(),
            signature,
            timestamp,
            serial_no: self.serial_no.clone(),
        }
    }

    /// The `Authorization` value for one request, now, with a fresh 32-character nonce.
    pub fn authorization(&self, method: Method, path_and_query: &str, body: &str) -> Authorization {
        let now = chrono::Utc::now().timestamp();
        self.authorization_at(method, path_and_query, body, now, &crate::client::nonce())
    }
}

/// The parts of an `Authorization: WECHATPAY2-SHA256-RSA2048 …` header. [`fmt::Display`]
/// writes the header value; [`Authorization::parse`] reads one back (the sandbox checks
/// requests with it, `minipay verify` explains them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: i64,
    pub serial_no: String,
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{AUTH_SCHEMA} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("the scheme is not {AUTH_SCHEMA}")]
    Scheme,
    #[error("missing or empty {0}")]
    Missing(&'static str),
    #[error("malformed parameter list")]
    Malformed,
    #[error("timestamp is not Unix seconds")]
    Timestamp,
}

impl Authorization {
    /// Reads `WECHATPAY2-SHA256-RSA2048 k="v",k="v",…` in any parameter order. Unknown
    /// parameters are ignored (a guess at WeChat's leniency; the five known ones are required).
    pub fn parse(header: &str) -> Result<Authorization, AuthorizationError> {
        let rest = header.trim().strip_prefix(AUTH_SCHEMA).ok_or(AuthorizationError::Scheme)?;
        if !rest.starts_with(' ') {
            return Err(AuthorizationError::Scheme);
        }
        let mut fields: [Option<&str>; 5] = [None; 5];
        const NAMES: [&str; 5] = ["mchid", "nonce_str", "signature", "timestamp", "serial_no"];
        for part in rest.trim().split(',') {
            let (k, v) = part.trim().split_once('=').ok_or(AuthorizationError::Malformed)?;
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or(AuthorizationError::Malformed)?;
            if let Some(i) = NAMES.iter().position(|n| *n == k) {
                fields[i] = Some(v);
            }
        }
        let get = |i: usize| fields[i].filter(|v| !v.is_empty()).ok_or(AuthorizationError::Missing(NAMES[i]));
        Ok(Authorization {
            mchid: get(0)?.to_owned(),
            nonce_str: get(1)?.to_owned(),
            signature: get(2)?.to_owned(),
            timestamp: get(3)?.parse().map_err(|_| AuthorizationError::Timestamp)?,
            serial_no: get(4)?.to_owned(),
        })
    }
}

/// Why a merchant request's signature was refused (WeChat answers each with
/// 401 `SIGN_ERROR`): what the sandbox checks and `minipay verify` explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestCheckError {
    #[error("Authorization header: {0}")]
    Header(#[from] AuthorizationError),
    #[error("timestamp {timestamp} is {skew} s away from now (window {window} s)")]
    Stale { timestamp: i64, skew: i64, window: i64 },
    #[error("signature does not verify with the merchant certificate {serial_no} over the string to sign")]
    BadSignature { serial_no: String },
}

/// WeChat's side of request signing: parses the `Authorization` header, checks the
/// timestamp window (WeChat refuses more than 5 minutes either way) and the signature over
/// the five-line string built from what was actually received. The caller picks
/// `merchant_public` by the header's `mchid` and `serial_no`.
pub fn verify_request(
    authorization: &str,
    method: Method,
    path_and_query: &str,
    body: &str,
    merchant_public: &PKey<Public>,
    now: i64,
    window: i64,
) -> Result<Authorization, RequestCheckError> {
    let auth = Authorization::parse(authorization)?;
    let skew = auth.timestamp.saturating_sub(now);
    if skew.saturating_abs() > window {
        return Err(RequestCheckError::Stale { timestamp: auth.timestamp, skew, window });
    }
    let message = request_message(method, path_and_query, auth.timestamp, &auth.nonce_str, body);
    if !rsa_sha256_verify(merchant_public, message.as_bytes(), &auth.signature) {
        return Err(RequestCheckError::BadSignature { serial_no: auth.serial_no });
    }
    Ok(auth)
}

pub(crate) fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors().first().and_then(|e| e.reason().map(str::to_owned)).unwrap_or_else(|| "OpenSSL error".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::testkeys::{self, MERCHANT_SERIAL};

    #[test]
    fn five_lines_each_ending_in_newline() {
        assert_eq!(
            request_message(Method::Get, "/v3/certificates", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242", ""),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        assert_eq!(
            request_message(Method::Post, "/v3/pay/transactions/jsapi", 1, "n", "{\"a\":1}"),
            "POST\n/v3/pay/transactions/jsapi\n1\nn\n{\"a\":1}\n"
        );
    }

    #[test]
    fn header_format_and_parse_back() {
        let s = testkeys::merchant();
        let a = s.authorization_at(Method::Get, "/v3/certificates", "", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242");
        let header = a.to_string();
        assert!(header.starts_with(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",signature=\""
        ));
        assert!(header.ends_with(&format!("\",timestamp=\"1554208460\",serial_no=\"{}\"", s.serial_no())));
        assert_eq!(Authorization::parse(&header), Ok(a.clone()));
        let msg = request_message(Method::Get, "/v3/certificates", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242", "");
        assert!(rsa_sha256_verify(&testkeys::merchant_public(), msg.as_bytes(), &a.signature));
        assert_eq!(
            Authorization::parse("WECHATPAY2-SHA256-RSA2048 mchid=\"1\""),
            Err(AuthorizationError::Missing("nonce_str"))
        );
        assert_eq!(Authorization::parse("Bearer x"), Err(AuthorizationError::Scheme));
    }

    #[test]
    fn wechat_side_request_check() {
        let s = testkeys::merchant();
        let public = testkeys::merchant_public();
        let body = r#"{"mchid":"1900000001"}"#;
        let path = "/v3/pay/transactions/out-trade-no/MP1/close";
        let now = 1_764_660_000;
        let header = s.authorization_at(Method::Post, path, body, now, "N1").to_string();
        let ok = verify_request(&header, Method::Post, path, body, &public, now + 300, 300).unwrap();
        assert_eq!(ok.nonce_str, "N1");
        for skew in [-301, 301] {
            assert!(matches!(
                verify_request(&header, Method::Post, path, body, &public, now - skew, 300),
                Err(RequestCheckError::Stale { .. })
            ));
        }
        let bad = |m: Method, p: &str, b: &str| verify_request(&header, m, p, b, &public, now, 300);
        let refused = RequestCheckError::BadSignature { serial_no: MERCHANT_SERIAL.into() };
        assert_eq!(bad(Method::Get, path, body), Err(refused.clone()));
        assert_eq!(bad(Method::Post, "/v3/pay/transactions/out-trade-no/MP2/close", body), Err(refused.clone()));
        assert_eq!(bad(Method::Post, path, r#"{"mchid":"1900000002"}"#), Err(refused));
        let other = testkeys::public_of(&testkeys::platform_private());
        assert!(verify_request(&header, Method::Post, path, body, &other, now, 300).is_err());
        assert!(matches!(
            verify_request("WECHATPAY2-SHA256-RSA2048 mchid=\"1\"", Method::Post, path, body, &public, now, 300),
            Err(RequestCheckError::Header(_))
        ));
    }

    #[test]
    fn pkcs1_and_pkcs8_load_the_same_key() {
        let key = testkeys::merchant().private_key().clone();
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let pkcs1 = key.rsa().unwrap().private_key_to_pem().unwrap();
        assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
        let a = MerchantSigner::from_pem("1", "S", &pkcs8).unwrap();
        let b = MerchantSigner::from_pem("1", "S", &pkcs1).unwrap();
        // PKCS#1 v1.5 signatures are deterministic: same key, same signature.
        assert_eq!(a.sign(b"x"), b.sign(b"x"));
        assert!(matches!(MerchantSigner::from_pem("1", "S", b"not a key"), Err(KeyError::Pem(_))));
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let ec_pem = PKey::from_ec_key(ec).unwrap().private_key_to_pem_pkcs8().unwrap();
        assert!(matches!(MerchantSigner::from_pem("1", "S", &ec_pem), Err(KeyError::NotRsa(_))));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = testkeys::merchant();
        let d = format!("{s:?}");
        assert!(d.contains("1900000001") && d.contains("***"));
        assert!(!d.contains("PRIVATE"));
        let pem = String::from_utf8(s.private_key().private_key_to_pem_pkcs8().unwrap()).unwrap();
        let body_line = pem.lines().nth(1).unwrap();
        assert!(!d.contains(body_line));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn sign_verify_round_trip_and_any_change_fails(
            path in "/v3/[a-z/_-]{1,40}(\\?[a-z_]{1,8}=[A-Za-z0-9]{1,12})?",
            body in "\\PC{0,200}",
            ts in 1_500_000_000i64..2_000_000_000,
            nonce in "[A-Z0-9]{32}",
            post in proptest::bool::ANY,
        ) {
            let s = testkeys::merchant();
            let m = if post { Method::Post } else { Method::Get };
            let a = s.authorization_at(m, &path, &body, ts, &nonce);
            let public = testkeys::merchant_public();
            let msg = request_message(m, &path, ts, &nonce, &body);
            proptest::prop_assert!(rsa_sha256_verify(&public, msg.as_bytes(), &a.signature));
            let changed = request_message(m, &path, ts, &nonce, &format!("{body} "));
            proptest::prop_assert!(!rsa_sha256_verify(&public, changed.as_bytes(), &a.signature));
            let other_ts = request_message(m, &path, ts + 1, &nonce, &body);
            proptest::prop_assert!(!rsa_sha256_verify(&public, other_ts.as_bytes(), &a.signature));
            proptest::prop_assert_eq!(Authorization::parse(&a.to_string()), Ok(a));
        }
    }
}
