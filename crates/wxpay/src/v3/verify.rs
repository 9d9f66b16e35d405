//! Verifying WeChat's answers and notifications: one [`Verifier`] over a [`KeySet`] keyed by
//! `Wechatpay-Serial`, holding platform certificates, the WeChat Pay public key
//! (`PUB_KEY_ID_…`), or both while a merchant switches from one to the other.
//!
//! The rules, in the order they are checked (each is its own [`VerifyError`] kind):
//!
//! 1. All four headers present (`Wechatpay-Timestamp`, `-Nonce`, `-Signature`, `-Serial`),
//!    else [`VerifyError::Unsigned`]. A 2xx answer without them is a forgery.
//! 2. A signature starting with `WECHATPAY/SIGNTEST/` is WeChat's deliberate probe and
//!    fails ([`VerifyError::SignTest`]); a notification handler must answer it non-2xx.
//! 3. The timestamp is Unix seconds ([`VerifyError::BadTimestamp`]) within ±300 s of now,
//!    both directions ([`VerifyError::Stale`]): an old answer replayed, or a clock far off.
//! 4. The serial names a key we hold, else [`VerifyError::UnknownSerial`]: in certificate
//!    mode the client refreshes `/v3/certificates` once and retries the check; in
//!    public-key mode it is an error ([`Mode::refreshes_certificates`]).
//! 5. A certificate must be inside its validity period at the time of the check
//!    ([`VerifyError::CertificateNotValid`]); the public key does not expire.
//! 6. SHA256withRSA over `TIMESTAMP\nNONCE\nRAW_BODY\n` — the raw bytes as received, before
//!    any JSON parsing ([`VerifyError::BadSignature`]).
//!
//! Every error means the same thing to a caller holding an *answer*: the outcome of the call
//! is unknown (WxJava #3728: a payout whose answer failed verification had in fact
//! succeeded). The kinds exist so that logs say why, and so that the client can react to
//! [`VerifyError::UnknownSerial`] alone with a certificate refresh.
//!
//! [`AnswerSigner`] is WeChat's side of the same rules, for the sandbox and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{PKey, Private, Public};
use openssl::x509::X509;

use super::sign::{KeyError, first_reason, rsa_sha256_sign, rsa_sha256_verify};

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";

/// WeChat's probe signatures start with this; they must never verify.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How far a `Wechatpay-Timestamp` may be from our clock, either way (WeChat's own
/// recommendation, and the window it applies to our requests).
pub const DEFAULT_WINDOW_SECS: i64 = 300;

/// The string WeChat signs: `TIMESTAMP\nNONCE\nBODY\n` over the raw body bytes.
pub fn answer_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// Why an answer or notification did not verify. Any of these on an answer means
/// "outcome unknown"; on a notification, "answer non-2xx and let WeChat re-deliver".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("unsigned: no {0} header")]
    Unsigned(&'static str),
    #[error("signature is a WECHATPAY/SIGNTEST/ probe")]
    SignTest,
    #[error("Wechatpay-Timestamp {0:?} is not Unix seconds")]
    BadTimestamp(String),
    #[error("Wechatpay-Timestamp {timestamp} is {skew} s away from now (window {window} s)")]
    Stale { timestamp: i64, skew: i64, window: i64 },
    #[error("unknown Wechatpay-Serial {0}")]
    UnknownSerial(String),
    #[error("certificate {serial} is not valid now (valid from {not_before} to {not_after}, now {now})")]
    CertificateNotValid { serial: String, not_before: i64, not_after: i64, now: i64 },
    #[error("signature does not match")]
    BadSignature,
}

