//! Payment orders. State changes go through [`check_transition`] (the allowed transitions
//! live in [`crate::domain`]); becoming `paid` is not here on purpose: only
//! [`crate::settle::apply_payment`] does that, with the ledger posting and the webhook.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{OrderStatus, State, check_transition};
use crate::idempotency::Claim;
use crate::{Fen, StoreError};

/// An order as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub out_trade_no: String,
    pub appid: String,
    pub mch_id: String,
    pub client_id: Option<Uuid>,
    pub openid: String,
    pub amount: Fen,
    pub description: String,
    pub attach: Option<String>,
    pub status: OrderStatus,
    pub sign_type: String,
    pub prepay_id: Option<String>,
    pub prepay_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub cash_fee: Option<Fen>,
    pub closed_at: Option<DateTime<Utc>>,
    pub paid_after_close: bool,
    /// Reserved by refunds that are not closed or failed (see `settle`'s reservation rule).
    pub refunded_amount: Fen,
    pub last_error: Option<String>,
    pub queried_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// What can still be refunded.
    pub fn refundable(&self) -> Fen {
        Fen::new(self.amount.get() - self.refunded_amount.get())
    }

    pub fn is_open(&self) -> bool {
        matches!(self.status, OrderStatus::Created | OrderStatus::Prepaid)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    out_trade_no: String,
    appid: String,
    mch_id: String,
    client_id: Option<Uuid>,
    openid: String,
    amount: i64,
    description: String,
    attach: Option<String>,
    status: String,
    sign_type: String,
    prepay_id: Option<String>,
    prepay_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    transaction_id: Option<String>,
    paid_at: Option<DateTime<Utc>>,
    cash_fee: Option<i64>,
    closed_at: Option<DateTime<Utc>>,
    paid_after_close: bool,
    refunded_amount: i64,
    last_error: Option<String>,
    queried_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for Order {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Order, StoreError> {
        let status = OrderStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Conflict(format!("unknown order status {:?}", r.status)))?;
        Ok(Order {
            id: r.id,
            out_trade_no: r.out_trade_no,
            appid: r.appid,
            mch_id: r.mch_id,
            client_id: r.client_id,
            openid: r.openid,
            amount: Fen::new(r.amount),
            description: r.description,
            attach: r.attach,
            status,
            sign_type: r.sign_type,
            prepay_id: r.prepay_id,
            prepay_at: r.prepay_at,
            expires_at: r.expires_at,
            transaction_id: r.transaction_id,
            paid_at: r.paid_at,
            cash_fee: r.cash_fee.map(Fen::new),
            closed_at: r.closed_at,
            paid_after_close: r.paid_after_close,
            refunded_amount: Fen::new(r.refunded_amount),
            last_error: r.last_error,
            queried_at: r.queried_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "id, out_trade_no, appid, mch_id, client_id, openid, amount, description, attach, status,
    sign_type, prepay_id, prepay_at, expires_at, transaction_id, paid_at, cash_fee, closed_at, paid_after_close,
    refunded_amount, last_error, queried_at, created_at, updated_at";

/// What a new order needs.
#[derive(Clone, Debug)]
pub struct NewOrder<'a> {
    pub out_trade_no: &'a str,
    pub appid: &'a str,
    pub mch_id: &'a str,
    pub client_id: Option<Uuid>,
    pub openid: &'a str,
    pub amount: Fen,
    pub description: &'a str,
    pub attach: Option<&'a str>,
    pub sign_type: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Inserts an order in state `created`. A taken out_trade_no is [`StoreError::Conflict`].
pub async fn insert(conn: &mut PgConnection, o: &NewOrder<'_>) -> Result<Order, StoreError> {
    let row: Result<Row, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, attach, status,
                             sign_type, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'created', $9, $10) RETURNING {COLUMNS}"
    )))
    .bind(o.out_trade_no)
    .bind(o.appid)
    .bind(o.mch_id)
    .bind(o.client_id)
    .bind(o.openid)
    .bind(o.amount.get())
    .bind(o.description)
    .bind(o.attach)
    .bind(o.sign_type)
    .bind(o.expires_at)
    .fetch_one(conn)
    .await;
    match row {
        Ok(r) => r.try_into(),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(format!("out_trade_no {} is taken", o.out_trade_no)))
        }
        Err(e) => Err(e.into()),
    }
}

/// An owned [`NewOrder`], for [`claim_and_insert_group`] (requests cross tasks to be grouped).
#[derive(Clone, Debug)]
pub struct NewOrderOwned {
    pub out_trade_no: String,
    pub appid: String,
    pub mch_id: String,
    pub client_id: Option<Uuid>,
    pub openid: String,
    pub amount: Fen,
    pub description: String,
    pub attach: Option<String>,
    pub sign_type: String,
    pub expires_at: DateTime<Utc>,
}

