//! APIv3 notifications at the notify service, attacked: each forged, replayed or
//! disagreeing delivery gets the answer WeChat's rules call for, and changes nothing; the
//! genuine one is applied once, whatever arrives after it.
//!
//! The notifications are built here as WeChat builds them (resource sealed with the APIv3
//! key, envelope signed by the WeChat Pay public key's private half, which the sandbox
//! holds), so each test changes exactly one thing.

use minipay_e2e::{DEMO_APPID, DEMO_MCH_ID, Options, Protocol, TestApp};
use serde_json::{Value, json};
use wxpay::v3::EncryptedResource;
use wxpay::v3::verify::{AnswerSigner, SIGNTEST_PREFIX};

struct Forge<'a> {
    app: &'a TestApp,
    signer: AnswerSigner,
}

impl Forge<'_> {
    fn new(app: &TestApp) -> Forge<'_> {
        let keys = app.sandbox.v3_keys(DEMO_MCH_ID).expect("v3 keys");
        Forge { app, signer: keys.public_key.clone() }
    }

    fn seal(&self, payload: &Value, aad: &str) -> EncryptedResource {
        let key = &self.app.sandbox.config().merchants[0].api_v3_key;
        EncryptedResource::seal(key, &payload.to_string(), "0123456789ab", aad, Some(aad)).unwrap()
    }

    fn envelope(&self, id: &str, event_type: &str, resource: &EncryptedResource) -> String {
        json!({
            "id": id,
            "create_time": "2026-12-02T10:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": resource,
        })
        .to_string()
    }

    /// POSTs `body` with headers signed by `signer` at `timestamp`; `edit` may change the
    /// headers after signing.
    async fn post(
        &self,
        endpoint: &str,
        body: &str,
        timestamp: i64,
        edit: impl FnOnce(&mut Vec<(String, String)>),
    ) -> (u16, String) {
        let h = self.signer.sign(body.as_bytes(), timestamp, "nonce-forge-0001");
        let mut headers: Vec<(String, String)> =
            h.pairs().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        headers.push(("Wechatpay-Signature-Type".into(), "WECHATPAY2-SHA256-RSA2048".into()));
        edit(&mut headers);
        let url = format!("{}/wxpay/v3/notify/{DEMO_MCH_ID}/{endpoint}", self.app.notify_url);
        let mut req = self.app.http.post(url).header("Content-Type", "application/json").body(body.to_owned());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("notify reachable");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    async fn post_now(&self, endpoint: &str, body: &str) -> (u16, String) {
        self.post(endpoint, body, chrono::Utc::now().timestamp(), |_| {}).await
    }
}

fn transaction(no: &str, openid: &str, total: i64) -> Value {
    json!({
        "appid": DEMO_APPID, "mchid": DEMO_MCH_ID, "out_trade_no": no,
        "transaction_id": format!("4200{}", no.len()), "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": "2026-12-02T10:00:00+08:00", "payer": {"openid": openid},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    })
}

