//! The sandbox's own PKI, generated at start-up: a CA, a server certificate for
//! `localhost` / `127.0.0.1` / `::1`, and one client certificate per merchant (subject CN =
//! mch_id, as WeChat issues them), also as PKCS#12 with the mch_id as password.
//!
//! The keys live only in memory (and in `--certs-dir` when asked), so trusting this CA
//! trusts nothing beyond one sandbox run.

use std::collections::BTreeMap;
use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name, X509NameBuilder};

/// A certificate and its private key.
#[derive(Clone)]
pub struct CertKey {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey").field("subject", &self.cert.subject_name()).field("key", &"***").finish()
    }
}

/// Everything TLS: the CA, the server identity and each merchant's client identity.
pub struct Pki {
    pub ca: CertKey,
    pub server: CertKey,
    pub clients: BTreeMap<String, CertKey>,
}

/// Why a client certificate was not accepted for a merchant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    #[error("no client certificate")]
    Missing,
    #[error("client certificate not issued by the sandbox CA")]
    UnknownIssuer,
    #[error("client certificate belongs to another merchant")]
    WrongMerchant,
    #[error("client certificate expired")]
    Expired,
}

fn name(cn: &str, org: &str) -> Result<X509Name, ErrorStack> {
    let mut b = X509NameBuilder::new()?;
    b.append_entry_by_text("C", "CN")?;
    b.append_entry_by_text("O", org)?;
    b.append_entry_by_text("CN", cn)?;
    Ok(b.build())
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(2048)?)
}

fn serial() -> Result<openssl::asn1::Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(120, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

/// Certificates start a day in the past so a sandbox clock set slightly back, or a skewed
/// client, still accepts them; they last ten years.
fn validity() -> Result<(Asn1Time, Asn1Time), ErrorStack> {
    let now = chrono::Utc::now().timestamp();
    Ok((Asn1Time::from_unix(now - 86_400)?, Asn1Time::days_from_now(3650)?))
}

enum Kind<'a> {
    /// Extra DNS names beside localhost / 127.0.0.1 / ::1 (a compose service name).
    Server(&'a [String]),
    Client,
    Ca,
}

fn issue(
    subject: &X509Name,
    key: &PKey<Private>,
    issuer: Option<&CertKey>,
    kind: Kind<'_>,
) -> Result<X509, ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer.map_or(subject, |i| i.cert.subject_name()))?;
    b.set_pubkey(key)?;
    let (nb, na) = validity()?;
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    match kind {
        Kind::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        }
        Kind::Server(names) => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
            b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
            let mut san = SubjectAlternativeName::new();
            san.dns("localhost").ip("127.0.0.1").ip("::1");
            for n in names {
                san.dns(n);
            }
            let san = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
            b.append_extension(san)?;
        }
        Kind::Client => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
            b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        }
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
    b.append_extension(ski)?;
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new().keyid(false).build(&b.x509v3_context(Some(&i.cert), None))?;
        b.append_extension(aki)?;
    }
    b.sign(issuer.map_or(key, |i| &i.key), MessageDigest::sha256())?;
    Ok(b.build())
}

