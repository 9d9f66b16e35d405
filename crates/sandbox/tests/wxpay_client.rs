//! Our own protocol client (`wxpay::Client`: reqwest + OpenSSL, PKCS#12 identity, extra root
//! CA) against the sandbox: the typed calls succeed, and faults come back as the outcomes the
//! services rely on (SYSTEMERROR and a lost answer are Unknown, not Failed).

mod common;

use common::*;
use minipay_sandbox::config::DEMO_USER;
use serde_json::json;
use wxpay::api::pay::{OrderQueryRequest, OrderRef, UnifiedOrderRequest};
use wxpay::api::refund::RefundRequest;
use wxpay::api::transfer::{CheckName, TransferRequest};
use wxpay::{Client, ClientConfig, ClientIdentity, Fen, Outcome};

fn wx_client(env: &Env) -> Client {
    let mut cfg = ClientConfig::new(MCH, APPID, key());
    cfg.base_url = env.sb.https_url();
    cfg.extra_root_ca_pem = Some(env.sb.ca_pem());
    cfg.identity = Some(ClientIdentity::Pkcs12 { der: env.sb.client_identity_p12(MCH).unwrap(), password: None });
    Client::new(cfg).expect("client builds")
}

#[tokio::test]
async fn typed_calls_succeed_and_faults_are_unknown() {
    let env = Env::start().await;
    let c = wx_client(&env);
    let req = UnifiedOrderRequest {
        body: "客户端测试".into(),
        out_trade_no: "WC1".into(),
        total_fee: Fen::new(1234),
        spbill_create_ip: "127.0.0.1".into(),
        notify_url: "http://127.0.0.1:9/n".into(),
        openid: env.sb.openid(DEMO_USER, APPID),
        ..Default::default()
    };
    let Outcome::Success(order) = c.unified_order(&req).await.unwrap() else { panic!("unifiedorder failed") };
    assert!(order.prepay_id.starts_with("wx"));
    env.control("/sandbox/pay", json!({"prepay_id": order.prepay_id, "notify": false})).await;
    let q = OrderQueryRequest { order: OrderRef::OutTradeNo("WC1".into()) };
    let Outcome::Success(state) = c.order_query(&q).await.unwrap() else { panic!("orderquery failed") };
    assert!(state.trade_state.is_paid());
    assert_eq!(state.total_fee, Some(Fen::new(1234)));

    let refund = RefundRequest {
        order: OrderRef::OutTradeNo("WC1".into()),
        out_refund_no: "WC1-R".into(),
        total_fee: Fen::new(1234),
        refund_fee: Fen::new(234),
        refund_desc: None,
        notify_url: None,
        refund_account: None,
    };
    let Outcome::Success(r) = c.refund(&refund).await.unwrap() else { panic!("refund failed") };
    assert_eq!(r.refund_fee, Fen::new(234));

    let t = TransferRequest {
        partner_trade_no: "WCT1".into(),
        openid: env.sb.openid(DEMO_USER, APPID),
        check_name: CheckName::ForceCheck { re_user_name: "张三".into() },
        amount: Fen::new(500),
        desc: "测试".into(),
        spbill_create_ip: Some("127.0.0.1".into()),
        device_info: None,
    };
    let Outcome::Success(paid) = c.transfer(&t).await.unwrap() else { panic!("transfer failed") };
    assert_eq!(paid.partner_trade_no, "WCT1");

    // SYSTEMERROR and a lost answer leave the outcome unknown.
    env.control(
        "/sandbox/faults",
        json!({"path": "/pay/orderquery", "kind": "error", "err_code": "SYSTEMERROR", "times": 1}),
    )
    .await;
    assert!(matches!(c.order_query(&q).await, Ok(Outcome::Unknown { .. })));
    env.control(
        "/sandbox/faults",
        json!({"path": "/mmpaymkttransfers/promotion/transfers", "kind": "lost_answer", "times": 1}),
    )
    .await;
    let t2 = TransferRequest { partner_trade_no: "WCT2".into(), ..t.clone() };
    let lost = c.transfer(&t2).await;
    assert!(matches!(lost, Ok(Outcome::Unknown { .. }) | Err(_)), "{lost:?}");
    // The retry with the same number returns the payout that did happen.
    let Outcome::Success(again) = c.transfer(&t2).await.unwrap() else { panic!("retry failed") };
    assert_eq!(env.sb.transfers().iter().filter(|x| x.partner_trade_no == "WCT2").count(), 1);
    assert_eq!(again.payment_no, env.sb.transfers().iter().find(|x| x.partner_trade_no == "WCT2").unwrap().payment_no);
    env.sb.shutdown().await;
}