impl NewOrderOwned {
    pub fn new(o: &NewOrder<'_>) -> NewOrderOwned {
        NewOrderOwned {
            out_trade_no: o.out_trade_no.to_owned(),
            appid: o.appid.to_owned(),
            mch_id: o.mch_id.to_owned(),
            client_id: o.client_id,
            openid: o.openid.to_owned(),
            amount: o.amount,
            description: o.description.to_owned(),
            attach: o.attach.map(str::to_owned),
            sign_type: o.sign_type.to_owned(),
            expires_at: o.expires_at,
        }
    }
}

/// What [`claim_and_insert_group`] did for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupInsert {
    /// The order was inserted, and its Idempotency-Key (if it came with one) claimed for it.
    Inserted(Box<Order>),
    /// The key was claimed for this request, but the out_trade_no is taken: the caller holds
    /// the key and takes [`insert`], which reports the conflict.
    Claimed,
    /// Nothing was written for this request: its key is already there (or it shared a key or
    /// a number with an earlier request of the group), or, without a key, its number is
    /// taken. The caller claims the key with `idempotency::begin` (when it has one), then
    /// takes [`insert`].
    Skipped,
}

/// The group form of `idempotency::begin`'s claim followed by [`insert`] (see
/// [`crate::group_commit`]): claims the requests' Idempotency-Keys and inserts their orders
/// in one statement and one durable commit. An order is inserted only when its key (if it
/// has one) was newly claimed, so a repeated request never reaches the orders table here.
/// Answers one [`GroupInsert`] per input, in order. On `Err` nothing was written (or, if
/// the connection broke during the commit, possibly everything: `begin` then finds the key
/// in progress, and [`insert`] finds the number taken and the caller's same-request check
/// applies).
///
/// No plan choice here (two inserts arbitrated by their unique indexes, joins between the
/// statement's own rows only), so it is prepared (see `group_commit` on plans).
pub async fn claim_and_insert_group(
    conn: &mut PgConnection,
    requests: &[(NewOrderOwned, Option<Claim>)],
) -> Result<Vec<GroupInsert>, StoreError> {
    // A number or key seen earlier in the group is left out: one statement cannot tell two
    // requests with the same number apart.
    let mut numbers = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    let included: Vec<bool> = requests
        .iter()
        .map(|(o, c)| {
            let fresh_key = c.as_ref().is_none_or(|c| keys.insert((c.client_id, c.key.as_str())));
            numbers.insert(o.out_trade_no.as_str()) && fresh_key
        })
        .collect();
    let group: Vec<&(NewOrderOwned, Option<Claim>)> =
        requests.iter().zip(&included).filter(|(_, inc)| **inc).map(|(r, _)| r).collect();
    let col = |f: fn(&NewOrderOwned) -> &str| group.iter().map(|(o, _)| f(o)).collect::<Vec<&str>>();
    let claim = |f: fn(&Claim) -> &str| group.iter().map(|(_, c)| c.as_ref().map(f)).collect::<Vec<Option<&str>>>();
    let rows: Vec<sqlx::postgres::PgRow> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bigint[],
                                  $7::text[], $8::text[], $9::text[], $10::timestamptz[],
                                  $11::uuid[], $12::text[], $13::text[], $14::text[], $15::text[])
               AS i(out_trade_no, appid, mch_id, client_id, openid, amount, description, attach, sign_type,
                    expires_at, key_client, key, method, path, request_hash)
         ), claimed AS (
             INSERT INTO idempotency_keys (client_id, key, method, path, request_hash)
             SELECT key_client, key, method, path, request_hash FROM input WHERE key IS NOT NULL
             ON CONFLICT (client_id, key) DO NOTHING
             RETURNING client_id, key
         ), inserted AS (
             INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, attach,
                                 status, sign_type, expires_at)
             SELECT i.out_trade_no, i.appid, i.mch_id, i.client_id, i.openid, i.amount, i.description, i.attach,
                    'created', i.sign_type, i.expires_at
               FROM input i
              WHERE i.key IS NULL
                 OR EXISTS (SELECT 1 FROM claimed c WHERE c.client_id = i.key_client AND c.key = i.key)
             ON CONFLICT (out_trade_no) DO NOTHING
             RETURNING {COLUMNS}
         )
         SELECT i.out_trade_no AS input_no,
                EXISTS (SELECT 1 FROM claimed c WHERE c.client_id = i.key_client AND c.key = i.key) AS claimed,
                o.*
           FROM input i LEFT JOIN inserted o ON o.out_trade_no = i.out_trade_no"
    )))
    .bind(col(|o| &o.out_trade_no))
    .bind(col(|o| &o.appid))
    .bind(col(|o| &o.mch_id))
    .bind(group.iter().map(|(o, _)| o.client_id).collect::<Vec<_>>())
    .bind(col(|o| &o.openid))
    .bind(group.iter().map(|(o, _)| o.amount.get()).collect::<Vec<_>>())
    .bind(col(|o| &o.description))
    .bind(group.iter().map(|(o, _)| o.attach.as_deref()).collect::<Vec<_>>())
    .bind(col(|o| &o.sign_type))
    .bind(group.iter().map(|(o, _)| o.expires_at).collect::<Vec<_>>())
    .bind(group.iter().map(|(_, c)| c.as_ref().map(|c| c.client_id)).collect::<Vec<_>>())
    .bind(claim(|c| &c.key))
    .bind(claim(|c| &c.method))
    .bind(claim(|c| &c.path))
    .bind(claim(|c| &c.request_hash))
    .fetch_all(conn)
    .await?;
    let mut answers = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        use sqlx::{FromRow, Row as _};
        let number: String = row.try_get("input_no")?;
        let answer = if row.try_get::<Option<i64>, _>("id")?.is_some() {
            GroupInsert::Inserted(Box::new(Order::try_from(Row::from_row(&row)?)?))
        } else if row.try_get::<bool, _>("claimed")? {
            GroupInsert::Claimed
        } else {
            GroupInsert::Skipped
        };
        answers.insert(number, answer);
    }
    Ok(requests
        .iter()
        .zip(included)
        .map(|((o, _), inc)| if inc { answers.remove(&o.out_trade_no) } else { None }.unwrap_or(GroupInsert::Skipped))
        .collect())
}

