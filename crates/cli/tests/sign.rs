//! `minipay sign` / `minipay verify` as a person runs them: XML on stdin, the key from the
//! environment or a file, never from argv.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const DOC: &str = "<xml><appid>wxd930ea5d5a258f4f</appid><mch_id>10000100</mch_id><device_info>1000</device_info><body>test</body><nonce_str>ibuaiVcKdpRxkhJA</nonce_str></xml>";
const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn run(args: &[&str], key_env: Option<&str>, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_minipay"));
    cmd.args(args).env_remove("MINIPAY_API_KEY").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(k) = key_env {
        cmd.env("MINIPAY_API_KEY", k);
    }
    let mut child = cmd.spawn().expect("run minipay");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn sign_ends_with_the_public_vector_and_masks_the_key() {
    let out = run(&["sign"], Some(KEY), DOC);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().last(), Some("sign=9A0A8659F005D6984697E2CA0A9CF3B7"));
    assert!(!text.contains(KEY), "the key never appears in the output");
    assert!(text.contains("&key=********************************"));

    let out = run(&["sign", "--sign-type", "HMAC-SHA256"], Some(KEY), DOC);
    assert_eq!(
        stdout(&out).lines().last(),
        Some("sign=6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6")
    );
}

#[test]
fn key_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apikey");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let out = run(&["sign", "--key-file", path.to_str().unwrap()], None, DOC);
    assert_eq!(stdout(&out).lines().last(), Some("sign=9A0A8659F005D6984697E2CA0A9CF3B7"));
}

#[test]
fn verify_exit_codes() {
    let signed = DOC.replace("</xml>", "<sign>9A0A8659F005D6984697E2CA0A9CF3B7</sign></xml>");
    let ok = run(&["verify"], Some(KEY), &signed);
    assert_eq!(ok.status.code(), Some(0));
    let text = stdout(&ok);
    assert!(text.contains("signed_fields=appid,body,device_info,mch_id,nonce_str"));
    assert!(text.contains("expected=9A0A8659F005D6984697E2CA0A9CF3B7"));
    assert!(text.contains("received=9A0A8659F005D6984697E2CA0A9CF3B7"));

    let tampered = signed.replace("<body>test</body>", "<body>test2</body>");
    assert_eq!(run(&["verify"], Some(KEY), &tampered).status.code(), Some(1));
    assert_eq!(run(&["verify"], Some("wrong-key"), &signed).status.code(), Some(1));

    assert_eq!(run(&["verify"], Some(KEY), DOC).status.code(), Some(2), "no sign field");
    assert_eq!(run(&["verify"], Some(KEY), "not xml").status.code(), Some(2));
    assert_eq!(run(&["verify"], None, &signed).status.code(), Some(2), "no key");
    let xxe = "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><a>&e;</a></xml>";
    assert_eq!(run(&["sign"], Some(KEY), xxe).status.code(), Some(2));
}
