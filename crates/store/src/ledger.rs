//! The append-only double-entry ledger.
//!
//! Every money movement is one ledger transaction of two or more entries that sum to zero
//! (positive = debit). The database enforces it: entries can't be updated or deleted, and a
//! deferred trigger refuses to commit an unbalanced transaction. A transaction is keyed by
//! `(kind, reference)` — e.g. `("payment", out_trade_no)` — so posting a movement twice is a
//! no-op that reports [`Posting::AlreadyPosted`], which makes every caller idempotent.
//!
//! Accounts are per merchant: `wechat:<mch_id>` is the money WeChat holds for us (the
//! merchant balance); the others are where it came from or went to.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::{Fen, StoreError};

/// The kinds of movement, one per business event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A user paid an order: wechat balance up, sales up.
    Payment,
    /// A refund reached the user.
    Refund,
    /// A payout to a user's balance was paid.
    Payout,
    /// A red packet was sent (the money left the merchant balance).
    RedPacketSent,
    /// An unclaimed red packet came back after 24 h.
    RedPacketRefund,
    /// WeChat's fee for a day, posted by reconciliation from the bill.
    Fee,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Payment => "payment",
            Kind::Refund => "refund",
            Kind::Payout => "payout",
            Kind::RedPacketSent => "redpack_sent",
            Kind::RedPacketRefund => "redpack_refund",
            Kind::Fee => "fee",
        }
    }
}

/// Account names, built in one place so reports and postings agree.
pub mod account {
    pub fn wechat(mch_id: &str) -> String {
        format!("wechat:{mch_id}")
    }
    pub fn sales(mch_id: &str) -> String {
        format!("sales:{mch_id}")
    }
    pub fn refunds(mch_id: &str) -> String {
        format!("refunds:{mch_id}")
    }
    pub fn payouts(mch_id: &str) -> String {
        format!("payouts:{mch_id}")
    }
    pub fn redpacks(mch_id: &str) -> String {
        format!("redpacks:{mch_id}")
    }
    pub fn fees(mch_id: &str) -> String {
        format!("fees:{mch_id}")
    }
}

/// What a posting did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posting {
    Posted { transaction_id: i64 },
    AlreadyPosted,
}

/// One movement of `amount` from `credit` to `debit` (both get an entry).
pub struct Movement<'a> {
    pub kind: Kind,
    pub reference: &'a str,
    pub mch_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub memo: &'a str,
    pub debit: String,
    pub credit: String,
    pub amount: Fen,
}

impl Movement<'_> {
    /// The standard movement for each kind: which accounts move, and which way.
    pub fn standard<'a>(
        kind: Kind,
        reference: &'a str,
        mch_id: &'a str,
        amount: Fen,
        occurred_at: DateTime<Utc>,
    ) -> Movement<'a> {
        let (debit, credit) = match kind {
            Kind::Payment => (account::wechat(mch_id), account::sales(mch_id)),
            Kind::Refund => (account::refunds(mch_id), account::wechat(mch_id)),
            Kind::Payout => (account::payouts(mch_id), account::wechat(mch_id)),
            Kind::RedPacketSent => (account::redpacks(mch_id), account::wechat(mch_id)),
            Kind::RedPacketRefund => (account::wechat(mch_id), account::redpacks(mch_id)),
            Kind::Fee => (account::fees(mch_id), account::wechat(mch_id)),
        };
        Movement { kind, reference, mch_id, occurred_at, memo: "", debit, credit, amount }
    }
}

/// Posts a balanced two-entry transaction, once. Call inside the caller's transaction.
/// A non-positive amount is refused: the direction of money is the accounts', not the sign's.
pub async fn post(conn: &mut PgConnection, m: &Movement<'_>) -> Result<Posting, StoreError> {
    if !m.amount.is_positive() {
        return Err(StoreError::Conflict(format!("ledger amount must be positive, got {}", m.amount)));
    }
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO ledger_transactions (kind, reference, mch_id, occurred_at, memo)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, reference) DO NOTHING
         RETURNING id",
    )
    .bind(m.kind.as_str())
    .bind(m.reference)
    .bind(m.mch_id)
    .bind(m.occurred_at)
    .bind(m.memo)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((txn,)) = row else {
        return Ok(Posting::AlreadyPosted);
    };
    sqlx::query("INSERT INTO ledger_entries (transaction_id, account, amount) VALUES ($1, $2, $3), ($1, $4, $5)")
        .bind(txn)
        .bind(&m.debit)
        .bind(m.amount.get())
        .bind(&m.credit)
        .bind(-m.amount.get())
        .execute(&mut *conn)
        .await?;
    Ok(Posting::Posted { transaction_id: txn })
}

/// The balance of an account (sum of its entries).
pub async fn balance(conn: &mut PgConnection, account: &str) -> Result<Fen, StoreError> {
    let (sum,): (Option<i64>,) = sqlx::query_as("SELECT sum(amount)::bigint FROM ledger_entries WHERE account = $1")
        .bind(account)
        .fetch_one(conn)
        .await?;
    Ok(Fen::new(sum.unwrap_or(0)))
}

/// Ledger transactions whose entries do not sum to zero. Always empty unless the database's
/// own check was bypassed; tests assert it after every scenario.
pub async fn unbalanced_transactions(conn: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT t.id FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
         GROUP BY t.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// How many ledger transactions of a kind exist for a reference (0 or 1 by construction).
pub async fn count_postings(conn: &mut PgConnection, kind: Kind, reference: &str) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM ledger_transactions WHERE kind = $1 AND reference = $2")
        .bind(kind.as_str())
        .bind(reference)
        .fetch_one(conn)
        .await?;
    Ok(n)
}
