//! Orders over the wire: unifiedorder, orderquery, closeorder, the payer, payment
//! notifications and their retry schedule, and the common request checks (signature,
//! sign_type, missing fields, merchant and appid).

mod common;

use common::*;
use serde_json::json;
use wxpay::sign::SignType;
use wxpay::xml;

fn order_fields<'a>(no: &'a str, fee: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("body", "测试商品"),
        ("out_trade_no", no),
        ("total_fee", fee),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", "http://127.0.0.1:9/n"),
        ("trade_type", "JSAPI"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
    ]
}

#[tokio::test]
async fn unifiedorder_happy_path_and_out_trade_no_rules() {
    let env = Env::start().await;
    let r = env.pay("/pay/unifiedorder", &order_fields("T1", "100")).await;
    assert_eq!(r["return_code"], "SUCCESS");
    assert_eq!(r["result_code"], "SUCCESS");
    assert_eq!(r["trade_type"], "JSAPI");
    assert_eq!(r["appid"], APPID);
    assert_eq!(r["mch_id"], MCH);
    assert!(r["prepay_id"].starts_with("wx") && r["prepay_id"].len() == 36, "{r:?}");
    assert_signed(&r);

    // Same number, same content: the same prepay_id.
    let again = env.pay("/pay/unifiedorder", &order_fields("T1", "100")).await;
    assert_eq!(again["prepay_id"], r["prepay_id"]);

    // Same number, different amount: OUT_TRADE_NO_USED, signed.
    let used = env.pay("/pay/unifiedorder", &order_fields("T1", "101")).await;
    assert_eq!(used["result_code"], "FAIL");
    assert_eq!(used["err_code"], "OUT_TRADE_NO_USED");
    assert_signed(&used);

    // HMAC-SHA256 request: an HMAC-signed answer.
    let p = signed(base_pay(&order_fields("T2", "100")), SignType::HmacSha256);
    let h = post_xml(&env.plain, &env.url("/pay/unifiedorder"), &p).await;
    assert_eq!(h["result_code"], "SUCCESS");
    assert_eq!(h["sign"].len(), 64);
    assert_eq!(wxpay::sign::verify(&h, &key()), Ok(SignType::HmacSha256));
    env.sb.shutdown().await;
}

