//! APIv3 against the sandbox over real HTTP with `wxpay::v3::Client`, in public-key,
//! certificate and switching mode: prepay → pay through the control endpoint → encrypted
//! notification verified and decrypted by wxpay's parser → queries → refund → refund
//! notification → refund query; request-signature refusals (401 SIGN_ERROR); WeChat's
//! error codes and idempotency; v3 faults (500, lost answer, unsigned answer, SIGNTEST).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{APPID, MCH};
use minipay_sandbox::config::DEMO_USER;
use minipay_sandbox::{Fault, FaultKind, PayOrder, Sandbox, SandboxConfig, V3Mode};
use serde_json::Value;
use wxpay::v3::api::{
    CloseOrder, CreateRefund, JsapiPrepay, QueryByOutTradeNo, QueryByTransactionId, QueryRefund, RefundStatus,
    RefundTarget, TradeState,
};
use wxpay::v3::notify::RefundEvent;
use wxpay::v3::sign::Method;
use wxpay::v3::{ApiV3Key, Client, ClientConfig, Event, KeySet, MerchantSigner, Mode, Verifier, VerifyError};
use wxpay::{Fen, Outcome};

fn config(mode: V3Mode) -> SandboxConfig {
    let mut cfg = SandboxConfig::for_tests();
    cfg.merchants[0].v3_mode = mode;
    cfg
}

fn api_v3_key(sb: &Sandbox) -> ApiV3Key {
    sb.config().merchants[0].api_v3_key.clone()
}

fn signer(sb: &Sandbox) -> MerchantSigner {
    let serial = sb.v3_keys(MCH).unwrap().merchant_serial.clone();
    MerchantSigner::from_pem(MCH, serial, &sb.client_key_pem(MCH).unwrap()).unwrap()
}

/// The verifier a merchant in `mode` would configure: the public key where it has one;
/// certificate mode starts empty and learns the certificate from `/v3/certificates`.
fn verifier(sb: &Sandbox, mode: V3Mode) -> Verifier {
    let k = sb.v3_keys(MCH).unwrap();
    let mut ks = KeySet::new();
    match mode {
        V3Mode::PublicKey => {
            ks.add_public_key_pem(k.public_key.serial(), &k.public_key_pem).unwrap();
            Verifier::new(Mode::PublicKey, ks)
        }
        V3Mode::Certificate => Verifier::new(Mode::Certificates, ks),
        V3Mode::Switching => {
            ks.add_public_key_pem(k.public_key.serial(), &k.public_key_pem).unwrap();
            Verifier::new(Mode::Switching, ks)
        }
    }
}

fn client(sb: &Sandbox, mode: V3Mode) -> Client {
    let mut cfg = ClientConfig::new(APPID, signer(sb), api_v3_key(sb));
    cfg.base_url = sb.http_url();
    cfg.timeout = Duration::from_secs(5);
    Client::new(cfg, verifier(sb, mode)).unwrap()
}

/// One received POST: headers (lowercase names) and raw body.
type Received = (Vec<(String, String)>, Vec<u8>);

/// A v3 notification receiver: records headers and body, answers each POST with the next
/// scripted status (the last repeats).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let statuses = Arc::new(statuses);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            let g = g.clone();
            let statuses = statuses.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let g = g.clone();
                let statuses = statuses.clone();
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let n = {
                        let mut v = g.lock().unwrap();
                        v.push((headers, body.to_vec()));
                        v.len()
                    };
                    let s = statuses.get(n - 1).or(statuses.last()).copied().unwrap_or(204);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Receiver { url: format!("http://127.0.0.1:{port}/v3notify"), got }
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            if self.got.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = self.got.lock().unwrap().clone();
        assert!(got.len() >= n, "expected {n} notifications, got {}", got.len());
        got
    }
}

/// Verifies (fetching certificates first when signed with one not yet known, as a
/// service would) and decrypts a received notification.
async fn parse(c: &Client, n: &Received) -> Result<(wxpay::v3::Notification, Event), wxpay::v3::NotifyError> {
    let lookup = |name: &str| n.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let headers = wxpay::v3::verify::SignedHeaders::from_lookup(lookup)?;
    c.parse_notification(&headers, &n.1).await
}

fn prepay(sb: &Sandbox, no: &str, total: i64, notify_url: &str) -> JsapiPrepay {
    JsapiPrepay {
        description: "v3 测试商品".into(),
        out_trade_no: no.into(),
        total: Fen::new(total),
        openid: sb.openid(DEMO_USER, APPID),
        notify_url: notify_url.into(),
        time_expire: None,
        attach: Some("附加".into()),
        goods_tag: None,
    }
}

fn success<T: std::fmt::Debug>(o: Outcome<T>) -> T {
    match o {
        Outcome::Success(t) => t,
        other => panic!("expected success, got {other:?}"),
    }
}

