//! # minipay-e2e — the end-to-end harness
//!
//! [`TestApp::spawn`] starts the whole system for one test, all in-process on loopback port 0:
//! a fresh migrated database ([`minipay_testkit::TestDb`]), the WeChat sandbox
//! ([`minipay_sandbox::Sandbox`], time-scaled ×0.001 so WeChat's waits take milliseconds),
//! the notify service, the api, and a webhook receiver. The configuration points at the
//! sandbox over HTTPS (its CA, the demo merchant's client certificate), and one API key per
//! role is created.
//!
//! Tests talk to the api through one typed method per endpoint ([`TestApp::create_order`],
//! [`TestApp::refund`], …) that return an [`ApiResponse`] (status + JSON), drive the sandbox
//! directly ([`TestApp::pay`], [`TestApp::login`]) and end with
//! [`TestApp::assert_ledger_balanced`].
//!
//! Engineers of other endpoints: add your typed methods in an `impl TestApp` block of your
//! own below (one method per endpoint, built on [`TestApp::post`] / [`TestApp::get`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use minipay_config::merchant_v3::VerifyMode;
use minipay_config::{Config, SandboxEndpoints};
use minipay_sandbox::{PayOrder, Sandbox, SandboxConfig};
use minipay_store::clients::{self, Role};
use minipay_testkit::TestDb;
use serde_json::{Value, json};
use sqlx::PgPool;

pub use minipay_config::{DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID};

/// A response from the api: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl ApiResponse {
    /// The error code of an error response (`""` otherwise).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Panics with the body unless the status is `expected`.
    #[track_caller]
    pub fn expect(&self, expected: u16) -> &Value {
        assert_eq!(self.status, expected, "unexpected status; body: {}", self.body);
        &self.body
    }
}

/// One API key per role (`client` also has a webhook endpoint on the test's receiver).
#[derive(Debug, Clone)]
pub struct Keys {
    pub client: String,
    pub finance: String,
    pub approver: String,
    pub viewer: String,
    pub admin: String,
    /// A second client, for "not your order" checks.
    pub other_client: String,
    /// Our own services reading the shared access token (issue 18).
    pub internal: String,
}

impl Keys {
    pub fn for_role(&self, role: Role) -> &str {
        match role {
            Role::Client => &self.client,
            Role::Finance => &self.finance,
            Role::Approver => &self.approver,
            Role::Viewer => &self.viewer,
            Role::Admin => &self.admin,
            Role::Internal => &self.internal,
        }
    }
}

/// What the webhook receiver got: headers of interest and the raw body.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub signature: Option<String>,
    pub event_type: Option<String>,
    pub body: String,
}

/// Which protocol the demo merchant speaks to WeChat Pay in a test: the same stories run
/// for both ([`Protocol::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V2,
    /// APIv3 in the sandbox merchant's verification mode (public key by default); the v2 key
    /// stays configured, as a v3 merchant's red packets need it.
    V3,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::V2, Protocol::V3];
}

/// Runs a story `async fn name(protocol: Protocol)` as two tests, `name::v2` and
/// `name::v3`: the same steps and assertions for a v2 and a v3 merchant.
#[macro_export]
macro_rules! both_protocols {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn v2() {
                super::$name($crate::Protocol::V2).await
            }
            #[tokio::test]
            async fn v3() {
                super::$name($crate::Protocol::V3).await
            }
        }
    )+};
}

/// Options for [`TestApp::spawn_with`].
pub struct Options {
    pub sandbox: SandboxConfig,
    /// The demo merchant's protocol.
    pub protocol: Protocol,
    /// Status the webhook receiver answers (e.g. 500 to test retries).
    pub webhook_status: u16,
    /// Applied to the configuration before the services start.
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sandbox: SandboxConfig { time_scale: 0.001, workers: 1, ..SandboxConfig::default() },
            protocol: Protocol::V2,
            webhook_status: 200,
            configure: Box::new(|_| {}),
        }
    }
}

