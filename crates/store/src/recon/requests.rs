//! Reconciliation requests: `POST /v1/reconciliations` records one per merchant, a worker
//! claims and runs it. The queue is claimed with `FOR UPDATE SKIP LOCKED` and a lease, so any
//! number of workers serve it and a worker that dies mid-run hands the request on when its
//! lease ends; a worker that is stopped hands it on at once ([`release_requests`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// A request as stored.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ReconRequest {
    pub id: i64,
    pub mch_id: String,
    pub bill_date: NaiveDate,
    pub requested_by: Uuid,
    /// pending, running, completed, failed
    pub status: String,
    pub attempts: i32,
    /// The run it started (its report is in `GET /v1/reconciliations/{date}`).
    pub run_id: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`ReconRequest`], in a macro so the queries stay static strings.
macro_rules! columns {
    () => {
        "id, mch_id, bill_date, requested_by, status, attempts, run_id, error, created_at, updated_at"
    };
}

/// Records a request for (merchant, date).
pub async fn insert_request(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
    requested_by: Uuid,
) -> Result<ReconRequest, StoreError> {
    let r = sqlx::query_as(concat!(
        "INSERT INTO recon_requests (mch_id, bill_date, requested_by) VALUES ($1, $2, $3) RETURNING ",
        columns!()
    ))
    .bind(mch_id)
    .bind(bill_date)
    .bind(requested_by)
    .fetch_one(conn)
    .await?;
    Ok(r)
}

pub async fn get_request(conn: &mut PgConnection, id: i64) -> Result<Option<ReconRequest>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", columns!(), " FROM recon_requests WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Claims the oldest pending request (or a running one whose worker's lease ran out) for
/// `worker` until `lease_secs` from now.
pub async fn claim_request(pool: &PgPool, worker: &str, lease_secs: i64) -> Result<Option<ReconRequest>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE recon_requests SET status = 'running', worker = $1, attempts = attempts + 1,
                lease_until = now() + make_interval(secs => $2)
          WHERE id = (SELECT id FROM recon_requests
                       WHERE status = 'pending' OR (status = 'running' AND lease_until < now())
                       ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING ",
        columns!()
    ))
    .bind(worker)
    .bind(lease_secs as f64)
    .fetch_optional(pool)
    .await?)
}

/// Records how a claimed request ended. False when the claim was lost meanwhile.
pub async fn finish_request(
    pool: &PgPool,
    id: i64,
    worker: &str,
    completed: bool,
    run_id: Option<i64>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE recon_requests SET status = $3, run_id = COALESCE($4, run_id), error = $5, lease_until = NULL
          WHERE id = $1 AND worker = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(if completed { "completed" } else { "failed" })
    .bind(run_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A stopping worker hands back what it holds: its running requests become pending again
/// and its running reconciliation runs `abandoned`, so another worker takes both over now
/// instead of when the leases end. Returns (requests, runs) released.
pub async fn release_requests(pool: &PgPool, worker: &str) -> Result<(u64, u64), StoreError> {
    let mut tx = pool.begin().await?;
    let requests = sqlx::query(
        "UPDATE recon_requests SET status = 'pending', worker = NULL, lease_until = NULL
          WHERE worker = $1 AND status = 'running'",
    )
    .bind(worker)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let runs = sqlx::query(
        "UPDATE recon_runs SET status = 'abandoned', finished_at = now(), error = 'worker stopped (released on shutdown)'
          WHERE worker = $1 AND status = 'running'",
    )
    .bind(worker)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((requests, runs))
}
