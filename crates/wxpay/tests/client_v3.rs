//! The v3 client against a fake WeChat on 127.0.0.1: what it sends (path, Authorization
//! signed over the exact request, Wechatpay-Serial) and how each kind of answer — signed,
//! unsigned, mis-signed, stale, 4xx, 429, 5xx, timeout, dropped — becomes an `Outcome`;
//! the one certificate refresh on an unknown serial in certificate mode and none in
//! public-key mode; the two-step bill download with its SHA-1.

mod fake_upstream;

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_upstream::{Captured, Reply, spawn};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use wxpay::v3::api::{
    BillLink, CloseOrder, CreateTransferBill, JsapiPrepay, QueryByOutTradeNo, SceneReportInfo, TradeBillRequest,
    TradeBillType, TradeState, TransferBillState,
};
use wxpay::v3::client::certificates_answer;
use wxpay::v3::crypto::{encrypt_field, oaep_decrypt};
use wxpay::v3::sign::{Authorization, request_message, rsa_sha256_verify};
use wxpay::v3::verify::AnswerSigner;
use wxpay::v3::{Client, ClientConfig, KeySet, MerchantSigner, Mode, Verifier, keygen};
use wxpay::{ApiV3Key, Fen, Outcome};

const MCHID: &str = "1900000001";
const APPID: &str = "wxd678efh567hg6787";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0117000800002025045698789500001779";
const OLD_SERIAL: &str = "1A2B";
const NEW_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

struct Keys {
    merchant: PKey<Private>,
    wechat: PKey<Private>,
    platform: PKey<Private>,
    old_cert: X509,
    new_cert: X509,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let now = chrono::Utc::now().timestamp();
        let platform = keygen::rsa_2048().unwrap();
        Keys {
            merchant: keygen::rsa_2048().unwrap(),
            wechat: keygen::rsa_2048().unwrap(),
            old_cert: keygen::certificate(&platform, OLD_SERIAL, "old", now - 86_400, now + 86_400).unwrap(),
            new_cert: keygen::certificate(&platform, NEW_SERIAL, "new", now - 60, now + 5 * 365 * 86_400).unwrap(),
            platform,
        }
    })
}

fn api_key() -> ApiV3Key {
    ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap()
}

fn signer() -> MerchantSigner {
    MerchantSigner::new(MCHID, "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F", keys().merchant.clone())
}

fn config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(APPID, signer(), api_key());
    c.base_url = base.to_owned();
    c.timeout = Duration::from_millis(800);
    c.connect_timeout = Duration::from_millis(500);
    c
}

fn public_key_verifier() -> Verifier {
    let mut ks = KeySet::new();
    ks.add_public_key_pem(PUB_KEY_ID, &keys().wechat.public_key_to_pem().unwrap()).unwrap();
    Verifier::new(Mode::PublicKey, ks)
}

fn certificate_verifier() -> Verifier {
    let mut ks = KeySet::new();
    ks.add_certificate(&keys().old_cert).unwrap();
    Verifier::new(Mode::Certificates, ks)
}

fn by_public_key() -> AnswerSigner {
    AnswerSigner::new(PUB_KEY_ID, keys().wechat.clone())
}

fn by_new_cert() -> AnswerSigner {
    AnswerSigner::new(NEW_SERIAL, keys().platform.clone())
}

/// A signed answer, as WeChat sends it.
fn signed(signer: &AnswerSigner, status: u16, body: &str) -> Reply {
    signed_at(signer, status, body, chrono::Utc::now().timestamp())
}

fn signed_at(signer: &AnswerSigner, status: u16, body: &str, ts: i64) -> Reply {
    let h = signer.sign(body.as_bytes(), ts, "c5ac7061fccab6bf3e254dcf98995b8c");
    let headers = h.pairs().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Reply::WithHeaders { status, headers, body: body.as_bytes().to_vec() }
}

fn prepay() -> JsapiPrepay {
    JsapiPrepay {
        description: "咖啡, 大杯".into(),
        out_trade_no: "MP20261125000001".into(),
        total: Fen::new(1),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        notify_url: "https://pay.example.com/notify/wxpay/v3".into(),
        time_expire: None,
        attach: None,
        goods_tag: None,
    }
}

const PREPAY_OK: &str = r#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#;