async fn pay_and_refund_flow(mode: V3Mode) {
    let sb = Sandbox::start(config(mode)).await.unwrap();
    let c = client(&sb, mode);
    let rx = Receiver::start(vec![204]).await;
    let no = format!("V3-{mode:?}");
    let p = success(c.jsapi_prepay(&prepay(&sb, &no, 1500, &rx.url)).await.unwrap());
    assert!(p.prepay_id.starts_with("wx"), "{p:?}");
    let unpaid = success(c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: no.clone() }).await.unwrap());
    assert_eq!(unpaid.trade_state, TradeState::NotPay);
    assert_eq!(unpaid.transaction_id, None);

    // The same payer control endpoint as v2 pays a v3 order.
    let paid = sb.pay(&PayOrder { prepay_id: Some(p.prepay_id.clone()), ..Default::default() }).unwrap();
    let tx = paid.transaction_id.clone().unwrap();
    let got = rx.wait_for(1).await;
    // A client that has made no call yet (as a freshly started notify service): in
    // certificate mode it learns the platform certificate from the notification's serial.
    let fresh = client(&sb, mode);
    let (envelope, event) = parse(&fresh, &got[0]).await.expect("notification verifies and decrypts");
    let sig_type = got[0].0.iter().find(|(k, _)| k == "wechatpay-signature-type").map(|(_, v)| v.as_str());
    assert_eq!(sig_type, Some("WECHATPAY2-SHA256-RSA2048"));
    assert_eq!(envelope.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(envelope.resource.associated_data.as_deref(), Some("transaction"));
    let Event::Payment(t) = event else { panic!("not a payment: {event:?}") };
    assert_eq!((t.out_trade_no.as_str(), t.trade_state), (no.as_str(), TradeState::Success));
    assert_eq!(t.transaction_id.as_deref(), Some(tx.as_str()));
    assert_eq!(t.amount.unwrap().total, Some(Fen::new(1500)));
    assert_eq!(t.attach.as_deref(), Some("附加"));

    let q = success(c.query_by_transaction_id(&QueryByTransactionId { transaction_id: tx.clone() }).await.unwrap());
    assert_eq!((q.trade_state, q.out_trade_no.as_str()), (TradeState::Success, no.as_str()));
    assert!(q.success_time.is_some());

    let refund = CreateRefund {
        target: RefundTarget::OutTradeNo(no.clone()),
        out_refund_no: format!("{no}-R1"),
        reason: Some("测试退款".into()),
        notify_url: Some(rx.url.clone()),
        funds_account: None,
        refund: Fen::new(500),
        total: Fen::new(1500),
    };
    let r = success(c.create_refund(&refund).await.unwrap());
    assert_eq!((r.status, r.amount.refund), (RefundStatus::Processing, Fen::new(500)));
    // The same refund again answers the same refund (idempotent by out_refund_no).
    let again = success(c.create_refund(&refund).await.unwrap());
    assert_eq!(again.refund_id, r.refund_id);
    // Refunds settle after 2 sandbox seconds (2 ms real with the test time scale).
    let got = rx.wait_for(2).await;
    let (envelope, event) = parse(&c, &got[1]).await.expect("refund notification verifies");
    assert_eq!(envelope.event_type, "REFUND.SUCCESS");
    let Event::Refund(kind, notice) = event else { panic!("not a refund: {event:?}") };
    assert_eq!((kind, notice.refund_status), (RefundEvent::Success, RefundStatus::Success));
    assert_eq!((notice.refund_id.as_str(), notice.amount.refund), (r.refund_id.as_str(), Fen::new(500)));
    let rq = success(c.query_refund(&QueryRefund { out_refund_no: format!("{no}-R1") }).await.unwrap());
    assert_eq!(rq.status, RefundStatus::Success);
    assert!(rq.success_time.is_some());
    let after = success(c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: no.clone() }).await.unwrap());
    assert_eq!(after.trade_state, TradeState::Refund);
    // Both notifications were delivered once (the receiver answered 204).
    let notes = sb.notifications();
    assert!(notes.iter().all(|n| n.v3 && n.status == "delivered" && n.attempts.len() == 1), "{notes:?}");
    sb.shutdown().await;
}

#[tokio::test]
async fn pay_and_refund_in_public_key_mode() {
    pay_and_refund_flow(V3Mode::PublicKey).await;
}

#[tokio::test]
async fn pay_and_refund_in_certificate_mode() {
    pay_and_refund_flow(V3Mode::Certificate).await;
}

#[tokio::test]
async fn pay_and_refund_in_switching_mode() {
    pay_and_refund_flow(V3Mode::Switching).await;
}

