//! Refunds of paid orders. The amount rule — the refunds of an order never add up to more
//! than it was paid — holds under concurrency because creation locks the order row
//! (`FOR UPDATE`) and reserves the amount in `orders.refunded_amount` in the same
//! transaction (a CHECK keeps `refunded_amount <= amount` as the last line). The reservation
//! is released exactly once, when a refund becomes `failed` (here) or `closed` (in
//! [`crate::settle`]). Final WeChat results go through [`crate::settle::apply_refund_result`].

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{RefundStatus, State, check_transition};
use crate::orders::Order;
use crate::{Fen, StoreError};

/// A refund as stored, with its order's number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: i64,
    pub out_refund_no: String,
    pub order_id: i64,
    pub out_trade_no: String,
    pub mch_id: String,
    pub client_id: Option<Uuid>,
    pub amount: Fen,
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub refund_recv_account: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    out_refund_no: String,
    order_id: i64,
    out_trade_no: String,
    mch_id: String,
    client_id: Option<Uuid>,
    amount: i64,
    reason: Option<String>,
    status: String,
    refund_id: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    succeeded_at: Option<DateTime<Utc>>,
    refund_recv_account: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for Refund {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Refund, StoreError> {
        let status = RefundStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Conflict(format!("unknown refund status {:?}", r.status)))?;
        Ok(Refund {
            id: r.id,
            out_refund_no: r.out_refund_no,
            order_id: r.order_id,
            out_trade_no: r.out_trade_no,
            mch_id: r.mch_id,
            client_id: r.client_id,
            amount: Fen::new(r.amount),
            reason: r.reason,
            status,
            refund_id: r.refund_id,
            failure_code: r.failure_code,
            failure_message: r.failure_message,
            succeeded_at: r.succeeded_at,
            refund_recv_account: r.refund_recv_account,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const SELECT: &str = "SELECT r.id, r.out_refund_no, r.order_id, o.out_trade_no, o.mch_id, r.client_id, r.amount,
    r.reason, r.status, r.refund_id, r.failure_code, r.failure_message, r.succeeded_at, r.refund_recv_account,
    r.created_at, r.updated_at FROM refunds r JOIN orders o ON o.id = r.order_id";

/// Why a refund could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the refund exceeds what is left to refund ({refundable} fen)")]
    ExceedsRefundable { refundable: Fen },
    #[error("out_refund_no {0} is taken")]
    NumberTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a `pending` refund of a paid order and reserves its amount. `order` must have
/// been read with [`crate::orders::lock`] in this transaction.
pub async fn create_pending(
    conn: &mut PgConnection,
    order: &Order,
    out_refund_no: &str,
    amount: Fen,
    reason: Option<&str>,
    client_id: Option<Uuid>,
) -> Result<Refund, CreateError> {
    if amount > order.refundable() {
        return Err(CreateError::ExceedsRefundable { refundable: order.refundable() });
    }
    let inserted = sqlx::query(
        "INSERT INTO refunds (out_refund_no, order_id, client_id, amount, reason, status)
         VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT (out_refund_no) DO NOTHING",
    )
    .bind(out_refund_no)
    .bind(order.id)
    .bind(client_id)
    .bind(amount.get())
    .bind(reason)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    if inserted.rows_affected() != 1 {
        return Err(CreateError::NumberTaken(out_refund_no.into()));
    }
    sqlx::query("UPDATE orders SET refunded_amount = refunded_amount + $2 WHERE id = $1")
        .bind(order.id)
        .bind(amount.get())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from)?;
    Ok(find(&mut *conn, out_refund_no).await?.ok_or_else(|| StoreError::NotFound(out_refund_no.into()))?)
}

pub async fn find<'c>(e: impl PgExecutor<'c>, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE r.out_refund_no = $1")))
        .bind(out_refund_no)
        .fetch_optional(e)
        .await?;
    row.map(Refund::try_from).transpose()
}

/// The refund, locked for this transaction (lock its order first when both are needed).
pub async fn lock(conn: &mut PgConnection, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE r.out_refund_no = $1 FOR UPDATE OF r")))
            .bind(out_refund_no)
            .fetch_optional(conn)
            .await?;
    row.map(Refund::try_from).transpose()
}

/// All refunds of an order, oldest first.
pub async fn for_order<'c>(e: impl PgExecutor<'c>, order_id: i64) -> Result<Vec<Refund>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE r.order_id = $1 ORDER BY r.id")))
        .bind(order_id)
        .fetch_all(e)
        .await?;
    rows.into_iter().map(Refund::try_from).collect()
}

