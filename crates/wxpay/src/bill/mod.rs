//! # WeChat Pay v2 bills: `downloadbill` and `downloadfundflow`, read and written
//!
//! A bill is UTF-8 text: a header line of column names, one line per record in which every
//! field starts with a backtick (`` `2017-11-25 15:36:17,`wx2421b1c4370ec43b,`... ``), then a
//! summary header line and one summary value line. Reconciliation stakes money on this file, so
//! the reader is strict where a loose parser would lose fen silently:
//!
//! - columns are found by **header name** (layouts differ by bill type and by account age);
//! - fields are split on the `` ,` `` boundary only, because product names and attach contain
//!   bare commas;
//! - amounts become integer [`Fen`] exactly, fees become [`MilliFen`] (five decimals), and a
//!   malformed amount is an error with its line number, never zero;
//! - the summary is **checked against the rows**, and a bill that ends before its summary
//!   (a truncated download) is an error.
//!
//! It streams over any [`std::io::BufRead`] with one reused line buffer, so a million-row bill
//! costs the same memory as a ten-row one.
//!
//! ## Layout
//! - [`trade`]: [`BillReader`] for ALL / SUCCESS / REFUND / RECHARGE_REFUND and the legacy
//!   24-column layout, yielding [`TradeRecord`] (borrowed, fast) or [`TradeRow`] (owned).
//! - [`fund`]: [`FundFlowReader`] for the fund-flow bill.
//! - [`body`]: [`open_body`] / [`decode_body`] tell a bill from WeChat's XML error answer and
//!   undo gzip.
//! - [`write`](mod@write): [`BillWriter`] and [`FundFlowWriter`] produce WeChat's exact format (the sandbox
//!   serves it, benchmarks generate large bills with it).
//! - `text` (private): line reading and the backtick field splitter shared by all of them.
//!
//! ## Guesses about the format (each is repeated where the code relies on it)
//! - Summary totals are plain column sums over all rows. Because refund rows might instead
//!   carry the original order's amount while WeChat sums only payments, the settlement and
//!   order totals are also accepted when they equal the sum over non-`REFUND` rows.
//! - RECHARGE_REFUND bills use the REFUND columns and summary.
//! - Lines end with `\r\n` when we write; both `\r\n` and `\n` are read.

pub mod body;
pub mod fund;
mod text;
pub mod trade;
pub mod write;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::money::{Fen, MoneyError, parse_decimal};

pub use body::{BillApiError, BillBody, BillText, decode_body, open_body};
pub use fund::{FlowDirection, FundFlowReader, FundFlowRecord, FundFlowRow, FundFlowSummary};
pub use trade::{BillReader, BillSummary, TradeRecord, TradeRow};
pub use write::{
    BillWriter, FundFlowWriter, LineEnding, TradeLayout, WriteOptions, write_fund_flow_bill, write_trade_bill,
};

/// A fee in thousandths of a fen (10⁻⁵ yuan): bills state fees with five decimals, and
/// rounding them to fen per row would make the fee total disagree with the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct MilliFen(i64);

impl MilliFen {
    /// Zero, the fee of a free transaction and the start of every fee sum.
    pub const ZERO: MilliFen = MilliFen(0);

    /// Wraps a raw count of thousandths of a fen.
    pub const fn new(millifen: i64) -> MilliFen {
        MilliFen(millifen)
    }

    /// The raw count of thousandths of a fen.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Converts an exact fen amount, e.g. to compare a fee we posted with WeChat's.
    pub fn from_fen(fen: Fen) -> Option<MilliFen> {
        fen.get().checked_mul(1000).map(MilliFen)
    }

    /// Parses a yuan amount with at most five decimals (`0.00600`, `-0.00012`) exactly.
    pub fn parse_yuan(s: &str) -> Result<MilliFen, MoneyError> {
        parse_decimal(s, 5).map(MilliFen)
    }

    /// Rounds to whole fen, half away from zero (四舍五入), for posting fees to a fen ledger.
    pub fn round_to_fen(self) -> Fen {
        let q = self.0 / 1000;
        let r = self.0 % 1000;
        let adj = if r >= 500 {
            1
        } else if r <= -500 {
            -1
        } else {
            0
        };
        Fen::new(q + adj)
    }

