//! The set-based matching of a day's bill against our orders, refunds and ledger: a handful
//! of `INSERT … SELECT` statements over hash joins, in the caller's transaction.

use chrono::NaiveDate;
use sqlx::PgConnection;

use super::copy::ensure_month;
use crate::StoreError;

/// What [`match_day`] needs.
#[derive(Clone, Debug)]
pub struct MatchParams<'a> {
    pub run_id: i64,
    pub mch_id: &'a str,
    pub bill_date: NaiveDate,
    /// The merchant's fee rate in millionths (0.60 % = 6000); `None` skips fee checks.
    pub fee_rate_ppm: Option<i64>,
    /// How close to midnight (seconds) a payment or refund must be to be held as cross-day.
    pub cross_day_window_secs: i64,
    /// How many neighbouring days' bills may settle a cross-day item (3).
    pub hold_days: i32,
    /// Whether a fund-flow bill was loaded; without one, payouts and red packets are not
    /// matched (they would all look missing_remote).
    pub with_fund_flow: bool,
}

// The statements below share parameters: $1 run_id, $2 mch_id, $3 bill_date, then their own.
// The day's bounds are computed in SQL from the Shanghai calendar day.

/// Payments: one hash full join of the day's bill payment rows with our orders paid that day;
/// only the rows that differ are kept (a temp table dropped at commit).
///
/// Our amount (total_fee) is compared with 订单金额, or 应结订单金额 where the layout has no
/// 订单金额 (legacy bills' 总金额). Guess: without coupons both equal total_fee; we issue none.
/// The expected fee is amount × rate in thousandths of a fen, rounded half up (guess: WeChat
/// states the exact product with five decimals, as its sample bills show 0.01 × 0.6 % = 0.00006).
const PAY_DIFF: &str = "
CREATE TEMP TABLE recon_pay_diff ON COMMIT DROP AS
WITH bounds AS (
    SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
), b AS (
    SELECT out_trade_no, transaction_id, trade_state, coalesce(order_amount, settlement) AS amount, fee_millifen
      FROM recon_trade_rows WHERE mch_id = $2 AND bill_date = $3 AND NOT is_refund
), o AS (
    SELECT out_trade_no, transaction_id, amount, paid_at
      FROM orders, bounds WHERE mch_id = $2 AND status = 'paid' AND paid_at >= bounds.lo AND paid_at < bounds.hi
)
SELECT b.out_trade_no AS b_no, b.transaction_id AS b_tx, b.trade_state AS b_state, b.amount AS b_amount,
       b.fee_millifen AS b_fee, o.out_trade_no AS o_no, o.transaction_id AS o_tx, o.amount AS o_amount,
       o.paid_at AS o_paid_at,
       CASE WHEN $4::bigint IS NULL OR o.amount IS NULL THEN NULL ELSE (o.amount * $4::bigint + 500) / 1000 END AS o_fee
  FROM b FULL JOIN o ON o.out_trade_no = b.out_trade_no
 WHERE b.out_trade_no IS NULL OR o.out_trade_no IS NULL
    OR b.amount <> o.amount OR b.trade_state <> 'SUCCESS' OR b.transaction_id <> o.transaction_id
    OR ($4::bigint IS NOT NULL AND b.fee_millifen <> (o.amount * $4::bigint + 500) / 1000)";

const PAY_BOTH: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, our_fee_millifen,
                                 their_fee_millifen, detail, status)
