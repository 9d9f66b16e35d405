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
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[derive(Args)]
pub struct OrdersBench {
    /// Orders to create (after the warm-up).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
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
}

pub fn run(args: &OrdersBench) -> ExitCode {
    let result = crate::serve_cmd::runtime().and_then(|rt| rt.block_on(bench(args)));
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
        },
    );
    config.api.workers = args.api_workers;
    config.database.max_connections = args.pool;
    let pool = crate::serve_cmd::connect(&config).await?;
    minipay_store::db::migrate(&pool).await?;
    let api = minipay_api::Application::build(config.clone(), pool.clone()).await?;
    let api_url = format!("http://127.0.0.1:{}", api.port());
    tokio::spawn(api.run_until_stopped());

    let mut conn = pool.acquire().await?;
    let key = clients::create(&mut conn, "bench", Role::Client, None).await?.key;
    let openid = sandbox.openid("demo-user", DEMO_APPID);
    minipay_store::users::upsert(&mut conn, &AppId::parse(DEMO_APPID)?, &OpenId::parse(openid.clone())?, None).await?;
    drop(conn);
    Ok(Setup { api_url, key, openid, pool, _sandbox: sandbox, _cluster: cluster })
}

/// Sends `n` requests with `c` concurrent clients; returns (latencies of 201s, other statuses).
async fn fire(s: &Setup, args: &OrdersBench, n: usize, tag: &str) -> anyhow::Result<(Vec<Duration>, Vec<u16>)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (http, next) = (http.clone(), next.clone());
        let url = format!("{}/v1/orders", s.api_url);
        let (key, openid, tag) = (s.key.clone(), s.openid.clone(), tag.to_owned());
        let with_key = !args.no_idempotency_key;
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut other = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = serde_json::json!({
                    "out_trade_no": format!("{tag}{i:08}"), "openid": openid, "amount": 1 + (i % 5000) as i64,
                    "description": "bench order",
                });
                let mut req = http.post(&url).bearer_auth(&key).json(&body);
                if with_key {
                    req = req.header("Idempotency-Key", format!("{tag}-{i}"));
                }
                let started = Instant::now();
                match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        if status == 201 {
                            ok.push(started.elapsed());
                        } else {
                            other.push(status);
                        }
                    }
                    Err(_) => other.push(0),
                }
            }
            (ok, other)
        }));
    }
    let mut ok = Vec::with_capacity(n);
    let mut other = Vec::new();
    for t in tasks {
        let (o, e) = t.await?;
        ok.extend(o);
        other.extend(e);
    }
    Ok((ok, other))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

async fn bench(args: &OrdersBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests > 0 && args.concurrency > 0, "--requests and --concurrency must be positive");
    anyhow::ensure!(
        args.requests <= 1_000_000 && args.concurrency <= 1024,
        "bounded run: at most 1e6 requests, 1024 clients"
    );
    let s = setup(args).await?;
    if args.warmup > 0 {
        fire(&s, args, args.warmup, "W").await?;
    }
    let started = Instant::now();
    let (mut ok, other) = fire(&s, args, args.requests, "B").await?;
    let wall = started.elapsed();
    ok.sort();
    let (prepaid,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'prepaid' AND out_trade_no LIKE 'B%'")
            .fetch_one(&s.pool)
            .await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("requests        {}", args.requests);
    println!("concurrency     {}", args.concurrency);
    println!("idempotency key {}", !args.no_idempotency_key);
    println!("created (201)   {}", ok.len());
    println!("other statuses  {} {:?}", other.len(), summarize(&other));
    println!("prepaid in db   {prepaid}");
    println!("wall time       {:.2} s", wall.as_secs_f64());
    println!("orders/s        {:.0}", ok.len() as f64 / wall.as_secs_f64());
    println!(
        "latency ms      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
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