/// The request's Authorization header verifies with the merchant key over exactly what was
/// sent.
fn assert_signed_request(c: &Captured) {
    let auth = Authorization::parse(c.header("authorization").unwrap()).unwrap();
    assert_eq!(auth.mchid, MCHID);
    assert_eq!(auth.serial_no, "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F");
    let method = if c.method == "POST" { wxpay::v3::Method::Post } else { wxpay::v3::Method::Get };
    let msg = request_message(method, &c.target, auth.timestamp, &auth.nonce_str, &String::from_utf8_lossy(&c.body));
    let public = PKey::public_key_from_der(&keys().merchant.public_key_to_der().unwrap()).unwrap();
    assert!(rsa_sha256_verify(&public, msg.as_bytes(), &auth.signature), "request signature");
    assert!((auth.timestamp - chrono::Utc::now().timestamp()).abs() < 60);
}

#[tokio::test]
async fn prepay_signed_both_ways() {
    let fake = spawn(|_| signed(&by_public_key(), 200, PREPAY_OK)).await;
    let client = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    let out = client.jsapi_prepay(&prepay()).await.unwrap();
    assert_eq!(out.map(|r| r.prepay_id), Outcome::Success("wx26112221580621e9b071c00d9e093b0000".into()));
    let reqs = fake.requests();
    let c = &reqs[0];
    assert_eq!((c.method.as_str(), c.target.as_str()), ("POST", "/v3/pay/transactions/jsapi"));
    assert_signed_request(c);
    // Public-key mode: every request names the public key.
    assert_eq!(c.header("wechatpay-serial"), Some(PUB_KEY_ID));
    assert_eq!(c.header("accept"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!((body["mchid"].as_str(), body["appid"].as_str()), (Some(MCHID), Some(APPID)));
    assert_eq!(body["amount"]["total"], 1);
}

#[tokio::test]
async fn unsigned_missigned_or_stale_success_is_unknown() {
    let unsigned = spawn(|_| Reply::json(serde_json::from_str(PREPAY_OK).unwrap())).await;
    let client = Client::new(config(&unsigned.base_url), public_key_verifier()).unwrap();
    let out = client.jsapi_prepay(&prepay()).await.unwrap();
    assert!(out.is_unknown(), "{out:?}");

    // Signed by a key we do not know under our public key's id.
    let forged = spawn(|_| signed(&AnswerSigner::new(PUB_KEY_ID, keys().platform.clone()), 200, PREPAY_OK)).await;
    let client = Client::new(config(&forged.base_url), public_key_verifier()).unwrap();
    assert!(client.jsapi_prepay(&prepay()).await.unwrap().is_unknown());

    let stale = spawn(|_| signed_at(&by_public_key(), 200, PREPAY_OK, chrono::Utc::now().timestamp() - 600)).await;
    let client = Client::new(config(&stale.base_url), public_key_verifier()).unwrap();
    assert!(client.jsapi_prepay(&prepay()).await.unwrap().is_unknown());
}

#[tokio::test]
async fn refusals_busy_and_transport_failures() {
    let fake = spawn(|c: &Captured| match c.target.as_str() {
        t if t.contains("PARAM") => signed(&by_public_key(), 400, r#"{"code":"PARAM_ERROR","message":"参数错误"}"#),
        t if t.contains("GONE") => {
            signed(&by_public_key(), 404, r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#)
        }
        t if t.contains("BUSY") => {
            signed(&by_public_key(), 429, r#"{"code":"FREQUENCY_LIMITED","message":"频率超限"}"#)
        }
        t if t.contains("DOWN") => Reply::status(502, "bad gateway"),
        t if t.contains("SYSERR") => signed(&by_public_key(), 500, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#),
        t if t.contains("SLOW") => Reply::Delay(Duration::from_secs(3), Box::new(Reply::status(200, "{}"))),
        _ => Reply::Drop,
    })
    .await;
    let client = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    let q = |no: &str| QueryByOutTradeNo { out_trade_no: no.into() };
    assert_eq!(client.query_by_out_trade_no(&q("PARAM")).await.unwrap().failed_code(), Some("PARAM_ERROR"));
    assert_eq!(client.query_by_out_trade_no(&q("GONE")).await.unwrap().failed_code(), Some("ORDER_NOT_EXIST"));
    for no in ["BUSY", "DOWN", "SYSERR", "SLOW", "DROP"] {
        let out = client.query_by_out_trade_no(&q(no)).await.unwrap();
        assert!(out.is_unknown(), "{no}: {out:?}");
    }
    assert!(fake.requests()[0].target.ends_with("?mchid=1900000001"));
}

#[tokio::test]
async fn close_answers_204_without_body() {
    let fake = spawn(|_| signed(&by_public_key(), 204, "")).await;
    let client = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    assert!(client.close_order(&CloseOrder { out_trade_no: "MP1".into() }).await.unwrap().is_success());
    let c = &fake.requests()[0];
    assert_eq!(c.target, "/v3/pay/transactions/out-trade-no/MP1/close");
    assert_eq!(c.body, br#"{"mchid":"1900000001"}"#);
    assert_signed_request(c);
}

const QUERY_OK: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","out_trade_no":"MP1",
    "transaction_id":"4200000015202611256947025404","trade_state":"SUCCESS","amount":{"total":1,"payer_total":1}}"#;

#[tokio::test]
async fn certificate_mode_refreshes_once_on_unknown_serial() {
    let cert_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let calls = cert_calls.clone();
    let fake = spawn(move |c: &Captured| {
        if c.target == "/v3/certificates" {
            calls.fetch_add(1, Ordering::SeqCst);
            let body = certificates_answer(&[keys().new_cert.clone()], &api_key(), |_| "b9a4c7e2d1f0".into()).unwrap();
            // The certificate answer is itself signed with the new certificate.
            return signed(&by_new_cert(), 200, &body);
        }
        signed(&by_new_cert(), 200, QUERY_OK)
    })
    .await;
    let client = Client::new(config(&fake.base_url), certificate_verifier()).unwrap();
    let q = QueryByOutTradeNo { out_trade_no: "MP1".into() };
    let out = client.query_by_out_trade_no(&q).await.unwrap();
    assert_eq!(out.map(|t| t.trade_state), Outcome::Success(TradeState::Success));
    assert_eq!(cert_calls.load(Ordering::SeqCst), 1);
    assert!(client.verifier().keys().get(NEW_SERIAL).is_some());
    // The key set is what WeChat lists now: the old certificate, absent from the answer,
    // is dropped although not yet expired. No more refreshes once the serial is known.
    assert!(client.verifier().keys().get(OLD_SERIAL).is_none());
    client.query_by_out_trade_no(&q).await.unwrap();
    assert_eq!(cert_calls.load(Ordering::SeqCst), 1);
    // Certificate mode sends no Wechatpay-Serial on plain requests.
    assert_eq!(fake.requests()[0].header("wechatpay-serial"), None);
}

#[tokio::test]
async fn certificate_refresh_that_does_not_help_is_unknown_and_tried_once() {
    let cert_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let calls = cert_calls.clone();
    let fake = spawn(move |c: &Captured| {
        if c.target == "/v3/certificates" {
            calls.fetch_add(1, Ordering::SeqCst);
            let body = certificates_answer(&[keys().old_cert.clone()], &api_key(), |_| "b9a4c7e2d1f0".into()).unwrap();
            return signed(&AnswerSigner::new(OLD_SERIAL, keys().platform.clone()), 200, &body);
        }
        signed(&by_new_cert(), 200, QUERY_OK)
    })
    .await;
    let client = Client::new(config(&fake.base_url), certificate_verifier()).unwrap();
    let out = client.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "MP1".into() }).await.unwrap();
    assert!(out.is_unknown(), "{out:?}");
    assert_eq!(cert_calls.load(Ordering::SeqCst), 1, "one refresh per call, not a loop");
}

#[tokio::test]
async fn refresh_ahead_of_expiry() {
    let fake = spawn(|c: &Captured| {
        assert_eq!(c.target, "/v3/certificates");
        let body = certificates_answer(&[keys().new_cert.clone()], &api_key(), |_| "b9a4c7e2d1f0".into()).unwrap();
        signed(&by_new_cert(), 200, &body)
    })
    .await;
    // The old certificate expires in a day.
    let client = Client::new(config(&fake.base_url), certificate_verifier()).unwrap();
    assert_eq!(client.refresh_certificates_if_expiring(Duration::from_secs(3600)).await, Ok(None));
    assert!(fake.requests().is_empty());
    assert_eq!(client.refresh_certificates_if_expiring(Duration::from_secs(30 * 86_400)).await, Ok(Some(1)));
    assert!(client.verifier().keys().get(NEW_SERIAL).is_some());
    let pk = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    assert_eq!(pk.refresh_certificates_if_expiring(Duration::from_secs(30 * 86_400)).await, Ok(None));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn public_key_mode_never_fetches_certificates() {
    let fake = spawn(|c: &Captured| {
        if c.target == "/v3/certificates" {
            return signed(&by_public_key(), 404, r#"{"code":"RESOURCE_NOT_EXISTS","message":"无可用的平台证书"}"#);
        }
        signed(&by_new_cert(), 200, QUERY_OK)
    })
    .await;
    let client = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    let out = client.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "MP1".into() }).await.unwrap();
    assert!(out.is_unknown());
    assert!(fake.requests().iter().all(|c| c.target != "/v3/certificates"));
}

#[tokio::test]
async fn switching_mode_accepts_either_key() {
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let fake = spawn(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            signed(&by_public_key(), 200, QUERY_OK)
        } else {
            signed(&AnswerSigner::new(OLD_SERIAL, keys().platform.clone()), 200, QUERY_OK)
        }
    })
    .await;
    let mut ks = certificate_verifier().keys().as_ref().clone();
    ks.add_public_key_pem(PUB_KEY_ID, &keys().wechat.public_key_to_pem().unwrap()).unwrap();
    let client = Client::new(config(&fake.base_url), Verifier::new(Mode::Switching, ks)).unwrap();
    for _ in 0..4 {
        let out = client.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "MP1".into() }).await.unwrap();
        assert!(out.is_success(), "{out:?}");
    }
}

