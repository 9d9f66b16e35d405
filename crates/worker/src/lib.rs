//! # minipay-worker — the background jobs
//!
//! One process (or any number of replicas) that runs minipay's scheduled work on
//! tokio-cron-scheduler: nightly reconciliation, order expiry, webhook delivery, payouts.
//! Postgres is the only coordination point: every job must be safe when several workers
//! run it at once (advisory locks, unique keys, `FOR UPDATE SKIP LOCKED`), so the scheduler
//! here only decides *when* to try, never *whether* another replica already did.
//!
//! Layout:
//! - [`Worker`]: the scheduler and the registered jobs; [`Worker::start`] /
//!   [`Worker::shutdown`]. Job modules add themselves with [`Worker::add_job`].
//! - Each job module exposes `try_execute_*` functions that do one step against a pool and
//!   return what they did, so tests drive them one step at a time without the scheduler.
//! - Job modules (`reconcile`, `expiry`, `webhooks`, `payouts`) are declared below, one line each.
//!
//! Shutdown drains: [`Worker::shutdown`] stops new ticks, waits up to `[worker] drain_secs`
//! for the invocations in flight (a payout claimed is sent and settled, not left to its
//! lease), then hands back what this process still holds (reconciliation requests and runs)
//! so another replica takes them over at once. [`ops`] serves `/healthz`, `/readyz` and
//! `/metrics` for the worker process.
//!
//! Job functions never panic the scheduler: an error is logged with the job's name and
//! counted in `minipay_worker_job_failures_total`, and the next tick tries again.

// Job modules, one line each (their owners add them).
pub mod certificates;
pub mod expiry;
pub mod ops;
pub mod payouts;
pub mod recon_requests;
pub mod reconcile;
pub mod refunds;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, register_int_counter_vec, register_int_gauge};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

/// A job's result: `Err` is logged and counted; the schedule carries on.
pub type JobResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What a job runs on each tick.
pub type JobFn = Arc<dyn Fn(JobContext) -> Pin<Box<dyn Future<Output = JobResult> + Send>> + Send + Sync>;

/// Handed to every job invocation.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub pool: PgPool,
    /// The job's registered name, for logs.
    pub name: &'static str,
}

/// When a job runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every `period`, measured from the worker's start.
    Every(Duration),
    /// A cron expression with seconds (`sec min hour dom mon dow`) in a time zone, e.g.
    /// `"0 30 10 * * *"` in Asia/Shanghai for the nightly reconciliation.
    Cron { expr: String, tz: chrono_tz::Tz },
}

/// Why the worker could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error("job {name}: invalid schedule {schedule:?}")]
    Schedule { name: &'static str, schedule: String },
    #[error("configuration: {0}")]
    Config(String),
}

static JOB_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "minipay_worker_job_failures_total",
        "Job invocations that returned an error, by job",
        &["job"]
    )
    .expect("register minipay_worker_job_failures_total")
});

static JOB_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("minipay_worker_job_runs_total", "Job invocations, by job", &["job"])
        .expect("register minipay_worker_job_runs_total")
});

static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("minipay_worker_jobs_in_flight", "Job invocations running now")
        .expect("register minipay_worker_jobs_in_flight")
});

/// Invocations running now, so shutdown can wait for them.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    stopping: AtomicBool,
    idle: tokio::sync::Notify,
}

/// Default of [`Worker::with_drain`]: longer than a WeChat call (10 s timeout) so a payout
/// being sent is settled, shorter than Kubernetes' default 30 s grace period.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

/// How often the queue of API-requested reconciliations is polled.
pub const RECON_REQUEST_POLL: Duration = Duration::from_secs(2);

struct Registered {
    name: &'static str,
    schedule: Schedule,
    run: JobFn,
}

/// The scheduler plus the jobs registered on it.
pub struct Worker {
    pool: PgPool,
    jobs: Vec<Registered>,
    scheduler: Option<JobScheduler>,
    in_flight: Arc<InFlight>,
    drain: Duration,
    /// The `worker` name under which this process claims reconciliation requests and runs.
    holder: Option<String>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("jobs", &self.jobs.iter().map(|j| (j.name, &j.schedule)).collect::<Vec<_>>())
            .field("started", &self.scheduler.is_some())
            .finish()
    }
}

impl Worker {
    /// A worker with no jobs yet; job modules add theirs with [`Worker::add_job`].
    pub fn new(pool: PgPool) -> Worker {
        Worker {
            pool,
            jobs: Vec::new(),
            scheduler: None,
            in_flight: Arc::default(),
            drain: DEFAULT_DRAIN,
            holder: None,
        }
    }

