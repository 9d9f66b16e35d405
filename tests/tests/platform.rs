//! Issue 18 end to end against the sandbox: the shared access token, customer-service
//! pushes in every format and mode, customer-service sends and their window, phone numbers,
//! UnionID lookups and session keys kept sealed.

use std::time::{Duration, Instant};

use minipay_config::platform::{PushConfig, SealKey};
use minipay_e2e::{DEMO_APPID, DEMO_MCH_ID, Options, TestApp, poll};
use minipay_sandbox::{AppConfig, SandboxConfig};
use secrecy::SecretString;
use serde_json::{Value, json};

const PUSH_TOKEN: &str = "minipayPushToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const SEAL: [u8; 32] = [7; 32];
const SECOND_APPID: &str = "wx2222222222222222";

fn options() -> Options {
    Options {
        configure: Box::new(|c| {
            c.platform.token_refresh_interval_secs = 0;
            c.platform.session_key_encryption_key = Some(SealKey(SEAL));
            c.platform.push = vec![PushConfig {
                appid: DEMO_APPID.into(),
                token: SecretString::from(PUSH_TOKEN.to_owned()),
                encoding_aes_key: Some(SecretString::from(AES_KEY.to_owned())),
                transfer_to_customer_service: false,
            }];
        }),
        ..Options::default()
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(options()).await
}

async fn stable_calls(app: &TestApp) -> Vec<Value> {
    app.sandbox_get("/sandbox/stable-token-calls").await.as_array().cloned().unwrap_or_default()
}

/// Saves the sandbox's push settings for the demo app (the console's URL check included).
async fn configure_push(app: &TestApp, format: &str, mode: &str) {
    let (s, v) = app
        .sandbox_post(
            "/sandbox/cs/push-config",
            &json!({"url": app.push_url(DEMO_APPID), "token": PUSH_TOKEN, "encoding_aes_key": AES_KEY,
                    "format": format, "mode": mode}),
        )
        .await;
    assert_eq!((s, v["verified"].as_bool()), (200, Some(true)), "{v}");
}

/// A user writes to the app; returns the sandbox's delivery report.
async fn user_writes(app: &TestApp, body: Value) -> Value {
    let (s, v) = app.sandbox_post("/sandbox/cs/push", &body).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn received_count(app: &TestApp) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM cs_messages WHERE direction = 'in'").fetch_one(app.pool()).await.unwrap();
    n
}

#[tokio::test]
async fn one_upstream_token_call_shared_by_two_api_instances() {
    let app = spawn().await;
    // A second replica on the same database.
    let second = minipay_api::Application::build(app.config.clone(), app.pool().clone()).await.unwrap();
    let second_url = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let get = |base: String| {
        let (http, key) = (app.http.clone(), app.keys.internal.clone());
        async move {
            let r = http
                .get(format!("{base}/v1/wechat/access-token?appid={DEMO_APPID}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["cache-control"], "no-store");
            r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
        }
    };
    let mut calls = Vec::new();
    for i in 0..8 {
        calls.push(get(if i % 2 == 0 { app.api_url.clone() } else { second_url.clone() }));
    }
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]), "every caller got the same token");
    let upstream = stable_calls(&app).await;
    assert_eq!(upstream.len(), 1, "one stable_token call in all: {upstream:?}");
    assert_eq!(upstream[0]["force_refresh"], false);
    let (fetches,): (i64,) = sqlx::query_as("SELECT fetches FROM wechat_access_tokens WHERE appid = $1")
        .bind(DEMO_APPID)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(fetches, 1);

    // Only the internal role (and admin) may read it.
    assert_eq!(app.access_token_as(&app.keys.client, DEMO_APPID).await.expect(403)["error"]["code"], "forbidden");
    assert_eq!(app.access_token_as(&app.keys.finance, DEMO_APPID).await.status, 403);
    assert_eq!(app.access_token_as(&app.keys.internal, "wx0000000000000000").await.code(), "unknown_appid");
    handle.stop(true).await;
    app.shutdown().await;
}

