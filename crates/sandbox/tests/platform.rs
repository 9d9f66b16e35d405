//! The platform APIs of issue 18: stable_token's normal and forced modes with their limits,
//! getuserphonenumber's single-use codes, temporary media, and the customer-service rules
//! of custom/send that need no push (unknown openid, closed window).

mod common;

use common::*;
use minipay_sandbox::config::DEMO_APP_SECRET;
use serde_json::{Value, json};

async fn stable(env: &Env, force: bool) -> Value {
    let body =
        json!({"grant_type": "client_credential", "appid": APPID, "secret": DEMO_APP_SECRET, "force_refresh": force});
    env.plain.post(env.url("/cgi-bin/stable_token")).json(&body).send().await.unwrap().json().await.unwrap()
}

/// A call that only checks the token: getuserphonenumber with a made-up code answers 40029
/// when the token is good, 40001/42001 when it is not.
async fn token_state(env: &Env, token: &str) -> i64 {
    let url = env.url(&format!("/wxa/business/getuserphonenumber?access_token={token}"));
    let v: Value = env.plain.post(url).json(&json!({"code": "none"})).send().await.unwrap().json().await.unwrap();
    v["errcode"].as_i64().unwrap()
}

async fn advance(env: &Env, secs: i64) {
    let (s, _) = env.control("/sandbox/clock", json!({"advance_secs": secs})).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn stable_token_normal_mode_returns_the_same_token_until_its_last_five_minutes() {
    let env = Env::start().await;
    env.control("/sandbox/clock", json!({"set": "2026-12-02 10:00:00"})).await;
    let a = stable(&env, false).await;
    assert!(a["expires_in"].as_i64().unwrap() > 7190, "{a}");
    let t1 = a["access_token"].as_str().unwrap().to_owned();
    assert!(t1.len() >= 64, "WeChat asks for 512 characters of room; ours are long too");
    advance(&env, 1000).await;
    let b = stable(&env, false).await;
    assert_eq!(b["access_token"], t1.as_str());
    // The sandbox clock keeps running between calls.
    assert!((6190..=6200).contains(&b["expires_in"].as_i64().unwrap()), "{b}");
    // In the last 5 minutes: a new token, the old one still valid until it expires.
    advance(&env, 6200 - 299).await;
    let c = stable(&env, false).await;
    let t2 = c["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t2, t1);
    assert!(c["expires_in"].as_i64().unwrap() > 7190, "{c}");
    assert_eq!(token_state(&env, &t1).await, 40029, "old token still valid");
    advance(&env, 300).await;
    assert_eq!(token_state(&env, &t1).await, 42001, "then it expires");
    assert_eq!(token_state(&env, &t2).await, 40029);
    // cgi-bin/token is separate: fetching one does not touch the stable token.
    let url = env.url(&format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={DEMO_APP_SECRET}"));
    env.plain.get(url).send().await.unwrap();
    assert_eq!(stable(&env, false).await["access_token"], t2.as_str());
    // Bad requests.
    let bad = json!({"grant_type": "client_credential", "appid": APPID, "secret": "nope"});
    let v: Value =
        env.plain.post(env.url("/cgi-bin/stable_token")).json(&bad).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["errcode"], 40125);
    let v: Value = env
        .plain
        .post(env.url("/cgi-bin/stable_token"))
        .body("grant_type=x")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 47001, "POST JSON only");
    let calls = env.get_json("/sandbox/stable-token-calls").await;
    // Four token answers; refused requests (bad secret, not JSON) are not in the list.
    assert_eq!(calls.as_array().unwrap().len(), 4);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn forced_refresh_invalidates_and_is_limited() {
    let env = Env::start().await;
    env.control("/sandbox/clock", json!({"set": "2026-12-02 10:00:00"})).await;
    let t1 = stable(&env, false).await["access_token"].as_str().unwrap().to_owned();
    let t2 = stable(&env, true).await["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    assert_eq!(token_state(&env, &t1).await, 40001, "a forced refresh invalidates the previous token");
    // Within 30 s of the last forced refresh nothing is refreshed.
    advance(&env, 10).await;
    assert_eq!(stable(&env, true).await["access_token"], t2.as_str());
    // Normal mode hands out the forced token.
    assert_eq!(stable(&env, false).await["access_token"], t2.as_str());
    // 20 forced refreshes a day.
    for _ in 1..20 {
        advance(&env, 31).await;
        let v = stable(&env, true).await;
        assert!(v["access_token"].is_string(), "{v}");
    }
    advance(&env, 31).await;
    assert_eq!(stable(&env, true).await["errcode"], 45009);
    // Normal mode still works; the next Beijing day forced mode works again.
    assert!(stable(&env, false).await["access_token"].is_string());
    env.control("/sandbox/clock", json!({"set": "2026-12-03 00:00:01"})).await;
    assert!(stable(&env, true).await["access_token"].is_string());
    env.sb.shutdown().await;
}

#[tokio::test]
async fn phone_number_codes_are_single_use_and_per_app() {
    let env = Env::start().await;
    let token = stable(&env, false).await["access_token"].as_str().unwrap().to_owned();
    let (s, minted) = env.control("/sandbox/phonecode", json!({"user": "demo-user"})).await;
    assert_eq!(s, 200);
    let url = env.url(&format!("/wxa/business/getuserphonenumber?access_token={token}"));
    let ask = |code: Value| {
        let (c, url) = (env.plain.clone(), url.clone());
        async move { c.post(url).json(&json!({"code": code})).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let v = ask(minted["code"].clone()).await;
    assert_eq!(v["errcode"], 0);
    assert_eq!(v["phone_info"]["purePhoneNumber"], "13800138000");
    assert_eq!(v["phone_info"]["countryCode"], "86");
    assert_eq!(v["phone_info"]["watermark"]["appid"], APPID);
    assert_eq!(ask(minted["code"].clone()).await["errcode"], 40029, "a code works once");
    // Users without a configured number get a stable derived one.
    let (_, other) = env.control("/sandbox/phonecode", json!({"user": "zoe"})).await;
    let p = ask(other["code"].clone()).await["phone_info"]["purePhoneNumber"].as_str().unwrap().to_owned();
    assert!(p.starts_with("139") && p.len() == 11, "{p}");
    assert_eq!(other["phone"], p.as_str());
    // Codes expire.
    let (_, late) = env.control("/sandbox/phonecode", json!({"user": "zoe"})).await;
    advance(&env, 301).await;
    assert_eq!(ask(late["code"].clone()).await["errcode"], 40029);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn media_upload_and_custom_send_rules() {
    let env = Env::start().await;
    let token = stable(&env, false).await["access_token"].as_str().unwrap().to_owned();
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNGDATA12\r\n--{boundary}--\r\n"
    );
    let up = |kind: &str, body: String| {
        let url = env.url(&format!("/cgi-bin/media/upload?access_token={token}&type={kind}"));
        let c = env.plain.clone();
        async move {
            c.post(url)
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = up("image", body.clone()).await;
    assert_eq!(v["type"], "image");
    let media_id = v["media_id"].as_str().unwrap().to_owned();
    assert_eq!(env.get_json("/sandbox/media").await[0]["bytes"], 9);
    assert_eq!(up("pdf", body.clone()).await["errcode"], 40004);
    assert_eq!(up("image", "no parts".into()).await["errcode"], 41005);

    // custom/send: a user the app knows (logged in) but who never wrote → 45015; the
    // checks come in WeChat's order (openid, content, window).
    let (_, login) = env.control("/sandbox/jscode", json!({"user": "alice"})).await;
    let openid = login["openid"].as_str().unwrap().to_owned();
    let send = |msg: Value| {
        let url = env.url(&format!("/cgi-bin/message/custom/send?access_token={token}"));
        let c = env.plain.clone();
        async move { c.post(url).json(&msg).send().await.unwrap().json::<Value>().await.unwrap()["errcode"].clone() }
    };
    assert_eq!(send(json!({"touser": openid, "msgtype": "text", "text": {"content": "hi"}})).await, 45015);
    assert_eq!(send(json!({"touser": openid, "msgtype": "image", "image": {"media_id": "nope"}})).await, 40007);
    assert_eq!(send(json!({"touser": openid, "msgtype": "image", "image": {"media_id": media_id}})).await, 45015);
    assert_eq!(send(json!({"touser": openid, "msgtype": "voice", "voice": {}})).await, 40008);
    assert_eq!(send(json!({"touser": "oSomebodyElse", "msgtype": "text", "text": {"content": "hi"}})).await, 40003);
    // Media expire after 3 days.
    advance(&env, 3 * 86_400).await;
    let token = stable(&env, false).await["access_token"].as_str().unwrap().to_owned();
    let url = env.url(&format!("/cgi-bin/message/custom/send?access_token={token}"));
    let msg = json!({"touser": openid, "msgtype": "image", "image": {"media_id": media_id}});
    let v: Value = env.plain.post(url).json(&msg).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["errcode"], 40007);
    env.sb.shutdown().await;
}