impl Pki {
    /// Generates the CA, the server certificate and a client certificate per merchant.
    pub fn generate<'a>(mch_ids: impl IntoIterator<Item = &'a str>) -> Result<Pki, ErrorStack> {
        Pki::generate_for(mch_ids, &[])
    }

    /// [`Pki::generate`] with a server certificate also valid for `names` (the host name
    /// clients use, e.g. `sandbox` in deploy/compose.yml).
    pub fn generate_for<'a>(mch_ids: impl IntoIterator<Item = &'a str>, names: &[String]) -> Result<Pki, ErrorStack> {
        let ca_key = new_key()?;
        let ca_name = name("minipay sandbox CA", "minipay sandbox")?;
        let ca = CertKey { cert: issue(&ca_name, &ca_key, None, Kind::Ca)?, key: ca_key };
        let server_key = new_key()?;
        let server_cert = issue(&name("localhost", "minipay sandbox")?, &server_key, Some(&ca), Kind::Server(names))?;
        let server = CertKey { cert: server_cert, key: server_key };
        let mut clients = BTreeMap::new();
        for mch in mch_ids {
            let key = new_key()?;
            // WeChat's merchant certificates carry the mch_id as CN and 微信商户系统 as O.
            let cert = issue(&name(mch, "微信商户系统")?, &key, Some(&ca), Kind::Client)?;
            clients.insert(mch.to_owned(), CertKey { cert, key });
        }
        Ok(Pki { ca, server, clients })
    }

    /// Issues a client certificate for `cn` from a throwaway CA: what a client presenting a
    /// certificate the sandbox never issued looks like (for tests of CA errors).
    pub fn foreign_client(cn: &str) -> Result<CertKey, ErrorStack> {
        let ca_key = new_key()?;
        let ca = CertKey { cert: issue(&name("foreign CA", "elsewhere")?, &ca_key, None, Kind::Ca)?, key: ca_key };
        let key = new_key()?;
        let cert = issue(&name(cn, "微信商户系统")?, &key, Some(&ca), Kind::Client)?;
        Ok(CertKey { cert, key })
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.cert.to_pem().unwrap_or_default()
    }

    /// The TLS acceptor: asks every client for a certificate (verify mode PEER without
    /// FAIL_IF_NO_PEER_CERT) but accepts any or none at the TLS level, so the handler can
    /// answer a missing or wrong certificate in WeChat's XML instead of failing the
    /// handshake, and the endpoints without certificates keep working over TLS.
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, ErrorStack> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        b.set_private_key(&self.server.key)?;
        b.set_certificate(&self.server.cert)?;
        b.add_extra_chain_cert(self.ca.cert.clone())?;
        b.cert_store_mut().add_cert(self.ca.cert.clone())?;
        b.add_client_ca(&self.ca.cert)?;
        b.set_verify_callback(SslVerifyMode::PEER, |_preverified, _ctx| true);
        // Needed for session resumption once peer verification is on.
        b.set_session_id_context(b"minipay-sandbox")?;
        Ok(b)
    }

    /// Checks that `cert` was issued by this CA to `mch_id` and is within its validity.
    pub fn check_client(&self, cert: Option<&X509>, mch_id: &str) -> Result<(), CertProblem> {
        let cert = cert.ok_or(CertProblem::Missing)?;
        let ca_key = self.ca.cert.public_key().map_err(|_| CertProblem::UnknownIssuer)?;
        if !cert.verify(&ca_key).unwrap_or(false) {
            return Err(CertProblem::UnknownIssuer);
        }
        let now = Asn1Time::days_from_now(0).map_err(|_| CertProblem::Expired)?;
        if cert.not_after() < now || cert.not_before() > now {
            return Err(CertProblem::Expired);
        }
        let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next().and_then(|e| e.data().to_string().ok());
        if cn.as_deref() != Some(mch_id) {
            return Err(CertProblem::WrongMerchant);
        }
        Ok(())
    }

    /// The merchant's client identity as PKCS#12 (password = mch_id, as WeChat ships it).
    pub fn client_p12(&self, mch_id: &str) -> Option<Vec<u8>> {
        let ck = self.clients.get(mch_id)?;
        let mut ca = Stack::new().ok()?;
        ca.push(self.ca.cert.clone()).ok()?;
        let p12 =
            Pkcs12::builder().name("Tenpay Certificate").pkey(&ck.key).cert(&ck.cert).ca(ca).build2(mch_id).ok()?;
        p12.to_der().ok()
    }

    pub fn client_cert_pem(&self, mch_id: &str) -> Option<Vec<u8>> {
        self.clients.get(mch_id)?.cert.to_pem().ok()
    }

    pub fn client_key_pem(&self, mch_id: &str) -> Option<Vec<u8>> {
        self.clients.get(mch_id)?.key.private_key_to_pem_pkcs8().ok()
    }

    /// Writes `ca.pem`, and per merchant `apiclient_cert.pem`, `apiclient_key.pem`,
    /// `apiclient_cert.p12`: directly in `dir` for the first merchant (the usual single
    /// merchant setup) and in `dir/<mch_id>/` for every merchant.
    pub fn write_dir(&self, dir: &Path, first_mch: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), self.ca_pem())?;
        let missing = || std::io::Error::other("certificate encoding failed");
        let write = |d: &Path, mch: &str| -> std::io::Result<()> {
            std::fs::create_dir_all(d)?;
            std::fs::write(d.join("apiclient_cert.pem"), self.client_cert_pem(mch).ok_or_else(missing)?)?;
            write_private(&d.join("apiclient_key.pem"), &self.client_key_pem(mch).ok_or_else(missing)?)?;
            write_private(&d.join("apiclient_cert.p12"), &self.client_p12(mch).ok_or_else(missing)?)?;
            Ok(())
        };
        write(dir, first_mch)?;
        for mch in self.clients.keys() {
            write(&dir.join(mch), mch)?;
        }
        Ok(())
    }
}

/// Private keys are written readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certs_are_checked() {
        let pki = Pki::generate(["1900000109", "1230000109"]).unwrap();
        let a = &pki.clients["1900000109"].cert;
        assert_eq!(pki.check_client(Some(a), "1900000109"), Ok(()));
        assert_eq!(pki.check_client(Some(a), "1230000109"), Err(CertProblem::WrongMerchant));
        assert_eq!(pki.check_client(None, "1900000109"), Err(CertProblem::Missing));
        let foreign = Pki::foreign_client("1900000109").unwrap();
        assert_eq!(pki.check_client(Some(&foreign.cert), "1900000109"), Err(CertProblem::UnknownIssuer));
        let p12 = Pkcs12::from_der(&pki.client_p12("1900000109").unwrap()).unwrap();
        let parsed = p12.parse2("1900000109").unwrap();
        assert_eq!(parsed.cert.unwrap().to_der().unwrap(), a.to_der().unwrap());
        assert!(Pkcs12::from_der(&pki.client_p12("1900000109").unwrap()).unwrap().parse2("wrong").is_err());
    }

    #[test]
    fn the_server_certificate_names_the_extra_hosts() {
        let pki = Pki::generate_for(["1900000109"], &["sandbox".to_owned()]).unwrap();
        let names: Vec<String> = pki
            .server
            .cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_owned))
            .collect();
        assert_eq!(names, ["localhost", "sandbox"]);
    }
}