SELECT $1, $2, $3, c.category, 'payment', d.b_no, d.b_tx, d.o_amount, d.b_amount, 'paid', d.b_state,
       CASE WHEN c.category = 'fee_mismatch' THEN d.o_fee END,
       CASE WHEN c.category = 'fee_mismatch' THEN d.b_fee END,
       c.detail, 'open'
  FROM recon_pay_diff d
  CROSS JOIN LATERAL (VALUES
      ('amount_mismatch', d.b_amount <> d.o_amount, 'amounts differ'),
      ('status_mismatch', d.b_state <> 'SUCCESS' OR d.b_tx <> d.o_tx,
       CASE WHEN d.b_tx <> d.o_tx THEN 'transaction_id differs: ours ' || d.o_tx
            ELSE 'the bill says ' || d.b_state END),
      -- a fee is only compared when the amounts agree: otherwise the amount mismatch says it
      ('fee_mismatch', d.o_fee IS NOT NULL AND d.b_amount = d.o_amount AND d.b_fee <> d.o_fee,
       'fee differs from the configured rate')
  ) AS c(category, hit, detail)
 WHERE d.b_no IS NOT NULL AND d.o_no IS NOT NULL AND c.hit";

/// Bill-only successful payments: paid on another day in our books → cross_day (resolved:
/// the other day's run held it); otherwise we missed it → missing_local.
const PAY_BILL_ONLY: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, detail, status, resolved_at)
SELECT $1, $2, $3,
       CASE WHEN x.status = 'paid' THEN 'cross_day' ELSE 'missing_local' END,
       'payment', d.b_no, d.b_tx, NULL, d.b_amount, x.status, d.b_state,
       CASE WHEN x.status = 'paid'
            THEN 'paid on ' || to_char(x.paid_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI:SS') || ' in our books'
            WHEN x.id IS NULL THEN 'no order with this out_trade_no'
            ELSE 'our order is ' || x.status || ', amount ' || x.amount END,
       CASE WHEN x.status = 'paid' THEN 'resolved' ELSE 'open' END,
       CASE WHEN x.status = 'paid' THEN now() END
  FROM recon_pay_diff d
  LEFT JOIN orders x ON x.out_trade_no = d.b_no AND x.mch_id = $2
 WHERE d.o_no IS NULL AND d.b_state = 'SUCCESS'";

/// Ours-only payments: in a neighbouring day's bill → cross_day resolved; near midnight and
/// the neighbouring bills not all loaded yet → cross_day held; otherwise missing_remote.
/// $4 window seconds, $5 hold days.
const PAY_OURS_ONLY: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, detail, status, resolved_at)
WITH bounds AS (
    SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
), loaded AS (
    SELECT count(DISTINCT bill_date) AS n FROM recon_bill_files
     WHERE mch_id = $2 AND bill_type = 'trade_all' AND row_count IS NOT NULL
       AND bill_date > $3::date AND bill_date <= $3::date + $5::int
), c AS MATERIALIZED (
    -- `= ANY(days)` rather than a date range: the index is probed once per neighbouring day
    -- instead of scanning this day's (possibly million) rows for each item.
    SELECT d.*,
           (SELECT min(n.bill_date) FROM recon_trade_rows n
             WHERE n.mch_id = $2 AND n.out_trade_no = d.o_no AND NOT n.is_refund
               AND n.bill_date = ANY (ARRAY(SELECT $3::date + g FROM generate_series(-$5::int, $5::int) g
                                             WHERE g <> 0))) AS other_day,
           (d.o_paid_at >= bounds.hi - make_interval(secs => $4::bigint)
            OR d.o_paid_at < bounds.lo + make_interval(secs => $4::bigint)) AS near_midnight
      FROM recon_pay_diff d, bounds WHERE d.b_no IS NULL
)
SELECT $1, $2, $3,
       CASE WHEN c.other_day IS NOT NULL OR (c.near_midnight AND loaded.n < $5::int) THEN 'cross_day'
            ELSE 'missing_remote' END,
       'payment', c.o_no, c.o_tx, c.o_amount, NULL, 'paid', NULL,
       CASE WHEN c.other_day IS NOT NULL THEN 'in the bill of ' || c.other_day
            WHEN c.near_midnight AND loaded.n < $5::int THEN 'near midnight: held for the following bills'
            ELSE 'not in the bill' END,
       CASE WHEN c.other_day IS NOT NULL THEN 'resolved'
            WHEN c.near_midnight AND loaded.n < $5::int THEN 'held' ELSE 'open' END,
       CASE WHEN c.other_day IS NOT NULL THEN now() END
  FROM c, loaded";

