//! Reconciliation storage: bill files (raw bytes + sha256), bill rows loaded with COPY, runs,
//! discrepancies and cross-day holds, and the set-based matching of a day's bill against our
//! orders, refunds and ledger.
//!
//! - Files: [`find_file`] / [`insert_file`] / [`insert_chunk`] keep the body exactly as
//!   received, in 1 MiB chunks, keyed by sha256 so the same bytes fetched twice are one file.
//! - Rows: [`TradeRowEncoder`] / [`FundRowEncoder`] turn parsed bill records into Postgres COPY
//!   data (binary for the big trade bill, text for the small fund flow); [`copy_trade_rows`] / [`copy_fund_rows`] open the COPY the caller streams into, so a
//!   bill is never in memory as a whole.
//! - Runs: [`try_start_run`] lets exactly one worker run a (merchant, date) at a time
//!   (advisory lock + a partial unique index on `status = 'running'`, plus a lease so a dead
//!   worker's run is taken over); every run is kept.
//! - Matching: [`match_day`] inserts the discrepancies of a run with a handful of
//!   `INSERT … SELECT` statements over hash joins (no per-row round trips), in the caller's
//!   transaction.
//!
//! Days are Asia/Shanghai days: WeChat cuts its bills at Beijing midnight.

use std::io::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, PgPool};
use wxpay::bill::{FlowDirection, FundFlowRecord, TradeRecord};

use crate::StoreError;

/// Size of a stored raw chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Which bill a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillKind {
    /// `downloadbill` bill_type=ALL.
    TradeAll,
    /// `downloadfundflow` account_type=Basic.
    FundflowBasic,
}

impl BillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BillKind::TradeAll => "trade_all",
            BillKind::FundflowBasic => "fundflow_basic",
        }
    }
}

/// A stored bill file.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct BillFile {
    pub id: i64,
    pub sha256: String,
    pub gzip: bool,
    pub size_bytes: i64,
    /// `None` until its rows were loaded.
    pub row_count: Option<i64>,
    pub summary: Option<serde_json::Value>,
}

/// What to record about a new file.
#[derive(Clone, Debug)]
pub struct NewBillFile<'a> {
    pub mch_id: &'a str,
    pub bill_date: NaiveDate,
    pub kind: BillKind,
    /// `download`, `file` (`--bill-file`) or `generated` (benchmark).
    pub source: &'a str,
    pub gzip: bool,
    pub sha256: &'a str,
    pub size_bytes: i64,
}

/// The file with these exact bytes, if already stored.
pub async fn find_file(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
    kind: BillKind,
    sha256: &str,
) -> Result<Option<BillFile>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, sha256, gzip, size_bytes, row_count, summary FROM recon_bill_files
          WHERE mch_id = $1 AND bill_date = $2 AND bill_type = $3 AND sha256 = $4",
    )
    .bind(mch_id)
    .bind(bill_date)
    .bind(kind.as_str())
    .bind(sha256)
    .fetch_optional(conn)
    .await?)
}

/// Records a new file (rows not loaded yet). Call in the transaction that stores its chunks
/// and rows, so a file exists iff all of it does.
pub async fn insert_file(conn: &mut PgConnection, f: &NewBillFile<'_>) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO recon_bill_files (mch_id, bill_date, bill_type, source, gzip, sha256, size_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(f.mch_id)
    .bind(f.bill_date)
    .bind(f.kind.as_str())
    .bind(f.source)
    .bind(f.gzip)
    .bind(f.sha256)
    .bind(f.size_bytes)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Stores one chunk of a file's raw bytes (`seq` from 0).
pub async fn insert_chunk(conn: &mut PgConnection, file_id: i64, seq: i32, bytes: &[u8]) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO recon_bill_chunks (file_id, seq, bytes) VALUES ($1, $2, $3)")
        .bind(file_id)
        .bind(seq)
        .bind(bytes)
        .execute(conn)
        .await?;
    Ok(())
}

