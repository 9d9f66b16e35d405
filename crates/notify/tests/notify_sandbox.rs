//! End to end with the sandbox as WeChat: orders are placed at the sandbox with our notify
//! URL, paid there as a user would, and the sandbox delivers its signed notifications (with
//! WeChat's retry schedule, time-scaled) to the notify service backed by Postgres.

use std::path::Path;
use std::time::{Duration, Instant};

use minipay_config::{Config, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID};
use minipay_notify::Application;
use minipay_sandbox::Sandbox;
use minipay_sandbox::config::SandboxConfig;
use minipay_sandbox::faults::{Fault, FaultKind};
use minipay_store::ledger::{self, Kind};
use minipay_testkit::{PgCluster, TestDb};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use wxpay::api::{OrderRef, RefundRequest, UnifiedOrderRequest};
use wxpay::client::{Client, ClientConfig, ClientIdentity};
use wxpay::outcome::Outcome;
use wxpay::{ApiKey, Fen, xml};

fn notify_config() -> Config {
    let toml = format!(
        r#"
[notify]
listen = "127.0.0.1:0"
workers = 2

[[merchants]]
mch_id = "{DEMO_MCH_ID}"
api_key = "{DEMO_API_KEY}"

[[apps]]
appid = "{DEMO_APPID}"
mch_id = "{DEMO_MCH_ID}"
secret = "test-app-secret"
default = true
"#
    );
    Config::from_toml_with_env(&toml, Vec::new(), Path::new(".")).expect("test config")
}

struct World {
    pool: PgPool,
    sandbox: Sandbox,
    wechat: Client,
    notify_base: String,
    http: reqwest::Client,
    openid: String,
    client_id: uuid::Uuid,
    metrics: minipay_notify::Metrics,
}

impl World {
    async fn start(pool: PgPool, time_scale: f64) -> World {
        let sandbox =
            Sandbox::start(SandboxConfig { time_scale, notify_timeout_ms: 10_000, ..SandboxConfig::default() })
                .await
                .expect("sandbox");
        let app = Application::build(&notify_config(), pool.clone()).await.expect("notify");
        let notify_base = format!("http://127.0.0.1:{}", app.port());
        let metrics = app.metrics();
        tokio::spawn(app.run_until_stopped());
        let mut cfg = ClientConfig::new(DEMO_MCH_ID, DEMO_APPID, ApiKey::new(DEMO_API_KEY));
        cfg.base_url = sandbox.https_url();
        cfg.extra_root_ca_pem = Some(sandbox.ca_pem());
        cfg.identity = Some(ClientIdentity::Pkcs12 {
            der: sandbox.client_identity_p12(DEMO_MCH_ID).expect("demo merchant identity"),
            password: None,
        });
        let wechat = Client::new(cfg).expect("wxpay client");
        let openid = sandbox.openid("alice", DEMO_APPID);
        sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2)")
            .bind(DEMO_APPID)
            .bind(DEMO_MCH_ID)
            .execute(&pool)
            .await
            .unwrap();
        let client_id = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, 'shop', 'client', $2, 'k')",
        )
        .bind(client_id)
        .bind(client_id.simple().to_string())
        .execute(&pool)
        .await
        .unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        World { pool, sandbox, wechat, notify_base, http, openid, client_id, metrics }
    }

    /// Our order row (as the api would write it) and the same order at the sandbox, with
    /// our notify URL.
    async fn place_order(&self, no: &str, amount: i64) {
        sqlx::query(
            "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, status, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'e2e', 'prepaid', now() + interval '2 hours')",
        )
        .bind(no)
        .bind(DEMO_APPID)
        .bind(DEMO_MCH_ID)
        .bind(self.client_id)
        .bind(&self.openid)
        .bind(amount)
        .execute(&self.pool)
        .await
        .unwrap();
        let req = UnifiedOrderRequest {
            body: "e2e".into(),
            out_trade_no: no.into(),
            total_fee: Fen::new(amount),
            spbill_create_ip: "127.0.0.1".into(),
            notify_url: format!("{}/wxpay/notify/pay", self.notify_base),
            openid: self.openid.clone(),
            attach: None,
            time_start: None,
            time_expire: None,
            detail: None,
            goods_tag: None,
            limit_pay: None,
            profit_sharing: None,
        };
        let out = self.wechat.unified_order(&req).await.expect("unifiedorder call");
        assert!(matches!(out, Outcome::Success(_)), "unifiedorder: {out:?}");
    }

    fn pay(&self, no: &str) {
        let req = minipay_sandbox::PayOrder { out_trade_no: Some(no.into()), ..Default::default() };
        self.sandbox.pay(&req).expect("the sandbox user pays");
    }

    async fn order_status(&self, no: &str) -> String {
        sqlx::query_as::<_, (String,)>("SELECT status FROM orders WHERE out_trade_no = $1")
            .bind(no)
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .0
    }

    /// Waits (bounded) until the sandbox's notification about `no` reached `status`.
    async fn notification(&self, kind: &str, no: &str, status: &str) -> minipay_sandbox::Notification {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.sandbox.notifications().into_iter().find(|n| {
                n.kind == kind && (n.out_trade_no == no || n.out_refund_no.as_deref() == Some(no)) && n.status == status
            });
            if let Some(n) = found {
                return n;
            }
            assert!(Instant::now() < deadline, "no {kind} notification for {no} reached {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn replay(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/wxpay/notify/pay", self.notify_base))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn postings(&self, kind: Kind, reference: &str) -> i64 {
        let mut c = self.pool.acquire().await.unwrap();
        ledger::count_postings(&mut c, kind, reference).await.unwrap()
    }

    async fn assert_balanced(&self) {
        let mut c = self.pool.acquire().await.unwrap();
        assert!(ledger::unbalanced_transactions(&mut c).await.unwrap().is_empty());
    }
}