/// Refunds: bill refund rows of the day against our refunds that succeeded that day.
///
/// Guess: a refund row is in the bill of the day the refund succeeded. If WeChat books it on
/// the day it was requested, a refund requested just before midnight that succeeds after it is
/// reported as cross_day (held, then resolved by the neighbouring bill), not as missing.
const REF_DIFF: &str = "
CREATE TEMP TABLE recon_ref_diff ON COMMIT DROP AS
WITH bounds AS (
    SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
), b AS (
    SELECT out_refund_no, transaction_id, coalesce(refund_status, '') AS refund_status,
           coalesce(requested_refund, refund_amount) AS amount
      FROM recon_trade_rows WHERE mch_id = $2 AND bill_date = $3 AND is_refund
), o AS (
    SELECT r.out_refund_no, ord.transaction_id, r.amount, r.succeeded_at
      FROM refunds r JOIN orders ord ON ord.id = r.order_id, bounds
     WHERE ord.mch_id = $2 AND r.status = 'succeeded' AND r.succeeded_at >= bounds.lo AND r.succeeded_at < bounds.hi
)
SELECT b.out_refund_no AS b_no, b.transaction_id AS b_tx, b.refund_status AS b_state, b.amount AS b_amount,
       o.out_refund_no AS o_no, o.transaction_id AS o_tx, o.amount AS o_amount, o.succeeded_at AS o_at
  FROM b FULL JOIN o ON o.out_refund_no = b.out_refund_no
 WHERE b.out_refund_no IS NULL OR o.out_refund_no IS NULL OR b.amount <> o.amount OR b.refund_status <> 'SUCCESS'";

const REF_BOTH: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, detail, status)
SELECT $1, $2, $3, c.category, 'refund', d.b_no, d.b_tx, d.o_amount, d.b_amount, 'succeeded', d.b_state, c.detail, 'open'
  FROM recon_ref_diff d
  CROSS JOIN LATERAL (VALUES
      ('amount_mismatch', d.b_amount <> d.o_amount, 'refund amounts differ'),
      ('status_mismatch', d.b_state <> 'SUCCESS', 'the bill says ' || d.b_state)
  ) AS c(category, hit, detail)
 WHERE d.b_no IS NOT NULL AND d.o_no IS NOT NULL AND c.hit";

/// Bill-only refunds. Ours succeeded on another day → cross_day resolved; ours exists in
/// another state → status_mismatch unless the states agree (both still processing, both
/// closed); no refund of ours → missing_local (a refund we never heard of).
const REF_BILL_ONLY: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, detail, status, resolved_at)
SELECT $1, $2, $3, k.category, 'refund', d.b_no, d.b_tx, NULL, d.b_amount, x.status, d.b_state, k.detail,
       CASE WHEN k.category = 'cross_day' THEN 'resolved' ELSE 'open' END,
       CASE WHEN k.category = 'cross_day' THEN now() END
  FROM recon_ref_diff d
  LEFT JOIN (SELECT r.*, ord.mch_id FROM refunds r JOIN orders ord ON ord.id = r.order_id) x
         ON x.out_refund_no = d.b_no AND x.mch_id = $2
  CROSS JOIN LATERAL (SELECT
      CASE WHEN x.id IS NULL THEN 'missing_local'
           WHEN x.status = 'succeeded' THEN 'cross_day'
           ELSE 'status_mismatch' END AS category,
      CASE WHEN x.id IS NULL THEN 'no refund with this out_refund_no'
           WHEN x.status = 'succeeded'
             THEN 'succeeded on ' || to_char(x.succeeded_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI:SS')
                  || ' in our books'
           ELSE 'our refund is ' || x.status || ', amount ' || x.amount END AS detail
  ) k
 WHERE d.o_no IS NULL
   AND NOT (x.id IS NULL AND d.b_state NOT IN ('SUCCESS', 'PROCESSING'))
   AND NOT (x.status IN ('pending', 'processing', 'unknown') AND d.b_state = 'PROCESSING')
   AND NOT (x.status IN ('closed', 'failed') AND d.b_state = 'REFUNDCLOSE')
   AND NOT (x.status = 'abnormal' AND d.b_state = 'CHANGE')";

const REF_OURS_ONLY: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, transaction_id,
                                 our_amount, their_amount, our_status, their_status, detail, status, resolved_at)
