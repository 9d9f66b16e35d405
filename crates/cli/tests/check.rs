//! `minipay check-cert` and `minipay check-domains` as a person runs them: the report, the
//! exit code, `--json`. check-cert runs against the sandbox's own HTTPS listener (its CA
//! is generated at start-up), the rule-by-rule cases are in crates/tlscheck/tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use minipay_sandbox::{Sandbox, SandboxConfig};

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

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn run_owned(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs, "")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn check_cert_against_the_sandbox() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let port = sb.https_url().rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sb.ca_pem()).unwrap();
    let target = format!("localhost:{port}");
    let args = owned(&["check-cert", &target, "--ca", ca.to_str().unwrap(), "--connect", "127.0.0.1"]);
    let out = tokio::task::spawn_blocking(move || run_owned(&args)).await.unwrap();
    let report = text(&out.stdout);
    for rule in [
        "tls-versions",
        "chain-trusted",
        "hostname",
        "validity",
        "self-signed",
        "ats-signature",
        "ats-key",
        "ats-forward-secrecy",
        "distrusted-issuer",
    ] {
        assert!(report.lines().any(|l| l.contains(rule)), "no line for {rule}: {report}");
    }
    assert!(report.lines().any(|l| l.starts_with("pass") && l.contains("chain-trusted")), "{report}");
    // The sandbox CA's certificate is valid for days only → the validity rule warns, so
    // the exit code is not 0 (0 only when every rule passes).
    let all_pass = report.lines().skip(1).all(|l| l.starts_with("pass"));
    assert_eq!(out.status.success(), all_pass, "{report}");

    // Without the CA: untrusted, exit 1; --json is machine-readable.
    let args = owned(&["check-cert", &target, "--connect", "127.0.0.1", "--json"]);
    let out = tokio::task::spawn_blocking(move || run_owned(&args)).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trust = v["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "chain-trusted").unwrap().clone();
    assert_eq!(trust["level"], "fail");
    sb.shutdown().await;

    // Nothing listening: exit 2.
    let out = run(&["check-cert", "127.0.0.1:1", "--timeout", "2"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn check_domains_lines_and_exit_codes() {
    let good = r#"{"request": ["https://api.example.com"], "socket": ["wss://ws.example.com"]}"#;
    let out = run(&["check-domains", "-"], good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let bad = r#"{"requestdomain": ["http://api.example.com", "https://api.weixin.qq.com", "https://10.0.0.1:8443"],
                 "downloadFile": ["https://localhost"]}"#;
    let out = run(&["check-domains", "-"], bad);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for rule in ["scheme", "forbidden-domain", "port", "ip-address", "localhost"] {
        assert!(lines.iter().any(|l| l.contains(&format!(": {rule}: "))), "{rule}: {lines:?}");
    }
    let out = run(&["check-domains", "-", "--json"], bad);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    let out = run(&["check-domains", "-"], "{\"requests\": []}");
    assert_eq!(out.status.code(), Some(2));
}
