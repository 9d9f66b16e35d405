//! Writing bills in WeChat's format: the sandbox serves `downloadbill` / `downloadfundflow`
//! with it, and benchmarks generate million-row bills with it. Streaming: one reused line
//! buffer, one `write_all` per line, the summary computed on the way.
//!
//! Format choices (guesses where WeChat's documentation is silent):
//! - lines end with `\r\n` by default: the bill is meant to be opened in Excel (that is why
//!   every field carries a backtick), and Windows line ends go with that; [`LineEnding::Lf`]
//!   is available, and the reader accepts both;
//! - no UTF-8 BOM by default (some downloads have one; [`WriteOptions::bom`] adds it);
//! - amounts always with two decimals, fees with five, `None` amounts as `0.00`, `None`
//!   times as an empty field;
//! - the summary line's fields carry backticks like the records, and the summary totals are
//!   column sums over all rows.

use std::io::{self, Write};

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::MilliFen;
use super::fund::{FlowDirection, FundFlowRow};
use super::trade::{Col, TradeRow};
use crate::money::Fen;

/// Which trade-bill layout to write (the reader needs no such hint: it reads the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TradeLayout {
    /// ALL, 27 columns, 7-column summary.
    All,
    /// SUCCESS, 20 columns (no refund columns), 4-column summary.
    Success,
    /// REFUND, 29 columns (ALL plus 退款申请时间 and 退款成功时间).
    Refund,
    /// RECHARGE_REFUND. Guess: the REFUND columns and summary (WeChat does not publish them).
    RechargeRefund,
    /// The legacy 24-column ALL layout (总金额, 代金券或立减优惠金额…) and its 5-column summary.
    Legacy,
}

const ALL: &[(&str, Col)] = &[
    ("交易时间", Col::TradeTime),
    ("公众账号ID", Col::AppId),
    ("商户号", Col::MchId),
    ("特约商户号", Col::SubMchId),
    ("设备号", Col::DeviceInfo),
    ("微信订单号", Col::TransactionId),
    ("商户订单号", Col::OutTradeNo),
    ("用户标识", Col::OpenId),
    ("交易类型", Col::TradeType),
    ("交易状态", Col::TradeState),
    ("付款银行", Col::Bank),
    ("货币种类", Col::Currency),
    ("应结订单金额", Col::Settlement),
    ("代金券金额", Col::Coupon),
    ("微信退款单号", Col::RefundId),
    ("商户退款单号", Col::OutRefundNo),
    ("退款金额", Col::RefundAmount),
    ("充值券退款金额", Col::RechargeCouponRefund),
    ("退款类型", Col::RefundType),
    ("退款状态", Col::RefundStatus),
    ("商品名称", Col::ProductName),
    ("商户数据包", Col::Attach),
    ("手续费", Col::Fee),
    ("费率", Col::Rate),
    ("订单金额", Col::OrderAmount),
    ("申请退款金额", Col::RequestedRefund),
    ("费率备注", Col::RateRemark),
];

const SUCCESS: &[(&str, Col)] = &[
    ("交易时间", Col::TradeTime),
    ("公众账号ID", Col::AppId),
    ("商户号", Col::MchId),
    ("特约商户号", Col::SubMchId),
    ("设备号", Col::DeviceInfo),
    ("微信订单号", Col::TransactionId),
    ("商户订单号", Col::OutTradeNo),
    ("用户标识", Col::OpenId),
    ("交易类型", Col::TradeType),
    ("交易状态", Col::TradeState),
    ("付款银行", Col::Bank),
    ("货币种类", Col::Currency),
    ("应结订单金额", Col::Settlement),
    ("代金券金额", Col::Coupon),
    ("商品名称", Col::ProductName),
    ("商户数据包", Col::Attach),
    ("手续费", Col::Fee),
    ("费率", Col::Rate),
    ("订单金额", Col::OrderAmount),
    ("费率备注", Col::RateRemark),
];

