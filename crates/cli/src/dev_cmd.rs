//! `minipay dev`: the whole system on this machine with no configuration. Starts a throwaway
//! PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary directory, removed on exit), applies
//! the migrations, starts the WeChat sandbox, notify, api and worker wired to each other, and
//! prints the URLs and demo API keys. Ctrl-C stops everything and deletes the data.
//!
//! Ports: api 8080, notify 8081, sandbox 8480 (HTTP) / 8443 (HTTPS) when free, otherwise any
//! free port (the printed URLs are the truth). Machine-readable `KEY=value` lines go to
//! stdout (`MINIPAY_API_URL`, `MINIPAY_API_KEY`, …); the human summary to stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use minipay_config::{Config, DEMO_MCH_ID, SandboxEndpoints};
use minipay_sandbox::{Sandbox, SandboxConfig};
use minipay_store::clients::{self, Role};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[derive(Args)]
pub struct DevArgs {
    /// Use this PostgreSQL server (an admin URL) instead of starting a throwaway cluster; a
    /// new database `minipay_dev_<time>_<pid>` is created on it and dropped on exit.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Multiply the sandbox's real waits (refund processing, notification retries).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

fn port_or_any(preferred: u16) -> u16 {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => preferred,
        Err(_) => 0,
    }
}

pub fn run(args: &DevArgs) -> ExitCode {
    crate::serve_cmd::init_tracing();
    let result = crate::serve_cmd::runtime().and_then(|rt| rt.block_on(dev(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: &DevArgs) -> anyhow::Result<()> {
    // The cluster lives as long as this function: dropping it stops and removes it.
    let (cluster, admin_url) = match &args.database_url {
        Some(u) => (None, u.clone()),
        None => {
            eprintln!("starting a throwaway PostgreSQL cluster…");
            let c = minipay_testkit::PgCluster::start()
                .context("start PostgreSQL (is it installed? scripts/dev.sh installs it)")?;
            let url = c.admin_url();
            (Some(c), url)
        }
    };
    let db_name = format!("minipay_dev_{}_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await.context("connect to PostgreSQL")?;
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{db_name}""#))).execute(&mut admin).await?;
    admin.close().await.ok();
    let db_url = minipay_testkit::with_database(&admin_url, &db_name);

    let sandbox_cfg = SandboxConfig {
        port: port_or_any(8480),
        tls_port: port_or_any(8443),
        time_scale: args.time_scale,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(sandbox_cfg).await.context("start the sandbox")?;
    let mut config = Config::demo(
        &db_url,
        SandboxEndpoints {
            pay_base_url: sandbox.https_url(),
            api_base_url: sandbox.https_url(),
            ca_pem: sandbox.ca_pem(),
            client_p12: sandbox.client_identity_p12(DEMO_MCH_ID).context("demo merchant certificate")?,
            v3: None,
        },
    );
    let notify_port = port_or_any(8081);
    let notify_listener = std::net::TcpListener::bind(("127.0.0.1", notify_port))?;
    let notify_port = notify_listener.local_addr()?.port();
    config.notify.listen = format!("127.0.0.1:{notify_port}");
    config.notify.public_url = format!("http://127.0.0.1:{notify_port}");
    config.api.listen = format!("127.0.0.1:{}", port_or_any(8080));
    config.worker.expiry_interval_ms = 5_000;
    config.worker.webhook_interval_ms = 1_000;

    let pool = crate::serve_cmd::connect(&config).await?;
    minipay_store::db::migrate(&pool).await.context("apply migrations")?;

    let mut running = crate::serve_cmd::Running::default();
    let notify = minipay_notify::Application::from_listener(notify_listener, &config, pool.clone())?;
    running.add_server("notify", notify.handle());
    tokio::spawn(notify.run_until_stopped());
    let api = minipay_api::Application::build(config.clone(), pool.clone()).await?;
    let api_url = format!("http://127.0.0.1:{}", api.port());
    running.add_server("api", api.handle());
    tokio::spawn(api.run_until_stopped());
    let mut worker = minipay_worker::Worker::build(&config, pool.clone())?;
    worker.start().await?;
    running.set_worker(worker);

    let mut conn = pool.acquire().await?;
    let client = clients::create(&mut conn, "demo shop", Role::Client, None).await?;
    let admin_key = clients::create(&mut conn, "demo admin", Role::Admin, None).await?;
    let finance = clients::create(&mut conn, "demo finance", Role::Finance, None).await?;
    let approver = clients::create(&mut conn, "demo approver", Role::Approver, None).await?;
    drop(conn);

    let mut out = std::io::stdout().lock();
    writeln!(out, "MINIPAY_API_URL={api_url}")?;
    writeln!(out, "MINIPAY_API_KEY={}", client.key)?;
    writeln!(out, "MINIPAY_ADMIN_KEY={}", admin_key.key)?;
    writeln!(out, "MINIPAY_FINANCE_KEY={}", finance.key)?;
    writeln!(out, "MINIPAY_APPROVER_KEY={}", approver.key)?;
    writeln!(out, "MINIPAY_NOTIFY_URL={}", config.notify.public_url)?;
    writeln!(out, "SANDBOX_HTTP_URL={}", sandbox.http_url())?;
    writeln!(out, "SANDBOX_HTTPS_URL={}", sandbox.https_url())?;
    writeln!(out, "DATABASE_URL={db_url}")?;
    out.flush()?;
    drop(out);
    let sb = sandbox.http_url();
    let key = &client.key;
    eprintln!(
        "\nminipay dev is running (Ctrl-C stops it and deletes everything)\n\
         \n  api        {api_url}   (OpenAPI: {api_url}/openapi.json)\
         \n  notify     {notify}/wxpay/notify/pay\
         \n  sandbox    {sb}/sandbox/   {sbs}\
         \n  database   {db_url}\
         \n  client key {key}\
         \n\nTry it:\
         \n  CODE=$(curl -s -X POST {sb}/sandbox/jscode -H 'content-type: application/json' -d '{{\"user\":\"demo-user\"}}' | sed 's/.*\"code\":\"\\([^\"]*\\)\".*/\\1/')\
         \n  curl -s -X POST {api_url}/v1/sessions -H 'Authorization: Bearer {key}' -H 'content-type: application/json' -d \"{{\\\"code\\\":\\\"$CODE\\\"}}\"\
         \n  curl -s -X POST {api_url}/v1/orders -H 'Authorization: Bearer {key}' -H 'Idempotency-Key: demo-1' -H 'content-type: application/json' \\\
         \n       -d '{{\"openid\":\"<openid from above>\",\"amount\":100,\"description\":\"demo\"}}'\
         \n  curl -s -X POST {sb}/sandbox/pay -H 'content-type: application/json' -d '{{\"out_trade_no\":\"<out_trade_no>\"}}'\
         \n  curl -s {api_url}/v1/orders/<out_trade_no> -H 'Authorization: Bearer {key}'\n",
        notify = config.notify.public_url,
        sbs = sandbox.https_url(),
    );

    crate::serve_cmd::wait_for_stop().await;
    eprintln!("stopping…");
    running.stop().await;
    sandbox.shutdown().await;
    pool.close().await;
    // Give the pool's connections a moment to close before the cluster goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if cluster.is_none() {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)"#)))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();
    }
    drop(cluster);
    Ok(())
}
