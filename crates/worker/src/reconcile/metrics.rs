//! Prometheus metrics of reconciliation, in the default registry (served by `/metrics`).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

use super::report::Report;

/// Unix time of the last completed run per merchant: alert when it is more than ~30 h old.
pub static LAST_SUCCESS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "minipay_reconcile_last_success_timestamp_seconds",
        "Unix time at which the last reconciliation run of the merchant completed",
        &["mch_id"]
    )
    .expect("register minipay_reconcile_last_success_timestamp_seconds")
});

/// Discrepancies of the merchant's latest completed run, by category and status.
pub static DISCREPANCIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "minipay_reconcile_discrepancies",
        "Discrepancies found by the latest reconciliation run, by category and status",
        &["mch_id", "category", "status"]
    )
    .expect("register minipay_reconcile_discrepancies")
});

/// Runs by outcome (completed, failed, waiting, busy, skipped).
pub static RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("minipay_reconcile_runs_total", "Reconciliation runs by outcome", &["mch_id", "outcome"])
        .expect("register minipay_reconcile_runs_total")
});

/// 1 while a day's bill is still missing after the configured deadline (the alert).
pub static OVERDUE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "minipay_reconcile_overdue",
        "1 when yesterday's reconciliation has not completed by the deadline",
        &["mch_id"]
    )
    .expect("register minipay_reconcile_overdue")
});

/// Records a completed run.
pub fn completed(report: &Report) {
    let mch = report.mch_id.as_str();
    LAST_SUCCESS.with_label_values(&[mch]).set(chrono::Utc::now().timestamp());
    RUNS.with_label_values(&[mch, "completed"]).inc();
    OVERDUE.with_label_values(&[mch]).set(0);
    for (cat, c) in &report.categories {
        let held_or_resolved = c.count - c.open - c.repaired;
        DISCREPANCIES.with_label_values(&[mch, cat, "open"]).set(c.open);
        DISCREPANCIES.with_label_values(&[mch, cat, "repaired"]).set(c.repaired);
        DISCREPANCIES.with_label_values(&[mch, cat, "held_or_resolved"]).set(held_or_resolved);
    }
}

/// Counts a run that ended another way.
pub fn outcome(mch_id: &str, outcome: &str) {
    RUNS.with_label_values(&[mch_id, outcome]).inc();
}
