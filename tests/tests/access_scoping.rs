//! Issue 22: a disabled key is refused on the very next request while its webhooks are
//! held back.

use std::time::Duration;

use minipay_e2e::TestApp;
use minipay_worker::webhooks::{CLIENT_DISABLED, Delivery, WebhookSender};

#[tokio::test]
async fn a_disabled_key_is_refused_on_the_next_request_and_its_webhooks_are_not_delivered() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let r = app.create_order_for(&openid, 300).await;
    let no = r.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    // The key has just been used (a cache, if any, holds it).
    app.get_order(&no).await.expect(200);

    // What `minipay keys disable` does.
    let mut tx = app.pool().begin().await.unwrap();
    assert!(minipay_store::clients::disable(&mut tx, app.client_id, "cli:test").await.unwrap());
    tx.commit().await.unwrap();

    let r = app.get_order(&no).await;
    assert_eq!(r.status, 401, "the very next request is refused: {}", r.body);
    assert_eq!(app.create_order_for(&openid, 300).await.status, 401);
    app.get_as(Some(&app.keys.other_client), "/v1/webhooks").await.expect(200);

    // Its webhook (order paid) is held back, not sent and not lost.
    let sender = WebhookSender::new(app.pool().clone(), app.config.webhooks.clone()).unwrap();
    let done = sender.run_until_idle(10).await.unwrap();
    assert!(matches!(done.as_slice(), [Delivery::ClientDisabled { .. }]), "{done:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.received_webhooks().is_empty(), "nothing reached the disabled client");
    let (status, last_error, attempts): (String, Option<String>, i32) =
        sqlx::query_as("SELECT status, last_error, attempts FROM webhook_outbox").fetch_one(app.pool()).await.unwrap();
    assert_eq!((status.as_str(), last_error.as_deref(), attempts), ("pending", Some(CLIENT_DISABLED), 0));

    // The disable is audited, and a second one changes nothing.
    let (actor, action): (String, String) =
        sqlx::query_as("SELECT actor, action FROM audit_log WHERE subject_type = 'api_client' AND subject_id = $1")
            .bind(app.client_id.to_string())
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("cli:test", "api_client.disabled"));
    let mut tx = app.pool().begin().await.unwrap();
    assert!(!minipay_store::clients::disable(&mut tx, app.client_id, "cli:test").await.unwrap());
    tx.commit().await.unwrap();
    app.assert_ledger_balanced().await;
}
