//! Refunds under concurrency and when WeChat's answer is lost.

use minipay_e2e::{Options, Protocol, TestApp, both_protocols};
use minipay_sandbox::{Fault, FaultKind};
use serde_json::json;

both_protocols!(
    a_lost_refund_answer_is_resolved_by_query,
    a_refused_refund_releases_its_reservation,
    unifiedorder_unknown_is_retried_with_the_same_number,
    orderpaid_and_refresh_settle_through_orderquery,
    the_worker_follows_up_refunds_nobody_reads,
);

async fn paid_order(app: &TestApp, amount: i64) -> String {
    let openid = app.login("demo-user").await;
    let r = app.create_order_for(&openid, amount).await;
    let no = r.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    no
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_paid_amount() {
    let app = TestApp::spawn().await;
    let no = paid_order(&app, 1000).await;
    let bodies: Vec<_> = (0..12).map(|i| json!({"out_refund_no": format!("race-{i}"), "amount": 300})).collect();
    let calls = bodies.iter().map(|b| app.refund(&no, b));
    let results = futures::future::join_all(calls).await;
    let accepted = results.iter().filter(|r| r.status == 201 || r.status == 202).count();
    for r in &results {
        assert!(
            r.status == 201 || r.status == 202 || (r.status == 409 && r.code() == "refund_exceeds_refundable"),
            "{} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(accepted, 3, "exactly three refunds of 300 fit in 1000");
    let (reserved,): (i64,) = sqlx::query_as("SELECT refunded_amount FROM orders WHERE out_trade_no = $1")
        .bind(&no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reserved, 900);
    let at_wechat: i64 = app.sandbox.refunds().iter().map(|r| r.refund_fee.get()).sum();
    assert_eq!(at_wechat, 900);
    // The 100 left can still be refunded; one fen more cannot.
    let r = app.refund(&no, &json!({"out_refund_no": "rest-1", "amount": 101})).await;
    assert_eq!(r.code(), "refund_exceeds_refundable");
    app.refund(&no, &json!({"out_refund_no": "rest-2", "amount": 100})).await.expect(201);
    app.assert_ledger_balanced().await;
}

async fn a_lost_refund_answer_is_resolved_by_query(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    let no = paid_order(&app, 800).await;
    // WeChat performs every attempt but the answers never arrive.
    app.sandbox
        .add_fault(Fault { path: app.wx_path("/secapi/pay/refund"), kind: FaultKind::LostAnswer, times: None })
        .unwrap();
    // …and its refund notifications are lost too, so only a query can tell.
    app.sandbox.add_fault(Fault { path: "notify/refund".into(), kind: FaultKind::Drop, times: None }).unwrap();
    let r = app.refund(&no, &json!({"out_refund_no": "lost-1", "amount": 200})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "unknown");
    assert_eq!(app.sandbox.refunds().len(), 1, "retries reused the number: one refund at WeChat");
    // Reading the refund asks refundquery (faults still on: no answer, no notification
    // ever reaches us) and settles it through the one settle path.
    let ok = minipay_e2e::poll(std::time::Duration::from_secs(15), || async {
        app.get_refund("lost-1").await.body["status"] == "succeeded"
    })
    .await;
    assert!(ok, "the refund never settled: {}", app.get_refund("lost-1").await.body);
    let (reserved,): (i64,) = sqlx::query_as("SELECT refunded_amount FROM orders WHERE out_trade_no = $1")
        .bind(&no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reserved, 200);
    app.assert_ledger_balanced().await;
}

async fn a_refused_refund_releases_its_reservation(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    let no = paid_order(&app, 500).await;
    app.sandbox
        .add_fault(Fault {
            path: app.wx_path("/secapi/pay/refund"),
            kind: FaultKind::Error { err_code: app.wx_code("NOTENOUGH"), err_code_des: Some("余额不足".into()) },
            times: Some(1),
        })
        .unwrap();
    let r = app.refund(&no, &json!({"out_refund_no": "refused-1", "amount": 500})).await;
    assert_eq!((r.status, r.code()), (409, "refund_failed"), "{}", r.body);
    let (reserved,): (i64,) = sqlx::query_as("SELECT refunded_amount FROM orders WHERE out_trade_no = $1")
        .bind(&no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reserved, 0, "a refused refund holds nothing");
    let r = app.refund(&no, &json!({"out_refund_no": "refused-2", "amount": 500})).await;
    r.expect(201);
    app.assert_ledger_balanced().await;
}

async fn unifiedorder_unknown_is_retried_with_the_same_number(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    let openid = app.login("demo-user").await;
    app.sandbox
        .add_fault(Fault {
            path: app.wx_path("/pay/unifiedorder"),
            kind: FaultKind::Error { err_code: app.wx_code("SYSTEMERROR"), err_code_des: None },
            times: Some(2),
        })
        .unwrap();
    let r =
        app.create_order(&json!({"out_trade_no": "retry-1", "openid": openid, "amount": 90, "description": "x"})).await;
    assert_eq!(r.expect(201)["status"], "prepaid");
    assert_eq!(app.sandbox.orders().len(), 1);
    app.assert_ledger_balanced().await;
}

async fn orderpaid_and_refresh_settle_through_orderquery(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    let openid = app.login("demo-user").await;
    let body = json!({"out_trade_no": "silent-1", "openid": openid, "amount": 120, "description": "x"});
    app.create_order(&body).await.expect(201);
    // Paid, but WeChat's notification never comes: asking again learns it (ORDERPAID).
    app.pay_silently("silent-1");
    let r = app.create_order(&body).await;
    assert_eq!(r.expect(200)["status"], "paid", "{}", r.body);

    app.create_order(&json!({"out_trade_no": "silent-2", "openid": openid, "amount": 130, "description": "y"}))
        .await
        .expect(201);
    app.pay_silently("silent-2");
    assert_eq!(app.get_order("silent-2").await.body["status"], "prepaid", "not stale yet: no query");
    let r = app.get_order_refreshed("silent-2").await;
    assert_eq!(r.expect(200)["status"], "paid");
    // Closing after a silent payment: paid, never closed.
    app.create_order(&json!({"out_trade_no": "silent-3", "openid": openid, "amount": 140, "description": "z"}))
        .await
        .expect(201);
    app.pay_silently("silent-3");
    let r = app.close_order("silent-3").await;
    assert_eq!((r.status, r.code()), (409, "order_paid"));
    assert_eq!(app.order_status("silent-3").await, "paid");
    let mut conn = app.pool().acquire().await.unwrap();
    for no in ["silent-1", "silent-2", "silent-3"] {
        let n =
            minipay_store::ledger::count_postings(&mut conn, minipay_store::ledger::Kind::Payment, no).await.unwrap();
        assert_eq!(n, 1, "{no} posted once");
    }
    drop(conn);
    app.assert_ledger_balanced().await;
}

async fn the_worker_follows_up_refunds_nobody_reads(protocol: Protocol) {
    use minipay_worker::refunds::{FollowupStep, RefundFollowup};
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    let no = paid_order(&app, 900).await;
    let followup = RefundFollowup::new(app.pool().clone(), &app.config).unwrap().with_lease(0.0);

    // A refund committed as pending, then the process died before calling WeChat.
    let mut tx = app.pool().begin().await.unwrap();
    let order = minipay_store::orders::lock(&mut tx, &no).await.unwrap().unwrap();
    minipay_store::refunds::create_pending(
        &mut tx,
        &order,
        "crashed-1",
        wxpay::Fen::new(400),
        None,
        Some(app.client_id),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let step = followup.try_execute().await.unwrap().expect("a refund is due");
    assert!(
        matches!(&step, FollowupStep::Resent { out_refund_no, .. } if out_refund_no == "crashed-1"),
        "WeChat never had it, so it is sent with the same number: {step:?}"
    );
    assert_eq!(app.sandbox.refunds().len(), 1);

    // An unanswered refund with no notifications: the follow-up settles it by query.
    app.sandbox
        .add_fault(Fault { path: app.wx_path("/secapi/pay/refund"), kind: FaultKind::LostAnswer, times: None })
        .unwrap();
    app.sandbox.add_fault(Fault { path: "notify/refund".into(), kind: FaultKind::Drop, times: None }).unwrap();
    let r = app.refund(&no, &json!({"out_refund_no": "quiet-1", "amount": 100})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ok = minipay_e2e::poll(std::time::Duration::from_secs(15), || async {
        followup.run_until_idle(10).await.unwrap();
        let row: (String,) = sqlx::query_as("SELECT status FROM refunds WHERE out_refund_no = 'quiet-1'")
            .fetch_one(app.pool())
            .await
            .unwrap();
        row.0 == "succeeded"
    })
    .await;
    assert!(ok, "the follow-up never settled quiet-1");
    app.wait_for_refund_status("crashed-1", "succeeded").await;
    let (reserved,): (i64,) = sqlx::query_as("SELECT refunded_amount FROM orders WHERE out_trade_no = $1")
        .bind(&no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reserved, 500);
    app.assert_ledger_balanced().await;
}
