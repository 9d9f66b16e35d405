//! Load generator for the notification benchmark (docs/PERFORMANCE.md, "Notifications").
//!
//! Creates a fresh database on the server at `DATABASE_URL` (an admin URL), inserts N
//! distinct prepaid orders, signs one genuine payment notification per order (before the
//! clock starts), starts the notify service in-process on a loopback port, and sends the
//! notifications with C concurrent HTTP clients. Then it checks the result: every order paid
//! exactly once, one ledger posting per order, no duplicate postings, the ledger balanced.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p minipay-notify --example notify_load -- 20000 32
//! ```
//! Arguments: number of notifications (default 20000), concurrency (default 32), then
//! options: `dup` sends every notification twice (the copies concurrently); `pool=K` sizes
//! the service's connection pool (default 16); `direct` skips HTTP and runs decode + verify +
//! the settlement transaction in the load generator's tasks (the database part alone);
//! `history=K` stores K earlier notifications first (default 100,000; 0 for a new install's
//! empty table); `again` sends everything a second time once the first pass is answered and reports the
//! second pass (repeats of applied notifications, as WeChat's retries are);
//! `rate=R` sends open loop instead: notification k is due at k/R s, on up to C
//! connections, and latencies are measured from when each was due (see `open_loop`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use minipay_config::{Config, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID};
use minipay_notify::Application;
use minipay_testkit::http1;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use wxpay::sign::sign_params;
use wxpay::xml::{self, Params};
use wxpay::{ApiKey, SignType};

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

