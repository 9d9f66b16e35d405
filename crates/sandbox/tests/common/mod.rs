//! Shared helpers for the sandbox's integration tests: start a sandbox on port 0, sign and
//! send WeChat XML over plain HTTP or over TLS with a client certificate, and run a small
//! notification receiver.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use minipay_sandbox::config::{DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID};
use minipay_sandbox::{Sandbox, SandboxConfig};
use wxpay::ApiKey;
use wxpay::sign::{self, SignType};
use wxpay::xml::{self, Params};

pub const MCH: &str = DEMO_MCH_ID;
pub const APPID: &str = DEMO_APPID;

pub fn key() -> ApiKey {
    ApiKey::new(DEMO_API_KEY)
}

/// A config for tests: time runs 1000× faster for waits, refunds settle after 2 sandbox s.
pub fn fast_config() -> SandboxConfig {
    SandboxConfig::for_tests()
}

pub struct Env {
    pub sb: Sandbox,
    /// Trusts the sandbox CA, presents no client certificate.
    pub plain: reqwest::Client,
    /// Trusts the sandbox CA and presents the demo merchant's client certificate.
    pub tls: reqwest::Client,
}

impl Env {
    pub async fn start() -> Env {
        Env::with(fast_config()).await
    }

    pub async fn with(cfg: SandboxConfig) -> Env {
        let sb = Sandbox::start(cfg).await.expect("sandbox starts");
        let plain = client(&sb, None);
        let tls = client(&sb, Some(MCH));
        Env { sb, plain, tls }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sb.http_url(), path)
    }

    pub fn tls_url(&self, path: &str) -> String {
        format!("{}{}", self.sb.https_url(), path)
    }

    /// Signs `fields` (plus appid/mch_id/nonce_str for the pay family) with the demo key and
    /// POSTs them over plain HTTP.
    pub async fn pay(&self, path: &str, fields: &[(&str, &str)]) -> Params {
        post_xml(&self.plain, &self.url(path), &signed(base_pay(fields), SignType::Md5)).await
    }

    /// The same over TLS with the demo merchant's certificate.
    pub async fn pay_tls(&self, path: &str, params: Params) -> Params {
        post_xml(&self.tls, &self.tls_url(path), &params).await
    }

    /// POST to a `/sandbox/` control endpoint; returns (status, JSON).
    pub async fn control(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.plain.post(self.url(path)).json(&body).send().await.expect("control call");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.plain.get(self.url(path)).send().await.expect("get").json().await.expect("json")
    }

    /// Creates an order over the wire and returns its prepay_id.
    pub async fn order(&self, out_trade_no: &str, total_fee: &str, notify_url: &str) -> String {
        let r = self
            .pay(
                "/pay/unifiedorder",
                &[
                    ("body", "测试商品"),
                    ("out_trade_no", out_trade_no),
                    ("total_fee", total_fee),
                    ("spbill_create_ip", "127.0.0.1"),
                    ("notify_url", notify_url),
                    ("trade_type", "JSAPI"),
                    ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
                ],
            )
            .await;
        assert_eq!(r["result_code"], "SUCCESS", "{r:?}");
        r["prepay_id"].clone()
    }

    /// Creates and pays an order without a notification.
    pub async fn paid_order(&self, out_trade_no: &str, total_fee: &str) -> serde_json::Value {
        self.order(out_trade_no, total_fee, "http://127.0.0.1:9/unused").await;
        let (s, o) =
            self.control("/sandbox/pay", serde_json::json!({"out_trade_no": out_trade_no, "notify": false})).await;
        assert_eq!(s, 200, "{o}");
        o
    }
}

pub fn client(sb: &Sandbox, identity: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&sb.ca_pem()).expect("CA parses");
    let mut b = reqwest::Client::builder().add_root_certificate(ca).timeout(std::time::Duration::from_secs(20));
    if let Some(mch) = identity {
        let p12 = sb.client_identity_p12(mch).expect("merchant identity");
        b = b.identity(reqwest::Identity::from_pkcs12_der(&p12, mch).expect("p12 parses"));
    }
    b.build().expect("client builds")
}

pub fn base_pay(fields: &[(&str, &str)]) -> Params {
    let mut p = Params::new();
    p.insert("appid".into(), APPID.into());
    p.insert("mch_id".into(), MCH.into());
    p.insert("nonce_str".into(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into());
    for (k, v) in fields {
        p.insert((*k).into(), (*v).into());
    }
    p
}

pub fn params(fields: &[(&str, &str)]) -> Params {
    fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub fn signed(mut p: Params, t: SignType) -> Params {
    sign::sign_params(&mut p, &key(), t);
    p
}

pub async fn post_raw(client: &reqwest::Client, url: &str, body: String) -> Result<reqwest::Response, reqwest::Error> {
    client.post(url).header("Content-Type", "text/xml; charset=utf-8").body(body).send().await
}

pub async fn post_xml(client: &reqwest::Client, url: &str, p: &Params) -> Params {
    let r = post_raw(client, url, xml::encode(p)).await.expect("request succeeds");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("body");
    xml::decode(&body).unwrap_or_else(|e| panic!("answer is WeChat XML ({e}): {}", String::from_utf8_lossy(&body)))
}

/// Asserts a pay-family answer carries a valid signature.
pub fn assert_signed(p: &Params) {
    sign::verify(p, &key()).unwrap_or_else(|e| panic!("answer signature: {e:?} in {p:?}"));
}

/// A notification receiver: answers each POST with the next scripted reply (the last one
/// repeats) and records the bodies it got.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(replies: Vec<&'static str>) -> Receiver {
        use actix_web::{App, HttpServer, web};
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        let g = got.clone();
        let replies = Arc::new(replies);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            let g = g.clone();
            let replies = replies.clone();
            App::new().default_service(web::to(move |body: String| {
                let g = g.clone();
                let replies = replies.clone();
                async move {
                    let n = {
                        let mut v = g.lock().unwrap();
                        v.push(body);
                        v.len()
                    };
                    let reply = replies.get(n - 1).or(replies.last()).copied().unwrap_or("");
                    actix_web::HttpResponse::Ok().content_type("text/xml").body(reply)
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url: format!("http://127.0.0.1:{port}/notify"), got, handle }
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

pub const SUCCESS_REPLY: &str =
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
pub const FAIL_REPLY: &str =
    "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[busy]]></return_msg></xml>";

/// Polls `f` until it is true (or 30 s pass): background delivery is asynchronous.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..3000 {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}
