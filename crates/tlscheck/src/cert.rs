//! `check-cert`: the certificate and TLS rules a mini-program's server must meet.
//!
//! The rules (one [`Finding`] each, in this order):
//! - `tls-versions`: TLS 1.2 or 1.3 offered (WeChat requires 1.2+). Each version is probed
//!   with its own handshake; the detail lists what the server accepts. A server offering
//!   only TLS 1.3 is a warning: the seed note says some old Android phones stop at 1.2.
//! - `chain-trusted`: the presented chain leads to a trusted root (the system roots and/or
//!   `--ca`). Time is not looked at here, so an expired certificate fails `validity` only.
//! - `hostname`: the host is in the leaf's subjectAltName (wildcards match one label). The
//!   CN alone is refused: iOS 13+ ignores it.
//! - `validity`: every presented certificate is inside its validity window now; a leaf
//!   expiring in under 30 days (configurable) is a warning.
//! - `self-signed`: the leaf is not self-signed (iOS refuses those even when trusted).
//! - `ats-signature`: every presented certificate but a self-signed root is signed with
//!   SHA-256 or better (Apple ATS).
//! - `ats-key`: RSA keys of at least 2048 bits, EC keys of at least 256 bits (Apple ATS).
//! - `ats-forward-secrecy`: a TLS 1.2 handshake offering only ATS's ECDHE suites succeeds
//!   (TLS 1.3 suites are all forward-secret).
//! - `distrusted-issuer`: no certificate in the chain from WoSign or StartCom, which Chrome
//!   56/57 and WeChat stopped trusting.
//!
//! The probe client accepts everything (security level 0, no verification) so that weak
//! servers can still be looked at; the judging is done here, rule by rule.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509NameRef, X509StoreContext, X509VerifyResult};
use serde::Serialize;

use crate::{Finding, Level};

/// Apple ATS's forward-secret cipher suites for TLS 1.2 (OpenSSL names).
pub const ATS_CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:\
ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:\
ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA";

/// Issuers WeChat and the browsers stopped trusting (matched in O and CN, any case).
pub const DISTRUSTED_ISSUERS: [&str; 2] = ["wosign", "startcom"];

/// How to run a check.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Trust the system's roots (on by default).
    pub system_roots: bool,
    /// Extra trusted roots (PEM, one or more certificates): `--ca FILE`.
    pub ca_pem: Option<Vec<u8>>,
    /// Connect here instead of resolving the host (the host is still used for SNI and
    /// the hostname rule): `--connect IP[:PORT]`.
    pub connect: Option<SocketAddr>,
    pub timeout: Duration,
    /// A leaf expiring within this many days is a warning.
    pub warn_days: i64,
}

impl Default for CertOptions {
    fn default() -> CertOptions {
        CertOptions { system_roots: true, ca_pem: None, connect: None, timeout: Duration::from_secs(10), warn_days: 30 }
    }
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("bad target {0:?}: give HOST or HOST:PORT")]
    Target(String),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("no TLS handshake with {target} succeeded ({reason})")]
    Handshake { target: String, reason: String },
    #[error("bad CA file: {0}")]
    Ca(String),
}

/// The outcome of `check-cert` for one server.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub host: String,
    pub port: u16,
    pub address: String,
    /// TLS versions the server accepted, e.g. `["TLSv1.2", "TLSv1.3"]`.
    pub versions: Vec<String>,
    pub findings: Vec<Finding>,
}

impl CertReport {
    /// True when every rule passed (warnings count as not passed).
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level == Level::Pass)
    }

    pub fn finding(&self, rule: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.rule == rule)
    }
}

/// Splits `HOST[:PORT]` (IPv6 as `[::1]:443`); the port defaults to 443.
pub fn parse_target(target: &str) -> Result<(String, u16), CheckError> {
    let bad = || CheckError::Target(target.to_owned());
    let t = target.trim();
    let t = t.strip_prefix("https://").unwrap_or(t).trim_end_matches('/');
    if let Some(rest) = t.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 443,
            None => return Err(bad()),
        };
        return Ok((h.to_owned(), port));
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_owned(), p.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None if !t.is_empty() => Ok((t.to_owned(), 443)),
        None => Err(bad()),
    }
}

/// What one handshake gave.
struct Probe {
    chain: Vec<X509>,
    cipher: String,
}

