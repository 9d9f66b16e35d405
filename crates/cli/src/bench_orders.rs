//! `minipay bench orders --requests N --concurrency C`: load benchmark of `POST /v1/orders`.
//!
//! Everything runs in this process on loopback: a fresh database on the PostgreSQL server
//! given by `--database-url` / `DATABASE_URL` (an admin URL; else a throwaway cluster — note
//! that one runs with fsync off, so for figures use a normally configured server), the
//! sandbox over HTTPS with the demo merchant, and the api. One user logs in, then `C`
//! concurrent HTTP/1.1 keep-alive clients send `N` order creations (each with its own
//! Idempotency-Key, as a real backend would), after a short warm-up. Every request does
//! the full path: key lookup, idempotency claim, user check, order insert (commit),
//! unifiedorder at the sandbox (signed XML over TLS, signature verified), prepaid update
//! (commit), idempotency response (commit), `wx.requestPayment` signing.
//!
//! Before the run the database gets `--history` earlier orders (100,000 by default, paid,
//! with their idempotency keys) and is analyzed, so the service runs on the tables and
//! cached plans of a deployment in use, not on a new install's empty tables. The clients run
//! on a runtime (one thread) of their own and send pre-built requests (`minipay_testkit::http1`).
//!
//! With `--rate R` the clients send open loop instead (see `minipay_testkit::http1::open_loop`):
//! orders arrive at R per second whether or not earlier ones are answered, as payers do.
//!
//! Prints throughput (created orders per second of wall time), latency percentiles, and
//! statuses; checks that every 201 left exactly one prepaid order.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use minipay_config::{Config, DEMO_APPID, DEMO_MCH_ID, SandboxEndpoints};
use minipay_sandbox::{Sandbox, SandboxConfig};
use minipay_store::clients::{self, Role};
use minipay_store::domain::{AppId, OpenId};
use minipay_testkit::http1::{self, percentile};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[derive(Args)]
pub struct OrdersBench {
    /// Orders to create (after the warm-up).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Concurrent clients (with `--rate`: most connections in flight).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: offer this many orders per second (order k is due at k/R s), however
    /// fast the answers come, as a crowd of payers does; latency counts from when each was
    /// due. Without it, each client sends its next order when the last one is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests before measuring (connections, TLS sessions, statement caches).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// PostgreSQL admin URL (a database is created on it for the run).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// api worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    api_workers: usize,
    /// Database connections of the api's pool.
    #[arg(long, default_value_t = 32)]
    pool: u32,
    /// Send requests without an Idempotency-Key (two fewer statements per request).
    #[arg(long)]
    no_idempotency_key: bool,
    /// `[database] group_max` of the api (most requests per grouped statement).
    #[arg(long)]
    group_max: Option<usize>,
    /// `[api] group_in_flight` (grouped statements of a kind at once).
    #[arg(long)]
    group_in_flight: Option<usize>,
    /// Earlier orders (paid, with their idempotency keys) in the database before the run,
    /// analyzed: a service in its steady state rather than a new install's empty tables.
    #[arg(long, default_value_t = 100_000)]
    history: usize,
}

