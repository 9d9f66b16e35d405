//! The fund-flow bill (`downloadfundflow`): every movement of the merchant's balance, which
//! is where payouts and red packets show up for reconciliation.

use std::io::BufRead;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::text::{Lines, map_header, parse_count, parse_scaled, parse_time, split_record};
use super::{BillError, shanghai_to_utc};
use crate::money::Fen;

#[derive(Clone, Copy)]
enum Col {
    BookedAt,
    BusinessNo,
    FlowNo,
    BusinessName,
    BusinessType,
    Direction,
    Amount,
    Balance,
    Applicant,
    Remark,
    VoucherNo,
}

const NCOLS: usize = Col::VoucherNo as usize + 1;

const CANON: [&str; NCOLS] = [
    "记账时间",
    "微信支付业务单号",
    "资金流水单号",
    "业务名称",
    "业务类型",
    "收支类型",
    "收支金额（元）",
    "账户结余（元）",
    "资金变更提交申请人",
    "备注",
    "业务凭证号",
];

/// WeChat writes full-width parentheses (收支金额（元）); ASCII ones are accepted too because
/// bills re-saved by spreadsheet tools sometimes come back that way.
const ALIASES: &[(&str, usize)] = &[
    ("记账时间", Col::BookedAt as usize),
    ("微信支付业务单号", Col::BusinessNo as usize),
    ("资金流水单号", Col::FlowNo as usize),
    ("业务名称", Col::BusinessName as usize),
    ("业务类型", Col::BusinessType as usize),
    ("收支类型", Col::Direction as usize),
    ("收支金额（元）", Col::Amount as usize),
    ("收支金额(元)", Col::Amount as usize),
    ("账户结余（元）", Col::Balance as usize),
    ("账户结余(元)", Col::Balance as usize),
    ("资金变更提交申请人", Col::Applicant as usize),
    ("备注", Col::Remark as usize),
    ("业务凭证号", Col::VoucherNo as usize),
];

const REQUIRED: [Col; 3] = [Col::BookedAt, Col::Direction, Col::Amount];

const SUM_CANON: [&str; 5] = ["资金流水总笔数", "收入笔数", "收入金额", "支出笔数", "支出金额"];

/// 收支类型: whether the balance went up or down. Only two values exist, so anything else is
/// an error rather than a guess about the sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FlowDirection {
    /// 收入
    Income,
    /// 支出
    Expense,
}

impl FlowDirection {
    /// The bill's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowDirection::Income => "收入",
            FlowDirection::Expense => "支出",
        }
    }
}

/// One fund-flow row borrowed from the reader's buffer (fast path). Text as written; absent
/// optional columns read as `""`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundFlowRecord<'a> {
    /// The 1-based line in the bill.
    pub line: u64,
    /// 记账时间 (Beijing time).
    pub booked_at: NaiveDateTime,
    /// 微信支付业务单号: the transaction, refund, payout or red-packet number it belongs to.
    pub business_no: &'a str,
    /// 资金流水单号: unique per movement.
    pub flow_no: &'a str,
    /// 业务名称, e.g. 交易, 退款, 企业付款, 现金红包.
    pub business_name: &'a str,
    /// 业务类型, WeChat's finer category.
    pub business_type: &'a str,
    /// 收支类型: income or expense.
    pub direction: FlowDirection,
    /// 收支金额（元） as written (guess: a magnitude, the sign being `direction`).
    pub amount: Fen,
    /// 账户结余（元）: the balance after this movement; zero when the column is absent.
    pub balance: Fen,
    /// 资金变更提交申请人, e.g. `system` or an operator.
    pub applicant: &'a str,
    /// 备注; may contain commas.
    pub remark: &'a str,
    /// 业务凭证号.
    pub voucher_no: &'a str,
}

/// One fund-flow row, owned. Field meanings are those of [`FundFlowRecord`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FundFlowRow {
    pub booked_at: NaiveDateTime,
    pub business_no: String,
    pub flow_no: String,
    pub business_name: String,
    pub business_type: String,
    pub direction: FlowDirection,
    pub amount: Fen,
    pub balance: Fen,
    pub applicant: String,
    pub remark: String,
    pub voucher_no: String,
}

impl FundFlowRecord<'_> {
    /// Copies the borrowed fields out of the line buffer.
    pub fn to_row(&self) -> FundFlowRow {
        FundFlowRow {
            booked_at: self.booked_at,
            business_no: self.business_no.to_owned(),
            flow_no: self.flow_no.to_owned(),
            business_name: self.business_name.to_owned(),
            business_type: self.business_type.to_owned(),
            direction: self.direction,
            amount: self.amount,
            balance: self.balance,
            applicant: self.applicant.to_owned(),
            remark: self.remark.to_owned(),
            voucher_no: self.voucher_no.to_owned(),
        }
    }
}

