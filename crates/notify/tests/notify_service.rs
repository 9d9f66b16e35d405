//! The notify service over HTTP with hand-signed notifications: what WeChat (or a forger)
//! sends, what we reply, and what the database holds afterwards. The end-to-end versions
//! with the sandbox delivering live in `tests/tests/notify*.rs`.

use std::path::Path;
use std::time::Duration;

use minipay_config::{Config, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID};
use minipay_notify::Application;
use minipay_store::anomalies;
use minipay_store::ledger::{self, Kind};
use minipay_testkit::{PgCluster, TestDb};
use sqlx::PgPool;
use wxpay::sign::sign_params;
use wxpay::xml::{self, Params};
use wxpay::{ApiKey, SignType};

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

fn config(rejected_keep: i64) -> Config {
    let toml = format!(
        r#"
[notify]
listen = "127.0.0.1:0"
workers = 2
rejected_keep = {rejected_keep}

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

struct Notify {
    pool: PgPool,
    base: String,
    http: reqwest::Client,
    app_metrics: minipay_notify::Metrics,
}

impl Notify {
    async fn start(pool: PgPool) -> Notify {
        Notify::start_with(pool, 10_000).await
    }

    async fn start_with(pool: PgPool, rejected_keep: i64) -> Notify {
        let app = Application::build(&config(rejected_keep), pool.clone()).await.expect("build notify");
        let base = format!("http://127.0.0.1:{}", app.port());
        let app_metrics = app.metrics();
        tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        Notify { pool, base, http, app_metrics }
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("notify answers");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn pay(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        self.post("/wxpay/notify/pay", body).await
    }

    /// Sends `n` chunks of `size` bytes with chunked transfer encoding (no Content-Length)
    /// over a raw connection; returns what the server answered before closing.
    async fn pay_chunked(&self, n: usize, size: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /wxpay/notify/pay HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'A'; size];
        for _ in 0..n {
            // The server may stop reading once the limit is crossed: a failed write is fine.
            if s.write_all(format!("{size:x}\r\n").as_bytes()).await.is_err()
                || s.write_all(&chunk).await.is_err()
                || s.write_all(b"\r\n").await.is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn is_success(reply: &(u16, String)) -> bool {
    let p = xml::decode(reply.1.as_bytes()).expect("reply is WeChat XML");
    reply.0 == 200 && p["return_code"] == "SUCCESS"
}

fn is_fail(reply: &(u16, String), status: u16) -> bool {
    let p = xml::decode(reply.1.as_bytes()).expect("reply is WeChat XML");
    reply.0 == status && p["return_code"] == "FAIL"
}

async fn setup(pool: &PgPool) -> uuid::Uuid {
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2)")
        .bind(DEMO_APPID)
        .bind(DEMO_MCH_ID)
        .execute(pool)
        .await
        .unwrap();
    let client = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, 'shop', 'client', $2, 'k')",
    )
    .bind(client)
    .bind(client.simple().to_string())
    .execute(pool)
    .await
    .unwrap();
    client
}

async fn order(pool: &PgPool, client: uuid::Uuid, no: &str, amount: i64, status: &str) {
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, status, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'test', $7, now() + interval '2 hours')",
    )
    .bind(no)
    .bind(DEMO_APPID)
    .bind(DEMO_MCH_ID)
    .bind(client)
    .bind(OPENID)
    .bind(amount)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

/// A payment notification's fields as WeChat sends them (unsigned).
fn pay_fields(no: &str, amount: i64) -> Params {
    let amount = amount.to_string();
    [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", DEMO_APPID),
        ("mch_id", DEMO_MCH_ID),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", OPENID),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CMC"),
        ("total_fee", &amount),
        ("fee_type", "CNY"),
        ("cash_fee", &amount),
        ("transaction_id", &format!("4200000{no}")),
        ("out_trade_no", no),
        ("time_end", "20261125113015"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn signed(mut p: Params, key: &str, t: SignType) -> String {
    sign_params(&mut p, &ApiKey::new(key), t);
    xml::encode(&p)
}

fn demo_signed(no: &str, amount: i64) -> String {
    signed(pay_fields(no, amount), DEMO_API_KEY, SignType::Md5)
}

async fn status(pool: &PgPool, no: &str) -> String {
    sqlx::query_as::<_, (String,)>("SELECT status FROM orders WHERE out_trade_no = $1")
        .bind(no)
        .fetch_one(pool)
        .await
        .unwrap()
        .0
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql).fetch_one(pool).await.unwrap().0
}

async fn postings(pool: &PgPool, no: &str) -> i64 {
    let mut c = pool.acquire().await.unwrap();
    ledger::count_postings(&mut c, Kind::Payment, no).await.unwrap()
}

async fn assert_balanced(pool: &PgPool) {
    let mut c = pool.acquire().await.unwrap();
    assert!(ledger::unbalanced_transactions(&mut c).await.unwrap().is_empty());
}

async fn rejected(pool: &PgPool, reason: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM wxpay_rejected_notifications WHERE reason = $1")
        .bind(reason)
        .fetch_one(pool)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn a_genuine_notification_pays_once_and_repeats_change_nothing() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-1", 1999, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;
    let body = demo_signed("n-1", 1999);

    assert!(is_success(&n.pay(body.clone()).await));
    assert_eq!(status(&n.pool, "n-1").await, "paid");
    for _ in 0..3 {
        assert!(is_success(&n.pay(body.clone()).await), "a repeat is acknowledged");
    }
    assert_eq!(postings(&n.pool, "n-1").await, 1);
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'payment.succeeded'").await, 1);
    let (rows, deliveries, outcome): (i64, i64, String) = sqlx::query_as(
        "SELECT count(*), sum(deliveries)::bigint, min(outcome) FROM wxpay_notifications WHERE reference = 'n-1'",
    )
    .fetch_one(&n.pool)
    .await
    .unwrap();
    assert_eq!((rows, deliveries, outcome.as_str()), (1, 4, "applied"), "one raw row, four deliveries");
    let (txn, cash, bank): (String, i64, String) =
        sqlx::query_as("SELECT transaction_id, cash_fee, bank_type FROM orders WHERE out_trade_no = 'n-1'")
            .fetch_one(&n.pool)
            .await
            .unwrap();
    assert_eq!((txn.as_str(), cash, bank.as_str()), ("4200000n-1", 1999, "CMC"));
    let (audited, kept): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT (details->>'notification_id')::bigint FROM audit_log WHERE subject_id = 'n-1'),
                (SELECT id FROM wxpay_notifications WHERE reference = 'n-1')",
    )
    .fetch_one(&n.pool)
    .await
    .unwrap();
    assert_eq!(audited, Some(kept), "the audit line names the raw notification");
    assert_eq!(n.app_metrics.count("payment", "applied"), 1);
    assert_eq!(n.app_metrics.count("payment", "duplicate"), 3);
    let metrics = n.http.get(format!("{}/metrics", n.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"minipay_notify_notifications_total{kind="payment",outcome="duplicate"} 3"#));
    assert_balanced(&n.pool).await;
}

#[tokio::test]
async fn twenty_parallel_duplicates_post_once() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-2", 500, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;
    let body = demo_signed("n-2", 500);
    let replies = futures::future::join_all((0..20).map(|_| n.pay(body.clone()))).await;
    assert!(replies.iter().all(is_success), "{replies:?}");
    assert_eq!(postings(&n.pool, "n-2").await, 1);
    assert_eq!(n.app_metrics.count("payment", "applied"), 1);
    assert_eq!(n.app_metrics.count("payment", "duplicate"), 19);
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM webhook_outbox").await, 1);
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM audit_log WHERE action = 'order.paid'").await, 1);
    assert_balanced(&n.pool).await;
}

#[tokio::test]
async fn forged_wrong_key_and_tampered_notifications_change_nothing() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-3", 1000, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;

    // A signature computed with another key.
    let wrong_key = signed(pay_fields("n-3", 1000), "another-merchant-key-0000000000000", SignType::Md5);
    assert!(is_fail(&n.pay(wrong_key).await, 400));
    // A made-up signature.
    let mut forged = pay_fields("n-3", 1000);
    forged.insert("sign".into(), "0123456789ABCDEF0123456789ABCDEF".into());
    assert!(is_fail(&n.pay(xml::encode(&forged)).await, 400));
    // A genuine notification for 1 fen whose total_fee was raised after signing.
    let mut tampered = pay_fields("n-3", 1);
    sign_params(&mut tampered, &ApiKey::new(DEMO_API_KEY), SignType::Md5);
    tampered.insert("total_fee".into(), "1000".into());
    assert!(is_fail(&n.pay(xml::encode(&tampered)).await, 400));
    // No signature at all.
    assert!(is_fail(&n.pay(xml::encode(&pay_fields("n-3", 1000))).await, 400));
    // A signature labelled HMAC-SHA256 but computed with MD5.
    let mut mislabelled = pay_fields("n-3", 1000);
    sign_params(&mut mislabelled, &ApiKey::new(DEMO_API_KEY), SignType::Md5);
    mislabelled.insert("sign_type".into(), "HMAC-SHA256".into());
    assert!(is_fail(&n.pay(xml::encode(&mislabelled)).await, 400));

    assert_eq!(status(&n.pool, "n-3").await, "prepaid");
    assert_eq!(postings(&n.pool, "n-3").await, 0);
    assert_eq!(rejected(&n.pool, "bad_signature").await, 5);
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM wxpay_notifications").await, 0);
    assert_eq!(n.app_metrics.count("payment", "rejected_bad_signature"), 5);
}