pub fn run(args: &OrdersBench) -> ExitCode {
    // The HTTP clients run on their own runtime (see `http1::client_runtime`).
    let clients = http1::client_runtime().map_err(anyhow::Error::from);
    let result = clients
        .and_then(|clients| crate::serve_cmd::runtime().and_then(|rt| rt.block_on(bench(args, clients.handle()))));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Setup {
    api_url: String,
    key: String,
    openid: String,
    pool: sqlx::PgPool,
    _sandbox: Sandbox,
    _cluster: Option<minipay_testkit::PgCluster>,
}

async fn setup(args: &OrdersBench) -> anyhow::Result<Setup> {
    let (cluster, admin_url) = match &args.database_url {
        Some(u) => (None, u.clone()),
        None => {
            eprintln!("note: no --database-url: using a throwaway cluster with fsync off");
            let c = minipay_testkit::PgCluster::start().context("start PostgreSQL")?;
            let u = c.admin_url();
            (Some(c), u)
        }
    };
    let name = format!("minipay_bench_{}_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await.context("connect to PostgreSQL")?;
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#))).execute(&mut admin).await?;
    admin.close().await.ok();
    let db_url = minipay_testkit::with_database(&admin_url, &name);

    let sandbox = Sandbox::start(SandboxConfig { time_scale: 0.001, ..SandboxConfig::default() }).await?;
    let mut config = Config::demo(
        &db_url,
        SandboxEndpoints {
            pay_base_url: sandbox.https_url(),
            api_base_url: sandbox.https_url(),
            ca_pem: sandbox.ca_pem(),
            client_p12: sandbox.client_identity_p12(DEMO_MCH_ID).context("demo certificate")?,
            v3: None,
        },
    );
    config.api.workers = args.api_workers;
    config.database.max_connections = args.pool;
    config.database.group_max = args.group_max.unwrap_or(config.database.group_max);
    config.api.group_in_flight = args.group_in_flight.unwrap_or(config.api.group_in_flight);
    let pool = crate::serve_cmd::connect(&config).await?;
    minipay_store::db::migrate(&pool).await?;
    let api = minipay_api::Application::build(config.clone(), pool.clone()).await?;
    let api_url = format!("http://127.0.0.1:{}", api.port());
    tokio::spawn(api.run_until_stopped());

    let mut conn = pool.acquire().await?;
    let key = clients::create(&mut conn, "bench", Role::Client, None).await?.key;
    let openid = sandbox.openid("demo-user", DEMO_APPID);
    minipay_store::users::upsert(&mut conn, &AppId::parse(DEMO_APPID)?, &OpenId::parse(openid.clone())?, None).await?;
    if args.history > 0 {
        load_history(&mut conn, args.history, &openid).await?;
    }
    drop(conn);
    Ok(Setup { api_url, key, openid, pool, _sandbox: sandbox, _cluster: cluster })
}

/// `n` earlier orders of the bench client (paid a day ago, each with its stored
/// idempotent response), then ANALYZE: the plans the api's prepared statements get are
/// those of a running service, not those of empty tables (see `minipay_store::group_commit`
/// on plans).
async fn load_history(conn: &mut PgConnection, n: usize, openid: &str) -> anyhow::Result<()> {
    let n = i64::try_from(n)?;
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, status, expires_at,
                             transaction_id, paid_at, created_at)
         SELECT 'H' || lpad(g::text, 10, '0'), $2, $3, c.id, $4, 1 + g % 5000, 'bench order', 'paid',
                now() - interval '1 day', '42' || lpad(g::text, 26, '0'), now() - interval '1 day', now() - interval '1 day'
           FROM generate_series(1, $1) g, (SELECT id FROM api_clients WHERE name = 'bench') c",
    )
    .bind(n)
    .bind(DEMO_APPID)
    .bind(DEMO_MCH_ID)
    .bind(openid)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO idempotency_keys (client_id, key, method, path, request_hash, response_status, response_body)
         SELECT c.id, 'H-' || g, 'POST', '/v1/orders', md5(g::text), 201, '{}'::jsonb
           FROM generate_series(1, $1) g, (SELECT id FROM api_clients WHERE name = 'bench') c",
    )
    .bind(n)
    .execute(&mut *conn)
    .await?;
    for table in ["orders", "idempotency_keys"] {
        sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE {table}"))).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Sends `n` requests with `c` concurrent clients; returns (latencies of 201s, other statuses).
async fn fire(
    s: &Setup,
    args: &OrdersBench,
    clients: &tokio::runtime::Handle,
    n: usize,
    tag: &str,
) -> anyhow::Result<(Vec<Duration>, Vec<u16>)> {
    let addr = s.api_url.trim_start_matches("http://").to_owned();
    let auth = format!("Bearer {}", s.key);
    // Every request is built before the clock starts; one keep-alive connection per task.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..n)
            .map(|i| {
                let body = serde_json::json!({
                    "out_trade_no": format!("{tag}{i:08}"), "openid": s.openid, "amount": 1 + (i % 5000) as i64,
                    "description": "bench order",
                })
                .to_string();
                let key = format!("{tag}-{i}");
                let mut headers = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
                if !args.no_idempotency_key {
                    headers.push(("Idempotency-Key", key.as_str()));
                }
                http1::post(&addr, "/v1/orders", &headers, body.as_bytes())
            })
            .collect(),
    );
    if let Some(rate) = args.rate {
        let (addr, requests, c) = (addr.clone(), requests.clone(), args.concurrency);
        let run = async move { http1::open_loop(&addr, requests, n, |k| k, |r| r.status == 201, rate, c).await };
        let (results, _) = clients.spawn(run).await??;
        // A failure's status is not kept by the open loop; 0 stands for "not 201".
        let ok = results.iter().filter(|(ok, _)| *ok).map(|(_, latency)| *latency).collect();
        return Ok((ok, results.iter().filter(|(ok, _)| !ok).map(|_| 0).collect()));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, requests, addr) = (next.clone(), requests.clone(), addr.clone());
        tasks.push(clients.spawn(async move {
            let mut ok = Vec::new();
            let mut other = Vec::new();
            let mut conn = http1::Connection::connect(&addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let started = Instant::now();
                match conn.send(&requests[i]).await {
                    Ok(r) if r.status == 201 => ok.push(started.elapsed()),
                    Ok(r) => other.push(r.status),
                    Err(_) => {
                        other.push(0);
                        conn = http1::Connection::connect(&addr).await?;
                    }
                }
            }
            anyhow::Ok((ok, other))
        }));
    }
    let mut ok = Vec::with_capacity(n);
    let mut other = Vec::new();
    for t in tasks {
        let (o, e) = t.await??;
        ok.extend(o);
        other.extend(e);
    }
    Ok((ok, other))
}