    /// The worker for a configuration: every job whose section enables it is registered.
    /// Job owners add one registration each here.
    pub fn build(config: &minipay_config::Config, pool: PgPool) -> Result<Worker, WorkerError> {
        let mut w = Worker::new(pool.clone()).with_drain(Duration::from_secs(config.worker.drain_secs));
        let config_err = |e: &dyn std::fmt::Display| WorkerError::Config(e.to_string());
        expiry::OrderExpiry::new(pool.clone(), config)
            .map_err(|e| config_err(&e))?
            .register(&mut w, Duration::from_millis(config.worker.expiry_interval_ms));
        refunds::RefundFollowup::new(pool.clone(), config)
            .map_err(|e| config_err(&e))?
            .register(&mut w, Duration::from_millis(config.worker.expiry_interval_ms));
        webhooks::WebhookSender::new(pool.clone(), config.webhooks.clone())
            .map_err(|e| config_err(&e))?
            .register(&mut w, Duration::from_millis(config.worker.webhook_interval_ms));
        payouts::PayoutSender::from_config(config, pool.clone())
            .map_err(|e| config_err(&e))?
            .register(&mut w, Duration::from_millis(config.payouts.send_interval_ms));
        // Stored certificates older than 12 hours are fetched again (WeChat rotates with an
        // overlap; an unknown serial between rounds is fetched on demand).
        certificates::CertificateRefresh::new(pool.clone(), config, Duration::from_secs(12 * 3600))
            .map_err(|e| config_err(&e))?
            .register(&mut w);
        let r = reconcile::Reconciler::from_config(config, pool).map_err(|e| WorkerError::Config(e.to_string()))?;
        if !config.merchants.is_empty() {
            w.holder = Some(r.id().to_owned());
            recon_requests::register(&mut w, Arc::new(r.clone()), RECON_REQUEST_POLL);
        }
        if config.reconcile.enabled {
            reconcile::register(&mut w, r);
        }
        Ok(w)
    }

    /// How long [`Worker::shutdown`] waits for invocations in flight.
    pub fn with_drain(mut self, drain: Duration) -> Worker {
        self.drain = drain;
        self
    }

    /// Whether the scheduler is ticking (readiness).
    pub fn is_running(&self) -> bool {
        self.scheduler.is_some()
    }

    /// Job invocations running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::Acquire)
    }

    /// The pool every job runs on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers a job. `run` is called on every tick with a [`JobContext`]; a tick that
    /// arrives while the previous invocation of the same job is still running is skipped
    /// (a long reconciliation must not pile up behind itself).
    pub fn add_job<F, Fut>(&mut self, name: &'static str, schedule: Schedule, run: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let run: JobFn = Arc::new(move |ctx| Box::pin(run(ctx)));
        self.jobs.push(Registered { name, schedule, run });
    }

    /// Names of the registered jobs, in registration order.
    pub fn job_names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|j| j.name).collect()
    }

    /// Creates the scheduler, adds every job and starts ticking. Returns once started.
    pub async fn start(&mut self) -> Result<(), WorkerError> {
        let sched = JobScheduler::new().await?;
        self.in_flight.stopping.store(false, Ordering::Release);
        LazyLock::force(&IN_FLIGHT);
        for job in &self.jobs {
            // Every job's series exists from the start, at zero.
            JOB_RUNS.with_label_values(&[job.name]);
            JOB_FAILURES.with_label_values(&[job.name]);
            let in_flight = self.in_flight.clone();
            let ctx = JobContext { pool: self.pool.clone(), name: job.name };
            let run = job.run.clone();
            let busy = Arc::new(AtomicBool::new(false));
            let tick = move |_id, _lock| -> Pin<Box<dyn Future<Output = ()> + Send>> {
                let ctx = ctx.clone();
                let run = run.clone();
                let busy = busy.clone();
                let in_flight = in_flight.clone();
                Box::pin(async move {
                    if in_flight.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if busy.swap(true, Ordering::AcqRel) {
                        tracing::debug!(job = ctx.name, "previous run still going; tick skipped");
                        return;
                    }
                    in_flight.count.fetch_add(1, Ordering::AcqRel);
                    IN_FLIGHT.inc();
                    run_once(&run, ctx).await;
                    IN_FLIGHT.dec();
                    if in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                        in_flight.idle.notify_waiters();
                    }
                    busy.store(false, Ordering::Release);
                })
            };
            let j = match &job.schedule {
                Schedule::Every(period) => Job::new_repeated_async(*period, tick),
                Schedule::Cron { expr, tz } => Job::new_async_tz(expr.as_str(), *tz, tick),
            }
            .map_err(|_| WorkerError::Schedule { name: job.name, schedule: format!("{:?}", job.schedule) })?;
            sched.add(j).await?;
        }
        sched.start().await?;
        tracing::info!(jobs = ?self.job_names(), "worker started");
        self.scheduler = Some(sched);
        Ok(())
    }

    /// Drains: no new ticks, then waits up to the drain time for the invocations in flight,
    /// then releases the reconciliation requests and runs this process still holds (a
    /// payout still being sent keeps its lease: its outcome is unknown until queried).
    /// Returns the number of invocations that did not finish in time.
    pub async fn shutdown(&mut self) -> Result<usize, WorkerError> {
        self.in_flight.stopping.store(true, Ordering::Release);
        if let Some(mut s) = self.scheduler.take() {
            s.shutdown().await?;
        }
        let deadline = tokio::time::Instant::now() + self.drain;
        loop {
            let idle = self.in_flight.idle.notified();
            let n = self.in_flight();
            if n == 0 {
                break;
            }
            tracing::info!(in_flight = n, "worker draining");
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let left = self.in_flight();
        if left > 0 {
            tracing::warn!(in_flight = left, drain = ?self.drain, "worker stopped with jobs still running");
        }
        if let Some(holder) = &self.holder {
            match minipay_store::recon::release_requests(&self.pool, holder).await {
                Ok((0, 0)) => {}
                Ok((requests, runs)) => tracing::info!(requests, runs, "reconciliation work handed back"),
                Err(e) => tracing::warn!(error = %e, "could not hand back reconciliation work (leases will expire)"),
            }
        }
        Ok(left)
    }
}

