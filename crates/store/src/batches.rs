//! Payout batches: a CSV of payouts created all-or-nothing and approved (or rejected) as one.
//!
//! Creation checks every row — the amount and name rules and the daily limits, in row order
//! against the counters as the earlier rows left them — and reports every failing row, not
//! just the first. Any failure means nothing is kept: the functions return
//! [`BatchError::Rows`] and the caller rolls its transaction back. Approval re-checks every
//! row's limits the same way and approves all rows or none.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::OpenId;
use crate::payout_limits::Limits;
use crate::payouts::{self, BatchPlace, NewPayout, Payout, PayoutError, client_actor};
use crate::sendable;
use crate::{Fen, StoreError, audit};

/// One parsed CSV row.
#[derive(Clone, Debug)]
pub struct BatchRow {
    pub openid: OpenId,
    pub amount: Fen,
    pub description: String,
    pub real_name: Option<String>,
}

/// Why one row was refused; `row` is 1-based among the data rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub row: usize,
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{} row(s) refused", .0.len())]
    Rows(Vec<RowError>),
    #[error(transparent)]
    Payout(#[from] PayoutError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> BatchError {
        BatchError::Payout(PayoutError::Store(e))
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> BatchError {
        BatchError::Payout(PayoutError::Store(StoreError::Db(e)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    PendingApproval,
    Approved,
    Rejected,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::PendingApproval => "pending_approval",
            BatchStatus::Approved => "approved",
            BatchStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<BatchStatus> {
        Some(match s {
            "pending_approval" => BatchStatus::PendingApproval,
            "approved" => BatchStatus::Approved,
            "rejected" => BatchStatus::Rejected,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    pub id: i64,
    pub mch_id: String,
    pub appid: String,
    pub created_by: Uuid,
    pub status: BatchStatus,
    pub row_count: i32,
    pub total_amount: Fen,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub reject_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Batch {
    fn from_row(r: &PgRow) -> Result<Batch, sqlx::Error> {
        let status: String = r.try_get("status")?;
        Ok(Batch {
            id: r.try_get("id")?,
            mch_id: r.try_get("mch_id")?,
            appid: r.try_get("appid")?,
            created_by: r.try_get("created_by")?,
            status: BatchStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown batch status {status:?}").into()))?,
            row_count: r.try_get("row_count")?,
            total_amount: Fen::new(r.try_get("total_amount")?),
            approved_by: r.try_get("approved_by")?,
            approved_at: r.try_get("approved_at")?,
            rejected_by: r.try_get("rejected_by")?,
            rejected_at: r.try_get("rejected_at")?,
            reject_reason: r.try_get("reject_reason")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Who creates a batch, for which app.
#[derive(Clone, Copy, Debug)]
pub struct BatchOwner<'a> {
    pub mch_id: &'a str,
    pub appid: &'a str,
    pub created_by: Uuid,
    /// Sent as every row's `spbill_create_ip`.
    pub spbill_create_ip: Option<&'a str>,
    /// The upload's `Idempotency-Key`: the batch it creates is the key's forever.
    pub request_key: Option<&'a str>,
}

/// The batch `owner`'s key already created, with its rows; `KeyReused` when those rows are
/// not `rows`. Takes the key's advisory lock first (held until the caller commits).
async fn find_by_request_key(
    conn: &mut PgConnection,
    owner: &BatchOwner<'_>,
    key: &str,
    rows: &[BatchRow],
) -> Result<Option<(Batch, Vec<Payout>)>, BatchError> {
    sendable::advisory_lock(conn, &format!("batch-request-key:{}:{key}", owner.created_by)).await?;
    let found = sqlx::query("SELECT id FROM payout_batches WHERE created_by = $1 AND request_key = $2")
        .bind(owner.created_by)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(found) = found else { return Ok(None) };
    let (batch, payouts) = lock(conn, found.try_get("id")?).await?;
    let same = batch.mch_id == owner.mch_id
        && batch.appid == owner.appid
        && payouts.len() == rows.len()
        && payouts.iter().zip(rows).all(|(p, r)| {
            p.openid == r.openid.as_str()
                && p.amount == r.amount
                && p.description == r.description
                && p.re_user_name == r.real_name
        });
    if !same {
        return Err(PayoutError::KeyReused(format!("batch {}", batch.id)).into());
    }
    Ok(Some((batch, payouts)))
}

/// Creates a batch and its payouts (all `pending_approval`), or reports every bad row.
/// On `Err` the caller must roll back: rows checked before a failing one were written.
pub async fn create(
    conn: &mut PgConnection,
    owner: BatchOwner<'_>,
    rows: &[BatchRow],
    limits: &Limits,
    require_real_name: bool,
    now: DateTime<Utc>,
) -> Result<(Batch, Vec<Payout>), BatchError> {
    if rows.is_empty() {
        return Err(BatchError::Rows(vec![RowError {
            row: 0,
            code: "empty_batch".into(),
            message: "the file has no payout rows".into(),
        }]));
    }
    if let Some(key) = owner.request_key {
        if let Some(existing) = find_by_request_key(conn, &owner, key, rows).await? {
            return Ok(existing);
        }
    }
    let total = rows.iter().try_fold(0i64, |acc, r| acc.checked_add(r.amount.get())).unwrap_or(i64::MAX);
    let row_count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
    let batch_row = sqlx::query(
        "INSERT INTO payout_batches (mch_id, appid, created_by, status, row_count, total_amount, request_key)
         VALUES ($1, $2, $3, 'pending_approval', $4, $5, $6) RETURNING *",
    )
    .bind(owner.mch_id)
    .bind(owner.appid)
    .bind(owner.created_by)
    .bind(row_count)
    .bind(total.max(1))
    .bind(owner.request_key)
    .fetch_one(&mut *conn)
    .await?;
    let batch = Batch::from_row(&batch_row)?;
    let mut errors = Vec::new();
    let mut created = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let new = NewPayout {
            mch_id: owner.mch_id,
            appid: owner.appid,
            openid: &r.openid,
            amount: r.amount,
            description: &r.description,
            real_name: r.real_name.as_deref(),
            spbill_create_ip: owner.spbill_create_ip,
            created_by: owner.created_by,
            request_key: None,
        };
        let place = BatchPlace { batch_id: batch.id, row: i32::try_from(i + 1).unwrap_or(i32::MAX) };
        match payouts::create(conn, &new, limits, require_real_name, Some(place), now).await {
            Ok(p) => created.push(p),
            Err(PayoutError::Rule(v)) => {
                errors.push(RowError { row: i + 1, code: v.code.into(), message: v.message });
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() {
        return Err(BatchError::Rows(errors));
    }
    audit::record(
        conn,
        &client_actor(owner.created_by),
        "payout_batch.created",
        "payout_batch",
        &batch.id.to_string(),
        json!({ "rows": rows.len(), "total_amount": total }),
    )
    .await?;
    Ok((batch, created))
}

async fn lock(conn: &mut PgConnection, id: i64) -> Result<(Batch, Vec<Payout>), PayoutError> {
    let row = sqlx::query("SELECT * FROM payout_batches WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| PayoutError::NotFound(format!("batch {id}")))?;
    let batch = Batch::from_row(&row)?;
    let rows = sqlx::query("SELECT id FROM payouts WHERE batch_id = $1 ORDER BY id FOR UPDATE")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let mut payouts = Vec::with_capacity(rows.len());
    for r in rows {
        let pid: i64 = r.try_get("id")?;
        payouts.push(payouts::get(conn, pid).await?.ok_or_else(|| PayoutError::NotFound(format!("payout {pid}")))?);
    }
    Ok((batch, payouts))
}

/// Approves every row of a pending batch (limits re-checked per row), or none: on `Err`
/// the caller rolls back.
pub async fn approve(
    conn: &mut PgConnection,
    id: i64,
    approver: Uuid,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<(Batch, Vec<Payout>), BatchError> {
    let (batch, rows) = lock(conn, id).await?;
    sendable::check_decider(approver, batch.created_by, batch.status.as_str(), "approve")?;
    let mut errors = Vec::new();
    let mut approved = Vec::with_capacity(rows.len());
    for p in &rows {
        match payouts::approve_locked(conn, p, approver, limits, now).await {
            Ok(p) => approved.push(p),
            Err(PayoutError::Rule(v)) => errors.push(RowError {
                row: usize::try_from(p.batch_row.unwrap_or(0)).unwrap_or(0),
                code: v.code.into(),
                message: v.message,
            }),
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() {
        return Err(BatchError::Rows(errors));
    }
    let row = sqlx::query(
        "UPDATE payout_batches SET status = 'approved', approved_by = $2, approved_at = $3 WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(approver)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    // Rows of a batch become due together, when the batch is approved.
    sqlx::query("UPDATE payouts SET next_attempt_at = $2 WHERE batch_id = $1")
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        &client_actor(approver),
        "payout_batch.approved",
        "payout_batch",
        &id.to_string(),
        json!({ "rows": approved.len(), "total_amount": batch.total_amount }),
    )
    .await?;
    Ok((Batch::from_row(&row)?, approved))
}

/// Rejects every row of a pending batch.
pub async fn reject(
    conn: &mut PgConnection,
    id: i64,
    approver: Uuid,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Batch, BatchError> {
    let (batch, rows) = lock(conn, id).await?;
    sendable::check_decider(approver, batch.created_by, batch.status.as_str(), "reject")?;
    for p in &rows {
        payouts::reject_locked(conn, p, approver, reason, now).await?;
    }
    let row = sqlx::query(
        "UPDATE payout_batches SET status = 'rejected', rejected_by = $2, rejected_at = $3, reject_reason = $4
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(approver)
    .bind(now)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        conn,
        &client_actor(approver),
        "payout_batch.rejected",
        "payout_batch",
        &id.to_string(),
        json!({ "rows": rows.len(), "reason": reason }),
    )
    .await?;
    Ok(Batch::from_row(&row)?)
}

pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<Batch>, StoreError> {
    let row = sqlx::query("SELECT * FROM payout_batches WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(row.map(|r| Batch::from_row(&r)).transpose()?)
}
