//! Notifications through the whole system: an order created through the api, paid in the
//! sandbox, WeChat's notification (duplicated, replayed, forged) arriving at the notify
//! service; the order, ledger, webhook outbox and anomalies afterwards.

use minipay_e2e::{DEMO_API_KEY, TestApp};
use minipay_sandbox::{Fault, FaultKind};
use minipay_store::ledger::{self, Kind};
use minipay_store::settle;
use wxpay::sign::sign_params;
use wxpay::{ApiKey, SignType, xml};

async fn post_notification(app: &TestApp, body: String) -> (u16, String) {
    let r = app
        .http
        .post(format!("{}/wxpay/notify/pay", app.notify_url))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("notify answers");
    (r.status().as_u16(), r.text().await.expect("reply body"))
}

fn return_code(reply: &(u16, String)) -> String {
    xml::decode(reply.1.as_bytes()).expect("WeChat XML")["return_code"].clone()
}

#[tokio::test]
async fn a_paid_order_is_settled_once_however_often_wechat_notifies() {
    let app = TestApp::spawn().await;
    let openid = app.login("notify-user").await;
    let order = app.create_order_for(&openid, 1234).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();

    // WeChat's first attempt arrives twice.
    app.sandbox.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::Duplicate, times: Some(1) }).unwrap();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    assert_eq!(app.get_order(&no).await.expect(200)["status"], "paid");

    // The real notification, replayed 20 times at once: all acknowledged, nothing new.
    let body =
        app.sandbox.notifications().into_iter().find(|n| n.out_trade_no == no).expect("sandbox notification").body;
    let replies = futures::future::join_all((0..20).map(|_| post_notification(&app, body.clone()))).await;
    assert!(replies.iter().all(|r| r.0 == 200 && return_code(r) == "SUCCESS"), "{replies:?}");

    // Forged copies: refused, nothing changes.
    let mut fields = xml::decode(body.as_bytes()).unwrap();
    fields.insert("total_fee".into(), "1".into());
    assert_eq!(post_notification(&app, xml::encode(&fields)).await.0, 400);
    sign_params(&mut fields, &ApiKey::new("someone-elses-key-000000000000000"), SignType::Md5);
    assert_eq!(post_notification(&app, xml::encode(&fields)).await.0, 400);

    let mut conn = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, &no).await.unwrap(), 1);
    let (hooks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_outbox WHERE subject = $1 AND event_type = 'payment.succeeded'")
            .bind(&no)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(hooks, 1, "one webhook event for the client");
    let (deliveries,): (i64,) =
        sqlx::query_as("SELECT sum(deliveries)::bigint FROM wxpay_notifications WHERE reference = $1")
            .bind(&no)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(deliveries, 22, "2 sandbox copies + 20 replays, one raw row");
    assert!(settle::open_anomalies(&mut conn, 10).await.unwrap().is_empty());
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_genuine_notification_for_the_wrong_amount_is_an_anomaly_not_a_payment() {
    let app = TestApp::spawn().await;
    let openid = app.login("notify-user").await;
    let order = app.create_order_for(&openid, 5000).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    // The user pays; WeChat's notification is lost. Its fields, signed with the merchant key
    // but for 1 fen, then arrive: genuine (the signature verifies) but not our order.
    app.sandbox.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::Drop, times: None }).unwrap();
    app.pay(&no);
    let body = app.sandbox.notifications().into_iter().find(|n| n.out_trade_no == no).expect("notification").body;
    let mut fields = xml::decode(body.as_bytes()).unwrap();
    fields.insert("total_fee".into(), "1".into());
    fields.insert("cash_fee".into(), "1".into());
    sign_params(&mut fields, &ApiKey::new(DEMO_API_KEY), SignType::Md5);
    let reply = post_notification(&app, xml::encode(&fields)).await;
    assert_eq!((reply.0, return_code(&reply).as_str()), (200, "SUCCESS"), "acknowledged: the anomaly is recorded");
    assert_eq!(app.order_status(&no).await, "prepaid");

    let mut conn = app.pool().acquire().await.unwrap();
    let anomalies = settle::anomalies_for(&mut conn, &no).await.unwrap();
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].kind, "order_mismatch");
    assert!(anomalies[0].reason.contains("total_fee"), "{}", anomalies[0].reason);
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, &no).await.unwrap(), 0);

    // The genuine notification (WeChat's next retry) still settles it.
    let reply = post_notification(&app, body).await;
    assert_eq!(return_code(&reply), "SUCCESS");
    assert_eq!(app.order_status(&no).await, "paid");
    app.assert_ledger_balanced().await;
}