/// A raw signed request (to look at headers and tamper with what is signed).
async fn raw(
    sb: &Sandbox,
    method: Method,
    path: &str,
    body: &str,
    auth: Option<String>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let auth = auth.unwrap_or_else(|| signer(sb).authorization(method, path, body).to_string());
    let http = reqwest::Client::new();
    let url = format!("{}{path}", sb.http_url());
    let req = match method {
        Method::Get => http.get(url),
        Method::Post => http.post(url).header("Content-Type", "application/json").body(body.to_owned()),
    };
    let r = req.header("Authorization", auth).header("Accept", "application/json").send().await.unwrap();
    let status = r.status().as_u16();
    let headers =
        r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn bad_request_signatures_are_401_sign_error() {
    let sb = Sandbox::start(config(V3Mode::PublicKey)).await.unwrap();
    let path = format!("/v3/pay/transactions/out-trade-no/NOPE?mchid={MCH}");
    // A correct signature reaches the business logic (404 ORDER_NOT_EXIST), signed.
    let (s, h, b) = raw(&sb, Method::Get, &path, "", None).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["code"].as_str()), (404, Some("ORDER_NOT_EXIST")));
    assert_eq!(header(&h, "Wechatpay-Signature-Type"), Some("WECHATPAY2-SHA256-RSA2048"));
    verifier(&sb, V3Mode::PublicKey)
        .verify_lookup(|n| header(&h, n), &b, chrono::Utc::now().timestamp())
        .expect("error answers are signed too");

    let s1 = signer(&sb);
    let now = chrono::Utc::now().timestamp();
    let cases = [
        // Signed for another path than the one sent.
        (s1.authorization(Method::Get, "/v3/pay/transactions/out-trade-no/OTHER", "").to_string(), "签名错误"),
        // Signed as POST, sent as GET.
        (s1.authorization(Method::Post, &path, "").to_string(), "签名错误"),
        // Six minutes old.
        (s1.authorization_at(Method::Get, &path, "", now - 360, "N1").to_string(), "timestamp"),
        // A serial that is not the merchant's certificate.
        (
            MerchantSigner::new(MCH, "1234ABCD", s1.private_key().clone())
                .authorization(Method::Get, &path, "")
                .to_string(),
            "证书序列号",
        ),
        // Someone else's key under the right serial.
        (
            MerchantSigner::new(MCH, s1.serial_no(), wxpay::v3::keygen::rsa_2048().unwrap())
                .authorization(Method::Get, &path, "")
                .to_string(),
            "签名错误",
        ),
        ("Bearer nothing".to_owned(), "Authorization"),
    ];
    for (auth, needle) in cases {
        let (s, _, b) = raw(&sb, Method::Get, &path, "", Some(auth.clone())).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((s, v["code"].as_str()), (401, Some("SIGN_ERROR")), "{auth}: {v}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{needle} in {v}");
    }
    // A body changed after signing.
    let body = format!(r#"{{"mchid":"{MCH}"}}"#);
    let close = "/v3/pay/transactions/out-trade-no/X/close";
    let auth = s1.authorization(Method::Post, close, &body).to_string();
    let (s, _, b) = raw(&sb, Method::Post, close, &body.replace('}', " }"), Some(auth)).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["code"].as_str()), (401, Some("SIGN_ERROR")));
    assert_eq!(v["detail"]["sign_information"]["method"], "POST");
    // The typed client sees SIGN_ERROR as a refusal.
    let mut cfg =
        ClientConfig::new(APPID, MerchantSigner::new(MCH, "1234ABCD", s1.private_key().clone()), api_v3_key(&sb));
    cfg.base_url = sb.http_url();
    let c = Client::new(cfg, verifier(&sb, V3Mode::PublicKey)).unwrap();
    let o = c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "X".into() }).await.unwrap();
    assert_eq!(o.failed_code(), Some("SIGN_ERROR"));
    sb.shutdown().await;
}

