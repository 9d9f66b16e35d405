//! RSA keys and X.509 certificates made on the spot, for the sandbox (which plays WeChat and
//! needs a platform certificate, a public key and merchant keys), tests and benchmarks.
//! Production never calls this: its keys come from WeChat's merchant platform.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

/// A fresh RSA-2048 key (what WeChat issues for merchant and platform keys).
pub fn rsa_2048() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(2048)?)
}

/// A self-signed certificate for `key` with serial `serial_hex` (hex, as WeChat prints
/// serials), valid from `not_before` to `not_after` (Unix seconds). WeChat's platform
/// certificates are issued by its own CA; nothing in APIv3 checks the chain (the
/// certificate is fetched over TLS from WeChat and decrypted with the APIv3 key), so a
/// self-signed one is equivalent for every check minipay makes.
pub fn certificate(
    key: &PKey<Private>,
    serial_hex: &str,
    common_name: &str,
    not_before: i64,
    not_after: i64,
) -> Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("O", "Tenpay.com")?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial_bn = BigNum::from_hex_str(serial_hex)?;
    let serial = Asn1Integer::from_bn(&serial_bn)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let (from, until) = (Asn1Time::from_unix(not_before)?, Asn1Time::from_unix(not_after)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_serial_and_validity() {
        let k = rsa_2048().unwrap();
        let c = certificate(&k, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", "x", 1_700_000_000, 1_800_000_000).unwrap();
        let serial = c.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
        assert_eq!(serial, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        assert!(c.public_key().unwrap().public_eq(&k));
    }
}
