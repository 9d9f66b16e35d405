//! Issue 22: a client key reads only what it owns (red packets, orders, refunds, webhooks;
//! 404 for the rest, never 403, so numbers reveal nothing), and a disabled key is refused
//! on the very next request while its webhooks are held back.

use std::time::Duration;

use minipay_e2e::{ApiResponse, Options, TestApp};
use minipay_worker::webhooks::{CLIENT_DISABLED, Delivery, WebhookSender};
use serde_json::{Value, json};

fn opts() -> Options {
    Options {
        configure: Box::new(|c| {
            c.payouts.redpack_approval_threshold = 10_000;
            c.payouts.retry_initial_ms = 1;
            c.payouts.retry_max_ms = 20;
        }),
        ..Options::default()
    }
}

async fn other_client_id(app: &TestApp) -> uuid::Uuid {
    let (id,): (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM api_clients WHERE name = 'other shop'").fetch_one(app.pool()).await.unwrap();
    id
}

fn mini_program_packet(openid: &str, owner: Option<uuid::Uuid>) -> Value {
    json!({
        "kind": "mini_program", "openid": openid, "amount": 200, "wishing": "恭喜发财",
        "act_name": "launch", "remark": "thanks", "owner_client_id": owner,
    })
}

async fn create_packet(app: &TestApp, body: &Value) -> String {
    let r = app.create_redpack(&app.keys.finance, body, &uuid::Uuid::new_v4().to_string()).await;
    r.expect(201)["mch_billno"].as_str().unwrap().to_owned()
}

#[track_caller]
fn assert_not_found(r: &ApiResponse, code: &str) {
    assert_eq!((r.status, r.code()), (404, code), "{}", r.body);
}

#[tokio::test]
async fn a_client_enumerating_red_packets_by_number_gets_404_for_packets_it_does_not_own() {
    let app = TestApp::spawn_with(opts()).await;
    let other = other_client_id(&app).await;
    let mine = create_packet(&app, &mini_program_packet("oRedPacketUser00000000000001", Some(app.client_id))).await;
    let theirs = create_packet(&app, &mini_program_packet("oRedPacketUser00000000000002", Some(other))).await;
    let unowned = create_packet(&app, &mini_program_packet("oRedPacketUser00000000000003", None)).await;
    assert!(app.send_payouts_until_settled(Duration::from_secs(15)).await, "packets not sent");
    assert_eq!(app.sandbox.redpacks().len(), 3);

    // The owner reads its packet, with what its mini-program needs to open it.
    let r = app.get_redpack(&app.keys.client, &mine).await;
    assert_eq!(r.expect(200)["owner_client_id"], app.client_id.to_string());
    assert_eq!(r.body["status"], "sent");
    assert!(r.body["send_biz_red_packet"]["paySign"].is_string(), "{}", r.body);

    // The other client walks the sequential numbers: its own packet and nothing else, and
    // someone else's packet answers exactly like a number that does not exist.
    let prefix = &mine[..mine.len() - 10];
    let seq: u64 = mine[mine.len() - 10..].parse().unwrap();
    let mut readable = Vec::new();
    for n in seq.saturating_sub(2)..seq + 6 {
        let no = format!("{prefix}{n:010}");
        let r = app.get_redpack(&app.keys.other_client, &no).await;
        match r.status {
            200 => readable.push(no),
            _ => {
                assert_not_found(&r, "redpack_not_found");
                assert_eq!(r.body["error"]["message"], "no red packet with this mch_billno");
            }
        }
    }
    assert_eq!(readable, vec![theirs.clone()], "the other client reads only its own packet");
    assert_not_found(&app.get_redpack(&app.keys.client, &theirs).await, "redpack_not_found");
    assert_not_found(&app.get_redpack(&app.keys.client, &unowned).await, "redpack_not_found");

    // Staff read every packet; listing stays a staff endpoint.
    for key in [&app.keys.viewer, &app.keys.finance, &app.keys.approver, &app.keys.admin] {
        for no in [&mine, &theirs, &unowned] {
            app.get_redpack(key, no).await.expect(200);
        }
    }
    assert_eq!(app.list_redpacks(&app.keys.client, "").await.status, 403);

    // Only an enabled client key can own a packet.
    let finance_id: (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM api_clients WHERE name = 'finance'").fetch_one(app.pool()).await.unwrap();
    for owner in [finance_id.0, uuid::Uuid::new_v4()] {
        let body = mini_program_packet("oRedPacketUser00000000000004", Some(owner));
        let r = app.create_redpack(&app.keys.finance, &body, &uuid::Uuid::new_v4().to_string()).await;
        assert_eq!((r.status, r.code()), (422, "invalid_owner"), "{}", r.body);
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn orders_refunds_and_webhooks_are_read_only_by_the_client_that_made_them() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let r = app.create_order_for(&openid, 500).await;
    let no = r.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    app.refund(&no, &json!({"out_refund_no": "scoped-1", "amount": 100})).await.expect(201);

    let other = Some(app.keys.other_client.as_str());
    assert_not_found(&app.get_as(other, &format!("/v1/orders/{no}")).await, "order_not_found");
    assert_not_found(&app.get_as(other, "/v1/refunds/scoped-1").await, "refund_not_found");
    let body = json!({"out_refund_no": "x-1", "amount": 1});
    let r = app.post_as(other, &format!("/v1/orders/{no}/refunds"), &body, None).await;
    assert_not_found(&r, "order_not_found");
    let events = app.get_as(other, "/v1/webhooks").await;
    assert_eq!(events.expect(200)["events"], json!([]), "no other client's events");
    // Payouts are staff only.
    assert_eq!(app.get_as(other, "/v1/payouts/1").await.status, 403);
    assert_eq!(app.get_as(other, "/v1/payouts").await.status, 403);

    app.get_order(&no).await.expect(200);
    app.get_refund("scoped-1").await.expect(200);
    app.get_as(Some(&app.keys.viewer), "/v1/refunds/scoped-1").await.expect(200);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_disabled_key_is_refused_once_the_disable_commits_and_its_webhooks_are_not_delivered() {
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

    // The commit notifies every api replica, which drops its cached keys: refused within
    // the notification's delivery (milliseconds; the bound here is generous for a loaded
    // test machine), never after a cache lifetime.
    let started = std::time::Instant::now();
    let refused = minipay_e2e::poll(Duration::from_secs(2), || async { app.get_order(&no).await.status == 401 }).await;
    assert!(refused, "a disabled key is refused once the disable commits");
    eprintln!("disabled key refused after {:?}", started.elapsed());
    let r = app.get_order(&no).await;
    assert_eq!(r.status, 401, "and stays refused: {}", r.body);
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