#[tokio::test]
async fn wechat_error_codes_and_idempotency() {
    let sb = Sandbox::start(config(V3Mode::PublicKey)).await.unwrap();
    let c = client(&sb, V3Mode::PublicKey);
    let url = "http://127.0.0.1:9/unused";
    let a = success(c.jsapi_prepay(&prepay(&sb, "E1", 100, url)).await.unwrap());
    let b = success(c.jsapi_prepay(&prepay(&sb, "E1", 100, url)).await.unwrap());
    assert_eq!(a.prepay_id, b.prepay_id, "same number, same content: same prepay_id");
    let o = c.jsapi_prepay(&prepay(&sb, "E1", 200, url)).await.unwrap();
    assert_eq!(o.failed_code(), Some("OUT_TRADE_NO_USED"));
    let q = c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "NONE".into() }).await.unwrap();
    assert_eq!(q.failed_code(), Some("ORDER_NOT_EXIST"));
    let unpaid_refund = CreateRefund {
        target: RefundTarget::OutTradeNo("E1".into()),
        out_refund_no: "E1-R".into(),
        reason: None,
        notify_url: None,
        funds_account: None,
        refund: Fen::new(100),
        total: Fen::new(100),
    };
    assert_eq!(c.create_refund(&unpaid_refund).await.unwrap().failed_code(), Some("INVALID_REQUEST"));
    success(c.close_order(&CloseOrder { out_trade_no: "E1".into() }).await.unwrap());
    success(c.close_order(&CloseOrder { out_trade_no: "E1".into() }).await.unwrap());
    let q = success(c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "E1".into() }).await.unwrap());
    assert_eq!(q.trade_state, TradeState::Closed);
    assert_eq!(c.jsapi_prepay(&prepay(&sb, "E1", 100, url)).await.unwrap().failed_code(), Some("ORDER_CLOSED"));
    assert_eq!(
        c.close_order(&CloseOrder { out_trade_no: "NONE".into() }).await.unwrap().failed_code(),
        Some("ORDER_NOT_EXIST")
    );

    success(c.jsapi_prepay(&prepay(&sb, "E2", 1000, url)).await.unwrap());
    sb.pay(&PayOrder { out_trade_no: Some("E2".into()), notify: Some(false), ..Default::default() }).unwrap();
    assert_eq!(c.jsapi_prepay(&prepay(&sb, "E2", 1000, url)).await.unwrap().failed_code(), Some("ORDERPAID"));
    assert_eq!(
        c.close_order(&CloseOrder { out_trade_no: "E2".into() }).await.unwrap().failed_code(),
        Some("ORDERPAID")
    );
    let refund = |no: &str, amount: i64| CreateRefund {
        target: RefundTarget::OutTradeNo("E2".into()),
        out_refund_no: no.into(),
        reason: None,
        notify_url: None,
        funds_account: None,
        refund: Fen::new(amount),
        total: Fen::new(1000),
    };
    success(c.create_refund(&refund("E2-R1", 600)).await.unwrap());
    assert_eq!(c.create_refund(&refund("E2-R1", 500)).await.unwrap().failed_code(), Some("INVALID_REQUEST"));
    assert_eq!(c.create_refund(&refund("E2-R2", 500)).await.unwrap().failed_code(), Some("INVALID_REQUEST"));
    sb.set_balance(MCH, Fen::new(10));
    assert_eq!(c.create_refund(&refund("E2-R3", 400)).await.unwrap().failed_code(), Some("NOT_ENOUGH"));
    let missing = CreateRefund { target: RefundTarget::OutTradeNo("NONE".into()), ..refund("X", 1) };
    assert_eq!(c.create_refund(&missing).await.unwrap().failed_code(), Some("RESOURCE_NOT_EXISTS"));
    let q = c.query_refund(&QueryRefund { out_refund_no: "NONE".into() }).await.unwrap();
    assert_eq!(q.failed_code(), Some("RESOURCE_NOT_EXISTS"));
    // v3 orders live in the v2 table: v2's view lists them.
    assert!(sb.orders().iter().any(|o| o.out_trade_no == "E2" && o.v3));
    sb.shutdown().await;
}

#[tokio::test]
async fn certificates_per_mode_and_switching_signs_with_both_keys() {
    let sb = Sandbox::start(config(V3Mode::PublicKey)).await.unwrap();
    let (s, _, b) = raw(&sb, Method::Get, "/v3/certificates", "", None).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["code"].as_str()), (404, Some("RESOURCE_NOT_EXISTS")));
    sb.shutdown().await;

    let sb = Sandbox::start(config(V3Mode::Switching)).await.unwrap();
    let keys = sb.v3_keys(MCH).unwrap();
    let (s, _, b) = raw(&sb, Method::Get, "/v3/certificates", "", None).await;
    assert_eq!(s, 200);
    let set = wxpay::v3::client::certificates_from_answer(
        &b,
        &api_v3_key(&sb),
        &KeySet::new(),
        chrono::Utc::now().timestamp(),
    )
    .expect("the answer decrypts with the APIv3 key");
    assert!(set.get(keys.platform_signer().serial()).is_some());
    let mut serials = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let (_, h, _) = raw(&sb, Method::Get, "/v3/certificates", "", None).await;
        serials.insert(header(&h, "Wechatpay-Serial").unwrap().to_owned());
    }
    let both: std::collections::BTreeSet<String> =
        [keys.platform_signer().serial().to_owned(), keys.public_key.serial().to_owned()].into();
    assert_eq!(serials, both);
    sb.shutdown().await;
}