impl Options {
    /// The default options with the demo merchant speaking `protocol`.
    pub fn with_protocol(protocol: Protocol) -> Options {
        Options { protocol, ..Options::default() }
    }

    /// Payout and red-packet tests: both approval thresholds at 100 yuan and the sender's
    /// retries fast (1 ms, at most 20 ms), so unknown outcomes resolve within a test.
    pub fn fast_payouts() -> Options {
        Options {
            configure: Box::new(|c| {
                c.payouts.approval_threshold = 10_000;
                c.payouts.redpack_approval_threshold = 10_000;
                c.payouts.retry_initial_ms = 1;
                c.payouts.retry_max_ms = 20;
            }),
            ..Options::default()
        }
    }
}

/// The demo merchant's APIv3 material as a merchant would configure it from the sandbox's
/// files: its certificate serial and key, the APIv3 key and the WeChat Pay public key.
fn v3_material(sandbox: &Sandbox) -> minipay_config::merchant_v3::V3Merchant {
    let keys = sandbox.v3_keys(DEMO_MCH_ID).expect("demo merchant v3 keys");
    let merchant = &sandbox.config().merchants[0];
    minipay_config::merchant_v3::demo_material(
        DEMO_MCH_ID,
        &keys.merchant_serial,
        &sandbox.client_key_pem(DEMO_MCH_ID).expect("demo merchant key"),
        &merchant.api_v3_key,
        match merchant.v3_mode {
            minipay_sandbox::V3Mode::Certificate => VerifyMode::Certificate,
            minipay_sandbox::V3Mode::PublicKey => VerifyMode::PublicKey,
            minipay_sandbox::V3Mode::Switching => VerifyMode::Both,
        },
        Some((&merchant.pub_key_id, &keys.public_key_pem)),
    )
    .expect("demo v3 material")
}