/// The order with this out_trade_no.
pub async fn find<'c>(e: impl PgExecutor<'c>, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE out_trade_no = $1")))
            .bind(out_trade_no)
            .fetch_optional(e)
            .await?;
    row.map(Order::try_from).transpose()
}

/// The order, locked (`FOR UPDATE`) until the caller's transaction ends. Refund creation
/// and settlement lock the order first, so they serialize per order.
pub async fn lock(conn: &mut PgConnection, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE out_trade_no = $1 FOR UPDATE")))
            .bind(out_trade_no)
            .fetch_optional(conn)
            .await?;
    row.map(Order::try_from).transpose()
}

/// The next open order past its expiry that no other worker holds, locked. Orders queried
/// after `queried_before` are skipped, so one that WeChat did not answer for is retried on a
/// later pass instead of blocking the batch.
pub async fn lock_next_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    queried_before: DateTime<Utc>,
) -> Result<Option<Order>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE open AND expires_at <= $1
            AND (queried_at IS NULL OR queried_at < $2)
          ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(now)
    .bind(queried_before)
    .fetch_optional(conn)
    .await?;
    row.map(Order::try_from).transpose()
}

async fn transition(
    conn: &mut PgConnection,
    order: &Order,
    to: OrderStatus,
    sql: &'static str,
    bind: Option<&str>,
) -> Result<(), StoreError> {
    check_transition(order.status, to)?;
    let done = sqlx::query(sql).bind(order.id).bind(order.status.as_str()).bind(bind).execute(conn).await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!("order {} changed concurrently", order.out_trade_no)));
    }
    Ok(())
}

/// `created`/`prepaid` → `prepaid` with WeChat's prepay_id.
pub async fn set_prepaid(conn: &mut PgConnection, order: &Order, prepay_id: &str) -> Result<(), StoreError> {
    transition(
        conn,
        order,
        OrderStatus::Prepaid,
        "UPDATE orders SET status = 'prepaid', prepay_id = $3, prepay_at = now(), last_error = NULL
          WHERE id = $1 AND status = $2",
        Some(prepay_id),
    )
    .await
}

