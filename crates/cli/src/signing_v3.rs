//! `minipay sign-v3` / `minipay verify-v3`: APIv3's answers to 签名错误 / SIGN_ERROR.
//!
//! - `sign-v3` builds the five-line string a request signs (`METHOD\nPATH?QUERY\nTIMESTAMP\n
//!   NONCE\nBODY\n`, body from stdin), signs it with the merchant key and prints the
//!   `Authorization` header — or, with `--authorization`, checks a header someone else built
//!   against the merchant certificate, as WeChat does (±300 s, signature over what was
//!   received).
//! - `verify-v3` checks an answer or a notification (the four `Wechatpay-*` headers, body on
//!   stdin) against WeChat's platform certificate or public key, with the same rules as the
//!   client: SIGNTEST probes fail, the serial must match, ±300 s.
//!
//! Lines are printed with newlines escaped (`\n`), so the exact bytes can be compared with
//! what another implementation signs. Private keys come from files, never from argv.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wxpay::v3::sign::{self, Authorization, MerchantSigner, Method};
use wxpay::v3::verify::{self, KeySet, SignedHeaders};

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    #[value(name = "GET")]
    Get,
    #[value(name = "POST")]
    Post,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Get => Method::Get,
            MethodArg::Post => Method::Post,
        }
    }
}

#[derive(Args)]
pub struct SignV3Args {
    /// HTTP method of the request.
    #[arg(long, value_enum)]
    method: MethodArg,
    /// The URL's path and query exactly as sent, e.g. `/v3/pay/transactions/out-trade-no/A1?mchid=1900000001`.
    #[arg(long)]
    path: String,
    /// Merchant private key (PEM) — to sign.
    #[arg(long, value_name = "PATH", required_unless_present = "authorization")]
    key_file: Option<PathBuf>,
    /// Merchant id and certificate serial for the header (with --key-file).
    #[arg(long, requires = "key_file")]
    mchid: Option<String>,
    #[arg(long, requires = "key_file")]
    serial: Option<String>,
    /// Sign with this timestamp and nonce instead of now and a random one (to reproduce a
    /// signature someone else computed).
    #[arg(long, requires = "nonce")]
    timestamp: Option<i64>,
    #[arg(long, requires = "timestamp")]
    nonce: Option<String>,
    /// Check this `Authorization` header instead of signing (needs --merchant-cert).
    #[arg(long, requires = "merchant_cert")]
    authorization: Option<String>,
    /// The merchant certificate (PEM) whose key signed --authorization.
    #[arg(long, value_name = "PATH")]
    merchant_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyV3Args {
    /// The answer's or notification's headers.
    #[arg(long)]
    timestamp: String,
    #[arg(long)]
    nonce: String,
    #[arg(long)]
    signature: String,
    #[arg(long)]
    serial: String,
    /// WeChat's platform certificate (PEM); may be repeated.
    #[arg(long, value_name = "PATH")]
    platform_cert: Vec<PathBuf>,
    /// WeChat Pay public key (PEM) and its id (`PUB_KEY_ID_…`).
    #[arg(long, value_name = "PATH", requires = "public_key_id")]
    public_key: Option<PathBuf>,
    #[arg(long)]
    public_key_id: Option<String>,
    /// Check the timestamp against this Unix time instead of now (an old capture).
    #[arg(long)]
    now: Option<i64>,
}

/// Bad input: exit code 2 with a message on stderr.
struct Bad(String);

fn fail(e: Bad) -> ExitCode {
    eprintln!("minipay: {}", e.0);
    ExitCode::from(2)
}

fn read(path: &Path) -> Result<Vec<u8>, Bad> {
    std::fs::read(path).map_err(|e| Bad(format!("cannot read {}: {e}", path.display())))
}

fn read_body() -> Result<Vec<u8>, Bad> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| Bad(format!("cannot read stdin: {e}")))?;
    Ok(body)
}

fn body_text(body: &[u8]) -> Result<&str, Bad> {
    std::str::from_utf8(body).map_err(|_| Bad("the body is not UTF-8 (APIv3 bodies are JSON)".into()))
}