/// A stored file's raw bytes, chunk by chunk in order (for audits and tests).
pub async fn file_chunks(conn: &mut PgConnection, file_id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT bytes FROM recon_bill_chunks WHERE file_id = $1 ORDER BY seq")
        .bind(file_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Marks a file's rows as loaded, with the checked summary.
pub async fn set_file_loaded(
    conn: &mut PgConnection,
    file_id: i64,
    row_count: i64,
    summary: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE recon_bill_files SET row_count = $2, summary = $3 WHERE id = $1")
        .bind(file_id)
        .bind(row_count)
        .bind(summary)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates the month partition of `recon_trade_rows` for `day` if missing. Its own statement
/// (DDL), best called outside the big load transaction.
pub async fn ensure_month(conn: &mut PgConnection, day: NaiveDate) -> Result<(), StoreError> {
    sqlx::query("SELECT recon_ensure_month($1)").bind(day).execute(conn).await?;
    Ok(())
}

/// Removes the rows of older files of the same (merchant, date, kind): only the newest
/// file's rows are matched. Call before loading a new file.
pub async fn clear_rows(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
    kind: BillKind,
) -> Result<u64, StoreError> {
    let q = match kind {
        BillKind::TradeAll => "DELETE FROM recon_trade_rows WHERE mch_id = $1 AND bill_date = $2",
        BillKind::FundflowBasic => "DELETE FROM recon_fund_rows WHERE mch_id = $1 AND bill_date = $2",
    };
    Ok(sqlx::query(q).bind(mch_id).bind(bill_date).execute(conn).await?.rows_affected())
}

/// Whether the rows loaded for (merchant, date, kind) are those of `file_id`.
pub async fn rows_are_from(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
    kind: BillKind,
    file_id: i64,
) -> Result<bool, StoreError> {
    let q = match kind {
        BillKind::TradeAll => {
            "SELECT coalesce(bool_and(file_id = $3), false) FROM
               (SELECT file_id FROM recon_trade_rows WHERE mch_id = $1 AND bill_date = $2 LIMIT 1) s"
        }
        BillKind::FundflowBasic => {
            "SELECT coalesce(bool_and(file_id = $3), false) FROM
               (SELECT file_id FROM recon_fund_rows WHERE mch_id = $1 AND bill_date = $2 LIMIT 1) s"
        }
    };
    let (ok,): (bool,) = sqlx::query_as(q).bind(mch_id).bind(bill_date).bind(file_id).fetch_one(conn).await?;
    Ok(ok)
}

const TRADE_COPY: &str = "COPY recon_trade_rows (file_id, mch_id, bill_date, line, is_refund, trade_time, \
     transaction_id, out_trade_no, trade_state, settlement, order_amount, refund_id, out_refund_no, refund_amount, \
     requested_refund, refund_status, fee_millifen, rate) FROM STDIN (FORMAT binary)";

const FUND_COPY: &str = "COPY recon_fund_rows (file_id, mch_id, bill_date, line, booked_at, business_no, flow_no, \
     business_name, business_type, income, amount, remark, voucher_no) FROM STDIN";

/// Opens a binary COPY into `recon_trade_rows`; send [`TradeRowEncoder::HEADER`], batches
/// from [`TradeRowEncoder`], then [`TradeRowEncoder::TRAILER`], and finish.
pub async fn copy_trade_rows(conn: &mut PgConnection) -> Result<PgCopyIn<&mut PgConnection>, StoreError> {
    Ok(conn.copy_in_raw(TRADE_COPY).await?)
}

/// Opens a COPY into `recon_fund_rows`; send it batches from [`FundRowEncoder`] and finish.
pub async fn copy_fund_rows(conn: &mut PgConnection) -> Result<PgCopyIn<&mut PgConnection>, StoreError> {
    Ok(conn.copy_in_raw(FUND_COPY).await?)
}

/// Encodes trade-bill records as binary COPY rows for [`copy_trade_rows`]. The file's
/// merchant and date prefix every line (rows of a bill belong to the day asked for, whatever
/// their trade time).
#[derive(Clone, Debug)]
pub struct TradeRowEncoder {
    prefix: Vec<u8>,
}

impl TradeRowEncoder {
    /// The binary COPY signature, flags and header extension: send before the first row.
    pub const HEADER: &'static [u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
    /// The end-of-data marker: send after the last row.
    pub const TRAILER: &'static [u8] = b"\xff\xff";

    pub fn new(file_id: i64, mch_id: &str, bill_date: NaiveDate) -> TradeRowEncoder {
        // Binary COPY: Postgres skips its text input functions (timestamptz parsing is the
        // expensive one), which is most of its per-row CPU in a million-row load.
        let mut prefix = Vec::with_capacity(48);
        prefix.extend_from_slice(&(TRADE_COLUMNS as i16).to_be_bytes());
        bin_i64(&mut prefix, file_id);
        bin_text(&mut prefix, mch_id);
        let days = (bill_date - pg_epoch().date()).num_days() as i32;
        prefix.extend_from_slice(&4i32.to_be_bytes());
        prefix.extend_from_slice(&days.to_be_bytes());
        TradeRowEncoder { prefix }
    }

    /// Appends one row for `r` to `out`.
    pub fn encode(&self, r: &TradeRecord<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&(r.line.min(i32::MAX as u64) as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        out.push(u8::from(r.is_refund()));
        // Beijing time, UTC+8 (no DST since 1991), as microseconds since 2000-01-01 UTC.
        let micros = ((r.trade_time - pg_epoch()).num_seconds() - 8 * 3600) * 1_000_000;
        bin_i64(out, micros);
        bin_text(out, r.transaction_id);
        bin_text(out, r.out_trade_no);
        bin_text(out, r.trade_state);
        bin_i64(out, r.settlement_amount.get());
        bin_opt_i64(out, r.order_amount.map(|f| f.get()));
        bin_opt_text(out, r.refund_id);
        bin_opt_text(out, r.out_refund_no);
        bin_i64(out, r.refund_amount.get());
        bin_opt_i64(out, r.requested_refund_amount.map(|f| f.get()));
        bin_opt_text(out, r.refund_status);
        bin_i64(out, r.fee.get());
        bin_text(out, r.rate);
    }
}

const TRADE_COLUMNS: usize = 18;

/// Postgres' binary epoch.
fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or_default()
}

fn bin_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

fn bin_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => bin_i64(out, v),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn bin_text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Empty text is NULL (refund columns of payment rows, absent columns).
fn bin_opt_text(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() { out.extend_from_slice(&(-1i32).to_be_bytes()) } else { bin_text(out, s) }
}

/// Encodes fund-flow records as COPY text lines for [`copy_fund_rows`].
#[derive(Clone, Debug)]
pub struct FundRowEncoder {
    prefix: Vec<u8>,
}

impl FundRowEncoder {
    pub fn new(file_id: i64, mch_id: &str, bill_date: NaiveDate) -> FundRowEncoder {
        let mut prefix = Vec::with_capacity(48);
        let _ = write!(prefix, "{file_id}\t");
        text(&mut prefix, mch_id);
        let _ = write!(prefix, "\t{bill_date}\t");
        FundRowEncoder { prefix }
    }

    /// Appends one line for `r` to `out`.
    pub fn encode(&self, r: &FundFlowRecord<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        int(out, r.line as i64);
        out.push(b'\t');
        shanghai_time(out, r.booked_at);
        for t in [r.business_no, r.flow_no, r.business_name, r.business_type] {
            out.push(b'\t');
            text(out, t);
        }
        out.extend_from_slice(if r.direction == FlowDirection::Income { b"\tt\t" } else { b"\tf\t" });
        int(out, r.amount.get());
        for t in [r.remark, r.voucher_no] {
            out.push(b'\t');
            text(out, t);
        }
        out.push(b'\n');
    }
}

/// COPY text escaping: backslash, tab and line breaks are the only special bytes.
fn text(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if !b.iter().any(|c| matches!(c, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.extend_from_slice(b);
        return;
    }
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            c => out.push(c),
        }
    }
}

/// Decimal digits without going through `fmt` (six integers per row of a million-row bill).
fn int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A bill time with its offset: WeChat writes Beijing time, UTC+8 (no DST since 1991).
fn shanghai_time(out: &mut Vec<u8>, t: NaiveDateTime) {
    let two = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    let y = t.year().clamp(0, 9999) as u32;
    two(out, y / 100);
    two(out, y % 100);
    out.push(b'-');
    two(out, t.month());
    out.push(b'-');
    two(out, t.day());
    out.push(b' ');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    out.extend_from_slice(b"+08");
}

/// Column sums of the loaded trade rows, compared with the bill's summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TradeRowTotals {
    pub count: i64,
    pub settlement: i64,
    pub settlement_payments: i64,
    pub refund: i64,
    pub fee_millifen: i64,
}

/// Sums the loaded trade rows of a (merchant, date).
pub async fn trade_row_totals(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
) -> Result<TradeRowTotals, StoreError> {
    Ok(sqlx::query_as(
        "SELECT count(*) AS count,
                coalesce(sum(settlement), 0)::bigint AS settlement,
                coalesce(sum(settlement) FILTER (WHERE NOT is_refund), 0)::bigint AS settlement_payments,
                coalesce(sum(refund_amount), 0)::bigint AS refund,
                coalesce(sum(fee_millifen), 0)::bigint AS fee_millifen
           FROM recon_trade_rows WHERE mch_id = $1 AND bill_date = $2",
    )
    .bind(mch_id)
    .bind(bill_date)
    .fetch_one(conn)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Runs

/// How a run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Cli,
    Api,
    Bench,
    Test,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Api => "api",
            Trigger::Bench => "bench",
            Trigger::Test => "test",
        }
    }
}

