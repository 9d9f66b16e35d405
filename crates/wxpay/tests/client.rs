//! The payment client against a fake upstream on 127.0.0.1: what it sends (path, headers,
//! ids, signature) and how every kind of answer — signed success, bad signature, 5xx, a
//! timeout, a dropped connection, return_code FAIL, business FAIL — becomes an `Outcome`.

mod fake_upstream;

use std::time::Duration;

use fake_upstream::{Captured, Reply, spawn};
use wxpay::api::{
    BillType, CheckName, DownloadBillRequest, GetHbInfoRequest, OrderQueryRequest, OrderRef, RedpackStatus,
    RefundRequest, TradeState, TransferRequest, UnifiedOrderRequest,
};
use wxpay::client::pem_to_pkcs12;
use wxpay::sign::{sign_params, verify, verify_as};
use wxpay::xml::{self, Params};
use wxpay::{ApiKey, CallError, Client, ClientConfig, ClientIdentity, Endpoint, Fen, Outcome, SignType};

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const MCH: &str = "1900000109";
const APPID: &str = "wxd930ea5d5a258f4f";

fn key() -> ApiKey {
    ApiKey::new(KEY)
}

fn config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(MCH, APPID, key());
    c.base_url = base.to_owned();
    c.timeout = Duration::from_millis(800);
    c.connect_timeout = Duration::from_millis(500);
    c
}

fn p(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn signed(mut params: Params, st: SignType) -> String {
    params.insert("nonce_str".into(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into());
    sign_params(&mut params, &key(), st);
    xml::encode(&params)
}

fn order() -> UnifiedOrderRequest {
    UnifiedOrderRequest {
        body: "咖啡, 大杯".into(),
        out_trade_no: "MP20261125000001".into(),
        total_fee: Fen::new(1),
        spbill_create_ip: "203.0.113.7".into(),
        notify_url: "https://pay.example.com/notify/wxpay".into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        ..Default::default()
    }
}

fn prepay_ok(st: SignType) -> String {
    signed(
        p(&[
            ("return_code", "SUCCESS"),
            ("return_msg", "OK"),
            ("appid", APPID),
            ("mch_id", MCH),
            ("result_code", "SUCCESS"),
            ("trade_type", "JSAPI"),
            ("prepay_id", "wx201411101639507cbf6ffd8b0779950874"),
        ]),
        st,
    )
}

fn request_params(c: &Captured) -> Params {
    xml::decode(&c.body).expect("the client sends a valid document")
}

#[tokio::test]
async fn signed_success_and_what_was_sent() {
    let fake = spawn(|_| Reply::xml(prepay_ok(SignType::Md5))).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    let out = client.unified_order(&order()).await.unwrap();
    match out {
        Outcome::Success(r) => {
            assert_eq!(r.prepay_id, "wx201411101639507cbf6ffd8b0779950874");
            assert_eq!(r.trade_type, "JSAPI");
        }
        other => panic!("{other:?}"),
    }
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path(), "/pay/unifiedorder");
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    let sent = request_params(r);
    assert_eq!(verify(&sent, &key()), Ok(SignType::Md5));
    assert_eq!(sent["appid"], APPID);
    assert_eq!(sent["mch_id"], MCH);
    assert_eq!(sent["trade_type"], "JSAPI");
    assert_eq!(sent["body"], "咖啡, 大杯");
    assert_eq!(sent["total_fee"], "1");
    assert_eq!(sent["nonce_str"].len(), 32);
    assert!(!sent.contains_key("sign_type"), "MD5 is the default and is not sent");
}

#[tokio::test]
async fn hmac_merchant_signs_and_verifies_hmac() {
    let fake = spawn(|_| Reply::xml(prepay_ok(SignType::HmacSha256))).await;
    let mut cfg = config(&fake.base_url);
    cfg.sign_type = SignType::HmacSha256;
    let client = Client::new(cfg).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_success());
    let sent = request_params(&fake.requests()[0]);
    assert_eq!(sent["sign_type"], "HMAC-SHA256");
    assert_eq!(verify(&sent, &key()), Ok(SignType::HmacSha256));
}

