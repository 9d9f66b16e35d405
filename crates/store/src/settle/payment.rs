//! A payment WeChat reports: [`apply_payment`] (one locked transaction), its one-statement
//! form for a notification ([`apply_notified_payment`]) and the grouped form for many
//! notifications ([`apply_notified_payments`]).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{OrderStatus, State, check_transition, mask};
use crate::ledger::{self, Kind, Movement};
use crate::notifications::{self, NewNotification};
use crate::{Fen, StoreError, audit, webhooks};

use super::{Source, parse_state};
use crate::anomalies::{NewAnomaly, record_anomaly};

/// A successful payment as WeChat reports it (notification or `orderquery` with
/// trade_state SUCCESS). Only report payments that succeeded; failures change nothing.
#[derive(Clone, Debug)]
pub struct PaymentFacts {
    pub out_trade_no: String,
    pub mch_id: String,
    pub appid: String,
    /// Compared in full, logged and stored in anomalies only masked.
    pub openid: String,
    /// `total_fee`: must equal the order's amount.
    pub total_fee: Fen,
    /// `cash_fee`: what the user paid in cash (≤ total_fee; the rest were coupons).
    pub cash_fee: Option<Fen>,
    pub transaction_id: String,
    /// `time_end`, converted from Asia/Shanghai.
    pub paid_at: DateTime<Utc>,
    pub bank_type: Option<String>,
    pub source: Source,
}

/// What [`apply_payment`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentApplied {
    /// The order is now paid, ledger posted, webhook queued. `late`: the order had been
    /// closed (or failed) locally; the payment wins, the order is flagged `paid_after_close`
    /// and a `paid_after_close` anomaly is open for an operator (refund or deliver).
    Applied { late: bool },
    /// The order was already paid by this transaction: nothing changed.
    AlreadyApplied,
    /// The facts disagree with the order (or the order is paid by another transaction):
    /// nothing changed, an anomaly was recorded.
    Mismatch { anomaly_id: i64, reason: String },
    /// No order has this out_trade_no: an anomaly was recorded.
    UnknownOrder { anomaly_id: i64 },
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    appid: String,
    mch_id: String,
    client_id: Option<Uuid>,
    openid: String,
    amount: i64,
    status: String,
    transaction_id: Option<String>,
    clash: Option<String>,
}

