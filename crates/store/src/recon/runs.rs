//! Reconciliation runs: exactly one worker per (merchant, date) at a time (advisory lock, a
//! partial unique index on `status = 'running'`, a lease so a dead worker's run is taken
//! over); every run is kept.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// How a run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Cli,
    Api,
    Bench,
    Test,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Api => "api",
            Trigger::Bench => "bench",
            Trigger::Test => "test",
        }
    }
}

/// What [`try_start_run`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRun {
    /// This caller owns the new run.
    Started { run_id: i64 },
    /// Another worker is running this (merchant, date) now.
    Busy { run_id: i64 },
    /// A completed run exists and a re-run was not asked for.
    AlreadyCompleted { run_id: i64 },
}

/// Starts a run of (merchant, date) unless another is active (or, when `rerun` is false,
/// unless one already completed). Coordinated through Postgres so any number of workers can
/// call it at once: a transaction-scoped advisory lock serializes the check-and-insert, and
/// the partial unique index on running rows backs it up. A running run whose lease expired
/// (its worker died) is marked `abandoned` and taken over.
pub async fn try_start_run(
    pool: &PgPool,
    mch_id: &str,
    bill_date: NaiveDate,
    trigger: Trigger,
    worker: &str,
    lease_secs: i64,
    rerun: bool,
) -> Result<StartRun, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('minipay.recon'), hashtext($1 || ':' || $2::text))")
        .bind(mch_id)
        .bind(bill_date)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE recon_runs SET status = 'abandoned', finished_at = now(), error = 'lease expired (worker gone)'
          WHERE mch_id = $1 AND bill_date = $2 AND status = 'running' AND lease_until < now()",
    )
    .bind(mch_id)
    .bind(bill_date)
    .execute(&mut *tx)
    .await?;
    let running: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM recon_runs WHERE mch_id = $1 AND bill_date = $2 AND status = 'running'")
            .bind(mch_id)
            .bind(bill_date)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((run_id,)) = running {
        return Ok(StartRun::Busy { run_id });
    }
    if !rerun {
        let done: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM recon_runs WHERE mch_id = $1 AND bill_date = $2 AND status = 'completed'
              ORDER BY id DESC LIMIT 1",
        )
        .bind(mch_id)
        .bind(bill_date)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((run_id,)) = done {
            return Ok(StartRun::AlreadyCompleted { run_id });
        }
    }
    let (run_id,): (i64,) = sqlx::query_as(
        "INSERT INTO recon_runs (mch_id, bill_date, status, trigger, worker, lease_until)
         VALUES ($1, $2, 'running', $3, $4, now() + make_interval(secs => $5)) RETURNING id",
    )
    .bind(mch_id)
    .bind(bill_date)
    .bind(trigger.as_str())
    .bind(worker)
    .bind(lease_secs as f64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StartRun::Started { run_id })
}

/// Extends a running run's lease (long loads call it between steps).
pub async fn renew_lease(conn: &mut PgConnection, run_id: i64, lease_secs: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE recon_runs SET lease_until = now() + make_interval(secs => $2) WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(lease_secs as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Final state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    /// WeChat's `Bill Creating`: tried too early, will be retried.
    Waiting,
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Waiting => "waiting",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

/// What a finished run records.
#[derive(Clone, Debug)]
pub struct RunEnd<'a> {
    pub status: RunStatus,
    pub trade_file_id: Option<i64>,
    pub fund_file_id: Option<i64>,
    pub empty_day: bool,
    pub report: Option<&'a serde_json::Value>,
    pub summary_text: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Which protocol fetched the bills: `v2`, `v3` or `file`.
    pub protocol: Option<&'a str>,
}

/// Closes a run (only a running one: a run taken over after its lease expired stays
/// `abandoned`). Returns whether this call closed it.
pub async fn finish_run(conn: &mut PgConnection, run_id: i64, end: &RunEnd<'_>) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE recon_runs SET status = $2, trade_file_id = $3, fund_file_id = $4, empty_day = $5, report = $6,
                summary_text = $7, error = $8, protocol = $9, finished_at = now()
          WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(end.status.as_str())
    .bind(end.trade_file_id)
    .bind(end.fund_file_id)
    .bind(end.empty_day)
    .bind(end.report)
    .bind(end.summary_text)
    .bind(end.error)
    .bind(end.protocol)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A run as stored.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub mch_id: String,
    pub bill_date: NaiveDate,
    pub status: String,
    pub trigger: String,
    pub worker: String,
    pub empty_day: bool,
    pub report: Option<serde_json::Value>,
    pub summary_text: Option<String>,
    pub error: Option<String>,
    /// Which protocol fetched the bills (`v2`, `v3`, `file`); absent on older runs.
    pub protocol: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One run by id.
pub async fn get_run(conn: &mut PgConnection, run_id: i64) -> Result<Option<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, mch_id, bill_date, status, trigger, worker, empty_day, report, summary_text, error,
                protocol, started_at, finished_at
           FROM recon_runs WHERE id = $1",
    )
    .bind(run_id)
    .fetch_optional(conn)
    .await?)
}

/// Every run of a date (all merchants, or one), newest first.
pub async fn runs_for_date(
    conn: &mut PgConnection,
    bill_date: NaiveDate,
    mch_id: Option<&str>,
) -> Result<Vec<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, mch_id, bill_date, status, trigger, worker, empty_day, report, summary_text, error,
                protocol, started_at, finished_at
           FROM recon_runs WHERE bill_date = $1 AND ($2::text IS NULL OR mch_id = $2)
          ORDER BY id DESC",
    )
    .bind(bill_date)
    .bind(mch_id)
    .fetch_all(conn)
    .await?)
}

/// The newest run of a (merchant, date), any status.
pub async fn latest_run(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
) -> Result<Option<RunRow>, StoreError> {
    Ok(runs_for_date(conn, bill_date, Some(mch_id)).await?.into_iter().next())
}

// ---------------------------------------------------------------------------------------
// Matching
