//! Amount rules and daily limits for payouts and red packets, shared by both products.
//!
//! The limits themselves are configuration ([`Limits`]); this module only enforces them. A
//! request holds ("reserves") its amount in two counters for its Asia/Shanghai day — the
//! merchant's total and the user's total and count — from creation until it is rejected or
//! finally fails. Reserving is one conditional upsert per counter:
//!
//! ```sql
//! INSERT … ON CONFLICT DO UPDATE SET amount = amount + $new … WHERE amount + $new <= $limit
//! ```
//!
//! Postgres locks the counter row for the upsert and evaluates the `WHERE` on its latest
//! version, so concurrent requests queue on the row and none can push a counter past its
//! limit. The merchant counter is always taken before the user's, so two transactions never
//! wait on each other in opposite orders.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;

use crate::{Fen, StoreError};

/// The two products with separate limits at WeChat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    Payout,
    Redpack,
}

impl Product {
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Payout => "payout",
            Product::Redpack => "redpack",
        }
    }
}

/// Configured rules for one product. Amounts are per request; daily figures per
/// Asia/Shanghai day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min_amount: Fen,
    pub max_amount: Fen,
    /// Requests with an amount strictly above this wait for an approver.
    pub approval_threshold: Fen,
    /// What one API key (the maker) may have approved automatically (at or below
    /// `approval_threshold`) per day; a request that would pass it waits for an approver.
    pub auto_approve_daily_per_maker: Fen,
    pub openid_daily_amount: Fen,
    pub openid_daily_count: i32,
    pub merchant_daily_amount: Fen,
}

/// A request refused by a rule; `code` is stable and reaches the API's error body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RuleViolation {
    pub code: &'static str,
    pub message: String,
}

impl RuleViolation {
    pub fn new(code: &'static str, message: impl Into<String>) -> RuleViolation {
        RuleViolation { code, message: message.into() }
    }
}

/// Errors of operations that apply rules: a refused rule, or the store failing.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RuleError {
    fn from(e: sqlx::Error) -> RuleError {
        RuleError::Store(StoreError::Db(e))
    }
}

/// The day WeChat counts a limit in: the Asia/Shanghai calendar day of `t`.
pub fn shanghai_day(t: DateTime<Utc>) -> NaiveDate {
    // UTC+8 all year: Shanghai has had no daylight saving time since 1991.
    (t + chrono::Duration::hours(8)).date_naive()
}

/// The per-request amount rule.
pub fn check_amount(limits: &Limits, amount: Fen) -> Result<(), RuleViolation> {
    if amount < limits.min_amount {
        return Err(RuleViolation::new(
            "amount_below_minimum",
            format!("amount {amount} fen is below the minimum {} fen", limits.min_amount),
        ));
    }
    if amount > limits.max_amount {
        return Err(RuleViolation::new(
            "amount_above_maximum",
            format!("amount {amount} fen is above the maximum {} fen", limits.max_amount),
        ));
    }
    Ok(())
}

/// One request's place in the counters.
#[derive(Clone, Copy, Debug)]
pub struct Holding<'a> {
    pub product: Product,
    pub mch_id: &'a str,
    pub openid: &'a str,
    pub day: NaiveDate,
    pub amount: Fen,
}

fn merchant_exceeded(h: &Holding<'_>, limits: &Limits) -> RuleViolation {
    RuleViolation::new(
        "merchant_daily_amount_exceeded",
        format!(
            "the merchant's {} total for {} would exceed {} fen",
            h.product.as_str(),
            h.day,
            limits.merchant_daily_amount
        ),
    )
}

fn openid_amount_exceeded(h: &Holding<'_>, limits: &Limits) -> RuleViolation {
    RuleViolation::new(
        "openid_daily_amount_exceeded",
        format!(
            "this user's {} total for {} would exceed {} fen",
            h.product.as_str(),
            h.day,
            limits.openid_daily_amount
        ),
    )
}

fn openid_count_exceeded(h: &Holding<'_>, limits: &Limits) -> RuleViolation {
    RuleViolation::new(
        "openid_daily_count_exceeded",
        format!("this user already has {} {}s on {}", limits.openid_daily_count, h.product.as_str(), h.day),
    )
}

