//! Issue 22: a retried refund must never become a second refund, and a refusal WeChat gives
//! to a re-send (after a call whose answer was lost) must not free the reserved amount
//! until refundquery has shown that WeChat holds no such refund.

use std::time::Duration;

use minipay_e2e::TestApp;
use minipay_sandbox::FaultKind;
use minipay_worker::refunds::{FollowupStep, RefundFollowup};
use serde_json::json;

const REFUND: &str = "/secapi/pay/refund";

async fn paid_order(app: &TestApp, amount: i64) -> String {
    let openid = app.login("demo-user").await;
    let r = app.create_order_for(&openid, amount).await;
    let no = r.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    no
}

async fn reserved(app: &TestApp, out_trade_no: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT refunded_amount FROM orders WHERE out_trade_no = $1")
        .bind(out_trade_no)
        .fetch_one(app.pool())
        .await
        .unwrap();
    n
}

fn refused(code: &str) -> FaultKind {
    FaultKind::Error { err_code: code.into(), err_code_des: Some("余额不足".into()) }
}

#[tokio::test]
async fn a_refund_without_a_number_or_key_is_refused_so_a_retry_cannot_refund_twice() {
    let app = TestApp::spawn().await;
    let no = paid_order(&app, 1000).await;

    // The client sends the same refund twice (a retry after a timeout), with neither
    // out_refund_no nor Idempotency-Key: no number could tie the two together.
    for _ in 0..2 {
        let r = app.refund(&no, &json!({"amount": 300})).await;
        assert_eq!((r.status, r.code()), (422, "refund_number_required"), "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert!(app.sandbox.refunds().is_empty(), "nothing reached WeChat");
    assert_eq!(reserved(&app, &no).await, 0);

    // With an Idempotency-Key the number comes from the key: the retry is the same refund.
    let first = app.refund_idempotent(&no, &json!({"amount": 300}), "refund-once").await;
    let first_no = first.expect(201)["out_refund_no"].as_str().unwrap().to_owned();
    let again = app.refund_idempotent(&no, &json!({"amount": 300}), "refund-once").await;
    assert_eq!(again.body["out_refund_no"], first_no.as_str(), "{}", again.body);

    // With an out_refund_no, a retry returns that refund.
    let body = json!({"out_refund_no": "numbered-1", "amount": 200});
    app.refund(&no, &body).await.expect(201);
    app.refund(&no, &body).await.expect(200);

    let at_wechat = app.sandbox.refunds();
    assert_eq!(at_wechat.len(), 2, "one refund per number: {at_wechat:?}");
    assert_eq!(at_wechat.iter().filter(|r| r.out_refund_no == first_no).count(), 1, "exactly one keyed refund");
    assert_eq!(reserved(&app, &no).await, 500);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_refusal_after_a_lost_answer_keeps_the_reservation_until_refundquery_settles_it() {
    let app = TestApp::spawn().await;
    let no = paid_order(&app, 1000).await;
    // The first call is done by WeChat but its answer is lost; the re-send is answered with
    // a "final" code. Refund notifications are lost too: only refundquery can tell.
    app.add_fault(REFUND, FaultKind::LostAnswer, 1);
    app.add_fault(REFUND, refused("NOTENOUGH"), 1);
    app.add_fault("notify/refund", FaultKind::Drop, 1000);

    let r = app.refund(&no, &json!({"out_refund_no": "lost-then-refused", "amount": 600})).await;
    assert_eq!(r.status, 202, "a refusal on a re-send is not final: {}", r.body);
    assert_eq!(r.body["status"], "unknown");
    assert_eq!(app.sandbox.refunds().len(), 1, "WeChat did the first call");
    assert_eq!(reserved(&app, &no).await, 600, "the amount stays reserved");
    // What is reserved cannot be refunded again meanwhile.
    let r = app.refund(&no, &json!({"out_refund_no": "second", "amount": 500})).await;
    assert_eq!((r.status, r.code()), (409, "refund_exceeds_refundable"), "{}", r.body);

    // The worker asks refundquery, which finds the refund: it settles as succeeded.
    let followup = RefundFollowup::new(app.pool().clone(), &app.config).unwrap().with_lease(0.0);
    let ok = minipay_e2e::poll(Duration::from_secs(15), || async {
        followup.run_until_idle(10).await.unwrap();
        app.get_refund("lost-then-refused").await.body["status"] == "succeeded"
    })
    .await;
    assert!(ok, "never settled: {}", app.get_refund("lost-then-refused").await.body);
    assert_eq!(app.sandbox.refunds().len(), 1, "exactly one refund at WeChat");
    assert_eq!(reserved(&app, &no).await, 600);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_refusal_after_an_unclear_call_is_final_only_once_refundquery_finds_nothing() {
    let app = TestApp::spawn().await;
    let no = paid_order(&app, 1000).await;
    // The first call never reaches WeChat (connection dropped: nothing happens), the
    // re-send is refused, and so is the send after the query.
    app.add_fault(REFUND, FaultKind::Drop, 1);
    app.add_fault(REFUND, refused("NOTENOUGH"), 2);

    let r = app.refund(&no, &json!({"out_refund_no": "dropped-then-refused", "amount": 400})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "unknown");
    assert_eq!(reserved(&app, &no).await, 400, "kept until a query says WeChat has nothing");

    // refundquery: REFUNDNOTEXIST, so the refund is sent again as a first call; that
    // refusal is final and only now is the reservation released.
    let followup = RefundFollowup::new(app.pool().clone(), &app.config).unwrap().with_lease(0.0);
    let step = followup.try_execute().await.unwrap().expect("the unknown refund is due");
    assert!(matches!(&step, FollowupStep::Resent { .. }), "{step:?}");
    let got = app.get_refund("dropped-then-refused").await;
    assert_eq!(got.expect(200)["status"], "failed");
    assert_eq!(got.body["failure_code"], "NOTENOUGH");
    assert_eq!(reserved(&app, &no).await, 0);
    assert!(app.sandbox.refunds().is_empty());

    // The amount is free again.
    app.refund(&no, &json!({"out_refund_no": "after-refusal", "amount": 1000})).await.expect(201);
    assert_eq!(app.sandbox.refunds().len(), 1, "exactly one refund at WeChat");
    app.assert_ledger_balanced().await;
}
