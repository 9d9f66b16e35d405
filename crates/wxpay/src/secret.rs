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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let k = ApiKey::new("192006250b4c09247ec02edce69f6a2d");
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert!(!format!("{k:?}").contains("1920"));
    }
}