    /// Formats as yuan with exactly five decimals, the way bills write fees.
    pub fn to_yuan_string(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MilliFen {
    /// Yuan with five decimals (`-0.00006`), WeChat's notation for fees.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:05}", abs / 100_000, abs % 100_000)
    }
}

/// Converts a bill time (written in Beijing time, without an offset) to UTC.
///
/// China has used UTC+8 without daylight saving since 1991; chrono-tz still knows the older
/// rules, and a local time that did not exist or was ambiguous then falls back to +8.
pub fn shanghai_to_utc(t: NaiveDateTime) -> DateTime<Utc> {
    match chrono_tz::Asia::Shanghai.from_local_datetime(&t).earliest() {
        Some(dt) => dt.with_timezone(&Utc),
        None => Utc.from_utc_datetime(&(t - chrono::Duration::hours(8))),
    }
}

/// Why a bill could not be read, always with the 1-based line number when one applies, so
/// finance can open the file at the offending line.
///
/// `Clone` (I/O errors are shared) so a reader can hand the same error to `next` and `finish`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BillError {
    #[error("reading the bill: {0}")]
    Io(Arc<std::io::Error>),
    #[error("line {line}: longer than {} bytes", text::MAX_LINE)]
    LineTooLong { line: u64 },
    #[error("the bill is empty: no header line")]
    Empty,
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 { line: u64 },
    #[error("line {line}: the header has no {column:?} column")]
    MissingColumn { line: u64, column: &'static str },
    #[error("line {line}: column {column:?} appears twice in the header")]
    DuplicateColumn { line: u64, column: String },
    #[error("line {line}: this is a {found} bill, expected a {expected} bill")]
    WrongKind { line: u64, expected: &'static str, found: &'static str },
    #[error("line {line}: a record must start with a backtick")]
    NoBacktick { line: u64 },
    #[error("line {line}: expected {expected} fields, found {found}")]
    FieldCount { line: u64, expected: usize, found: usize },
    #[error("line {line}: {column} {value:?} is not an amount")]
    Amount { line: u64, column: &'static str, value: String },
    #[error("line {line}: {column} {value:?} is not a count")]
    Count { line: u64, column: &'static str, value: String },
    #[error("line {line}: {column} {value:?} is not a time (yyyy-MM-dd HH:mm:ss)")]
    Time { line: u64, column: &'static str, value: String },
    #[error("line {line}: {column} {value:?} is neither 收入 nor 支出")]
    Direction { line: u64, column: &'static str, value: String },
    #[error("line {line}: expected a summary header, found {text:?}")]
    UnexpectedLine { line: u64, text: String },
    #[error("the bill ends at line {line} without its summary line (truncated download?)")]
    MissingSummary { line: u64 },
    #[error("line {line}: text after the summary line")]
    TrailingData { line: u64 },
    #[error("line {line}: summary {what} is {summary} but the rows add up to {rows}")]
    SummaryMismatch { line: u64, what: &'static str, summary: String, rows: String },
}

impl From<std::io::Error> for BillError {
    fn from(e: std::io::Error) -> BillError {
        BillError::Io(Arc::new(e))
    }
}

impl BillError {
    /// The 1-based line the error refers to, if any (I/O errors and empty bills have none).
    pub fn line(&self) -> Option<u64> {
        use BillError::*;
        match self {
            Io(_) | Empty => None,
            NotUtf8 { line }
            | LineTooLong { line }
            | MissingColumn { line, .. }
            | DuplicateColumn { line, .. }
            | WrongKind { line, .. }
            | NoBacktick { line }
            | FieldCount { line, .. }
            | Amount { line, .. }
            | Count { line, .. }
            | Time { line, .. }
            | Direction { line, .. }
            | UnexpectedLine { line, .. }
            | MissingSummary { line }
            | TrailingData { line }
            | SummaryMismatch { line, .. } => Some(*line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millifen_parses_and_formats_five_decimals() {
        assert_eq!(MilliFen::parse_yuan("0.00600"), Ok(MilliFen(600)));
        assert_eq!(MilliFen::parse_yuan("-0.00006"), Ok(MilliFen(-6)));
        assert_eq!(MilliFen::parse_yuan("12"), Ok(MilliFen(1_200_000)));
        assert!(MilliFen::parse_yuan("0.000001").is_err());
        assert_eq!(MilliFen(-6).to_string(), "-0.00006");
        assert_eq!(MilliFen(123_456_789).to_yuan_string(), "1234.56789");
        assert_eq!(MilliFen(0).to_string(), "0.00000");
    }

    #[test]
    fn millifen_rounds_half_away_from_zero() {
        assert_eq!(MilliFen(600).round_to_fen(), Fen::new(1));
        assert_eq!(MilliFen(499).round_to_fen(), Fen::new(0));
        assert_eq!(MilliFen(1500).round_to_fen(), Fen::new(2));
        assert_eq!(MilliFen(-500).round_to_fen(), Fen::new(-1));
        assert_eq!(MilliFen(-499).round_to_fen(), Fen::new(0));
        assert_eq!(MilliFen::from_fen(Fen::new(3)), Some(MilliFen(3000)));
    }

    #[test]
    fn beijing_time_is_utc_plus_eight() {
        let t = NaiveDateTime::parse_from_str("2017-11-25 03:36:17", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(shanghai_to_utc(t).to_rfc3339(), "2017-11-24T19:36:17+00:00");
    }
}
