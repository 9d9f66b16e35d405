//! Payments end to end: login → order → pay in the sandbox → paid (through the notify
//! service) → partial refunds → the over-refund refused → signed webhooks delivered.

use minipay_e2e::{Options, Protocol, TestApp, verify_webhook_signature};
use minipay_store::ledger::{self, account};
use serde_json::json;

fn webhook_sender(app: &TestApp) -> minipay_worker::webhooks::WebhookSender {
    minipay_worker::webhooks::WebhookSender::new(app.pool().clone(), app.config.webhooks.clone()).unwrap()
}

#[tokio::test]
async fn login_order_pay_refund_webhooks_v2() {
    login_order_pay_refund_webhooks(Protocol::V2).await;
}

#[tokio::test]
async fn login_order_pay_refund_webhooks_v3() {
    login_order_pay_refund_webhooks(Protocol::V3).await;
}

/// A merchant switching from platform certificates to the WeChat Pay public key: WeChat
/// signs each answer and notification with either, and the whole story still holds (the
/// certificate is learned from `/v3/certificates` the first time it signs).
#[tokio::test]
async fn login_order_pay_refund_webhooks_v3_switching() {
    let mut opts = Options::with_protocol(Protocol::V3);
    opts.sandbox.merchants[0].v3_mode = minipay_sandbox::V3Mode::Switching;
    story(opts).await;
}

async fn login_order_pay_refund_webhooks(protocol: Protocol) {
    story(Options::with_protocol(protocol)).await;
}

async fn story(opts: Options) {
    let protocol = opts.protocol;
    let app = TestApp::spawn_with(opts).await;
    let openid = app.login("demo-user").await;
    assert_eq!(openid, app.sandbox.openid("demo-user", minipay_e2e::DEMO_APPID));

    // Create: the pay params are signed in the merchant's protocol (v2 MD5 over the five
    // fields; v3 RSA over appId, timeStamp, nonceStr and package).
    let r = app.create_order_for(&openid, 1000).await;
    let order = r.expect(201).clone();
    assert_eq!(order["status"], "prepaid");
    assert_eq!(order["amount"], 1000);
    app.assert_pay_params(&order["pay_params"]);
    let no = order["out_trade_no"].as_str().unwrap().to_owned();

    // Pay: WeChat (the sandbox) notifies the notify service, which settles the order.
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    let got = app.get_order(&no).await;
    assert_eq!(got.expect(200)["status"], "paid");
    assert!(got.body["transaction_id"].is_string());

    // Two partial refunds, then one that would exceed what was paid.
    let r1 = app.refund(&no, &json!({"out_refund_no": "cup-1", "amount": 300, "reason": "broken cup"})).await;
    // Accepted by WeChat; with the sandbox's scaled delay the result may already be in.
    let status = r1.expect(201)["status"].as_str().unwrap().to_owned();
    assert!(status == "processing" || status == "succeeded", "{}", r1.body);
    let r2 = app.refund(&no, &json!({"out_refund_no": "cup-2", "amount": 300})).await;
    r2.expect(201);
    let r3 = app.refund(&no, &json!({"out_refund_no": "cup-3", "amount": 401})).await;
    assert_eq!(r3.status, 409, "{}", r3.body);
    assert_eq!(r3.code(), "refund_exceeds_refundable");
    for r in [&r1, &r2] {
        let refund_no = r.body["out_refund_no"].as_str().unwrap();
        app.wait_for_refund_status(refund_no, "succeeded").await;
        assert_eq!(app.get_refund(refund_no).await.expect(200)["status"], "succeeded");
    }
    let got = app.get_order(&no).await;
    assert_eq!(got.body["refunded_amount"], 600);
    assert_eq!(got.body["refunds"].as_array().unwrap().len(), 2);

    // The ledger: 1000 in, 600 out, per merchant.
    let mut conn = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut conn, &account::wechat(minipay_e2e::DEMO_MCH_ID)).await.unwrap().get(), 400);
    drop(conn);

    // Webhooks: one per event, each signed with the client's secret.
    let sent = webhook_sender(&app).run_until_idle(50).await.unwrap();
    assert_eq!(sent.len(), 3, "{sent:?}");
    let got = app.received_webhooks();
    let mut types: Vec<_> = got.iter().map(|w| w.event_type.clone().unwrap_or_default()).collect();
    types.sort();
    assert_eq!(types, ["payment.succeeded", "refund.succeeded", "refund.succeeded"]);
    for w in &got {
        let sig = w.signature.as_deref().expect("signature header");
        assert!(verify_webhook_signature(sig, &w.body, &app.webhook_secret), "bad signature on {}", w.body);
        assert!(!verify_webhook_signature(sig, &w.body, "whsec_wrong"));
    }
    let paid: serde_json::Value =
        serde_json::from_str(&got.iter().find(|w| w.event_type.as_deref() == Some("payment.succeeded")).unwrap().body)
            .unwrap();
    assert_eq!(paid["data"]["out_trade_no"], no.as_str());
    let (attempts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_attempts").fetch_one(app.pool()).await.unwrap();
    assert_eq!(attempts, 3);
    // …and visible to the client through the API.
    let listed = app.list_webhooks("").await;
    let events = listed.expect(200)["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e["status"], "delivered");
        assert_eq!(e["recent_attempts"][0]["http_status"], 200);
    }
    let others = app.get_as(Some(&app.keys.other_client), "/v1/webhooks").await;
    assert_eq!(others.expect(200)["events"].as_array().unwrap().len(), 0, "a client sees only its own events");

    // The protocol really was the merchant's: every notification the sandbox sent was of it.
    let sent = app.delivered_notifications().await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|n| n.v3 == (protocol == Protocol::V3)), "{sent:?}");
    app.assert_ledger_balanced().await;
}
