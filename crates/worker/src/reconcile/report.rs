//! The report of a run: one JSON document (stored on the run, served by the API, printed by
//! `minipay reconcile --json`) and a human summary made from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use minipay_store::recon::{CategoryTotal, Discrepancy, KindTotals};
use serde::{Deserialize, Serialize};
use wxpay::Fen;
use wxpay::bill::MilliFen;

use super::load::Loaded;

/// Every category, in report order (all are listed, with zeros, so consumers need no
/// special case for "none found").
pub const CATEGORIES: [&str; 6] =
    ["missing_local", "missing_remote", "amount_mismatch", "status_mismatch", "fee_mismatch", "cross_day"];

/// The most discrepancies a report lists (a report is held in memory and stored as one
/// JSON value).
pub const MAX_LISTED: i64 = 10_000;

/// The most open items the human summary prints.
const HUMAN_LISTED: usize = 100;

/// Counts and amounts (fen) of one category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategorySummary {
    pub count: i64,
    pub our_amount: i64,
    pub their_amount: i64,
    pub repaired: i64,
    /// Open for a person (not repaired, not held or resolved across days).
    pub open: i64,
}

/// Bill vs ledger for one kind of movement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub kind: String,
    pub bill: i64,
    pub ledger: i64,
    pub difference: i64,
    pub explained: i64,
    /// bill − ledger is exactly what the discrepancies explain.
    pub balanced: bool,
}

impl From<&KindTotals> for Totals {
    fn from(k: &KindTotals) -> Totals {
        Totals {
            kind: k.kind.clone(),
            bill: k.bill,
            ledger: k.ledger,
            difference: k.bill - k.ledger,
            explained: k.explained,
            balanced: k.balanced(),
        }
    }
}

/// The day's fee from the bill and what reconciliation posted for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeReport {
    /// 手续费总金额 in thousandths of a fen.
    pub bill_fee_millifen: i64,
    /// Posted to the ledger as `fee:<mch>:<date>` (rounded to fen).
    pub fen: i64,
    /// `posted`, `already_posted` or `nothing_to_post` (zero or negative: a refund-heavy day).
    pub posting: String,
    pub reference: String,
}

/// A run's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: i64,
    pub mch_id: String,
    pub date: NaiveDate,
    pub status: String,
    /// Which protocol fetched the bills: `v2` (downloadbill), `v3` (`/v3/bill/…`, SHA1
    /// checked) or `file` (given by hand, the benchmark, tests). Empty in reports stored
    /// before it was recorded.
    #[serde(default)]
    pub protocol: String,
    /// WeChat answered `No Bill Exist`: no trades that day for WeChat.
    pub empty_day: bool,
    pub trade_bill: Option<Loaded>,
    pub fund_flow_bill: Option<Loaded>,
    pub categories: BTreeMap<String, CategorySummary>,
    pub totals: Vec<Totals>,
    pub fee: Option<FeeReport>,
    pub repaired: i64,
    /// The discrepancies, at most [`MAX_LISTED`] of them (all counts are in `categories`;
    /// the full list is in `recon_discrepancies`).
    pub discrepancies: Vec<Discrepancy>,
    /// More discrepancies exist than are listed.
    #[serde(default)]
    pub truncated: bool,
    /// Wall time of each step in milliseconds (fetch, load_trade, load_fund_flow, match,
    /// repair, report), for operators and the benchmark.
    #[serde(default)]
    pub timings_ms: BTreeMap<String, u64>,
}

impl Report {
    /// The category table (every category present, zeros included).
    pub fn summarise(totals: &[CategoryTotal]) -> BTreeMap<String, CategorySummary> {
        let mut m: BTreeMap<String, CategorySummary> =
            CATEGORIES.iter().map(|c| ((*c).to_owned(), CategorySummary::default())).collect();
        for t in totals {
            m.insert(
                t.category.clone(),
                CategorySummary {
                    count: t.count,
                    our_amount: t.our_amount,
                    their_amount: t.their_amount,
                    repaired: t.repaired,
                    open: t.open,
                },
            );
        }
        m
    }

    /// Whether every kind's totals are explained by the discrepancies.
    pub fn balanced(&self) -> bool {
        self.totals.iter().all(|t| t.balanced)
    }

    /// The human summary (`minipay reconcile` without `--json`, and `summary_text` on the run).
    pub fn human(&self) -> String {
        let mut s = String::new();
        let yuan = |f: i64| Fen::new(f).to_yuan_string();
        let _ = writeln!(
            s,
            "Reconciliation of merchant {} for {} (run {}): {}",
            self.mch_id, self.date, self.run_id, self.status
        );
        match self.protocol.as_str() {
            "" => {}
            "file" => {
                let _ = writeln!(s, "  bills: from files");
            }
            p => {
                let _ = writeln!(s, "  bills: downloaded over WeChat Pay {p}");
            }
        }
        if self.empty_day {
            let _ = writeln!(s, "  WeChat has no bill for this day (No Bill Exist): reconciled as an empty day");
        }
        for (name, b) in [("trade bill", &self.trade_bill), ("fund-flow bill", &self.fund_flow_bill)] {
            if let Some(b) = b {
                let _ = writeln!(
                    s,
                    "  {name}: {} rows, {} bytes{}, sha256 {}{}",
                    b.rows,
                    b.size_bytes,
                    if b.gzip { " gzip" } else { "" },
                    &b.sha256[..16.min(b.sha256.len())],
                    if b.reused { " (already loaded)" } else { "" }
                );
            }
        }
        let total: i64 = self.categories.values().map(|c| c.count).sum();
        let open: i64 = self.categories.values().map(|c| c.open).sum();
        let _ = writeln!(s, "  discrepancies: {total} ({open} open, {} repaired)", self.repaired);
        for (cat, c) in &self.categories {
            if c.count > 0 {
                let _ = writeln!(
                    s,
                    "    {cat:<16} {:>5}  ours {:>12}  theirs {:>12}  open {}",
                    c.count,
                    yuan(c.our_amount),
                    yuan(c.their_amount),
                    c.open
                );
            }
        }
        let _ = writeln!(s, "  totals (bill / ledger / difference / explained by discrepancies):");
        for t in &self.totals {
            let _ = writeln!(
                s,
                "    {:<15} {:>12} / {:>12} / {:>10} / {:>10}  {}",
                t.kind,
                yuan(t.bill),
                yuan(t.ledger),
                yuan(t.difference),
                yuan(t.explained),
                if t.balanced { "ok" } else { "UNEXPLAINED" }
            );
        }
        if let Some(f) = &self.fee {
            let _ = writeln!(
                s,
                "  fee: {} in the bill, {} {} ({})",
                MilliFen::new(f.bill_fee_millifen),
                yuan(f.fen),
                f.posting.replace('_', " "),
                f.reference
            );
        }
        let pending: Vec<&Discrepancy> =
            self.discrepancies.iter().filter(|d| d.status == "open" || d.status == "held").collect();
        // The text is for a terminal: the first hundred, the rest are in --json and the API.
        if pending.len() > HUMAN_LISTED {
            let _ = writeln!(s, "  (first {HUMAN_LISTED} of the open and held items; --json lists more)");
        }
        for d in pending.into_iter().take(HUMAN_LISTED) {
            let amt = |a: Option<i64>| a.map(yuan).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  [{}] {} {} {}: ours {} theirs {} — {}",
                d.status,
                d.category,
                d.kind,
                d.reference,
                amt(d.our_amount),
                amt(d.their_amount),
                d.detail
            );
        }
        s
    }
}
