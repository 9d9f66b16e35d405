//! check-cert against local TLS servers started here with generated certificates: one
//! server per case, each broken in one way, each reported by the right rule.

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minipay_tlscheck::Level;
use minipay_tlscheck::cert::{CertOptions, CertReport, check_cert};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod, SslOptions, SslVersion};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};

struct Spec<'a> {
    cn: &'a str,
    org: &'a str,
    sans: &'a [&'a str],
    bits: u32,
    digest: MessageDigest,
    /// Validity window in days from now.
    from_days: i64,
    to_days: i64,
    ca: bool,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            cn: "localhost",
            org: "minipay test",
            sans: &["localhost", "127.0.0.1"],
            bits: 2048,
            digest: MessageDigest::sha256(),
            from_days: -1,
            to_days: 365,
            ca: false,
        }
    }
}

fn days(d: i64) -> Asn1Time {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    Asn1Time::from_unix(now + d * 86_400).unwrap()
}

/// A certificate for `spec`, signed by `issuer` (self-signed when `None`).
fn cert(spec: &Spec, issuer: Option<(&X509, &PKey<Private>)>) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(spec.bits).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", spec.org).unwrap();
    name.append_entry_by_text("CN", spec.cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_serial()).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name)).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&days(spec.from_days)).unwrap();
    b.set_not_after(&days(spec.to_days)).unwrap();
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    } else if !spec.sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in spec.sans {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        let ext = san.build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None)).unwrap();
        b.append_extension(ext).unwrap();
    }
    b.sign(issuer.map(|(_, k)| k).unwrap_or(&key), spec.digest).unwrap();
    (b.build(), key)
}

fn rand_serial() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() | 1
}

fn ca() -> (X509, PKey<Private>) {
    cert(&Spec { cn: "minipay test root", ca: true, sans: &[], to_days: 3650, ..Spec::default() }, None)
}

/// Serves TLS with this certificate (and chain) on a free loopback port until the test
/// process ends; `versions` bounds the protocol.
fn serve(leaf: &X509, key: &PKey<Private>, chain: &[&X509], versions: (SslVersion, SslVersion)) -> u16 {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    // Weak certificates and old protocols must load: the checker, not OpenSSL, judges them.
    b.set_security_level(0);
    b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    b.set_cipher_list("ALL:@SECLEVEL=0").unwrap();
    b.set_min_proto_version(Some(versions.0)).unwrap();
    b.set_max_proto_version(Some(versions.1)).unwrap();
    b.set_certificate(leaf).unwrap();
    b.set_private_key(key).unwrap();
    for c in chain {
        b.add_extra_chain_cert((*c).clone()).unwrap();
    }
    let acceptor = b.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            if let Ok(mut tls) = acceptor.accept(s) {
                let _ = tls.shutdown();
            }
        }
    });
    port
}

const MODERN: (SslVersion, SslVersion) = (SslVersion::TLS1_2, SslVersion::TLS1_3);

fn check(port: u16, ca_pem: Option<Vec<u8>>) -> CertReport {
    check_host("localhost", port, ca_pem)
}

fn check_host(host: &str, port: u16, ca_pem: Option<Vec<u8>>) -> CertReport {
    let opts = CertOptions {
        system_roots: true,
        ca_pem,
        connect: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        timeout: Duration::from_secs(5),
        warn_days: 30,
    };
    check_cert(host, port, &opts).expect("a report")
}

/// Only `rules` are not Pass, each at `want`.
#[track_caller]
fn only(r: &CertReport, rules: &[(&str, Level)]) {
    for f in &r.findings {
        let want = rules.iter().find(|(n, _)| *n == f.rule).map(|(_, l)| *l).unwrap_or(Level::Pass);
        assert_eq!(f.level, want, "rule {} ({}); report: {:#?}", f.rule, f.detail, r.findings);
    }
}

fn good_server() -> (u16, Vec<u8>) {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec::default(), Some((&ca, &ca_key)));
    (serve(&leaf, &key, &[], MODERN), ca.to_pem().unwrap())
}

#[test]
fn good_chain_with_ca_passes_every_rule() {
    let (port, ca_pem) = good_server();
    let r = check(port, Some(ca_pem));
    only(&r, &[]);
    assert!(r.passed());
    assert_eq!(r.versions, vec!["TLSv1.3", "TLSv1.2"]);
    assert!(r.finding("ats-forward-secrecy").unwrap().detail.contains("ECDHE"), "{:?}", r.findings);
    assert_eq!(r.findings.len(), 9);
    // By IP too: the certificate names 127.0.0.1.
    only(&check_host("127.0.0.1", port, Some(good_server_ca(&r))), &[("chain-trusted", Level::Fail)]);
}

/// A CA that did not issue the certificate: the chain is then untrusted, nothing else.
fn good_server_ca(_: &CertReport) -> Vec<u8> {
    ca().0.to_pem().unwrap()
}