async fn order_status(app: &TestApp, no: &str) -> String {
    let (status,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE out_trade_no = $1")
        .bind(no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    status
}

#[tokio::test]
async fn forged_stale_tampered_and_disagreeing_notifications_change_nothing() {
    let app = TestApp::spawn_with(Options::with_protocol(Protocol::V3)).await;
    let openid = app.login("demo-user").await;
    let order = app.create_order_for(&openid, 1000).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    let f = Forge::new(&app);
    let good = f.envelope("EV-1", "TRANSACTION.SUCCESS", &f.seal(&transaction(&no, &openid, 1000), "transaction"));
    let now = chrono::Utc::now().timestamp();

    // Each attack: (name, endpoint, body, timestamp, header edit, expected status).
    type Edit = Box<dyn FnOnce(&mut Vec<(String, String)>)>;
    let set = |name: &'static str, value: String| -> Edit {
        Box::new(move |h: &mut Vec<(String, String)>| {
            h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            h.push((name.to_owned(), value));
        })
    };
    let tampered_body = good.replace("EV-1", "EV-2");
    let mut ct = f.seal(&transaction(&no, &openid, 1000), "transaction");
    let flipped = if ct.ciphertext.starts_with('A') { 'B' } else { 'A' };
    ct.ciphertext.replace_range(0..1, &flipped.to_string());
    let bad_tag = f.envelope("EV-3", "TRANSACTION.SUCCESS", &ct);
    let mut wrong_aad = f.seal(&transaction(&no, &openid, 1000), "transaction");
    wrong_aad.associated_data = Some("refund".into());
    let wrong_aad = f.envelope("EV-4", "TRANSACTION.SUCCESS", &wrong_aad);
    let mut other_mch = transaction(&no, &openid, 1000);
    other_mch["mchid"] = json!("1900000999");
    let other_mch = f.envelope("EV-5", "TRANSACTION.SUCCESS", &f.seal(&other_mch, "transaction"));
    let mut other_app = transaction(&no, &openid, 1000);
    other_app["appid"] = json!("wxforeignapp00001");
    let other_app = f.envelope("EV-6", "TRANSACTION.SUCCESS", &f.seal(&other_app, "transaction"));
    let on_refund_path = good.clone();
    let oversize = format!("{},\"pad\":\"{}\"}}", &good[..good.len() - 1], "x".repeat(70 * 1024));

    let attacks: Vec<(&str, &str, String, i64, Edit, u16)> = vec![
        // Signed, then the body changed: the signature no longer covers it.
        ("bad signature", "pay", good.clone(), now, Box::new(|_: &mut Vec<(String, String)>| {}), 401),
        // The genuine signature, under a serial we do not hold.
        ("wrong serial", "pay", good.clone(), now, set("Wechatpay-Serial", "PUB_KEY_ID_0000000000UNKNOWN".into()), 401),
        // WeChat's probe: a signature starting WECHATPAY/SIGNTEST/ must be refused.
        ("signtest", "pay", good.clone(), now, set("Wechatpay-Signature", format!("{SIGNTEST_PREFIX}abc")), 401),
        ("stale timestamp", "pay", good.clone(), now - 600, Box::new(|_: &mut Vec<(String, String)>| {}), 401),
        ("tampered ciphertext", "pay", bad_tag, now, Box::new(|_: &mut Vec<(String, String)>| {}), 400),
        ("wrong associated_data", "pay", wrong_aad, now, Box::new(|_: &mut Vec<(String, String)>| {}), 400),
        ("other merchant", "pay", other_mch, now, Box::new(|_: &mut Vec<(String, String)>| {}), 400),
        ("other app", "pay", other_app, now, Box::new(|_: &mut Vec<(String, String)>| {}), 400),
        (
            "payment on the refund path",
            "refund",
            on_refund_path,
            now,
            Box::new(|_: &mut Vec<(String, String)>| {}),
            400,
        ),
        ("body over the limit", "pay", oversize, now, Box::new(|_: &mut Vec<(String, String)>| {}), 413),
    ];
    for (name, endpoint, body, ts, edit, expected) in attacks {
        let (status, reply) = if name == "bad signature" {
            // Sign the genuine body, send the tampered one.
            let h = f.signer.sign(good.as_bytes(), ts, "nonce-forge-0001");
            let url = format!("{}/wxpay/v3/notify/{DEMO_MCH_ID}/{endpoint}", app.notify_url);
            let mut req = app.http.post(url).body(tampered_body.clone());
            for (k, v) in h.pairs() {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        } else {
            f.post(endpoint, &body, ts, edit).await
        };
        assert_eq!(status, expected, "{name}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
        assert_eq!(reply["code"], "FAIL", "{name}: a v3 refusal carries code FAIL");
        assert_eq!(order_status(&app, &no).await, "prepaid", "{name} changed the order");
    }
    // Forensic rows for every refusal, none applied.
    let (rejected,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM wxpay_rejected_notifications").fetch_one(app.pool()).await.unwrap();
    assert_eq!(rejected, 10);

    // Genuine but disagreeing (amount): acknowledged, an anomaly raised, the order not paid.
    let short = f.envelope("EV-7", "TRANSACTION.SUCCESS", &f.seal(&transaction(&no, &openid, 1), "transaction"));
    assert_eq!(f.post_now("pay", &short).await.0, 204);
    assert_eq!(order_status(&app, &no).await, "prepaid");
    let (anomalies,): (i64,) = sqlx::query_as("SELECT count(*) FROM settlement_anomalies WHERE reference = $1")
        .bind(&no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(anomalies, 1);

    // The genuine one: 204 with no body, applied once; duplicates (same id, or a re-sent
    // event with a new id) change nothing.
    let (status, body) = f.post_now("pay", &good).await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(order_status(&app, &no).await, "paid");
    assert_eq!(f.post_now("pay", &good).await.0, 204);
    let again = f.envelope("EV-8", "TRANSACTION.SUCCESS", &f.seal(&transaction(&no, &openid, 1000), "transaction"));
    assert_eq!(f.post_now("pay", &again).await.0, 204);
    let mut conn = app.pool().acquire().await.unwrap();
    let wechat = minipay_store::ledger::account::wechat(DEMO_MCH_ID);
    assert_eq!(minipay_store::ledger::balance(&mut conn, &wechat).await.unwrap().get(), 1000, "paid exactly once");
    drop(conn);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn refund_notifications_out_of_order_and_repeated_apply_once() {
    let app = TestApp::spawn_with(Options::with_protocol(Protocol::V3)).await;
    let openid = app.login("demo-user").await;
    let order = app.create_order_for(&openid, 1000).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    let r = app.refund(&no, &json!({"out_refund_no": "v3-r1", "amount": 400})).await;
    r.expect(201);
    app.wait_for_refund_status("v3-r1", "succeeded").await;

    // Replays of the refund's real notification, and the payment's after the refund (out
    // of order), are acknowledged and change nothing.
    let sent = app.sandbox.notifications();
    assert!(sent.iter().all(|n| n.v3), "{sent:?}");
    let f = Forge::new(&app);
    for n in &sent {
        let endpoint = if n.kind == "pay" { "pay" } else { "refund" };
        // Re-sign now (WeChat signs each attempt; the body is the one it sent).
        assert_eq!(f.post_now(endpoint, &n.body).await.0, 204, "{}", n.body);
    }
    let got = app.get_order(&no).await;
    assert_eq!(got.expect(200)["status"], "paid");
    assert_eq!(got.body["refunded_amount"], 400);
    let mut conn = app.pool().acquire().await.unwrap();
    let wechat = minipay_store::ledger::account::wechat(DEMO_MCH_ID);
    assert_eq!(minipay_store::ledger::balance(&mut conn, &wechat).await.unwrap().get(), 600);
    drop(conn);
    // A refund event whose status disagrees with its type is refused.
    let bad = json!({
        "mchid": DEMO_MCH_ID, "out_trade_no": no, "transaction_id": "4200", "out_refund_no": "v3-r1",
        "refund_id": "5030", "refund_status": "CLOSED", "amount": {"total": 1000, "refund": 400},
    });
    let bad = f.envelope("EV-R9", "REFUND.SUCCESS", &f.seal(&bad, "refund"));
    assert_eq!(f.post_now("refund", &bad).await.0, 400);
    assert_eq!(app.get_refund("v3-r1").await.expect(200)["status"], "succeeded");
    app.assert_ledger_balanced().await;
}

/// WeChat's own probe, sent by the sandbox before the real delivery (a `WECHATPAY/SIGNTEST/`
/// signature over the same body), and duplicated / reordered deliveries: the probe is
/// refused, the payment applied once.
#[tokio::test]
async fn wechats_signtest_probe_is_refused_and_the_real_delivery_applied_once() {
    use minipay_sandbox::FaultKind;
    let app = TestApp::spawn_with(Options::with_protocol(Protocol::V3)).await;
    let openid = app.login("demo-user").await;
    let order = app.create_order_for(&openid, 700).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    app.add_fault("notify/pay", FaultKind::SignTest, 1);
    app.add_fault("notify/pay", FaultKind::Duplicate, 1);
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    // The sandbox records an attempt once our answer is back: wait for it.
    let delivered = || app.sandbox.notifications().into_iter().find(|n| n.kind == "pay" && n.status == "delivered");
    assert!(minipay_e2e::poll(std::time::Duration::from_secs(10), || async { delivered().is_some() }).await);
    let n = delivered().expect("a delivered payment notification");
    let probe = n.attempts.iter().find(|a| a.fault.as_deref() == Some("signtest")).expect("the probe was sent");
    assert!(!probe.success && probe.http_status == Some(401), "{probe:?}");
    assert!(n.attempts.iter().any(|a| a.success), "{:?}", n.attempts);
    let mut conn = app.pool().acquire().await.unwrap();
    let posted = minipay_store::ledger::count_postings(&mut conn, minipay_store::ledger::Kind::Payment, &no).await;
    assert_eq!(posted.unwrap(), 1);
    drop(conn);
    app.assert_ledger_balanced().await;
}