#[tokio::test]
async fn v3_faults_lost_answer_500_unsigned_and_signtest() {
    let sb = Sandbox::start(config(V3Mode::PublicKey)).await.unwrap();
    let c = client(&sb, V3Mode::PublicKey);
    // The receiver refuses the probe (401) and takes the real notification (204).
    let probe_rx = Receiver::start(vec![401, 204]).await;
    let rx = &probe_rx;
    let jsapi = "/v3/pay/transactions/jsapi";
    let fault = |kind: FaultKind| Fault { path: jsapi.into(), kind, times: Some(1) };
    sb.add_fault(fault(FaultKind::Http500)).unwrap();
    assert!(c.jsapi_prepay(&prepay(&sb, "F1", 100, &rx.url)).await.unwrap().is_unknown());
    assert!(sb.orders().is_empty(), "a 500 fault does nothing");
    sb.add_fault(fault(FaultKind::LostAnswer)).unwrap();
    assert!(c.jsapi_prepay(&prepay(&sb, "F1", 100, &rx.url)).await.unwrap().is_unknown());
    assert_eq!(sb.orders().len(), 1, "a lost answer still creates the order");
    sb.add_fault(fault(FaultKind::Unsigned)).unwrap();
    assert!(c.jsapi_prepay(&prepay(&sb, "F1", 100, &rx.url)).await.unwrap().is_unknown(), "unsigned 2xx is forged");
    sb.add_fault(Fault {
        path: jsapi.into(),
        kind: FaultKind::Error { err_code: "FREQUENCY_LIMITED".into(), err_code_des: None },
        times: Some(1),
    })
    .unwrap();
    assert!(c.jsapi_prepay(&prepay(&sb, "F1", 100, &rx.url)).await.unwrap().is_unknown());
    sb.add_fault(Fault {
        path: jsapi.into(),
        kind: FaultKind::Error { err_code: "NO_AUTH".into(), err_code_des: None },
        times: Some(1),
    })
    .unwrap();
    assert_eq!(c.jsapi_prepay(&prepay(&sb, "F1", 100, &rx.url)).await.unwrap().failed_code(), Some("NO_AUTH"));
    assert!(sb.add_fault(Fault { path: "/pay/unifiedorder".into(), kind: FaultKind::Unsigned, times: None }).is_err());
    // Drop: no answer and nothing done; delay: slower, then handled normally.
    let query = "/v3/pay/transactions/out-trade-no/{out_trade_no}";
    sb.add_fault(fault(FaultKind::Drop)).unwrap();
    assert!(c.jsapi_prepay(&prepay(&sb, "F2", 100, &rx.url)).await.unwrap().is_unknown());
    assert!(!sb.orders().iter().any(|o| o.out_trade_no == "F2"), "a dropped call does nothing");
    sb.add_fault(Fault { path: query.into(), kind: FaultKind::Delay { delay_ms: 300 }, times: Some(1) }).unwrap();
    let started = std::time::Instant::now();
    let q = success(c.query_by_out_trade_no(&QueryByOutTradeNo { out_trade_no: "F1".into() }).await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(q.trade_state, TradeState::NotPay);

    // A dropped attempt, then on the next rung a SIGNTEST probe before the real attempt.
    sb.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::Drop, times: Some(1) }).unwrap();
    sb.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::SignTest, times: Some(1) }).unwrap();
    sb.pay(&PayOrder { out_trade_no: Some("F1".into()), ..Default::default() }).unwrap();
    let got = probe_rx.wait_for(2).await;
    let probe = parse(&c, &got[0]).await.unwrap_err();
    assert_eq!(probe, wxpay::v3::NotifyError::Verify(VerifyError::SignTest));
    let (_, event) = parse(&c, &got[1]).await.expect("the real notification verifies");
    assert!(matches!(event, Event::Payment(t) if t.out_trade_no == "F1"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let n = sb.notifications().into_iter().find(|n| n.out_trade_no == "F1").unwrap();
    let seen: Vec<(Option<String>, Option<u16>, bool)> =
        n.attempts.iter().map(|a| (a.fault.clone(), a.http_status, a.success)).collect();
    assert_eq!(
        seen,
        [
            (Some("drop".into()), None, false),
            (Some("signtest".into()), Some(401), false),
            (Some("signtest".into()), Some(204), true),
        ]
    );
    assert_eq!(n.status, "delivered");
    sb.shutdown().await;
}

/// `--certs-dir` writes everything a v3 client needs: a client built only from the
/// directory's files prepays successfully, in public-key and certificate mode.
#[tokio::test]
async fn certs_dir_configures_a_v3_client() {
    for mode in [V3Mode::PublicKey, V3Mode::Certificate] {
        let sb = Sandbox::start(config(mode)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        sb.write_certs(dir.path()).unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let text = |name: &str| String::from_utf8(read(name)).unwrap();
        let signer =
            MerchantSigner::from_pem(MCH, text("apiclient_serial_no.txt"), &read("apiclient_key.pem")).unwrap();
        let key = ApiV3Key::new(text("apiv3_key.txt")).unwrap();
        let mut ks = KeySet::new();
        let vmode = if mode == V3Mode::PublicKey {
            ks.add_public_key_pem(&text("wechatpay_public_key_id.txt"), &read("wechatpay_public_key.pem")).unwrap();
            assert!(!dir.path().join("wechatpay_platform_cert.pem").exists());
            Mode::PublicKey
        } else {
            ks.add_certificate_pem(&read("wechatpay_platform_cert.pem")).unwrap();
            assert!(!dir.path().join("wechatpay_public_key.pem").exists());
            Mode::Certificates
        };
        assert_eq!(text("v3_mode.txt"), if mode == V3Mode::PublicKey { "public_key" } else { "certificate" });
        assert!(dir.path().join(MCH).join("apiv3_key.txt").exists());
        let mut cfg = ClientConfig::new(APPID, signer, key);
        cfg.base_url = sb.http_url();
        let c = Client::new(cfg, Verifier::new(vmode, ks)).unwrap();
        let p = success(c.jsapi_prepay(&prepay(&sb, "D1", 100, "http://127.0.0.1:9/n")).await.unwrap());
        assert!(p.prepay_id.starts_with("wx"));
        sb.shutdown().await;
    }
}

/// v3 bills: the link's SHA1 checks out, the file is the one v2's downloadbill serves (v2
/// and v3 orders in one bill), gzip when asked; the fund-flow bill likewise; not ready
/// before 10:00 of the next day.
#[tokio::test]
async fn bills_cover_v2_and_v3_and_match_v2_downloads() {
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;
    use wxpay::v3::api::{FundAccountType, FundFlowBillRequest, TradeBillRequest, TradeBillType};

    let env = common::Env::with(config(V3Mode::PublicKey)).await;
    let sb = &env.sb;
    let c = client(sb, V3Mode::PublicKey);
    success(c.jsapi_prepay(&prepay(sb, "B-V3", 1200, "http://127.0.0.1:9/n")).await.unwrap());
    sb.pay(&PayOrder { out_trade_no: Some("B-V3".into()), notify: Some(false), ..Default::default() }).unwrap();
    env.paid_order("B-V2", "800").await;
    let day = sb.now().with_timezone(&Shanghai).date_naive();
    let trade = |gzip| TradeBillRequest { bill_date: day, bill_type: TradeBillType::All, gzip };
    assert_eq!(c.trade_bill(&trade(false)).await.unwrap().failed_code(), Some("STATEMENT_CREATING"));

    let next_morning = Shanghai.from_local_datetime(&day.succ_opt().unwrap().and_hms_opt(10, 30, 0).unwrap()).unwrap();
    sb.set_clock(next_morning.with_timezone(&chrono::Utc));
    let link = success(c.trade_bill(&trade(true)).await.unwrap());
    assert_eq!(link.hash_type, "SHA1");
    let text = success(c.download_bill(&link, true).await.unwrap());
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("B-V3") && text.contains("B-V2"), "{text}");
    let plain = success(c.download_bill(&success(c.trade_bill(&trade(false)).await.unwrap()), false).await.unwrap());
    assert_eq!(plain, text.as_bytes());

    let v2 = common::signed(
        common::base_pay(&[("bill_date", &day.format("%Y%m%d").to_string()), ("bill_type", "ALL")]),
        wxpay::SignType::Md5,
    );
    let r = common::post_raw(&env.plain, &env.url("/pay/downloadbill"), wxpay::xml::encode(&v2)).await.unwrap();
    assert_eq!(r.text().await.unwrap(), text, "v2 and v3 serve the same bill");

    let flow = FundFlowBillRequest { bill_date: day, account_type: FundAccountType::Basic, gzip: true };
    let fl = success(c.fund_flow_bill(&flow).await.unwrap());
    let flow_text = String::from_utf8(success(c.download_bill(&fl, true).await.unwrap())).unwrap();
    assert!(flow_text.contains("交易"), "{flow_text}");
    let ops = FundFlowBillRequest { account_type: FundAccountType::Operation, ..flow };
    assert_eq!(c.fund_flow_bill(&ops).await.unwrap().failed_code(), Some("NO_STATEMENT_EXIST"));
    // A tampered hash makes the download Unknown (a broken file, safe to fetch again).
    let mut bad = link.clone();
    bad.hash_value = "00".repeat(20);
    assert!(c.download_bill(&bad, true).await.unwrap().is_unknown());
    // Links expire after five sandbox minutes.
    sb.advance_clock(chrono::Duration::minutes(6));
    assert_eq!(c.download_bill(&link, true).await.unwrap().failed_code(), Some("INVALID_REQUEST"));
}

fn transfer(env: &common::Env, no: &str, amount: i64, notify_url: Option<&str>) -> wxpay::v3::api::CreateTransferBill {
    use wxpay::v3::api::SceneReportInfo;
    wxpay::v3::api::CreateTransferBill {
        out_bill_no: no.into(),
        transfer_scene_id: "1000".into(),
        openid: env.sb.openid(DEMO_USER, APPID),
        transfer_amount: Fen::new(amount),
        transfer_remark: "活动奖励".into(),
        notify_url: notify_url.map(str::to_owned),
        user_recv_perception: Some("现金奖励".into()),
        transfer_scene_report_infos: vec![
            SceneReportInfo { info_type: "活动名称".into(), info_content: "新会员有礼".into() },
            SceneReportInfo { info_type: "奖励说明".into(), info_content: "注册奖励".into() },
        ],
        user_name: None,
    }
}

/// Transfer bills in both modes: create → WAIT_USER_CONFIRM with package_info → the user
/// confirms through the control endpoint → SUCCESS, money booked, a verified
/// MCHTRANSFER.BILL.FINISHED notification; queries by both numbers; idempotency by
/// out_bill_no; cancel; refusal; expiry on the sandbox clock; user_name from 2,000 yuan.
async fn transfer_bill_flow(mode: V3Mode) {
    use wxpay::v3::api::{CancelTransferBill, QueryTransferByBillNo, QueryTransferByOutBillNo, TransferBillState};
    let env = common::Env::with(config(mode)).await;
    let sb = &env.sb;
    let c = client(sb, mode);
    let rx = Receiver::start(vec![200]).await;
    let before = sb.balance(MCH);
    let req = transfer(&env, "T1", 1234, Some(&rx.url));
    let created = success(c.create_transfer_bill(&req).await.unwrap());
    assert_eq!(created.state, TransferBillState::WaitUserConfirm);
    let package = created.package_info.clone().expect("package_info for wx.requestMerchantTransfer");
    // Same out_bill_no, same parameters: the same bill; other parameters: refused.
    let again = success(c.create_transfer_bill(&req).await.unwrap());
    assert_eq!(
        (again.transfer_bill_no.as_str(), again.package_info.as_deref()),
        (created.transfer_bill_no.as_str(), Some(package.as_str()))
    );
    let other = transfer(&env, "T1", 999, Some(&rx.url));
    assert!(c.create_transfer_bill(&other).await.unwrap().is_unknown(), "INVALID_REQUEST on create is Unknown");

    let (s, b) = env.control("/sandbox/transfer-bills/T1/confirm", serde_json::json!({"accept": true})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("SUCCESS")), "{b}");
    assert_eq!(sb.balance(MCH).get(), before.get() - 1234);
    let got = rx.wait_for(1).await;
    let (envelope, event) = parse(&c, &got[0]).await.expect("transfer notification verifies");
    assert_eq!(envelope.event_type, "MCHTRANSFER.BILL.FINISHED");
    let Event::TransferBillFinished(t) = event else { panic!("{event:?}") };
    assert_eq!(
        (t.state, t.transfer_amount, t.mch_id.as_deref()),
        (TransferBillState::Success, Fen::new(1234), Some(MCH))
    );
    let q =
        success(c.query_transfer_by_out_bill_no(&QueryTransferByOutBillNo { out_bill_no: "T1".into() }).await.unwrap());
    let q2 = success(
        c.query_transfer_by_bill_no(&QueryTransferByBillNo { transfer_bill_no: created.transfer_bill_no.clone() })
            .await
            .unwrap(),
    );
    assert_eq!((q.state, q2.out_bill_no.as_str()), (TransferBillState::Success, "T1"));
    let flow = env.get_json("/sandbox/fundflow").await;
    assert!(
        flow.as_array()
            .unwrap()
            .iter()
            .any(|f| f["biz_no"] == created.transfer_bill_no.as_str() && f["amount"] == 1234)
    );
    let cancel_done = c.cancel_transfer_bill(&CancelTransferBill { out_bill_no: "T1".into() }).await.unwrap();
    assert_eq!(cancel_done.failed_code(), Some("INVALID_REQUEST"));

    // Cancel a waiting bill: CANCELING answered, CANCELLED on query, notified, no money moved.
    success(c.create_transfer_bill(&transfer(&env, "T2", 500, Some(&rx.url))).await.unwrap());
    let cancelled = success(c.cancel_transfer_bill(&CancelTransferBill { out_bill_no: "T2".into() }).await.unwrap());
    assert_eq!(cancelled.state, TransferBillState::Canceling);
    let q =
        success(c.query_transfer_by_out_bill_no(&QueryTransferByOutBillNo { out_bill_no: "T2".into() }).await.unwrap());
    assert_eq!(q.state, TransferBillState::Cancelled);
    let got = rx.wait_for(2).await;
    let (_, Event::TransferBillFinished(t)) = parse(&c, &got[1]).await.unwrap() else { panic!() };
    assert_eq!((t.out_bill_no.as_str(), t.state), ("T2", TransferBillState::Cancelled));
    let (s, _) = env.control("/sandbox/transfer-bills/T2/confirm", serde_json::json!({"accept": true})).await;
    assert_eq!(s, 409, "a cancelled bill cannot be confirmed");

    // The user refuses: FAIL with a reason.
    success(c.create_transfer_bill(&transfer(&env, "T3", 300, None)).await.unwrap());
    let (_, b) = env.control("/sandbox/transfer-bills/T3/confirm", serde_json::json!({"accept": false})).await;
    assert_eq!((b["state"].as_str(), b["fail_reason"].as_str()), (Some("FAIL"), Some("PAYEE_ACCOUNT_ABNORMAL")));

    // Unconfirmed for longer than the confirmation window: CANCELLED.
    success(c.create_transfer_bill(&transfer(&env, "T4", 300, None)).await.unwrap());
    sb.advance_clock(chrono::Duration::hours(25));
    let q =
        success(c.query_transfer_by_out_bill_no(&QueryTransferByOutBillNo { out_bill_no: "T4".into() }).await.unwrap());
    assert_eq!(q.state, TransferBillState::Cancelled);

    // From 2,000 yuan the real name is required, OAEP-encrypted under Wechatpay-Serial.
    let big = transfer(&env, "T5", 200_000, None);
    let raw_body = serde_json::json!({
        "appid": APPID, "out_bill_no": "T5", "transfer_scene_id": "1000", "openid": big.openid,
        "transfer_amount": 200_000, "transfer_remark": "活动奖励",
        "transfer_scene_report_infos": big.transfer_scene_report_infos,
    })
    .to_string();
    let (s, _, b) = raw(sb, Method::Post, "/v3/fund-app/mch-transfer/transfer-bills", &raw_body, None).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["code"].as_str()), (400, Some("PARAM_ERROR")), "{v}");
    let keys = c.verifier().keys();
    let name = wxpay::v3::crypto::encrypt_field(&keys, "张三", chrono::Utc::now().timestamp()).unwrap();
    let named = wxpay::v3::api::CreateTransferBill { user_name: Some(name), ..big };
    success(c.create_transfer_bill(&named).await.unwrap());
    let (_, b) = env.control("/sandbox/transfer-bills/T5/confirm", serde_json::json!({"accept": true})).await;
    assert_eq!(b["state"], "SUCCESS", "{b}");
    let wrong = wxpay::v3::crypto::encrypt_field(&keys, "李四", chrono::Utc::now().timestamp()).unwrap();
    let misnamed = wxpay::v3::api::CreateTransferBill { user_name: Some(wrong), ..transfer(&env, "T6", 200_000, None) };
    success(c.create_transfer_bill(&misnamed).await.unwrap());
    let (_, b) = env.control("/sandbox/transfer-bills/T6/confirm", serde_json::json!({"accept": true})).await;
    assert_eq!((b["state"].as_str(), b["fail_reason"].as_str()), (Some("FAIL"), Some("REAL_NAME_CHECK_FAIL")));

    // Balance short at creation: NOT_ENOUGH; an unopened scene: NO_AUTH.
    sb.set_balance(MCH, Fen::new(100));
    assert_eq!(
        c.create_transfer_bill(&transfer(&env, "T7", 300, None)).await.unwrap().failed_code(),
        Some("NOT_ENOUGH")
    );
    let mut scene = transfer(&env, "T8", 50, None);
    scene.transfer_scene_id = "9999".into();
    assert_eq!(c.create_transfer_bill(&scene).await.unwrap().failed_code(), Some("NO_AUTH"));
    let unknown =
        c.query_transfer_by_out_bill_no(&QueryTransferByOutBillNo { out_bill_no: "NONE".into() }).await.unwrap();
    assert_eq!(unknown.failed_code(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn transfer_bills_in_public_key_mode() {
    transfer_bill_flow(V3Mode::PublicKey).await;
}

#[tokio::test]
async fn transfer_bills_in_certificate_mode() {
    transfer_bill_flow(V3Mode::Certificate).await;
}

#[tokio::test]
async fn transfer_bills_in_switching_mode() {
    transfer_bill_flow(V3Mode::Switching).await;
}

/// A confirmed transfer bill is a row of the next day's fund-flow bill, as WeChat's
/// merchant-transfer debits are.
#[tokio::test]
async fn a_confirmed_transfer_bill_is_in_the_fund_flow_bill() {
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;
    use wxpay::v3::api::{FundAccountType, FundFlowBillRequest};

    let env = common::Env::with(config(V3Mode::PublicKey)).await;
    let sb = &env.sb;
    let c = client(sb, V3Mode::PublicKey);
    let created = success(c.create_transfer_bill(&transfer(&env, "FF1", 4321, None)).await.unwrap());
    let (s, b) = env.control("/sandbox/transfer-bills/FF1/confirm", serde_json::json!({"accept": true})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("SUCCESS")), "{b}");
    let day = sb.now().with_timezone(&Shanghai).date_naive();
    let next_morning = Shanghai.from_local_datetime(&day.succ_opt().unwrap().and_hms_opt(10, 30, 0).unwrap()).unwrap();
    sb.set_clock(next_morning.with_timezone(&chrono::Utc));
    let flow = FundFlowBillRequest { bill_date: day, account_type: FundAccountType::Basic, gzip: false };
    let link = success(c.fund_flow_bill(&flow).await.unwrap());
    let text = String::from_utf8(success(c.download_bill(&link, false).await.unwrap())).unwrap();
    let row = text.lines().find(|l| l.contains(created.transfer_bill_no.as_str())).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("43.21"), "the row carries the amount in yuan: {row}");
}