#[test]
fn without_the_ca_the_chain_is_untrusted() {
    let (port, _) = good_server();
    let r = check(port, None);
    only(&r, &[("chain-trusted", Level::Fail)]);
    assert!(r.finding("chain-trusted").unwrap().detail.contains("local issuer"), "{:?}", r.findings);
    assert!(!r.passed());
}

#[test]
fn self_signed_fails_even_when_trusted() {
    let (leaf, key) = cert(&Spec::default(), None);
    let port = serve(&leaf, &key, &[], MODERN);
    let r = check(port, Some(leaf.to_pem().unwrap()));
    only(&r, &[("self-signed", Level::Fail)]);
    let r = check(port, None);
    only(&r, &[("self-signed", Level::Fail), ("chain-trusted", Level::Fail)]);
}

#[test]
fn expired_and_not_yet_valid_are_validity_failures() {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec { from_days: -400, to_days: -2, ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("validity", Level::Fail)]);
    assert!(r.finding("validity").unwrap().detail.contains("expired"));

    let (leaf, key) = cert(&Spec { from_days: 3, to_days: 400, ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("validity", Level::Fail)]);
    assert!(r.finding("validity").unwrap().detail.contains("not valid before"));

    let (leaf, key) = cert(&Spec { to_days: 10, ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("validity", Level::Warn)]);
    assert!(!r.passed(), "a warning is not a pass");
}

#[test]
fn wrong_host_is_a_hostname_failure() {
    let (ca, ca_key) = ca();
    let (leaf, key) =
        cert(&Spec { cn: "localhost", sans: &["pay.example.com"], ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("hostname", Level::Fail)]);
    assert!(r.finding("hostname").unwrap().detail.contains("pay.example.com"));
    // A CN without subjectAltName does not count either.
    let (leaf, key) = cert(&Spec { sans: &[], ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("hostname", Level::Fail)]);
}

#[test]
fn sha1_signature_fails_ats() {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec { digest: MessageDigest::sha1(), ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("ats-signature", Level::Fail)]);
    assert!(r.finding("ats-signature").unwrap().detail.to_lowercase().contains("sha1"), "{:?}", r.findings);
}

#[test]
fn rsa_1024_fails_ats() {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec { bits: 1024, ..Spec::default() }, Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("ats-key", Level::Fail)]);
    assert!(r.finding("ats-key").unwrap().detail.contains("1024"));
}

#[test]
fn tls_1_1_only_fails_versions_and_forward_secrecy() {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec::default(), Some((&ca, &ca_key)));
    let port = serve(&leaf, &key, &[], (SslVersion::TLS1_1, SslVersion::TLS1_1));
    let r = check(port, Some(ca.to_pem().unwrap()));
    assert_eq!(r.versions, vec!["TLSv1.1"]);
    only(&r, &[("tls-versions", Level::Fail), ("ats-forward-secrecy", Level::Fail)]);
    assert!(r.finding("tls-versions").unwrap().detail.contains("TLSv1.1"));
}

#[test]
fn tls_1_2_and_below_is_fine() {
    let (ca, ca_key) = ca();
    let (leaf, key) = cert(&Spec::default(), Some((&ca, &ca_key)));
    let port = serve(&leaf, &key, &[], (SslVersion::TLS1, SslVersion::TLS1_2));
    let r = check(port, Some(ca.to_pem().unwrap()));
    assert_eq!(r.versions, vec!["TLSv1.2", "TLSv1.1", "TLSv1.0"]);
    only(&r, &[]);
}

#[test]
fn wosign_issuer_is_distrusted() {
    let (ca, ca_key) =
        cert(&Spec { cn: "CA 沃通根证书", org: "WoSign CA Limited", ca: true, sans: &[], ..Spec::default() }, None);
    let (leaf, key) = cert(&Spec::default(), Some((&ca, &ca_key)));
    let r = check(serve(&leaf, &key, &[&ca], MODERN), Some(ca.to_pem().unwrap()));
    only(&r, &[("distrusted-issuer", Level::Fail)]);
}

#[test]
fn intermediate_chain_is_followed() {
    let (root, root_key) = ca();
    let (mid, mid_key) = cert(
        &Spec { cn: "minipay test intermediate", ca: true, sans: &[], ..Spec::default() },
        Some((&root, &root_key)),
    );
    let (leaf, key) = cert(&Spec::default(), Some((&mid, &mid_key)));
    let port = serve(&leaf, &key, &[&mid], MODERN);
    only(&check(port, Some(root.to_pem().unwrap())), &[]);
    // Without the intermediate sent, the chain breaks.
    let port = serve(&leaf, &key, &[], MODERN);
    only(&check(port, Some(root.to_pem().unwrap())), &[("chain-trusted", Level::Fail)]);
}

#[test]
fn nothing_listening_is_an_error_not_a_report() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts = CertOptions { connect: Some(format!("127.0.0.1:{port}").parse().unwrap()), ..CertOptions::default() };
    assert!(check_cert("localhost", port, &opts).is_err());
}