async fn bench(args: &OrdersBench, clients: &tokio::runtime::Handle) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests > 0 && args.concurrency > 0, "--requests and --concurrency must be positive");
    anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0 && r.is_finite()), "--rate must be a positive number");
    anyhow::ensure!(
        args.requests <= 1_000_000 && args.concurrency <= 1024,
        "bounded run: at most 1e6 requests, 1024 clients"
    );
    let s = setup(args).await?;
    if args.warmup > 0 {
        fire(&s, args, clients, args.warmup, "W").await?;
    }
    let started = Instant::now();
    let (mut ok, other) = fire(&s, args, clients, args.requests, "B").await?;
    let wall = started.elapsed();
    ok.sort();
    let (prepaid,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'prepaid' AND out_trade_no LIKE 'B%'")
            .fetch_one(&s.pool)
            .await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("requests        {}", args.requests);
    match args.rate {
        Some(rate) => println!("open loop       offered {rate:.0}/s on up to {} connections", args.concurrency),
        None => println!("concurrency     {}", args.concurrency),
    }
    println!("idempotency key {}", !args.no_idempotency_key);
    println!("created (201)   {}", ok.len());
    println!("other statuses  {} {:?}", other.len(), summarize(&other));
    println!("prepaid in db   {prepaid}");
    println!("wall time       {:.2} s", wall.as_secs_f64());
    println!("orders/s        {:.0}", ok.len() as f64 / wall.as_secs_f64());
    println!(
        "latency ms{}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        if args.rate.is_some() { " (from due)" } else { "      " },
        ms(percentile(&ok, 0.50)),
        ms(percentile(&ok, 0.90)),
        ms(percentile(&ok, 0.99)),
        ms(ok.last().copied().unwrap_or_default())
    );
    anyhow::ensure!(prepaid as usize == ok.len(), "every 201 must leave exactly one prepaid order");
    Ok(())
}

fn summarize(statuses: &[u16]) -> Vec<(u16, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for s in statuses {
        *m.entry(*s).or_insert(0) += 1;
    }
    m.into_iter().collect()
}
