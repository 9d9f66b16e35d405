//! `minipay config check` and `serve`'s start-up check: everything [`Config::load`] does,
//! but reporting every problem with the setting it belongs to instead of stopping at the
//! first — parsing, env overrides, each secret (inline, file or env), each file (readable by
//! this user?), the certificates (the WeChat Pay client is actually built with each
//! merchant's identity), the extra root CA, the addresses and the public URL WeChat calls.
//!
//! Findings never carry a secret's value; a file that cannot be read is named with the
//! reason and the uid we run as, since "permission denied" in a container is nearly always
//! a mount owned by another user.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use crate::{Config, RawConfig, apply_env_overrides, read_bytes, read_secret, read_text};

/// How bad a finding is: errors stop `serve`, warnings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, attached to the setting it is about (`merchants[1900000109].api_key_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}: {}: {}", self.field, self.message)
    }
}

/// What a check found; `config` is the loaded configuration when there was no error.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The file read (`None`: defaults and environment only).
    pub path: Option<PathBuf>,
    pub findings: Vec<Finding>,
    pub config: Option<Config>,
}

impl CheckReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Error, field: field.into(), message: message.into() });
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Warning, field: field.into(), message: message.into() });
    }
}

/// Checks the file `path` (else `$MINIPAY_CONFIG`, else defaults) with the process
/// environment.
pub fn check(path: Option<&Path>) -> CheckReport {
    let path = path.map(Path::to_path_buf).or_else(|| std::env::var_os("MINIPAY_CONFIG").map(PathBuf::from));
    check_with_env(path.as_deref(), std::env::vars().collect())
}

/// [`check`] with an explicit environment (tests).
pub fn check_with_env(path: Option<&Path>, env: Vec<(String, String)>) -> CheckReport {
    let mut report = CheckReport { path: path.map(Path::to_path_buf), ..CheckReport::default() };
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("MINIPAY_")).collect();
    let (text, base) = match path {
        Some(p) => match read_text(p) {
            Ok(t) => (t, p.parent().map(Path::to_path_buf).unwrap_or_default()),
            Err(e) => {
                report.error("configuration file", readable_reason(&e));
                return report;
            }
        },
        None => (String::new(), PathBuf::from(".")),
    };
    let mut doc: toml::Table = match toml::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            report.error("configuration file", format!("not valid TOML: {}", one_line(&e.to_string())));
            return report;
        }
    };
    if let Err(e) = apply_env_overrides(&mut doc, &env) {
        report.error("environment", e.to_string());
        return report;
    }
    let raw: RawConfig = match toml::Value::Table(doc).try_into() {
        Ok(r) => r,
        Err(e) => {
            report.error("configuration file", one_line(&e.to_string()));
            return report;
        }
    };
    check_raw(&raw, &env, &base, &mut report);
    if !report.is_ok() {
        return report;
    }
    match Config::resolve(raw, &env, &base) {
        Ok(cfg) => {
            check_resolved(&cfg, &mut report);
            if report.is_ok() {
                report.config = Some(cfg);
            }
        }
        Err(e) => report.error("configuration", e.to_string()),
    }
    report
}

/// A read error as an operator needs it: the path, the reason, and who we are.
fn readable_reason(e: &crate::ConfigError) -> String {
    match e {
        crate::ConfigError::Read { path, source } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("cannot read {path}: permission denied for uid {} (check the file's owner and mode)", uid())
        }
        crate::ConfigError::Read { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            format!("{path} does not exist")
        }
        other => other.to_string(),
    }
}

