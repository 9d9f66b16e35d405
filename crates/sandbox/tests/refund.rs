//! Refunds over TLS with client certificates: the certificate checks, the refund rules,
//! the PROCESSING → SUCCESS state machine, refundquery and the encrypted refund notification.

mod common;

use common::*;
use minipay_sandbox::certs::Pki;
use minipay_sandbox::{MerchantConfig, SandboxConfig};
use openssl::pkcs12::Pkcs12;
use serde_json::json;
use wxpay::sign::SignType;
use wxpay::xml::Params;

fn refund_req(no: &str, refund_no: &str, total: &str, fee: &str) -> Params {
    signed(
        base_pay(&[("out_trade_no", no), ("out_refund_no", refund_no), ("total_fee", total), ("refund_fee", fee)]),
        SignType::Md5,
    )
}

#[tokio::test]
async fn refund_needs_the_merchants_own_certificate() {
    let other = MerchantConfig {
        mch_id: "1230000109".into(),
        api_key: wxpay::ApiKey::new("other-merchant-key-0123456789abcd"),
        ..MerchantConfig::default()
    };
    let cfg = SandboxConfig { merchants: vec![MerchantConfig::default(), other], ..fast_config() };
    let env = Env::with(cfg).await;
    env.paid_order("C1", "100").await;
    let req = refund_req("C1", "R1", "100", "100");
    let ca_msg = "证书出错，请登录微信支付商户平台下载证书";

    // No certificate over TLS, and plain HTTP (never a certificate).
    let r = post_xml(&env.plain, &env.tls_url("/secapi/pay/refund"), &req).await;
    assert_eq!((r["return_code"].as_str(), r["return_msg"].as_str()), ("FAIL", ca_msg));
    let r = post_xml(&env.plain, &env.url("/secapi/pay/refund"), &req).await;
    assert_eq!(r["return_msg"], ca_msg);

    // Another merchant's certificate, issued by the same CA.
    let wrong = client(&env.sb, Some("1230000109"));
    assert_eq!(post_xml(&wrong, &env.tls_url("/secapi/pay/refund"), &req).await["return_msg"], ca_msg);

    // A certificate with the right CN from a CA the sandbox does not know.
    let foreign = Pki::foreign_client(MCH).unwrap();
    let p12 = Pkcs12::builder().pkey(&foreign.key).cert(&foreign.cert).build2("pw").unwrap().to_der().unwrap();
    let foreign_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&env.sb.ca_pem()).unwrap())
        .identity(reqwest::Identity::from_pkcs12_der(&p12, "pw").unwrap())
        .build()
        .unwrap();
    assert_eq!(post_xml(&foreign_client, &env.tls_url("/secapi/pay/refund"), &req).await["return_msg"], ca_msg);
    assert!(env.sb.refunds().is_empty(), "no refund without the right certificate");

    // The right one; plain endpoints keep working over TLS without a certificate.
    let ok = env.pay_tls("/secapi/pay/refund", req).await;
    assert_eq!(ok["result_code"], "SUCCESS", "{ok:?}");
    assert_signed(&ok);
    let q = post_xml(
        &env.plain,
        &env.tls_url("/pay/orderquery"),
        &signed(base_pay(&[("out_trade_no", "C1")]), SignType::Md5),
    )
    .await;
    assert_eq!(q["trade_state"], "REFUND");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn partial_refunds_state_machine_and_notification() {
    let env = Env::start().await;
    let rx = Receiver::start(vec![SUCCESS_REPLY]).await;
    env.order("P1", "1000", &rx.url).await;
    env.control("/sandbox/pay", json!({"out_trade_no": "P1", "notify": false})).await;

    let r1 = env.pay_tls("/secapi/pay/refund", refund_req("P1", "P1-R1", "1000", "300")).await;
    assert_eq!(r1["result_code"], "SUCCESS", "{r1:?}");
    assert_eq!(r1["refund_fee"], "300");
    assert_eq!(r1["total_fee"], "1000");
    assert!(r1["refund_id"].len() >= 28);

    // A retry of the same refund: the same refund_id, no second refund.
    let again = env.pay_tls("/secapi/pay/refund", refund_req("P1", "P1-R1", "1000", "300")).await;
    assert_eq!(again["refund_id"], r1["refund_id"]);
    // The same out_refund_no with another amount.
    let mism = env.pay_tls("/secapi/pay/refund", refund_req("P1", "P1-R1", "1000", "301")).await;
    assert_eq!(mism["err_code"], "REFUND_FEE_MISMATCH");
    // total_fee must be the order's; more than paid in one refund or in total is refused.
    assert_eq!(env.pay_tls("/secapi/pay/refund", refund_req("P1", "X", "999", "1")).await["err_code"], "PARAM_ERROR");
    assert_eq!(
        env.pay_tls("/secapi/pay/refund", refund_req("P1", "X", "1000", "1001")).await["err_code"],
        "PARAM_ERROR"
    );
    assert_eq!(env.pay_tls("/secapi/pay/refund", refund_req("P1", "X", "1000", "701")).await["err_code"], "ERROR");
    let r2 = env.pay_tls("/secapi/pay/refund", refund_req("P1", "P1-R2", "1000", "700")).await;
    assert_eq!(r2["result_code"], "SUCCESS");
    let full = env.pay_tls("/secapi/pay/refund", refund_req("P1", "P1-R3", "1000", "1")).await;
    assert_eq!((full["err_code"].as_str(), full["err_code_des"].as_str()), ("ERROR", "订单已全额退款"));

    // PROCESSING until the (scaled) delay has passed, then SUCCESS with a success time.
    assert!(eventually(|| env.sb.refunds().iter().all(|r| r.success_at.is_some())).await);
    let q = env.pay("/pay/refundquery", &[("out_trade_no", "P1")]).await;
    assert_signed(&q);
    assert_eq!(q["refund_count"], "2");
    assert_eq!(q["refund_fee"], "1000");
    assert_eq!(q["out_refund_no_0"], "P1-R1");
    assert_eq!(q["refund_status_0"], "SUCCESS");
    assert_eq!(q["refund_fee_1"], "700");
    assert_eq!(q["refund_success_time_1"].len(), 19);
    let by_id = env.pay("/pay/refundquery", &[("refund_id", &r2["refund_id"])]).await;
    assert_eq!((by_id["refund_count"].as_str(), by_id["out_refund_no_0"].as_str()), ("1", "P1-R2"));
    assert_eq!(env.pay("/pay/refundquery", &[("out_refund_no", "nope")]).await["err_code"], "REFUNDNOTEXIST");

    // Refund notifications go to the order's notify_url: unsigned, req_info encrypted.
    assert!(eventually(|| rx.count() >= 2).await);
    let outer = wxpay::xml::decode(rx.bodies()[0].as_bytes()).unwrap();
    assert!(!outer.contains_key("sign"));
    assert_eq!(outer["mch_id"], MCH);
    let inner = wxpay::refund_notify::decrypt_req_info(&outer["req_info"], &key()).unwrap();
    assert_eq!(inner["out_trade_no"], "P1");
    assert_eq!(inner["refund_status"], "SUCCESS");
    assert!(["300", "700"].contains(&inner["refund_fee"].as_str()));
    assert_eq!(inner["success_time"].len(), 19);
    rx.stop().await;
    env.sb.shutdown().await;
}