/// Adds a request to its day's counters, or refuses with the limit it would break (and
/// leaves the counters unchanged). Call inside the request's transaction.
pub async fn reserve(conn: &mut PgConnection, h: &Holding<'_>, limits: &Limits) -> Result<(), RuleError> {
    // A first row for the day is inserted without the WHERE check: check it here.
    if h.amount > limits.merchant_daily_amount {
        return Err(merchant_exceeded(h, limits).into());
    }
    if h.amount > limits.openid_daily_amount {
        return Err(openid_amount_exceeded(h, limits).into());
    }
    if limits.openid_daily_count < 1 {
        return Err(openid_count_exceeded(h, limits).into());
    }
    let merchant: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO payout_merchant_daily AS t (product, mch_id, day, amount, count) VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (product, mch_id, day) DO UPDATE SET amount = t.amount + EXCLUDED.amount, count = t.count + 1
         WHERE t.amount + EXCLUDED.amount <= $5
         RETURNING amount",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.amount.get())
    .bind(limits.merchant_daily_amount.get())
    .fetch_optional(&mut *conn)
    .await?;
    if merchant.is_none() {
        return Err(merchant_exceeded(h, limits).into());
    }
    let user: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO payout_openid_daily AS t (product, mch_id, day, openid, amount, count)
         VALUES ($1, $2, $3, $4, $5, 1)
         ON CONFLICT (product, mch_id, day, openid) DO UPDATE SET amount = t.amount + EXCLUDED.amount, count = t.count + 1
         WHERE t.amount + EXCLUDED.amount <= $6 AND t.count + 1 <= $7
         RETURNING amount",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.openid)
    .bind(h.amount.get())
    .bind(limits.openid_daily_amount.get())
    .bind(limits.openid_daily_count)
    .fetch_optional(&mut *conn)
    .await?;
    if user.is_some() {
        return Ok(());
    }
    // Give the merchant counter back so a caller that goes on (a batch collecting every
    // row's error) sees true totals; then say which user limit it was.
    release_merchant(conn, h).await?;
    let (_, count) = openid_totals(conn, h).await?;
    if count + 1 > limits.openid_daily_count {
        Err(openid_count_exceeded(h, limits).into())
    } else {
        Err(openid_amount_exceeded(h, limits).into())
    }
}