#[tokio::test]
async fn request_checks_answer_like_wechat() {
    let env = Env::start().await;
    // A wrong signature: return_code FAIL, 签名错误, unsigned.
    let mut p = signed(base_pay(&order_fields("S1", "100")), SignType::Md5);
    p.insert("total_fee".into(), "1".into());
    let r = post_xml(&env.plain, &env.url("/pay/unifiedorder"), &p).await;
    assert_eq!(r["return_code"], "FAIL");
    assert_eq!(r["return_msg"], "签名错误");
    assert!(!r.contains_key("sign"));

    // Signed with another key.
    let mut p = base_pay(&order_fields("S1", "100"));
    wxpay::sign::sign_params(&mut p, &wxpay::ApiKey::new("another-key"), SignType::Md5);
    assert_eq!(post_xml(&env.plain, &env.url("/pay/unifiedorder"), &p).await["return_msg"], "签名错误");

    // sign_type says HMAC but the sign is MD5.
    let mut p = signed(base_pay(&order_fields("S1", "100")), SignType::Md5);
    p.insert("sign_type".into(), "HMAC-SHA256".into());
    assert_eq!(post_xml(&env.plain, &env.url("/pay/unifiedorder"), &p).await["return_msg"], "签名错误");

    // A missing business field: LACK_PARAMS, signed.
    let mut f = order_fields("S2", "100");
    f.retain(|(k, _)| *k != "body");
    let r = env.pay("/pay/unifiedorder", &f).await;
    assert_eq!(r["err_code"], "LACK_PARAMS");
    assert!(r["err_code_des"].contains("body"));
    assert_signed(&r);

    // JSAPI without openid, a bad amount: PARAM_ERROR.
    let mut f = order_fields("S3", "100");
    f.retain(|(k, _)| *k != "openid");
    assert_eq!(env.pay("/pay/unifiedorder", &f).await["err_code"], "PARAM_ERROR");
    assert_eq!(env.pay("/pay/unifiedorder", &order_fields("S4", "1.5")).await["err_code"], "PARAM_ERROR");
    assert_eq!(env.pay("/pay/unifiedorder", &order_fields("S5", "0")).await["err_code"], "PARAM_ERROR");

    // Lengths in UTF-8 bytes (43 Chinese characters = 129 bytes), and the notify URL's form.
    let long_body = "商".repeat(43);
    let mut f = order_fields("S9", "100");
    f[0] = ("body", long_body.as_str());
    assert_eq!(env.pay("/pay/unifiedorder", &f).await["err_code_des"], "body参数长度有误");
    let mut f = order_fields("S10", "100");
    f[4] = ("notify_url", "ftp://x/y");
    assert_eq!(env.pay("/pay/unifiedorder", &f).await["err_code"], "PARAM_ERROR");

    // An appid the merchant does not own.
    let mut p = base_pay(&order_fields("S6", "100"));
    p.insert("appid".into(), "wx0000000000000000".into());
    let r = post_xml(&env.plain, &env.url("/pay/unifiedorder"), &signed(p, SignType::Md5)).await;
    assert_eq!(r["err_code"], "APPID_MCHID_NOT_MATCH");

    // An unknown merchant, no sign, and a body that is not XML.
    let mut p = base_pay(&order_fields("S7", "100"));
    p.insert("mch_id".into(), "1111111111".into());
    assert_eq!(
        post_xml(&env.plain, &env.url("/pay/unifiedorder"), &signed(p, SignType::Md5)).await["return_code"],
        "FAIL"
    );
    let p = base_pay(&order_fields("S8", "100"));
    assert_eq!(post_xml(&env.plain, &env.url("/pay/unifiedorder"), &p).await["return_msg"], "缺少参数sign");
    let r = post_raw(&env.plain, &env.url("/pay/unifiedorder"), "not xml".into()).await.unwrap();
    let r = xml::decode(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(r["return_code"], "FAIL");

    // Nothing was created by any of these.
    assert!(env.sb.orders().is_empty());
    env.sb.shutdown().await;
}

#[tokio::test]
async fn pay_query_close_and_state_rules() {
    let env = Env::start().await;
    env.order("Q1", "250", "http://127.0.0.1:9/n").await;
    let q = env.pay("/pay/orderquery", &[("out_trade_no", "Q1")]).await;
    assert_eq!(q["trade_state"], "NOTPAY");
    assert!(!q.contains_key("transaction_id"));
    assert_signed(&q);

    let (s, paid) = env.control("/sandbox/pay", json!({"out_trade_no": "Q1", "notify": false})).await;
    assert_eq!(s, 200, "{paid}");
    let tx = paid["transaction_id"].as_str().unwrap().to_owned();
    assert_eq!(tx.len(), 28);

    let q = env.pay("/pay/orderquery", &[("transaction_id", &tx)]).await;
    assert_eq!(q["trade_state"], "SUCCESS");
    assert_eq!(q["out_trade_no"], "Q1");
    assert_eq!(q["total_fee"], "250");
    assert_eq!(q["cash_fee"], "250");
    assert_eq!(q["time_end"].len(), 14);
    assert_signed(&q);

    // Paid orders cannot be re-ordered or closed; the payer refuses to pay twice.
    assert_eq!(env.pay("/pay/unifiedorder", &order_fields("Q1", "250")).await["err_code"], "ORDERPAID");
    assert_eq!(env.pay("/pay/closeorder", &[("out_trade_no", "Q1")]).await["err_code"], "ORDERPAID");
    assert_eq!(env.control("/sandbox/pay", json!({"out_trade_no": "Q1"})).await.0, 409);

    // Close an unpaid order: CLOSED, then ORDERCLOSED for a new unifiedorder or a second close.
    let prepay = env.order("Q2", "100", "http://127.0.0.1:9/n").await;
    let c = env.pay("/pay/closeorder", &[("out_trade_no", "Q2")]).await;
    assert_eq!(c["result_code"], "SUCCESS");
    assert_signed(&c);
    assert_eq!(env.pay("/pay/orderquery", &[("out_trade_no", "Q2")]).await["trade_state"], "CLOSED");
    assert_eq!(env.pay("/pay/unifiedorder", &order_fields("Q2", "100")).await["err_code"], "ORDERCLOSED");
    assert_eq!(env.pay("/pay/closeorder", &[("out_trade_no", "Q2")]).await["err_code"], "ORDERCLOSED");
    assert_eq!(env.control("/sandbox/pay", json!({"prepay_id": prepay})).await.0, 409);

    // Unknown orders, and a failed payment.
    assert_eq!(env.pay("/pay/orderquery", &[("out_trade_no", "nope")]).await["err_code"], "ORDERNOTEXIST");
    assert_eq!(env.pay("/pay/closeorder", &[("out_trade_no", "nope")]).await["err_code"], "ORDERNOTEXIST");
    assert_eq!(env.control("/sandbox/pay", json!({"out_trade_no": "nope"})).await.0, 404);
    env.order("Q3", "100", "http://127.0.0.1:9/n").await;
    assert_eq!(env.control("/sandbox/fail", json!({"out_trade_no": "Q3"})).await.0, 200);
    assert_eq!(env.pay("/pay/orderquery", &[("out_trade_no", "Q3")]).await["trade_state"], "PAYERROR");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn prepay_id_expires_after_two_hours() {
    let env = Env::start().await;
    let first = env.order("E1", "100", "http://127.0.0.1:9/n").await;
    env.control("/sandbox/clock", json!({"advance_secs": 7201})).await;
    assert_eq!(env.control("/sandbox/pay", json!({"prepay_id": first})).await.0, 409);
    // Asking again with the same content gives a fresh prepay_id that works.
    let second = env.order("E1", "100", "http://127.0.0.1:9/n").await;
    assert_ne!(first, second);
    assert_eq!(env.control("/sandbox/pay", json!({"prepay_id": second, "notify": false})).await.0, 200);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn notification_is_retried_after_fail_and_stops_after_success() {
    let env = Env::start().await;
    let rx = Receiver::start(vec![FAIL_REPLY, "not xml at all", SUCCESS_REPLY]).await;
    env.order("N1", "321", &rx.url).await;
    let (s, _) = env.control("/sandbox/pay", json!({"out_trade_no": "N1", "time": "2026-11-24 23:59:59"})).await;
    assert_eq!(s, 200);
    assert!(eventually(|| rx.count() >= 3).await, "three deliveries expected, got {}", rx.count());
    let n = env.get_json("/sandbox/notifications").await;
    assert!(eventually(|| env.sb.notifications()[0].status == "delivered").await);
    // Give a wrongly continuing schedule the chance to show itself (15 s × 0.001 = 15 ms).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 3, "no delivery after SUCCESS");
    let notes = env.sb.notifications();
    assert_eq!(notes[0].attempts.len(), 3);
    assert!(notes[0].attempts[2].success && !notes[0].attempts[0].success);
    assert_eq!(notes[0].attempts[0].http_status, Some(200));
    assert!(notes[0].attempts[0].reply_excerpt.contains("FAIL"));
    assert_eq!(n[0]["kind"], "pay");

    // What arrived is a signed WeChat payment notification with the chosen payment time.
    let body = &rx.bodies()[0];
    let p = xml::decode(body.as_bytes()).unwrap();
    assert_signed(&p);
    assert_eq!(p["out_trade_no"], "N1");
    assert_eq!(p["total_fee"], "321");
    assert_eq!(p["result_code"], "SUCCESS");
    assert_eq!(p["time_end"], "20261124235959");
    // Every attempt carries the same document.
    assert!(rx.bodies().iter().all(|b| b == body));
    rx.stop().await;
    env.sb.shutdown().await;
}

#[tokio::test]
async fn notification_gives_up_after_the_whole_schedule() {
    let env = Env::start().await;
    let rx = Receiver::start(vec![FAIL_REPLY]).await;
    env.order("N2", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "N2"})).await;
    // 24h4m × 0.001 ≈ 87 s of real time would be too slow: shrink the schedule instead.
    assert!(eventually(|| rx.count() >= 2).await);
    env.sb.shutdown().await;
    rx.stop().await;

    let cfg = minipay_sandbox::SandboxConfig { retry_schedule_secs: vec![1, 1, 1], ..fast_config() };
    let env = Env::with(cfg).await;
    let rx = Receiver::start(vec![FAIL_REPLY]).await;
    env.order("N3", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "N3"})).await;
    assert!(eventually(|| env.sb.notifications()[0].status == "gave_up").await);
    assert_eq!(rx.count(), 4, "first attempt plus three retries");
    rx.stop().await;
    env.sb.shutdown().await;
}

