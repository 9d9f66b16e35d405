//! Idempotency-Key on every POST: a repeat replays the first response, a different request
//! under the same key is refused, concurrent duplicates execute once.

use minipay_e2e::TestApp;
use serde_json::json;

#[tokio::test]
async fn every_post_replays_its_first_response() {
    let app = TestApp::spawn().await;
    let key = app.keys.client.clone();

    // Session: the login code is single-use at WeChat, so only a replay can answer twice.
    let code = app.login_code("demo-user").await;
    let first = app.post_as(Some(&key), "/v1/sessions", &json!({"code": code}), Some("s-1")).await;
    let openid = first.expect(200)["openid"].as_str().unwrap().to_owned();
    let again = app.post_as(Some(&key), "/v1/sessions", &json!({"code": code}), Some("s-1")).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");

    // Order: one order, one prepay, the same pay_params.
    let body = json!({"openid": openid, "amount": 500, "description": "idem"});
    let first = app.create_order_idempotent(&body, "o-1").await;
    first.expect(201);
    let again = app.create_order_idempotent(&body, "o-1").await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 1);
    let reused =
        app.create_order_idempotent(&json!({"openid": openid, "amount": 501, "description": "idem"}), "o-1").await;
    assert_eq!((reused.status, reused.code()), (409, "idempotency_key_reused"));
    // The key is per client: another client's identical key is its own.
    let other = app.post_as(Some(&app.keys.other_client), "/v1/orders", &body, Some("o-1")).await;
    other.expect(201);
    assert_ne!(other.body["out_trade_no"], first.body["out_trade_no"]);

    // Refund: once, even when repeated.
    let no = first.body["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    let r1 = app.refund_idempotent(&no, &json!({"amount": 100}), "r-1").await;
    assert_eq!(r1.status, 201, "{}", r1.body);
    let r2 = app.refund_idempotent(&no, &json!({"amount": 100}), "r-1").await;
    assert_eq!((r2.status, &r2.body), (201, &r1.body));
    let (n, sum): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(amount)::bigint FROM refunds").fetch_one(app.pool()).await.unwrap();
    assert_eq!((n, sum), (1, Some(100)));
    assert_eq!(app.sandbox.refunds().len(), 1);

    // Close: the repeat replays the close.
    let open = app.create_order_idempotent(&json!({"openid": openid, "amount": 7, "description": "c"}), "o-2").await;
    let open_no = open.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    let path = format!("/v1/orders/{open_no}/close");
    let c1 = app.post_as(Some(&key), &path, &json!({}), Some("c-1")).await;
    assert_eq!(c1.expect(200)["status"], "closed");
    let c2 = app.post_as(Some(&key), &path, &json!({}), Some("c-1")).await;
    assert_eq!((c2.status, &c2.body), (200, &c1.body));
    // The same key on another path is a different request.
    let c3 = app.post_as(Some(&key), &format!("/v1/orders/{no}/close"), &json!({}), Some("c-1")).await;
    assert_eq!((c3.status, c3.code()), (409, "idempotency_key_reused"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn concurrent_duplicates_execute_once() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let body = json!({"openid": openid, "amount": 300, "description": "race"});
    let calls = (0..8).map(|_| app.create_order_idempotent(&body, "race-1"));
    let results = futures::future::join_all(calls).await;
    let mut first = None;
    for r in &results {
        match r.status {
            201 => {
                let b = first.get_or_insert_with(|| r.body.clone());
                assert_eq!(&r.body, b, "every success is the same response");
            }
            409 => assert_eq!(r.code(), "request_in_progress"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(first.is_some());
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 1);
    assert_eq!(app.sandbox.orders().len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn retry_without_a_stored_response_reaches_the_same_order() {
    // WeChat down: the 503 is not stored, and the retry (same key) targets the same
    // out_trade_no, derived from the key.
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    app.sandbox
        .add_fault(minipay_sandbox::Fault {
            path: "/pay/unifiedorder".into(),
            kind: minipay_sandbox::FaultKind::Http500,
            times: Some(3),
        })
        .unwrap();
    let body = json!({"openid": openid, "amount": 250, "description": "retry"});
    let r = app.create_order_idempotent(&body, "k-503").await;
    assert_eq!((r.status, r.code()), (503, "upstream_unavailable"), "{}", r.body);
    let again = app.create_order_idempotent(&body, "k-503").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["status"], "prepaid");
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn order_requests_the_handler_answers_before_claiming_are_remembered_too() {
    // `POST /v1/orders` claims its key in the order insert's statement; a request refused
    // before that (validation) is still decided by the key's first response.
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let bad = json!({"openid": openid, "amount": 0, "description": "bad"});
    let first = app.create_order_idempotent(&bad, "v-1").await;
    assert_eq!((first.status, first.code()), (422, "invalid_amount"));
    let again = app.create_order_idempotent(&bad, "v-1").await;
    assert_eq!((again.status, &again.body), (422, &first.body));
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let fixed = app.create_order_idempotent(&json!({"openid": openid, "amount": 1, "description": "bad"}), "v-1").await;
    assert_eq!((fixed.status, fixed.code()), (409, "idempotency_key_reused"));
    // A key first used by a valid request refuses an invalid one with the same key.
    let good = json!({"openid": openid, "amount": 5, "description": "good"});
    app.create_order_idempotent(&good, "v-2").await.expect(201);
    let other =
        app.create_order_idempotent(&json!({"openid": openid, "amount": -5, "description": "good"}), "v-2").await;
    assert_eq!((other.status, other.code()), (409, "idempotency_key_reused"));

    // A new key for a number already taken by the same order: the key is claimed, the
    // insert finds the order, and both keys replay their own first answers.
    let numbered = json!({"out_trade_no": "N-idem-1", "openid": openid, "amount": 9, "description": "n"});
    let a = app.create_order_idempotent(&numbered, "n-a").await;
    a.expect(201);
    let b = app.create_order_idempotent(&numbered, "n-b").await;
    assert_eq!((b.status, &b.body["out_trade_no"], &b.body["status"]), (200, &json!("N-idem-1"), &json!("prepaid")));
    assert_eq!(b.body["pay_params"]["package"], a.body["pay_params"]["package"], "the same prepay");
    let b2 = app.create_order_idempotent(&numbered, "n-b").await;
    assert_eq!((b2.status, &b2.body), (200, &b.body));
    let (orders, prepaid, stored): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders WHERE status = 'prepaid'),
                (SELECT count(*) FROM idempotency_keys WHERE response_status IS NOT NULL)",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((orders, prepaid, stored), (2, 2, 4), "v-1, v-2, n-a, n-b stored; 2 orders");
    app.assert_ledger_balanced().await;
}