fn body(i: usize, amount: i64) -> String {
    let no = format!("bench-{i:08}");
    let mut p: Params = [
        ("return_code", "SUCCESS".to_owned()),
        ("result_code", "SUCCESS".to_owned()),
        ("appid", DEMO_APPID.to_owned()),
        ("mch_id", DEMO_MCH_ID.to_owned()),
        ("nonce_str", format!("n{i:031}")),
        ("openid", OPENID.to_owned()),
        ("is_subscribe", "N".to_owned()),
        ("trade_type", "JSAPI".to_owned()),
        ("bank_type", "CMC".to_owned()),
        ("total_fee", amount.to_string()),
        ("fee_type", "CNY".to_owned()),
        ("cash_fee", amount.to_string()),
        ("transaction_id", format!("42000{i:023}")),
        ("out_trade_no", no),
        ("attach", "商品,套餐A".to_owned()),
        ("time_end", "20261125113015".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    sign_params(&mut p, &ApiKey::new(DEMO_API_KEY), SignType::Md5);
    xml::encode(&p)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let concurrency: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let dup = args.iter().any(|a| a == "dup");
    let again = args.iter().any(|a| a == "again");
    let history: i64 =
        args.iter().find_map(|a| a.strip_prefix("history=")).map(str::parse).transpose()?.unwrap_or(100_000);
    let direct = args.iter().any(|a| a == "direct");
    let pool_size: u32 = args.iter().find_map(|a| a.strip_prefix("pool=")).map(str::parse).transpose()?.unwrap_or(16);
    let rate: Option<f64> = args.iter().find_map(|a| a.strip_prefix("rate=")).map(str::parse).transpose()?;
    if rate.is_some_and(|r| r <= 0.0) || (rate.is_some() && direct) {
        return Err("rate=R needs R > 0 and HTTP (not `direct`)".into());
    }
    let admin = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to an admin postgres URL")?;

    let name = format!("notify_bench_{}", std::process::id());
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#))).execute(&mut conn).await?;
    let url = minipay_testkit::with_database(&admin, &name);
    let pool = PgPoolOptions::new().max_connections(pool_size).connect(&url).await?;
    minipay_store::db::migrate(&pool).await?;
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2)")
        .bind(DEMO_APPID)
        .bind(DEMO_MCH_ID)
        .execute(&pool)
        .await?;
    // Orders belong to an API client, so every payment also queues a webhook, as in production.
    let client = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, 'bench', 'client', $2, 'b')",
    )
    .bind(client)
    .bind(client.simple().to_string())
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, status, expires_at)
         SELECT 'bench-' || lpad(i::text, 8, '0'), $1, $2, $5, $3, 100 + i % 1000, 'bench', 'prepaid',
                now() + interval '2 hours'
           FROM generate_series(0, $4 - 1) AS i",
    )
    .bind(DEMO_APPID)
    .bind(DEMO_MCH_ID)
    .bind(OPENID)
    .bind(n as i64)
    .bind(client)
    .execute(&pool)
    .await?;
    // Diagnostics only (never for reported figures): extra SQL run before the load, e.g. to
    // see what a trigger or an index costs.
    if let Ok(sql) = std::env::var("BENCH_SETUP_SQL") {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await?;
    }
    // Earlier notifications (as in a deployment in use), so the service runs on the table
    // sizes and cached plans it will have in production, not on a new install's empty table
    // (see `settle::apply_notified_payments` on plans).
    sqlx::query(
        "INSERT INTO wxpay_notifications (kind, mch_id, appid, reference, body_sha256, body, outcome)
         SELECT 'payment', $1, $2, 'earlier-' || i, encode(sha256(i::text::bytea), 'hex'),
                '<xml>' || repeat('x', 700) || '</xml>', 'applied'
           FROM generate_series(1, $3) AS i",
    )
    .bind(DEMO_MCH_ID)
    .bind(DEMO_APPID)
    .bind(history)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE orders, wxpay_notifications").execute(&pool).await?;
    let bodies: Arc<Vec<String>> = Arc::new((0..n).map(|i| body(i, 100 + (i % 1000) as i64)).collect());

    let toml = format!(
        "[notify]\nlisten = \"127.0.0.1:0\"\n[[merchants]]\nmch_id = \"{DEMO_MCH_ID}\"\napi_key = \"{DEMO_API_KEY}\"\n\
         [[apps]]\nappid = \"{DEMO_APPID}\"\nmch_id = \"{DEMO_MCH_ID}\"\nsecret = \"bench\"\n"
    );
    let config = Config::from_toml_with_env(
        &toml,
        std::env::vars()
            .filter(|(k, _)| k.starts_with("MINIPAY_DATABASE_GROUP") || k.starts_with("MINIPAY_NOTIFY_WORKERS")),
        Path::new("."),
    )?;
    let app = Application::build(&config, pool.clone()).await?;
    let addr = format!("127.0.0.1:{}", app.port());
    let metrics = app.metrics();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());

    // Requests built before the clock starts; one keep-alive connection per task.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|b| http1::post(&addr, "/wxpay/notify/pay", &[("Content-Type", "text/xml")], b.as_bytes()))
            .collect(),
    );
    // `direct` mode uses its own pool, on this runtime.
    let direct_pool = PgPoolOptions::new().max_connections(pool_size).connect(&url).await?;
    let total = if dup { 2 * n } else { n };
    // The HTTP clients run on their own runtime (`http1::client_runtime`); `direct` mode
    // runs on this one (it is the service there).
    let client_rt = http1::client_runtime()?;
    let spawner = if direct { tokio::runtime::Handle::current() } else { client_rt.handle().clone() };
    // With `again`, everything is sent a second time after the first pass has been answered
    // (WeChat's retries of notifications whose answer it did not get); the figures are the
    // second pass's.
    let mut last = None;
    for round in 0..if again { 2 } else { 1 } {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let pass = if let Some(rate) = rate {
            // With `dup`, notification i is sent at positions 2i and 2i+1: two concurrent copies.
            let pick = move |k: usize| if total > n { k / 2 } else { k };
            let (requests, addr) = (requests.clone(), addr.clone());
            let run = async move {
                http1::open_loop(&addr, requests, total, pick, answered_success, rate, concurrency).await
            };
            let (results, wall) = client_rt.spawn(run).await??;
            let failures = results.iter().filter(|(ok, _)| !ok).count();
            (failures, results.into_iter().map(|(_, latency)| latency).collect(), wall)
        } else {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (next, bodies, requests, addr) = (next.clone(), bodies.clone(), requests.clone(), addr.clone());
                let db = direct_pool.clone();
                tasks.push(spawner.spawn(async move {
                    let (mut failures, mut latencies) = (0usize, Vec::new());
                    let mut http =
                        if direct { None } else { Some(http1::Connection::connect(&addr).await.expect("connect")) };
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= total {
                            return (failures, latencies);
                        }
                        // With `dup`, notification i is sent at positions 2i and 2i+1: two concurrent copies.
                        let i = if total > n { k / 2 } else { k };
                        let sent = Instant::now();
                        let ok = match http.as_mut() {
                            None => settle_directly(&db, &bodies[i]).await,
                            Some(c) => send_one(c, &addr, &requests[i]).await,
                        };
                        latencies.push(sent.elapsed());
                        if !ok {
                            failures += 1;
                        }
                    }
                }));
            }
            let (mut failures, mut latencies) = (0, Vec::with_capacity(total));
            for t in tasks {
                let (f, l) = t.await?;
                failures += f;
                latencies.extend(l);
            }
            (failures, latencies, started.elapsed())
        };
        if again && round == 0 {
            println!(
                "first pass: {total} in {:.2} s = {:.0}/s, {} failed",
                pass.2.as_secs_f64(),
                total as f64 / pass.2.as_secs_f64(),
                pass.0
            );
        }
        last = Some(pass);
    }
    let (failures, mut latencies, elapsed) = last.expect("one pass");
    client_rt.shutdown_background();
    latencies.sort_unstable();
    // Check with a fresh pool: the service's pool holds connections registered with the
    // server's worker runtimes, which end when it stops.
    let check = PgPoolOptions::new().max_connections(2).connect(&url).await?;

    let (paid,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'paid'").fetch_one(&check).await?;
    let (postings,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM ledger_transactions WHERE kind = 'payment'").fetch_one(&check).await?;
    let (dups,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT reference FROM ledger_transactions GROUP BY kind, reference HAVING count(*) > 1) d",
    )
    .fetch_one(&check)
    .await?;
    let mut c = check.acquire().await?;
    let unbalanced = minipay_store::ledger::unbalanced_transactions(&mut c).await?.len();
    drop(c);
    check.close().await;
    handle.stop(true).await;
    pool.close().await;
    println!(
        "notifications {}: {total} ({n} distinct, concurrency {concurrency}, pool {pool_size}) in {:.2} s = {:.0}/s; \
         applied {} (metric), duplicates acknowledged {}, failed replies {failures}",
        if direct { "settled directly (no HTTP)" } else { "sent" },
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        metrics.count("payment", "applied"),
        metrics.count("payment", "duplicate"),
    );
    let ms = |p: f64| http1::percentile(&latencies, p).as_secs_f64() * 1000.0;
    if let Some(rate) = rate {
        println!(
            "open loop: offered {rate:.0}/s, answered {:.0}/s, up to {concurrency} connections",
            total as f64 / elapsed.as_secs_f64()
        );
    }
    println!(
        "latency ms{}: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        if rate.is_some() { " (from when each was due)" } else { "" },
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(1.0)
    );
    let (groups, grouped) = metrics.groups();
    if groups > 0 {
        println!("payment groups: {groups}, {grouped} notifications, mean size {:.1}", grouped / groups as f64);
    }
    println!(
        "check: orders paid {paid}/{n}, payment postings {postings}, duplicate postings {dups}, unbalanced {unbalanced}"
    );
    sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))).execute(&mut conn).await?;
    if paid != n as i64 || postings != n as i64 || dups != 0 || unbalanced != 0 || failures != 0 {
        return Err("the benchmark's result check failed".into());
    }
    Ok(())
}