impl FundFlowRow {
    /// The booking time as an instant.
    pub fn booked_at_utc(&self) -> DateTime<Utc> {
        shanghai_to_utc(self.booked_at)
    }
}

/// The fund-flow summary line, already checked against the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FundFlowSummary {
    /// 资金流水总笔数
    pub count: u64,
    /// 收入笔数
    pub income_count: u64,
    /// 收入金额
    pub income_total: Fen,
    /// 支出笔数
    pub expense_count: u64,
    /// 支出金额
    pub expense_total: Fen,
}

#[derive(Default)]
struct Totals {
    count: u64,
    income_count: u64,
    income: i128,
    expense_count: u64,
    expense: i128,
}

/// Streams a fund-flow bill; same contract as [`super::BillReader`]: records, then a checked
/// summary from [`finish`](Self::finish), errors sticky.
pub struct FundFlowReader<R> {
    lines: Lines<R>,
    cols: [Option<usize>; NCOLS],
    ncols: usize,
    fields: Vec<(usize, usize)>,
    totals: Totals,
    summary: Option<FundFlowSummary>,
    failed: Option<BillError>,
    done: bool,
}

impl<R: BufRead> FundFlowReader<R> {
    /// Reads the header line; a trade bill is refused with [`BillError::WrongKind`].
    pub fn new(reader: R) -> Result<FundFlowReader<R>, BillError> {
        let mut lines = Lines::new(reader);
        let mut cols = [None; NCOLS];
        let (line, text) = lines.next_line()?.ok_or(BillError::Empty)?;
        let ncols = map_header(text, line, ALIASES, &mut cols)?;
        if cols[Col::BookedAt as usize].is_none() && super::text::header_names(text).any(|c| c == "交易时间") {
            return Err(BillError::WrongKind { line, expected: "fund-flow", found: "trade" });
        }
        if let Some(c) = REQUIRED.iter().find(|c| cols[**c as usize].is_none()) {
            return Err(BillError::MissingColumn { line, column: CANON[*c as usize] });
        }
        Ok(FundFlowReader {
            lines,
            cols,
            ncols,
            fields: Vec::with_capacity(ncols),
            totals: Totals::default(),
            summary: None,
            failed: None,
            done: false,
        })
    }

    /// The next record; `None` once the checked summary has been read or after an error.
    pub fn next_record(&mut self) -> Option<Result<FundFlowRecord<'_>, BillError>> {
        if self.done {
            return None;
        }
        match self.lines.advance() {
            Ok(true) => {}
            Ok(false) => {
                let e = BillError::MissingSummary { line: self.lines.line_no() };
                return Some(Err(self.fail(e)));
            }
            Err(e) => return Some(Err(self.fail(e))),
        }
        if !self.lines.is_record() {
            return match self.read_summary() {
                Ok(()) => {
                    self.done = true;
                    None
                }
                Err(e) => Some(Err(self.fail(e))),
            };
        }
        let parsed = self.lines.current().and_then(|(line, text)| {
            parse_record(text, line, &self.cols, self.ncols, &mut self.fields, &mut self.totals)
        });
        match parsed {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                // Field by field, not `self.fail`: `parsed` still borrows `self.lines`.
                self.failed = Some(e.clone());
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Reads any remaining records and returns the summary, checked against every row.
    pub fn finish(mut self) -> Result<FundFlowSummary, BillError> {
        while let Some(r) = self.next_record() {
            r?;
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.summary.ok_or(BillError::MissingSummary { line: self.lines.line_no() })
    }

    fn fail(&mut self, e: BillError) -> BillError {
        self.done = true;
        self.failed = Some(e.clone());
        e
    }

    fn read_summary(&mut self) -> Result<(), BillError> {
        let mut slots = [None; 5];
        let n = {
            let (line, text) = self.lines.current()?;
            let aliases: Vec<(&str, usize)> = SUM_CANON.iter().enumerate().map(|(i, n)| (*n, i)).collect();
            let n = map_header(text, line, &aliases, &mut slots)?;
            if slots[0].is_none() {
                return Err(BillError::UnexpectedLine { line, text: text.chars().take(80).collect() });
            }
            if let Some(i) = slots.iter().position(Option::is_none) {
                return Err(BillError::MissingColumn { line, column: SUM_CANON[i] });
            }
            n
        };
        let header_line = self.lines.line_no();
        let (line, text) = self.lines.next_line()?.ok_or(BillError::MissingSummary { line: header_line })?;
        split_record(text, line, &mut self.fields)?;
        if self.fields.len() != n {
            return Err(BillError::FieldCount { line, expected: n, found: self.fields.len() });
        }
        let field = |i: usize| slots[i].map_or("", |f| &text[self.fields[f].0..self.fields[f].1]);
        let count = |i: usize| {
            parse_count(field(i)).ok_or_else(|| BillError::Count {
                line,
                column: SUM_CANON[i],
                value: field(i).to_owned(),
            })
        };
        let fen = |i: usize| {
            parse_scaled(field(i), 2).map(Fen::new).ok_or_else(|| BillError::Amount {
                line,
                column: SUM_CANON[i],
                value: field(i).to_owned(),
            })
        };
        let summary = FundFlowSummary {
            count: count(0)?,
            income_count: count(1)?,
            income_total: fen(2)?,
            expense_count: count(3)?,
            expense_total: fen(4)?,
        };
        if let Some((extra, _)) = self.lines.next_line()? {
            return Err(BillError::TrailingData { line: extra });
        }
        check(&summary, &self.totals, line)?;
        self.summary = Some(summary);
        Ok(())
    }
}

impl<R: BufRead> Iterator for FundFlowReader<R> {
    type Item = Result<FundFlowRow, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|r| r.map(|rec| rec.to_row()))
    }
}