/// The whole system for one test.
pub struct TestApp {
    pub db: TestDb,
    pub sandbox: Sandbox,
    pub config: Config,
    pub api_url: String,
    pub notify_url: String,
    pub http: reqwest::Client,
    pub keys: Keys,
    /// The demo merchant's protocol.
    pub protocol: Protocol,
    /// The `client` key's api_clients id.
    pub client_id: uuid::Uuid,
    pub webhook_url: String,
    /// The `client` key's webhook signing secret.
    pub webhook_secret: String,
    webhooks: Arc<Mutex<Vec<ReceivedWebhook>>>,
    webhook_status: Arc<Mutex<u16>>,
    handles: Vec<ServerHandle>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> TestApp {
        let db = TestDb::new().await;
        let sandbox = Sandbox::start(opts.sandbox).await.expect("start the sandbox");
        let mut config = Config::demo(
            &db.url,
            SandboxEndpoints {
                pay_base_url: sandbox.https_url(),
                api_base_url: sandbox.https_url(),
                ca_pem: sandbox.ca_pem(),
                client_p12: sandbox.client_identity_p12(DEMO_MCH_ID).expect("demo merchant certificate"),
                v3: (opts.protocol == Protocol::V3).then(|| v3_material(&sandbox)),
            },
        );
        config.api.workers = 2;
        config.notify.workers = 1;
        // The notify service's port must be known before the api builds notify_url from it.
        let notify_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind notify");
        let notify_port = notify_listener.local_addr().expect("notify addr").port();
        config.notify.public_url = format!("http://127.0.0.1:{notify_port}");
        (opts.configure)(&mut config);

        let notify = minipay_notify::Application::from_listener(notify_listener, &config, db.pool.clone())
            .expect("build notify");
        let mut handles = vec![notify.handle()];
        tokio::spawn(notify.run_until_stopped());
        let api = minipay_api::Application::build(config.clone(), db.pool.clone()).await.expect("build api");
        let api_url = format!("http://127.0.0.1:{}", api.port());
        handles.push(api.handle());
        tokio::spawn(api.run_until_stopped());

        let webhooks = Arc::new(Mutex::new(Vec::new()));
        let webhook_status = Arc::new(Mutex::new(opts.webhook_status));
        let (webhook_url, handle) = start_receiver(webhooks.clone(), webhook_status.clone());
        handles.push(handle);

        let mut conn = db.pool.acquire().await.expect("connection");
        let client = clients::create(&mut conn, "shop", Role::Client, Some(&webhook_url)).await.expect("client key");
        let mut keys = Vec::new();
        for (role, name) in [
            (Role::Finance, "finance"),
            (Role::Approver, "approver"),
            (Role::Viewer, "viewer"),
            (Role::Admin, "admin"),
            (Role::Client, "other shop"),
            (Role::Internal, "internal"),
        ] {
            keys.push(clients::create(&mut conn, name, role, None).await.expect("key").key);
        }
        let [finance, approver, viewer, admin, other_client, internal]: [String; 6] =
            keys.try_into().expect("six keys");
        drop(conn);
        TestApp {
            notify_url: config.notify.public_url.clone(),
            db,
            sandbox,
            config,
            api_url,
            http: reqwest::Client::new(),
            keys: Keys { client: client.key, finance, approver, viewer, admin, other_client, internal },
            protocol: opts.protocol,
            client_id: client.client.id,
            webhook_url,
            webhook_secret: client.webhook_secret.expect("webhook secret"),
            webhooks,
            webhook_status,
            handles,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Checks `pay_params` as the mini-program's `wx.requestPayment` would be checked by
    /// WeChat: v2 — `signType` MD5 and `paySign` over the five fields with the merchant key;
    /// v3 — `signType` RSA and `paySign` a SHA256withRSA signature by the merchant's key over
    /// `appId\ntimeStamp\nnonceStr\npackage\n`.
    #[track_caller]
    pub fn assert_pay_params(&self, p: &Value) {
        let field = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("pay_params.{k} missing: {p}")).to_owned();
        assert!(field("package").starts_with("prepay_id="), "{p}");
        assert_eq!(field("appId"), DEMO_APPID);
        match self.protocol {
            Protocol::V2 => {
                let fields: wxpay::Params = ["appId", "timeStamp", "nonceStr", "package", "signType"]
                    .iter()
                    .map(|k| (k.to_string(), field(k)))
                    .collect();
                assert_eq!(field("signType"), "MD5");
                let key = wxpay::ApiKey::new(DEMO_API_KEY);
                assert_eq!(field("paySign"), wxpay::sign::sign(&fields, &key, wxpay::SignType::Md5));
            }
            Protocol::V3 => {
                assert_eq!(field("signType"), "RSA");
                let message = wxpay::v3::jsapi::request_payment_message(
                    &field("appId"),
                    &field("timeStamp"),
                    &field("nonceStr"),
                    &field("package"),
                );
                let public = &self.sandbox.v3_keys(DEMO_MCH_ID).expect("v3 keys").merchant_public;
                assert!(
                    wxpay::v3::sign::rsa_sha256_verify(public, message.as_bytes(), &field("paySign")),
                    "paySign does not verify with the merchant's certificate: {p}"
                );
            }
        }
    }

    // ----- generic requests ------------------------------------------------------------

    /// POST `path` with `key` (None = no Authorization) and an optional Idempotency-Key.
    pub async fn post_as(
        &self,
        key: Option<&str>,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> ApiResponse {
        let mut req = self.http.post(format!("{}{path}", self.api_url)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        read(req.send().await.expect("api reachable")).await
    }

    /// POST raw bytes (for malformed-JSON and size tests) as the client role.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> ApiResponse {
        let req = self
            .http
            .post(format!("{}{path}", self.api_url))
            .bearer_auth(&self.keys.client)
            .header("Content-Type", content_type)
            .body(body);
        read(req.send().await.expect("api reachable")).await
    }

    /// POST as the client role, without an Idempotency-Key.
    pub async fn post(&self, path: &str, body: &Value) -> ApiResponse {
        self.post_as(Some(&self.keys.client), path, body, None).await
    }

    pub async fn get_as(&self, key: Option<&str>, path: &str) -> ApiResponse {
        let mut req = self.http.get(format!("{}{path}", self.api_url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        read(req.send().await.expect("api reachable")).await
    }

    /// GET as the client role.
    pub async fn get(&self, path: &str) -> ApiResponse {
        self.get_as(Some(&self.keys.client), path).await
    }

    // ----- payments endpoints (issue 4) ---------------------------------------------------

    /// Mints a `wx.login` code for a sandbox user and logs in: returns the openid.
    pub async fn login(&self, user: &str) -> String {
        let code = self.login_code(user).await;
        let r = self.create_session(&json!({"code": code})).await;
        r.expect(200)["openid"].as_str().expect("openid").to_owned()
    }

    /// A fresh login code for `user` in the demo app (sandbox control API).
    pub async fn login_code(&self, user: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/sandbox/jscode", self.sandbox.http_url()))
            .json(&json!({"user": user}))
            .send()
            .await
            .expect("sandbox reachable")
            .json()
            .await
            .expect("jscode answer");
        r["code"].as_str().expect("code").to_owned()
    }

    pub async fn create_session(&self, body: &Value) -> ApiResponse {
        self.post("/v1/sessions", body).await
    }

    pub async fn create_order(&self, body: &Value) -> ApiResponse {
        self.post("/v1/orders", body).await
    }

    pub async fn create_order_idempotent(&self, body: &Value, key: &str) -> ApiResponse {
        self.post_as(Some(&self.keys.client), "/v1/orders", body, Some(key)).await
    }

    /// A standard order for `openid`: 1000 fen, expires in an hour.
    pub async fn create_order_for(&self, openid: &str, amount: i64) -> ApiResponse {
        self.create_order(&json!({"openid": openid, "amount": amount, "description": "e2e order", "expires_in": 3600}))
            .await
    }

    pub async fn get_order(&self, out_trade_no: &str) -> ApiResponse {
        self.get(&format!("/v1/orders/{out_trade_no}")).await
    }

    pub async fn get_order_refreshed(&self, out_trade_no: &str) -> ApiResponse {
        self.get(&format!("/v1/orders/{out_trade_no}?refresh=true")).await
    }

    pub async fn close_order(&self, out_trade_no: &str) -> ApiResponse {
        self.post(&format!("/v1/orders/{out_trade_no}/close"), &json!({})).await
    }

    pub async fn refund(&self, out_trade_no: &str, body: &Value) -> ApiResponse {
        self.post(&format!("/v1/orders/{out_trade_no}/refunds"), body).await
    }

    pub async fn refund_idempotent(&self, out_trade_no: &str, body: &Value, key: &str) -> ApiResponse {
        self.post_as(Some(&self.keys.client), &format!("/v1/orders/{out_trade_no}/refunds"), body, Some(key)).await
    }

    pub async fn get_refund(&self, out_refund_no: &str) -> ApiResponse {
        self.get(&format!("/v1/refunds/{out_refund_no}")).await
    }

    /// `GET /v1/webhooks` with a query string (`""`, `"?status=dead"`, …).
    pub async fn list_webhooks(&self, query: &str) -> ApiResponse {
        self.get(&format!("/v1/webhooks{query}")).await
    }

    // ----- the sandbox and waiting ---------------------------------------------------------

    /// Pays an order in the sandbox as the user would (WeChat then notifies us).
    pub fn pay(&self, out_trade_no: &str) {
        self.pay_with(PayOrder { out_trade_no: Some(out_trade_no.into()), ..PayOrder::default() });
    }

    /// Pays without WeChat notifying us (the order learns of it only by querying).
    pub fn pay_silently(&self, out_trade_no: &str) {
        self.pay_with(PayOrder { out_trade_no: Some(out_trade_no.into()), notify: Some(false), ..PayOrder::default() });
    }

    pub fn pay_with(&self, req: PayOrder) {
        self.sandbox.pay(&req).expect("sandbox payment");
    }

    /// The order's stored status.
    pub async fn order_status(&self, out_trade_no: &str) -> String {
        let (s,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE out_trade_no = $1")
            .bind(out_trade_no)
            .fetch_one(self.pool())
            .await
            .expect("order row");
        s
    }

    /// Polls until the order has `status` (panics after 15 s).
    pub async fn wait_for_order_status(&self, out_trade_no: &str, status: &str) {
        let last = Mutex::new(String::new());
        let ok = poll(Duration::from_secs(15), || async {
            let s = self.order_status(out_trade_no).await;
            let done = s == status;
            *last.lock().expect("lock") = s;
            done
        })
        .await;
        let last = last.into_inner().expect("lock");
        assert!(ok, "order {out_trade_no} never became {status} (last {last})");
    }

    /// Polls until the refund has `status` in the database (panics after 15 s).
    pub async fn wait_for_refund_status(&self, out_refund_no: &str, status: &str) {
        let ok = poll(Duration::from_secs(15), || async {
            let row: Option<(String,)> = sqlx::query_as("SELECT status FROM refunds WHERE out_refund_no = $1")
                .bind(out_refund_no)
                .fetch_optional(self.pool())
                .await
                .expect("refund row");
            row.is_some_and(|r| r.0 == status)
        })
        .await;
        assert!(ok, "refund {out_refund_no} never became {status}");
    }

    // ----- webhooks ------------------------------------------------------------------------

    /// What the webhook receiver got so far.
    pub fn received_webhooks(&self) -> Vec<ReceivedWebhook> {
        self.webhooks.lock().expect("receiver lock").clone()
    }

    /// Changes what the receiver answers from now on.
    pub fn set_webhook_status(&self, status: u16) {
        *self.webhook_status.lock().expect("receiver lock") = status;
    }

    // ----- invariants ------------------------------------------------------------------------

    /// Every ledger transaction sums to zero (call at the end of every test).
    pub async fn assert_ledger_balanced(&self) {
        let mut conn = self.pool().acquire().await.expect("connection");
        let bad = minipay_store::ledger::unbalanced_transactions(&mut conn).await.expect("ledger query");
        assert!(bad.is_empty(), "unbalanced ledger transactions: {bad:?}");
    }

    /// Stops the services (the sandbox and database go with the test process).
    pub async fn shutdown(self) {
        for h in &self.handles {
            h.stop(true).await;
        }
        self.sandbox.shutdown().await;
    }
}

// ----- payouts and red packets (payouts engineer) ----------------------------------------

impl TestApp {
    /// POST `path` as `key` with a raw body of `content_type` and an optional Idempotency-Key.
    pub async fn post_body_as(
        &self,
        key: Option<&str>,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        idempotency_key: Option<&str>,
    ) -> ApiResponse {
        let mut req = self.http.post(format!("{}{path}", self.api_url)).header("Content-Type", content_type).body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        read(req.send().await.expect("api reachable")).await
    }

    /// `POST /v1/payouts` as `key` with an Idempotency-Key.
    pub async fn create_payout(&self, key: &str, body: &Value, idempotency_key: &str) -> ApiResponse {
        self.post_as(Some(key), "/v1/payouts", body, Some(idempotency_key)).await
    }

    /// `POST /v1/payouts` as finance for `openid`, a fresh Idempotency-Key; asserts 201.
    pub async fn request_payout(&self, openid: &str, amount: i64) -> Value {
        let body = json!({"openid": openid, "amount": amount, "description": "e2e payout"});
        self.create_payout(&self.keys.finance, &body, &uuid::Uuid::new_v4().to_string()).await.expect(201).clone()
    }

    pub async fn approve_payout(&self, key: &str, id: i64) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/payouts/{id}/approve"), &json!({}), None).await
    }

    pub async fn reject_payout(&self, key: &str, id: i64, reason: &str) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/payouts/{id}/reject"), &json!({"reason": reason}), None).await
    }

    pub async fn get_payout(&self, key: &str, id: i64) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/payouts/{id}")).await
    }

    /// `GET /v1/payouts?<query>`.
    pub async fn list_payouts(&self, key: &str, query: &str) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/payouts?{query}")).await
    }

    /// `POST /v1/payouts/batches` with a CSV body.
    pub async fn create_payout_batch(&self, key: &str, csv: &str, idempotency_key: &str) -> ApiResponse {
        self.post_body_as(Some(key), "/v1/payouts/batches", csv.as_bytes().to_vec(), "text/csv", Some(idempotency_key))
            .await
    }

    pub async fn approve_payout_batch(&self, key: &str, id: i64) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/payouts/batches/{id}/approve"), &json!({}), None).await
    }

