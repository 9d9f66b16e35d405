//! Error codes of the payments API: each failure has its own stable code and status.

use minipay_e2e::TestApp;
use serde_json::json;

#[tokio::test]
async fn invalid_input_gets_its_own_code() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let order = |amount: serde_json::Value| json!({"openid": openid, "amount": amount, "description": "x"});

    for bad in [json!(0), json!(-5), json!(1.5), json!("100"), json!(null), json!(10_000_000_001_i64)] {
        let r = app.create_order(&order(bad.clone())).await;
        assert_eq!((r.status, r.code()), (422, "invalid_amount"), "amount {bad}: {}", r.body);
    }
    let r = app.create_order(&json!({"openid": "o-not-logged-in", "amount": 1, "description": "x"})).await;
    assert_eq!((r.status, r.code()), (422, "unknown_openid"));
    let r = app.create_order(&json!({"openid": "bad openid!", "amount": 1, "description": "x"})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_openid"));
    let r = app.create_order(&json!({"appid": "wxunknown", "openid": openid, "amount": 1, "description": "x"})).await;
    assert_eq!((r.status, r.code()), (422, "unknown_appid"));
    let r = app.create_session(&json!({"appid": "wxunknown", "code": "abc"})).await;
    assert_eq!((r.status, r.code()), (422, "unknown_appid"));
    let r = app.create_session(&json!({"code": "never-issued"})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_login_code"));
    let r = app.create_order(&json!({"openid": openid, "amount": 1, "description": ""})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_description"));
    let r = app.create_order(&json!({"openid": openid, "amount": 1, "description": "x", "expires_in": 0})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_expires_in"));
    let r = app
        .create_order(&json!({"out_trade_no": "has space", "openid": openid, "amount": 1, "description": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_out_trade_no"));
    let r = app.create_order(&json!({"openid": openid, "amount": 1, "description": "x", "colour": "red"})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_request"), "unknown fields are refused");

    // Malformed JSON, wrong content type, oversize bodies (with and without Idempotency-Key).
    let r = app.post_raw("/v1/orders", b"{\"openid\": ".to_vec(), "application/json").await;
    assert_eq!((r.status, r.code()), (400, "malformed_json"));
    let r = app.post_raw("/v1/orders", b"amount=1".to_vec(), "application/x-www-form-urlencoded").await;
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));
    let huge = format!("{{\"description\": \"{}\"}}", "x".repeat(100_000));
    let r = app.post_raw("/v1/orders", huge.clone().into_bytes(), "application/json").await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = app
        .http
        .post(format!("{}/v1/orders", app.api_url))
        .bearer_auth(&app.keys.client)
        .header("Idempotency-Key", "big-1")
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn authentication_and_roles() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let body = json!({"openid": openid, "amount": 100, "description": "x"});
    let r = app.post_as(None, "/v1/orders", &body, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = app.post_as(Some("mp_client_not_a_key"), "/v1/orders", &body, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    for key in [&app.keys.viewer, &app.keys.finance, &app.keys.approver] {
        let r = app.post_as(Some(key), "/v1/orders", &body, None).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
    }
    let created = app.create_order(&body).await;
    let no = created.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    // Staff roles read every order; another client cannot see it exists.
    for key in [&app.keys.viewer, &app.keys.finance, &app.keys.admin] {
        app.get_as(Some(key), &format!("/v1/orders/{no}")).await.expect(200);
    }
    let r = app.get_as(Some(&app.keys.other_client), &format!("/v1/orders/{no}")).await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"));
    let r = app.post_as(Some(&app.keys.other_client), &format!("/v1/orders/{no}/close"), &json!({}), None).await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"));
    // Admin passes every role check.
    app.post_as(Some(&app.keys.admin), "/v1/orders", &json!({"openid": openid, "amount": 5, "description": "y"}), None)
        .await
        .expect(201);
    let r = app.get_as(None, "/v1/orders/nope").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = app.get("/v1/orders/nope").await;
    assert_eq!((r.status, r.code()), (404, "order_not_found"));
    let r = app.get("/v1/refunds/nope").await;
    assert_eq!((r.status, r.code()), (404, "refund_not_found"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn state_conflicts() {
    let app = TestApp::spawn().await;
    let openid = app.login("demo-user").await;
    let body = json!({"out_trade_no": "conflict-1", "openid": openid, "amount": 100, "description": "x"});
    app.create_order(&body).await.expect(201);
    // The same number with other parameters.
    let r = app
        .create_order(&json!({"out_trade_no": "conflict-1", "openid": openid, "amount": 101, "description": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (409, "out_trade_no_used"));
    // Refunding an unpaid order; closing a paid one.
    let r = app.refund("conflict-1", &json!({"out_refund_no": "rf-0", "amount": 10})).await;
    assert_eq!((r.status, r.code()), (409, "order_not_paid"));
    app.pay("conflict-1");
    app.wait_for_order_status("conflict-1", "paid").await;
    let r = app.close_order("conflict-1").await;
    assert_eq!((r.status, r.code()), (409, "order_paid"));
    let r = app.refund("conflict-1", &json!({"out_refund_no": "rf-0", "amount": 0})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_amount"));
    let r = app.refund("conflict-1", &json!({"out_refund_no": "rf-0", "amount": 101})).await;
    assert_eq!((r.status, r.code()), (409, "refund_exceeds_refundable"));
    let r = app.refund("conflict-1", &json!({"out_refund_no": "rf-1", "amount": 10})).await;
    r.expect(201);
    let r = app.refund("conflict-1", &json!({"out_refund_no": "rf-1", "amount": 20})).await;
    assert_eq!((r.status, r.code()), (409, "out_refund_no_used"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn operational_endpoints() {
    let app = TestApp::spawn().await;
    app.get_as(None, "/healthz").await.expect(200);
    app.get_as(None, "/readyz").await.expect(200);
    let doc = app.get_as(None, "/openapi.json").await;
    for path in [
        "/v1/sessions",
        "/v1/orders",
        "/v1/orders/{out_trade_no}",
        "/v1/orders/{out_trade_no}/close",
        "/v1/orders/{out_trade_no}/refunds",
        "/v1/refunds/{out_refund_no}",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let openid = app.login("demo-user").await;
    app.create_order_for(&openid, 100).await.expect(201);
    let metrics = app.http.get(format!("{}/metrics", app.api_url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("minipay_wechat_calls_total{endpoint=\"pay/unifiedorder\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("minipay_orders{status=\"prepaid\"} 1"), "{metrics}");
    assert!(
        metrics.contains("minipay_http_requests_total{method=\"POST\",route=\"/v1/orders\",status=\"201\"} 1"),
        "{metrics}"
    );
    app.assert_ledger_balanced().await;
}