#[tokio::test]
async fn payer_can_skip_the_notification() {
    let env = Env::start().await;
    let rx = Receiver::start(vec![SUCCESS_REPLY]).await;
    env.order("N4", "100", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "N4", "notify": false})).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.count(), 0);
    assert!(env.sb.notifications().is_empty());
    assert_eq!(env.pay("/pay/orderquery", &[("out_trade_no", "N4")]).await["trade_state"], "SUCCESS");
    rx.stop().await;
    env.sb.shutdown().await;
}

#[tokio::test]
async fn sandboxnew_paths_and_getsignkey_for_sdks_with_a_sandbox_switch() {
    let env = Env::start().await;
    let p = signed(params(&[("mch_id", MCH), ("nonce_str", "abc")]), SignType::Md5);
    let r = post_xml(&env.plain, &env.url("/sandboxnew/pay/getsignkey"), &p).await;
    assert_eq!(r["return_code"], "SUCCESS");
    assert_eq!(r["sandbox_signkey"], key().expose());
    let mut bad = p.clone();
    bad.insert("nonce_str".into(), "tampered".into());
    assert_eq!(post_xml(&env.plain, &env.url("/sandboxnew/pay/getsignkey"), &bad).await["return_msg"], "签名错误");
    let r = post_xml(
        &env.plain,
        &env.url("/sandboxnew/pay/unifiedorder"),
        &signed(base_pay(&order_fields("SN1", "100")), SignType::Md5),
    )
    .await;
    assert_eq!(r["result_code"], "SUCCESS");
    env.sb.shutdown().await;
}