/// Records WeChat's prepay_id on an open order in one statement (no read first): the
/// `WHERE` admits exactly the transitions `created → prepaid` and `prepaid → prepaid`
/// that [`OrderStatus::can_become`] allows. Returns false when the order was no longer
/// open (paid or closed meanwhile), which is not an error: that state stands.
pub async fn mark_prepaid<'c>(e: impl PgExecutor<'c>, out_trade_no: &str, prepay_id: &str) -> Result<bool, StoreError> {
    debug_assert!(OrderStatus::Created.can_become(OrderStatus::Prepaid));
    debug_assert!(OrderStatus::Prepaid.can_become(OrderStatus::Prepaid));
    let done = sqlx::query(
        "UPDATE orders SET status = 'prepaid', prepay_id = $2, prepay_at = now(), last_error = NULL
          WHERE out_trade_no = $1 AND status IN ('created', 'prepaid')",
    )
    .bind(out_trade_no)
    .bind(prepay_id)
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The group form of [`mark_prepaid`]: (out_trade_no, prepay_id) pairs in one statement.
/// Answers, per input, whether that order was marked (false: no longer open, as for
/// [`mark_prepaid`]). On `Err` the caller may repeat each with [`mark_prepaid`] (the mark is
/// idempotent).
pub async fn mark_prepaid_group<'c>(
    e: impl PgExecutor<'c>,
    marks: &[(String, String)],
) -> Result<Vec<bool>, StoreError> {
    let numbers: Vec<&str> = marks.iter().map(|m| m.0.as_str()).collect();
    let prepay: Vec<&str> = marks.iter().map(|m| m.1.as_str()).collect();
    let done: Vec<(String,)> = sqlx::query_as(
        "UPDATE orders o SET status = 'prepaid', prepay_id = i.prepay_id, prepay_at = now(), last_error = NULL
           FROM unnest($1::text[], $2::text[]) AS i(out_trade_no, prepay_id)
          WHERE o.out_trade_no = i.out_trade_no AND o.status IN ('created', 'prepaid')
         RETURNING o.out_trade_no",
    )
    .bind(&numbers)
    .bind(&prepay)
    .fetch_all(e)
    .await?;
    let done: std::collections::HashSet<String> = done.into_iter().map(|(n,)| n).collect();
    Ok(marks.iter().map(|m| done.contains(&m.0)).collect())
}

/// Closed at WeChat (or never known to WeChat): no payment can arrive any more.
pub async fn set_closed(conn: &mut PgConnection, order: &Order) -> Result<(), StoreError> {
    transition(
        conn,
        order,
        OrderStatus::Closed,
        "UPDATE orders SET status = 'closed', closed_at = now(), last_error = coalesce($3, last_error)
          WHERE id = $1 AND status = $2",
        None,
    )
    .await
}

/// WeChat refused the order for good (e.g. a parameter it rejects); `error` says why.
pub async fn set_failed(conn: &mut PgConnection, order: &Order, error: &str) -> Result<(), StoreError> {
    transition(
        conn,
        order,
        OrderStatus::Failed,
        "UPDATE orders SET status = 'failed', last_error = $3 WHERE id = $1 AND status = $2",
        Some(error),
    )
    .await
}

/// Remembers the last upstream problem (shown to operators; the state is unchanged).
pub async fn record_error<'c>(e: impl PgExecutor<'c>, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE orders SET last_error = $2 WHERE id = $1").bind(id).bind(error).execute(e).await?;
    Ok(())
}

/// Remembers that orderquery was asked now (reads settle a stale order at most this often).
pub async fn mark_queried<'c>(e: impl PgExecutor<'c>, id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE orders SET queried_at = now() WHERE id = $1").bind(id).execute(e).await?;
    Ok(())
}

/// Orders per status (for the metrics endpoint).
pub async fn count_by_status<'c>(e: impl PgExecutor<'c>) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status").fetch_all(e).await?)
}

/// The payment facts an `orderquery` answer proves, for [`crate::settle::apply_payment`]:
/// `None` unless the order is paid (SUCCESS, or REFUND — paid, then refunded). `time_end` is
/// missing only on malformed answers; the query time stands in then.
pub fn facts_from_query(order: &Order, q: &wxpay::api::OrderQueryResponse) -> Option<crate::settle::PaymentFacts> {
    if !q.trade_state.is_paid() {
        return None;
    }
    Some(crate::settle::PaymentFacts {
        out_trade_no: q.out_trade_no.clone().unwrap_or_else(|| order.out_trade_no.clone()),
        mch_id: order.mch_id.clone(),
        appid: order.appid.clone(),
        // orderquery answers carry the payer's openid; when absent, WeChat's answer is for
        // the order we asked about, so ours is the only one it can be.
        openid: q.openid.clone().unwrap_or_else(|| order.openid.clone()),
        total_fee: q.total_fee?,
        cash_fee: q.cash_fee,
        transaction_id: q.transaction_id.clone()?,
        paid_at: q.time_end.unwrap_or_else(Utc::now),
        bank_type: q.bank_type.clone(),
        source: crate::settle::Source::OrderQuery,
    })
}
