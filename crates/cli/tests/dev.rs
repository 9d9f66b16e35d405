//! `minipay dev` (one of the README's two commands): starts, serves a login + order, and
//! stops cleanly on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_starts_serves_and_stops() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .arg("dev")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start minipay dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut vars = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vars.contains_key("DATABASE_URL") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("minipay dev printed its URLs in time");
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let (api, key, sandbox) = (&vars["MINIPAY_API_URL"], &vars["MINIPAY_API_KEY"], &vars["SANDBOX_HTTP_URL"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        assert_eq!(http.get(format!("{api}/readyz")).send().await.unwrap().status(), 200);
        let code: serde_json::Value = http
            .post(format!("{sandbox}/sandbox/jscode"))
            .json(&serde_json::json!({"user": "demo-user"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session: serde_json::Value = http
            .post(format!("{api}/v1/sessions"))
            .bearer_auth(key)
            .json(&serde_json::json!({"code": code["code"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = http
            .post(format!("{api}/v1/orders"))
            .bearer_auth(key)
            .json(&serde_json::json!({"openid": session["openid"], "amount": 100, "description": "dev"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    });

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "minipay dev exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "minipay dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}
