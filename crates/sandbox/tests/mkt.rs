//! Payouts to balance and red packets over TLS: idempotency by partner_trade_no /
//! mch_billno, limits, names, balances, scene_id rules, group splitting, opening and expiry.

mod common;

use common::*;
use minipay_sandbox::config::DEMO_USER;
use minipay_sandbox::{Limits, MerchantConfig, SandboxConfig, UserConfig};
use serde_json::json;
use wxpay::sign::SignType;
use wxpay::xml::{self, Params};

fn cfg() -> SandboxConfig {
    let limits = Limits {
        transfer_daily_user_count: 3,
        transfer_daily_user_fen: 5000,
        redpack_daily_user_count: 3,
        ..Limits::default()
    };
    SandboxConfig {
        merchants: vec![MerchantConfig { limits, ..MerchantConfig::default() }],
        users: vec![UserConfig::default(), UserConfig { id: "anon".into(), real_name: None, phone: None }],
        ..fast_config()
    }
}

fn transfer(no: &str, openid: &str, amount: &str, check: &str, name: Option<&str>) -> Params {
    let mut p = params(&[
        ("mch_appid", APPID),
        ("mchid", MCH),
        ("nonce_str", "abc123"),
        ("partner_trade_no", no),
        ("openid", openid),
        ("check_name", check),
        ("amount", amount),
        ("desc", "佣金"),
        ("spbill_create_ip", "10.0.0.1"),
    ]);
    if let Some(n) = name {
        p.insert("re_user_name".into(), n.into());
    }
    signed(p, SignType::Md5)
}

const TRANSFERS: &str = "/mmpaymkttransfers/promotion/transfers";