/// Applies a successful payment to its order, once. Call inside an open transaction and
/// commit after; on `Err` roll back (nothing may be acknowledged).
///
/// Locks the order row (`FOR UPDATE`), cross-checks appid, mch_id, openid, total_fee (and
/// cash_fee ≤ total_fee), then moves it to `paid` through [`check_transition`], posts
/// `Kind::Payment` for total_fee, queues `payment.succeeded` when the order has a client and
/// writes an audit line. A payment for an order we closed locally wins (see
/// [`PaymentApplied::Applied`]).
pub async fn apply_payment(conn: &mut PgConnection, f: &PaymentFacts) -> Result<PaymentApplied, StoreError> {
    if apply_payment_fast(conn, f).await? {
        return Ok(PaymentApplied::Applied { late: false });
    }
    // Everything else (repeats, mismatches, late payments, unknown orders, races): lock and
    // look. One round trip: lock the order and look for another order already holding this
    // transaction_id (unique across orders: a clash would otherwise abort the caller's
    // transaction with a unique violation at the UPDATE).
    let order: Option<OrderRow> = sqlx::query_as(
        "SELECT o.id, o.appid, o.mch_id, o.client_id, o.openid, o.amount, o.status, o.transaction_id,
                (SELECT c.out_trade_no FROM orders c WHERE c.transaction_id = $2 AND c.id <> o.id) AS clash
           FROM orders o WHERE o.out_trade_no = $1 FOR UPDATE OF o",
    )
    .bind(&f.out_trade_no)
    .bind(&f.transaction_id)
    .fetch_optional(&mut *conn)
    .await?;
    let facts_json = payment_facts_json(f);
    let Some(order) = order else {
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "unknown_order",
                reference: &f.out_trade_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: "no order has this out_trade_no".into(),
                details: json!({"wechat": facts_json}),
                dedupe_key: format!("unknown_order:{}:{}:{}", f.mch_id, f.out_trade_no, f.transaction_id),
            },
        )
        .await?;
        return Ok(PaymentApplied::UnknownOrder { anomaly_id: id });
    };
    let status: OrderStatus = parse_state(&order.status)?;

    let mut differences = Vec::new();
    if order.mch_id != f.mch_id {
        differences.push("mch_id");
    }
    if order.appid != f.appid {
        differences.push("appid");
    }
    if order.openid != f.openid {
        differences.push("openid");
    }
    if order.amount != f.total_fee.get() {
        differences.push("total_fee");
    }
    if f.cash_fee.is_some_and(|c| c.get() < 0 || c.get() > f.total_fee.get()) {
        differences.push("cash_fee");
    }
    let ours = json!({
        "appid": order.appid, "mch_id": order.mch_id, "openid": mask(&order.openid),
        "amount": order.amount, "status": order.status, "transaction_id": order.transaction_id,
    });
    if !differences.is_empty() {
        let reason = format!("{} differ from the order", differences.join(", "));
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "order_mismatch",
                reference: &f.out_trade_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: reason.clone(),
                details: json!({"wechat": facts_json, "ours": ours, "fields": differences}),
                dedupe_key: format!("order_mismatch:{}:{}", f.out_trade_no, f.transaction_id),
            },
        )
        .await?;
        return Ok(PaymentApplied::Mismatch { anomaly_id: id, reason });
    }

    if status == OrderStatus::Paid {
        if order.transaction_id.as_deref() == Some(f.transaction_id.as_str()) {
            return Ok(PaymentApplied::AlreadyApplied);
        }
        // Two genuine payments for one out_trade_no should be impossible at WeChat; if it
        // happens the user paid twice and an operator must refund one.
        let reason = "order already paid by another transaction_id".to_owned();
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "duplicate_payment",
                reference: &f.out_trade_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: reason.clone(),
                details: json!({"wechat": facts_json, "ours": ours}),
                dedupe_key: format!("duplicate_payment:{}:{}", f.out_trade_no, f.transaction_id),
            },
        )
        .await?;
        return Ok(PaymentApplied::Mismatch { anomaly_id: id, reason });
    }

    if let Some(other) = &order.clash {
        let reason = format!("transaction_id already belongs to order {other}");
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "order_mismatch",
                reference: &f.out_trade_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: reason.clone(),
                details: json!({"wechat": facts_json, "ours": ours, "other_order": other}),
                dedupe_key: format!("order_mismatch:{}:{}", f.out_trade_no, f.transaction_id),
            },
        )
        .await?;
        return Ok(PaymentApplied::Mismatch { anomaly_id: id, reason });
    }

    check_transition(status, OrderStatus::Paid)?;
    let late = matches!(status, OrderStatus::Closed | OrderStatus::Failed);
    let updated = sqlx::query(
        "UPDATE orders SET status = 'paid', transaction_id = $2, paid_at = $3, bank_type = $4, cash_fee = $5,
                paid_after_close = $6, last_error = NULL
          WHERE id = $1 AND status = $7",
    )
    .bind(order.id)
    .bind(&f.transaction_id)
    .bind(f.paid_at)
    .bind(&f.bank_type)
    .bind(f.cash_fee.map(|c| c.get()))
    .bind(late)
    .bind(status.as_str())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        // Unreachable while we hold the row lock; refuse rather than post money twice.
        return Err(StoreError::Conflict(format!("order {} changed under its row lock", f.out_trade_no)));
    }

    ledger::post(conn, &Movement::standard(Kind::Payment, &f.out_trade_no, &f.mch_id, f.total_fee, f.paid_at)).await?;
    if let Some(client) = order.client_id {
        webhooks::enqueue(conn, client, "payment.succeeded", &f.out_trade_no, payment_webhook(f, late)).await?;
    }
    let mut details = payment_audit(f, late);
    details["from"] = json!(status.as_str());
    audit::record(conn, &f.source.actor(), "order.paid", "order", &f.out_trade_no, details).await?;
    if late {
        record_anomaly(
            conn,
            &NewAnomaly {
                kind: "paid_after_close",
                reference: &f.out_trade_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: format!("paid after the order was {} locally; the payment was applied", status.as_str()),
                details: json!({"wechat": facts_json, "ours": ours}),
                dedupe_key: format!("paid_after_close:{}", f.out_trade_no),
            },
        )
        .await?;
    }
    Ok(PaymentApplied::Applied { late })
}