/// One request on a keep-alive connection: true for a 200 with SUCCESS. A broken connection
/// is replaced; the request counts as failed.
/// Our answer to a notification says SUCCESS.
fn answered_success(r: &http1::Response) -> bool {
    r.status == 200 && r.body.windows(7).any(|w| w == b"SUCCESS")
}

async fn send_one(c: &mut http1::Connection, addr: &str, request: &[u8]) -> bool {
    match tokio::time::timeout(Duration::from_secs(30), c.send(request)).await {
        Ok(Ok(r)) => answered_success(&r),
        _ => {
            *c = http1::Connection::connect(addr).await.expect("reconnect");
            false
        }
    }
}

/// What the service does for one notification, minus HTTP: decode, verify, then the
/// one-statement path or, when it does not apply, the settlement transaction.
async fn settle_directly(pool: &sqlx::PgPool, body: &str) -> bool {
    use minipay_store::notifications::{self, NewNotification, NotificationKind};
    use minipay_store::settle::{self, PaymentApplied, PaymentFacts, Source};
    let Ok(p) = xml::decode(body.as_bytes()) else { return false };
    if wxpay::sign::verify(&p, &ApiKey::new(DEMO_API_KEY)).is_err() {
        return false;
    }
    let fee = wxpay::Fen::parse_fen(&p["total_fee"]).expect("bench fee");
    let facts = PaymentFacts {
        out_trade_no: p["out_trade_no"].clone(),
        mch_id: p["mch_id"].clone(),
        appid: p["appid"].clone(),
        openid: p["openid"].clone(),
        total_fee: fee,
        cash_fee: Some(fee),
        transaction_id: p["transaction_id"].clone(),
        paid_at: wxpay::api::parse_wechat_time(&p["time_end"]).expect("bench time"),
        bank_type: Some(p["bank_type"].clone()),
        source: Source::Notification { notification_id: 0 },
    };
    let run = async {
        let n = NewNotification {
            kind: NotificationKind::Payment,
            mch_id: &facts.mch_id,
            appid: Some(&facts.appid),
            reference: &facts.out_trade_no,
            body,
            fields: None,
            expected_outcome: "applied",
        };
        if settle::apply_notified_payment(&mut *pool.acquire().await?, &n, &facts).await?.is_some() {
            return Ok(true);
        }
        let mut tx = pool.begin().await?;
        let stored = notifications::record(&mut tx, &n).await?;
        let facts = PaymentFacts { source: Source::Notification { notification_id: stored.id }, ..facts.clone() };
        let applied = settle::apply_payment(&mut tx, &facts).await?;
        // Diagnostics: what one more round trip per notification costs.
        for _ in 0..extra_round_trips() {
            sqlx::query("SELECT 1").execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok::<_, minipay_store::StoreError>(matches!(
            applied,
            PaymentApplied::Applied { .. } | PaymentApplied::AlreadyApplied
        ))
    };
    run.await.unwrap_or(false)
}

fn extra_round_trips() -> usize {
    std::env::var("BENCH_EXTRA_ROUND_TRIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}