#[tokio::test]
async fn payout_happy_path_idempotency_and_query() {
    let env = Env::with(cfg()).await;
    let openid = env.sb.openid(DEMO_USER, APPID);
    let before = env.sb.balance(MCH).get();
    let r = env.pay_tls(TRANSFERS, transfer("PT1", &openid, "1500", "FORCE_CHECK", Some("张三"))).await;
    assert_eq!(r["result_code"], "SUCCESS", "{r:?}");
    assert_eq!(r["partner_trade_no"], "PT1");
    assert_eq!(r["mchid"], MCH);
    assert_eq!(r["mch_appid"], APPID);
    assert!(!r.contains_key("sign"), "WeChat does not sign payout answers");
    assert_eq!(r["payment_time"].len(), 19);
    assert_eq!(env.sb.balance(MCH).get(), before - 1500);

    // The same number and parameters: the same answer, no second payment.
    let again = env.pay_tls(TRANSFERS, transfer("PT1", &openid, "1500", "FORCE_CHECK", Some("张三"))).await;
    assert_eq!(again["payment_no"], r["payment_no"]);
    assert_eq!(env.sb.balance(MCH).get(), before - 1500);
    assert_eq!(env.sb.transfers().len(), 1);
    // The same number with other parameters.
    let other = env.pay_tls(TRANSFERS, transfer("PT1", &openid, "1600", "FORCE_CHECK", Some("张三"))).await;
    assert_eq!(other["err_code"], "FATAL_ERROR");

    let q = signed(base_pay(&[("partner_trade_no", "PT1")]), SignType::Md5);
    let info = env.pay_tls("/mmpaymkttransfers/gettransferinfo", q).await;
    assert_eq!(info["status"], "SUCCESS");
    assert_eq!(info["payment_amount"], "1500");
    assert_eq!(info["detail_id"], r["payment_no"]);
    assert_eq!(info["transfer_name"], "张三");
    let q = signed(base_pay(&[("partner_trade_no", "nope")]), SignType::Md5);
    assert_eq!(env.pay_tls("/mmpaymkttransfers/gettransferinfo", q).await["err_code"], "NOT_FOUND");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn payout_rules() {
    let env = Env::with(cfg()).await;
    let zs = env.sb.openid(DEMO_USER, APPID);
    let anon = env.sb.openid("anon", APPID);
    let t = |no: &str, who: &str, amt: &str, check: &str, name: Option<&str>| transfer(no, who, amt, check, name);
    let code = |p: Params| async { env.pay_tls(TRANSFERS, p).await["err_code"].clone() };

    assert_eq!(code(t("A1", &zs, "1000", "FORCE_CHECK", Some("李四"))).await, "NAME_MISMATCH");
    assert_eq!(code(t("A2", &zs, "1000", "FORCE_CHECK", None)).await, "PARAM_ERROR");
    assert_eq!(code(t("A3", &anon, "1000", "NO_CHECK", None)).await, "V2_ACCOUNT_SIMPLE_BAN");
    assert_eq!(code(t("A4", &zs, "99", "NO_CHECK", None)).await, "AMOUNT_LIMIT");
    assert_eq!(code(t("A5", &zs, "2000001", "NO_CHECK", None)).await, "AMOUNT_LIMIT");
    assert_eq!(code(t("A6", &zs, "1000", "MAYBE_CHECK", None)).await, "PARAM_ERROR");
    assert_eq!(code(t("A7", "bad openid!", "1000", "NO_CHECK", None)).await, "OPENID_ERROR");
    // Daily per-user limits (5000 fen, 3 payouts in this config).
    assert_eq!(env.pay_tls(TRANSFERS, t("B1", &zs, "3000", "NO_CHECK", None)).await["result_code"], "SUCCESS");
    assert_eq!(code(t("B2", &zs, "2001", "NO_CHECK", None)).await, "MONEY_LIMIT");
    assert_eq!(env.pay_tls(TRANSFERS, t("B3", &zs, "100", "NO_CHECK", None)).await["result_code"], "SUCCESS");
    assert_eq!(env.pay_tls(TRANSFERS, t("B4", &zs, "100", "NO_CHECK", None)).await["result_code"], "SUCCESS");
    assert_eq!(code(t("B5", &zs, "100", "NO_CHECK", None)).await, "SENDNUM_LIMIT");
    // The next Beijing day starts afresh.
    env.control("/sandbox/clock", json!({"advance_secs": 86400})).await;
    env.control("/sandbox/balance", json!({"balance_fen": 50})).await;
    assert_eq!(code(t("C1", &zs, "100", "NO_CHECK", None)).await, "NOTENOUGH");
    env.control("/sandbox/balance", json!({"balance_fen": 100})).await;
    assert_eq!(env.pay_tls(TRANSFERS, t("C1", &zs, "100", "NO_CHECK", None)).await["result_code"], "SUCCESS");

    // Transport-level checks: MD5 only, a valid signature, all fields, the certificate.
    let mut h = params(&[("mch_appid", APPID), ("mchid", MCH), ("nonce_str", "n"), ("partner_trade_no", "D1")]);
    h = signed(h, SignType::HmacSha256);
    assert_eq!(env.pay_tls(TRANSFERS, h).await["return_code"], "FAIL");
    let mut bad = t("D2", &zs, "100", "NO_CHECK", None);
    bad.insert("amount".into(), "99999".into());
    assert_eq!(env.pay_tls(TRANSFERS, bad).await["err_code"], "SIGN_ERROR");
    let mut lack = t("D3", &zs, "100", "NO_CHECK", None);
    lack.remove("desc");
    let lack = signed(lack, SignType::Md5);
    assert_eq!(env.pay_tls(TRANSFERS, lack).await["err_code"], "LACK_PARAMS");
    let no_cert = post_xml(&env.plain, &env.tls_url(TRANSFERS), &t("D4", &zs, "100", "NO_CHECK", None)).await;
    assert_eq!((no_cert["return_code"].as_str(), no_cert["err_code"].as_str()), ("FAIL", "CA_ERROR"));
    assert_eq!(env.sb.transfers().len(), 4);
    env.sb.shutdown().await;
}

fn redpack(no: &str, openid: &str, amount: &str, extra: &[(&str, &str)]) -> Params {
    let mut p = params(&[
        ("wxappid", APPID),
        ("mch_id", MCH),
        ("nonce_str", "n0nce"),
        ("mch_billno", no),
        ("send_name", "小店"),
        ("re_openid", openid),
        ("total_amount", amount),
        ("total_num", "1"),
        ("wishing", "恭喜发财"),
        ("client_ip", "10.0.0.1"),
        ("act_name", "开业"),
        ("remark", "备注"),
    ]);
    for (k, v) in extra {
        p.insert((*k).into(), (*v).into());
    }
    signed(p, SignType::Md5)
}

async fn hbinfo(env: &Env, no: &str) -> xml::Document {
    let q = signed(base_pay(&[("mch_billno", no), ("bill_type", "MCHT")]), SignType::Md5);
    let r = post_raw(&env.tls, &env.tls_url("/mmpaymkttransfers/gethbinfo"), xml::encode(&q)).await.unwrap();
    xml::decode_document(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn red_packet_send_open_expire_and_rules() {
    let env = Env::with(cfg()).await;
    let zs = env.sb.openid(DEMO_USER, APPID);
    let send = "/mmpaymkttransfers/sendredpack";
    let before = env.sb.balance(MCH).get();
    let r = env.pay_tls(send, redpack("RP1", &zs, "500", &[])).await;
    assert_eq!(r["result_code"], "SUCCESS", "{r:?}");
    assert_eq!((r["wxappid"].as_str(), r["total_amount"].as_str()), (APPID, "500"));
    assert!(!r.contains_key("sign"));
    let again = env.pay_tls(send, redpack("RP1", &zs, "500", &[])).await;
    assert_eq!(again["send_listid"], r["send_listid"]);
    assert_eq!(env.sb.balance(MCH).get(), before - 500);
    assert_eq!(env.pay_tls(send, redpack("RP1", &zs, "600", &[])).await["err_code"], "FATAL_ERROR");

    let d = hbinfo(&env, "RP1").await;
    assert_eq!(d.fields["status"], "SENT");
    assert_eq!(d.fields["detail_id"], r["send_listid"]);
    let (s, _) = env.control("/sandbox/redpacks/open", json!({"mch_billno": "RP1"})).await;
    assert_eq!(s, 200);
    let d = hbinfo(&env, "RP1").await;
    assert_eq!(d.fields["status"], "RECEIVED");
    assert_eq!(d.lists["hblist"][0]["openid"], zs);
    assert_eq!(d.lists["hblist"][0]["amount"], "500");

    // Unopened for 24 hours of sandbox time: REFUND, the money back on the account.
    env.pay_tls(send, redpack("RP2", &zs, "300", &[])).await;
    env.control("/sandbox/clock", json!({"advance_secs": 24 * 3600})).await;
    let d = hbinfo(&env, "RP2").await;
    assert_eq!(d.fields["status"], "REFUND");
    assert_eq!(d.fields["refund_amount"], "300");
    assert_eq!(env.sb.balance(MCH).get(), before - 500);

    // Amount rules: 1–200 yuan without scene_id, wider with one.
    assert_eq!(env.pay_tls(send, redpack("RP3", &zs, "99", &[])).await["err_code"], "MONEY_LIMIT");
    assert_eq!(env.pay_tls(send, redpack("RP4", &zs, "25000", &[])).await["err_code"], "MONEY_LIMIT");
    let ok = env.pay_tls(send, redpack("RP5", &zs, "25000", &[("scene_id", "PRODUCT_1")])).await;
    assert_eq!(ok["result_code"], "SUCCESS");
    assert_eq!(
        env.pay_tls(send, redpack("RP6", &zs, "500", &[("scene_id", "PRODUCT_9")])).await["err_code"],
        "PARAM_ERROR"
    );
    assert_eq!(env.pay_tls(send, redpack("RP7", &zs, "500", &[("total_num", "2")])).await["err_code"], "PARAM_ERROR");
    env.pay_tls(send, redpack("RP8", &zs, "100", &[])).await;
    env.pay_tls(send, redpack("RP9", &zs, "100", &[])).await;
    assert_eq!(env.pay_tls(send, redpack("RP10", &zs, "100", &[])).await["err_code"], "SENDNUM_LIMIT");
    let other = env.sb.openid("someone-else", APPID);
    env.control("/sandbox/balance", json!({"balance_fen": 99})).await;
    assert_eq!(env.pay_tls(send, redpack("RP11", &other, "100", &[])).await["err_code"], "NOTENOUGH");
    assert_eq!(hbinfo(&env, "nope").await.fields["err_code"], "NOT_FOUND");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn group_and_mini_program_red_packets() {
    let env = Env::with(cfg()).await;
    let zs = env.sb.openid(DEMO_USER, APPID);
    let group = "/mmpaymkttransfers/sendgroupredpack";
    let g =
        |no: &str, num: &str, amt_type: &str| redpack(no, &zs, "1000", &[("total_num", num), ("amt_type", amt_type)]);
    assert_eq!(env.pay_tls(group, g("G1", "2", "ALL_RAND")).await["err_code"], "PARAM_ERROR");
    assert_eq!(env.pay_tls(group, g("G2", "3", "ALL_SAME")).await["err_code"], "PARAM_ERROR");
    let r = env.pay_tls(group, g("G3", "3", "ALL_RAND")).await;
    assert_eq!(r["result_code"], "SUCCESS", "{r:?}");
    for _ in 0..3 {
        assert_eq!(env.control("/sandbox/redpacks/open", json!({"mch_billno": "G3"})).await.0, 200);
    }
    assert_eq!(env.control("/sandbox/redpacks/open", json!({"mch_billno": "G3"})).await.0, 409);
    let d = hbinfo(&env, "G3").await;
    assert_eq!(d.fields["status"], "RECEIVED");
    assert_eq!(d.fields["hb_type"], "GROUP");
    let shares: Vec<i64> = d.lists["hblist"].iter().map(|h| h["amount"].parse().unwrap()).collect();
    assert_eq!(shares.len(), 3);
    assert_eq!(shares.iter().sum::<i64>(), 1000);
    assert!(shares.iter().all(|&s| s >= 1));
    assert_eq!(d.lists["hblist"][0]["openid"], zs);

    let mini = "/mmpaymkttransfers/sendminiprogramhb";
    let mut p = redpack("M1", &zs, "500", &[("notify_way", "MINI_PROGRAM_JSAPI")]);
    p.remove("client_ip");
    let r = env.pay_tls(mini, signed(p, SignType::Md5)).await;
    assert_eq!(r["result_code"], "SUCCESS", "{r:?}");
    assert!(r["package"].contains(&r["send_listid"]));
    let r = env.pay_tls(mini, redpack("M2", &zs, "500", &[("notify_way", "MSG")])).await;
    assert_eq!(r["err_code"], "PARAM_ERROR");
    env.sb.shutdown().await;
}