    pub async fn reject_payout_batch(&self, key: &str, id: i64, reason: &str) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/payouts/batches/{id}/reject"), &json!({"reason": reason}), None).await
    }

    pub async fn get_payout_batch(&self, key: &str, id: i64) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/payouts/batches/{id}")).await
    }

    /// `POST /v1/redpacks` as `key` with an Idempotency-Key.
    pub async fn create_redpack(&self, key: &str, body: &Value, idempotency_key: &str) -> ApiResponse {
        self.post_as(Some(key), "/v1/redpacks", body, Some(idempotency_key)).await
    }

    pub async fn approve_redpack(&self, key: &str, mch_billno: &str) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/redpacks/{mch_billno}/approve"), &json!({}), None).await
    }

    pub async fn reject_redpack(&self, key: &str, mch_billno: &str, reason: &str) -> ApiResponse {
        self.post_as(Some(key), &format!("/v1/redpacks/{mch_billno}/reject"), &json!({"reason": reason}), None).await
    }

    pub async fn get_redpack(&self, key: &str, mch_billno: &str) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/redpacks/{mch_billno}")).await
    }

    /// `GET /v1/redpacks?<query>`.
    pub async fn list_redpacks(&self, key: &str, query: &str) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/redpacks?{query}")).await
    }

    /// The worker's payout sender on this app's configuration, to drive one step at a time.
    pub fn payout_sender(&self) -> minipay_worker::payouts::PayoutSender {
        minipay_worker::payouts::PayoutSender::from_config(&self.config, self.pool().clone()).expect("payout sender")
    }

    /// Runs the sender until no payout or red packet is approved, sending or unknown (sent
    /// packets' follow-ups are not waited for), for at most `limit`. Returns whether it got
    /// there.
    pub async fn send_payouts_until_settled(&self, limit: Duration) -> bool {
        self.settle_payouts_with(&self.payout_sender(), limit).await
    }

    /// As [`TestApp::send_payouts_until_settled`] with a given sender (building one loads the
    /// client certificate and TLS roots: tests that settle often keep one).
    pub async fn settle_payouts_with(&self, sender: &minipay_worker::payouts::PayoutSender, limit: Duration) -> bool {
        poll(limit, || async {
            sender.run_until_idle(100).await.expect("sender step");
            let (open,): (i64,) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM payouts WHERE status IN ('approved', 'sending', 'unknown'))
                      + (SELECT count(*) FROM redpacks WHERE status IN ('approved', 'sending', 'unknown'))",
            )
            .fetch_one(self.pool())
            .await
            .expect("open payouts");
            open == 0
        })
        .await
    }

    /// Injects a sandbox fault on a WeChat path for the next `times` calls.
    /// The sandbox's notifications once every one of them is delivered (the sandbox records
    /// an attempt only after our answer is back, a moment after we committed). Panics after
    /// ten seconds.
    pub async fn delivered_notifications(&self) -> Vec<minipay_sandbox::Notification> {
        let all_delivered = || {
            let n = self.sandbox.notifications();
            n.iter().all(|n| n.status == "delivered").then_some(n)
        };
        let ok = poll(Duration::from_secs(10), || async { all_delivered().is_some() }).await;
        assert!(ok, "notifications not all delivered: {:?}", self.sandbox.notifications());
        all_delivered().expect("delivered")
    }

    /// The sandbox path of a WeChat Pay call in this test's protocol (a fault target),
    /// named by its v2 path; notification targets (`notify/…`) are the same for both.
    pub fn wx_path(&self, v2_path: &str) -> String {
        if self.protocol == Protocol::V2 {
            return v2_path.to_owned();
        }
        match v2_path {
            "/pay/unifiedorder" => "/v3/pay/transactions/jsapi",
            "/pay/orderquery" => "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            "/pay/closeorder" => "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            "/secapi/pay/refund" => "/v3/refund/domestic/refunds",
            "/pay/refundquery" => "/v3/refund/domestic/refunds/{out_refund_no}",
            other => other,
        }
        .to_owned()
    }

    /// A WeChat error code in this test's protocol, named by its v2 spelling.
    pub fn wx_code(&self, v2_code: &str) -> String {
        match (self.protocol, v2_code) {
            (Protocol::V3, "SYSTEMERROR") => "SYSTEM_ERROR".into(),
            (Protocol::V3, "NOTENOUGH") => "NOT_ENOUGH".into(),
            (_, other) => other.into(),
        }
    }

    pub fn add_fault(&self, path: &str, kind: minipay_sandbox::FaultKind, times: u32) {
        self.sandbox
            .add_fault(minipay_sandbox::Fault { path: path.into(), kind, times: Some(times) })
            .expect("valid fault");
    }
}

