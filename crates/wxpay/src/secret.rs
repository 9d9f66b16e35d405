//! Credentials that must never reach a log line: the merchant API key here, and re-exports
//! of [`secrecy`] for the app secret, certificate passwords and webhook secrets elsewhere.
//!
//! `Debug` prints `ApiKey(***)`; the bytes are reachable only through [`ApiKey::expose`],
//! which is called exactly where they leave the process (the signature and the AES key).

use std::fmt;

pub use secrecy::{ExposeSecret, SecretString};

/// The merchant's v2 API key (32 characters in production; any length is accepted here
/// because sandbox keys and test vectors differ).
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(SecretString::from(key.into()))
    }

    /// The raw key. Only the signer and the refund-notification decryptor call this.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl<'de> serde::Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ApiKey, D::Error> {
        String::deserialize(d).map(ApiKey::new)
    }
}

/// The merchant's APIv3 key: exactly 32 bytes (WeChat issues 32 ASCII characters), used
/// as-is as the AES-256-GCM key that decrypts v3 notifications and `/v3/certificates`.
/// `Debug` prints `ApiV3Key(***)`.
#[derive(Clone)]
pub struct ApiV3Key(SecretString);

/// Why a string is not an APIv3 key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an APIv3 key is 32 bytes, this one has {0}")]
pub struct ApiV3KeyLength(pub usize);

impl ApiV3Key {
    /// Accepts exactly 32 bytes: anything else cannot be an AES-256 key, and finding that out
    /// at start-up beats finding it at the first notification.
    pub fn new(key: impl Into<String>) -> Result<ApiV3Key, ApiV3KeyLength> {
        let key = key.into();
        if key.len() != 32 {
            return Err(ApiV3KeyLength(key.len()));
        }
        Ok(ApiV3Key(SecretString::from(key)))
    }

    /// The 32 key bytes. Only the AES-GCM code in [`crate::v3::crypto`] calls this.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(***)")
    }
}

impl<'de> serde::Deserialize<'de> for ApiV3Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ApiV3Key, D::Error> {
        ApiV3Key::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let k = ApiKey::new("192006250b4c09247ec02edce69f6a2d");
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert!(!format!("{k:?}").contains("1920"));
    }

    #[test]
    fn v3_key_is_32_bytes_and_redacted() {
        let k = ApiV3Key::new("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{k:?}"), "ApiV3Key(***)");
        assert_eq!(k.expose().len(), 32);
        assert_eq!(ApiV3Key::new("short").unwrap_err(), ApiV3KeyLength(5));
    }
}