fn return_code(reply: &(u16, String)) -> String {
    xml::decode(reply.1.as_bytes()).expect("WeChat XML reply")["return_code"].clone()
}

#[tokio::test]
async fn the_sandbox_notification_pays_the_order_once_even_when_duplicated() {
    let db = TestDb::new().await;
    let w = World::start(db.pool.clone(), 0.001).await;
    w.place_order("e2e-1", 2500).await;
    w.sandbox.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::Duplicate, times: Some(1) }).unwrap();
    w.pay("e2e-1");
    let n = w.notification("pay", "e2e-1", "delivered").await;
    assert_eq!(n.attempts.len(), 2, "the duplicate fault sent the first attempt twice");
    assert!(n.attempts.iter().all(|a| a.success), "both copies were acknowledged");
    assert_eq!(w.order_status("e2e-1").await, "paid");

    // WeChat's later redeliveries, sequentially and 20 at once: acknowledged, nothing changes.
    for _ in 0..3 {
        assert_eq!(return_code(&w.replay(n.body.clone()).await), "SUCCESS");
    }
    let replies = futures::future::join_all((0..20).map(|_| w.replay(n.body.clone()))).await;
    assert!(replies.iter().all(|r| r.0 == 200 && return_code(r) == "SUCCESS"), "{replies:?}");

    assert_eq!(w.postings(Kind::Payment, "e2e-1").await, 1);
    assert_eq!(w.metrics.count("payment", "applied"), 1);
    assert_eq!(w.metrics.count("payment", "duplicate"), 24);
    let (deliveries,): (i32,) = sqlx::query_as("SELECT deliveries FROM wxpay_notifications WHERE reference = 'e2e-1'")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 25);
    let (amount, txn): (i64, String) =
        sqlx::query_as("SELECT amount, transaction_id FROM orders WHERE out_trade_no = 'e2e-1'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    let theirs = w.sandbox.orders().into_iter().find(|o| o.out_trade_no == "e2e-1").unwrap();
    assert_eq!((amount, Some(txn)), (theirs.total_fee.get(), theirs.transaction_id));
    w.assert_balanced().await;
}

