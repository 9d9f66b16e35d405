//! Every merchant endpoint, table-driven, over TLS with the right client certificate: a
//! complete request passes the common checks, a tampered one is 签名错误, and one missing a
//! required field is LACK_PARAMS.

mod common;

use common::*;
use wxpay::sign::SignType;
use wxpay::xml::Params;

/// A request field: (name, value).
type Field = (&'static str, &'static str);

struct Case {
    path: &'static str,
    fields: &'static [(&'static str, &'static str)],
    drop: &'static str,
    sign_type: SignType,
    pay_family: bool,
}

const PAY_IDS: [(&str, &str); 3] = [("appid", APPID), ("mch_id", MCH), ("nonce_str", "n1")];
const RP: [(&str, &str); 10] = [
    ("wxappid", APPID),
    ("mch_id", MCH),
    ("nonce_str", "n1"),
    ("mch_billno", "CHK1"),
    ("send_name", "s"),
    ("re_openid", "oCHECK"),
    ("total_amount", "100"),
    ("wishing", "w"),
    ("act_name", "a"),
    ("remark", "r"),
];

fn cases() -> Vec<Case> {
    let md5 = SignType::Md5;
    vec![
        Case {
            path: "/pay/unifiedorder",
            fields: &[
                ("body", "b"),
                ("out_trade_no", "CHK1"),
                ("total_fee", "1"),
                ("spbill_create_ip", "127.0.0.1"),
                ("notify_url", "http://127.0.0.1:9/n"),
                ("trade_type", "JSAPI"),
                ("openid", "oCHECK"),
            ],
            drop: "notify_url",
            sign_type: SignType::HmacSha256,
            pay_family: true,
        },
        Case {
            path: "/pay/orderquery",
            fields: &[("out_trade_no", "CHK1")],
            drop: "out_trade_no",
            sign_type: md5,
            pay_family: true,
        },
        Case {
            path: "/pay/closeorder",
            fields: &[("out_trade_no", "CHK1")],
            drop: "out_trade_no",
            sign_type: md5,
            pay_family: true,
        },
        Case {
            path: "/secapi/pay/refund",
            fields: &[("out_trade_no", "CHK1"), ("out_refund_no", "R1"), ("total_fee", "1"), ("refund_fee", "1")],
            drop: "refund_fee",
            sign_type: md5,
            pay_family: true,
        },
        Case {
            path: "/pay/refundquery",
            fields: &[("out_trade_no", "CHK1")],
            drop: "out_trade_no",
            sign_type: md5,
            pay_family: true,
        },
        Case {
            path: "/pay/downloadbill",
            fields: &[("bill_date", "20260101"), ("bill_type", "ALL")],
            drop: "bill_type",
            sign_type: md5,
            pay_family: true,
        },
        Case {
            path: "/pay/downloadfundflow",
            fields: &[("bill_date", "20260101"), ("account_type", "Basic")],
            drop: "account_type",
            sign_type: SignType::HmacSha256,
            pay_family: true,
        },
        Case {
            path: "/mmpaymkttransfers/gettransferinfo",
            fields: &[("partner_trade_no", "CHK1")],
            drop: "partner_trade_no",
            sign_type: md5,
            pay_family: false,
        },
        Case {
            path: "/mmpaymkttransfers/gethbinfo",
            fields: &[("mch_billno", "CHK1"), ("bill_type", "MCHT")],
            drop: "bill_type",
            sign_type: md5,
            pay_family: false,
        },
    ]
}

fn build(ids: &[(&str, &str)], fields: &[(&str, &str)], drop: Option<&str>, t: SignType) -> Params {
    let mut p = params(ids);
    p.extend(params(fields));
    if let Some(d) = drop {
        p.remove(d);
    }
    signed(p, t)
}

async fn run(env: &Env, path: &str, good: Params, lacking: Params, pay_family: bool) {
    // The complete request gets past the common checks (bills may still answer an
    // XML error about the date, which is business, not transport).
    let ok = env.pay_tls(path, good.clone()).await;
    assert_ne!(ok.get("return_msg").map(String::as_str), Some("签名错误"), "{path}: {ok:?}");
    assert!(ok["return_code"] == "SUCCESS" || path.contains("download"), "{path}: {ok:?}");
    assert_ne!(ok.get("err_code").map(String::as_str), Some("LACK_PARAMS"), "{path}");

    let mut tampered = good;
    tampered.insert("nonce_str".into(), "tampered".into());
    let bad = env.pay_tls(path, tampered).await;
    assert_eq!((bad["return_code"].as_str(), bad["return_msg"].as_str()), ("FAIL", "签名错误"), "{path}");
    if !pay_family {
        assert_eq!(bad["err_code"], "SIGN_ERROR", "{path}");
    }

    let lack = env.pay_tls(path, lacking).await;
    assert_eq!(lack["err_code"], "LACK_PARAMS", "{path}: {lack:?}");
    if pay_family {
        assert_signed(&lack);
    }
}

#[tokio::test]
async fn every_endpoint_checks_signature_and_required_fields() {
    let env = Env::start().await;
    for c in cases() {
        let ids: &[(&str, &str)] = &PAY_IDS;
        let good = build(ids, c.fields, None, c.sign_type);
        let lacking = build(ids, c.fields, Some(c.drop), c.sign_type);
        run(&env, c.path, good, lacking, c.pay_family).await;
    }
    // Payouts (mch_appid + mchid) and the three red-packet sends (wxappid + mch_id).
    let t = [
        ("mch_appid", APPID),
        ("mchid", MCH),
        ("nonce_str", "n1"),
        ("partner_trade_no", "CHK1"),
        ("openid", "oCHECK"),
        ("check_name", "NO_CHECK"),
        ("amount", "100"),
        ("desc", "d"),
        ("spbill_create_ip", "1.2.3.4"),
    ];
    let path = "/mmpaymkttransfers/promotion/transfers";
    run(&env, path, build(&t, &[], None, SignType::Md5), build(&t, &[], Some("openid"), SignType::Md5), false).await;
    let sends: [(&str, &[Field], &str); 3] = [
        ("/mmpaymkttransfers/sendredpack", &[("total_num", "1"), ("client_ip", "1.2.3.4")], "wishing"),
        (
            "/mmpaymkttransfers/sendgroupredpack",
            &[("total_num", "3"), ("amt_type", "ALL_RAND"), ("total_amount", "300")],
            "amt_type",
        ),
        (
            "/mmpaymkttransfers/sendminiprogramhb",
            &[("total_num", "1"), ("notify_way", "MINI_PROGRAM_JSAPI")],
            "notify_way",
        ),
    ];
    for (i, (path, extra, drop)) in sends.into_iter().enumerate() {
        let billno = format!("CHKRP{i}");
        let mut good = params(&RP);
        good.extend(params(extra));
        good.insert("mch_billno".into(), billno);
        let mut lacking = good.clone();
        lacking.remove(drop);
        run(&env, path, signed(good, SignType::Md5), signed(lacking, SignType::Md5), false).await;
    }
    env.sb.shutdown().await;
}
