//! Getting a bill into Postgres: the raw bytes (chunked, with their sha256) and the parsed
//! rows (COPY), streamed so a million-row bill costs a few megabytes of memory.
//!
//! The parser runs on a blocking thread and hands COPY-text batches to the async side over a
//! bounded channel: parsing and Postgres' ingestion overlap on the two cores, and a slow
//! database slows the parser down instead of growing a buffer.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use minipay_store::recon::{self, BillKind, FundRowEncoder, NewBillFile, TradeRowEncoder};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use wxpay::bill::{BillBody, BillReader, BillSummary, FundFlowReader, FundFlowSummary, open_body};

use super::ReconcileError;

/// One COPY batch: large enough to amortise the round trip, small enough to stay in cache.
const BATCH: usize = 256 * 1024;

/// Batches in flight between the parser and the database.
const IN_FLIGHT: usize = 4;

/// Where a bill's bytes are: in memory (a download) or in a file (`--bill-file`, bench).
#[derive(Clone, Debug)]
pub enum Raw {
    Bytes(Arc<[u8]>),
    File(PathBuf),
}

impl Raw {
    /// A fresh reader from the first byte (the bytes are read up to three times: checksum,
    /// raw storage, parsing; a file stays in the page cache between them).
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Raw::Bytes(b) => Box::new(io::Cursor::new(b.clone())),
            Raw::File(p) => Box::new(io::BufReader::with_capacity(1 << 20, File::open(p)?)),
        })
    }

    /// sha256 (hex), size and whether the body is gzip, in one streaming pass.
    pub fn fingerprint(&self) -> io::Result<(String, i64, bool)> {
        let mut r = self.open()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0i64;
        let mut head = [0u8; 2];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if size == 0 && n >= 2 {
                head = [buf[0], buf[1]];
            }
            size += n as i64;
            h.update(&buf[..n]);
        }
        Ok((hex::encode(h.finalize()), size, head == [0x1f, 0x8b]))
    }

    /// What the body is: a bill, or one of WeChat's XML answers.
    pub fn classify(&self) -> Result<Body, ReconcileError> {
        Ok(match open_body(self.open()?)? {
            BillBody::Bill(_) => Body::Bill,
            BillBody::NoBill => Body::NoBill,
            BillBody::NotReady => Body::NotReady,
            BillBody::Failed(e) => Body::Failed(e.to_string()),
        })
    }
}

/// [`Raw::classify`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Bill,
    NoBill,
    NotReady,
    Failed(String),
}

/// A bill loaded (or found already loaded) for a (merchant, date).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub file_id: i64,
    pub sha256: String,
    pub gzip: bool,
    pub size_bytes: i64,
    pub rows: i64,
    /// The same bytes were loaded before and their rows are current: nothing was re-read.
    pub reused: bool,
    /// The summary line, checked against the rows by the parser and again in SQL.
    pub summary: serde_json::Value,
}

enum Parsed {
    Trade(BillSummary),
    Fund(FundFlowSummary),
}

/// Stores and loads one bill. Same bytes as a stored file whose rows are current: reused.
pub async fn load_bill(
    pool: &PgPool,
    mch_id: &str,
    bill_date: NaiveDate,
    kind: BillKind,
    raw: &Raw,
    source: &str,
) -> Result<Loaded, ReconcileError> {
    let (sha256, size_bytes, gzip) = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || raw.fingerprint()).await.map_err(join)??
    };
    let mut conn = pool.acquire().await?;
    let existing = recon::find_file(&mut conn, mch_id, bill_date, kind, &sha256).await?;
    if let Some(f) = &existing {
        if let (Some(rows), Some(summary)) = (f.row_count, &f.summary) {
            if recon::rows_are_from(&mut conn, mch_id, bill_date, kind, f.id).await? || rows == 0 {
                return Ok(Loaded {
                    file_id: f.id,
                    sha256,
                    gzip,
                    size_bytes,
                    rows,
                    reused: true,
                    summary: summary.clone(),
                });
            }
        }
    }
    if kind == BillKind::TradeAll {
        recon::ensure_month(&mut conn, bill_date).await?;
    }
    drop(conn);
    let mut tx = pool.begin().await?;
    let file_id = match &existing {
        Some(f) => f.id,
        None => {
            let id = recon::insert_file(
                &mut tx,
                &NewBillFile { mch_id, bill_date, kind, source, gzip, sha256: &sha256, size_bytes },
            )
            .await?;
            store_chunks(&mut tx, id, raw).await?;
            id
        }
    };
    recon::clear_rows(&mut tx, mch_id, bill_date, kind).await?;
    let (rows, parsed) = copy_rows(&mut tx, raw, kind, file_id, mch_id, bill_date).await?;
    let summary = match &parsed {
        Parsed::Trade(s) => serde_json::to_value(s),
        Parsed::Fund(s) => serde_json::to_value(s),
    }
    .map_err(|e| ReconcileError::Internal(format!("summary to JSON: {e}")))?;
    recon::set_file_loaded(&mut tx, file_id, rows as i64, &summary).await?;
    tx.commit().await?;
    Ok(Loaded { file_id, sha256, gzip, size_bytes, rows: rows as i64, reused: false, summary })
}

