//! `minipay sign` / `minipay verify`: the first tool anyone needs when WeChat answers
//! 签名错误. The key comes from `--key-file` or `MINIPAY_API_KEY`, never from argv, so it
//! stays out of shell history and `ps`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wxpay::sign::{self, SignType};
use wxpay::{ApiKey, xml};

#[derive(Args)]
pub struct SignArgs {
    /// File holding the merchant API key (surrounding whitespace is ignored).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Hash to use (verify: force this type instead of detecting it).
    #[arg(long, value_enum)]
    sign_type: Option<SignTypeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SignTypeArg {
    #[value(name = "MD5")]
    Md5,
    #[value(name = "HMAC-SHA256")]
    HmacSha256,
}

impl From<SignTypeArg> for SignType {
    fn from(a: SignTypeArg) -> SignType {
        match a {
            SignTypeArg::Md5 => SignType::Md5,
            SignTypeArg::HmacSha256 => SignType::HmacSha256,
        }
    }
}

/// Bad input: exit code 2 with a message on stderr.
struct Bad(String);

fn load_key(args: &SignArgs) -> Result<ApiKey, Bad> {
    if let Some(path) = &args.key_file {
        let raw =
            std::fs::read_to_string(path).map_err(|e| Bad(format!("cannot read key file {}: {e}", path.display())))?;
        let key = raw.trim();
        if key.is_empty() {
            return Err(Bad(format!("key file {} is empty", path.display())));
        }
        return Ok(ApiKey::new(key));
    }
    match std::env::var("MINIPAY_API_KEY") {
        Ok(k) if !k.trim().is_empty() => Ok(ApiKey::new(k.trim())),
        _ => Err(Bad("no API key: pass --key-file PATH or set MINIPAY_API_KEY".into())),
    }
}

fn read_doc() -> Result<xml::Params, Bad> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| Bad(format!("cannot read stdin: {e}")))?;
    let trimmed = body.trim_ascii();
    xml::decode(trimmed).map_err(|e| Bad(format!("not a WeChat XML document: {e}")))
}

/// The string-to-sign with the key replaced by asterisks of the same length, so a person can
/// compare it byte for byte with what their own code hashes.
fn masked_string(params: &xml::Params, key: &ApiKey) -> String {
    let mut s = sign::string_to_sign(params);
    if !s.is_empty() {
        s.push('&');
    }
    s.push_str("key=");
    s.push_str(&"*".repeat(key.expose().chars().count()));
    s
}

fn fail(e: Bad) -> ExitCode {
    eprintln!("minipay: {}", e.0);
    ExitCode::from(2)
}

pub fn run_sign(args: &SignArgs) -> ExitCode {
    let (key, params) = match load_key(args).and_then(|k| Ok((k, read_doc()?))) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let t = args.sign_type.map(SignType::from).unwrap_or_default();
    let sig = sign::sign(&params, &key, t);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sign_type={}", t.as_str());
    let _ = writeln!(out, "string_to_sign={}", masked_string(&params, &key));
    let _ = writeln!(out, "sign={sig}");
    ExitCode::SUCCESS
}

pub fn run_verify(args: &SignArgs) -> ExitCode {
    let (key, params) = match load_key(args).and_then(|k| Ok((k, read_doc()?))) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let Some(received) = params.get("sign") else {
        return fail(Bad("the document has no <sign> field".into()));
    };
    let t = match args.sign_type {
        Some(t) => SignType::from(t),
        None => match sign::detect_sign_type(&params) {
            Ok(t) => t,
            Err(e) => return fail(Bad(e.to_string())),
        },
    };
    let expected = sign::sign(&params, &key, t);
    let ok = sign::verify_as(&params, &key, t).is_ok();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sign_type={}", t.as_str());
    let _ = writeln!(out, "signed_fields={}", sign::signed_fields(&params).join(","));
    let _ = writeln!(out, "string_to_sign={}", masked_string(&params, &key));
    let _ = writeln!(out, "expected={expected}");
    let _ = writeln!(out, "received={received}");
    let _ = writeln!(out, "{}", if ok { "result=MATCH" } else { "result=MISMATCH" });
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
