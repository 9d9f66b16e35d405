//! Bill rows: monthly partitions, clearing a day, and loading parsed records with COPY
//! (binary for the big trade bill, text for the small fund flow), streamed so a bill is never
//! in memory as a whole.

use std::io::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::PgCopyIn;
use wxpay::bill::{FlowDirection, FundFlowRecord, TradeRecord};

use super::files::BillKind;
use crate::StoreError;

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