async fn release_merchant(conn: &mut PgConnection, h: &Holding<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payout_merchant_daily SET amount = amount - $4, count = count - 1
         WHERE product = $1 AND mch_id = $2 AND day = $3",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.amount.get())
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes a request out of its day's counters (rejected, or finally failed: no money moved).
pub async fn release(conn: &mut PgConnection, h: &Holding<'_>) -> Result<(), StoreError> {
    release_merchant(conn, h).await?;
    sqlx::query(
        "UPDATE payout_openid_daily SET amount = amount - $5, count = count - 1
         WHERE product = $1 AND mch_id = $2 AND day = $3 AND openid = $4",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.openid)
    .bind(h.amount.get())
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts a request back into its day's counters without checking any limit: WeChat paid a
/// request we had released as failed (a late success), so the money moved whatever the
/// limits say. The counters must count it; an over-limit day is for an operator to see.
pub async fn hold_again(conn: &mut PgConnection, h: &Holding<'_>) -> Result<(), StoreError> {
    let unlimited = Limits {
        min_amount: Fen::new(0),
        max_amount: Fen::new(i64::MAX),
        approval_threshold: Fen::new(i64::MAX),
        auto_approve_daily_per_maker: Fen::new(i64::MAX),
        // Far above any real total, and far enough below i64::MAX that `amount + new` in
        // the counters' upsert cannot overflow.
        openid_daily_amount: Fen::new(i64::MAX / 4),
        openid_daily_count: i32::MAX - 1,
        merchant_daily_amount: Fen::new(i64::MAX / 4),
    };
    match reserve(conn, h, &unlimited).await {
        Ok(()) => Ok(()),
        Err(RuleError::Store(e)) => Err(e),
        Err(RuleError::Rule(v)) => Err(StoreError::Conflict(format!("holding a paid amount again: {v}"))),
    }
}

/// The user's (amount, count) for the holding's day.
async fn openid_totals(conn: &mut PgConnection, h: &Holding<'_>) -> Result<(i64, i32), StoreError> {
    let row: Option<(i64, i32)> = sqlx::query_as(
        "SELECT amount, count FROM payout_openid_daily WHERE product = $1 AND mch_id = $2 AND day = $3 AND openid = $4",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.openid)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// The checks an approval repeats: the amount rule, then the counters of the approval day.
/// A request whose amount is held on an earlier day moves to `today` (reserved again, so
/// checked); one held on `today` checks that its day's totals, itself included, are still
/// within the limits in force now (they may have been lowered since). Returns the day the
/// amount is now held on.
pub async fn recheck_for_approval(
    conn: &mut PgConnection,
    h: &Holding<'_>,
    limits: &Limits,
    today: NaiveDate,
) -> Result<NaiveDate, RuleError> {
    check_amount(limits, h.amount)?;
    if h.day != today {
        release(conn, h).await?;
        reserve(conn, &Holding { day: today, ..*h }, limits).await?;
        return Ok(today);
    }
    // Lock both counters in the usual order so the check and the approval are one step.
    let merchant: Option<(i64,)> = sqlx::query_as(
        "SELECT amount FROM payout_merchant_daily WHERE product = $1 AND mch_id = $2 AND day = $3 FOR UPDATE",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .fetch_optional(&mut *conn)
    .await?;
    let user: Option<(i64, i32)> = sqlx::query_as(
        "SELECT amount, count FROM payout_openid_daily
         WHERE product = $1 AND mch_id = $2 AND day = $3 AND openid = $4 FOR UPDATE",
    )
    .bind(h.product.as_str())
    .bind(h.mch_id)
    .bind(h.day)
    .bind(h.openid)
    .fetch_optional(&mut *conn)
    .await?;
    let (Some((m,)), Some((u, n))) = (merchant, user) else {
        return Err(StoreError::Conflict(format!("{} counters for {} are missing", h.product.as_str(), h.day)).into());
    };
    if m > limits.merchant_daily_amount.get() {
        return Err(merchant_exceeded(h, limits).into());
    }
    if u > limits.openid_daily_amount.get() {
        return Err(openid_amount_exceeded(h, limits).into());
    }
    if n > limits.openid_daily_count {
        return Err(openid_count_exceeded(h, limits).into());
    }
    Ok(today)
}

/// What the counters hold for a day: (merchant amount, user amount, user count).
pub async fn totals(
    conn: &mut PgConnection,
    product: Product,
    mch_id: &str,
    openid: &str,
    day: NaiveDate,
) -> Result<(Fen, Fen, i32), StoreError> {
    let h = Holding { product, mch_id, openid, day, amount: Fen::ZERO };
    let merchant: Option<(i64,)> =
        sqlx::query_as("SELECT amount FROM payout_merchant_daily WHERE product = $1 AND mch_id = $2 AND day = $3")
            .bind(product.as_str())
            .bind(mch_id)
            .bind(day)
            .fetch_optional(&mut *conn)
            .await?;
    let (u, n) = openid_totals(conn, &h).await?;
    Ok((Fen::new(merchant.map(|m| m.0).unwrap_or(0)), Fen::new(u), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_day_is_shanghai_s() {
        let late_utc = Utc.with_ymd_and_hms(2026, 11, 24, 16, 30, 0).unwrap();
        assert_eq!(shanghai_day(late_utc), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
        let early_utc = Utc.with_ymd_and_hms(2026, 11, 24, 15, 59, 59).unwrap();
        assert_eq!(shanghai_day(early_utc), NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
    }

    #[test]
    fn amount_rule() {
        let l = Limits {
            min_amount: Fen::new(100),
            max_amount: Fen::new(500),
            approval_threshold: Fen::new(200),
            auto_approve_daily_per_maker: Fen::new(i64::MAX),
            openid_daily_amount: Fen::new(1000),
            openid_daily_count: 3,
            merchant_daily_amount: Fen::new(10_000),
        };
        assert_eq!(check_amount(&l, Fen::new(99)).unwrap_err().code, "amount_below_minimum");
        assert_eq!(check_amount(&l, Fen::new(501)).unwrap_err().code, "amount_above_maximum");
        assert!(check_amount(&l, Fen::new(100)).is_ok());
        assert!(check_amount(&l, Fen::new(500)).is_ok());
    }
}
