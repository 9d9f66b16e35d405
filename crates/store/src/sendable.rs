//! What payouts and red packets have in common as requests the sender sends: their errors
//! ([`PayoutError`], re-exported as `payouts::PayoutError`), the
//! maker-checker rule, approval and rejection with their limit counters, the sender's lease,
//! parking an uncertain call and a final failure.
//!
//! Each rule lives here once; [`crate::payouts`] and [`crate::redpacks`] keep what differs
//! (their rows, audit lines, webhooks and ledger postings). The two tables have the same
//! columns for all of this, so each statement is one static string per table (sqlx wants
//! `&'static str`; no SQL is built at run time).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::StoreError;
use crate::domain::{State, check_transition};
use crate::payout_limits::{self, Holding, Limits, shanghai_day};
use crate::payout_limits::{RuleError, RuleViolation};

/// Errors of request, approval and rejection, each a stable API error.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    #[error("a request cannot be approved or rejected with the key that created it")]
    MakerChecker,
    #[error("{0} not found")]
    NotFound(String),
    #[error("cannot {action} a request in state {status}")]
    WrongState { action: &'static str, status: String },
    #[error("this request belongs to batch {0}: approve or reject the batch")]
    InBatch(i64),
    /// The Idempotency-Key already created a request with other parameters.
    #[error("this Idempotency-Key created {0} with other parameters; use a new key")]
    KeyReused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RuleError> for PayoutError {
    fn from(e: RuleError) -> PayoutError {
        match e {
            RuleError::Rule(r) => PayoutError::Rule(r),
            RuleError::Store(s) => PayoutError::Store(s),
        }
    }
}

impl From<sqlx::Error> for PayoutError {
    fn from(e: sqlx::Error) -> PayoutError {
        PayoutError::Store(StoreError::Db(e))
    }
}

/// Which table a sendable request lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Payouts,
    Redpacks,
}

impl Table {
    /// The request's name in error messages.
    fn noun(self) -> &'static str {
        match self {
            Table::Payouts => "payout",
            Table::Redpacks => "red packet",
        }
    }
}

/// Maker-checker and state rule for approving or rejecting anything (a payout, a red packet,
/// a batch): never by the key that created it, and only while it waits for approval.
pub(crate) fn check_decider(
    who: Uuid,
    created_by: Uuid,
    status: &'static str,
    action: &'static str,
) -> Result<(), PayoutError> {
    if who == created_by {
        return Err(PayoutError::MakerChecker);
    }
    if status != "pending_approval" {
        return Err(PayoutError::WrongState { action, status: status.into() });
    }
    Ok(())
}

/// Loads and locks a request by id for a state change.
pub(crate) async fn lock(conn: &mut PgConnection, table: Table, id: i64) -> Result<PgRow, PayoutError> {
    let sql = match table {
        Table::Payouts => "SELECT * FROM payouts WHERE id = $1 FOR UPDATE",
        Table::Redpacks => "SELECT * FROM redpacks WHERE id = $1 FOR UPDATE",
    };
    sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| PayoutError::NotFound(format!("{} {id}", table.noun())))
}