/// The four `Wechatpay-*` headers of one answer or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignedHeaders {
    /// Reads the four headers through `get` (a case-insensitive header lookup); any missing
    /// or empty one is [`VerifyError::Unsigned`].
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<SignedHeaders, VerifyError> {
        let need = |name: &'static str| {
            get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).ok_or(VerifyError::Unsigned(name))
        };
        Ok(SignedHeaders {
            timestamp: need(HEADER_TIMESTAMP)?,
            nonce: need(HEADER_NONCE)?,
            signature: need(HEADER_SIGNATURE)?,
            serial: need(HEADER_SERIAL)?,
        })
    }

    /// The headers as (name, value) pairs, for the sandbox to send.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_TIMESTAMP, self.timestamp.as_str()),
            (HEADER_NONCE, self.nonce.as_str()),
            (HEADER_SIGNATURE, self.signature.as_str()),
            (HEADER_SERIAL, self.serial.as_str()),
        ]
    }
}

/// Where a verification key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// A platform certificate, valid between two Unix times (WeChat issues them for 5 years).
    Certificate { not_before: i64, not_after: i64 },
    /// The WeChat Pay public key (`PUB_KEY_ID_…`), which does not expire.
    PublicKey,
}

/// One key WeChat may sign with, under its serial (certificate serial or public key id).
#[derive(Clone)]
pub struct VerifyKey {
    pub serial: String,
    pub public: PKey<Public>,
    pub source: KeySource,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey").field("serial", &self.serial).field("source", &self.source).finish()
    }
}

impl VerifyKey {
    pub fn is_valid_at(&self, now: i64) -> bool {
        match self.source {
            KeySource::Certificate { not_before, not_after } => not_before <= now && now <= not_after,
            KeySource::PublicKey => true,
        }
    }
}

/// Serials compare in uppercase without leading zeros: OpenSSL prints certificate serials
/// as a big number (no leading zero nibble) while WeChat pads them; case varies between
/// WeChat's pages (a guess that both are the same serial, which is how X.509 defines it).
pub fn normalize_serial(serial: &str) -> String {
    let s = serial.trim().to_ascii_uppercase();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let t = s.trim_start_matches('0');
        return if t.is_empty() { "0".into() } else { t.to_owned() };
    }
    s
}

fn asn1_unix(t: &Asn1TimeRef) -> Result<i64, KeyError> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| KeyError::Public(first_reason(&e)))?;
    let d = epoch.diff(t).map_err(|e| KeyError::Public(first_reason(&e)))?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The keys WeChat may sign with, keyed by normalised serial.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyKey>,
}

impl KeySet {
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds a platform certificate under its own serial number; returns that serial
    /// (uppercase hex). Expired certificates are accepted here and refused at verification.
    pub fn add_certificate(&mut self, cert: &X509) -> Result<String, KeyError> {
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .map_err(|e| KeyError::Public(first_reason(&e)))?;
        let public = cert.public_key().map_err(|e| KeyError::Public(first_reason(&e)))?;
        let source = KeySource::Certificate {
            not_before: asn1_unix(cert.not_before())?,
            not_after: asn1_unix(cert.not_after())?,
        };
        let key = VerifyKey { serial: serial.clone(), public, source };
        self.keys.insert(normalize_serial(&serial), key);
        Ok(serial)
    }

    /// As [`KeySet::add_certificate`] from PEM (what `/v3/certificates` decrypts to).
    pub fn add_certificate_pem(&mut self, pem: &[u8]) -> Result<String, KeyError> {
        let cert = X509::from_pem(pem).map_err(|e| KeyError::Public(first_reason(&e)))?;
        self.add_certificate(&cert)
    }

    /// Adds the WeChat Pay public key under its id (`PUB_KEY_ID_…`).
    pub fn add_public_key(&mut self, id: &str, public: PKey<Public>) {
        let key = VerifyKey { serial: id.trim().to_owned(), public, source: KeySource::PublicKey };
        self.keys.insert(normalize_serial(id), key);
    }

    /// As [`KeySet::add_public_key`] from PEM (`-----BEGIN PUBLIC KEY-----`, as downloaded).
    pub fn add_public_key_pem(&mut self, id: &str, pem: &[u8]) -> Result<(), KeyError> {
        let public = PKey::public_key_from_pem(pem).map_err(|e| KeyError::Public(first_reason(&e)))?;
        self.add_public_key(id, public);
        Ok(())
    }

