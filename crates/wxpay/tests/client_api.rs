//! Request encoding (field names, sign type, certificate flag per endpoint) and response
//! decoding from realistic WeChat answers, without HTTP: `build_request` and `interpret`.

use chrono::{NaiveDate, TimeZone, Utc};
use wxpay::api::{
    AccountType, BillType, CheckName, CloseOrderRequest, DownloadBillRequest, DownloadFundFlowRequest, Encode,
    GetHbInfoRequest, GetTransferInfoRequest, MerchantIds, OrderQueryRequest, OrderRef, RefundQueryRequest,
    RefundQueryResponse, RefundRef, RefundRequest, RefundStatus, SceneId, SendGroupRedpackRequest,
    SendMiniProgramHbRequest, SendRedpackRequest, TransferRequest, TransferStatus, UnifiedOrderRequest, build_request,
};
use wxpay::client::interpret;
use wxpay::sign::{sign_params, verify_as};
use wxpay::xml::{self, Params};
use wxpay::{ApiKey, Endpoint, Fen, Outcome, SignType};

fn key() -> ApiKey {
    ApiKey::new("192006250b4c09247ec02edce69f6a2d")
}

fn ids() -> MerchantIds {
    MerchantIds { appid: "wxd930ea5d5a258f4f".into(), mch_id: "10000100".into() }
}

/// Builds with an HMAC merchant, checks the endpoint's sign type took effect, and returns
/// the sorted field names.
fn built<R: Encode>(req: &R, expect: SignType) -> Params {
    let (p, st) = build_request(req, &ids(), &key(), SignType::HmacSha256, "ibuaiVcKdpRxkhJA");
    assert_eq!(st, expect, "{:?}", R::ENDPOINT);
    verify_as(&p, &key(), expect).unwrap();
    assert_eq!(p.contains_key("sign_type"), expect == SignType::HmacSha256);
    p
}

fn names(p: &Params) -> Vec<&str> {
    p.keys().map(String::as_str).collect()
}

#[test]
fn unified_order_fields_and_times() {
    let req = UnifiedOrderRequest {
        body: "b".into(),
        out_trade_no: "MP1".into(),
        total_fee: Fen::new(2500),
        spbill_create_ip: "203.0.113.7".into(),
        notify_url: "https://x/n".into(),
        openid: "o1".into(),
        attach: Some("a,b".into()),
        time_start: Some(Utc.with_ymd_and_hms(2026, 11, 25, 1, 0, 0).unwrap()),
        time_expire: Some(Utc.with_ymd_and_hms(2026, 11, 25, 16, 30, 0).unwrap()),
        profit_sharing: Some(true),
        ..Default::default()
    };
    assert!(!Endpoint::UnifiedOrder.needs_cert());
    let p = built(&req, SignType::HmacSha256);
    assert_eq!(p["time_start"], "20261125090000");
    assert_eq!(p["time_expire"], "20261126003000", "crosses midnight in Shanghai");
    assert_eq!(p["total_fee"], "2500");
    assert_eq!(p["profit_sharing"], "Y");
    assert_eq!(
        names(&p),
        [
            "appid",
            "attach",
            "body",
            "mch_id",
            "nonce_str",
            "notify_url",
            "openid",
            "out_trade_no",
            "profit_sharing",
            "sign",
            "sign_type",
            "spbill_create_ip",
            "time_expire",
            "time_start",
            "total_fee",
            "trade_type"
        ]
    );
}

#[test]
fn query_close_refund_fields() {
    let p = built(&OrderQueryRequest { order: OrderRef::TransactionId("42".into()) }, SignType::HmacSha256);
    assert_eq!(p["transaction_id"], "42");
    assert!(!p.contains_key("out_trade_no"));
    let p = built(&CloseOrderRequest { out_trade_no: "MP1".into() }, SignType::HmacSha256);
    assert_eq!(p["out_trade_no"], "MP1");

    let refund = RefundRequest {
        order: OrderRef::OutTradeNo("MP1".into()),
        out_refund_no: "RF1".into(),
        total_fee: Fen::new(100),
        refund_fee: Fen::new(40),
        refund_desc: Some("退款".into()),
        notify_url: Some("https://x/r".into()),
        refund_account: None,
    };
    assert!(Endpoint::Refund.needs_cert());
    assert_eq!(Endpoint::Refund.path(), "secapi/pay/refund");
    let p = built(&refund, SignType::HmacSha256);
    assert_eq!((p["total_fee"].as_str(), p["refund_fee"].as_str()), ("100", "40"));
    assert!(RefundRequest { refund_fee: Fen::new(101), ..refund }.validate().is_err());

    let p = built(&RefundQueryRequest { by: RefundRef::OutRefundNo("RF1".into()), offset: None }, SignType::HmacSha256);
    assert_eq!(p["out_refund_no"], "RF1");
}

