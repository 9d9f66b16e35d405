//! Settlement anomalies: genuine facts from WeChat that disagree with our records, or that
//! an operator must look at. Recorded in the transaction of the step that found them (one
//! row per distinct problem, repeats counted), listed and resolved by operators.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::{StoreError, audit};

use crate::settle::Source;

/// A new anomaly; see [`record_anomaly`].
pub struct NewAnomaly<'a> {
    /// One of the kinds allowed by `settlement_anomalies.kind`.
    pub kind: &'a str,
    pub reference: &'a str,
    pub mch_id: &'a str,
    pub source: &'a Source,
    pub reason: String,
    pub details: Value,
    /// One row per distinct problem: a repeat bumps `occurrences` instead of adding a row.
    pub dedupe_key: String,
}

/// Records (or counts again) an anomaly; returns its id. Runs in the caller's transaction,
/// so an anomaly exists iff the step that found it committed.
pub async fn record_anomaly(conn: &mut PgConnection, a: &NewAnomaly<'_>) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO settlement_anomalies (kind, reference, mch_id, source, notification_id, reason, details, dedupe_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (dedupe_key) DO UPDATE
            SET occurrences = settlement_anomalies.occurrences + 1, last_seen_at = now()
         RETURNING id",
    )
    .bind(a.kind)
    .bind(a.reference)
    .bind(a.mch_id)
    .bind(a.source.as_str())
    .bind(a.source.notification_id())
    .bind(&a.reason)
    .bind(&a.details)
    .bind(&a.dedupe_key)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// An anomaly as operators and reconciliation read it.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct Anomaly {
    pub id: i64,
    pub kind: String,
    pub reference: String,
    pub mch_id: String,
    pub source: String,
    pub notification_id: Option<i64>,
    pub reason: String,
    pub details: Value,
    pub occurrences: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// The kinds `settlement_anomalies.kind` admits (its CHECK constraint).
pub const ANOMALY_KINDS: [&str; 9] = [
    "unknown_order",
    "order_mismatch",
    "duplicate_payment",
    "paid_after_close",
    "unknown_refund",
    "refund_mismatch",
    "refund_conflict",
    "refund_abnormal",
    "paid_after_failed",
];

/// The columns of an [`Anomaly`], for every query that reads one.
macro_rules! select_anomalies {
    () => {
        "SELECT id, kind, reference, mch_id, source, notification_id, reason, details, occurrences, status,
                created_at, last_seen_at, resolved_at, resolved_by, resolution
           FROM settlement_anomalies "
    };
}

/// Open anomalies, oldest first (at most `limit`).
pub async fn open_anomalies(conn: &mut PgConnection, limit: i64) -> Result<Vec<Anomaly>, StoreError> {
    Ok(sqlx::query_as(concat!(select_anomalies!(), "WHERE status = 'open' ORDER BY id LIMIT $1"))
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// Anomalies (open or resolved) about one out_trade_no / out_refund_no.
pub async fn anomalies_for(conn: &mut PgConnection, reference: &str) -> Result<Vec<Anomaly>, StoreError> {
    Ok(sqlx::query_as(concat!(select_anomalies!(), "WHERE reference = $1 ORDER BY id"))
        .bind(reference)
        .fetch_all(conn)
        .await?)
}

/// One anomaly.
pub async fn get_anomaly(conn: &mut PgConnection, id: i64) -> Result<Option<Anomaly>, StoreError> {
    Ok(sqlx::query_as(concat!(select_anomalies!(), "WHERE id = $1")).bind(id).fetch_optional(conn).await?)
}

/// What [`list_anomalies`] selects; `None` means any.
#[derive(Clone, Debug, Default)]
pub struct AnomalyFilter<'a> {
    /// `open` or `resolved`.
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub mch_id: Option<&'a str>,
    /// Only ids below this one (the next page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Anomalies for operators, newest first, one page at a time (`before_id`).
pub async fn list_anomalies(conn: &mut PgConnection, f: &AnomalyFilter<'_>) -> Result<Vec<Anomaly>, StoreError> {
    Ok(sqlx::query_as(concat!(
        select_anomalies!(),
        "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR reference = $3) AND ($4::text IS NULL OR mch_id = $4)
           AND ($5::bigint IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6"
    ))
    .bind(f.status)
    .bind(f.kind)
    .bind(f.reference)
    .bind(f.mch_id)
    .bind(f.before_id)
    .bind(f.limit)
    .fetch_all(conn)
    .await?)
}

/// Marks an anomaly resolved by `actor` with a note. Returns false if it was not open.
pub async fn resolve_anomaly(
    conn: &mut PgConnection,
    id: i64,
    actor: &str,
    resolution: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE settlement_anomalies SET status = 'resolved', resolved_at = now(), resolved_by = $2, resolution = $3
          WHERE id = $1 AND status = 'open'",
    )
    .bind(id)
    .bind(actor)
    .bind(resolution)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        audit::record(conn, actor, "anomaly.resolved", "anomaly", &id.to_string(), json!({"resolution": resolution}))
            .await?;
    }
    Ok(done.rows_affected() == 1)
}