/// One handshake with the given version bounds and optional cipher list.
fn handshake(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
    version: SslVersion,
    ciphers: Option<&str>,
) -> Result<Probe, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_security_level(0);
    b.set_cipher_list(ciphers.unwrap_or("ALL:@SECLEVEL=0")).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(version)).map_err(|e| e.to_string())?;
    b.set_max_proto_version(Some(version)).map_err(|e| e.to_string())?;
    let connector = b.build();
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut cfg = connector.configure().map_err(|e| e.to_string())?;
    cfg.set_verify_hostname(false);
    let is_ip = host.parse::<IpAddr>().is_ok();
    let stream = cfg.use_server_name_indication(!is_ip).connect(host, tcp).map_err(|e| e.to_string())?;
    let ssl = stream.ssl();
    let chain: Vec<X509> = match ssl.peer_cert_chain() {
        Some(c) => c.iter().map(|c| c.to_owned()).collect(),
        None => ssl.peer_certificate().into_iter().collect(),
    };
    let cipher = ssl.current_cipher().map(|c| c.name().to_owned()).unwrap_or_default();
    Ok(Probe { chain, cipher })
}

const VERSIONS: [(SslVersion, &str); 4] = [
    (SslVersion::TLS1_3, "TLSv1.3"),
    (SslVersion::TLS1_2, "TLSv1.2"),
    (SslVersion::TLS1_1, "TLSv1.1"),
    (SslVersion::TLS1, "TLSv1.0"),
];

fn resolve(host: &str, port: u16, opts: &CertOptions) -> Result<Vec<SocketAddr>, CheckError> {
    if let Some(a) = opts.connect {
        return Ok(vec![a]);
    }
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| CheckError::Connect { target: target.clone(), reason: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(CheckError::Connect { target, reason: "the name has no address".into() });
    }
    Ok(addrs)
}

/// Connects to `host:port` and judges every rule.
pub fn check_cert(host: &str, port: u16, opts: &CertOptions) -> Result<CertReport, CheckError> {
    let target = format!("{host}:{port}");
    // The first address that accepts a TCP connection is the one judged.
    let mut last_err = String::new();
    let mut addr = None;
    for a in resolve(host, port, opts)? {
        match TcpStream::connect_timeout(&a, opts.timeout) {
            Ok(_) => {
                addr = Some(a);
                break;
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    let addr = addr.ok_or_else(|| CheckError::Connect { target: target.clone(), reason: last_err })?;

    let mut versions = Vec::new();
    let mut best: Option<Probe> = None;
    let mut reasons = Vec::new();
    for (v, name) in VERSIONS {
        match handshake(addr, host, opts.timeout, v, None) {
            Ok(p) => {
                versions.push(name.to_owned());
                if best.is_none() {
                    best = Some(p);
                }
            }
            Err(e) => reasons.push(format!("{name}: {e}")),
        }
    }
    let probe = best.ok_or_else(|| CheckError::Handshake { target: target.clone(), reason: reasons.join("; ") })?;
    if probe.chain.is_empty() {
        return Err(CheckError::Handshake { target, reason: "the server sent no certificate".into() });
    }
    let mut findings = vec![versions_rule(&versions)];
    findings.push(trust_rule(&probe.chain, opts)?);
    findings.push(hostname_rule(&probe.chain[0], host));
    findings.push(validity_rule(&probe.chain, opts.warn_days));
    findings.push(self_signed_rule(&probe.chain[0]));
    findings.push(signature_rule(&probe.chain));
    findings.push(key_rule(&probe.chain));
    findings.push(forward_secrecy_rule(addr, host, opts.timeout, &versions));
    findings.push(distrusted_rule(&probe.chain));
    Ok(CertReport { host: host.to_owned(), port, address: addr.to_string(), versions, findings })
}

fn versions_rule(versions: &[String]) -> Finding {
    let list = versions.join(", ");
    let has = |v: &str| versions.iter().any(|x| x == v);
    if has("TLSv1.2") {
        Finding::new("tls-versions", Level::Pass, format!("offered: {list}"))
    } else if has("TLSv1.3") {
        Finding::new(
            "tls-versions",
            Level::Warn,
            format!("offered: {list}; without TLS 1.2 some older Android phones cannot connect"),
        )
    } else {
        Finding::new("tls-versions", Level::Fail, format!("offered: {list}; WeChat requires TLS 1.2 or later"))
    }
}

fn trust_rule(chain: &[X509], opts: &CertOptions) -> Result<Finding, CheckError> {
    let ca = |e: openssl::error::ErrorStack| CheckError::Ca(e.to_string());
    let mut b = X509StoreBuilder::new().map_err(ca)?;
    if opts.system_roots {
        b.set_default_paths().map_err(ca)?;
    }
    if let Some(pem) = &opts.ca_pem {
        let certs = X509::stack_from_pem(pem).map_err(ca)?;
        if certs.is_empty() {
            return Err(CheckError::Ca("no certificate in the file".into()));
        }
        for c in certs {
            b.add_cert(c).map_err(ca)?;
        }
    }
    // Time belongs to the validity rule: an expired but otherwise trusted chain passes here.
    b.set_flags(X509VerifyFlags::NO_CHECK_TIME).map_err(ca)?;
    let store = b.build();
    let mut rest = Stack::new().map_err(ca)?;
    for c in &chain[1..] {
        rest.push(c.clone()).map_err(ca)?;
    }
    let mut ctx = X509StoreContext::new().map_err(ca)?;
    let (ok, err, depth) = ctx
        .init(&store, &chain[0], &rest, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error(), c.error_depth()))
        })
        .map_err(ca)?;
    let source = match (opts.system_roots, opts.ca_pem.is_some()) {
        (true, true) => "system roots and --ca",
        (true, false) => "system roots",
        (false, true) => "--ca",
        (false, false) => "no roots",
    };
    Ok(if ok && err == X509VerifyResult::OK {
        Finding::new("chain-trusted", Level::Pass, format!("chain of {} verified against {source}", chain.len()))
    } else {
        Finding::new(
            "chain-trusted",
            Level::Fail,
            format!("{} (at depth {depth}; trusted: {source})", err.error_string()),
        )
    })
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase().trim_end_matches('.').to_owned());
    match p.strip_prefix("*.") {
        Some(suffix) => h.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => p == h,
    }
}

