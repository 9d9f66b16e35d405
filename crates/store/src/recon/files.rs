//! Bill files as received: the raw bytes in 1 MiB chunks keyed by sha256, so the same bytes
//! fetched twice are one file.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

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
