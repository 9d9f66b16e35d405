//! Payouts to a user's WeChat balance (`promotion/transfers`): requests, maker-checker
//! approval, and the state changes the sender makes around each call.
//!
//! The merchant number (`partner_trade_no`) and every business field sent to WeChat are
//! fixed when the request is created (a database trigger refuses changes), so any retry
//! repeats the same number with the same parameters — the only safe retry WeChat allows.
//!
//! States and transitions are [`PayoutStatus`]; each function here makes one transition in
//! the caller's transaction, with its audit line, and (for outcomes) its ledger posting and
//! webhook, so a state and its consequences commit together or not at all.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{OpenId, State, check_transition, mask};
use crate::ledger::{self, Kind, Movement};
use crate::payout_limits::{self, Holding, Limits, Product, RuleViolation, shanghai_day};
use crate::sendable::{self, Table};
use crate::{Fen, StoreError, audit, webhooks};

/// A payout's life:
/// `PendingApproval → Approved | Rejected`; `Approved → Sending` (committed before the
/// call); `Sending → Succeeded | Failed | Unknown | Sending` (the last when a crashed
/// sender's lease ran out); `Unknown → Sending | Succeeded | Failed | Unknown`.
/// Requests at or below the approval threshold are created `Approved`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    PendingApproval,
    Approved,
    Rejected,
    Sending,
    Unknown,
    Succeeded,
    Failed,
}

impl State for PayoutStatus {
    const ENTITY: &'static str = "payout";

    fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::PendingApproval => "pending_approval",
            PayoutStatus::Approved => "approved",
            PayoutStatus::Rejected => "rejected",
            PayoutStatus::Sending => "sending",
            PayoutStatus::Unknown => "unknown",
            PayoutStatus::Succeeded => "succeeded",
            PayoutStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<PayoutStatus> {
        Some(match s {
            "pending_approval" => PayoutStatus::PendingApproval,
            "approved" => PayoutStatus::Approved,
            "rejected" => PayoutStatus::Rejected,
            "sending" => PayoutStatus::Sending,
            "unknown" => PayoutStatus::Unknown,
            "succeeded" => PayoutStatus::Succeeded,
            "failed" => PayoutStatus::Failed,
            _ => return None,
        })
    }

    fn can_become(self, next: PayoutStatus) -> bool {
        use PayoutStatus::*;
        match self {
            PendingApproval => matches!(next, Approved | Rejected),
            Approved => matches!(next, Sending),
            Sending | Unknown => matches!(next, Sending | Succeeded | Failed | Unknown),
            Rejected | Succeeded | Failed => false,
        }
    }
}

pub use crate::sendable::PayoutError;

/// A stored payout. `Debug` masks the openid and hides the real name.
#[derive(Clone, Serialize)]
pub struct Payout {
    pub id: i64,
    pub partner_trade_no: String,
    pub mch_id: String,
    pub appid: String,
    pub openid: String,
    pub amount: Fen,
    pub description: String,
    /// `NO_CHECK` or `FORCE_CHECK`.
    pub check_name: String,
    /// The payee's real name for FORCE_CHECK: personal data, never serialised.
    #[serde(skip)]
    pub re_user_name: Option<String>,
    /// Sent as `spbill_create_ip`; fixed at creation like every parameter sent.
    pub spbill_create_ip: Option<String>,
    pub batch_id: Option<i64>,
    pub batch_row: Option<i32>,
    pub status: PayoutStatus,
    pub limit_day: NaiveDate,
    pub created_by: Uuid,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub reject_reason: Option<String>,
    pub send_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub payment_no: Option<String>,
    pub payment_time: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Payout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payout")
            .field("id", &self.id)
            .field("partner_trade_no", &self.partner_trade_no)
            .field("openid", &mask(&self.openid))
            .field("amount", &self.amount)
            .field("check_name", &self.check_name)
            .field("status", &self.status)
            .field("payment_no", &self.payment_no)
            .field("failure_code", &self.failure_code)
            .finish_non_exhaustive()
    }
}