/// What [`try_start_run`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRun {
    /// This caller owns the new run.
    Started { run_id: i64 },
    /// Another worker is running this (merchant, date) now.
    Busy { run_id: i64 },
    /// A completed run exists and a re-run was not asked for.
    AlreadyCompleted { run_id: i64 },
}

/// Starts a run of (merchant, date) unless another is active (or, when `rerun` is false,
/// unless one already completed). Coordinated through Postgres so any number of workers can
/// call it at once: a transaction-scoped advisory lock serializes the check-and-insert, and
/// the partial unique index on running rows backs it up. A running run whose lease expired
/// (its worker died) is marked `abandoned` and taken over.
pub async fn try_start_run(
    pool: &PgPool,
    mch_id: &str,
    bill_date: NaiveDate,
    trigger: Trigger,
    worker: &str,
    lease_secs: i64,
    rerun: bool,
) -> Result<StartRun, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('minipay.recon'), hashtext($1 || ':' || $2::text))")
        .bind(mch_id)
        .bind(bill_date)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE recon_runs SET status = 'abandoned', finished_at = now(), error = 'lease expired (worker gone)'
          WHERE mch_id = $1 AND bill_date = $2 AND status = 'running' AND lease_until < now()",
    )
    .bind(mch_id)
    .bind(bill_date)
    .execute(&mut *tx)
    .await?;
    let running: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM recon_runs WHERE mch_id = $1 AND bill_date = $2 AND status = 'running'")
            .bind(mch_id)
            .bind(bill_date)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((run_id,)) = running {
        return Ok(StartRun::Busy { run_id });
    }
    if !rerun {
        let done: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM recon_runs WHERE mch_id = $1 AND bill_date = $2 AND status = 'completed'
              ORDER BY id DESC LIMIT 1",
        )
        .bind(mch_id)
        .bind(bill_date)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((run_id,)) = done {
            return Ok(StartRun::AlreadyCompleted { run_id });
        }
    }
    let (run_id,): (i64,) = sqlx::query_as(
        "INSERT INTO recon_runs (mch_id, bill_date, status, trigger, worker, lease_until)
         VALUES ($1, $2, 'running', $3, $4, now() + make_interval(secs => $5)) RETURNING id",
    )
    .bind(mch_id)
    .bind(bill_date)
    .bind(trigger.as_str())
    .bind(worker)
    .bind(lease_secs as f64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StartRun::Started { run_id })
}

