//! `minipay serve api|notify|worker|all` and `minipay migrate`: the production entry points.
//! Settings come from `--config FILE` (else `$MINIPAY_CONFIG`) plus `MINIPAY_…` env
//! overrides; secrets never from the command line. Logs: `RUST_LOG` filters (default
//! `info`), `MINIPAY_LOG_FORMAT=json` for JSON lines (each carries the request id span).
//!
//! `serve` first runs the checks of `minipay config check` and refuses to start on any error
//! (all of them printed, field by field). On SIGTERM or Ctrl-C it drains: the HTTP servers
//! stop accepting and finish the requests in flight, the worker finishes its jobs in flight
//! (up to `[worker] drain_secs`) and hands back its reconciliation work, then it exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use minipay_config::Config;
use secrecy::ExposeSecret;
use sqlx::PgPool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Api,
    Notify,
    Worker,
    All,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Which service to run (`all` runs the three in one process). `MINIPAY_SERVICE` chooses
    /// it where a platform sets a container's environment but not its command (WeChat Cloud
    /// Hosting).
    #[arg(env = "MINIPAY_SERVICE", default_value = "all")]
    service: Service,
    /// TOML configuration (default `$MINIPAY_CONFIG`, else defaults + env).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Apply pending migrations before serving.
    #[arg(long)]
    migrate: bool,
}

#[derive(Args)]
pub struct MigrateArgs {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Installs the log subscriber once (JSON with `MINIPAY_LOG_FORMAT=json`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MINIPAY_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the async runtime")
}

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    minipay_store::db::connect(config.database.url.expose_secret(), config.database.max_connections)
        .await
        .context("connect to the database (database.url / MINIPAY_DATABASE_URL)")
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run_migrate(args: &MigrateArgs) -> ExitCode {
    init_tracing();
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let config = Config::load(args.config.as_deref())?;
            let pool = connect(&config).await?;
            minipay_store::db::migrate(&pool).await.context("apply migrations")?;
            eprintln!("migrations applied");
            Ok(())
        })
    }))
}

/// The start-up check: every finding is logged; any error refuses to start.
pub fn checked_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let report = minipay_config::check::check(path);
    for f in &report.findings {
        match f.severity {
            minipay_config::check::Severity::Error => tracing::error!(field = %f.field, "{}", f.message),
            minipay_config::check::Severity::Warning => tracing::warn!(field = %f.field, "{}", f.message),
        }
    }
    match report.config {
        Some(c) if report.is_ok() => Ok(c),
        _ => {
            let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
            anyhow::bail!("the configuration has {} error(s):\n  {}", errors.len(), errors.join("\n  "))
        }
    }
}

pub fn run_serve(args: &ServeArgs) -> ExitCode {
    init_tracing();
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let config = checked_config(args.config.as_deref())?;
            let pool = connect(&config).await?;
            if args.migrate {
                minipay_store::db::migrate(&pool).await.context("apply migrations")?;
            }
            let running = start(args.service, &config, &pool).await?;
            wait_for_stop().await;
            running.stop().await;
            Ok(())
        })
    }))
}

/// What `serve` (and `dev`) started, to stop in order on shutdown.
#[derive(Default)]
pub struct Running {
    servers: Vec<(&'static str, actix_web::dev::ServerHandle)>,
    worker: Option<minipay_worker::Worker>,
    /// The worker's /healthz, /readyz, /metrics server and the readiness it reports.
    worker_ops: Option<(actix_web::dev::ServerHandle, minipay_worker::ops::Readiness, u16)>,
}

impl Running {
    /// The port of the worker's ops server, when one runs.
    pub fn worker_ops_port(&self) -> Option<u16> {
        self.worker_ops.as_ref().map(|(_, _, p)| *p)
    }

    /// Drains: the worker stops reporting ready, the HTTP servers stop gracefully (in-flight
    /// requests finish) while the worker finishes its jobs in flight, then the worker's
    /// ops server goes.
    pub async fn stop(mut self) {
        if let Some((_, ready, _)) = &self.worker_ops {
            ready.set(false);
        }
        let servers = futures::future::join_all(self.servers.iter().map(|(name, h)| async move {
            h.stop(true).await;
            tracing::info!("{name} stopped");
        }));
        let worker = async {
            if let Some(w) = &mut self.worker {
                match w.shutdown().await {
                    Ok(0) => tracing::info!("worker stopped"),
                    Ok(n) => tracing::warn!(unfinished = n, "worker stopped before every job finished"),
                    Err(e) => tracing::warn!(error = %e, "worker shutdown"),
                }
            }
        };
        futures::join!(servers, worker);
        if let Some((h, _, _)) = &self.worker_ops {
            h.stop(true).await;
        }
    }
}

/// Starts the chosen services on the current runtime.
pub async fn start(service: Service, config: &Config, pool: &PgPool) -> anyhow::Result<Running> {
    let mut running = Running::default();
    if matches!(service, Service::Notify | Service::All) {
        let notify = minipay_notify::Application::build(config, pool.clone())
            .await
            .with_context(|| format!("start notify on {}", config.notify.listen))?;
        tracing::info!(port = notify.port(), public_url = %config.notify.public_url, "notify listening");
        running.servers.push(("notify", notify.handle()));
        tokio::spawn(notify.run_until_stopped());
    }
    if matches!(service, Service::Api | Service::All) {
        let api = minipay_api::Application::build(config.clone(), pool.clone()).await.context("start api")?;
        tracing::info!(port = api.port(), "api listening");
        running.servers.push(("api", api.handle()));
        tokio::spawn(api.run_until_stopped());
    }
    if matches!(service, Service::Worker | Service::All) {
        let mut worker = minipay_worker::Worker::build(config, pool.clone()).context("build worker")?;
        let ready = minipay_worker::ops::Readiness::default();
        if !config.worker.metrics_listen.is_empty() {
            let ops = minipay_worker::ops::OpsServer::bind(&config.worker.metrics_listen, pool.clone(), ready.clone())
                .with_context(|| format!("worker metrics on {}", config.worker.metrics_listen))?;
            tracing::info!(port = ops.port(), "worker /healthz, /readyz and /metrics listening");
            running.worker_ops = Some((ops.handle(), ready.clone(), ops.port()));
            tokio::spawn(ops.run_until_stopped());
        }
        worker.start().await.context("start worker")?;
        ready.set(true);
        tracing::info!(jobs = ?worker.job_names(), "worker started");
        running.worker = Some(worker);
    }
    Ok(running)
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