#[tokio::test]
async fn transfer_bill_with_encrypted_name_names_the_key() {
    let fake = spawn(|_| {
        signed(
            &by_public_key(),
            200,
            r#"{"out_bill_no":"PB1","transfer_bill_no":"1330000071100999991182020050700019480001",
                "create_time":"2026-11-25T13:29:35.120+08:00","state":"WAIT_USER_CONFIRM","package_info":"ABBQO+oYAAABAAAAAAAk"}"#,
        )
    })
    .await;
    let verifier = public_key_verifier();
    let name = encrypt_field(&verifier.keys(), "张三", chrono::Utc::now().timestamp()).unwrap();
    let client = Client::new(config(&fake.base_url), verifier).unwrap();
    let req = CreateTransferBill {
        out_bill_no: "PB1".into(),
        transfer_scene_id: "1000".into(),
        openid: "o-MYE42l80oelYMDE34nYD456Xoy".into(),
        transfer_amount: Fen::new(300_000),
        transfer_remark: "活动奖励".into(),
        notify_url: None,
        user_recv_perception: Some("现金奖励".into()),
        transfer_scene_report_infos: vec![
            SceneReportInfo { info_type: "活动名称".into(), info_content: "周年庆".into() },
            SceneReportInfo { info_type: "奖励说明".into(), info_content: "一等奖".into() },
        ],
        user_name: Some(name),
    };
    let out = client.create_transfer_bill(&req).await.unwrap();
    assert_eq!(out.map(|b| b.state), Outcome::Success(TransferBillState::WaitUserConfirm));
    let c = &fake.requests()[0];
    assert_eq!(c.header("wechatpay-serial"), Some(PUB_KEY_ID));
    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(oaep_decrypt(&keys().wechat, body["user_name"].as_str().unwrap()).unwrap(), "张三");
    // Nothing is sent for a request WeChat would refuse.
    let too_big = CreateTransferBill { user_name: None, ..req };
    assert!(client.create_transfer_bill(&too_big).await.is_err());
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn bill_in_two_steps_with_hash() {
    let text = "交易时间,公众账号ID\r\n`2026-11-25 15:36:17,`wx\r\n".as_bytes().to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&text).unwrap();
    let gz = gz.finish().unwrap();
    let sha1 = hex::encode(openssl::sha::sha1(&text));
    let file = gz.clone();
    let link_body = format!(
        r#"{{"hash_type":"SHA1","hash_value":"{sha1}","download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=T0K"}}"#
    );
    let fake = spawn(move |c: &Captured| {
        if c.target.starts_with("/v3/bill/tradebill") {
            return signed(&by_public_key(), 200, &link_body);
        }
        // The file is not signed.
        Reply::Http { status: 200, content_type: "application/octet-stream", body: file.clone() }
    })
    .await;
    let client = Client::new(config(&fake.base_url), public_key_verifier()).unwrap();
    let req = TradeBillRequest {
        bill_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        bill_type: TradeBillType::All,
        gzip: true,
    };
    let Outcome::Success(link) = client.trade_bill(&req).await.unwrap() else { panic!("no link") };
    assert_eq!(client.download_bill(&link, true).await.unwrap(), Outcome::Success(text));
    let reqs = fake.requests();
    assert_eq!(reqs[0].target, "/v3/bill/tradebill?bill_date=2026-11-25&bill_type=ALL&tar_type=GZIP");
    assert_eq!(reqs[1].target, "/v3/billdownload/file?token=T0K");
    assert_signed_request(&reqs[1]);
    let wrong = BillLink { hash_value: "00".repeat(20), ..link };
    assert!(client.download_bill(&wrong, true).await.unwrap().is_unknown());
}

#[test]
fn debug_shows_no_secret() {
    let c = config("http://127.0.0.1:1");
    let d = format!("{c:?}");
    assert!(d.contains("ApiV3Key(***)") && d.contains("key: \"***\""), "{d}");
    assert!(!d.contains("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"));
}