#[tokio::test]
async fn hmac_sha256_and_md5_notifications_are_both_verified() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-hmac", 300, "prepaid").await;
    order(&db.pool, client, "n-md5", 300, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;
    let hmac = signed(pay_fields("n-hmac", 300), DEMO_API_KEY, SignType::HmacSha256);
    assert!(hmac.contains("HMAC-SHA256"));
    assert!(is_success(&n.pay(hmac).await));
    assert!(is_success(&n.pay(signed(pay_fields("n-md5", 300), DEMO_API_KEY, SignType::Md5)).await));
    assert_eq!(status(&n.pool, "n-hmac").await, "paid");
    assert_eq!(status(&n.pool, "n-md5").await, "paid");
    assert_balanced(&n.pool).await;
}

#[tokio::test]
async fn genuine_but_mismatched_notifications_are_anomalies_not_payments() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-4", 1000, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;

    // Signed with our key, but for 1 fen: acknowledged (WeChat's retries would say the same),
    // not paid, an anomaly for operators.
    let cheap = demo_signed("n-4", 1);
    assert!(is_success(&n.pay(cheap.clone()).await));
    assert!(is_success(&n.pay(cheap).await));
    let mut other_user = pay_fields("n-4", 1000);
    other_user.insert("openid".into(), "oSomeoneElse_0000000000000".into());
    other_user.insert("transaction_id".into(), "4200000other".into());
    assert!(is_success(&n.pay(signed(other_user, DEMO_API_KEY, SignType::Md5)).await));
    // An order we never created.
    assert!(is_success(&n.pay(demo_signed("never-created", 100)).await));

    assert_eq!(status(&n.pool, "n-4").await, "prepaid");
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM ledger_transactions").await, 0);
    let mut c = n.pool.acquire().await.unwrap();
    let open = anomalies::open_anomalies(&mut c, 10).await.unwrap();
    let kinds: Vec<(&str, &str, i32)> =
        open.iter().map(|a| (a.kind.as_str(), a.reference.as_str(), a.occurrences)).collect();
    assert_eq!(
        kinds,
        [("order_mismatch", "n-4", 2), ("order_mismatch", "n-4", 1), ("unknown_order", "never-created", 1)]
    );
    assert!(open[0].reason.contains("total_fee"));
    assert!(open[1].reason.contains("openid"));
    assert!(open.iter().all(|a| a.notification_id.is_some()), "each anomaly points at the raw notification");
    assert_eq!(n.app_metrics.count("payment", "mismatch"), 3);
    assert_eq!(n.app_metrics.count("payment", "unknown_order"), 1);
}