    /// Adds an already-built key under its serial (replacing one with the same serial).
    pub fn insert(&mut self, key: VerifyKey) {
        self.keys.insert(normalize_serial(&key.serial), key);
    }

    pub fn get(&self, serial: &str) -> Option<&VerifyKey> {
        self.keys.get(&normalize_serial(serial))
    }

    pub fn keys(&self) -> impl Iterator<Item = &VerifyKey> {
        self.keys.values()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Drops every certificate (keeps the public key): the start of a refresh.
    pub fn without_certificates(&self) -> KeySet {
        let keys = self.keys.iter().filter(|(_, k)| k.source == KeySource::PublicKey);
        KeySet { keys: keys.map(|(s, k)| (s.clone(), k.clone())).collect() }
    }

    /// The key to encrypt sensitive fields with, and the serial to send as
    /// `Wechatpay-Serial`: the public key when we have one, else the valid certificate that
    /// expires last. Preferring the public key during a switch is a guess (WeChat accepts
    /// either while both are active).
    pub fn encryption_key(&self, now: i64) -> Option<&VerifyKey> {
        if let Some(k) = self.keys.values().find(|k| k.source == KeySource::PublicKey) {
            return Some(k);
        }
        self.keys.values().filter(|k| k.is_valid_at(now)).max_by_key(|k| match k.source {
            KeySource::Certificate { not_after, .. } => not_after,
            KeySource::PublicKey => i64::MAX,
        })
    }

    /// The six rules of the module docs, against `now` (Unix seconds).
    pub fn verify(&self, h: &SignedHeaders, body: &[u8], now: i64, window: i64) -> Result<&VerifyKey, VerifyError> {
        if h.signature.starts_with(SIGNTEST_PREFIX) {
            return Err(VerifyError::SignTest);
        }
        let timestamp: i64 = h.timestamp.parse().map_err(|_| VerifyError::BadTimestamp(h.timestamp.clone()))?;
        let skew = timestamp.saturating_sub(now);
        if skew.saturating_abs() > window {
            return Err(VerifyError::Stale { timestamp, skew, window });
        }
        let key = self.get(&h.serial).ok_or_else(|| VerifyError::UnknownSerial(h.serial.clone()))?;
        if let KeySource::Certificate { not_before, not_after } = key.source
            && !key.is_valid_at(now)
        {
            return Err(VerifyError::CertificateNotValid { serial: key.serial.clone(), not_before, not_after, now });
        }
        if !rsa_sha256_verify(&key.public, &answer_message(&h.timestamp, &h.nonce, body), &h.signature) {
            return Err(VerifyError::BadSignature);
        }
        Ok(key)
    }
}

/// How a merchant verifies WeChat: which keys it has, and so what an unknown serial means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Platform certificates only (merchants onboarded before late 2024).
    Certificates,
    /// The WeChat Pay public key only; `/v3/certificates` answers 404 for these merchants.
    PublicKey,
    /// Both, while the merchant switches: answers arrive signed by either.
    Switching,
}

impl Mode {
    /// Whether an unknown serial is worth one `/v3/certificates` refresh.
    pub fn refreshes_certificates(self) -> bool {
        match self {
            Mode::Certificates | Mode::Switching => true,
            Mode::PublicKey => false,
        }
    }
}

/// The one verifier: a mode, a timestamp window and a key set that the client can replace
/// after a certificate refresh while other calls keep verifying.
#[derive(Debug)]
pub struct Verifier {
    mode: Mode,
    window: i64,
    keys: RwLock<Arc<KeySet>>,
}

impl Verifier {
    pub fn new(mode: Mode, keys: KeySet) -> Verifier {
        Verifier { mode, window: DEFAULT_WINDOW_SECS, keys: RwLock::new(Arc::new(keys)) }
    }

