//! Notifications through the whole system: an order created through the api, paid in the
//! sandbox, WeChat's notification (duplicated, replayed, forged) arriving at the notify
//! service; the order, ledger, webhook outbox and anomalies afterwards.

use minipay_e2e::{DEMO_API_KEY, TestApp};
use minipay_sandbox::{Fault, FaultKind};
use minipay_store::anomalies;
use minipay_store::ledger::{self, Kind};
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
    assert!(anomalies::open_anomalies(&mut conn, 10).await.unwrap().is_empty());
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
    let anomalies = anomalies::anomalies_for(&mut conn, &no).await.unwrap();
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].kind, "order_mismatch");
    assert!(anomalies[0].reason.contains("total_fee"), "{}", anomalies[0].reason);
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, &no).await.unwrap(), 0);

    // The genuine notification (WeChat's next retry) still settles it.
    let reply = post_notification(&app, body).await;
    assert_eq!(return_code(&reply), "SUCCESS");
    assert_eq!(app.order_status(&no).await, "paid");
    app.assert_ledger_balanced().await;

    // Operators see the anomaly over the API and close it with a note.
    let open = format!("/v1/anomalies?status=open&reference={no}");
    let listed = app.get_as(Some(&app.keys.viewer), &open).await.expect(200).clone();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let a = &listed["data"][0];
    assert_eq!((a["kind"].as_str(), a["status"].as_str()), (Some("order_mismatch"), Some("open")));
    assert_eq!(a["source"], "notification");
    assert!(a["notification_id"].is_i64(), "it names the raw notification: {a}");
    let id = a["id"].as_i64().unwrap();
    let path = format!("/v1/anomalies/{id}/resolve");
    let note = serde_json::json!({"resolution": "forged amount; the genuine notification settled the order"});
    assert_eq!(app.get_as(Some(&app.keys.client), &open).await.status, 403, "a shop's key may not read them");
    assert_eq!(app.post_as(Some(&app.keys.viewer), &path, &note, None).await.status, 403, "viewers may not resolve");
    let empty = app.post_as(Some(&app.keys.finance), &path, &serde_json::json!({"resolution": "  "}), None).await;
    assert_eq!((empty.status, empty.code()), (422, "invalid_resolution"));
    let bad = app.get_as(Some(&app.keys.viewer), "/v1/anomalies?kind=nonsense").await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_kind"));
    let missing = app.post_as(Some(&app.keys.finance), "/v1/anomalies/999999/resolve", &note, None).await;
    assert_eq!((missing.status, missing.code()), (404, "anomaly_not_found"));

    let done = app.post_as(Some(&app.keys.finance), &path, &note, Some("resolve-1")).await.expect(200).clone();
    assert_eq!(done["status"], "resolved");
    assert_eq!(done["resolution"], note["resolution"]);
    assert!(done["resolved_by"].as_str().unwrap().starts_with("client:"), "{done}");
    // The same request again (same key) replays the first answer; a new one is a conflict.
    let replay = app.post_as(Some(&app.keys.finance), &path, &note, Some("resolve-1")).await;
    assert_eq!((replay.status, replay.expect(200)["status"].as_str()), (200, Some("resolved")));
    let again = app.post_as(Some(&app.keys.finance), &path, &note, Some("resolve-2")).await;
    assert_eq!((again.status, again.code()), (409, "anomaly_not_open"));
    assert!(app.get_as(Some(&app.keys.viewer), &open).await.expect(200)["data"].as_array().unwrap().is_empty());
    let one = app.get_as(Some(&app.keys.finance), &format!("/v1/anomalies/{id}")).await;
    assert_eq!(one.expect(200)["status"], "resolved");
    let (audits,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = 'anomaly.resolved' AND subject_id = $1")
            .bind(id.to_string())
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(audits, 1, "one audit line for the one resolution");
}