impl Payout {
    fn from_row(r: &PgRow) -> Result<Payout, sqlx::Error> {
        let status: String = r.try_get("status")?;
        Ok(Payout {
            id: r.try_get("id")?,
            partner_trade_no: r.try_get("partner_trade_no")?,
            mch_id: r.try_get("mch_id")?,
            appid: r.try_get("appid")?,
            openid: r.try_get("openid")?,
            amount: Fen::new(r.try_get("amount")?),
            description: r.try_get("description")?,
            check_name: r.try_get("check_name")?,
            re_user_name: r.try_get("re_user_name")?,
            spbill_create_ip: r.try_get("spbill_create_ip")?,
            batch_id: r.try_get("batch_id")?,
            batch_row: r.try_get("batch_row")?,
            status: PayoutStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown payout status {status:?}").into()))?,
            limit_day: r.try_get("limit_day")?,
            created_by: r.try_get("created_by")?,
            approved_by: r.try_get("approved_by")?,
            approved_at: r.try_get("approved_at")?,
            rejected_by: r.try_get("rejected_by")?,
            rejected_at: r.try_get("rejected_at")?,
            reject_reason: r.try_get("reject_reason")?,
            send_attempts: r.try_get("send_attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            payment_no: r.try_get("payment_no")?,
            payment_time: r.try_get("payment_time")?,
            failure_code: r.try_get("failure_code")?,
            failure_message: r.try_get("failure_message")?,
            finished_at: r.try_get("finished_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// Whether `new` asks for exactly this payout (a retry of the request that created it).
    fn is_same_request(&self, new: &NewPayout<'_>) -> bool {
        self.mch_id == new.mch_id
            && self.appid == new.appid
            && self.openid == new.openid.as_str()
            && self.amount == new.amount
            && self.description == new.description
            && self.re_user_name.as_deref() == new.real_name
    }

    /// This payout's place in the daily limit counters.
    pub fn holding(&self) -> Holding<'_> {
        Holding {
            product: Product::Payout,
            mch_id: &self.mch_id,
            openid: &self.openid,
            day: self.limit_day,
            amount: self.amount,
        }
    }

    /// The JSON sent in webhooks (the API serialises the same struct).
    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({ "id": self.id }))
    }
}

/// The audit actor for an API key: the same form as the API's `Caller::actor`.
pub fn client_actor(id: Uuid) -> String {
    format!("client:{id}")
}

/// A payout as requested by finance.
#[derive(Clone)]
pub struct NewPayout<'a> {
    pub mch_id: &'a str,
    pub appid: &'a str,
    pub openid: &'a OpenId,
    pub amount: Fen,
    pub description: &'a str,
    /// `Some` sends FORCE_CHECK with this name.
    pub real_name: Option<&'a str>,
    /// The calling machine's address, sent as `spbill_create_ip`.
    pub spbill_create_ip: Option<&'a str>,
    pub created_by: Uuid,
    /// The request's `Idempotency-Key`: the payout it creates is the key's forever (`None`
    /// for the rows of a batch, whose key names the batch).
    pub request_key: Option<&'a str>,
}

/// Rules that need no database: amount range, description, and FORCE_CHECK's name.
/// `require_real_name` is the configured switch that makes every payout FORCE_CHECK.
pub fn validate(new: &NewPayout<'_>, limits: &Limits, require_real_name: bool) -> Result<(), RuleViolation> {
    payout_limits::check_amount(limits, new.amount)?;
    let desc = new.description.trim();
    if desc.is_empty() || new.description.chars().count() > 100 {
        return Err(RuleViolation::new("invalid_description", "description must be 1 to 100 characters"));
    }
    match new.real_name {
        Some(n) if n.trim().is_empty() || n.chars().count() > 64 => {
            Err(RuleViolation::new("invalid_real_name", "real_name must be 1 to 64 characters"))
        }
        None if require_real_name => {
            Err(RuleViolation::new("real_name_required", "FORCE_CHECK is configured: real_name is required"))
        }
        Some(_) | None => Ok(()),
    }
}

/// A fresh partner_trade_no: the Shanghai date, a database sequence number, and random
/// characters. The random tail keeps numbers from two databases under the same merchant
/// (staging and production, a restored backup) from ever colliding at WeChat, where a
/// reused number would return the other request's result.
pub async fn next_partner_trade_no(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<String, StoreError> {
    let (seq,): (i64,) = sqlx::query_as("SELECT nextval('payout_number_seq')").fetch_one(conn).await?;
    let tail: String = rand::rng().sample_iter(Alphanumeric).take(8).map(char::from).collect();
    Ok(format!("{}{:010}{tail}", shanghai_day(now).format("%Y%m%d"), seq % 10_000_000_000))
}

/// Where a new request goes: as one of a batch (always waits for the batch's approval).
#[derive(Clone, Copy, Debug)]
pub struct BatchPlace {
    pub batch_id: i64,
    pub row: i32,
}

/// Creates a payout: rules, limit counters, row and audit line, in the caller's
/// transaction. A refused limit leaves the counters unchanged; the caller rolls back.
pub async fn create(
    conn: &mut PgConnection,
    new: &NewPayout<'_>,
    limits: &Limits,
    require_real_name: bool,
    batch: Option<BatchPlace>,
    now: DateTime<Utc>,
) -> Result<Payout, PayoutError> {
    validate(new, limits, require_real_name)?;
    if let Some(key) = new.request_key {
        if let Some(row) = sendable::find_by_request_key(conn, Table::Payouts, new.created_by, key).await? {
            let p = Payout::from_row(&row)?;
            return if p.is_same_request(new) {
                Ok(p)
            } else {
                Err(PayoutError::KeyReused(format!("payout {}", p.id)))
            };
        }
    }
    let day = shanghai_day(now);
    let holding =
        Holding { product: Product::Payout, mch_id: new.mch_id, openid: new.openid.as_str(), day, amount: new.amount };
    payout_limits::reserve(conn, &holding, limits).await?;
    let auto = batch.is_none()
        && new.amount <= limits.approval_threshold
        && sendable::within_auto_approval_ceiling(
            conn,
            Table::Payouts,
            new.created_by,
            day,
            new.amount,
            limits.auto_approve_daily_per_maker,
        )
        .await?;
    let status = if auto { PayoutStatus::Approved } else { PayoutStatus::PendingApproval };
    let ptn = next_partner_trade_no(conn, now).await?;
    let row = sqlx::query(
        "INSERT INTO payouts (partner_trade_no, mch_id, appid, openid, amount, description, check_name, re_user_name,
                              batch_id, batch_row, status, limit_day, created_by, next_attempt_at, spbill_create_ip,
                              request_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 CASE WHEN $11 = 'approved' THEN $14::timestamptz END, $15, $16)
         RETURNING *",
    )
    .bind(&ptn)
    .bind(new.mch_id)
    .bind(new.appid)
    .bind(new.openid.as_str())
    .bind(new.amount.get())
    .bind(new.description)
    .bind(if new.real_name.is_some() { "FORCE_CHECK" } else { "NO_CHECK" })
    .bind(new.real_name)
    .bind(batch.map(|b| b.batch_id))
    .bind(batch.map(|b| b.row))
    .bind(status.as_str())
    .bind(day)
    .bind(new.created_by)
    .bind(now)
    .bind(new.spbill_create_ip)
    .bind(new.request_key)
    .fetch_one(&mut *conn)
    .await?;
    let p = Payout::from_row(&row)?;
    audit::record(
        conn,
        &client_actor(new.created_by),
        "payout.requested",
        "payout",
        &p.id.to_string(),
        json!({
            "partner_trade_no": p.partner_trade_no, "amount": p.amount, "openid": mask(&p.openid),
            "check_name": p.check_name, "status": p.status, "batch_id": p.batch_id,
        }),
    )
    .await?;
    Ok(p)
}

/// Loads and locks a payout for a state change.
async fn lock(conn: &mut PgConnection, id: i64) -> Result<Payout, PayoutError> {
    Ok(Payout::from_row(&sendable::lock(conn, Table::Payouts, id).await?)?)
}

/// Approves a pending request: a different key than its creator's, limits checked again
/// (the amount moves to today's counters if it was requested on an earlier day). Two
/// approvers racing: the row lock makes the second see `approved` and fail.
pub async fn approve(
    conn: &mut PgConnection,
    id: i64,
    approver: Uuid,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Payout, PayoutError> {
    let p = lock(conn, id).await?;
    if let Some(b) = p.batch_id {
        return Err(PayoutError::InBatch(b));
    }
    approve_locked(conn, &p, approver, limits, now).await
}

/// The approval of one locked row (also used for each row of an approved batch).
pub(crate) async fn approve_locked(
    conn: &mut PgConnection,
    p: &Payout,
    approver: Uuid,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Payout, PayoutError> {
    sendable::check_decider(approver, p.created_by, p.status.as_str(), "approve")?;
    let row = sendable::approve(conn, Table::Payouts, p.id, &p.holding(), approver, limits, now).await?;
    audit::record(
        conn,
        &client_actor(approver),
        "payout.approved",
        "payout",
        &p.id.to_string(),
        json!({ "partner_trade_no": p.partner_trade_no, "amount": p.amount, "batch_id": p.batch_id }),
    )
    .await?;
    Ok(Payout::from_row(&row)?)
}

/// Rejects a pending request (a different key than its creator's) and gives its amount
/// back to the limit counters.
pub async fn reject(
    conn: &mut PgConnection,
    id: i64,
    approver: Uuid,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Payout, PayoutError> {
    let p = lock(conn, id).await?;
    if let Some(b) = p.batch_id {
        return Err(PayoutError::InBatch(b));
    }
    reject_locked(conn, &p, approver, reason, now).await
}

pub(crate) async fn reject_locked(
    conn: &mut PgConnection,
    p: &Payout,
    approver: Uuid,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Payout, PayoutError> {
    sendable::check_decider(approver, p.created_by, p.status.as_str(), "reject")?;
    let row = sendable::reject(conn, Table::Payouts, p.id, &p.holding(), approver, reason, now).await?;
    audit::record(
        conn,
        &client_actor(approver),
        "payout.rejected",
        "payout",
        &p.id.to_string(),
        json!({ "partner_trade_no": p.partner_trade_no, "reason": reason, "batch_id": p.batch_id }),
    )
    .await?;
    Ok(Payout::from_row(&row)?)
}

pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<Payout>, StoreError> {
    let row = sqlx::query("SELECT * FROM payouts WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(row.map(|r| Payout::from_row(&r)).transpose()?)
}

pub async fn get_by_partner_trade_no(conn: &mut PgConnection, ptn: &str) -> Result<Option<Payout>, StoreError> {
    let row = sqlx::query("SELECT * FROM payouts WHERE partner_trade_no = $1").bind(ptn).fetch_optional(conn).await?;
    Ok(row.map(|r| Payout::from_row(&r)).transpose()?)
}

/// Filters for finance's listing; `date` is the Asia/Shanghai day of creation.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<PayoutStatus>,
    pub date: Option<NaiveDate>,
    pub openid: Option<String>,
    pub batch_id: Option<i64>,
    /// Only ids below this (the next page after the last id seen).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(conn: &mut PgConnection, f: &ListFilter) -> Result<Vec<Payout>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM payouts
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::date IS NULL OR (created_at AT TIME ZONE 'Asia/Shanghai')::date = $2)
           AND ($3::text IS NULL OR openid = $3)
           AND ($4::bigint IS NULL OR batch_id = $4)
           AND ($5::bigint IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6",
    )
    .bind(f.status.map(|s| s.as_str()))
    .bind(f.date)
    .bind(f.openid.as_deref())
    .bind(f.batch_id)
    .bind(f.before_id)
    .bind(f.limit.clamp(1, 500))
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(Payout::from_row).collect::<Result<_, _>>()?)
}

/// A payout claimed by a sender, and the state it was claimed from: `Approved` means
/// "never sent: send"; `Unknown` or `Sending` (lease expired) mean "may have been sent:
/// find out first".
#[derive(Debug)]
pub struct Claimed {
    pub payout: Payout,
    pub from: PayoutStatus,
}

/// Claims the next payout that needs a call (approved, unknown and due, or left in
/// `sending` by a sender whose lease ran out) and commits nothing: the caller records the
/// attempt in the same transaction and commits before calling WeChat. `SKIP LOCKED` lets
/// any number of senders run side by side.
pub async fn claim_next(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Claimed>, StoreError> {
    let claimed = sendable::claim_next(conn, Table::Payouts, PayoutStatus::Sending, now, lease_until).await?;
    let Some((row, from)) = claimed else { return Ok(None) };
    Ok(Some(Claimed { payout: Payout::from_row(&row)?, from }))
}

/// What settling did: the first settlement changes the row; a repeat (a second sender or
/// a late answer) changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Changed,
    AlreadyFinal,
}

/// The payout was paid: state, ledger posting, webhook and audit line, once.
pub async fn settle_success(
    conn: &mut PgConnection,
    id: i64,
    payment_no: Option<&str>,
    payment_time: DateTime<Utc>,
    actor: &str,
) -> Result<Settled, PayoutError> {
    let p = lock(conn, id).await?;
    if p.status == PayoutStatus::Succeeded {
        return Ok(Settled::AlreadyFinal);
    }
    // A success for a payout we hold failed (a late answer of a call whose lease ran out):
    // the money moved, so it is recorded — counters, ledger, webhook — and never dropped;
    // the state machine's Failed → Succeeded is refused everywhere else, so an operator is
    // told through an anomaly.
    let late = p.status == PayoutStatus::Failed;
    if late {
        payout_limits::hold_again(conn, &p.holding()).await?;
        sendable::record_paid_after_failed(
            conn,
            &p.partner_trade_no,
            &p.mch_id,
            format!(
                "WeChat reports payout {} ({} fen) paid after we had recorded it failed with {}",
                p.partner_trade_no,
                p.amount,
                p.failure_code.as_deref().unwrap_or("?")
            ),
            json!({ "payout_id": p.id, "amount": p.amount, "payment_no": payment_no,
                    "failure_code": p.failure_code, "failure_message": p.failure_message }),
        )
        .await?;
    } else {
        check_transition(p.status, PayoutStatus::Succeeded)?;
    }
    let row = sqlx::query(
        "UPDATE payouts SET status = 'succeeded', payment_no = $2, payment_time = $3, lease_until = NULL,
                next_attempt_at = NULL, last_error = NULL, finished_at = now()
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(payment_no)
    .bind(payment_time)
    .fetch_one(&mut *conn)
    .await?;
    let done = Payout::from_row(&row)?;
    ledger::post(
        conn,
        &Movement::standard(Kind::Payout, &done.partner_trade_no, &done.mch_id, done.amount, payment_time),
    )
    .await?;
    webhooks::enqueue(conn, done.created_by, "payout.succeeded", &done.partner_trade_no, done.event_payload()).await?;
    audit::record(
        conn,
        actor,
        if late { "payout.succeeded_after_failed" } else { "payout.succeeded" },
        "payout",
        &id.to_string(),
        json!({ "partner_trade_no": done.partner_trade_no, "payment_no": payment_no }),
    )
    .await?;
    Ok(Settled::Changed)
}

/// WeChat said, finally, that nothing was paid: state, limits given back, webhook, audit.
/// (SEND_FAILED and friends: finance may create a new request, with a new number.)
pub async fn settle_failed(
    conn: &mut PgConnection,
    id: i64,
    code: &str,
    message: &str,
    actor: &str,
) -> Result<Settled, PayoutError> {
    let p = lock(conn, id).await?;
    if p.status == PayoutStatus::Failed {
        return Ok(Settled::AlreadyFinal);
    }
    check_transition(p.status, PayoutStatus::Failed)?;
    let row = sendable::fail(conn, Table::Payouts, id, &p.holding(), code, message).await?;
    let done = Payout::from_row(&row)?;
    webhooks::enqueue(conn, done.created_by, "payout.failed", &done.partner_trade_no, done.event_payload()).await?;
    audit::record(
        conn,
        actor,
        "payout.failed",
        "payout",
        &id.to_string(),
        json!({ "partner_trade_no": done.partner_trade_no, "code": code, "message": message }),
    )
    .await?;
    Ok(Settled::Changed)
}

/// The call may or may not have paid: park the payout until `next_attempt_at`, when a
/// sender will query it (or repeat the same call).
pub async fn mark_unknown(
    conn: &mut PgConnection,
    id: i64,
    reason: &str,
    next_attempt_at: DateTime<Utc>,
) -> Result<Settled, PayoutError> {
    let p = lock(conn, id).await?;
    if !p.status.can_become(PayoutStatus::Unknown) {
        // Settled meanwhile by another sender: its answer stands.
        return Ok(Settled::AlreadyFinal);
    }
    sendable::park_unknown(conn, Table::Payouts, id, reason, next_attempt_at).await?;
    Ok(Settled::Changed)
}

/// How many payouts are in each state (for metrics and tests).
pub async fn count_by_status(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT status, count(*) FROM payouts GROUP BY status ORDER BY status").fetch_all(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use PayoutStatus::*;
        assert!(PendingApproval.can_become(Approved));
        assert!(PendingApproval.can_become(Rejected));
        assert!(!PendingApproval.can_become(Sending), "nothing is sent before approval");
        assert!(Approved.can_become(Sending));
        assert!(!Approved.can_become(Succeeded), "sending is committed before any call");
        assert!(Sending.can_become(Unknown));
        assert!(Unknown.can_become(Succeeded));
        assert!(!Succeeded.can_become(Failed));
        assert!(!Failed.can_become(Sending), "a failed request is never re-sent: finance makes a new one");
        for s in [PendingApproval, Approved, Rejected, Sending, Unknown, Succeeded, Failed] {
            assert_eq!(PayoutStatus::parse(s.as_str()), Some(s));
        }
    }
}