/// WeChat accepted the refund (`refund_id` is its number); the result comes later.
pub async fn set_processing(conn: &mut PgConnection, r: &Refund, refund_id: &str) -> Result<(), StoreError> {
    if r.status == RefundStatus::Processing {
        return Ok(());
    }
    check_transition(r.status, RefundStatus::Processing)?;
    let done = sqlx::query(
        "UPDATE refunds SET status = 'processing', refund_id = $3, failure_code = NULL, failure_message = NULL
          WHERE id = $1 AND status = $2",
    )
    .bind(r.id)
    .bind(r.status.as_str())
    .bind(refund_id)
    .execute(conn)
    .await?;
    changed(done.rows_affected(), r)
}

/// The call may or may not have reached WeChat; retry with the same number or query.
pub async fn set_unknown(conn: &mut PgConnection, r: &Refund, reason: &str) -> Result<(), StoreError> {
    check_transition(r.status, RefundStatus::Unknown)?;
    let done = sqlx::query("UPDATE refunds SET status = 'unknown', failure_message = $3 WHERE id = $1 AND status = $2")
        .bind(r.id)
        .bind(r.status.as_str())
        .bind(reason)
        .execute(conn)
        .await?;
    changed(done.rows_affected(), r)
}

/// WeChat refused the refund for good: nothing was refunded, the reservation is released.
/// Callers only get here for a refusal of a call made while WeChat held nothing for this
/// number (the first call, or the one after refundquery's REFUNDNOTEXIST); a refusal after
/// an unclear call is [`set_unknown`], settled later by refundquery.
pub async fn set_failed(conn: &mut PgConnection, r: &Refund, code: &str, message: &str) -> Result<(), StoreError> {
    check_transition(r.status, RefundStatus::Failed)?;
    let done = sqlx::query(
        "UPDATE refunds SET status = 'failed', failure_code = $3, failure_message = $4 WHERE id = $1 AND status = $2",
    )
    .bind(r.id)
    .bind(r.status.as_str())
    .bind(code)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    changed(done.rows_affected(), r)?;
    sqlx::query("UPDATE orders SET refunded_amount = refunded_amount - $2 WHERE id = $1")
        .bind(r.order_id)
        .bind(r.amount.get())
        .execute(conn)
        .await?;
    Ok(())
}

fn changed(rows: u64, r: &Refund) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("refund {} changed concurrently", r.out_refund_no)))
    }
}

/// Refunds still waiting for WeChat's answer and not touched for `older_than_secs`, oldest
/// first: what a follow-up pass queries.
pub async fn open_refunds<'c>(
    e: impl PgExecutor<'c>,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<Refund>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE r.status IN ('pending', 'processing', 'unknown')
            AND r.updated_at < now() - make_interval(secs => $1) ORDER BY r.updated_at LIMIT $2"
    )))
    .bind(older_than_secs)
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.into_iter().map(Refund::try_from).collect()
}

/// Claims the oldest open refund (pending, processing, unknown) untouched for
/// `older_than_secs`, for a follow-up: bumping `updated_at` is the lease, so other workers
/// skip it for that long. No lock is held afterwards (the follow-up calls WeChat, and the
/// settle path locks the order before the refund). Returns its out_refund_no.
pub async fn claim_open<'c>(e: impl PgExecutor<'c>, older_than_secs: f64) -> Result<Option<String>, StoreError> {
    let claimed: Option<(String,)> = sqlx::query_as(
        "UPDATE refunds SET updated_at = now()
          WHERE id = (SELECT id FROM refunds
                       WHERE status IN ('pending', 'processing', 'unknown')
                         AND updated_at < now() - make_interval(secs => $1)
                       ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING out_refund_no",
    )
    .bind(older_than_secs)
    .fetch_optional(e)
    .await?;
    Ok(claimed.map(|(no,)| no))
}