#[tokio::test]
async fn invalidation_is_recovered_with_one_normal_refresh_never_a_forced_one() {
    let app = spawn().await;
    let second = minipay_api::Application::build(app.config.clone(), app.pool().clone()).await.unwrap();
    let second_url = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let openid = app.login("demo-user").await;
    let first = app.access_token_as(&app.keys.internal, DEMO_APPID).await.expect(200)["access_token"].clone();
    // The second replica caches the same token.
    let r: Value = app
        .http
        .get(format!("{second_url}/v1/wechat/access-token?appid={DEMO_APPID}"))
        .bearer_auth(&app.keys.internal)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["access_token"], first);
    assert_eq!(stable_calls(&app).await.len(), 1);

    // WeChat now answers 40001 for that token (as after a forced refresh elsewhere).
    let (s, v) = app.sandbox_post("/sandbox/tokens/invalidate", &json!({})).await;
    assert_eq!((s, v["invalidated"].as_i64().map(|n| n >= 1)), (200, Some(true)));

    let (_, code) = app.sandbox_post("/sandbox/phonecode", &json!({"user": "demo-user"})).await;
    let r = app.phone_number(&json!({"code": code["code"], "openid": openid})).await;
    assert_eq!(r.expect(200)["phone_number"], "13800138000");
    let calls = stable_calls(&app).await;
    assert_eq!(calls.len(), 2, "one refresh after 40001: {calls:?}");
    assert!(calls.iter().all(|c| c["force_refresh"] == false), "never forced: {calls:?}");
    let fresh = app.access_token_as(&app.keys.internal, DEMO_APPID).await.expect(200)["access_token"].clone();
    assert_ne!(fresh, first);

    // The other replica still holds the old token: its first call fails with 40001, it
    // finds the newer token in the database and retries — no call to stable_token.
    let (_, code) = app.sandbox_post("/sandbox/phonecode", &json!({"user": "demo-user"})).await;
    let r: Value = app
        .http
        .post(format!("{second_url}/v1/users/phone-number"))
        .bearer_auth(&app.keys.client)
        .json(&json!({"code": code["code"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["pure_phone_number"], "13800138000", "{r}");
    assert_eq!(stable_calls(&app).await.len(), 2, "the second replica reused the stored token");
    handle.stop(true).await;
    app.shutdown().await;
}

#[tokio::test]
async fn push_url_verification() {
    let app = spawn().await;
    // The sandbox's console check: GET with signature and echostr, echo expected.
    configure_push(&app, "xml", "safe").await;
    // A wrong token: the console refuses the URL.
    let (s, v) = app
        .sandbox_post(
            "/sandbox/cs/push-config",
            &json!({"url": app.push_url(DEMO_APPID), "token": "another-token", "format": "json", "mode": "plain"}),
        )
        .await;
    assert_eq!((s, v["verified"].as_bool(), v["http_status"].as_u64()), (200, Some(false), Some(401)), "{v}");
    // By hand: the echo is verbatim.
    let (ts, nonce, echo) = ("1700000000", "n0nce", "echo-1234567890");
    let sig = wxpay::push::url_signature(&SecretString::from(PUSH_TOKEN.to_owned()), ts, nonce);
    let url = format!("{}?signature={sig}&timestamp={ts}&nonce={nonce}&echostr={echo}", app.push_url(DEMO_APPID));
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), echo);
    let r = app.http.get(url.replace(&sig, &"0".repeat(40))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.http.get(format!("{}?echostr=x", app.push_url("wx0000000000000000"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn receive_in_every_format_and_mode_and_refuse_bad_ones() {
    let app = spawn().await;
    let mut expected = 0;
    for (format, mode) in
        [("xml", "plain"), ("json", "plain"), ("xml", "safe"), ("json", "safe"), ("xml", "compat"), ("json", "compat")]
    {
        configure_push(&app, format, mode).await;
        let content = format!("你好 {format} {mode}");
        let v = user_writes(&app, json!({"user": "alice", "content": content})).await;
        assert_eq!(v["delivered"], true, "{format}/{mode}: {v}");
        assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(v["attempts"][0]["reply"], "success");
        expected += 1;
        assert_eq!(received_count(&app).await, expected, "{format}/{mode} stored");
        let (body, safe): (Value, bool) =
            sqlx::query_as("SELECT body, safe_mode FROM cs_messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
                .fetch_one(app.pool())
                .await
                .unwrap();
        assert_eq!(body["Content"], content.as_str());
        assert_eq!(safe, mode != "plain");

        // Refused, nothing stored: a bad signature (msg_signature in safe/compat mode) ...
        let v = user_writes(&app, json!({"user": "alice", "content": "forged", "bad_signature": true})).await;
        assert_eq!(v["delivered"], false, "{format}/{mode}: {v}");
        assert_eq!(v["attempts"][0]["http_status"], 401);
        // ... and in safe/compat mode a ciphertext for another app.
        if mode != "plain" {
            let v = user_writes(&app, json!({"user": "alice", "content": "x", "wrong_appid": SECOND_APPID})).await;
            assert_eq!(v["attempts"][0]["http_status"], 400, "{v}");
        }
        assert_eq!(received_count(&app).await, expected, "{format}/{mode}: nothing stored for refused pushes");
    }

    // WeChat's retries are stored once: by MsgId, and events by FromUserName + CreateTime.
    configure_push(&app, "json", "safe").await;
    for _ in 0..2 {
        user_writes(&app, json!({"user": "bob", "content": "again", "msg_id": "987654321"})).await;
        user_writes(
            &app,
            json!({"user": "bob", "msgtype": "event", "event": "user_enter_tempsession", "create_time": 1_760_000_000}),
        )
        .await;
    }
    assert_eq!(received_count(&app).await, expected + 2);

    // Each stored message is a webhook to the client backend.
    let (webhooks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_outbox WHERE event_type = 'cs_message.received'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(webhooks, expected + 2, "one webhook per stored message, to the one client with a webhook URL");
    // And the conversation is listed.
    let bob = app.sandbox_get("/sandbox/openid?user=bob").await["openid"].as_str().unwrap().to_owned();
    let list = app.cs_messages(&bob).await;
    assert_eq!(list.expect(200)["messages"].as_array().unwrap().len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn answers_within_five_seconds_while_the_database_is_slow() {
    let app = spawn().await;
    configure_push(&app, "xml", "safe").await;
    // Someone holds a lock on the messages table: inserts wait.
    let mut blocker = app.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE cs_messages IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let started = Instant::now();
    let v = user_writes(&app, json!({"user": "carol", "content": "还在吗"})).await;
    let took = started.elapsed();
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "no WeChat retry was needed: {v}");
    assert_eq!(v["attempts"][0]["reply"], "success");
    let elapsed = v["attempts"][0]["elapsed_ms"].as_u64().unwrap();
    assert!(elapsed < 5000 && took < Duration::from_secs(5), "answered in {elapsed} ms");
    assert!(elapsed >= 2500, "the answer waited for the store up to the 3 s budget ({elapsed} ms)");
    // The store finishes once the database is back.
    blocker.rollback().await.unwrap();
    assert!(poll(Duration::from_secs(10), || async { received_count(&app).await == 1 }).await, "stored afterwards");
    app.shutdown().await;
}

/// Uploads an image through the send path and returns its media_id (as the sandbox holds it).
async fn last_media_id(app: &TestApp) -> String {
    let media = app.sandbox_get("/sandbox/media").await;
    media.as_array().unwrap().last().unwrap()["media_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_send_type_reaches_the_user() {
    let app = spawn().await;
    configure_push(&app, "json", "safe").await;
    let openid = app.login("dave").await;
    user_writes(&app, json!({"user": "dave", "content": "客服在吗"})).await;

    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n not really a png");
    let sends = [
        json!({"openid": openid, "msgtype": "text", "text": {"content": "您好，请问有什么可以帮您？"}}),
        json!({"openid": openid, "msgtype": "image", "image": {"data_base64": png, "content_type": "image/png", "filename": "a.png"}}),
        json!({"openid": openid, "msgtype": "link", "link": {"title": "退款进度", "description": "点击查看",
               "url": "https://shop.example.com/refunds/1", "thumb_url": "https://shop.example.com/t.png"}}),
    ];
    for s in &sends {
        let r = app.send_cs_message(s).await;
        assert_eq!(r.expect(200)["status"], "sent");
    }
    let media_id = last_media_id(&app).await;
    let r = app.send_cs_message(&json!({"openid": openid, "msgtype": "image", "image": {"media_id": media_id}})).await;
    r.expect(200);
    let r = app
        .send_cs_message(&json!({"openid": openid, "msgtype": "miniprogrampage", "miniprogrampage":
            {"title": "订单详情", "pagepath": "pages/order/detail?id=1", "thumb_media_id": media_id}}))
        .await;
    assert_eq!(r.expect(200)["window"]["sent_since"], 5);
    let got = app.sandbox_get("/sandbox/messages").await;
    let types: Vec<&str> = got.as_array().unwrap().iter().map(|m| m["msgtype"].as_str().unwrap()).collect();
    assert_eq!(types, ["text", "image", "link", "image", "miniprogrampage"]);
    assert_eq!(got[0]["touser"], openid.as_str());
    assert_eq!(got[0]["body"]["text"]["content"], "您好，请问有什么可以帮您？");
    // Bad requests never reach WeChat.
    let r = app.send_cs_message(&json!({"openid": openid, "msgtype": "voice"})).await;
    assert_eq!(r.code(), "invalid_message");
    let r = app.send_cs_message(&json!({"openid": openid, "msgtype": "link", "link": {"title": "x"}})).await;
    assert_eq!(r.code(), "invalid_message");
    app.shutdown().await;
}

#[tokio::test]
async fn sends_outside_the_window_report_wechats_errors() {
    let app = spawn().await;
    configure_push(&app, "xml", "plain").await;
    let openid = app.login("erin").await;
    let text = |n: usize| json!({"openid": openid, "msgtype": "text", "text": {"content": format!("消息 {n}")}});
    // The user never wrote: 45015.
    let r = app.send_cs_message(&text(0)).await;
    assert_eq!((r.status, r.code()), (409, "cs_window_closed"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("45015"));
    // After the user writes: five answers, the sixth is 45047.
    user_writes(&app, json!({"user": "erin", "content": "在吗"})).await;
    for n in 1..=5 {
        app.send_cs_message(&text(n)).await.expect(200);
    }
    let r = app.send_cs_message(&text(6)).await;
    assert_eq!((r.status, r.code()), (409, "cs_message_limit"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("45047"));
    // The user writes again, then 48 hours pass on WeChat's clock: 45015 again.
    user_writes(&app, json!({"user": "erin", "content": "还有问题"})).await;
    app.send_cs_message(&text(7)).await.expect(200);
    app.sandbox_post("/sandbox/clock", &json!({"advance_secs": 48 * 3600 + 1})).await;
    let r = app.send_cs_message(&text(8)).await;
    assert_eq!(r.code(), "cs_window_closed");
    // An openid WeChat does not know in this app: 40003.
    let stranger = app.sandbox_get(&format!("/sandbox/openid?user=frank&appid={DEMO_APPID}")).await;
    let r =
        app.send_cs_message(&json!({"openid": stranger["openid"], "msgtype": "text", "text": {"content": "hi"}})).await;
    assert_eq!(r.code(), "invalid_openid");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("40003"));
    // Failed sends are recorded with WeChat's errcode.
    let (failed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM cs_messages WHERE direction = 'out' AND status = 'failed' AND errcode IS NOT NULL",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(failed, 4);
    app.shutdown().await;
}

#[tokio::test]
async fn phone_number_codes_are_single_use() {
    let app = spawn().await;
    let openid = app.login("demo-user").await;
    let (_, minted) = app.sandbox_post("/sandbox/phonecode", &json!({"user": "demo-user"})).await;
    let code = minted["code"].as_str().unwrap().to_owned();
    let r = app.phone_number(&json!({"code": code, "openid": openid})).await;
    let b = r.expect(200);
    assert_eq!(
        (b["phone_number"].as_str(), b["country_code"].as_str(), b["cached"].as_bool()),
        (Some("13800138000"), Some("86"), Some(true))
    );
    // Cached on the user: read without a code (nothing billed).
    let cached = app.get(&format!("/v1/users/phone-number?openid={openid}")).await;
    assert_eq!(cached.expect(200)["pure_phone_number"], "13800138000");
    // The same code again: a clear error, and WeChat is not asked.
    let r = app.phone_number(&json!({"code": code, "openid": openid})).await;
    assert_eq!((r.status, r.code()), (409, "phone_code_used"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("single-use"));
    // A code WeChat refuses (40029) is also never sent twice.
    let r = app.phone_number(&json!({"code": "not-a-real-code"})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_phone_code"));
    let r = app.phone_number(&json!({"code": "not-a-real-code"})).await;
    assert_eq!(r.code(), "phone_code_used");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("40029"));
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT status, errcode FROM phone_number_requests ORDER BY id")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(rows, vec![("success".to_owned(), None), ("failed".to_owned(), Some(40029))]);
    app.shutdown().await;
}

#[tokio::test]
async fn unionid_links_a_user_across_apps_and_session_keys_stay_sealed() {
    let opts = options();
    let configure = opts.configure;
    let app = TestApp::spawn_with(Options {
        sandbox: SandboxConfig {
            apps: vec![
                AppConfig::default(),
                AppConfig { appid: SECOND_APPID.into(), secret: "second-secret".to_owned().into(), unionid: true },
            ],
            ..Options::default().sandbox
        },
        configure: Box::new(move |c| {
            configure(c);
            c.apps.push(minipay_config::AppConfig {
                appid: SECOND_APPID.into(),
                mch_id: DEMO_MCH_ID.into(),
                secret: SecretString::from("second-secret".to_owned()),
                default: false,
            });
        }),
        ..Options::default()
    })
    .await;
    let a1 = app.login("grace").await;
    let (_, code) = app.sandbox_post("/sandbox/jscode", &json!({"user": "grace", "appid": SECOND_APPID})).await;
    let s2 = app.create_session(&json!({"appid": SECOND_APPID, "code": code["code"]})).await;
    let a2 = s2.expect(200)["openid"].as_str().unwrap().to_owned();
    let unionid = s2.body["unionid"].as_str().unwrap().to_owned();
    assert_ne!(a1, a2);

    let r = app.find_users(&format!("unionid={unionid}")).await;
    let users = r.expect(200)["users"].as_array().unwrap().clone();
    let pairs: Vec<(&str, &str)> =
        users.iter().map(|u| (u["appid"].as_str().unwrap(), u["openid"].as_str().unwrap())).collect();
    assert_eq!(pairs, vec![(DEMO_APPID, a1.as_str()), (SECOND_APPID, a2.as_str())]);
    let r = app.find_users(&format!("openid={a2}&appid={SECOND_APPID}")).await;
    assert_eq!(r.expect(200)["unionid"], unionid.as_str());
    assert_eq!(r.body["users"].as_array().unwrap().len(), 2);
    assert_eq!(app.find_users("unionid=ounknown").await.status, 404);
    assert_eq!(app.find_users("").await.code(), "invalid_request");
    assert_eq!(app.get_as(Some(&app.keys.finance), &format!("/v1/users?unionid={unionid}")).await.status, 403);

    // The session key is kept sealed, bound to its user, and decrypts user data.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT session_key_enc FROM users WHERE appid = $1 AND openid = $2")
        .bind(DEMO_APPID)
        .bind(&a1)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let sealer = minipay_api::platform::Sealer::new(SealKey(SEAL));
    assert!(sealer.open(SECOND_APPID, &a1, &sealed).is_none(), "bound to (appid, openid)");
    let key = sealer.open(DEMO_APPID, &a1, &sealed).expect("opens");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_bytes = b64.decode(&key).unwrap();
    let iv = [3u8; 16];
    let data = json!({"nickName": "Grace", "watermark": {"appid": DEMO_APPID, "timestamp": 1_760_000_000}});
    let enc = openssl::symm::encrypt(
        openssl::symm::Cipher::aes_128_cbc(),
        &key_bytes,
        Some(&iv),
        data.to_string().as_bytes(),
    )
    .unwrap();
    let r = app
        .post("/v1/users/decrypt", &json!({"openid": a1, "encrypted_data": b64.encode(&enc), "iv": b64.encode(iv)}))
        .await;
    assert_eq!(r.expect(200)["nickName"], "Grace");
    // The session key is in no answer.
    assert!(!s2.body.to_string().contains("session_key"));
    app.shutdown().await;
}

#[tokio::test]
async fn messages_can_be_handed_to_the_web_customer_service_tool() {
    let opts = options();
    let configure = opts.configure;
    let app = TestApp::spawn_with(Options {
        configure: Box::new(move |c| {
            configure(c);
            c.platform.push[0].transfer_to_customer_service = true;
        }),
        ..Options::default()
    })
    .await;
    // Safe mode, JSON: the passive reply is encrypted and signed like a push.
    configure_push(&app, "json", "safe").await;
    let v = user_writes(&app, json!({"user": "henry", "content": "转人工"})).await;
    let reply: Value = serde_json::from_str(v["attempts"][0]["reply"].as_str().unwrap()).unwrap();
    let token = SecretString::from(PUSH_TOKEN.to_owned());
    let (enc, ts, nonce) =
        (reply["Encrypt"].as_str().unwrap(), reply["TimeStamp"].as_str().unwrap(), reply["Nonce"].as_str().unwrap());
    assert_eq!(reply["MsgSignature"], wxpay::push::msg_signature(&token, ts, nonce, enc));
    let cipher = wxpay::push::PushCipher::new(&SecretString::from(AES_KEY.to_owned()), DEMO_APPID).unwrap();
    let inner: Value = serde_json::from_slice(&cipher.decrypt(enc).unwrap()).unwrap();
    assert_eq!(inner["MsgType"], "transfer_customer_service");
    assert_eq!(inner["ToUserName"], v["openid"]);
    // Plain XML: the reply is the XML document itself; events are answered `success`.
    configure_push(&app, "xml", "plain").await;
    let v = user_writes(&app, json!({"user": "henry", "content": "还是转人工"})).await;
    assert!(
        v["attempts"][0]["reply"]
            .as_str()
            .unwrap()
            .contains("<MsgType><![CDATA[transfer_customer_service]]></MsgType>"),
        "{v}"
    );
    let v = user_writes(&app, json!({"user": "henry", "msgtype": "event"})).await;
    assert_eq!(v["attempts"][0]["reply"], "success");
    assert_eq!(received_count(&app).await, 3);
    app.shutdown().await;
}
