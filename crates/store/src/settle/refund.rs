//! A refund result WeChat reports: [`apply_refund_result`], and the reservation rule.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{RefundStatus, State, check_transition};
use crate::ledger::{self, Kind, Movement};
use crate::{Fen, StoreError, audit, webhooks};

use super::{Source, parse_state};
use crate::anomalies::{NewAnomaly, record_anomaly};

/// A refund's final (or abnormal) result as WeChat reports it (notification or
/// `refundquery`). PROCESSING is not a result: don't call with it.
#[derive(Clone, Debug)]
pub struct RefundFacts {
    pub out_refund_no: String,
    /// WeChat's `refund_id`.
    pub refund_id: String,
    /// The merchant the result belongs to (the key that decrypted it / answered the query).
    pub mch_id: String,
    /// When WeChat named the order (`out_trade_no`), it must be the refund's order.
    pub out_trade_no: Option<String>,
    pub status: RefundResult,
    /// `refund_fee`: must equal the refund's amount.
    pub refund_fee: Fen,
    /// `success_time`, converted from Asia/Shanghai (present when status is Succeeded).
    pub success_time: Option<DateTime<Utc>>,
    /// `refund_recv_accout` (sic): where the money went, e.g. "支付用户零钱".
    pub recv_account: Option<String>,
    pub source: Source,
}

/// WeChat's refund results. Mapping from WeChat: `SUCCESS` → Succeeded, `REFUNDCLOSE` →
/// Closed, `CHANGE` → Abnormal (the money could not reach the user; an operator must act).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundResult {
    Succeeded,
    Closed,
    Abnormal,
}

impl RefundResult {
    /// WeChat's `refund_status` value; PROCESSING and unknown values are not results.
    pub fn from_wechat(s: &str) -> Option<RefundResult> {
        match s {
            "SUCCESS" => Some(RefundResult::Succeeded),
            "REFUNDCLOSE" => Some(RefundResult::Closed),
            "CHANGE" => Some(RefundResult::Abnormal),
            _ => None,
        }
    }

    fn status(self) -> RefundStatus {
        match self {
            RefundResult::Succeeded => RefundStatus::Succeeded,
            RefundResult::Closed => RefundStatus::Closed,
            RefundResult::Abnormal => RefundStatus::Abnormal,
        }
    }
}

/// What [`apply_refund_result`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundApplied {
    /// The refund moved to `status`: ledger posted (succeeded), reservation released
    /// (closed), webhook queued.
    Applied { status: RefundStatus },
    /// The refund already had this result: nothing changed.
    AlreadyApplied,
    /// The facts disagree with the refund (amount, merchant, order, refund_id, or a result
    /// that contradicts a final state): nothing changed, an anomaly was recorded.
    Mismatch { anomaly_id: i64, reason: String },
    /// No refund has this out_refund_no: an anomaly was recorded.
    UnknownRefund { anomaly_id: i64 },
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: i64,
    order_id: i64,
    client_id: Option<Uuid>,
    amount: i64,
    status: String,
    refund_id: Option<String>,
}