/// The raw body in [`recon::CHUNK_BYTES`] pieces.
async fn store_chunks(conn: &mut PgConnection, file_id: i64, raw: &Raw) -> Result<(), ReconcileError> {
    match raw {
        Raw::Bytes(b) => {
            for (seq, chunk) in b.chunks(recon::CHUNK_BYTES).enumerate() {
                recon::insert_chunk(conn, file_id, seq as i32, chunk).await?;
            }
        }
        Raw::File(_) => {
            let mut r = raw.open()?;
            let mut buf = vec![0u8; recon::CHUNK_BYTES];
            let mut seq = 0;
            loop {
                let n = read_full(&mut r, &mut buf)?;
                if n == 0 {
                    break;
                }
                recon::insert_chunk(conn, file_id, seq, &buf[..n]).await?;
                seq += 1;
            }
        }
    }
    Ok(())
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parses on a blocking thread and streams COPY batches into the open transaction.
async fn copy_rows(
    conn: &mut PgConnection,
    raw: &Raw,
    kind: BillKind,
    file_id: i64,
    mch_id: &str,
    bill_date: NaiveDate,
) -> Result<(u64, Parsed), ReconcileError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let raw = raw.clone();
    let mch = mch_id.to_owned();
    let parser = tokio::task::spawn_blocking(move || parse_into(raw, kind, file_id, &mch, bill_date, tx));
    let mut copy = match kind {
        BillKind::TradeAll => recon::copy_trade_rows(conn).await?,
        BillKind::FundflowBasic => recon::copy_fund_rows(conn).await?,
    };
    let mut send_err = None;
    while let Some(batch) = rx.recv().await {
        if let Err(e) = copy.send(batch).await {
            send_err = Some(e);
            break;
        }
    }
    // Dropping the receiver makes a still-running parser stop at its next batch.
    drop(rx);
    let parsed = parser.await.map_err(join)?;
    if let Some(e) = send_err {
        let _ = copy.abort("load failed").await;
        return Err(e.into());
    }
    match parsed {
        Ok((n, p)) => {
            // The parser checked the summary line against every row it read; Postgres must
            // have stored exactly those rows (a re-sum in SQL would cost a full scan).
            let stored = copy.finish().await?;
            if stored != n {
                return Err(ReconcileError::Totals(format!("parsed {n} rows but Postgres stored {stored}")));
            }
            Ok((n, p))
        }
        Err(e) => {
            let _ = copy.abort("bill rejected").await;
            Err(e)
        }
    }
}

fn parse_into(
    raw: Raw,
    kind: BillKind,
    file_id: i64,
    mch_id: &str,
    bill_date: NaiveDate,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(u64, Parsed), ReconcileError> {
    let text = match open_body(raw.open()?)? {
        BillBody::Bill(t) => t,
        _ => return Err(ReconcileError::Internal("the body stopped being a bill between two reads".into())),
    };
    let mut buf = Vec::with_capacity(BATCH + 4096);
    let mut n = 0u64;
    let flush = |buf: &mut Vec<u8>, force: bool| -> Result<(), ReconcileError> {
        if buf.len() >= BATCH || (force && !buf.is_empty()) {
            let full = std::mem::replace(buf, Vec::with_capacity(BATCH + 4096));
            tx.blocking_send(full).map_err(|_| ReconcileError::Internal("the database side stopped reading".into()))?;
        }
        Ok(())
    };
    let parsed = match kind {
        BillKind::TradeAll => {
            let enc = TradeRowEncoder::new(file_id, mch_id, bill_date);
            let mut r = BillReader::new(text)?;
            buf.extend_from_slice(TradeRowEncoder::HEADER);
            while let Some(rec) = r.next_record() {
                enc.encode(&rec?, &mut buf);
                n += 1;
                flush(&mut buf, false)?;
            }
            let summary = r.finish()?;
            buf.extend_from_slice(TradeRowEncoder::TRAILER);
            Parsed::Trade(summary)
        }
        BillKind::FundflowBasic => {
            let enc = FundRowEncoder::new(file_id, mch_id, bill_date);
            let mut r = FundFlowReader::new(text)?;
            while let Some(rec) = r.next_record() {
                enc.encode(&rec?, &mut buf);
                n += 1;
                flush(&mut buf, false)?;
            }
            Parsed::Fund(r.finish()?)
        }
    };
    flush(&mut buf, true)?;
    Ok((n, parsed))
}

fn join(e: tokio::task::JoinError) -> ReconcileError {
    ReconcileError::Internal(format!("loader task: {e}"))
}
