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

mod copy;
mod files;
mod matching;
mod report;
mod requests;
mod runs;

pub use copy::*;
pub use files::*;
pub use matching::*;
pub use report::*;
pub use requests::*;
pub use runs::*;