/// Approves a locked pending request: limits checked again (the amount moves to today's
/// counters if it was requested on an earlier day), and it becomes due at once.
pub(crate) async fn approve(
    conn: &mut PgConnection,
    table: Table,
    id: i64,
    holding: &Holding<'_>,
    approver: Uuid,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<PgRow, PayoutError> {
    let day = payout_limits::recheck_for_approval(conn, holding, limits, shanghai_day(now)).await?;
    let sql = match table {
        Table::Payouts => {
            "UPDATE payouts SET status = 'approved', approved_by = $2, approved_at = $3, next_attempt_at = $3,
                                limit_day = $4
             WHERE id = $1 RETURNING *"
        }
        Table::Redpacks => {
            "UPDATE redpacks SET status = 'approved', approved_by = $2, approved_at = $3, next_attempt_at = $3,
                                 limit_day = $4
             WHERE id = $1 RETURNING *"
        }
    };
    Ok(sqlx::query(sql).bind(id).bind(approver).bind(now).bind(day).fetch_one(conn).await?)
}

/// Rejects a locked pending request and gives its amount back to the limit counters.
pub(crate) async fn reject(
    conn: &mut PgConnection,
    table: Table,
    id: i64,
    holding: &Holding<'_>,
    approver: Uuid,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<PgRow, PayoutError> {
    payout_limits::release(conn, holding).await?;
    let sql = match table {
        Table::Payouts => {
            "UPDATE payouts SET status = 'rejected', rejected_by = $2, rejected_at = $3, reject_reason = $4,
                                finished_at = $3
             WHERE id = $1 RETURNING *"
        }
        Table::Redpacks => {
            "UPDATE redpacks SET status = 'rejected', rejected_by = $2, rejected_at = $3, reject_reason = $4,
                                 finished_at = $3
             WHERE id = $1 RETURNING *"
        }
    };
    Ok(sqlx::query(sql).bind(id).bind(approver).bind(now).bind(reason).fetch_one(conn).await?)
}

/// Claims the next request that needs a call — approved, unknown and due, or left in
/// `sending` by a sender whose lease ran out — and commits nothing: the caller records the
/// attempt in the same transaction and commits before calling WeChat. `SKIP LOCKED` lets
/// any number of senders run side by side. Returns the claimed row and the state it was
/// claimed from.
pub(crate) async fn claim_next<S: State>(
    conn: &mut PgConnection,
    table: Table,
    sending: S,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<(PgRow, S)>, StoreError> {
    let sql = match table {
        Table::Payouts => {
            "WITH due AS (
                 SELECT id, status AS from_status FROM payouts
                 WHERE status = 'approved'
                    OR (status = 'unknown' AND next_attempt_at <= $1)
                    OR (status = 'sending' AND lease_until <= $1)
                 ORDER BY id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE payouts p SET status = 'sending', lease_until = $2, send_attempts = p.send_attempts + 1
             FROM due WHERE p.id = due.id
             RETURNING p.*, due.from_status"
        }
        Table::Redpacks => {
            "WITH due AS (
                 SELECT id, status AS from_status FROM redpacks
                 WHERE status = 'approved'
                    OR (status = 'unknown' AND next_attempt_at <= $1)
                    OR (status = 'sending' AND lease_until <= $1)
                 ORDER BY id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE redpacks r SET status = 'sending', lease_until = $2, send_attempts = r.send_attempts + 1
             FROM due WHERE r.id = due.id
             RETURNING r.*, due.from_status"
        }
    };
    let row = sqlx::query(sql).bind(now).bind(lease_until).fetch_optional(conn).await?;
    let Some(row) = row else { return Ok(None) };
    let from: String = row.try_get("from_status")?;
    let from = S::parse(&from)
        .ok_or_else(|| StoreError::Conflict(format!("{} in unexpected state {from:?}", table.noun())))?;
    check_transition(from, sending)?;
    Ok(Some((row, from)))
}

/// WeChat said, finally, that nothing was sent: the row becomes `failed` and its amount
/// goes back to the limit counters. The caller has locked the row and checked the transition.
pub(crate) async fn fail(
    conn: &mut PgConnection,
    table: Table,
    id: i64,
    holding: &Holding<'_>,
    code: &str,
    message: &str,
) -> Result<PgRow, PayoutError> {
    payout_limits::release(conn, holding).await?;
    let sql = match table {
        Table::Payouts => {
            "UPDATE payouts SET status = 'failed', failure_code = $2, failure_message = $3, lease_until = NULL,
                    next_attempt_at = NULL, finished_at = now()
             WHERE id = $1 RETURNING *"
        }
        Table::Redpacks => {
            "UPDATE redpacks SET status = 'failed', failure_code = $2, failure_message = $3, lease_until = NULL,
                    next_attempt_at = NULL, finished_at = now()
             WHERE id = $1 RETURNING *"
        }
    };
    Ok(sqlx::query(sql).bind(id).bind(code).bind(message).fetch_one(conn).await?)
}

/// The call may or may not have gone through: park the row as `unknown` until
/// `next_attempt_at`, when a sender asks WeChat (or repeats the same call). The caller has
/// locked the row and checked that it may become `unknown`.
pub(crate) async fn park_unknown(
    conn: &mut PgConnection,
    table: Table,
    id: i64,
    reason: &str,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), PayoutError> {
    let sql = match table {
        Table::Payouts => {
            "UPDATE payouts SET status = 'unknown', last_error = $2, next_attempt_at = $3, lease_until = NULL
             WHERE id = $1"
        }
        Table::Redpacks => {
            "UPDATE redpacks SET status = 'unknown', last_error = $2, next_attempt_at = $3, lease_until = NULL
             WHERE id = $1"
        }
    };
    sqlx::query(sql).bind(id).bind(reason).bind(next_attempt_at).execute(conn).await?;
    Ok(())
}

/// Serialises, until the caller's transaction ends, every transaction that names the same
/// `scope` (a request key, a maker's day): a transaction-level advisory lock on its 64-bit
/// hash. A hash collision only makes two unrelated requests wait for each other.
pub(crate) async fn advisory_lock(conn: &mut PgConnection, scope: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(scope).execute(conn).await?;
    Ok(())
}

/// The row an API key created with an `Idempotency-Key`, if any, after taking the key's
/// advisory lock: a second request with the key (a retry after a crash or a 5xx, or after
/// the key's takeover window) waits for the first one's transaction and then finds its row.
/// The lock is held until the caller commits, so the row is created at most once.
pub(crate) async fn find_by_request_key(
    conn: &mut PgConnection,
    table: Table,
    created_by: Uuid,
    key: &str,
) -> Result<Option<PgRow>, StoreError> {
    advisory_lock(conn, &format!("{}-request-key:{created_by}:{key}", table.noun())).await?;
    let sql = match table {
        Table::Payouts => "SELECT * FROM payouts WHERE created_by = $1 AND request_key = $2",
        Table::Redpacks => "SELECT * FROM redpacks WHERE created_by = $1 AND request_key = $2",
    };
    Ok(sqlx::query(sql).bind(created_by).bind(key).fetch_optional(conn).await?)
}

/// Whether a request of `amount` by `maker` may still be approved automatically on `day`:
/// the maker's auto-approved requests of that day (those not waiting, rejected or failed)
/// plus this one stay within `ceiling`. Takes the maker's advisory lock for the product, so
/// two requests of one maker cannot both pass the check; the caller holds it to commit.
pub(crate) async fn within_auto_approval_ceiling(
    conn: &mut PgConnection,
    table: Table,
    maker: Uuid,
    day: chrono::NaiveDate,
    amount: crate::Fen,
    ceiling: crate::Fen,
) -> Result<bool, StoreError> {
    if amount > ceiling {
        return Ok(false);
    }
    advisory_lock(conn, &format!("{}-auto-approval:{maker}:{day}", table.noun())).await?;
    let sql = match table {
        Table::Payouts => {
            "SELECT coalesce(sum(amount), 0)::bigint FROM payouts
              WHERE created_by = $1 AND limit_day = $2 AND batch_id IS NULL AND approved_by IS NULL
                AND status NOT IN ('pending_approval', 'rejected', 'failed')"
        }
        Table::Redpacks => {
            "SELECT coalesce(sum(total_amount), 0)::bigint FROM redpacks
              WHERE created_by = $1 AND limit_day = $2 AND approved_by IS NULL
                AND status NOT IN ('pending_approval', 'rejected', 'failed')"
        }
    };
    let (sum,): (i64,) = sqlx::query_as(sql).bind(maker).bind(day).fetch_one(conn).await?;
    Ok(sum.saturating_add(amount.get()) <= ceiling.get())
}

/// Raises a `paid_after_failed` anomaly for a payout or red packet (by its merchant number)
/// that WeChat paid after we recorded it failed. One per number: a repeat counts again.
pub(crate) async fn record_paid_after_failed(
    conn: &mut PgConnection,
    merchant_no: &str,
    mch_id: &str,
    reason: String,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    let a = crate::anomalies::NewAnomaly {
        kind: "paid_after_failed",
        reference: merchant_no,
        mch_id,
        source: &crate::settle::Source::Sender,
        reason,
        details,
        dedupe_key: format!("paid_after_failed:{mch_id}:{merchant_no}"),
    };
    crate::anomalies::record_anomaly(conn, &a).await?;
    Ok(())
}
