//! `minipay check-cert HOST[:PORT]` and `minipay check-domains FILE|-`: the seed note's
//! server-domain and HTTPS-certificate rules as reports (library: `minipay-tlscheck`).
//!
//! Exit codes: 0 when every rule passes, 1 when one warns or fails (or a domain breaks a
//! rule), 2 when the check could not run (bad input, nothing listening).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use minipay_tlscheck::Level;
use minipay_tlscheck::cert::{CertOptions, CertReport, check_cert, parse_target};
use minipay_tlscheck::domains::{check_domains, host_of, parse_lists};

#[derive(Args)]
pub struct CheckCertArgs {
    /// The server: HOST or HOST:PORT (port 443 when none).
    pub target: String,
    /// Extra trusted root(s), PEM.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Trust only --ca, not the system's roots.
    #[arg(long)]
    pub no_system_roots: bool,
    /// Connect to this address instead of resolving HOST (SNI and the hostname rule still
    /// use HOST): IP or IP:PORT.
    #[arg(long)]
    pub connect: Option<String>,
    /// Warn when the leaf expires within this many days.
    #[arg(long, default_value_t = 30)]
    pub warn_days: i64,
    /// Seconds per connection attempt.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CheckDomainsArgs {
    /// JSON file with the lists (`request`, `socket`, `uploadFile`, `downloadFile`, or
    /// WeChat's `requestdomain`, …), or `-` for stdin.
    pub file: String,
    /// Also run check-cert on every distinct host (port 443).
    #[arg(long)]
    pub check_cert: bool,
    /// Extra trusted root(s) for --check-cert, PEM.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Print the violations as JSON.
    #[arg(long)]
    pub json: bool,
}

fn cert_options(ca: &Option<PathBuf>, no_system_roots: bool, timeout: u64) -> Result<CertOptions, String> {
    let ca_pem = match ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
        None => None,
    };
    Ok(CertOptions {
        system_roots: !no_system_roots,
        ca_pem,
        timeout: Duration::from_secs(timeout.max(1)),
        ..CertOptions::default()
    })
}

fn print_report(r: &CertReport) {
    println!("{}:{} ({})", r.host, r.port, r.address);
    for f in &r.findings {
        println!("{:<4} {:<20} {}", f.level.as_str(), f.rule, f.detail);
    }
}

pub fn run_check_cert(args: &CheckCertArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("check-cert: {m}");
        ExitCode::from(2)
    };
    let (host, port) = match parse_target(&args.target) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let mut opts = match cert_options(&args.ca, args.no_system_roots, args.timeout) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    opts.warn_days = args.warn_days;
    if let Some(c) = &args.connect {
        let addr =
            c.parse::<SocketAddr>().or_else(|_| c.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, port)));
        match addr {
            Ok(a) => opts.connect = Some(a),
            Err(_) => return fail(format!("--connect {c:?}: give IP or IP:PORT")),
        }
    }
    let report = match check_cert(&host, port, &opts) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_report(&report);
    }
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

pub fn run_check_domains(args: &CheckDomainsArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("check-domains: {m}");
        ExitCode::from(2)
    };
    let mut text = String::new();
    let read = if args.file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&args.file).map(|t| text = t)
    };
    if let Err(e) = read {
        return fail(format!("cannot read {}: {e}", args.file));
    }
    let lists = match parse_lists(&text) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let violations = check_domains(&lists);
    for v in &violations {
        if !args.json {
            println!("{v}");
        }
        lines.push(serde_json::to_value(v).unwrap_or_default());
    }
    if args.check_cert {
        let opts = match cert_options(&args.ca, false, 10) {
            Ok(o) => o,
            Err(e) => return fail(e),
        };
        let mut hosts: Vec<String> = Vec::new();
        for (_, entries) in &lists.lists {
            for h in entries.iter().filter_map(|e| host_of(e)) {
                // Hosts already refused by a rule (IP, localhost, port…) are not probed.
                let refused = violations.iter().any(|v| host_of(&v.entry).as_deref() == Some(h.as_str()));
                if !refused && !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        for h in hosts {
            let found = match check_cert(&h, 443, &opts) {
                Ok(r) => r
                    .findings
                    .into_iter()
                    .filter(|f| f.level != Level::Pass)
                    .map(|f| (f.rule.to_owned(), format!("{}: {}", f.level.as_str(), f.detail)))
                    .collect(),
                Err(e) => vec![("connect".to_owned(), e.to_string())],
            };
            for (rule, message) in found {
                if !args.json {
                    println!("cert {h}: {rule}: {message}");
                }
                lines.push(serde_json::json!({"host": h, "rule": rule, "message": message}));
            }
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(lines.clone()));
    } else if lines.is_empty() {
        println!("ok: no violation");
    }
    if lines.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