fn uid() -> String {
    // /proc/self/status: "Uid:\treal\teffective\t…"; good enough on Linux, "?" elsewhere.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each secret and file on its own, so every problem is reported.
fn check_raw(raw: &RawConfig, env: &[(String, String)], base: &Path, report: &mut CheckReport) {
    let path = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
    let has_env = |name: String| env.iter().any(|(k, v)| *k == name && !v.is_empty());
    let file = |report: &mut CheckReport, field: String, p: &PathBuf, secret: bool| {
        let p = path(p);
        let r = if secret { read_secret(&p).map(|s| s.len()) } else { read_bytes(&p).map(|b| b.len()) };
        match r {
            Ok(0) => report.error(field, format!("{} is empty", p.display())),
            Ok(_) => {}
            Err(e) => report.error(field, readable_reason(&e)),
        }
    };
    if let Some(ca) = &raw.wechat.ca_file {
        file(report, "wechat.ca_file".into(), ca, false);
    }
    for m in &raw.merchants {
        let f = |k: &str| format!("merchants[{}].{k}", m.mch_id);
        if m.mch_id.is_empty() || !m.mch_id.bytes().all(|b| b.is_ascii_digit()) {
            report.error("merchants.mch_id", format!("{:?} must be digits", m.mch_id));
        }
        if has_env(format!("MINIPAY_MERCHANT_{}_API_KEY", m.mch_id)) {
        } else if let Some(p) = &m.api_key_file {
            file(report, f("api_key_file"), p, true);
        } else if m.api_key.as_ref().is_none_or(|k| k.expose().is_empty())
            && m.api_version == crate::merchant_v3::ApiVersionSetting::V2
        {
            // A v3 merchant needs no v2 key (only its red packets and v2 transfers do).
            report.error(
                f("api_key"),
                format!("missing: set api_key, api_key_file or MINIPAY_MERCHANT_{}_API_KEY", m.mch_id),
            );
        }
        if let Some(p) = &m.cert_password_file {
            file(report, f("cert_password_file"), p, true);
        }
        match (&m.cert_p12_file, &m.cert_pem_file, &m.key_pem_file) {
            (Some(p12), None, None) => file(report, f("cert_p12_file"), p12, false),
            (None, Some(cert), Some(key)) => {
                file(report, f("cert_pem_file"), cert, false);
                file(report, f("key_pem_file"), key, true);
            }
            (None, None, None) => report.warn(
                f("cert_p12_file"),
                "no client certificate: refunds, payouts and red packets will be refused by WeChat",
            ),
            _ => report.error(f("cert_p12_file"), "give either cert_p12_file, or both cert_pem_file and key_pem_file"),
        }
    }
    for a in &raw.apps {
        let f = |k: &str| format!("apps[{}].{k}", a.appid);
        if has_env(format!("MINIPAY_APP_{}_SECRET", a.appid))
            || has_env(format!("MINIPAY_APP_{}_SECRET", a.appid.to_ascii_uppercase()))
        {
        } else if let Some(p) = &a.secret_file {
            file(report, f("secret_file"), p, true);
        } else if a.secret.as_ref().is_none_or(|s| s.expose_secret().is_empty()) {
            report.error(f("secret"), format!("missing: set secret, secret_file or MINIPAY_APP_{}_SECRET", a.appid));
        }
        if !raw.merchants.iter().any(|m| m.mch_id == a.mch_id) {
            report.error(f("mch_id"), format!("merchant {} is not configured", a.mch_id));
        }
    }
    if raw.merchants.is_empty() {
        report.warn("merchants", "no merchant configured: nothing can be paid");
    }
    for (field, addr) in [
        ("api.listen", &raw.api.listen),
        ("notify.listen", &raw.notify.listen),
        ("worker.metrics_listen", &raw.worker.metrics_listen),
    ] {
        if !(field == "worker.metrics_listen" && addr.is_empty()) && addr.parse::<std::net::SocketAddr>().is_err() {
            report.error(field, format!("{addr:?} is not host:port with a numeric host (e.g. 0.0.0.0:8080)"));
        }
    }
    let db = raw.database.url.expose_secret();
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        report.error("database.url", "must be a postgres:// URL (value not shown)");
    }
    check_public_url(&raw.notify.public_url, &raw.wechat.pay_base_url, report);
}

/// WeChat calls `notify_url` from the internet: a real merchant's must be HTTPS on a domain
/// (no IP, no localhost, no port — the mini-program server-domain rules). Against a sandbox
/// (a non-default `pay_base_url`) anything reachable will do, so these are warnings there.
fn check_public_url(url: &str, pay_base_url: &str, report: &mut CheckReport) {
    let Some((scheme, rest)) = url.split_once("://") else {
        report.error("notify.public_url", format!("{url:?} must be an http(s) URL"));
        return;
    };
    let host_port = rest.split('/').next().unwrap_or("");
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host_port, None),
    };
    let production = pay_base_url.trim_end_matches('/') == wxpay::client::DEFAULT_BASE_URL.trim_end_matches('/');
    let mut problems = Vec::new();
    if scheme != "https" {
        problems.push("WeChat Pay calls notify_url over HTTPS only".to_owned());
    }
    if port.is_some() {
        problems.push("must carry no port (TLS is served on 443)".to_owned());
    }
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        problems.push(format!("{host} is not a domain name (no IP addresses, no localhost)"));
    }
    for p in problems {
        if production {
            report.error("notify.public_url", p);
        } else {
            report.warn("notify.public_url", format!("{p} (fine against the sandbox)"));
        }
    }
}