WITH bounds AS (
    SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
), loaded AS (
    SELECT count(DISTINCT bill_date) AS n FROM recon_bill_files
     WHERE mch_id = $2 AND bill_type = 'trade_all' AND row_count IS NOT NULL
       AND bill_date > $3::date AND bill_date <= $3::date + $5::int
), c AS MATERIALIZED (
    -- `= ANY(days)` rather than a date range: the index is probed once per neighbouring day
    -- instead of scanning this day's (possibly million) rows for each item.
    SELECT d.*,
           (SELECT min(n.bill_date) FROM recon_trade_rows n
             WHERE n.mch_id = $2 AND n.out_refund_no = d.o_no AND n.is_refund
               AND n.bill_date = ANY (ARRAY(SELECT $3::date + g FROM generate_series(-$5::int, $5::int) g
                                             WHERE g <> 0))) AS other_day,
           (d.o_at >= bounds.hi - make_interval(secs => $4::bigint)
            OR d.o_at < bounds.lo + make_interval(secs => $4::bigint)) AS near_midnight
      FROM recon_ref_diff d, bounds WHERE d.b_no IS NULL
)
SELECT $1, $2, $3,
       CASE WHEN c.other_day IS NOT NULL OR (c.near_midnight AND loaded.n < $5::int) THEN 'cross_day'
            ELSE 'missing_remote' END,
       'refund', c.o_no, c.o_tx, c.o_amount, NULL, 'succeeded', NULL,
       CASE WHEN c.other_day IS NOT NULL THEN 'in the bill of ' || c.other_day
            WHEN c.near_midnight AND loaded.n < $5::int THEN 'near midnight: held for the following bills'
            ELSE 'not in the bill' END,
       CASE WHEN c.other_day IS NOT NULL THEN 'resolved'
            WHEN c.near_midnight AND loaded.n < $5::int THEN 'held' ELSE 'open' END,
       CASE WHEN c.other_day IS NOT NULL THEN now() END
  FROM c, loaded";

/// Cross-day items of this run that are held go on the hold list (one entry per item; a
/// re-run of the same day refreshes it).
const HOLD: &str = "
INSERT INTO recon_held_items (mch_id, kind, reference, our_date, our_amount, hold_until, status, run_id)
SELECT $2, kind, reference, $3, our_amount, $3::date + $4::int, 'held', $1
  FROM recon_discrepancies WHERE run_id = $1 AND category = 'cross_day' AND status = 'held'
ON CONFLICT (mch_id, kind, reference) DO UPDATE
   SET our_date = EXCLUDED.our_date, our_amount = EXCLUDED.our_amount, hold_until = EXCLUDED.hold_until,
       status = 'held', matched_date = NULL, run_id = EXCLUDED.run_id";

