//! `minipay sign-v3` / `minipay verify-v3` as a person facing SIGN_ERROR runs them: the body
//! on stdin, keys from files, the exact signed string printed with `\n` escaped.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use wxpay::v3::keygen;
use wxpay::v3::sign::{rsa_sha256_sign, rsa_sha256_verify};
use wxpay::v3::verify::answer_message;

const SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F";
const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0117000800002025045698789500001779";
const BODY: &str = r#"{"appid":"wxd930ea5d5a258f4f","mchid":"1900000001","amount":{"total":100}}"#;

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run minipay");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix} in {out}"))
}

/// A key and its certificate in `dir`, named `name.key.pem` / `name.cert.pem`.
fn key_pair(dir: &Path, name: &str, serial: &str) -> (openssl::pkey::PKey<openssl::pkey::Private>, String, String) {
    let key = keygen::rsa_2048().unwrap();
    let now = chrono::Utc::now().timestamp();
    let cert = keygen::certificate(&key, serial, name, now - 86_400, now + 86_400).unwrap();
    let key_path = dir.join(format!("{name}.key.pem"));
    let cert_path = dir.join(format!("{name}.cert.pem"));
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    (key, key_path.display().to_string(), cert_path.display().to_string())
}

#[test]
fn sign_v3_prints_the_five_lines_and_a_header_wechat_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, key_path, cert_path) = key_pair(dir.path(), "merchant", SERIAL);
    let path = "/v3/pay/transactions/jsapi";
    let fixed = [
        "sign-v3",
        "--method",
        "POST",
        "--path",
        path,
        "--key-file",
        &key_path,
        "--mchid",
        "1900000001",
        "--serial",
        SERIAL,
        "--timestamp",
        "1554208460",
        "--nonce",
        "593BEC0C930BF1AFEB40B4A08C8FB242",
    ];
    let out = run(&fixed, BODY);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let expected = format!("POST\\n{path}\\n1554208460\\n593BEC0C930BF1AFEB40B4A08C8FB242\\n{BODY}\\n");
    assert_eq!(line(&text, "string_to_sign="), expected);
    let signature = line(&text, "signature=");
    let message = format!("POST\n{path}\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{BODY}\n");
    let public = openssl::pkey::PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
    assert!(rsa_sha256_verify(&public, message.as_bytes(), signature), "the signature is over those bytes");
    assert!(!text.contains("PRIVATE KEY"), "the key never reaches the output");

    // A header made now passes WeChat's check; the same header over another body does not.
    let now = [
        "sign-v3",
        "--method",
        "POST",
        "--path",
        path,
        "--key-file",
        &key_path,
        "--mchid",
        "1900000001",
        "--serial",
        SERIAL,
    ];
    let header = line(&stdout(&run(&now, BODY)), "Authorization: ").to_owned();
    assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\""), "{header}");
    let check =
        ["sign-v3", "--method", "POST", "--path", path, "--authorization", &header, "--merchant-cert", &cert_path];
    let ok = run(&check, BODY);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("result=MATCH"));
    let tampered = run(&check, &BODY.replace("100", "1"));
    assert_eq!(tampered.status.code(), Some(1));
    assert!(stdout(&tampered).contains("result=MISMATCH"), "{}", stdout(&tampered));
    // The fixed 2019 timestamp is far outside WeChat's ±300 s window.
    let old = line(&text, "Authorization: ").to_owned();
    let stale = run(
        &["sign-v3", "--method", "POST", "--path", path, "--authorization", &old, "--merchant-cert", &cert_path],
        BODY,
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(stdout(&stale).contains("away from now"), "{}", stdout(&stale));
}

#[test]
fn verify_v3_checks_answers_like_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (platform, _, cert_path) = key_pair(dir.path(), "platform", PLATFORM_SERIAL);
    let (wechat_key, _, _) = key_pair(dir.path(), "wechat", "01");
    let public_path = dir.path().join("pub_key.pem");
    std::fs::write(&public_path, wechat_key.public_key_to_pem().unwrap()).unwrap();
    let public_path = public_path.display().to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let nonce = "fdasflkja484w";
    let signed_by = |k: &openssl::pkey::PKey<openssl::pkey::Private>| {
        rsa_sha256_sign(k, &answer_message(&ts, nonce, BODY.as_bytes()))
    };
    let verify = |signature: &str, serial: &str| {
        run(
            &[
                "verify-v3",
                "--timestamp",
                &ts,
                "--nonce",
                nonce,
                "--signature",
                signature,
                "--serial",
                serial,
                "--platform-cert",
                &cert_path,
                "--public-key",
                &public_path,
                "--public-key-id",
                PUB_KEY_ID,
            ],
            BODY,
        )
    };
    let by_cert = verify(&signed_by(&platform), PLATFORM_SERIAL);
    assert_eq!(by_cert.status.code(), Some(0), "{}", stdout(&by_cert));
    assert_eq!(
        line(&stdout(&by_cert), "string_to_verify="),
        format!("{ts}\\n{nonce}\\n{BODY}\\n"),
        "the answer's three lines, escaped"
    );
    let by_public_key = verify(&signed_by(&wechat_key), PUB_KEY_ID);
    assert_eq!(by_public_key.status.code(), Some(0), "{}", stdout(&by_public_key));

    let crossed = verify(&signed_by(&wechat_key), PLATFORM_SERIAL);
    assert_eq!(crossed.status.code(), Some(1), "a key under another serial does not verify");
    let unknown = verify(&signed_by(&platform), "ABCDEF");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stdout(&unknown).contains("unknown Wechatpay-Serial"), "{}", stdout(&unknown));
    let probe = verify(&format!("WECHATPAY/SIGNTEST/{}", signed_by(&platform)), PLATFORM_SERIAL);
    assert_eq!(probe.status.code(), Some(1));
    assert!(stdout(&probe).contains("SIGNTEST"), "{}", stdout(&probe));
    let no_keys = run(&["verify-v3", "--timestamp", &ts, "--nonce", nonce, "--signature", "x", "--serial", "y"], BODY);
    assert_eq!(no_keys.status.code(), Some(2), "no key to verify with is bad input");
}