    /// A different window (seconds, both directions); WeChat's 300 s is the default.
    pub fn with_window(mut self, window: i64) -> Verifier {
        self.window = window;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current key set (a snapshot; refreshes replace it).
    pub fn keys(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked mid-replace of an Arc: the old or
        // new set is intact either way.
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the key set (after `/v3/certificates`).
    pub fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Verifies a raw body against its headers at `now` (Unix seconds). Returns the serial
    /// of the key that verified.
    pub fn verify_at(&self, headers: &SignedHeaders, body: &[u8], now: i64) -> Result<String, VerifyError> {
        self.keys().verify(headers, body, now, self.window).map(|k| k.serial.clone())
    }

    /// As [`Verifier::verify_at`], now.
    pub fn verify(&self, headers: &SignedHeaders, body: &[u8]) -> Result<String, VerifyError> {
        self.verify_at(headers, body, chrono::Utc::now().timestamp())
    }

    /// Reads the headers through `get` and verifies: the whole check for one answer or
    /// notification, missing headers included.
    pub fn verify_lookup<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now: i64,
    ) -> Result<String, VerifyError> {
        self.verify_at(&SignedHeaders::from_lookup(get)?, body, now)
    }
}

/// WeChat's side: signs answers and notifications with a platform certificate key or the
/// public key's private half (the sandbox, tests, benchmarks).
#[derive(Clone)]
pub struct AnswerSigner {
    serial: String,
    key: PKey<Private>,
}

impl fmt::Debug for AnswerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerSigner").field("serial", &self.serial).field("key", &"***").finish()
    }
}