#[tokio::test]
async fn a_payment_after_local_close_wins_and_is_flagged() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-5", 700, "closed").await;
    let n = Notify::start(db.pool.clone()).await;
    assert!(is_success(&n.pay(demo_signed("n-5", 700)).await));
    let (status, flagged): (String, bool) =
        sqlx::query_as("SELECT status, paid_after_close FROM orders WHERE out_trade_no = 'n-5'")
            .fetch_one(&n.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), flagged), ("paid", true));
    assert_eq!(n.app_metrics.count("payment", "applied_late"), 1);
    let mut c = n.pool.acquire().await.unwrap();
    assert_eq!(anomalies::anomalies_for(&mut c, "n-5").await.unwrap()[0].kind, "paid_after_close");
    assert_balanced(&n.pool).await;
}

#[tokio::test]
async fn hostile_bodies_are_refused_and_kept_bounded() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-6", 100, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;

    let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><return_code>&xxe;</return_code></xml>"#;
    assert!(is_fail(&n.pay(xxe).await, 400));
    let laughs = r#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>"#;
    assert!(is_fail(&n.pay(laughs).await, 400));
    // 1 MB: refused on its Content-Length, unread.
    let big = format!("<xml><a>{}</a></xml>", "A".repeat(1024 * 1024));
    assert!(is_fail(&n.pay(big).await, 413));
    // 1 MB without a Content-Length (chunked): read until it crosses 64 KiB, then refused.
    let reply = n.pay_chunked(16, 64 * 1024).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("FAIL"), "{reply}");
    // Invalid UTF-8 inside an otherwise well-formed, correctly signed-looking document.
    let mut bytes = demo_signed("n-6", 100).into_bytes();
    let at = bytes.windows(3).position(|w| w == b"CMC").unwrap();
    bytes[at] = 0xFF;
    assert!(is_fail(&n.pay(bytes).await, 400));
    assert!(is_fail(&n.pay("not xml at all").await, 400));
    assert!(is_fail(&n.pay("").await, 400));
    // Another merchant's notification.
    let mut foreign = pay_fields("n-6", 100);
    foreign.insert("mch_id".into(), "1234567890".into());
    assert!(is_fail(&n.pay(signed(foreign, DEMO_API_KEY, SignType::Md5)).await, 400));

    assert_eq!(status(&n.pool, "n-6").await, "prepaid");
    assert_eq!(rejected(&n.pool, "doctype").await, 2);
    assert_eq!(rejected(&n.pool, "too_large").await, 2);
    assert_eq!(rejected(&n.pool, "not_utf8").await, 1);
    assert_eq!(rejected(&n.pool, "malformed").await, 2);
    assert_eq!(rejected(&n.pool, "unknown_merchant").await, 1);
    let (max_head, max_size): (i32, i64) =
        sqlx::query_as("SELECT max(octet_length(body_head)), max(body_size) FROM wxpay_rejected_notifications")
            .fetch_one(&n.pool)
            .await
            .unwrap();
    assert!(max_head <= 4096, "stored heads are bounded: {max_head}");
    assert!(max_size > 1024 * 1024, "the real size is recorded: {max_size}");
}