#[test]
fn download_fields_and_fund_flow_is_hmac_only() {
    let d = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let p = built(
        &DownloadBillRequest { bill_date: d, bill_type: BillType::RechargeRefund, gzip: true },
        SignType::HmacSha256,
    );
    assert_eq!((p["bill_type"].as_str(), p["tar_type"].as_str()), ("RECHARGE_REFUND", "GZIP"));
    // Even an MD5 merchant signs downloadfundflow with HMAC-SHA256.
    let req = DownloadFundFlowRequest { bill_date: d, account_type: AccountType::Operation, gzip: false };
    let (p, st) = build_request(&req, &ids(), &key(), SignType::Md5, "n");
    assert_eq!(st, SignType::HmacSha256);
    assert_eq!(p["sign_type"], "HMAC-SHA256");
    assert_eq!(p["account_type"], "Operation");
    assert!(Endpoint::DownloadFundFlow.needs_cert() && !Endpoint::DownloadBill.needs_cert());
}

#[test]
fn payout_fields_are_md5_and_named_per_endpoint() {
    let t = TransferRequest {
        partner_trade_no: "PO1".into(),
        openid: "o1".into(),
        check_name: CheckName::NoCheck,
        amount: Fen::new(150),
        desc: "d".into(),
        spbill_create_ip: None,
        device_info: None,
    };
    let p = built(&t, SignType::Md5);
    assert_eq!(
        names(&p),
        ["amount", "check_name", "desc", "mch_appid", "mchid", "nonce_str", "openid", "partner_trade_no", "sign"]
    );
    assert_eq!(p["check_name"], "NO_CHECK");
    let bad = TransferRequest { check_name: CheckName::ForceCheck { re_user_name: String::new() }, ..t };
    assert!(bad.validate().is_err());

    let p = built(&GetTransferInfoRequest { partner_trade_no: "PO1".into() }, SignType::Md5);
    assert_eq!(names(&p), ["appid", "mch_id", "nonce_str", "partner_trade_no", "sign"]);

    let r = SendRedpackRequest {
        mch_billno: "RB1".into(),
        send_name: "店".into(),
        re_openid: "o1".into(),
        total_amount: Fen::new(30000),
        wishing: "w".into(),
        client_ip: "203.0.113.7".into(),
        act_name: "a".into(),
        remark: "r".into(),
        scene_id: Some(SceneId::Product4),
        risk_info: None,
    };
    let p = built(&r, SignType::Md5);
    assert_eq!(
        (p["wxappid"].as_str(), p["total_num"].as_str(), p["scene_id"].as_str()),
        ("wxd930ea5d5a258f4f", "1", "PRODUCT_4")
    );
    assert!(!p.contains_key("appid"));

    let g = SendGroupRedpackRequest {
        mch_billno: "RB2".into(),
        send_name: "店".into(),
        re_openid: "o1".into(),
        total_amount: Fen::new(300),
        total_num: 3,
        wishing: "w".into(),
        act_name: "a".into(),
        remark: "r".into(),
        scene_id: None,
        risk_info: None,
    };
    let p = built(&g, SignType::Md5);
    assert_eq!((p["amt_type"].as_str(), p["total_num"].as_str()), ("ALL_RAND", "3"));
    assert!(!p.contains_key("client_ip"));
    assert!(SendGroupRedpackRequest { total_num: 2, ..g }.validate().is_err());

    let m = SendMiniProgramHbRequest {
        mch_billno: "RB3".into(),
        send_name: "店".into(),
        re_openid: "o1".into(),
        total_amount: Fen::new(100),
        wishing: "w".into(),
        act_name: "a".into(),
        remark: "r".into(),
        scene_id: None,
    };
    let p = built(&m, SignType::Md5);
    assert_eq!(p["notify_way"], "MINI_PROGRAM_JSAPI");
    assert!(!p.contains_key("client_ip"));

    let p = built(&GetHbInfoRequest { mch_billno: "RB1".into() }, SignType::Md5);
    assert_eq!(names(&p), ["appid", "bill_type", "mch_billno", "mch_id", "nonce_str", "sign"]);
    for e in [Endpoint::Transfers, Endpoint::GetTransferInfo, Endpoint::SendRedpack, Endpoint::GetHbInfo] {
        assert!(e.needs_cert(), "{e:?}");
    }
}