/// A signed string with its newlines shown as `\n`, so each byte can be compared.
fn escaped(s: &[u8]) -> String {
    String::from_utf8_lossy(s).replace('\n', "\\n")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn run_sign(args: &SignV3Args) -> ExitCode {
    sign_or_check(args).unwrap_or_else(fail)
}

/// Prints `result=MATCH` (exit 0) or `result=MISMATCH (why)` (exit 1).
fn report<T, E: std::fmt::Display>(out: &mut impl Write, checked: Result<T, E>) -> ExitCode {
    match checked {
        Ok(_) => {
            let _ = writeln!(out, "result=MATCH");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "result=MISMATCH ({e})");
            ExitCode::from(1)
        }
    }
}

fn sign_or_check(args: &SignV3Args) -> Result<ExitCode, Bad> {
    let body = read_body()?;
    let body = body_text(&body)?;
    let method = Method::from(args.method);
    let mut out = std::io::stdout().lock();
    if let (Some(header), Some(cert)) = (&args.authorization, &args.merchant_cert) {
        let cert =
            openssl::x509::X509::from_pem(&read(cert)?).map_err(|e| Bad(format!("not a PEM certificate: {e}")))?;
        let public = cert.public_key().map_err(|e| Bad(format!("certificate without a public key: {e}")))?;
        let parsed = Authorization::parse(header).map_err(|e| Bad(format!("Authorization header: {e}")))?;
        let message = sign::request_message(method, &args.path, parsed.timestamp, &parsed.nonce_str, body);
        let _ = writeln!(out, "mchid={}", parsed.mchid);
        let _ = writeln!(out, "serial_no={}", parsed.serial_no);
        let _ = writeln!(out, "string_to_sign={}", escaped(message.as_bytes()));
        let checked =
            sign::verify_request(header, method, &args.path, body, &public, now(), verify::DEFAULT_WINDOW_SECS);
        return Ok(report(&mut out, checked));
    }
    let (Some(key_file), Some(mchid), Some(serial)) = (&args.key_file, &args.mchid, &args.serial) else {
        return Err(Bad("to sign, pass --key-file, --mchid and --serial".into()));
    };
    let signer = MerchantSigner::from_pem(mchid.as_str(), serial.as_str(), &read(key_file)?)
        .map_err(|e| Bad(format!("merchant key: {e}")))?;
    let auth = match (args.timestamp, &args.nonce) {
        (Some(t), Some(n)) => signer.authorization_at(method, &args.path, body, t, n),
        _ => signer.authorization(method, &args.path, body),
    };
    let message = sign::request_message(method, &args.path, auth.timestamp, &auth.nonce_str, body);
    let _ = writeln!(out, "string_to_sign={}", escaped(message.as_bytes()));
    let _ = writeln!(out, "signature={}", auth.signature);
    let _ = writeln!(out, "Authorization: {auth}");
    Ok(ExitCode::SUCCESS)
}

pub fn run_verify(args: &VerifyV3Args) -> ExitCode {
    verify_answer(args).unwrap_or_else(fail)
}

fn verify_answer(args: &VerifyV3Args) -> Result<ExitCode, Bad> {
    let body = read_body()?;
    let mut keys = KeySet::new();
    for path in &args.platform_cert {
        keys.add_certificate_pem(&read(path)?).map_err(|e| Bad(format!("{}: {e}", path.display())))?;
    }
    if let (Some(path), Some(id)) = (&args.public_key, &args.public_key_id) {
        keys.add_public_key_pem(id, &read(path)?).map_err(|e| Bad(format!("{}: {e}", path.display())))?;
    }
    if keys.is_empty() {
        return Err(Bad(
            "no key to verify with: pass --platform-cert PATH and/or --public-key PATH --public-key-id ID".into(),
        ));
    }
    let headers = SignedHeaders {
        timestamp: args.timestamp.clone(),
        nonce: args.nonce.clone(),
        signature: args.signature.clone(),
        serial: args.serial.clone(),
    };
    let mut out = std::io::stdout().lock();
    let message = verify::answer_message(&headers.timestamp, &headers.nonce, &body);
    let _ = writeln!(out, "string_to_verify={}", escaped(&message));
    let _ = writeln!(out, "serial={}", headers.serial);
    let at = args.now.unwrap_or_else(now);
    Ok(report(&mut out, keys.verify(&headers, &body, at, verify::DEFAULT_WINDOW_SECS)))
}