fn parse_record<'a>(
    text: &'a str,
    line: u64,
    cols: &[Option<usize>; NCOLS],
    ncols: usize,
    fields: &mut Vec<(usize, usize)>,
    totals: &mut Totals,
) -> Result<FundFlowRecord<'a>, BillError> {
    split_record(text, line, fields)?;
    if fields.len() != ncols {
        return Err(BillError::FieldCount { line, expected: ncols, found: fields.len() });
    }
    let get = |c: Col| cols[c as usize].map(|i| &text[fields[i].0..fields[i].1]);
    let s = |c: Col| get(c).unwrap_or("");
    let fen = |c: Col| -> Result<Fen, BillError> {
        match get(c) {
            None => Ok(Fen::ZERO),
            Some(v) => parse_scaled(v, 2).map(Fen::new).ok_or_else(|| BillError::Amount {
                line,
                column: CANON[c as usize],
                value: v.to_owned(),
            }),
        }
    };
    let booked = s(Col::BookedAt);
    let direction = match s(Col::Direction) {
        "收入" => FlowDirection::Income,
        "支出" => FlowDirection::Expense,
        other => {
            return Err(BillError::Direction { line, column: CANON[Col::Direction as usize], value: other.to_owned() });
        }
    };
    let rec = FundFlowRecord {
        line,
        booked_at: parse_time(booked).ok_or_else(|| BillError::Time {
            line,
            column: CANON[0],
            value: booked.to_owned(),
        })?,
        business_no: s(Col::BusinessNo),
        flow_no: s(Col::FlowNo),
        business_name: s(Col::BusinessName),
        business_type: s(Col::BusinessType),
        direction,
        amount: fen(Col::Amount)?,
        balance: fen(Col::Balance)?,
        applicant: s(Col::Applicant),
        remark: s(Col::Remark),
        voucher_no: s(Col::VoucherNo),
    };
    totals.count += 1;
    match direction {
        FlowDirection::Income => {
            totals.income_count += 1;
            totals.income += i128::from(rec.amount.get());
        }
        FlowDirection::Expense => {
            totals.expense_count += 1;
            totals.expense += i128::from(rec.amount.get());
        }
    }
    Ok(rec)
}

fn check(s: &FundFlowSummary, t: &Totals, line: u64) -> Result<(), BillError> {
    let mismatch =
        |what: &'static str, summary: String, rows: String| BillError::SummaryMismatch { line, what, summary, rows };
    for (what, v, rows) in [
        (SUM_CANON[0], s.count, t.count),
        (SUM_CANON[1], s.income_count, t.income_count),
        (SUM_CANON[3], s.expense_count, t.expense_count),
    ] {
        if v != rows {
            return Err(mismatch(what, v.to_string(), rows.to_string()));
        }
    }
    let yuan = |v: i128| {
        let sign = if v < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", v.unsigned_abs() / 100, v.unsigned_abs() % 100)
    };
    for (what, v, rows) in [(SUM_CANON[2], s.income_total, t.income), (SUM_CANON[4], s.expense_total, t.expense)] {
        if i128::from(v.get()) != rows {
            return Err(mismatch(what, v.to_yuan_string(), yuan(rows)));
        }
    }
    Ok(())
}
