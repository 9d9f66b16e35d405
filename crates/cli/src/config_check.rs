//! `minipay config check [--config FILE] [--database]`: loads the configuration the way
//! `serve` does and prints every problem with the setting it belongs to (see
//! [`minipay_config::check`]), then what only this binary can look at: when each merchant's
//! client certificate expires, and with `--database` whether the database answers and which
//! migrations it still lacks. Exit 0 when `serve` would start, 1 when it would refuse.
//! Secret values are never printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use minipay_config::Config;
use minipay_config::check::{self, Severity};
use secrecy::ExposeSecret;
use wxpay::client::ClientIdentity;

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration: parse, resolve secrets and files, open the certificates,
    /// optionally connect to the database; every problem is printed with its field.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// TOML configuration (default `$MINIPAY_CONFIG`, else defaults + env).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also connect to the database and list migrations not yet applied.
    #[arg(long)]
    database: bool,
}

pub fn run(args: &ConfigArgs) -> ExitCode {
    match &args.command {
        ConfigCommand::Check(a) => run_check(a),
    }
}

fn run_check(args: &CheckArgs) -> ExitCode {
    let report = check::check(args.config.as_deref());
    let source = match &report.path {
        Some(p) => p.display().to_string(),
        None => "(no file: defaults and MINIPAY_… environment)".into(),
    };
    println!("configuration: {source}");
    let mut findings = report.findings.clone();
    if let Some(cfg) = &report.config {
        findings.extend(certificate_findings(cfg));
        if args.database {
            findings.extend(database_findings(cfg));
        }
    }
    for f in &findings {
        println!("{f}");
    }
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    if let (Some(cfg), 0) = (&report.config, errors) {
        println!(
            "ok: {} merchant(s), {} app(s); api {}, notify {} (notify_url {}), worker metrics {}; {} warning(s)",
            cfg.merchants.len(),
            cfg.apps.len(),
            cfg.api.listen,
            cfg.notify.listen,
            cfg.pay_notify_url(),
            if cfg.worker.metrics_listen.is_empty() { "off" } else { &cfg.worker.metrics_listen },
            warnings
        );
        ExitCode::SUCCESS
    } else {
        println!("{errors} error(s), {warnings} warning(s): serve would refuse to start");
        ExitCode::FAILURE
    }
}

fn finding(severity: Severity, field: String, message: String) -> check::Finding {
    check::Finding { severity, field, message }
}

/// Each merchant's client certificate: expired (error) or expiring within 30 days (warning).
fn certificate_findings(cfg: &Config) -> Vec<check::Finding> {
    let mut out = Vec::new();
    for m in &cfg.merchants {
        let field = format!("merchants[{}].certificate", m.mch_id);
        let cert = match &m.identity {
            None => continue,
            Some(ClientIdentity::Pkcs12 { der, password }) => {
                let pass = password.as_ref().map(|p| p.expose_secret().to_owned()).unwrap_or_else(|| m.mch_id.clone());
                openssl::pkcs12::Pkcs12::from_der(der).and_then(|p| p.parse2(&pass)).ok().and_then(|p| p.cert)
            }
            Some(ClientIdentity::Pem { cert_pem, .. }) => openssl::x509::X509::from_pem(cert_pem).ok(),
        };
        let Some(cert) = cert else {
            out.push(finding(Severity::Error, field, "the certificate cannot be read".into()));
            continue;
        };
        let (Ok(now), Ok(soon)) =
            (openssl::asn1::Asn1Time::days_from_now(0), openssl::asn1::Asn1Time::days_from_now(30))
        else {
            continue;
        };
        if cert.not_after() < now {
            out.push(finding(Severity::Error, field, format!("expired on {}", cert.not_after())));
        } else if cert.not_after() < soon {
            out.push(finding(Severity::Warning, field, format!("expires on {} (within 30 days)", cert.not_after())));
        }
    }
    out
}

/// The database answers within five seconds, and which migrations it lacks.
fn database_findings(cfg: &Config) -> Vec<check::Finding> {
    let field = || "database.url".to_owned();
    let rt = match crate::serve_cmd::runtime() {
        Ok(rt) => rt,
        Err(e) => return vec![finding(Severity::Error, field(), e.to_string())],
    };
    rt.block_on(async {
        let connect = minipay_store::db::connect(cfg.database.url.expose_secret(), 1);
        let pool = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(p)) => p,
            // sqlx's message names host and database, never the password.
            Ok(Err(e)) => return vec![finding(Severity::Error, field(), format!("cannot connect: {e}"))],
            Err(_) => return vec![finding(Severity::Error, field(), "no answer within 5 s".into())],
        };
        let applied: Result<Vec<(i64,)>, _> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(&pool).await;
        let applied: Vec<i64> = applied.map(|v| v.into_iter().map(|(x,)| x).collect()).unwrap_or_default();
        let pending: Vec<String> = minipay_store::db::MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
            .collect();
        pool.close().await;
        if pending.is_empty() {
            Vec::new()
        } else {
            vec![finding(
                Severity::Warning,
                field(),
                format!("{} migration(s) not applied (run `minipay migrate`): {}", pending.len(), pending.join(", ")),
            )]
        }
    })
}