/// The common case in one statement (one round trip instead of six): an open order
/// (`created`/`prepaid`) whose appid, mch_id, openid and amount equal the facts, whose
/// transaction_id is not taken, becomes paid by a conditional `UPDATE … WHERE status IN
/// (…)`, and the same statement posts the ledger movement ([`Movement::standard`]'s accounts,
/// the same `(kind, reference)` key [`ledger::post`] uses), queues the webhook and writes the
/// audit line, with the same payloads as the general path. Returns false when the order did
/// not qualify (nothing written); [`apply_payment`] then takes the general, locked path. A
/// concurrent repeat waits on the row lock, re-checks the condition against the now paid
/// row and gets false, so the general path reports it as already applied.
async fn apply_payment_fast(conn: &mut PgConnection, f: &PaymentFacts) -> Result<bool, StoreError> {
    Ok(one_statement(conn, f, None).await?.is_some())
}

/// For the notify service: keeps the raw notification `n` and applies the payment in ONE
/// statement, so the common case needs no explicit transaction (one round trip in
/// autocommit; a single statement is atomic). Returns the notification's id when it applied.
/// `None`: nothing was written — the order did not qualify for the one-statement path; keep
/// the notification and call [`apply_payment`] in a transaction instead.
pub async fn apply_notified_payment(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
    f: &PaymentFacts,
) -> Result<Option<i64>, StoreError> {
    one_statement(conn, f, Some(n)).await
}

/// The one-statement path: `Some(notification id or 0)` when it applied.
async fn one_statement(
    conn: &mut PgConnection,
    f: &PaymentFacts,
    n: Option<&NewNotification<'_>>,
) -> Result<Option<i64>, StoreError> {
    if !f.total_fee.is_positive() || f.cash_fee.is_some_and(|c| c.get() < 0 || c.get() > f.total_fee.get()) {
        return Ok(None);
    }
    let m = Movement::standard(Kind::Payment, &f.out_trade_no, &f.mch_id, f.total_fee, f.paid_at);
    let (applied, notification_id): (i64, Option<i64>) = sqlx::query_as(
        "WITH old AS (
             SELECT id, status FROM orders WHERE out_trade_no = $1 FOR UPDATE
         ), upd AS (
             UPDATE orders o SET status = 'paid', transaction_id = $2, paid_at = $3, bank_type = $4, cash_fee = $5,
                    last_error = NULL
               FROM old
              WHERE o.id = old.id AND old.status IN ('created', 'prepaid') AND o.status IN ('created', 'prepaid')
                AND o.mch_id = $6 AND o.appid = $7 AND o.openid = $8 AND o.amount = $9
                AND NOT EXISTS (SELECT 1 FROM orders c WHERE c.transaction_id = $2)
             RETURNING o.out_trade_no, o.mch_id, o.client_id, old.status AS prev
         ), lt AS (
             INSERT INTO ledger_transactions (kind, reference, mch_id, occurred_at, memo)
             SELECT $10, upd.out_trade_no, upd.mch_id, $3, $11 FROM upd
             ON CONFLICT (kind, reference) DO NOTHING
             RETURNING id
         ), le AS (
             INSERT INTO ledger_entries (transaction_id, account, amount)
             SELECT lt.id, e.account, e.amount FROM lt, (VALUES ($12, $9), ($13, -$9)) AS e(account, amount)
         ), wh AS (
             INSERT INTO webhook_outbox (client_id, event_id, event_type, subject, payload)
             SELECT upd.client_id, $14, 'payment.succeeded', upd.out_trade_no, $15 FROM upd
              WHERE upd.client_id IS NOT NULL
             ON CONFLICT (event_type, subject) DO NOTHING
         ), n AS (
             INSERT INTO wxpay_notifications (kind, mch_id, appid, reference, body_sha256, body, fields, outcome)
             SELECT 'payment', upd.mch_id, $7, upd.out_trade_no, $19, $20, $21, 'applied' FROM upd WHERE $18
             ON CONFLICT (kind, body_sha256) DO UPDATE
                SET deliveries = wxpay_notifications.deliveries + 1, last_delivered_at = now(), outcome = 'applied'
             RETURNING id
         ), au AS (
             INSERT INTO audit_log (actor, action, subject_type, subject_id, details)
             SELECT $16, 'order.paid', 'order', upd.out_trade_no,
                    $17 || jsonb_build_object('from', upd.prev)
                        || CASE WHEN n.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('notification_id', n.id) END
               FROM upd LEFT JOIN n ON true
         )
         SELECT (SELECT count(*) FROM upd), (SELECT id FROM n)",
    )
    .bind(&f.out_trade_no)
    .bind(&f.transaction_id)
    .bind(f.paid_at)
    .bind(&f.bank_type)
    .bind(f.cash_fee.map(|c| c.get()))
    .bind(&f.mch_id)
    .bind(&f.appid)
    .bind(&f.openid)
    .bind(f.total_fee.get())
    .bind(m.kind.as_str())
    .bind(m.memo)
    .bind(&m.debit)
    .bind(&m.credit)
    .bind(Uuid::new_v4())
    .bind(payment_webhook(f, false))
    .bind(f.source.actor())
    .bind(payment_audit(f, false))
    .bind(n.is_some())
    .bind(n.map(|n| notifications::body_sha256(n.body.as_bytes())))
    .bind(n.map(|n| n.body))
    .bind(n.and_then(|n| n.fields.as_ref()))
    .fetch_one(&mut *conn)
    .await?;
    Ok((applied == 1).then_some(notification_id.unwrap_or(0)))
}