fn signed_answer(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut p: Params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    sign_params(&mut p, &key(), SignType::Md5);
    xml::encode(&p).into_bytes()
}

#[test]
fn refundquery_n_fields_become_a_vec() {
    let body = signed_answer(&[
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("nonce_str", "TeqClE3i0mvn3DrK"),
        ("transaction_id", "1008450740201411110005820873"),
        ("out_trade_no", "1415757673"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("refund_count", "2"),
        ("out_refund_no_0", "RF1"),
        ("refund_id_0", "2008450740201411110000174436"),
        ("refund_fee_0", "40"),
        ("refund_status_0", "SUCCESS"),
        ("refund_success_time_0", "2017-12-15 13:06:33"),
        ("refund_recv_accout_0", "支付用户的零钱"),
        ("out_refund_no_1", "RF2"),
        ("refund_id_1", "2008450740201411110000174437"),
        ("refund_fee_1", "60"),
        ("refund_status_1", "PROCESSING"),
    ]);
    let out: Outcome<RefundQueryResponse> = interpret(Endpoint::RefundQuery, &body, &key());
    let r = match out {
        Outcome::Success(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.refunds.len(), 2);
    assert_eq!(r.refunds[0].refund_fee, Fen::new(40));
    assert_eq!(r.refunds[0].refund_status, RefundStatus::Success);
    assert_eq!(r.refunds[0].refund_success_time.unwrap().to_rfc3339(), "2017-12-15T05:06:33+00:00");
    assert_eq!(r.refunds[1].refund_status, RefundStatus::Processing);
    assert_eq!(r.refunds[1].refund_success_time, None);
}

#[test]
fn refundquery_missing_item_or_unknown_status_is_unknown() {
    let body = signed_answer(&[
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("refund_count", "1"),
        ("out_refund_no_0", "RF1"),
        ("refund_id_0", "2"),
        ("refund_fee_0", "40"),
        ("refund_status_0", "VANISHED"),
    ]);
    assert!(interpret::<RefundQueryResponse>(Endpoint::RefundQuery, &body, &key()).is_unknown());
    let body = signed_answer(&[("return_code", "SUCCESS"), ("result_code", "SUCCESS"), ("refund_count", "1")]);
    assert!(interpret::<RefundQueryResponse>(Endpoint::RefundQuery, &body, &key()).is_unknown());
}

#[test]
fn gettransferinfo_statuses() {
    for (s, want) in [
        ("SUCCESS", TransferStatus::Success),
        ("FAILED", TransferStatus::Failed),
        ("PROCESSING", TransferStatus::Processing),
    ] {
        let body = xml::encode(
            &[
                ("return_code", "SUCCESS"),
                ("result_code", "SUCCESS"),
                ("partner_trade_no", "PO1"),
                ("detail_id", "1000000000201503283103439304"),
                ("status", s),
                ("reason", ""),
                ("openid", "o1"),
                ("payment_amount", "5000"),
                ("transfer_time", "2015-04-21 20:00:00"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        match interpret::<wxpay::api::GetTransferInfoResponse>(Endpoint::GetTransferInfo, body.as_bytes(), &key()) {
            Outcome::Success(r) => {
                assert_eq!(r.status, want);
                assert_eq!(r.payment_amount, Fen::new(5000));
                assert_eq!(r.reason, None);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_present_but_wrong_sign_on_a_payout_answer_is_unknown() {
    let mut p: Params = [("return_code", "SUCCESS"), ("result_code", "SUCCESS"), ("partner_trade_no", "PO1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p.insert("sign".into(), "0".repeat(32));
    let body = xml::encode(&p);
    assert!(interpret::<wxpay::api::TransferResponse>(Endpoint::Transfers, body.as_bytes(), &key()).is_unknown());
}