#[tokio::test]
async fn the_forensic_table_is_pruned_to_its_cap() {
    let db = TestDb::new().await;
    setup(&db.pool).await;
    let n = Notify::start_with(db.pool.clone(), 10).await;
    for i in 0..100 {
        assert!(is_fail(&n.pay(format!("garbage {i}")).await, 400));
    }
    // The 100th insert triggers the prune down to the newest 10.
    assert_eq!(scalar(&n.pool, "SELECT count(*) FROM wxpay_rejected_notifications").await, 10);
    assert_eq!(scalar(&n.pool, "SELECT min(id) FROM wxpay_rejected_notifications").await, 91);
}

#[tokio::test]
async fn database_down_answers_fail_5xx_and_the_retry_applies() {
    let cluster = PgCluster::start().expect("private cluster");
    let db = TestDb::on(&cluster).await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-7", 4200, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;
    let body = demo_signed("n-7", 4200);

    cluster.stop_server().unwrap();
    let reply = n.pay(body.clone()).await;
    assert!(is_fail(&reply, 503), "{reply:?}");
    assert_eq!(n.app_metrics.count("payment", "error"), 1);

    cluster.start_server().unwrap();
    // WeChat's retry: the pool reconnects on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = n.pay(body.clone()).await;
        if is_success(&reply) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never applied after restart: {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&n.pool, "n-7").await, "paid");
    assert_eq!(postings(&n.pool, "n-7").await, 1);
    assert_balanced(&n.pool).await;
}

