//! The WeChat API: jscode2session with codes minted through /sandbox/jscode, cgi-bin/token
//! with expiry and invalidation, customer-service messages.

mod common;

use common::*;
use minipay_sandbox::config::DEMO_APP_SECRET;
use minipay_sandbox::{AppConfig, SandboxConfig};
use serde_json::{Value, json};

async fn get(env: &Env, path: &str) -> Value {
    env.plain.get(env.url(path)).send().await.unwrap().json().await.unwrap()
}

async fn mint(env: &Env, user: &str, appid: &str) -> String {
    let (s, v) = env.control("/sandbox/jscode", json!({"user": user, "appid": appid})).await;
    assert_eq!(s, 200, "{v}");
    v["code"].as_str().unwrap().to_owned()
}

fn login(appid: &str, secret: &str, code: &str) -> String {
    format!("/sns/jscode2session?appid={appid}&secret={secret}&js_code={code}&grant_type=authorization_code")
}

#[tokio::test]
async fn jscode2session_codes_openids_and_unionids() {
    let second = AppConfig { appid: "wx2222222222222222".into(), secret: "s2".to_owned().into(), unionid: true };
    let env = Env::with(SandboxConfig { apps: vec![AppConfig::default(), second], ..fast_config() }).await;
    let code = mint(&env, "alice", APPID).await;
    let s = get(&env, &login(APPID, DEMO_APP_SECRET, &code)).await;
    assert_eq!(s["openid"], env.sb.openid("alice", APPID));
    assert!(s["session_key"].as_str().unwrap().len() >= 20);
    assert!(s.get("errcode").is_none());
    // A code works once.
    assert_eq!(get(&env, &login(APPID, DEMO_APP_SECRET, &code)).await["errcode"], 40163);
    assert_eq!(get(&env, &login(APPID, DEMO_APP_SECRET, "made-up")).await["errcode"], 40029);
    let c2 = mint(&env, "alice", APPID).await;
    assert_eq!(get(&env, &login(APPID, "wrong", &c2)).await["errcode"], 40125);
    assert_eq!(get(&env, &login("wx0000000000000000", "x", &c2)).await["errcode"], 40013);
    // The same user: the same openid in the same app again, another openid in another app,
    // the same unionid everywhere.
    let again = get(&env, &login(APPID, DEMO_APP_SECRET, &c2)).await;
    assert_eq!(again["openid"], s["openid"]);
    let other = get(&env, &login("wx2222222222222222", "s2", &mint(&env, "alice", "wx2222222222222222").await)).await;
    assert_ne!(other["openid"], s["openid"]);
    assert_eq!(other["unionid"], s["unionid"]);
    let bob = get(&env, &login(APPID, DEMO_APP_SECRET, &mint(&env, "bob", APPID).await)).await;
    assert_ne!(bob["unionid"], s["unionid"]);
    // The library API mints codes too.
    let lib_code = env.sb.mint_code("carol", APPID).unwrap();
    assert_eq!(get(&env, &login(APPID, DEMO_APP_SECRET, &lib_code)).await["openid"], env.sb.openid("carol", APPID));
    assert!(env.sb.mint_code("carol", "wx0000000000000000").is_none());
    // Codes expire after five minutes of sandbox time.
    let late = mint(&env, "alice", APPID).await;
    env.control("/sandbox/clock", json!({"advance_secs": 301})).await;
    assert_eq!(get(&env, &login(APPID, DEMO_APP_SECRET, &late)).await["errcode"], 40029);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn token_expiry_invalidation_and_messages() {
    let env = Env::start().await;
    let tok = |env: &Env| {
        let url =
            env.url(&format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={DEMO_APP_SECRET}"));
        let c = env.plain.clone();
        async move { c.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let t = tok(&env).await;
    assert_eq!(t["expires_in"], 7200);
    let token = t["access_token"].as_str().unwrap().to_owned();
    let send = |token: String| {
        let url = env.url(&format!("/cgi-bin/message/custom/send?access_token={token}"));
        let c = env.plain.clone();
        async move {
            let body = json!({"touser": "oABC", "msgtype": "text", "text": {"content": "您的退款已到账"}});
            c.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    // The token is accepted; "oABC" is nobody WeChat knows in this app (the window rules
    // and successful sends are in tests/platform.rs and the end-to-end tests).
    assert_eq!(send(token.clone()).await["errcode"], 40003);
    assert_eq!(env.get_json("/sandbox/messages").await, json!([]));
    assert_eq!(send("bogus".into()).await["errcode"], 40001);

    let (s, v) = env.control("/sandbox/tokens/invalidate", json!({})).await;
    assert_eq!((s, v["invalidated"].as_i64()), (200, Some(1)));
    assert_eq!(send(token).await["errcode"], 40001);

    let fresh = tok(&env).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(send(fresh.clone()).await["errcode"], 40003);
    env.control("/sandbox/clock", json!({"advance_secs": 7200})).await;
    assert_eq!(send(fresh).await["errcode"], 42001);

    let bad = env.plain.get(env.url("/cgi-bin/token?grant_type=client_credential&appid=wxd930ea5d5a258f4f&secret=no"));
    assert_eq!(bad.send().await.unwrap().json::<Value>().await.unwrap()["errcode"], 40125);
    let (s, _) = env.control("/sandbox/faults", json!({"path": "/cgi-bin/token", "kind": "http500", "times": 1})).await;
    assert_eq!(s, 200);
    let url = env.url(&format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={DEMO_APP_SECRET}"));
    assert_eq!(env.plain.get(&url).send().await.unwrap().status(), 500);
    assert_eq!(env.plain.get(&url).send().await.unwrap().status(), 200);
    env.sb.shutdown().await;
}