impl AnswerSigner {
    pub fn new(serial: impl Into<String>, key: PKey<Private>) -> AnswerSigner {
        AnswerSigner { serial: serial.into(), key }
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The four headers for `body`, signed at `timestamp` with `nonce`.
    pub fn sign(&self, body: &[u8], timestamp: i64, nonce: &str) -> SignedHeaders {
        let ts = timestamp.to_string();
        let signature = rsa_sha256_sign(&self.key, &answer_message(&ts, nonce, body));
        SignedHeaders { timestamp: ts, nonce: nonce.to_owned(), signature, serial: self.serial.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::{keygen, testkeys};

    const BODY: &[u8] = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    const NOW: i64 = 1_764_660_000;

    fn cert_signer() -> AnswerSigner {
        AnswerSigner::new(testkeys::PLATFORM_SERIAL, testkeys::platform_private())
    }

    fn pub_signer() -> AnswerSigner {
        AnswerSigner::new(testkeys::PUB_KEY_ID, testkeys::wechat_public_private())
    }

    fn cert_only() -> Verifier {
        let mut ks = KeySet::new();
        ks.add_certificate(&testkeys::platform_cert()).unwrap();
        Verifier::new(Mode::Certificates, ks)
    }

    fn pub_only() -> Verifier {
        let mut ks = KeySet::new();
        ks.add_public_key_pem(testkeys::PUB_KEY_ID, &testkeys::wechat_public_pem()).unwrap();
        Verifier::new(Mode::PublicKey, ks)
    }

    fn switching() -> Verifier {
        let mut ks = cert_only().keys().as_ref().clone();
        ks.add_public_key_pem(testkeys::PUB_KEY_ID, &testkeys::wechat_public_pem()).unwrap();
        Verifier::new(Mode::Switching, ks)
    }

    fn signed(signer: &AnswerSigner, ts: i64) -> SignedHeaders {
        signer.sign(BODY, ts, "fd72b5d8b4d3bbd6dc8d4c8bd29b0d7b")
    }

    #[test]
    fn valid_answers_verify_in_each_mode() {
        // The platform certificate in testkeys is valid from a day ago for 5 years: use now.
        let now = chrono::Utc::now().timestamp();
        assert_eq!(cert_only().verify_at(&signed(&cert_signer(), now), BODY, now).unwrap(), testkeys::PLATFORM_SERIAL);
        assert_eq!(pub_only().verify_at(&signed(&pub_signer(), NOW), BODY, NOW).unwrap(), testkeys::PUB_KEY_ID);
    }

    #[test]
    fn both_keys_verify_during_a_switch() {
        let v = switching();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(v.verify_at(&signed(&cert_signer(), now), BODY, now).unwrap(), testkeys::PLATFORM_SERIAL);
        assert_eq!(v.verify_at(&signed(&pub_signer(), now), BODY, now).unwrap(), testkeys::PUB_KEY_ID);
        // Without the public key the public-key answer is refused: the switch needs both.
        assert_eq!(
            cert_only().verify_at(&signed(&pub_signer(), now), BODY, now),
            Err(VerifyError::UnknownSerial(testkeys::PUB_KEY_ID.into()))
        );
        // And a signature by one key under the other's serial does not verify.
        let mut crossed = signed(&pub_signer(), now);
        crossed.serial = testkeys::PLATFORM_SERIAL.into();
        assert_eq!(v.verify_at(&crossed, BODY, now), Err(VerifyError::BadSignature));
    }

    #[test]
    fn unknown_serial_is_its_own_kind() {
        let mut h = signed(&pub_signer(), NOW);
        h.serial = "PUB_KEY_ID_0000000000000000000000000000000000".into();
        assert_eq!(pub_only().verify_at(&h, BODY, NOW), Err(VerifyError::UnknownSerial(h.serial.clone())));
        assert!(Mode::Certificates.refreshes_certificates() && Mode::Switching.refreshes_certificates());
        assert!(!Mode::PublicKey.refreshes_certificates());
    }

    #[test]
    fn stale_timestamp_fails_both_directions() {
        let v = pub_only();
        for skew in [-301, 301, -100_000, 100_000] {
            let h = signed(&pub_signer(), NOW + skew);
            assert_eq!(
                v.verify_at(&h, BODY, NOW),
                Err(VerifyError::Stale { timestamp: NOW + skew, skew, window: 300 }),
                "{skew}"
            );
        }
        for skew in [-300, 0, 300] {
            v.verify_at(&signed(&pub_signer(), NOW + skew), BODY, NOW).unwrap();
        }
        let mut h = signed(&pub_signer(), NOW);
        h.timestamp = "17646600OO".into();
        assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::BadTimestamp("17646600OO".into())));
    }

    #[test]
    fn signtest_probe_fails_even_with_a_known_serial() {
        let mut h = signed(&pub_signer(), NOW);
        h.signature = format!("{SIGNTEST_PREFIX}{}", h.signature);
        assert_eq!(pub_only().verify_at(&h, BODY, NOW), Err(VerifyError::SignTest));
    }

    #[test]
    fn unsigned_answer_is_refused() {
        let h = signed(&pub_signer(), NOW);
        let v = pub_only();
        let all = h.pairs();
        for missing in [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE, HEADER_SERIAL] {
            let lookup = |name: &str| all.iter().find(|(n, _)| *n == name && *n != missing).map(|(_, v)| *v);
            assert_eq!(v.verify_lookup(lookup, BODY, NOW), Err(VerifyError::Unsigned(missing)));
        }
        let none = |_: &str| None;
        assert_eq!(v.verify_lookup(none, BODY, NOW), Err(VerifyError::Unsigned(HEADER_TIMESTAMP)));
        let full = |name: &str| all.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert!(v.verify_lookup(full, BODY, NOW).is_ok());
    }

    #[test]
    fn tampered_body_nonce_or_timestamp_fails() {
        let v = pub_only();
        let h = signed(&pub_signer(), NOW);
        let tampered = br#"{"prepay_id":"wx201410272009395522657a690389285101"}"#;
        assert_eq!(v.verify_at(&h, tampered, NOW), Err(VerifyError::BadSignature));
        // Whitespace matters: the raw bytes are signed, not the parsed JSON.
        let mut spaced = BODY.to_vec();
        spaced.push(b' ');
        assert_eq!(v.verify_at(&h, &spaced, NOW), Err(VerifyError::BadSignature));
        let mut other_nonce = h.clone();
        other_nonce.nonce.push('x');
        assert_eq!(v.verify_at(&other_nonce, BODY, NOW), Err(VerifyError::BadSignature));
        let mut other_ts = h.clone();
        other_ts.timestamp = (NOW + 1).to_string();
        assert_eq!(v.verify_at(&other_ts, BODY, NOW), Err(VerifyError::BadSignature));
        let mut garbage = h;
        garbage.signature = "!!not base64!!".into();
        assert_eq!(v.verify_at(&garbage, BODY, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn expired_or_future_certificate_does_not_verify() {
        let key = testkeys::platform_private();
        let expired = keygen::certificate(&key, "7AB1", "old", NOW - 10 * 86_400, NOW - 86_400).unwrap();
        let future = keygen::certificate(&key, "7AB2", "new", NOW + 86_400, NOW + 10 * 86_400).unwrap();
        let mut ks = KeySet::new();
        assert_eq!(ks.add_certificate(&expired).unwrap(), "7AB1");
        ks.add_certificate(&future).unwrap();
        let v = Verifier::new(Mode::Certificates, ks);
        let h = AnswerSigner::new("7AB1", key.clone()).sign(BODY, NOW, "n");
        assert_eq!(
            v.verify_at(&h, BODY, NOW),
            Err(VerifyError::CertificateNotValid {
                serial: "7AB1".into(),
                not_before: NOW - 10 * 86_400,
                not_after: NOW - 86_400,
                now: NOW
            })
        );
        // The same signature verifies while the certificate was valid.
        v.verify_at(&AnswerSigner::new("7AB1", key.clone()).sign(BODY, NOW - 2 * 86_400, "n"), BODY, NOW - 2 * 86_400)
            .unwrap();
        let h = AnswerSigner::new("7AB2", key).sign(BODY, NOW, "n");
        assert!(matches!(v.verify_at(&h, BODY, NOW), Err(VerifyError::CertificateNotValid { .. })));
    }

    #[test]
    fn serials_compare_without_case_or_leading_zeros() {
        assert_eq!(normalize_serial("00ab12"), "AB12");
        assert_eq!(normalize_serial("PUB_KEY_ID_0117"), "PUB_KEY_ID_0117");
        let mut h = signed(&pub_signer(), NOW);
        h.serial = h.serial.to_ascii_lowercase();
        pub_only().verify_at(&h, BODY, NOW).unwrap();
    }

    #[test]
    fn encryption_key_prefers_public_key_then_latest_certificate() {
        let now = chrono::Utc::now().timestamp();
        assert_eq!(switching().keys().encryption_key(now).unwrap().serial, testkeys::PUB_KEY_ID);
        assert_eq!(cert_only().keys().encryption_key(now).unwrap().serial, testkeys::PLATFORM_SERIAL);
        let mut ks = KeySet::new();
        let old = keygen::certificate(&testkeys::platform_private(), "01", "x", now - 10, now - 1).unwrap();
        ks.add_certificate(&old).unwrap();
        assert!(ks.encryption_key(now).is_none());
        assert_eq!(switching().keys().without_certificates().keys().count(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn any_body_round_trips_and_any_flip_fails(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            skew in -300i64..=300,
            flip in 0usize..400,
        ) {
            let v = pub_only();
            let h = pub_signer().sign(&body, NOW + skew, "abc");
            proptest::prop_assert!(v.verify_at(&h, &body, NOW).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                changed[flip % body.len()] ^= 0x01;
                proptest::prop_assert_eq!(v.verify_at(&h, &changed, NOW), Err(VerifyError::BadSignature));
            }
        }
    }
}