const REFUND: &[(&str, Col)] = &[
    ("交易时间", Col::TradeTime),
    ("公众账号ID", Col::AppId),
    ("商户号", Col::MchId),
    ("特约商户号", Col::SubMchId),
    ("设备号", Col::DeviceInfo),
    ("微信订单号", Col::TransactionId),
    ("商户订单号", Col::OutTradeNo),
    ("用户标识", Col::OpenId),
    ("交易类型", Col::TradeType),
    ("交易状态", Col::TradeState),
    ("付款银行", Col::Bank),
    ("货币种类", Col::Currency),
    ("应结订单金额", Col::Settlement),
    ("代金券金额", Col::Coupon),
    ("退款申请时间", Col::RefundApplyTime),
    ("退款成功时间", Col::RefundSuccessTime),
    ("微信退款单号", Col::RefundId),
    ("商户退款单号", Col::OutRefundNo),
    ("退款金额", Col::RefundAmount),
    ("充值券退款金额", Col::RechargeCouponRefund),
    ("退款类型", Col::RefundType),
    ("退款状态", Col::RefundStatus),
    ("商品名称", Col::ProductName),
    ("商户数据包", Col::Attach),
    ("手续费", Col::Fee),
    ("费率", Col::Rate),
    ("订单金额", Col::OrderAmount),
    ("申请退款金额", Col::RequestedRefund),
    ("费率备注", Col::RateRemark),
];

const LEGACY: &[(&str, Col)] = &[
    ("交易时间", Col::TradeTime),
    ("公众账号ID", Col::AppId),
    ("商户号", Col::MchId),
    ("子商户号", Col::SubMchId),
    ("设备号", Col::DeviceInfo),
    ("微信订单号", Col::TransactionId),
    ("商户订单号", Col::OutTradeNo),
    ("用户标识", Col::OpenId),
    ("交易类型", Col::TradeType),
    ("交易状态", Col::TradeState),
    ("付款银行", Col::Bank),
    ("货币种类", Col::Currency),
    ("总金额", Col::Settlement),
    ("代金券或立减优惠金额", Col::Coupon),
    ("微信退款单号", Col::RefundId),
    ("商户退款单号", Col::OutRefundNo),
    ("退款金额", Col::RefundAmount),
    ("代金券或立减优惠退款金额", Col::RechargeCouponRefund),
    ("退款类型", Col::RefundType),
    ("退款状态", Col::RefundStatus),
    ("商品名称", Col::ProductName),
    ("商户数据包", Col::Attach),
    ("手续费", Col::Fee),
    ("费率", Col::Rate),
];

#[derive(Clone, Copy)]
enum Sum {
    Count,
    Settlement,
    Refund,
    Recharge,
    Fee,
    Order,
    Requested,
}

const SUM_FULL: &[(&str, Sum)] = &[
    ("总交易单数", Sum::Count),
    ("应结订单总金额", Sum::Settlement),
    ("退款总金额", Sum::Refund),
    ("充值券退款总金额", Sum::Recharge),
    ("手续费总金额", Sum::Fee),
    ("订单总金额", Sum::Order),
    ("申请退款总金额", Sum::Requested),
];

const SUM_SUCCESS: &[(&str, Sum)] = &[
    ("总交易单数", Sum::Count),
    ("应结订单总金额", Sum::Settlement),
    ("手续费总金额", Sum::Fee),
    ("订单总金额", Sum::Order),
];

const SUM_LEGACY: &[(&str, Sum)] = &[
    ("总交易单数", Sum::Count),
    ("总交易额", Sum::Settlement),
    ("总退款金额", Sum::Refund),
    ("总代金券或立减优惠退款金额", Sum::Recharge),
    ("手续费总金额", Sum::Fee),
];

impl TradeLayout {
    /// The header's column names, in order.
    pub fn column_names(self) -> impl Iterator<Item = &'static str> {
        self.columns().iter().map(|(n, _)| *n)
    }

    fn columns(self) -> &'static [(&'static str, Col)] {
        match self {
            TradeLayout::All => ALL,
            TradeLayout::Success => SUCCESS,
            TradeLayout::Refund | TradeLayout::RechargeRefund => REFUND,
            TradeLayout::Legacy => LEGACY,
        }
    }

    fn summary(self) -> &'static [(&'static str, Sum)] {
        match self {
            TradeLayout::All | TradeLayout::Refund | TradeLayout::RechargeRefund => SUM_FULL,
            TradeLayout::Success => SUM_SUCCESS,
            TradeLayout::Legacy => SUM_LEGACY,
        }
    }
}

