//! The order-expiry job and webhook delivery retries, driven one step at a time.

use chrono::Utc;
use minipay_e2e::{Options, Protocol, TestApp, both_protocols};
use minipay_worker::expiry::{ExpiryStep, OrderExpiry};
use minipay_worker::webhooks::{Delivery, WebhookSender};
use serde_json::json;

both_protocols!(expiry_closes_an_unpaid_order_at_wechat_and_here, a_payment_in_the_last_second_wins_over_expiry);

async fn short_order(app: &TestApp, no: &str) {
    let openid = app.login("demo-user").await;
    let body = json!({"out_trade_no": no, "openid": openid, "amount": 66, "description": "short", "expires_in": 1});
    app.create_order(&body).await.expect(201);
}

async fn expiry_closes_an_unpaid_order_at_wechat_and_here(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    short_order(&app, "exp-unpaid").await;
    let job = OrderExpiry::new(app.pool().clone(), &app.config).unwrap();
    assert_eq!(job.try_execute_at(Utc::now() - chrono::Duration::seconds(10)).await.unwrap(), None, "not due yet");
    let later = Utc::now() + chrono::Duration::seconds(5);
    let step = job.try_execute_at(later).await.unwrap();
    assert_eq!(step, Some(ExpiryStep::Closed { out_trade_no: "exp-unpaid".into() }));
    assert_eq!(app.order_status("exp-unpaid").await, "closed");
    let at_wechat = app.sandbox.orders().into_iter().find(|o| o.out_trade_no == "exp-unpaid").unwrap();
    assert!(at_wechat.closed_at.is_some(), "closed at WeChat too");
    assert_eq!(job.try_execute_at(later).await.unwrap(), None, "nothing else is due");
    app.assert_ledger_balanced().await;
}

async fn a_payment_in_the_last_second_wins_over_expiry(protocol: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(protocol)).await;
    short_order(&app, "exp-paid").await;
    // Paid just before expiry; WeChat's notification has not arrived when the job runs.
    app.pay_silently("exp-paid");
    let job = OrderExpiry::new(app.pool().clone(), &app.config).unwrap();
    let step = job.try_execute_at(Utc::now() + chrono::Duration::seconds(5)).await.unwrap();
    assert_eq!(step, Some(ExpiryStep::Paid { out_trade_no: "exp-paid".into() }));
    assert_eq!(app.order_status("exp-paid").await, "paid");
    let at_wechat = app.sandbox.orders().into_iter().find(|o| o.out_trade_no == "exp-paid").unwrap();
    assert!(at_wechat.closed_at.is_none(), "never closed at WeChat");
    let mut conn = app.pool().acquire().await.unwrap();
    let n = minipay_store::ledger::count_postings(&mut conn, minipay_store::ledger::Kind::Payment, "exp-paid")
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn webhooks_retry_with_backoff_then_die() {
    let app = TestApp::spawn_with(Options {
        webhook_status: 500,
        configure: Box::new(|c| {
            c.webhooks.max_attempts = 3;
            c.webhooks.initial_backoff_ms = 60_000;
        }),
        ..Options::default()
    })
    .await;
    let openid = app.login("demo-user").await;
    let r = app.create_order_for(&openid, 10).await;
    let no = r.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    let sender = WebhookSender::new(app.pool().clone(), app.config.webhooks.clone()).unwrap();

    let first = sender.try_execute().await.unwrap();
    assert!(matches!(first, Some(Delivery::Retry { attempts: 1, .. })), "{first:?}");
    assert_eq!(sender.try_execute().await.unwrap(), None, "backing off: not due");
    let (wait,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM webhook_outbox")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(wait > 50.0 && wait <= 60.0, "first retry after the initial backoff, got {wait}");

    let due_now = "UPDATE webhook_outbox SET next_attempt_at = now()";
    sqlx::query(due_now).execute(app.pool()).await.unwrap();
    assert!(matches!(sender.try_execute().await.unwrap(), Some(Delivery::Retry { attempts: 2, .. })));
    let (wait,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM webhook_outbox")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(wait > 110.0 && wait <= 120.0, "the delay doubles, got {wait}");
    sqlx::query(due_now).execute(app.pool()).await.unwrap();
    assert!(matches!(sender.try_execute().await.unwrap(), Some(Delivery::Dead { attempts: 3, .. })));
    let (status, attempts): (String, i64) = sqlx::query_as(
        "SELECT o.status, (SELECT count(*) FROM webhook_attempts a WHERE a.outbox_id = o.id) FROM webhook_outbox o",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("dead", 3));
    assert_eq!(app.received_webhooks().len(), 3, "every attempt reached the receiver");
    let dead = app.list_webhooks("?status=dead").await;
    let event = &dead.expect(200)["events"][0];
    assert_eq!(
        (event["attempts"].as_i64(), event["last_error"].as_str()),
        (Some(3), Some("HTTP 500 Internal Server Error"))
    );
    assert_eq!(event["recent_attempts"].as_array().unwrap().len(), 3);
    app.assert_ledger_balanced().await;
}
