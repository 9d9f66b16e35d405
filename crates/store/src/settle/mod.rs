//! Settlement: where a payment or refund result reported by WeChat is applied.
//!
//! Every source of truth about money — the payment/refund notification, `orderquery` /
//! `refundquery` follow-ups, the order-expiry job, reconciliation repairs, an operator —
//! calls [`apply_payment`] or [`apply_refund_result`], so an order is paid (and the ledger
//! posted, the webhook queued, the audit line written) in exactly one way, exactly once.
//!
//! Both functions run inside the caller's transaction (`&mut PgConnection` of an open
//! transaction) and never commit: the caller stores what it must alongside (the raw
//! notification, a query timestamp) and commits once. They lock the row first
//! (`SELECT … FOR UPDATE`; an order before its refund, the same order the refund-creation path
//! uses), so concurrent deliveries of the same fact serialize and all but the first see the
//! result as already applied.
//!
//! Facts are compared against our records, never trusted over them: a disagreement (amount,
//! openid, appid, mch_id, unknown number, a second transaction for a paid order, conflicting
//! refund states) changes nothing and records a row in `settlement_anomalies` that operators
//! and reconciliation see. Identifiers in the facts are plain strings, not the domain
//! newtypes, on purpose: they are WeChat's claims, and a malformed one is just a mismatch to
//! record, not an input error.
//!
//! Refund reservation rule (agreed with the refund-creation path in `refunds.rs`): creating a
//! refund adds its amount to `orders.refunded_amount`; the amount stays reserved while the
//! refund is pending, processing, unknown, succeeded or abnormal, and is released (subtracted)
//! exactly once, by the transition into `closed` or `failed`.
//!
//! Layout: [`payment`] (a payment: the locked transaction, the one-statement and the grouped
//! forms for notifications), [`refund`] (a refund result), [`source`] (where a fact came
//! from). Anomalies live in [`crate::anomalies`].

use crate::StoreError;
use crate::domain::State;

mod payment;
mod refund;
mod source;

pub use payment::*;
pub use refund::*;
pub use source::*;

fn parse_state<S: State>(s: &str) -> Result<S, StoreError> {
    S::parse(s).ok_or_else(|| StoreError::Conflict(format!("unknown {} status {s:?} in the database", S::ENTITY)))
}
