//! WeChat's notifications as evidence: the genuine ones we acted on (`wxpay_notifications`)
//! and the bodies we refused (`wxpay_rejected_notifications`, the forensic table).
//!
//! A genuine notification is stored in the same transaction as its effect
//! ([`crate::settle`]), so the row exists iff the effect committed. Identical redeliveries
//! share one row (keyed by the body's SHA-256) and bump `deliveries`.
//!
//! Rejected bodies come from anyone on the internet, so that table is bounded: a row keeps at
//! most [`REJECTED_HEAD_BYTES`] of the body, and [`prune_rejected`] keeps only the newest N
//! rows (the notify service calls it every [`PRUNE_EVERY`] inserts).

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// How much of a rejected body is kept: enough to see what it was, not enough to fill a disk.
pub const REJECTED_HEAD_BYTES: usize = 4096;

/// The notify service prunes the forensic table when a new row's id is a multiple of this.
pub const PRUNE_EVERY: i64 = 100;

/// Which notification endpoint / kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    Payment,
    Refund,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Payment => "payment",
            NotificationKind::Refund => "refund",
        }
    }

    /// The endpoint name used in the forensic table (`/wxpay/notify/pay` → "pay").
    pub fn endpoint(self) -> &'static str {
        match self {
            NotificationKind::Payment => "pay",
            NotificationKind::Refund => "refund",
        }
    }
}

/// A genuine notification to keep.
pub struct NewNotification<'a> {
    pub kind: NotificationKind,
    pub mch_id: &'a str,
    pub appid: Option<&'a str>,
    /// out_trade_no (payment) or out_refund_no (refund); empty when absent.
    pub reference: &'a str,
    /// The body as received.
    pub body: &'a str,
    /// The decrypted req_info of a refund; `None` for a payment, whose fields are exactly
    /// its body's (migration `20261201000200`).
    pub fields: Option<Value>,
    /// The outcome stored with a first delivery: the expected one (`applied`), so the common
    /// path costs no second statement; [`set_outcome`] corrects it in the same transaction
    /// when settlement ends otherwise, so no reader ever sees a wrong value.
    pub expected_outcome: &'a str,
}

/// A stored notification: its id and whether this delivery was the first of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredNotification {
    pub id: i64,
    pub first_delivery: bool,
}

/// Lowercase hex SHA-256 of a body.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Keeps a genuine notification (or counts a redelivery) in the caller's transaction. The
/// row lock taken here also serializes concurrent identical deliveries.
pub async fn record(conn: &mut PgConnection, n: &NewNotification<'_>) -> Result<StoredNotification, StoreError> {
    let (id, inserted): (i64, bool) = sqlx::query_as(
        "INSERT INTO wxpay_notifications (kind, mch_id, appid, reference, body_sha256, body, fields, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (kind, body_sha256) DO UPDATE
            SET deliveries = wxpay_notifications.deliveries + 1, last_delivered_at = now()
         RETURNING id, (xmax = 0) AS inserted",
    )
    .bind(n.kind.as_str())
    .bind(n.mch_id)
    .bind(n.appid)
    .bind(n.reference)
    .bind(body_sha256(n.body.as_bytes()))
    .bind(n.body)
    .bind(&n.fields)
    .bind(n.expected_outcome)
    .fetch_one(conn)
    .await?;
    Ok(StoredNotification { id, first_delivery: inserted })
}

/// Counts one more delivery of a body that was already applied (stored with outcome
/// `applied`), in one statement that locks only that notification row, and answers whether
/// it was one. These are WeChat's retries of notifications whose SUCCESS it did not get:
/// the first delivery's transaction committed everything, so nothing else is to be done,
/// and the order's row is not touched. Anything else (`false`) takes the full path.
pub async fn count_applied_repeat(
    conn: &mut PgConnection,
    kind: NotificationKind,
    body: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE wxpay_notifications SET deliveries = deliveries + 1, last_delivered_at = now()
          WHERE kind = $1 AND body_sha256 = $2 AND outcome = 'applied'",
    )
    .bind(kind.as_str())
    .bind(body_sha256(body.as_bytes()))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records what settling a notification did the first time (`applied`, `mismatch`, …).
pub async fn set_outcome(conn: &mut PgConnection, id: i64, outcome: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE wxpay_notifications SET outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

/// A refused body for the forensic table.
pub struct Rejected<'a> {
    pub kind: NotificationKind,
    /// Stable code: too_large, not_utf8, doctype, malformed, unknown_merchant, bad_signature…
    pub reason: &'a str,
    /// Safe to store: no secrets (error texts from the decoder/verifier only).
    pub detail: &'a str,
    pub remote_addr: Option<&'a str>,
    /// The body as received (only the head is stored). For an oversize body, whatever was
    /// read before the limit tripped.
    pub body: &'a [u8],
    /// The declared or observed full size, which may exceed `body.len()`.
    pub body_size: u64,
}

/// Stores a refused body (head only), outside any business transaction. Returns the row id.
pub async fn record_rejected(pool: &PgPool, r: &Rejected<'_>) -> Result<i64, StoreError> {
    let head = &r.body[..r.body.len().min(REJECTED_HEAD_BYTES)];
    let detail: String = r.detail.chars().take(512).collect();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO wxpay_rejected_notifications (endpoint, reason, detail, remote_addr, body_size, body_sha256, body_head)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(r.kind.endpoint())
    .bind(r.reason)
    .bind(detail)
    .bind(r.remote_addr)
    .bind(i64::try_from(r.body_size).unwrap_or(i64::MAX))
    .bind(body_sha256(r.body))
    .bind(head)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Deletes all but the newest `keep` forensic rows. Returns how many were deleted.
pub async fn prune_rejected(pool: &PgPool, keep: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM wxpay_rejected_notifications
          WHERE id <= (SELECT coalesce(max(id), 0) FROM wxpay_rejected_notifications) - $1",
    )
    .bind(keep)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Counts of rejected rows by reason (for tests and operators).
pub async fn rejected_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT reason, count(*) FROM wxpay_rejected_notifications GROUP BY reason ORDER BY reason")
        .fetch_all(pool)
        .await?)
}