/// Extends a running run's lease (long loads call it between steps).
pub async fn renew_lease(conn: &mut PgConnection, run_id: i64, lease_secs: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE recon_runs SET lease_until = now() + make_interval(secs => $2) WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(lease_secs as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Final state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    /// WeChat's `Bill Creating`: tried too early, will be retried.
    Waiting,
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Waiting => "waiting",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

/// What a finished run records.
#[derive(Clone, Debug)]
pub struct RunEnd<'a> {
    pub status: RunStatus,
    pub trade_file_id: Option<i64>,
    pub fund_file_id: Option<i64>,
    pub empty_day: bool,
    pub report: Option<&'a serde_json::Value>,
    pub summary_text: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Closes a run (only a running one: a run taken over after its lease expired stays
/// `abandoned`). Returns whether this call closed it.
pub async fn finish_run(conn: &mut PgConnection, run_id: i64, end: &RunEnd<'_>) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE recon_runs SET status = $2, trade_file_id = $3, fund_file_id = $4, empty_day = $5, report = $6,
                summary_text = $7, error = $8, finished_at = now()
          WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(end.status.as_str())
    .bind(end.trade_file_id)
    .bind(end.fund_file_id)
    .bind(end.empty_day)
    .bind(end.report)
    .bind(end.summary_text)
    .bind(end.error)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A run as stored.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub mch_id: String,
    pub bill_date: NaiveDate,
    pub status: String,
    pub trigger: String,
    pub worker: String,
    pub empty_day: bool,
    pub report: Option<serde_json::Value>,
    pub summary_text: Option<String>,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One run by id.
pub async fn get_run(conn: &mut PgConnection, run_id: i64) -> Result<Option<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, mch_id, bill_date, status, trigger, worker, empty_day, report, summary_text, error,
                started_at, finished_at
           FROM recon_runs WHERE id = $1",
    )
    .bind(run_id)
    .fetch_optional(conn)
    .await?)
}

/// Every run of a date (all merchants, or one), newest first.
pub async fn runs_for_date(
    conn: &mut PgConnection,
    bill_date: NaiveDate,
    mch_id: Option<&str>,
) -> Result<Vec<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, mch_id, bill_date, status, trigger, worker, empty_day, report, summary_text, error,
                started_at, finished_at
           FROM recon_runs WHERE bill_date = $1 AND ($2::text IS NULL OR mch_id = $2)
          ORDER BY id DESC",
    )
    .bind(bill_date)
    .bind(mch_id)
    .fetch_all(conn)
    .await?)
}