fn hostname_rule(leaf: &X509, host: &str) -> Finding {
    let ip = host.parse::<IpAddr>().ok();
    let mut names = Vec::new();
    let mut matched = false;
    for n in leaf.subject_alt_names().iter().flatten() {
        if let Some(d) = n.dnsname() {
            names.push(d.to_owned());
            matched |= ip.is_none() && name_matches(d, host);
        } else if let Some(raw) = n.ipaddress() {
            let a = match raw.len() {
                4 => <[u8; 4]>::try_from(raw).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(raw).ok().map(IpAddr::from),
                _ => None,
            };
            if let Some(a) = a {
                names.push(a.to_string());
                matched |= ip == Some(a);
            }
        }
    }
    if matched {
        Finding::new("hostname", Level::Pass, format!("{host} is in subjectAltName"))
    } else if names.is_empty() {
        let cn = cn(leaf.subject_name()).unwrap_or_default();
        Finding::new(
            "hostname",
            Level::Fail,
            format!("no subjectAltName (CN {cn:?}); iOS 13+ ignores the CN, so {host} does not match"),
        )
    } else {
        Finding::new("hostname", Level::Fail, format!("{host} is not among {}", names.join(", ")))
    }
}

fn cn(name: &X509NameRef) -> Option<String> {
    entry(name, Nid::COMMONNAME)
}

fn entry(name: &X509NameRef, nid: Nid) -> Option<String> {
    name.entries_by_nid(nid).next().and_then(|e| e.data().to_string().ok())
}

fn label(c: &X509) -> String {
    cn(c.subject_name()).unwrap_or_else(|| "(no CN)".into())
}

fn validity_rule(chain: &[X509], warn_days: i64) -> Finding {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return Finding::new("validity", Level::Fail, "cannot read the clock");
    };
    for (i, c) in chain.iter().enumerate() {
        let who = if i == 0 { "leaf".to_owned() } else { format!("chain[{i}] {}", label(c)) };
        if c.not_before() > now {
            return Finding::new("validity", Level::Fail, format!("{who} is not valid before {}", c.not_before()));
        }
        if c.not_after() < now {
            return Finding::new("validity", Level::Fail, format!("{who} expired on {}", c.not_after()));
        }
    }
    let left = now.diff(chain[0].not_after()).map(|d| d.days as i64).unwrap_or(0);
    if left < warn_days {
        Finding::new(
            "validity",
            Level::Warn,
            format!("leaf expires in {left} days ({}); renew it", chain[0].not_after()),
        )
    } else {
        Finding::new("validity", Level::Pass, format!("leaf valid until {} ({left} days)", chain[0].not_after()))
    }
}

fn is_self_signed(c: &X509) -> bool {
    c.issued(c) == X509VerifyResult::OK && c.public_key().and_then(|k| c.verify(&k)).unwrap_or(false)
}

fn self_signed_rule(leaf: &X509) -> Finding {
    if is_self_signed(leaf) {
        Finding::new("self-signed", Level::Fail, "the leaf is self-signed; iOS refuses it even when trusted")
    } else {
        Finding::new("self-signed", Level::Pass, "the leaf is issued by a CA")
    }
}

/// Certificates whose own signature matters: all but a self-signed root sent along.
fn judged(chain: &[X509]) -> impl Iterator<Item = (usize, &X509)> {
    chain.iter().enumerate().filter(|(i, c)| *i == 0 || !is_self_signed(c))
}