#[tokio::test]
async fn bad_response_signature_is_unknown() {
    let fake = spawn(|_| {
        let mut body = prepay_ok(SignType::Md5);
        body = body.replace("wx201411101639507cbf6ffd8b0779950874", "wx_attacker_prepay");
        Reply::xml(body)
    })
    .await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    let out = client.unified_order(&order()).await.unwrap();
    assert!(out.is_unknown(), "{out:?}");
}

#[tokio::test]
async fn unsigned_success_on_a_signed_endpoint_is_unknown() {
    let body = xml::encode(&p(&[
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("trade_type", "JSAPI"),
        ("prepay_id", "wx1"),
    ]));
    let fake = spawn(move |_| Reply::xml(body.clone())).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn http_500_is_unknown() {
    let fake = spawn(|_| Reply::status(500, "upstream broke")).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    match client.unified_order(&order()).await.unwrap() {
        Outcome::Unknown { reason } => assert!(reason.contains("500"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_delay_past_the_timeout_is_unknown() {
    let fake = spawn(|_| Reply::Delay(Duration::from_secs(5), Box::new(Reply::xml(prepay_ok(SignType::Md5))))).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    match client.unified_order(&order()).await.unwrap() {
        Outcome::Unknown { reason } => assert!(reason.contains("timeout"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_connection_is_unknown() {
    let fake = spawn(|_| Reply::Drop).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn nothing_listening_is_unknown() {
    // A port that was just free: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn garbage_body_is_unknown() {
    let fake = spawn(|_| Reply::xml("<html>502 Bad Gateway</htm")).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn return_code_fail_is_failed() {
    let body = xml::encode(&p(&[("return_code", "FAIL"), ("return_msg", "签名错误")]));
    let fake = spawn(move |_| Reply::xml(body.clone())).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert_eq!(client.unified_order(&order()).await.unwrap(), Outcome::failed("RETURN_FAIL", "签名错误"));
}

#[tokio::test]
async fn business_fail_is_failed_with_the_code() {
    let body = signed(
        p(&[
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "ORDERPAID"),
            ("err_code_des", "该订单已支付"),
        ]),
        SignType::Md5,
    );
    let fake = spawn(move |_| Reply::xml(body.clone())).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert_eq!(client.unified_order(&order()).await.unwrap(), Outcome::failed("ORDERPAID", "该订单已支付"));
}

#[tokio::test]
async fn systemerror_is_unknown() {
    let body = signed(
        p(&[
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "SYSTEMERROR"),
            ("err_code_des", "系统错误"),
        ]),
        SignType::Md5,
    );
    let fake = spawn(move |_| Reply::xml(body.clone())).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    assert!(client.unified_order(&order()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn order_query_parses_state_and_rejects_unknown_states() {
    let paid = signed(
        p(&[
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("trade_state", "SUCCESS"),
            ("out_trade_no", "MP1"),
            ("transaction_id", "4200000015201711256947025404"),
            ("total_fee", "100"),
            ("cash_fee", "100"),
            ("time_end", "20171125153617"),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            ("bank_type", "CMC"),
        ]),
        SignType::Md5,
    );
    let odd = signed(
        p(&[("return_code", "SUCCESS"), ("result_code", "SUCCESS"), ("trade_state", "TELEPORTED")]),
        SignType::Md5,
    );
    let fake = spawn(move |c| {
        if request_params(c)["out_trade_no"] == "MP1" { Reply::xml(paid.clone()) } else { Reply::xml(odd.clone()) }
    })
    .await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    match client.order_query(&OrderQueryRequest { order: OrderRef::OutTradeNo("MP1".into()) }).await.unwrap() {
        Outcome::Success(r) => {
            assert_eq!(r.trade_state, TradeState::Success);
            assert_eq!(r.total_fee, Some(Fen::new(100)));
            assert_eq!(r.time_end.unwrap().to_rfc3339(), "2017-11-25T07:36:17+00:00");
        }
        other => panic!("{other:?}"),
    }
    let out = client.order_query(&OrderQueryRequest { order: OrderRef::OutTradeNo("MP2".into()) }).await.unwrap();
    match out {
        Outcome::Unknown { reason } => assert!(reason.contains("TELEPORTED"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn certificate_endpoint_without_identity_fails_before_io() {
    let fake = spawn(|_| Reply::xml("<xml/>")).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    let req = RefundRequest {
        order: OrderRef::OutTradeNo("MP1".into()),
        out_refund_no: "RF1".into(),
        total_fee: Fen::new(100),
        refund_fee: Fen::new(100),
        refund_desc: None,
        notify_url: None,
        refund_account: None,
    };
    assert_eq!(client.refund(&req).await, Err(CallError::NoIdentity(Endpoint::Refund)));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn invalid_request_fails_before_io() {
    let fake = spawn(|_| Reply::xml("<xml/>")).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    let mut o = order();
    o.total_fee = Fen::ZERO;
    assert!(matches!(client.unified_order(&o).await, Err(CallError::InvalidRequest(_))));
    assert!(fake.requests().is_empty());
}

/// A throwaway self-signed certificate and key (PEM), made with OpenSSL.
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", MCH).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}

#[tokio::test]
async fn transfer_with_pem_identity_uses_payout_names_and_md5() {
    let ok = xml::encode(&p(&[
        ("return_code", "SUCCESS"),
        ("return_msg", ""),
        ("mch_appid", APPID),
        ("mchid", MCH),
        ("nonce_str", "lxuDzMnRjpcXzxLx0q"),
        ("result_code", "SUCCESS"),
        ("partner_trade_no", "PO20261125000001"),
        ("payment_no", "10000098201411111234567890"),
        ("payment_time", "2015-05-19 15:26:59"),
    ]));
    let fake = spawn(move |_| Reply::xml(ok.clone())).await;
    let (cert, pkey) = self_signed();
    let mut cfg = config(&fake.base_url);
    cfg.sign_type = SignType::HmacSha256; // payouts stay MD5 whatever the merchant uses
    cfg.identity = Some(ClientIdentity::Pem { cert_pem: cert, key_pem: String::from_utf8(pkey).unwrap().into() });
    let client = Client::new(cfg).unwrap();
    assert!(client.has_identity());
    let req = TransferRequest {
        partner_trade_no: "PO20261125000001".into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        check_name: CheckName::ForceCheck { re_user_name: "张三".into() },
        amount: Fen::new(100),
        desc: "奖励".into(),
        spbill_create_ip: Some("203.0.113.7".into()),
        device_info: None,
    };
    match client.transfer(&req).await.unwrap() {
        Outcome::Success(r) => {
            assert_eq!(r.payment_no, "10000098201411111234567890");
            assert_eq!(r.payment_time.to_rfc3339(), "2015-05-19T07:26:59+00:00");
        }
        other => panic!("{other:?}"),
    }
    let r = &fake.requests()[0];
    assert_eq!(r.path(), "/mmpaymkttransfers/promotion/transfers");
    let sent = request_params(r);
    assert_eq!(sent["mch_appid"], APPID);
    assert_eq!(sent["mchid"], MCH);
    assert!(!sent.contains_key("appid") && !sent.contains_key("mch_id"));
    assert_eq!(sent["check_name"], "FORCE_CHECK");
    assert_eq!(sent["re_user_name"], "张三");
    assert!(!sent.contains_key("sign_type"));
    verify_as(&sent, &key(), SignType::Md5).unwrap();
}

#[tokio::test]
async fn transfer_busy_under_return_fail_is_unknown() {
    let busy = xml::encode(&p(&[("return_code", "FAIL"), ("return_msg", "系统繁忙,请稍后再试."), ("err_code", "268")]));
    let fake = spawn(move |_| Reply::xml(busy.clone())).await;
    let (cert, pkey) = self_signed();
    let mut cfg = config(&fake.base_url);
    let der = pem_to_pkcs12(&cert, &pkey, MCH).unwrap();
    cfg.identity = Some(ClientIdentity::Pkcs12 { der, password: None });
    let client = Client::new(cfg).unwrap();
    let req = TransferRequest {
        partner_trade_no: "PO1".into(),
        openid: "o1".into(),
        check_name: CheckName::NoCheck,
        amount: Fen::new(100),
        desc: "d".into(),
        spbill_create_ip: None,
        device_info: None,
    };
    assert!(client.transfer(&req).await.unwrap().is_unknown());
}

#[test]
fn wrong_pkcs12_password_is_a_build_error() {
    let (cert, pkey) = self_signed();
    let der = pem_to_pkcs12(&cert, &pkey, "right").unwrap();
    let mut cfg = config("http://127.0.0.1:9");
    cfg.identity = Some(ClientIdentity::Pkcs12 { der, password: Some("wrong".to_string().into()) });
    assert!(Client::new(cfg).is_err());
}

#[tokio::test]
async fn gethbinfo_reads_hblist() {
    let body = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg>\
        <result_code><![CDATA[SUCCESS]]></result_code><mch_id><![CDATA[10000098]]></mch_id>\
        <detail_id><![CDATA[10000417012016080830956240040]]></detail_id>\
        <mch_billno><![CDATA[0010010404201411170000046545]]></mch_billno>\
        <status><![CDATA[RECEIVED]]></status><send_type><![CDATA[API]]></send_type>\
        <hb_type><![CDATA[NORMAL]]></hb_type><total_num>1</total_num><total_amount>100</total_amount>\
        <send_time><![CDATA[2016-08-08 21:49:22]]></send_time>\
        <hblist><hbinfo><openid><![CDATA[oHkLxtzmyHXX6FW_cAWo_orTSRXs]]></openid><amount>100</amount>\
        <rcv_time><![CDATA[2016-08-08 21:49:46]]></rcv_time></hbinfo></hblist></xml>";
    let fake = spawn(move |_| Reply::xml(body)).await;
    let (cert, pkey) = self_signed();
    let mut cfg = config(&fake.base_url);
    cfg.identity = Some(ClientIdentity::Pem { cert_pem: cert, key_pem: String::from_utf8(pkey).unwrap().into() });
    let client = Client::new(cfg).unwrap();
    let out = client.get_hb_info(&GetHbInfoRequest { mch_billno: "0010010404201411170000046545".into() }).await;
    match out.unwrap() {
        Outcome::Success(r) => {
            assert_eq!(r.status, RedpackStatus::Received);
            assert_eq!(r.total_amount, Fen::new(100));
            assert_eq!(r.hblist.len(), 1);
            assert_eq!(r.hblist[0].amount, Fen::new(100));
        }
        other => panic!("{other:?}"),
    }
    let sent = request_params(&fake.requests()[0]);
    assert_eq!(sent["bill_type"], "MCHT");
    assert_eq!(sent["appid"], APPID);
}

#[tokio::test]
async fn download_bill_hands_over_the_raw_body() {
    let bill = "交易时间,公众账号ID\n`2017-11-25 15:36:17,`wx1\n总交易单数\n`1\n";
    let fake =
        spawn(move |_| Reply::Http { status: 200, content_type: "text/plain", body: bill.as_bytes().to_vec() }).await;
    let client = Client::new(config(&fake.base_url)).unwrap();
    let req = DownloadBillRequest {
        bill_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        bill_type: BillType::All,
        gzip: false,
    };
    assert_eq!(client.download_bill(&req).await.unwrap(), Outcome::Success(bill.as_bytes().to_vec()));
    let sent = request_params(&fake.requests()[0]);
    assert_eq!(sent["bill_date"], "20261124");
    assert_eq!(sent["bill_type"], "ALL");
}

#[test]
fn extra_root_ca_is_loaded_and_garbage_refused() {
    let (cert, _) = self_signed();
    let mut cfg = config("https://127.0.0.1:9");
    cfg.extra_root_ca_pem = Some(cert);
    assert!(Client::new(cfg).is_ok());
    let mut cfg = config("https://127.0.0.1:9");
    cfg.extra_root_ca_pem = Some(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec());
    assert!(matches!(Client::new(cfg), Err(wxpay::client::ClientError::RootCa(_))));
}