/// Line terminator to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineEnding {
    /// `\r\n` (our guess at WeChat's; see the module docs).
    #[default]
    CrLf,
    /// `\n`.
    Lf,
}

impl LineEnding {
    fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::CrLf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }
}

/// Small knobs so tests can produce the variants real downloads show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub line_ending: LineEnding,
    /// Start with a UTF-8 BOM.
    pub bom: bool,
}

#[derive(Default)]
struct Totals {
    count: u64,
    settlement: i128,
    refund: i128,
    recharge: i128,
    fee: i128,
    order: i128,
    requested: i128,
}

/// Writes a trade bill row by row; [`finish`](Self::finish) appends the summary.
pub struct BillWriter<W: Write> {
    out: W,
    layout: TradeLayout,
    eol: &'static [u8],
    line: Vec<u8>,
    totals: Totals,
}

impl<W: Write> BillWriter<W> {
    /// Writes the header with default options (`\r\n`, no BOM).
    pub fn new(out: W, layout: TradeLayout) -> io::Result<BillWriter<W>> {
        BillWriter::with_options(out, layout, WriteOptions::default())
    }

    /// Writes the header with explicit options.
    pub fn with_options(mut out: W, layout: TradeLayout, opts: WriteOptions) -> io::Result<BillWriter<W>> {
        let eol = opts.line_ending.bytes();
        let mut line = Vec::with_capacity(1024);
        if opts.bom {
            line.extend_from_slice(b"\xEF\xBB\xBF");
        }
        header(&mut line, layout.column_names(), eol);
        out.write_all(&line)?;
        Ok(BillWriter { out, layout, eol, line, totals: Totals::default() })
    }

    /// Writes one record. A text field that contains `` ,` `` or a line break cannot be
    /// represented in the format and is refused (`InvalidInput`) rather than corrupting the bill.
    pub fn write_row(&mut self, row: &TradeRow) -> io::Result<()> {
        self.line.clear();
        for (i, (_, col)) in self.layout.columns().iter().enumerate() {
            self.line.extend_from_slice(if i == 0 { b"`" } else { b",`" });
            field(&mut self.line, row, *col)?;
        }
        self.line.extend_from_slice(self.eol);
        self.out.write_all(&self.line)?;
        let t = &mut self.totals;
        t.count += 1;
        t.settlement += i128::from(row.settlement_amount.get());
        t.refund += i128::from(row.refund_amount.get());
        t.recharge += i128::from(row.recharge_coupon_refund.get());
        t.fee += i128::from(row.fee.get());
        t.order += i128::from(row.order_amount.unwrap_or_default().get());
        t.requested += i128::from(row.requested_refund_amount.unwrap_or_default().get());
        Ok(())
    }

    /// Writes the summary header and line, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let sums = self.layout.summary();
        self.line.clear();
        header(&mut self.line, sums.iter().map(|(n, _)| *n), self.eol);
        let t = &self.totals;
        for (i, (_, s)) in sums.iter().enumerate() {
            self.line.extend_from_slice(if i == 0 { b"`" } else { b",`" });
            match s {
                Sum::Count => write!(self.line, "{}", t.count)?,
                Sum::Settlement => decimal(&mut self.line, t.settlement, 2),
                Sum::Refund => decimal(&mut self.line, t.refund, 2),
                Sum::Recharge => decimal(&mut self.line, t.recharge, 2),
                Sum::Fee => decimal(&mut self.line, t.fee, 5),
                Sum::Order => decimal(&mut self.line, t.order, 2),
                Sum::Requested => decimal(&mut self.line, t.requested, 2),
            }
        }
        self.line.extend_from_slice(self.eol);
        self.out.write_all(&self.line)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole trade bill from rows in one call.
pub fn write_trade_bill<'r, W: Write>(
    out: W,
    layout: TradeLayout,
    rows: impl IntoIterator<Item = &'r TradeRow>,
) -> io::Result<W> {
    let mut w = BillWriter::new(out, layout)?;
    for row in rows {
        w.write_row(row)?;
    }
    w.finish()
}

/// Writes a whole fund-flow bill from rows in one call.
pub fn write_fund_flow_bill<'r, W: Write>(out: W, rows: impl IntoIterator<Item = &'r FundFlowRow>) -> io::Result<W> {
    let mut w = FundFlowWriter::new(out)?;
    for row in rows {
        w.write_row(row)?;
    }
    w.finish()
}

