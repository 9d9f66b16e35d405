//! Where a fact about money came from.

use serde_json::{Value, json};

/// Where a fact came from: recorded on the audit line and on anomalies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A verified WeChat notification, stored as `wxpay_notifications.id`.
    Notification { notification_id: i64 },
    /// A `pay/orderquery` answer (payments follow-up, expiry job).
    OrderQuery,
    /// A `pay/refundquery` answer.
    RefundQuery,
    /// A reconciliation repair; `run_id` names the run when there is one.
    Reconciliation { run_id: Option<i64> },
    /// A person, through an admin tool; `actor` is their API client id.
    Operator { actor: String },
    /// The payout and red-packet sender: a send answer or a `gettransferinfo` /
    /// `gethbinfo` answer.
    Sender,
}

impl Source {
    /// The stable name stored in `settlement_anomalies.source` and audit details.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Notification { .. } => "notification",
            Source::OrderQuery => "orderquery",
            Source::RefundQuery => "refundquery",
            Source::Reconciliation { .. } => "reconciliation",
            Source::Operator { .. } => "operator",
            Source::Sender => "sender",
        }
    }

    /// The audit actor: `system:<component>` for machines, the client id for people.
    pub fn actor(&self) -> String {
        match self {
            Source::Operator { actor } => actor.clone(),
            other => format!("system:{}", other.as_str()),
        }
    }

    pub(crate) fn notification_id(&self) -> Option<i64> {
        match self {
            Source::Notification { notification_id } => Some(*notification_id),
            _ => None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match self {
            Source::Notification { notification_id } => {
                json!({"source": "notification", "notification_id": notification_id})
            }
            Source::Reconciliation { run_id } => json!({"source": "reconciliation", "run_id": run_id}),
            Source::Operator { actor } => json!({"source": "operator", "actor": actor}),
            other => json!({"source": other.as_str()}),
        }
    }
}