/// Applies a refund result, once. Call inside an open transaction and commit after.
///
/// Locks the refund's order, then the refund (the order-first order the refund-creation path
/// uses, so the two never deadlock), cross-checks refund_fee, mch_id, out_trade_no and
/// refund_id, then moves the refund through [`check_transition`]:
/// - Succeeded: posts `Kind::Refund` for refund_fee at success_time, queues
///   `refund.succeeded`;
/// - Closed: releases the reservation in `orders.refunded_amount`, queues `refund.failed`;
/// - Abnormal (CHANGE): keeps the reservation, queues `refund.abnormal`, opens a
///   `refund_abnormal` anomaly for an operator.
///
/// The same result again is [`RefundApplied::AlreadyApplied`]; a result that contradicts a
/// final state (SUCCESS after closed, …) is a `refund_conflict` anomaly.
pub async fn apply_refund_result(conn: &mut PgConnection, f: &RefundFacts) -> Result<RefundApplied, StoreError> {
    let facts_json = refund_facts_json(f);
    let order_id: Option<(i64,)> = sqlx::query_as("SELECT order_id FROM refunds WHERE out_refund_no = $1")
        .bind(&f.out_refund_no)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((order_id,)) = order_id else {
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "unknown_refund",
                reference: &f.out_refund_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: "no refund has this out_refund_no".into(),
                details: json!({"wechat": facts_json}),
                dedupe_key: format!("unknown_refund:{}:{}:{}", f.mch_id, f.out_refund_no, f.refund_id),
            },
        )
        .await?;
        return Ok(RefundApplied::UnknownRefund { anomaly_id: id });
    };
    let (out_trade_no, mch_id, order_client): (String, String, Option<Uuid>) =
        sqlx::query_as("SELECT out_trade_no, mch_id, client_id FROM orders WHERE id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_one(&mut *conn)
            .await?;
    let refund: RefundRow = sqlx::query_as(
        "SELECT id, order_id, client_id, amount, status, refund_id FROM refunds WHERE out_refund_no = $1 FOR UPDATE",
    )
    .bind(&f.out_refund_no)
    .fetch_one(&mut *conn)
    .await?;
    let current: RefundStatus = parse_state(&refund.status)?;
    let target = f.status.status();
    let ours = json!({
        "amount": refund.amount, "status": refund.status, "refund_id": refund.refund_id,
        "out_trade_no": out_trade_no, "mch_id": mch_id,
    });

    let mut differences = Vec::new();
    if refund.amount != f.refund_fee.get() {
        differences.push("refund_fee");
    }
    if mch_id != f.mch_id {
        differences.push("mch_id");
    }
    if f.out_trade_no.as_deref().is_some_and(|n| n != out_trade_no) {
        differences.push("out_trade_no");
    }
    if refund.refund_id.as_deref().is_some_and(|r| r != f.refund_id) {
        differences.push("refund_id");
    }
    if !differences.is_empty() {
        let reason = format!("{} differ from the refund", differences.join(", "));
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "refund_mismatch",
                reference: &f.out_refund_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: reason.clone(),
                details: json!({"wechat": facts_json, "ours": ours, "fields": differences}),
                dedupe_key: format!("refund_mismatch:{}:{}:{:?}", f.out_refund_no, f.refund_id, f.status),
            },
        )
        .await?;
        return Ok(RefundApplied::Mismatch { anomaly_id: id, reason });
    }
    if current == target {
        return Ok(RefundApplied::AlreadyApplied);
    }
    if check_transition(current, target).is_err() {
        let reason = format!("WeChat reports {} but the refund is {}", target.as_str(), current.as_str());
        let id = record_anomaly(
            conn,
            &NewAnomaly {
                kind: "refund_conflict",
                reference: &f.out_refund_no,
                mch_id: &f.mch_id,
                source: &f.source,
                reason: reason.clone(),
                details: json!({"wechat": facts_json, "ours": ours}),
                dedupe_key: format!("refund_conflict:{}:{:?}", f.out_refund_no, f.status),
            },
        )
        .await?;
        return Ok(RefundApplied::Mismatch { anomaly_id: id, reason });
    }

    let succeeded_at = match f.status {
        RefundResult::Succeeded => Some(f.success_time.unwrap_or_else(Utc::now)),
        _ => None,
    };
    let failure = match f.status {
        RefundResult::Closed => Some(("REFUNDCLOSE", "WeChat closed the refund")),
        RefundResult::Abnormal => Some(("CHANGE", "the refund could not reach the user's account")),
        RefundResult::Succeeded => None,
    };
    let updated = sqlx::query(
        "UPDATE refunds SET status = $2, refund_id = coalesce(refund_id, $3), succeeded_at = coalesce($4, succeeded_at),
                refund_recv_account = coalesce($5, refund_recv_account),
                failure_code = $6, failure_message = $7
          WHERE id = $1 AND status = $8",
    )
    .bind(refund.id)
    .bind(target.as_str())
    .bind(&f.refund_id)
    .bind(succeeded_at)
    .bind(&f.recv_account)
    .bind(failure.map(|x| x.0))
    .bind(failure.map(|x| x.1))
    .bind(current.as_str())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!("refund {} changed under its row lock", f.out_refund_no)));
    }

    let client = refund.client_id.or(order_client);
    let event = match f.status {
        RefundResult::Succeeded => {
            let at = succeeded_at.unwrap_or_else(Utc::now);
            ledger::post(conn, &Movement::standard(Kind::Refund, &f.out_refund_no, &mch_id, f.refund_fee, at)).await?;
            "refund.succeeded"
        }
        RefundResult::Closed => {
            release_reservation(conn, refund.order_id, refund.amount).await?;
            "refund.failed"
        }
        RefundResult::Abnormal => {
            record_anomaly(
                conn,
                &NewAnomaly {
                    kind: "refund_abnormal",
                    reference: &f.out_refund_no,
                    mch_id: &f.mch_id,
                    source: &f.source,
                    reason:
                        "WeChat reports CHANGE: the refund did not reach the user; handle it in the merchant platform"
                            .into(),
                    details: json!({"wechat": facts_json, "ours": ours}),
                    dedupe_key: format!("refund_abnormal:{}", f.out_refund_no),
                },
            )
            .await?;
            "refund.abnormal"
        }
    };
    if let Some(client) = client {
        let payload = json!({
            "out_refund_no": f.out_refund_no,
            "out_trade_no": out_trade_no,
            "status": target.as_str(),
            "amount": f.refund_fee.get(),
            "refund_id": f.refund_id,
            "succeeded_at": succeeded_at,
        });
        webhooks::enqueue(conn, client, event, &f.out_refund_no, payload).await?;
    }
    let mut details = f.source.to_json();
    details["refund_id"] = json!(f.refund_id);
    details["amount"] = json!(f.refund_fee.get());
    details["from"] = json!(current.as_str());
    audit::record(conn, &f.source.actor(), &format!("refund.{}", target.as_str()), "refund", &f.out_refund_no, details)
        .await?;
    Ok(RefundApplied::Applied { status: target })
}

/// Gives a refund's reserved amount back to the order (see the module docs for the rule).
/// The CHECK on `refunded_amount >= 0` turns a double release into an error, not bad data.
async fn release_reservation(conn: &mut PgConnection, order_id: i64, amount: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE orders SET refunded_amount = refunded_amount - $2 WHERE id = $1")
        .bind(order_id)
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn refund_facts_json(f: &RefundFacts) -> Value {
    json!({
        "out_refund_no": f.out_refund_no, "refund_id": f.refund_id, "mch_id": f.mch_id,
        "out_trade_no": f.out_trade_no, "status": format!("{:?}", f.status),
        "refund_fee": f.refund_fee.get(), "success_time": f.success_time,
    })
}