fn signature_rule(chain: &[X509]) -> Finding {
    const STRONG: [Nid; 8] = [
        Nid::SHA256WITHRSAENCRYPTION,
        Nid::SHA384WITHRSAENCRYPTION,
        Nid::SHA512WITHRSAENCRYPTION,
        Nid::ECDSA_WITH_SHA256,
        Nid::ECDSA_WITH_SHA384,
        Nid::ECDSA_WITH_SHA512,
        Nid::RSASSAPSS,
        Nid::SHA224WITHRSAENCRYPTION,
    ];
    let mut seen = Vec::new();
    for (i, c) in judged(chain) {
        let nid = c.signature_algorithm().object().nid();
        let name = nid.long_name().unwrap_or("unknown").to_owned();
        // EdDSA certificates carry no separate digest: as strong as ATS asks.
        let eddsa = matches!(name.as_str(), "ED25519" | "ED448");
        // SHA-224 is in the list for OpenSSL's sake, but ATS asks for SHA-256 or better.
        if !eddsa && (!STRONG.contains(&nid) || nid == Nid::SHA224WITHRSAENCRYPTION) {
            return Finding::new(
                "ats-signature",
                Level::Fail,
                format!("chain[{i}] {} is signed with {name}; ATS needs SHA-256 or better", label(c)),
            );
        }
        seen.push(name);
    }
    Finding::new("ats-signature", Level::Pass, seen.join(", "))
}

fn key_rule(chain: &[X509]) -> Finding {
    let mut seen = Vec::new();
    for (i, c) in judged(chain) {
        let Ok(k) = c.public_key() else {
            return Finding::new("ats-key", Level::Fail, format!("chain[{i}]: unreadable public key"));
        };
        let bits = k.bits();
        let (kind, ok) = match k.id() {
            Id::RSA | Id::RSA_PSS => ("RSA", bits >= 2048),
            Id::EC => ("EC", bits >= 256),
            Id::ED25519 | Id::ED448 => ("EdDSA", true),
            _ => ("other", false),
        };
        if !ok {
            return Finding::new(
                "ats-key",
                Level::Fail,
                format!("chain[{i}] {} has a {kind} {bits}-bit key; ATS needs RSA ≥ 2048 or ECC ≥ 256", label(c)),
            );
        }
        seen.push(format!("{kind} {bits}"));
    }
    Finding::new("ats-key", Level::Pass, seen.join(", "))
}

fn forward_secrecy_rule(addr: SocketAddr, host: &str, timeout: Duration, versions: &[String]) -> Finding {
    if versions.iter().any(|v| v == "TLSv1.2") {
        return match handshake(addr, host, timeout, SslVersion::TLS1_2, Some(ATS_CIPHERS)) {
            Ok(p) => Finding::new("ats-forward-secrecy", Level::Pass, format!("TLS 1.2 with {}", p.cipher)),
            Err(_) => Finding::new(
                "ats-forward-secrecy",
                Level::Fail,
                "no ECDHE cipher suite of Apple's ATS list is accepted over TLS 1.2",
            ),
        };
    }
    if versions.iter().any(|v| v == "TLSv1.3") {
        return Finding::new("ats-forward-secrecy", Level::Pass, "TLS 1.3 (every suite is forward-secret)");
    }
    Finding::new("ats-forward-secrecy", Level::Fail, "ATS needs TLS 1.2+ with an ECDHE cipher suite")
}

fn distrusted_rule(chain: &[X509]) -> Finding {
    for (i, c) in chain.iter().enumerate() {
        for name in [c.issuer_name(), c.subject_name()] {
            for nid in [Nid::ORGANIZATIONNAME, Nid::COMMONNAME] {
                let Some(v) = entry(name, nid) else { continue };
                let lower = v.to_lowercase();
                if DISTRUSTED_ISSUERS.iter().any(|d| lower.contains(d)) {
                    return Finding::new(
                        "distrusted-issuer",
                        Level::Fail,
                        format!("chain[{i}] names {v:?}; WoSign and StartCom certificates are not trusted"),
                    );
                }
            }
        }
    }
    Finding::new("distrusted-issuer", Level::Pass, "no WoSign or StartCom certificate in the chain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("example.com").unwrap(), ("example.com".into(), 443));
        assert_eq!(parse_target("example.com:8443").unwrap(), ("example.com".into(), 8443));
        assert_eq!(parse_target("https://example.com/").unwrap(), ("example.com".into(), 443));
        assert_eq!(parse_target("[::1]:444").unwrap(), ("::1".into(), 444));
        assert!(parse_target("example.com:x").is_err());
        assert!(parse_target("").is_err());
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.Example.com", "A.example.com."));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(name_matches("pay.example.com", "PAY.example.com"));
    }
}