fn field(out: &mut Vec<u8>, row: &TradeRow, col: Col) -> io::Result<()> {
    match col {
        Col::TradeTime => time(out, Some(row.trade_time)),
        Col::AppId => text(out, &row.appid)?,
        Col::MchId => text(out, &row.mch_id)?,
        Col::SubMchId => text(out, &row.sub_mch_id)?,
        Col::DeviceInfo => text(out, &row.device_info)?,
        Col::TransactionId => text(out, &row.transaction_id)?,
        Col::OutTradeNo => text(out, &row.out_trade_no)?,
        Col::OpenId => text(out, &row.openid)?,
        Col::TradeType => text(out, &row.trade_type)?,
        Col::TradeState => text(out, &row.trade_state)?,
        Col::Bank => text(out, &row.bank)?,
        Col::Currency => text(out, &row.currency)?,
        Col::Settlement => fen(out, row.settlement_amount),
        Col::Coupon => fen(out, row.coupon_amount),
        Col::RefundApplyTime => time(out, row.refund_apply_time),
        Col::RefundSuccessTime => time(out, row.refund_success_time),
        Col::RefundId => text(out, &row.refund_id)?,
        Col::OutRefundNo => text(out, &row.out_refund_no)?,
        Col::RefundAmount => fen(out, row.refund_amount),
        Col::RechargeCouponRefund => fen(out, row.recharge_coupon_refund),
        Col::RefundType => text(out, &row.refund_type)?,
        Col::RefundStatus => text(out, &row.refund_status)?,
        Col::ProductName => text(out, &row.product_name)?,
        Col::Attach => text(out, &row.attach)?,
        Col::Fee => millifen(out, row.fee),
        Col::Rate => text(out, &row.rate)?,
        Col::OrderAmount => fen(out, row.order_amount.unwrap_or_default()),
        Col::RequestedRefund => fen(out, row.requested_refund_amount.unwrap_or_default()),
        Col::RateRemark => text(out, row.rate_remark.as_deref().unwrap_or(""))?,
    }
    Ok(())
}

/// Writes a fund-flow bill row by row; [`finish`](Self::finish) appends the summary.
pub struct FundFlowWriter<W: Write> {
    out: W,
    eol: &'static [u8],
    line: Vec<u8>,
    count: u64,
    income_count: u64,
    income: i128,
    expense_count: u64,
    expense: i128,
}

const FUND_COLUMNS: [&str; 11] = [
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

const FUND_SUMMARY: [&str; 5] = ["资金流水总笔数", "收入笔数", "收入金额", "支出笔数", "支出金额"];

impl<W: Write> FundFlowWriter<W> {
    /// Writes the header with default options.
    pub fn new(out: W) -> io::Result<FundFlowWriter<W>> {
        FundFlowWriter::with_options(out, WriteOptions::default())
    }

    /// Writes the header with explicit options.
    pub fn with_options(mut out: W, opts: WriteOptions) -> io::Result<FundFlowWriter<W>> {
        let eol = opts.line_ending.bytes();
        let mut line = Vec::with_capacity(512);
        if opts.bom {
            line.extend_from_slice(b"\xEF\xBB\xBF");
        }
        header(&mut line, FUND_COLUMNS.iter().copied(), eol);
        out.write_all(&line)?;
        Ok(FundFlowWriter { out, eol, line, count: 0, income_count: 0, income: 0, expense_count: 0, expense: 0 })
    }

    /// Writes one record (text fields with `` ,` `` or line breaks are refused).
    pub fn write_row(&mut self, row: &FundFlowRow) -> io::Result<()> {
        let l = &mut self.line;
        l.clear();
        l.push(b'`');
        time(l, Some(row.booked_at));
        for t in [&row.business_no, &row.flow_no, &row.business_name, &row.business_type] {
            l.extend_from_slice(b",`");
            text(l, t)?;
        }
        l.extend_from_slice(b",`");
        text(l, row.direction.as_str())?;
        l.extend_from_slice(b",`");
        fen(l, row.amount);
        l.extend_from_slice(b",`");
        fen(l, row.balance);
        for t in [&row.applicant, &row.remark, &row.voucher_no] {
            l.extend_from_slice(b",`");
            text(l, t)?;
        }
        l.extend_from_slice(self.eol);
        self.out.write_all(l)?;
        self.count += 1;
        match row.direction {
            FlowDirection::Income => {
                self.income_count += 1;
                self.income += i128::from(row.amount.get());
            }
            FlowDirection::Expense => {
                self.expense_count += 1;
                self.expense += i128::from(row.amount.get());
            }
        }
        Ok(())
    }

    /// Writes the summary header and line, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let l = &mut self.line;
        l.clear();
        header(l, FUND_SUMMARY.iter().copied(), self.eol);
        write!(l, "`{},`{},`", self.count, self.income_count)?;
        decimal(l, self.income, 2);
        write!(l, ",`{},`", self.expense_count)?;
        decimal(l, self.expense, 2);
        l.extend_from_slice(self.eol);
        self.out.write_all(l)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn header<'n>(out: &mut Vec<u8>, names: impl Iterator<Item = &'n str>, eol: &[u8]) {
    for (i, n) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(n.as_bytes());
    }
    out.extend_from_slice(eol);
}