/// Runs one invocation of a job, logging and counting its failure.
pub async fn run_once(run: &JobFn, ctx: JobContext) {
    let name = ctx.name;
    JOB_RUNS.with_label_values(&[name]).inc();
    if let Err(e) = run(ctx).await {
        JOB_FAILURES.with_label_values(&[name]).inc();
        tracing::error!(job = name, error = %e, "job failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_validated_by_the_scheduler_syntax() {
        let tz = chrono_tz::Asia::Shanghai;
        let ok = Job::new_async_tz("0 30 10 * * *", tz, |_, _| Box::pin(async {}));
        assert!(ok.is_ok());
        let bad = Job::new_async_tz("not a schedule", tz, |_, _| Box::pin(async {}));
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_jobs_in_flight_and_no_new_tick_starts() {
        use std::sync::atomic::AtomicU32;
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(AtomicU32::new(0));
        let mut w = Worker::new(pool).with_drain(Duration::from_secs(5));
        let (s, f) = (started.clone(), finished.clone());
        w.add_job("slow", Schedule::Every(Duration::from_millis(100)), move |_ctx| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(800)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        w.start().await.unwrap();
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(w.in_flight(), 1);
        let t = std::time::Instant::now();
        assert_eq!(w.shutdown().await.unwrap(), 0, "nothing left unfinished");
        assert!(t.elapsed() >= Duration::from_millis(300), "shutdown waited for the job");
        assert_eq!(finished.load(Ordering::SeqCst), started.load(Ordering::SeqCst));
        let n = started.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(started.load(Ordering::SeqCst), n, "no tick after shutdown");
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_the_drain_time() {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let mut w = Worker::new(pool).with_drain(Duration::from_millis(200));
        w.add_job("stuck", Schedule::Every(Duration::from_millis(50)), |_ctx| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        });
        w.start().await.unwrap();
        while w.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = std::time::Instant::now();
        assert_eq!(w.shutdown().await.unwrap(), 1, "the stuck job is reported");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_ops_server_reports_health_readiness_and_metrics() {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let ready = ops::Readiness::default();
        let server = ops::OpsServer::bind("127.0.0.1:0", pool, ready.clone()).unwrap();
        let url = format!("http://127.0.0.1:{}", server.port());
        let handle = server.handle();
        tokio::spawn(server.run_until_stopped());
        JOB_RUNS.with_label_values(&["ops-test"]).inc();
        let get = |p: &'static str| {
            let url = url.clone();
            async move {
                let r = reqwest::get(format!("{url}{p}")).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503, "scheduler not started");
        ready.set(true);
        assert_eq!(get("/readyz").await.0, 503, "the database does not answer");
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("minipay_worker_job_runs_total{job=\"ops-test\"} 1"), "{body}");
        handle.stop(true).await;
    }

    #[tokio::test]
    async fn build_registers_reconciliation_per_merchant() {
        let toml = "[[merchants]]\nmch_id = \"1900000109\"\napi_key = \"192006250b4c09247ec02edce69f6a2d\"\n\n\
                    [reconcile]\nfee_rate = \"0.60%\"\n";
        let cfg = minipay_config::Config::from_toml_with_env(toml, Vec::new(), std::path::Path::new(".")).unwrap();
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let w = Worker::build(&cfg, pool.clone()).unwrap();
        let names = w.job_names();
        assert!(names.contains(&"reconcile:1900000109") && names.contains(&"reconcile:retry"), "{names:?}");

        let off = minipay_config::Config::from_toml_with_env(
            &format!("{toml}enabled = false\n"),
            Vec::new(),
            std::path::Path::new("."),
        )
        .unwrap();
        let off_names = Worker::build(&off, pool).unwrap().job_names();
        assert!(!off_names.iter().any(|n| n.starts_with("reconcile") && *n != "reconcile:requests"), "{off_names:?}");
        assert!(off_names.contains(&"reconcile:requests"), "API-requested runs are served even with the schedule off");
    }
}
