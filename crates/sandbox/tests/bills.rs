//! downloadbill and downloadfundflow: built from the sandbox's own trades, read back with
//! `wxpay::bill` (which checks the summary against the rows), on the sandbox clock.

mod common;

use common::*;
use minipay_sandbox::{BillLayout, MerchantConfig, SandboxConfig};
use serde_json::json;
use wxpay::bill::{BillBody, BillReader, FundFlowReader, TradeRow, decode_body};
use wxpay::sign::SignType;
use wxpay::xml;

async fn download(env: &Env, date: &str, bill_type: &str, gzip: bool) -> Vec<u8> {
    let mut f = vec![("bill_date", date), ("bill_type", bill_type)];
    if gzip {
        f.push(("tar_type", "GZIP"));
    }
    let p = signed(base_pay(&f), SignType::Md5);
    let r = post_raw(&env.plain, &env.url("/pay/downloadbill"), xml::encode(&p)).await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

fn rows(bytes: &[u8]) -> (Vec<TradeRow>, wxpay::bill::BillSummary, String) {
    let BillBody::Bill(text) = decode_body(bytes).unwrap() else {
        panic!("not a bill: {}", String::from_utf8_lossy(bytes));
    };
    let mut reader = BillReader::new(text).unwrap();
    let mut out = Vec::new();
    while let Some(r) = reader.next_record() {
        out.push(r.unwrap().to_row());
    }
    let summary = reader.finish().unwrap();
    let plain =
        if bytes.starts_with(&[0x1f, 0x8b]) { String::new() } else { String::from_utf8(bytes.to_vec()).unwrap() };
    (out, summary, plain)
}

async fn setup(env: &Env) {
    env.control("/sandbox/clock", json!({"set": "2026-11-24 08:00:00"})).await;
    for (no, fee, time) in [
        ("B1", "10000", "2026-11-24 09:00:00"),
        ("B2", "333", "2026-11-24 23:59:59"),
        ("B3", "100", "2026-11-25 00:00:01"),
    ] {
        env.order(no, fee, "http://127.0.0.1:9/n").await;
        let (s, o) = env.control("/sandbox/pay", json!({"out_trade_no": no, "time": time, "notify": false})).await;
        assert_eq!(s, 200, "{o}");
    }
    env.control("/sandbox/clock", json!({"set": "2026-11-24 12:00:00"})).await;
    let p = signed(
        base_pay(&[("out_trade_no", "B1"), ("out_refund_no", "B1-R"), ("total_fee", "10000"), ("refund_fee", "2500")]),
        SignType::Md5,
    );
    assert_eq!(env.pay_tls("/secapi/pay/refund", p).await["result_code"], "SUCCESS");
}

#[tokio::test]
async fn trade_bills_follow_the_clock_the_day_and_the_type() {
    let env = Env::start().await;
    setup(&env).await;
    env.control("/sandbox/clock", json!({"set": "2026-11-25 09:59:59"})).await;
    let early = download(&env, "20261124", "ALL", false).await;
    assert!(matches!(decode_body(&early).unwrap(), BillBody::NotReady), "{}", String::from_utf8_lossy(&early));
    env.control("/sandbox/clock", json!({"set": "2026-11-25 10:00:00"})).await;

    let (all, sum, text) = rows(&download(&env, "20261124", "ALL", false).await);
    assert!(text.starts_with("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号"));
    assert!(text.lines().next().unwrap().ends_with("订单金额,申请退款金额,费率备注"), "27 columns");
    assert_eq!(all.len(), 3, "B1, B2 (23:59:59) and B1's refund; B3 belongs to the 25th");
    assert_eq!(sum.count, 3);
    let b1 = all.iter().find(|r| r.out_trade_no == "B1" && !r.is_refund()).unwrap();
    assert_eq!(b1.settlement_amount.get(), 10000);
    assert_eq!(b1.fee.get(), 60_000, "0.6% of 100.00 yuan = 0.60000");
    assert_eq!(b1.rate, "0.60%");
    let b2 = all.iter().find(|r| r.out_trade_no == "B2").unwrap();
    assert_eq!(b2.trade_time.to_string(), "2026-11-24 23:59:59");
    assert_eq!(b2.fee.get(), 1_998, "0.6% of 3.33 yuan = 0.01998 exactly");
    let refund = all.iter().find(|r| r.is_refund()).unwrap();
    assert_eq!((refund.out_refund_no.as_str(), refund.refund_amount.get()), ("B1-R", 2500));
    assert_eq!(refund.fee.get(), -15_000);
    assert_eq!(sum.settlement_total.get(), 10333);
    assert_eq!(sum.refund_total.map(|f| f.get()), Some(2500));
    assert_eq!(sum.fee_total.get(), 60_000 + 1_998 - 15_000);

    let (succ, _, text) = rows(&download(&env, "20261124", "SUCCESS", false).await);
    assert_eq!(succ.len(), 2);
    assert!(!text.lines().next().unwrap().contains("退款金额"));
    let (refunds, _, _) = rows(&download(&env, "20261124", "REFUND", false).await);
    assert_eq!(refunds.len(), 1);
    assert!(refunds[0].refund_apply_time.is_some());

    // gzip gives the same rows.
    let gz = download(&env, "20261124", "ALL", true).await;
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    assert_eq!(rows(&gz).0, all);

    // The 25th's bill is not ready on the 25th; the 23rd had no trades; bad inputs.
    assert!(matches!(decode_body(&download(&env, "20261125", "ALL", false).await).unwrap(), BillBody::NotReady));
    assert!(matches!(decode_body(&download(&env, "20261123", "ALL", false).await).unwrap(), BillBody::NoBill));
    let BillBody::Failed(e) = decode_body(&download(&env, "20261124", "EVERYTHING", false).await).unwrap() else {
        panic!("invalid bill_type must fail");
    };
    assert_eq!(e.return_msg, "invalid bill_type");
    env.control("/sandbox/clock", json!({"set": "2026-11-26 10:00:00"})).await;
    let (d25, _, _) = rows(&download(&env, "20261125", "ALL", false).await);
    assert_eq!(d25.len(), 1);
    assert_eq!(d25[0].out_trade_no, "B3");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn legacy_layout_per_merchant() {
    let cfg = SandboxConfig {
        merchants: vec![MerchantConfig {
            bill_layout: BillLayout::Legacy,
            fee_rate_per_100k: 1000,
            ..MerchantConfig::default()
        }],
        ..fast_config()
    };
    let env = Env::with(cfg).await;
    setup(&env).await;
    env.control("/sandbox/clock", json!({"set": "2026-11-25 11:00:00"})).await;
    let (all, sum, text) = rows(&download(&env, "20261124", "ALL", false).await);
    let header = text.lines().next().unwrap();
    assert_eq!(header.split(',').count(), 24, "{header}");
    assert!(header.contains("总金额") && header.contains("代金券或立减优惠金额"));
    assert_eq!(all.len(), 3);
    assert_eq!(sum.order_total, None);
    assert_eq!(all.iter().find(|r| r.out_trade_no == "B2").unwrap().fee.get(), 3_330, "1% of 3.33");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn fund_flow_needs_hmac_and_certificate() {
    let env = Env::start().await;
    setup(&env).await;
    let zs = env.sb.openid(minipay_sandbox::config::DEMO_USER, APPID);
    let t = signed(
        params(&[
            ("mch_appid", APPID),
            ("mchid", MCH),
            ("nonce_str", "n"),
            ("partner_trade_no", "F1"),
            ("openid", &zs),
            ("check_name", "NO_CHECK"),
            ("amount", "700"),
            ("desc", "x"),
            ("spbill_create_ip", "1.2.3.4"),
        ]),
        SignType::Md5,
    );
    assert_eq!(env.pay_tls("/mmpaymkttransfers/promotion/transfers", t).await["result_code"], "SUCCESS");
    env.control("/sandbox/clock", json!({"set": "2026-11-25 10:30:00"})).await;

    let f = [("bill_date", "20261124"), ("account_type", "Basic")];
    let md5 = signed(base_pay(&f), SignType::Md5);
    let r = post_xml(&env.tls, &env.tls_url("/pay/downloadfundflow"), &md5).await;
    assert_eq!(r["return_code"], "FAIL", "MD5 is refused");
    let hmac = signed(base_pay(&f), SignType::HmacSha256);
    let no_cert = post_xml(&env.plain, &env.tls_url("/pay/downloadfundflow"), &hmac).await;
    assert_eq!(no_cert["return_code"], "FAIL");
    let body = post_raw(&env.tls, &env.tls_url("/pay/downloadfundflow"), xml::encode(&hmac)).await.unwrap();
    let bytes = body.bytes().await.unwrap();
    let BillBody::Bill(text) = decode_body(&bytes).unwrap() else {
        panic!("not a fund flow: {}", String::from_utf8_lossy(&bytes));
    };
    let mut reader = FundFlowReader::new(text).unwrap();
    let mut names = Vec::new();
    while let Some(r) = reader.next_record() {
        let r = r.unwrap();
        names.push((r.business_name.to_owned(), r.amount.get()));
    }
    let s = reader.finish().unwrap();
    // B1 and B2 payments (with their fees), the refund, the payout; B3 is on the 25th.
    assert!(names.contains(&("交易".to_owned(), 10000)));
    assert!(names.contains(&("扣除交易手续费".to_owned(), 60)));
    assert!(names.contains(&("退款".to_owned(), 2500)));
    assert!(names.contains(&("企业付款".to_owned(), 700)));
    assert_eq!(s.income_total.get(), 10000 + 333);
    assert_eq!(s.expense_total.get(), 60 + 2 + 2500 + 700);
    let empty = signed(base_pay(&[("bill_date", "20261124"), ("account_type", "Operation")]), SignType::HmacSha256);
    let r = post_raw(&env.tls, &env.tls_url("/pay/downloadfundflow"), xml::encode(&empty)).await.unwrap();
    assert!(matches!(decode_body(&r.bytes().await.unwrap()).unwrap(), BillBody::NoBill));
    env.sb.shutdown().await;
}