fn text(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.contains(",`") || s.contains(['\r', '\n']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bill field {s:?} contains \",`\" or a line break, which the bill format cannot carry"),
        ));
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn fen(out: &mut Vec<u8>, v: Fen) {
    decimal(out, i128::from(v.get()), 2);
}

fn millifen(out: &mut Vec<u8>, v: MilliFen) {
    decimal(out, i128::from(v.get()), 5);
}

/// Writes `v / 10^scale` with exactly `scale` decimals, integers only. Hand-rolled rather
/// than `write!`: the benchmark bills have millions of amounts and `fmt` dominated the time.
fn decimal(out: &mut Vec<u8>, v: i128, scale: u32) {
    if v < 0 {
        out.push(b'-');
    }
    let p = 10u128.pow(scale);
    let a = v.unsigned_abs();
    digits(out, a / p);
    out.push(b'.');
    let mut frac = a % p;
    let mut buf = [b'0'; 38];
    let w = scale as usize;
    for slot in buf[..w].iter_mut().rev() {
        *slot = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&buf[..w]);
}

fn digits(out: &mut Vec<u8>, v: u128) {
    // Row amounts fit in u64, whose division is much cheaper than u128's.
    let mut buf = itoa::Buffer::new();
    let text = match u64::try_from(v) {
        Ok(v) => buf.format(v),
        Err(_) => buf.format(v),
    };
    out.extend_from_slice(text.as_bytes());
}

fn time(out: &mut Vec<u8>, t: Option<NaiveDateTime>) {
    let Some(t) = t else { return };
    let two = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    // Bills only carry years 1000–9999; anything else keeps chrono's own rendering.
    match u32::try_from(t.year()) {
        Ok(y @ 1000..=9999) => {
            two(out, y / 100);
            two(out, y % 100);
        }
        _ => {
            let _ = write!(out, "{:04}", t.year());
        }
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        let mut v = Vec::new();
        decimal(&mut v, -6, 5);
        decimal(&mut v, 123_456, 2);
        decimal(&mut v, 0, 2);
        v.push(b' ');
        decimal(&mut v, -(i128::from(i64::MAX) * 1000 + 7), 5);
        v.push(b' ');
        time(&mut v, NaiveDateTime::parse_from_str("2017-01-05 09:08:07", "%Y-%m-%d %H:%M:%S").ok());
        assert_eq!(String::from_utf8(v).unwrap(), "-0.000061234.560.00 -92233720368547758.07007 2017-01-05 09:08:07");
    }

    #[test]
    fn layouts_have_documented_widths() {
        assert_eq!(TradeLayout::All.column_names().count(), 27);
        assert_eq!(TradeLayout::Success.column_names().count(), 20);
        assert_eq!(TradeLayout::Refund.column_names().count(), 29);
        assert_eq!(TradeLayout::Legacy.column_names().count(), 24);
    }

    #[test]
    fn unrepresentable_text_is_refused() {
        let mut v = Vec::new();
        assert!(text(&mut v, "a,`b").is_err());
        assert!(text(&mut v, "a\nb").is_err());
        assert!(text(&mut v, "a,b").is_ok());
    }
}