/// What only the loaded configuration can show: each merchant's client is built (the
/// certificate and key are parsed and paired), the WeChat API client (the extra root CA).
fn check_resolved(cfg: &Config, report: &mut CheckReport) {
    for m in &cfg.merchants {
        let app = cfg.merchant_app(&m.mch_id).map(|a| a.appid.clone()).unwrap_or_default();
        if let Err(e) = cfg.merchant_client_for(&m.mch_id, &app) {
            report.error(format!("merchants[{}].certificate", m.mch_id), one_line(&e.to_string()));
        }
    }
    if let Err(e) = cfg.weixin_client() {
        report.error("wechat.ca_file", one_line(&e.to_string()));
    }
    if cfg.default_app().is_none() && cfg.apps.len() > 1 {
        report.warn("apps", "several apps and none marked default: every request must name its appid");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn fields(r: &CheckReport, sev: Severity) -> Vec<String> {
        r.findings.iter().filter(|f| f.severity == sev).map(|f| f.field.clone()).collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("minipay.toml");
        std::fs::write(
            &p,
            r#"
[api]
listen = "nowhere"
[notify]
public_url = "http://10.0.0.1:8081"
[[merchants]]
mch_id = "1900000109"
api_key_file = "missing-key"
cert_p12_file = "missing.p12"
[[apps]]
appid = "wxapp"
mch_id = "1900000110"
"#,
        )
        .unwrap();
        let r = check_with_env(Some(&p), env());
        assert!(!r.is_ok());
        let errs = fields(&r, Severity::Error);
        for want in [
            "api.listen",
            "notify.public_url",
            "merchants[1900000109].api_key_file",
            "merchants[1900000109].cert_p12_file",
            "apps[wxapp].secret",
            "apps[wxapp].mch_id",
        ] {
            assert!(errs.iter().any(|f| f == want), "{want} not in {errs:?}");
        }
        let text: Vec<String> = r.findings.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.contains("missing-key does not exist")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("HTTPS only")), "{text:?}");
        assert!(r.config.is_none());
    }

    #[test]
    fn env_secrets_satisfy_the_check_and_values_never_appear() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("minipay.toml");
        std::fs::write(
            &p,
            "[notify]\npublic_url = \"https://pay.example.com\"\n\
             [[merchants]]\nmch_id = \"1900000109\"\n[[apps]]\nappid = \"wxapp\"\nmch_id = \"1900000109\"\nsecret_file = \"app_secret\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("app_secret"), "s3cr3t-app-value\n").unwrap();
        let env = vec![("MINIPAY_MERCHANT_1900000109_API_KEY".to_owned(), "k3y-value-0123".to_owned())];
        let r = check_with_env(Some(&p), env);
        assert!(r.is_ok(), "{:?}", r.findings);
        assert_eq!(fields(&r, Severity::Warning), vec!["merchants[1900000109].cert_p12_file".to_owned()]);
        let cfg = r.config.as_ref().unwrap();
        assert_eq!(cfg.merchants[0].api_key.as_ref().unwrap().expose(), "k3y-value-0123");
        let all = format!("{:?}", r);
        assert!(!all.contains("k3y-value") && !all.contains("s3cr3t"), "{all}");
    }

    #[test]
    fn toml_errors_and_unknown_keys_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[api]\nlisten = \"0.0.0.0:8080\"\nlistne = 1\n").unwrap();
        let r = check_with_env(Some(&p), env());
        let msg = r.findings[0].to_string();
        assert!(msg.contains("listne"), "{msg}");
        let r = check_with_env(Some(&dir.path().join("absent.toml")), env());
        assert!(r.findings[0].message.contains("does not exist"), "{:?}", r.findings);
    }

    #[test]
    fn a_certificate_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("minipay.toml");
        std::fs::write(dir.path().join("cert.p12"), b"not a pkcs12").unwrap();
        std::fs::write(
            &p,
            "[notify]\npublic_url = \"https://pay.example.com\"\n\
             [[merchants]]\nmch_id = \"1900000109\"\napi_key = \"k\"\ncert_p12_file = \"cert.p12\"\n",
        )
        .unwrap();
        let r = check_with_env(Some(&p), env());
        assert_eq!(
            fields(&r, Severity::Error),
            vec!["merchants[1900000109].certificate".to_owned()],
            "{:?}",
            r.findings
        );
    }

    #[test]
    fn production_urls_follow_the_server_domain_rules() {
        let mut r = CheckReport::default();
        check_public_url("https://pay.example.com", wxpay::client::DEFAULT_BASE_URL, &mut r);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        check_public_url("https://pay.example.com:8443/x", wxpay::client::DEFAULT_BASE_URL, &mut r);
        check_public_url("https://localhost", wxpay::client::DEFAULT_BASE_URL, &mut r);
        assert_eq!(r.errors().count(), 2, "{:?}", r.findings);
        let mut s = CheckReport::default();
        check_public_url("http://127.0.0.1:8081", "https://127.0.0.1:8443", &mut s);
        assert!(s.is_ok() && s.findings.len() == 3, "{:?}", s.findings);
    }
}