/// Transfer-bill calls above the per-merchant rate are 429 FREQUENCY_LIMITED (Unknown to
/// the client) and do nothing.
#[tokio::test]
async fn transfer_bill_rate_limit() {
    use wxpay::v3::api::QueryTransferByOutBillNo;
    let mut cfg = config(V3Mode::PublicKey);
    cfg.merchants[0].limits.transfer_bill_calls_per_sec = 2;
    let env = common::Env::with(cfg).await;
    let c = client(&env.sb, V3Mode::PublicKey);
    let mut limited = false;
    // Three calls inside one second exceed 2/s; a round that straddles a second is retried.
    for round in 0..5 {
        let q = QueryTransferByOutBillNo { out_bill_no: "NONE".into() };
        c.query_transfer_by_out_bill_no(&q).await.unwrap();
        c.query_transfer_by_out_bill_no(&q).await.unwrap();
        let third = c.create_transfer_bill(&transfer(&env, &format!("RL{round}"), 100, None)).await.unwrap();
        if third.is_unknown() {
            assert!(env.sb.balance(MCH).is_positive());
            let listed = env.get_json("/sandbox/transfer-bills").await;
            assert!(listed.as_array().unwrap().iter().all(|b| b["out_bill_no"] != format!("RL{round}")));
            limited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(limited, "the third call within a second is limited");
}