/// The newest run of a (merchant, date), any status.
pub async fn latest_run(
    conn: &mut PgConnection,
    mch_id: &str,
    bill_date: NaiveDate,
) -> Result<Option<RunRow>, StoreError> {
    Ok(runs_for_date(conn, bill_date, Some(mch_id)).await?.into_iter().next())
}

// ---------------------------------------------------------------------------------------
// Matching

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_only_what_copy_needs() {
        let mut v = Vec::new();
        text(&mut v, "a\\b\tc\nd,e`");
        assert_eq!(v, b"a\\\\b\\tc\\nd,e`");
        let mut v = Vec::new();
        int(&mut v, -120);
        int(&mut v, 0);
        assert_eq!(v, b"-1200");
    }

    #[test]
    fn binary_copy_frames_are_postgres_s() {
        assert_eq!(TradeRowEncoder::HEADER.len(), 19);
        assert_eq!(&TradeRowEncoder::HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        let mut v = Vec::new();
        bin_opt_text(&mut v, "");
        bin_text(&mut v, "ab");
        bin_opt_i64(&mut v, Some(-2));
        assert_eq!(v, [255, 255, 255, 255, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254]);
    }

    #[test]
    fn times_carry_the_beijing_offset() {
        let t = NaiveDateTime::parse_from_str("2026-11-24 23:59:59", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut v = Vec::new();
        shanghai_time(&mut v, t);
        assert_eq!(v, b"2026-11-24 23:59:59+08");
    }
}