/// A verified payment notification for [`apply_notified_payments`]: its facts (source
/// `Notification`, the id is filled in by the statement) and the body as received (which
/// holds its fields: `fields` is stored only for refunds).
#[derive(Clone, Debug)]
pub struct NotifiedPayment {
    pub facts: PaymentFacts,
    pub body: String,
}

/// What [`apply_notified_payments`] did with one notification of its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAnswer {
    /// A first delivery: the order is paid, posted, its webhook queued, the body kept.
    Applied,
    /// The very body was applied before: one more delivery counted, nothing else changed.
    Repeat,
    /// Nothing was written for it: take the single path.
    NotHandled,
}

/// The group form of [`apply_notified_payment`] (see [`crate::group_commit`]): keeps the raw
/// notifications and applies the payments of many notifications in ONE statement, one round
/// trip and one commit for the group. Answers, per input and in order, a [`GroupAnswer`]:
/// - `Applied` for a first delivery to an open order that matches;
/// - `Repeat` for a body already stored with outcome `applied` (WeChat's retry of a
///   notification whose SUCCESS it did not get), whose delivery count goes up, as
///   [`notifications::count_applied_repeat`] does;
/// - `NotHandled` when nothing was written for it (the order did not qualify for the common
///   case, or another input of the group names the same order, body or transaction). The
///   caller must then take the single path ([`apply_notified_payment`], then
///   [`apply_payment`] in a transaction), which reports mismatches and late payments.
///
/// Lock order, the same in every group: first the open orders (`FOR UPDATE` in id order;
/// paid and closed orders are not locked at all), then the repeats' stored notifications
/// (the `UPDATE` by a sorted id array, normally an index scan in id order), then the new
/// notification rows. The statement's final `SELECT` reads `upd` before `rep`, and the
/// other data-modifying CTEs run after both, which fixes that order. A single-path writer
/// locks a notification row and then its order; that order is either paid (not locked here)
/// or open for a body this group does not repeat. If the database still found a deadlock
/// (say, a plan that scans the repeats in another order), it aborts one side: a group then
/// answers `NotHandled` for all and a single path answers FAIL, which WeChat retries.
/// Nothing is lost either way.
///
/// The repeats are found by one lookup per input on the unique key `(kind, body_sha256)`,
/// a correlated subquery, not by a join: this statement is prepared once per connection,
/// and a join planned while `wxpay_notifications` is still empty (a new install, the
/// benchmark) is a hash join over a sequential scan, kept until the next ANALYZE. In a
/// benchmark whose table grew from 0 to 20,000 rows in a minute that took first deliveries
/// from ~3,400 to 328/s. A guess, measured but not proven from the planner's code: an
/// equality lookup on a unique key stays an index scan even when planned on an empty table
/// (`notify_load history=0 again`: 3,251/s first deliveries, 6,107/s repeats).
///
/// The same conditions, rows and payloads as the one-statement path: every
/// qualifying order is paid, posted (`(kind, reference)` key), its webhook queued, its audit
/// line written and its notification kept, all or nothing for the group. On `Err` nothing
/// was written, or, if the connection broke during the commit, possibly everything; the
/// single path then finds the orders paid and answers "already applied", which is correct
/// either way.
///
/// Unlike the single path, the ledger and webhook inserts here have no `ON CONFLICT`: an
/// order only gets here while it is still open under its row lock, and nothing posts a
/// payment or queues `payment.succeeded` for an open order, so a conflict would mean a
/// broken invariant. It then fails the whole group (unique violation), and every member takes
/// the single path, which has the `ON CONFLICT` clauses and decides each one on its own. This
/// saves a speculative insertion per row in the common case.
pub async fn apply_notified_payments(
    conn: &mut PgConnection,
    items: &[NotifiedPayment],
) -> Result<Vec<GroupAnswer>, StoreError> {
    use std::collections::HashSet;
    let mut numbers = HashSet::new();
    let mut transactions = HashSet::new();
    let mut bodies = HashSet::new();
    let mut chosen = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let f = &it.facts;
        let sha = notifications::body_sha256(it.body.as_bytes());
        let plain =
            f.total_fee.is_positive() && !f.cash_fee.is_some_and(|c| c.get() < 0 || c.get() > f.total_fee.get());
        // Later copies of the same order, transaction or body wait for the single path,
        // which runs after this group has committed and sees them as repeats.
        if plain
            && numbers.insert(f.out_trade_no.as_str())
            && transactions.insert(f.transaction_id.as_str())
            && bodies.insert(sha.clone())
        {
            chosen.push((i, sha));
        }
    }
    let mut answers = vec![GroupAnswer::NotHandled; items.len()];
    if chosen.is_empty() {
        return Ok(answers);
    }
    let n = chosen.len();
    let (mut no, mut txn, mut at, mut bank, mut cash) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut mch, mut app, mut openid, mut amount) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut debit, mut credit, mut event, mut hook, mut audit_details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut shas, mut body) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, sha) in &chosen {
        let it = &items[*i];
        let f = &it.facts;
        let m = Movement::standard(Kind::Payment, &f.out_trade_no, &f.mch_id, f.total_fee, f.paid_at);
        no.push(f.out_trade_no.as_str());
        txn.push(f.transaction_id.as_str());
        at.push(f.paid_at);
        bank.push(f.bank_type.as_deref());
        cash.push(f.cash_fee.map(|c| c.get()));
        mch.push(f.mch_id.as_str());
        app.push(f.appid.as_str());
        openid.push(f.openid.as_str());
        amount.push(f.total_fee.get());
        debit.push(m.debit);
        credit.push(m.credit);
        event.push(Uuid::new_v4());
        hook.push(payment_webhook(f, false));
        audit_details.push(payment_audit(f, false));
        shas.push(sha.as_str());
        body.push(it.body.as_str());
    }
    let done: Vec<(bool, String)> = sqlx::query_as(
        "WITH i AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::bigint[], $6::text[],
                                  $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::uuid[],
                                  $13::jsonb[], $14::jsonb[], $15::text[], $16::text[])
                 AS t(out_trade_no, transaction_id, paid_at, bank_type, cash_fee, mch_id, appid, openid, amount,
                      debit, credit, event_id, webhook, audit, body_sha256, body)
         ), old AS (
             -- Only open orders are locked: a repeat (order already paid) or a late payment
             -- (closed) waits for nothing here and goes on to the single path. An order paid
             -- by a concurrent writer is re-checked after its lock is released and drops out.
             SELECT o.id, o.status FROM orders o
              WHERE o.out_trade_no IN (SELECT out_trade_no FROM i) AND o.status IN ('created', 'prepaid')
              ORDER BY o.id FOR UPDATE
         ), upd AS (
             UPDATE orders o SET status = 'paid', transaction_id = i.transaction_id, paid_at = i.paid_at,
                    bank_type = i.bank_type, cash_fee = i.cash_fee, last_error = NULL
               FROM old, i
              WHERE o.id = old.id AND o.out_trade_no = i.out_trade_no
                AND old.status IN ('created', 'prepaid') AND o.status IN ('created', 'prepaid')
                AND o.mch_id = i.mch_id AND o.appid = i.appid AND o.openid = i.openid AND o.amount = i.amount
                AND NOT EXISTS (SELECT 1 FROM orders c WHERE c.transaction_id = i.transaction_id)
             RETURNING o.out_trade_no, o.mch_id, o.client_id, old.status AS prev, i.appid AS n_appid,
                       i.paid_at AS n_paid_at, i.amount AS n_amount, i.debit, i.credit, i.event_id, i.webhook,
                       i.audit, i.body_sha256, i.body
         ), lt AS (
             INSERT INTO ledger_transactions (kind, reference, mch_id, occurred_at, memo)
             SELECT $17, upd.out_trade_no, upd.mch_id, upd.n_paid_at, '' FROM upd
             RETURNING id, reference
         ), le AS (
             INSERT INTO ledger_entries (transaction_id, account, amount)
             SELECT lt.id, e.account, e.amount
               FROM lt JOIN upd ON upd.out_trade_no = lt.reference,
                    LATERAL (VALUES (upd.debit, upd.n_amount), (upd.credit, -upd.n_amount)) AS e(account, amount)
         ), wh AS (
             INSERT INTO webhook_outbox (client_id, event_id, event_type, subject, payload)
             SELECT upd.client_id, upd.event_id, 'payment.succeeded', upd.out_trade_no, upd.webhook FROM upd
              WHERE upd.client_id IS NOT NULL
         ), n AS (
             INSERT INTO wxpay_notifications (kind, mch_id, appid, reference, body_sha256, body, outcome)
             SELECT 'payment', upd.mch_id, upd.n_appid, upd.out_trade_no, upd.body_sha256, upd.body, 'applied'
               FROM upd
             ON CONFLICT (kind, body_sha256) DO UPDATE
                SET deliveries = wxpay_notifications.deliveries + 1, last_delivered_at = now(), outcome = 'applied'
             RETURNING id, reference
         ), au AS (
             INSERT INTO audit_log (actor, action, subject_type, subject_id, details)
             SELECT $18, 'order.paid', 'order', upd.out_trade_no,
                    upd.audit || jsonb_build_object('from', upd.prev)
                        || CASE WHEN n.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('notification_id', n.id) END
               FROM upd LEFT JOIN n ON n.reference = upd.out_trade_no
         ), rep AS (
             UPDATE wxpay_notifications w SET deliveries = w.deliveries + 1, last_delivered_at = now()
              WHERE w.id = ANY (ARRAY(
                        SELECT (SELECT x.id FROM wxpay_notifications x
                                 WHERE x.kind = 'payment' AND x.body_sha256 = i.body_sha256 AND x.outcome = 'applied')
                          FROM i ORDER BY 1))
                AND w.outcome = 'applied'
             RETURNING w.body_sha256
         )
         SELECT true, out_trade_no FROM upd
         UNION ALL
         SELECT false, body_sha256 FROM rep",
    )
    // Prepared once per connection (see `group_commit` on plans): planning this statement
    // cost more than executing it for a group of five.
    .persistent(true)
    .bind(&no)
    .bind(&txn)
    .bind(&at)
    .bind(&bank)
    .bind(&cash)
    .bind(&mch)
    .bind(&app)
    .bind(&openid)
    .bind(&amount)
    .bind(&debit)
    .bind(&credit)
    .bind(&event)
    .bind(&hook)
    .bind(&audit_details)
    .bind(&shas)
    .bind(&body)
    .bind(Kind::Payment.as_str())
    .bind(Source::Notification { notification_id: 0 }.actor())
    .fetch_all(&mut *conn)
    .await?;
    let applied: HashSet<&str> = done.iter().filter(|d| d.0).map(|d| d.1.as_str()).collect();
    let repeated: HashSet<&str> = done.iter().filter(|d| !d.0).map(|d| d.1.as_str()).collect();
    for (i, sha) in &chosen {
        if applied.contains(items[*i].facts.out_trade_no.as_str()) {
            answers[*i] = GroupAnswer::Applied;
        } else if repeated.contains(sha.as_str()) {
            answers[*i] = GroupAnswer::Repeat;
        }
    }
    Ok(answers)
}

/// The `payment.succeeded` webhook payload.
fn payment_webhook(f: &PaymentFacts, late: bool) -> Value {
    json!({
        "out_trade_no": f.out_trade_no,
        "status": "paid",
        "amount": f.total_fee.get(),
        "cash_fee": f.cash_fee.map(|c| c.get()),
        "transaction_id": f.transaction_id,
        "paid_at": f.paid_at,
        "paid_after_close": late,
    })
}

/// The `order.paid` audit details (the previous status is added by the caller).
fn payment_audit(f: &PaymentFacts, late: bool) -> Value {
    let mut details = f.source.to_json();
    details["transaction_id"] = json!(f.transaction_id);
    details["amount"] = json!(f.total_fee.get());
    details["paid_after_close"] = json!(late);
    details
}

fn payment_facts_json(f: &PaymentFacts) -> Value {
    json!({
        "out_trade_no": f.out_trade_no, "mch_id": f.mch_id, "appid": f.appid, "openid": mask(&f.openid),
        "total_fee": f.total_fee.get(), "cash_fee": f.cash_fee.map(|c| c.get()),
        "transaction_id": f.transaction_id, "paid_at": f.paid_at, "bank_type": f.bank_type,
    })
}