#[tokio::test]
async fn readyz_follows_the_database() {
    let cluster = PgCluster::start().expect("private cluster");
    let db = TestDb::on(&cluster).await;
    let n = Notify::start(db.pool.clone()).await;
    let ready = || async { n.http.get(format!("{}/readyz", n.base)).send().await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);
    cluster.stop_server().unwrap();
    assert_eq!(ready().await, 503, "no database: not ready for WeChat's callbacks");
    cluster.start_server().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ready().await != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A refund notification as WeChat builds it: outer XML (unsigned) with req_info encrypted
/// with `key`.
fn refund_body(key: &str, out_refund_no: &str, out_trade_no: &str, fee: i64, status: &str) -> String {
    let fee = fee.to_string();
    let inner: Params = [
        ("transaction_id", format!("4200000{out_trade_no}")),
        ("out_trade_no", out_trade_no.to_owned()),
        ("refund_id", format!("5030{out_refund_no}")),
        ("out_refund_no", out_refund_no.to_owned()),
        ("total_fee", "1000".to_owned()),
        ("refund_fee", fee.clone()),
        ("settlement_refund_fee", fee),
        ("refund_status", status.to_owned()),
        ("success_time", "2026-11-25 12:00:00".to_owned()),
        ("refund_recv_accout", "支付用户的零钱".to_owned()),
        ("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".to_owned()),
        ("refund_request_source", "API".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let req_info = wxpay::refund_notify::encrypt_req_info(&inner, &ApiKey::new(key));
    let outer: Params = [
        ("return_code", "SUCCESS"),
        ("appid", DEMO_APPID),
        ("mch_id", DEMO_MCH_ID),
        ("nonce_str", "TeqClE3i0mvn3DrK"),
        ("req_info", &req_info),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    xml::encode(&outer)
}

#[tokio::test]
async fn a_refund_notification_settles_the_refund_once() {
    let db = TestDb::new().await;
    let client = setup(&db.pool).await;
    order(&db.pool, client, "n-8", 1000, "prepaid").await;
    let n = Notify::start(db.pool.clone()).await;
    assert!(is_success(&n.pay(demo_signed("n-8", 1000)).await));
    for (no, amount) in [("r-8a", 300), ("r-8b", 200)] {
        sqlx::query("UPDATE orders SET refunded_amount = refunded_amount + $1 WHERE out_trade_no = 'n-8'")
            .bind(amount)
            .execute(&n.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO refunds (out_refund_no, order_id, client_id, amount, status)
             SELECT $1, id, client_id, $2, 'processing' FROM orders WHERE out_trade_no = 'n-8'",
        )
        .bind(no)
        .bind(amount)
        .execute(&n.pool)
        .await
        .unwrap();
    }
    let ok = refund_body(DEMO_API_KEY, "r-8a", "n-8", 300, "SUCCESS");
    assert!(is_success(&n.post("/wxpay/notify/refund", ok.clone()).await));
    assert!(is_success(&n.post("/wxpay/notify/refund", ok).await));
    let closed = refund_body(DEMO_API_KEY, "r-8b", "n-8", 200, "REFUNDCLOSE");
    assert!(is_success(&n.post("/wxpay/notify/refund", closed).await));
    // Encrypted with another key: not WeChat's (for us).
    let forged = refund_body("another-merchant-key-0000000000000", "r-8b", "n-8", 200, "SUCCESS");
    assert!(is_fail(&n.post("/wxpay/notify/refund", forged).await, 400));

    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT out_refund_no, status FROM refunds ORDER BY out_refund_no")
            .fetch_all(&n.pool)
            .await
            .unwrap();
    assert_eq!(states, [("r-8a".into(), "succeeded".into()), ("r-8b".into(), "closed".into())]);
    let mut c = n.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Refund, "r-8a").await.unwrap(), 1);
    assert_eq!(ledger::count_postings(&mut c, Kind::Refund, "r-8b").await.unwrap(), 0);
    assert_eq!(scalar(&n.pool, "SELECT refunded_amount FROM orders WHERE out_trade_no = 'n-8'").await, 300);
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT event_type FROM webhook_outbox WHERE event_type LIKE 'refund.%' ORDER BY event_type")
            .fetch_all(&n.pool)
            .await
            .unwrap();
    assert_eq!(events, [("refund.failed".into(),), ("refund.succeeded".into(),)]);
    assert_eq!(rejected(&n.pool, "bad_req_info").await, 1);
    assert_eq!(n.app_metrics.count("refund", "applied"), 2);
    assert_eq!(n.app_metrics.count("refund", "duplicate"), 1);
    assert_balanced(&n.pool).await;
}