/// Held items that this day's bill settles: the hold is matched and the earlier runs'
/// held discrepancies resolved.
const RELEASE_MATCHED: &str = "
WITH m AS (
    UPDATE recon_held_items h SET status = 'matched', matched_date = $3
     WHERE h.mch_id = $2 AND h.status = 'held' AND h.our_date <> $3::date
       AND EXISTS (SELECT 1 FROM recon_trade_rows t
                    WHERE t.mch_id = $2 AND t.bill_date = $3
                      AND ((h.kind = 'payment' AND NOT t.is_refund AND t.out_trade_no = h.reference)
                        OR (h.kind = 'refund' AND t.is_refund AND t.out_refund_no = h.reference)))
    RETURNING h.kind, h.reference
)
UPDATE recon_discrepancies d SET status = 'resolved', resolved_at = now(),
       detail = d.detail || '; found in the bill of ' || $3::date
  FROM m
 WHERE d.mch_id = $2 AND d.category = 'cross_day' AND d.status = 'held' AND d.kind = m.kind
   AND d.reference = m.reference AND d.run_id <> $1";

/// Held items whose last chance was this day's bill: called missing now (missing_remote in
/// this run), and their held discrepancy resolved into it.
const EXPIRE_HELD: &str = "
WITH e AS (
    UPDATE recon_held_items h SET status = 'expired'
     WHERE h.mch_id = $2 AND h.status = 'held' AND h.hold_until <= $3::date AND h.our_date <> $3::date
    RETURNING h.kind, h.reference, h.our_amount, h.our_date
), ins AS (
    INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, our_amount, their_amount,
                                     our_status, detail, status)
    SELECT $1, $2, $3, 'missing_remote', e.kind, e.reference, e.our_amount, NULL, 'held',
           'ours on ' || e.our_date || ', in none of the bills up to ' || $3::date, 'open'
      FROM e
    ON CONFLICT (run_id, category, kind, reference) DO NOTHING
)
UPDATE recon_discrepancies d SET status = 'resolved', resolved_at = now(),
       detail = d.detail || '; not found by ' || $3::date || ', reported as missing_remote in run ' || $1
  FROM e
 WHERE d.mch_id = $2 AND d.category = 'cross_day' AND d.status = 'held' AND d.kind = e.kind
   AND d.reference = e.reference";

/// Payouts and red packets: the day's fund-flow rows classified by business name/type,
/// against our ledger postings of those kinds that day.
///
/// 微信支付业务单号 is WeChat's number (payment_no / send_listid), mapped to ours through the
/// payouts and redpacks tables. Guess: when no record has that number, 业务凭证号
/// (`voucher_no`) is taken as the merchant's number. Rows are classified by 业务名称/业务类型: 企业付款 → payout,
/// 红包 expense → red packet sent, 红包 income → red packet refund; everything else
/// (transactions, refunds, fees, withdrawals) is matched through the trade bill, not here.
const FUND_MATCH: &str = "
INSERT INTO recon_discrepancies (run_id, mch_id, bill_date, category, kind, reference, our_amount, their_amount,
                                 detail, status)
