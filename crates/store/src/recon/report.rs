//! What a run found: discrepancies, their totals per category and kind, repairs.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::StoreError;

/// One discrepancy as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
pub struct Discrepancy {
    pub id: i64,
    pub run_id: i64,
    pub category: String,
    pub kind: String,
    pub reference: String,
    pub transaction_id: Option<String>,
    pub our_amount: Option<i64>,
    pub their_amount: Option<i64>,
    pub our_status: Option<String>,
    pub their_status: Option<String>,
    pub our_fee_millifen: Option<i64>,
    pub their_fee_millifen: Option<i64>,
    pub detail: String,
    pub status: String,
    pub repaired_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A run's discrepancies, in a stable order (category, kind, reference).
pub async fn discrepancies(conn: &mut PgConnection, run_id: i64) -> Result<Vec<Discrepancy>, StoreError> {
    discrepancies_first(conn, run_id, i64::MAX).await
}

/// The first `limit` of a run's discrepancies, in the order of [`discrepancies`]: a report
/// lists a bounded number (a misconfigured merchant can produce a million) while the counts
/// come from [`category_totals`].
pub async fn discrepancies_first(
    conn: &mut PgConnection,
    run_id: i64,
    limit: i64,
) -> Result<Vec<Discrepancy>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, run_id, category, kind, reference, transaction_id, our_amount, their_amount, our_status,
                their_status, our_fee_millifen, their_fee_millifen, detail, status, repaired_at
           FROM recon_discrepancies WHERE run_id = $1 ORDER BY category, kind, reference LIMIT $2",
    )
    .bind(run_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Marks a discrepancy repaired and writes the audit line, in the caller's transaction (the
/// one that applied the repair).
pub async fn mark_repaired(
    conn: &mut PgConnection,
    discrepancy_id: i64,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE recon_discrepancies SET status = 'repaired', repaired_at = now() WHERE id = $1 AND status = 'open'
         RETURNING reference",
    )
    .bind(discrepancy_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((reference,)) = row else {
        return Err(StoreError::Conflict(format!("discrepancy {discrepancy_id} is not open")));
    };
    crate::audit::record(
        conn,
        "system:reconciliation",
        "reconciliation.repair",
        "discrepancy",
        &discrepancy_id.to_string(),
        serde_json::json!({"reference": reference, "repair": details}),
    )
    .await
}

/// Per-category totals of a run.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CategoryTotal {
    pub category: String,
    pub count: i64,
    pub our_amount: i64,
    pub their_amount: i64,
    pub repaired: i64,
    pub open: i64,
}

/// Counts and amounts per category of a run.
pub async fn category_totals(conn: &mut PgConnection, run_id: i64) -> Result<Vec<CategoryTotal>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT category, count(*) AS count, coalesce(sum(our_amount), 0)::bigint AS our_amount,
                coalesce(sum(their_amount), 0)::bigint AS their_amount,
                count(*) FILTER (WHERE status = 'repaired') AS repaired,
                count(*) FILTER (WHERE status = 'open') AS open
           FROM recon_discrepancies WHERE run_id = $1 GROUP BY category ORDER BY category",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?)
}

/// For one kind of movement on one day: the bill's total, our ledger's total, and the part of
/// the difference the run's open discrepancies explain.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
pub struct KindTotals {
    pub kind: String,
    pub bill: i64,
    pub ledger: i64,
    /// Σ (their − our) over the run's discrepancies of this kind, except fee mismatches
    /// (fees are totalled apart) and repaired ones (the repair is in the ledger now).
    pub explained: i64,
}

impl KindTotals {
    /// Whether bill − ledger is exactly what the discrepancies say.
    pub fn balanced(&self) -> bool {
        self.bill - self.ledger == self.explained
    }
}

/// Bill vs ledger totals per kind for a run's day (computed after repairs).
pub async fn kind_totals(
    conn: &mut PgConnection,
    run_id: i64,
    mch_id: &str,
    bill_date: NaiveDate,
    with_fund_flow: bool,
) -> Result<Vec<KindTotals>, StoreError> {
    Ok(sqlx::query_as(
        "WITH bounds AS (
             SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
                    ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
         ), kinds(kind) AS (
             SELECT unnest(CASE WHEN $4 THEN ARRAY['payment', 'refund', 'payout', 'redpack_sent', 'redpack_refund']
                                ELSE ARRAY['payment', 'refund'] END)
         ), bill AS (
             SELECT CASE WHEN is_refund THEN 'refund' ELSE 'payment' END AS kind,
                    sum(CASE WHEN is_refund THEN coalesce(requested_refund, refund_amount)
                             ELSE coalesce(order_amount, settlement) END)::bigint AS amount
               FROM recon_trade_rows WHERE mch_id = $2 AND bill_date = $3 GROUP BY 1
             UNION ALL
             SELECT kind, sum(amount)::bigint FROM (
                 SELECT CASE WHEN business_name LIKE '%企业付款%' OR business_type LIKE '%企业付款%' THEN 'payout'
                             WHEN (business_name LIKE '%红包%' OR business_type LIKE '%红包%') AND NOT income
                               THEN 'redpack_sent'
                             WHEN (business_name LIKE '%红包%' OR business_type LIKE '%红包%') AND income
                               THEN 'redpack_refund' END AS kind, amount
                   FROM recon_fund_rows WHERE mch_id = $2 AND bill_date = $3) s
              WHERE kind IS NOT NULL GROUP BY kind
         ), ledger AS (
             SELECT t.kind, sum(e.amount)::bigint AS amount
               FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id AND e.amount > 0, bounds
              WHERE t.mch_id = $2 AND t.occurred_at >= bounds.lo AND t.occurred_at < bounds.hi
              GROUP BY t.kind
         ), expl AS (
             SELECT kind, sum(coalesce(their_amount, 0) - coalesce(our_amount, 0))::bigint AS amount
               FROM recon_discrepancies
              WHERE run_id = $1 AND category <> 'fee_mismatch' AND status <> 'repaired'
              GROUP BY kind
         )
         SELECT k.kind, coalesce(b.amount, 0)::bigint AS bill, coalesce(l.amount, 0)::bigint AS ledger,
                coalesce(x.amount, 0)::bigint AS explained
           FROM kinds k LEFT JOIN bill b USING (kind) LEFT JOIN ledger l USING (kind) LEFT JOIN expl x USING (kind)",
    )
    .bind(run_id)
    .bind(mch_id)
    .bind(bill_date)
    .bind(with_fund_flow)
    .fetch_all(conn)
    .await?)
}

/// The run's open missing_local payments whose order exists and is not paid: the ones a
/// query can repair.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RepairCandidate {
    pub discrepancy_id: i64,
    pub out_trade_no: String,
    pub their_amount: Option<i64>,
}

pub async fn repair_candidates(conn: &mut PgConnection, run_id: i64) -> Result<Vec<RepairCandidate>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT d.id AS discrepancy_id, d.reference AS out_trade_no, d.their_amount
           FROM recon_discrepancies d JOIN orders o ON o.out_trade_no = d.reference AND o.mch_id = d.mch_id
          WHERE d.run_id = $1 AND d.category = 'missing_local' AND d.kind = 'payment' AND d.status = 'open'
            AND o.status <> 'paid'
          ORDER BY d.id",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?)
}