/// Checks a `Minipay-Signature: t=<unix>,v1=<hex>` header against the body and secret.
pub fn verify_webhook_signature(header: &str, body: &str, secret: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let Ok(sig) = hex::decode(v1) else { return false };
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub async fn poll<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read(resp: reqwest::Response) -> ApiResponse {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("response body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    ApiResponse { status, body, headers }
}

/// A tiny webhook endpoint on loopback that records every delivery.
fn start_receiver(store: Arc<Mutex<Vec<ReceivedWebhook>>>, status: Arc<Mutex<u16>>) -> (String, ServerHandle) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let port = listener.local_addr().expect("receiver addr").port();
    let server = HttpServer::new(move || {
        let store = store.clone();
        let status = status.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let store = store.clone();
            let status = status.clone();
            async move {
                let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                store.lock().expect("receiver lock").push(ReceivedWebhook {
                    signature: header("minipay-signature"),
                    event_type: header("minipay-event"),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let code = *status.lock().expect("receiver lock");
                HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap_or_default()).finish()
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("receiver listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/hooks"), handle)
}

// ----- platform endpoints (issue 18) ---------------------------------------------------------

impl TestApp {
    /// POST to a sandbox control path; returns (status, JSON).
    pub async fn sandbox_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.sandbox.http_url())).json(body).send().await.expect("sandbox");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn sandbox_get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.sandbox.http_url())).send().await.expect("sandbox");
        r.json().await.expect("sandbox JSON")
    }

    /// `GET /v1/wechat/access-token` with `key`.
    pub async fn access_token_as(&self, key: &str, appid: &str) -> ApiResponse {
        self.get_as(Some(key), &format!("/v1/wechat/access-token?appid={appid}")).await
    }

    /// `GET /v1/users?…` as the client role.
    pub async fn find_users(&self, query: &str) -> ApiResponse {
        self.get(&format!("/v1/users?{query}")).await
    }

    pub async fn phone_number(&self, body: &Value) -> ApiResponse {
        self.post("/v1/users/phone-number", body).await
    }

    pub async fn send_cs_message(&self, body: &Value) -> ApiResponse {
        self.post("/v1/cs/messages", body).await
    }

    pub async fn cs_messages(&self, openid: &str) -> ApiResponse {
        self.get(&format!("/v1/cs/messages?openid={openid}")).await
    }

    /// The api's push URL for an app.
    pub fn push_url(&self, appid: &str) -> String {
        format!("{}/wechat/push/{appid}", self.api_url)
    }
}