#[tokio::test]
async fn altered_sandbox_notifications_change_nothing() {
    let db = TestDb::new().await;
    let w = World::start(db.pool.clone(), 0.001).await;
    w.place_order("e2e-2", 1000).await;
    // The user pays but the notification is lost; we replay altered copies of the real one.
    w.sandbox.add_fault(Fault { path: "notify/pay".into(), kind: FaultKind::Drop, times: None }).unwrap();
    w.pay("e2e-2");
    let body = w
        .sandbox
        .notifications()
        .into_iter()
        .find(|n| n.out_trade_no == "e2e-2")
        .expect("the sandbox built the notification")
        .body;
    let fields = xml::decode(body.as_bytes()).unwrap();

    let mut cheaper = fields.clone();
    cheaper.insert("total_fee".into(), "1".into());
    let mut forged = fields.clone();
    forged.insert("sign".into(), "F".repeat(32));
    let mut other_order = fields.clone();
    other_order.insert("out_trade_no".into(), "someone-else".into());
    let mut resigned_wrong_key = fields.clone();
    wxpay::sign::sign_params(
        &mut resigned_wrong_key,
        &ApiKey::new("not-the-merchant-key-000000000000"),
        wxpay::SignType::Md5,
    );
    let mut not_utf8 = body.clone().into_bytes();
    let at = not_utf8.windows(5).position(|w| w == b"JSAPI").unwrap();
    not_utf8[at] = 0xC3;
    not_utf8[at + 1] = 0x28;
    let xxe = body.replacen("<xml>", "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml>", 1);
    let huge = format!("{}{}", body, " ".repeat(1024 * 1024));

    for altered in
        [xml::encode(&cheaper), xml::encode(&forged), xml::encode(&other_order), xml::encode(&resigned_wrong_key), xxe]
    {
        let r = w.replay(altered).await;
        assert_eq!((r.0, return_code(&r).as_str()), (400, "FAIL"), "{r:?}");
    }
    let r = w.replay(not_utf8).await;
    assert_eq!((r.0, return_code(&r).as_str()), (400, "FAIL"));
    let r = w.replay(huge).await;
    assert_eq!((r.0, return_code(&r).as_str()), (413, "FAIL"));

    assert_eq!(w.order_status("e2e-2").await, "prepaid");
    assert_eq!(w.postings(Kind::Payment, "e2e-2").await, 0);
    let (rejected,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM wxpay_rejected_notifications").fetch_one(&w.pool).await.unwrap();
    assert_eq!(rejected, 7);
    // The genuine one still works.
    let r = w.replay(body).await;
    assert_eq!((r.0, return_code(&r).as_str()), (200, "SUCCESS"));
    assert_eq!(w.order_status("e2e-2").await, "paid");
    w.assert_balanced().await;
}

#[tokio::test]
async fn a_notification_while_the_database_is_down_is_applied_on_the_next_retry() {
    let cluster = PgCluster::start().expect("private cluster");
    let db = TestDb::on(&cluster).await;
    // Fail fast while the server is down, so WeChat's (time-scaled) retries come quickly.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_millis(800))
        .connect(&db.url)
        .await
        .unwrap();
    // 0.01: retries after 0.15 s, 0.15 s, 0.3 s, 1.8 s, 6 s, …
    let w = World::start(pool, 0.01).await;
    w.place_order("e2e-3", 3300).await;

    cluster.stop_server().unwrap();
    w.pay("e2e-3");
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let n = w.sandbox.notifications().into_iter().find(|n| n.out_trade_no == "e2e-3");
        if let Some(n) = n.filter(|n| !n.attempts.is_empty()) {
            break n;
        }
        assert!(Instant::now() < deadline, "the sandbox never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = &failed.attempts[0];
    assert!(!first.success);
    assert_eq!(first.http_status, Some(503), "{first:?}");
    assert!(first.reply_excerpt.contains("FAIL"), "{first:?}");

    cluster.start_server().unwrap();
    let n = w.notification("pay", "e2e-3", "delivered").await;
    assert!(n.attempts.len() >= 2);
    assert!(n.attempts.last().unwrap().success);
    assert_eq!(w.order_status("e2e-3").await, "paid");
    assert_eq!(w.postings(Kind::Payment, "e2e-3").await, 1);
    assert!(w.metrics.count("payment", "error") >= 1);
    w.assert_balanced().await;
}

#[tokio::test]
async fn the_sandbox_refund_notification_settles_the_refund() {
    let db = TestDb::new().await;
    let w = World::start(db.pool.clone(), 0.001).await;
    w.place_order("e2e-4", 1000).await;
    w.pay("e2e-4");
    w.notification("pay", "e2e-4", "delivered").await;
    assert_eq!(w.order_status("e2e-4").await, "paid");

    // What the refund path does: reserve, insert, ask WeChat.
    sqlx::query("UPDATE orders SET refunded_amount = refunded_amount + 400 WHERE out_trade_no = 'e2e-4'")
        .execute(&w.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refunds (out_refund_no, order_id, client_id, amount, status)
         SELECT 'e2e-4-r1', id, client_id, 400, 'processing' FROM orders WHERE out_trade_no = 'e2e-4'",
    )
    .execute(&w.pool)
    .await
    .unwrap();
    let req = RefundRequest {
        order: OrderRef::OutTradeNo("e2e-4".into()),
        out_refund_no: "e2e-4-r1".into(),
        total_fee: Fen::new(1000),
        refund_fee: Fen::new(400),
        refund_desc: None,
        notify_url: Some(format!("{}/wxpay/notify/refund", w.notify_base)),
        refund_account: None,
    };
    let out = w.wechat.refund(&req).await.expect("refund call");
    assert!(matches!(out, Outcome::Success(_)), "refund: {out:?}");
    // The sandbox finishes the refund after its (time-scaled) processing delay and notifies.
    w.notification("refund", "e2e-4-r1", "delivered").await;

    let (status, refund_id): (String, Option<String>) =
        sqlx::query_as("SELECT status, refund_id FROM refunds WHERE out_refund_no = 'e2e-4-r1'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    let theirs = w.sandbox.refunds().into_iter().find(|r| r.out_refund_no == "e2e-4-r1").unwrap();
    assert_eq!(refund_id, Some(theirs.refund_id));
    assert_eq!(w.postings(Kind::Refund, "e2e-4-r1").await, 1);
    let mut c = w.pool.acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut c, &ledger::account::wechat(DEMO_MCH_ID)).await.unwrap(), Fen::new(600));
    assert_eq!(w.metrics.count("refund", "applied"), 1);
    w.assert_balanced().await;
}
