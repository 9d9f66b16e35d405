//! Fault injection through /sandbox/faults: error codes, return_code FAIL, HTTP 500,
//! dropped connections, "done but the answer is lost", delays, and notification faults
//! (drop, duplicate, reorder, delay).

mod common;

use common::*;
use serde_json::json;
use wxpay::sign::SignType;
use wxpay::xml;

fn order_xml(no: &str) -> String {
    xml::encode(&signed(
        base_pay(&[
            ("body", "x"),
            ("out_trade_no", no),
            ("total_fee", "100"),
            ("spbill_create_ip", "127.0.0.1"),
            ("notify_url", "http://127.0.0.1:9/n"),
            ("trade_type", "JSAPI"),
            ("openid", "o1"),
        ]),
        SignType::Md5,
    ))
}

async fn fault(env: &Env, f: serde_json::Value) {
    let (s, body) = env.control("/sandbox/faults", f).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn error_code_return_fail_and_http_500_do_nothing() {
    let env = Env::start().await;
    let url = env.url("/pay/unifiedorder");
    fault(&env, json!({"path": "/pay/unifiedorder", "kind": "error", "err_code": "SYSTEMERROR", "times": 1})).await;
    let r = xml::decode(&post_raw(&env.plain, &url, order_xml("F1")).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!((r["result_code"].as_str(), r["err_code"].as_str()), ("FAIL", "SYSTEMERROR"));
    assert_signed(&r);
    assert!(env.sb.orders().is_empty());

    fault(&env, json!({"path": "pay/unifiedorder", "kind": "return_fail", "return_msg": "系统繁忙", "times": 1})).await;
    let r = xml::decode(&post_raw(&env.plain, &url, order_xml("F1")).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!((r["return_code"].as_str(), r["return_msg"].as_str()), ("FAIL", "系统繁忙"));

    fault(&env, json!({"path": "/pay/unifiedorder", "kind": "http500"})).await;
    for _ in 0..2 {
        assert_eq!(post_raw(&env.plain, &url, order_xml("F1")).await.unwrap().status(), 500);
    }
    assert!(env.sb.orders().is_empty());
    let listed = env.get_json("/sandbox/faults").await;
    assert_eq!(listed[0]["kind"], "http500");
    let r = env.plain.delete(env.url("/sandbox/faults")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = xml::decode(&post_raw(&env.plain, &url, order_xml("F1")).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(r["result_code"], "SUCCESS");

    // Faults that make no sense are refused.
    assert_eq!(env.control("/sandbox/faults", json!({"path": "/pay/nothing", "kind": "drop"})).await.0, 400);
    assert_eq!(env.control("/sandbox/faults", json!({"path": "/pay/orderquery", "kind": "duplicate"})).await.0, 400);
    assert_eq!(env.control("/sandbox/faults", json!({"path": "notify", "kind": "http500"})).await.0, 400);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_and_lost_answer() {
    let env = Env::start().await;
    let url = env.url("/pay/unifiedorder");
    fault(&env, json!({"path": "/pay/unifiedorder", "kind": "drop", "times": 1})).await;
    let e = post_raw(&env.plain, &url, order_xml("L1")).await.expect_err("connection dropped");
    assert!(e.is_request() || e.is_connect() || e.is_body(), "{e:?}");
    assert!(env.sb.orders().is_empty(), "drop: nothing happened");

    fault(&env, json!({"path": "/pay/unifiedorder", "kind": "lost_answer", "times": 1})).await;
    let e = post_raw(&env.plain, &url, order_xml("L1")).await.expect_err("answer lost");
    assert!(!e.is_timeout(), "{e:?}");
    assert_eq!(env.sb.orders().len(), 1, "lost answer: the order exists");
    // The retry with the same number gets the order's prepay_id.
    let r = xml::decode(&post_raw(&env.plain, &url, order_xml("L1")).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(r["prepay_id"], env.sb.orders()[0].prepay_id);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn lost_answer_on_a_payout_over_tls_pays_once() {
    let env = Env::start().await;
    let openid = env.sb.openid(minipay_sandbox::config::DEMO_USER, APPID);
    let t = signed(
        params(&[
            ("mch_appid", APPID),
            ("mchid", MCH),
            ("nonce_str", "n"),
            ("partner_trade_no", "LP1"),
            ("openid", &openid),
            ("check_name", "NO_CHECK"),
            ("amount", "1000"),
            ("desc", "x"),
            ("spbill_create_ip", "1.2.3.4"),
        ]),
        SignType::Md5,
    );
    let path = "/mmpaymkttransfers/promotion/transfers";
    let before = env.sb.balance(MCH).get();
    fault(&env, json!({"path": path, "kind": "lost_answer", "times": 1})).await;
    post_raw(&env.tls, &env.tls_url(path), xml::encode(&t)).await.expect_err("answer lost");
    assert_eq!(env.sb.balance(MCH).get(), before - 1000);
    let r = env.pay_tls(path, t).await;
    assert_eq!(r["result_code"], "SUCCESS");
    assert_eq!(r["payment_no"], env.sb.transfers()[0].payment_no);
    assert_eq!(env.sb.balance(MCH).get(), before - 1000, "paid once");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn delay_longer_than_the_client_timeout_still_acts() {
    let env = Env::start().await;
    fault(&env, json!({"path": "/pay/unifiedorder", "kind": "delay", "delay_ms": 1500, "times": 1})).await;
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(200)).build().unwrap();
    let e = post_raw(&impatient, &env.url("/pay/unifiedorder"), order_xml("D1")).await.expect_err("client gives up");
    assert!(e.is_timeout(), "{e:?}");
    assert!(eventually(|| env.sb.orders().len() == 1).await, "the call completes on the server");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn notification_drop_duplicate_delay_and_reorder() {
    let env = Env::start().await;
    let rx = Receiver::start(vec![SUCCESS_REPLY]).await;

    // drop: the first attempt is not sent; the retry (15 s × 0.001) is.
    fault(&env, json!({"path": "notify/pay", "kind": "drop", "times": 1})).await;
    env.order("ND1", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "ND1"})).await;
    assert!(eventually(|| rx.count() == 1).await);
    let n = &env.sb.notifications()[0];
    assert!(eventually(|| env.sb.notifications()[0].status == "delivered").await);
    assert_eq!(n.attempts[0].fault.as_deref(), Some("drop"));

    // duplicate: the same notification twice.
    fault(&env, json!({"path": "notify", "kind": "duplicate", "times": 1})).await;
    env.order("ND2", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "ND2"})).await;
    assert!(eventually(|| rx.count() == 3).await);
    let b = rx.bodies();
    assert_eq!(b[1], b[2]);

    // delay: it still arrives.
    fault(&env, json!({"path": "notify", "kind": "delay", "delay_ms": 50, "times": 1})).await;
    env.order("ND3", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "ND3"})).await;
    assert!(eventually(|| rx.count() == 4).await);

    // reorder: the first payment's notification waits until the second one was sent.
    fault(&env, json!({"path": "notify/pay", "kind": "reorder", "hold_ms": 5000, "times": 1})).await;
    env.order("NR1", "100", &rx.url).await;
    env.order("NR2", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "NR1"})).await;
    // Wait until NR1's delivery has taken the fault, so NR2's cannot take it instead.
    let mut taken = false;
    for _ in 0..3000 {
        if env.get_json("/sandbox/faults").await.as_array().is_some_and(Vec::is_empty) {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(taken);
    env.control("/sandbox/pay", json!({"out_trade_no": "NR2"})).await;
    assert!(eventually(|| rx.count() == 6).await);
    let b = rx.bodies();
    let no = |s: &str| xml::decode(s.as_bytes()).unwrap()["out_trade_no"].clone();
    assert_eq!((no(&b[4]).as_str(), no(&b[5]).as_str()), ("NR2", "NR1"));
    rx.stop().await;
    env.sb.shutdown().await;
}