WITH bounds AS (
    SELECT ($3::date)::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           ($3::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai' AS hi
), s AS (
    SELECT CASE WHEN business_name LIKE '%企业付款%' OR business_type LIKE '%企业付款%' THEN 'payout'
                WHEN (business_name LIKE '%红包%' OR business_type LIKE '%红包%') AND NOT income THEN 'redpack_sent'
                WHEN (business_name LIKE '%红包%' OR business_type LIKE '%红包%') AND income THEN 'redpack_refund'
           END AS kind, business_no, voucher_no, amount
      FROM recon_fund_rows WHERE mch_id = $2 AND bill_date = $3
), f AS (
    -- WeChat's number (payment_no / send_listid) leads to our merchant number through the
    -- payout and red-packet records; without such a record, 业务凭证号 is taken as ours.
    SELECT s.kind, coalesce(p.partner_trade_no, r.mch_billno, s.voucher_no) AS reference, sum(s.amount)::bigint AS amount
      FROM s
      LEFT JOIN payouts p ON s.kind = 'payout' AND p.payment_no = s.business_no
      LEFT JOIN redpacks r ON s.kind IN ('redpack_sent', 'redpack_refund') AND r.send_listid = s.business_no
     WHERE s.kind IS NOT NULL
     GROUP BY 1, 2
), l AS (
    SELECT t.kind, t.reference, sum(e.amount)::bigint AS amount
      FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id AND e.amount > 0, bounds
     WHERE t.mch_id = $2 AND t.kind IN ('payout', 'redpack_sent', 'redpack_refund')
       AND t.occurred_at >= bounds.lo AND t.occurred_at < bounds.hi
     GROUP BY t.kind, t.reference
)
SELECT $1, $2, $3,
       CASE WHEN l.reference IS NULL THEN 'missing_local' WHEN f.reference IS NULL THEN 'missing_remote'
            ELSE 'amount_mismatch' END,
       coalesce(f.kind, l.kind), coalesce(f.reference, l.reference), l.amount, f.amount,
       CASE WHEN l.reference IS NULL THEN 'in the fund-flow bill, not in our ledger'
            WHEN f.reference IS NULL THEN 'in our ledger, not in the fund-flow bill'
            ELSE 'amounts differ' END,
       'open'
  FROM f FULL JOIN l ON l.kind = f.kind AND l.reference = f.reference
 WHERE f.reference IS NULL OR l.reference IS NULL OR f.amount <> l.amount";

/// Runs every matching statement for one (merchant, day) inside the caller's transaction,
/// after this run's rows are loaded. Returns the number of discrepancies inserted.
pub async fn match_day(conn: &mut PgConnection, p: &MatchParams<'_>) -> Result<u64, StoreError> {
    // Planner statistics of the freshly loaded rows (without them a million-row join may be
    // planned as a nested loop): the day's partition only, and only the join columns, which
    // costs a fifth of analyzing the partitioned table.
    ensure_month(&mut *conn, p.bill_date).await?;
    let partition = format!("recon_trade_rows_{}", p.bill_date.format("%Y%m"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ANALYZE {partition} (mch_id, bill_date, is_refund, out_trade_no, out_refund_no)"
    )))
    .execute(&mut *conn)
    .await?;
    // The day's hash joins fit in memory instead of spilling to disk in batches (server
    // memory, for this transaction only).
    sqlx::query("SET LOCAL work_mem = '256MB'").execute(&mut *conn).await?;
    sqlx::query(PAY_DIFF)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .bind(p.fee_rate_ppm)
        .execute(&mut *conn)
        .await?;
    let mut n = 0;
    n += sqlx::query(PAY_BOTH)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query(PAY_BILL_ONLY)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query(PAY_OURS_ONLY)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .bind(p.cross_day_window_secs)
        .bind(p.hold_days)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query(REF_DIFF).bind(p.run_id).bind(p.mch_id).bind(p.bill_date).execute(&mut *conn).await?;
    n += sqlx::query(REF_BOTH)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query(REF_BILL_ONLY)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query(REF_OURS_ONLY)
        .bind(p.run_id)
        .bind(p.mch_id)
        .bind(p.bill_date)
        .bind(p.cross_day_window_secs)
        .bind(p.hold_days)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if p.with_fund_flow {
        n += sqlx::query(FUND_MATCH)
            .bind(p.run_id)
            .bind(p.mch_id)
            .bind(p.bill_date)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    sqlx::query(RELEASE_MATCHED).bind(p.run_id).bind(p.mch_id).bind(p.bill_date).execute(&mut *conn).await?;
    sqlx::query(HOLD).bind(p.run_id).bind(p.mch_id).bind(p.bill_date).bind(p.hold_days).execute(&mut *conn).await?;
    let (expired,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM recon_held_items WHERE mch_id = $1 AND status = 'held' AND hold_until <= $2 AND our_date <> $2",
    )
    .bind(p.mch_id)
    .bind(p.bill_date)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(EXPIRE_HELD).bind(p.run_id).bind(p.mch_id).bind(p.bill_date).execute(&mut *conn).await?;
    Ok(n + expired as u64)
}

// ---------------------------------------------------------------------------------------
// Discrepancies and reports