#[tokio::test]
async fn refund_rules_on_unpaid_orders_balance_and_manual_settlement() {
    // A long processing delay so the refund stays PROCESSING until settled by hand.
    let env = Env::with(SandboxConfig { refund_delay_secs: 3600 * 24 * 365, ..fast_config() }).await;
    env.order("U1", "100", "http://127.0.0.1:9/n").await;
    let r = env.pay_tls("/secapi/pay/refund", refund_req("U1", "U1-R", "100", "100")).await;
    assert_eq!(r["err_code"], "TRADE_STATE_ERROR");
    let r = env.pay_tls("/secapi/pay/refund", refund_req("nope", "N-R", "100", "100")).await;
    assert_eq!(r["err_code"], "ORDERNOTEXIST");
    let mut missing = base_pay(&[("out_trade_no", "U1"), ("total_fee", "100"), ("refund_fee", "100")]);
    missing = signed(missing, SignType::HmacSha256);
    let r = env.pay_tls("/secapi/pay/refund", missing).await;
    assert_eq!(r["err_code"], "LACK_PARAMS");
    assert_eq!(r["sign"].len(), 64, "HMAC request, HMAC answer");

    env.paid_order("U2", "500").await;
    let (_, _) = env.control("/sandbox/balance", json!({"balance_fen": 10})).await;
    let r = env.pay_tls("/secapi/pay/refund", refund_req("U2", "U2-R", "500", "100")).await;
    assert_eq!(r["err_code"], "NOTENOUGH");
    env.control("/sandbox/balance", json!({"balance_fen": 100000})).await;
    let r = env.pay_tls("/secapi/pay/refund", refund_req("U2", "U2-R", "500", "100")).await;
    assert_eq!(r["result_code"], "SUCCESS");
    assert_eq!(env.pay("/pay/refundquery", &[("out_refund_no", "U2-R")]).await["refund_status_0"], "PROCESSING");
    assert_eq!(env.sb.balance(MCH).get(), 100000 - 100);
    let (s, settled) =
        env.control("/sandbox/refunds/settle", json!({"out_refund_no": "U2-R", "status": "CHANGE"})).await;
    assert_eq!(s, 200, "{settled}");
    assert_eq!(env.pay("/pay/refundquery", &[("out_refund_no", "U2-R")]).await["refund_status_0"], "CHANGE");
    // The money of a CHANGE refund is back on the account.
    assert_eq!(env.sb.balance(MCH).get(), 100000);
    // Moving the clock past the delay settles a processing refund.
    env.pay_tls("/secapi/pay/refund", refund_req("U2", "U2-R2", "500", "50")).await;
    env.control("/sandbox/clock", json!({"advance_secs": 3600 * 24 * 366})).await;
    assert_eq!(env.pay("/pay/refundquery", &[("out_refund_no", "U2-R2")]).await["refund_status_0"], "SUCCESS");
    env.sb.shutdown().await;
}
