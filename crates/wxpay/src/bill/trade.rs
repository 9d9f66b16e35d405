//! Trade bills (`downloadbill`): ALL, SUCCESS, REFUND, RECHARGE_REFUND and the legacy
//! 24-column layout, read by header name into [`TradeRecord`] / [`TradeRow`] and checked
//! against their summary line.

use std::io::BufRead;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::text::{Lines, map_header, parse_count, parse_scaled, parse_time, split_record};
use super::{BillError, MilliFen, shanghai_to_utc};
use crate::money::Fen;

/// Column slots of a trade bill: one per meaning, whatever the header calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Col {
    TradeTime,
    AppId,
    MchId,
    SubMchId,
    DeviceInfo,
    TransactionId,
    OutTradeNo,
    OpenId,
    TradeType,
    TradeState,
    Bank,
    Currency,
    Settlement,
    Coupon,
    RefundApplyTime,
    RefundSuccessTime,
    RefundId,
    OutRefundNo,
    RefundAmount,
    RechargeCouponRefund,
    RefundType,
    RefundStatus,
    ProductName,
    Attach,
    Fee,
    Rate,
    OrderAmount,
    RequestedRefund,
    RateRemark,
}

const NCOLS: usize = Col::RateRemark as usize + 1;

/// The current name of each slot, used in error messages.
const CANON: [&str; NCOLS] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "退款申请时间",
    "退款成功时间",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// Every header name we understand. Legacy accounts say 总金额 / 代金券或立减优惠金额 /
/// 代金券或立减优惠退款金额 / 子商户号; partner bills say 服务商的APPID. 企业红包金额 is, per
/// WeChat's format notes, the oldest name of the coupon column (guess: its refund twin is
/// 企业红包退款金额).
const ALIASES: &[(&str, usize)] = &[
    ("交易时间", Col::TradeTime as usize),
    ("公众账号ID", Col::AppId as usize),
    ("服务商的APPID", Col::AppId as usize),
    ("商户号", Col::MchId as usize),
    ("特约商户号", Col::SubMchId as usize),
    ("子商户号", Col::SubMchId as usize),
    ("设备号", Col::DeviceInfo as usize),
    ("微信订单号", Col::TransactionId as usize),
    ("商户订单号", Col::OutTradeNo as usize),
    ("用户标识", Col::OpenId as usize),
    ("交易类型", Col::TradeType as usize),
    ("交易状态", Col::TradeState as usize),
    ("付款银行", Col::Bank as usize),
    ("货币种类", Col::Currency as usize),
    ("应结订单金额", Col::Settlement as usize),
    ("总金额", Col::Settlement as usize),
    ("代金券金额", Col::Coupon as usize),
    ("代金券或立减优惠金额", Col::Coupon as usize),
    ("企业红包金额", Col::Coupon as usize),
    ("退款申请时间", Col::RefundApplyTime as usize),
    ("退款成功时间", Col::RefundSuccessTime as usize),
    ("微信退款单号", Col::RefundId as usize),
    ("商户退款单号", Col::OutRefundNo as usize),
    ("退款金额", Col::RefundAmount as usize),
    ("充值券退款金额", Col::RechargeCouponRefund as usize),
    ("代金券或立减优惠退款金额", Col::RechargeCouponRefund as usize),
    ("企业红包退款金额", Col::RechargeCouponRefund as usize),
    ("退款类型", Col::RefundType as usize),
    ("退款状态", Col::RefundStatus as usize),
    ("商品名称", Col::ProductName as usize),
    ("商户数据包", Col::Attach as usize),
    ("手续费", Col::Fee as usize),
    ("费率", Col::Rate as usize),
    ("订单金额", Col::OrderAmount as usize),
    ("申请退款金额", Col::RequestedRefund as usize),
    ("费率备注", Col::RateRemark as usize),
];

/// Without these a trade bill cannot be reconciled at all.
const REQUIRED: [Col; 6] =
    [Col::TradeTime, Col::TransactionId, Col::OutTradeNo, Col::TradeState, Col::Settlement, Col::Fee];

/// Summary slots.
#[derive(Clone, Copy)]
enum Sum {
    Count,
    Settlement,
    Refund,
    RechargeCouponRefund,
    Fee,
    Order,
    RequestedRefund,
}

const NSUMS: usize = Sum::RequestedRefund as usize + 1;

const SUM_CANON: [&str; NSUMS] =
    ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额"];

/// Summary header names, current and legacy (总交易额 / 总退款金额 / 总代金券或立减优惠退款金额).
const SUM_ALIASES: &[(&str, usize)] = &[
    ("总交易单数", Sum::Count as usize),
    ("应结订单总金额", Sum::Settlement as usize),
    ("总交易额", Sum::Settlement as usize),
    ("退款总金额", Sum::Refund as usize),
    ("总退款金额", Sum::Refund as usize),
    ("充值券退款总金额", Sum::RechargeCouponRefund as usize),
    ("总代金券或立减优惠退款金额", Sum::RechargeCouponRefund as usize),
    ("总企业红包退款金额", Sum::RechargeCouponRefund as usize),
    ("手续费总金额", Sum::Fee as usize),
    ("订单总金额", Sum::Order as usize),
    ("申请退款总金额", Sum::RequestedRefund as usize),
];

/// One trade-bill row borrowed from the reader's line buffer: the fast path (no allocation),
/// valid until the next call to [`BillReader::next_record`]. Text fields are exactly as
/// written; absent columns read as `""`, zero or `None` (see each field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRecord<'a> {
    /// The 1-based line in the bill, for error reports that point at the file.
    pub line: u64,
    /// 交易时间 as written (Beijing time): payment time, or refund *request* time on refund rows.
    pub trade_time: NaiveDateTime,
    /// 公众账号ID: the appid the order was placed with.
    pub appid: &'a str,
    /// 商户号.
    pub mch_id: &'a str,
    /// 特约商户号 (子商户号 in legacy bills); WeChat writes `0` for a direct merchant.
    pub sub_mch_id: &'a str,
    /// 设备号 (`device_info` of the order), often empty.
    pub device_info: &'a str,
    /// 微信订单号: WeChat's number for the payment (also on its refund rows).
    pub transaction_id: &'a str,
    /// 商户订单号: our `out_trade_no`, the main matching key.
    pub out_trade_no: &'a str,
    /// 用户标识: the payer's openid.
    pub openid: &'a str,
    /// 交易类型: JSAPI, NATIVE, APP, MICROPAY…
    pub trade_type: &'a str,
    /// SUCCESS, REFUND, REVOKED… kept as text so a new state never breaks reading.
    pub trade_state: &'a str,
    /// 付款银行, e.g. `CFT` (balance) or `CMB_CREDIT`.
    pub bank: &'a str,
    /// 货币种类, `CNY`.
    pub currency: &'a str,
    /// 应结订单金额 (legacy 总金额).
    pub settlement_amount: Fen,
    /// 代金券金额 (legacy 代金券或立减优惠金额); zero when the column is absent.
    pub coupon_amount: Fen,
    /// 微信退款单号; `""` when absent (SUCCESS), `"0"` on payment rows of an ALL bill.
    pub refund_id: &'a str,
    /// 商户退款单号: our `out_refund_no` on refund rows.
    pub out_refund_no: &'a str,
    /// 退款金额; zero when absent.
    pub refund_amount: Fen,
    /// 充值券退款金额 (legacy 代金券或立减优惠退款金额); zero when absent.
    pub recharge_coupon_refund: Fen,
    /// 退款类型, e.g. `ORIGINAL` or `BALANCE`.
    pub refund_type: &'a str,
    /// 退款状态 at the time the bill was made (it is not updated later).
    pub refund_status: &'a str,
    /// 商品名称 (the order's `body`); may contain commas.
    pub product_name: &'a str,
    /// 商户数据包 (the order's `attach`); may contain commas.
    pub attach: &'a str,
    /// 手续费 with its five decimals; negative on refund rows (the fee WeChat gives back).
    pub fee: MilliFen,
    /// 费率 as written, e.g. `0.60%`.
    pub rate: &'a str,
    /// 订单金额; `None` in legacy bills, which lack the column.
    pub order_amount: Option<Fen>,
    /// 申请退款金额; `None` when the column is absent.
    pub requested_refund_amount: Option<Fen>,
    /// 费率备注; `None` when the column is absent.
    pub rate_remark: Option<&'a str>,
    /// 退款申请时间 (REFUND bills only); `None` when absent or empty.
    pub refund_apply_time: Option<NaiveDateTime>,
    /// 退款成功时间 (REFUND bills only); `None` when absent or empty (refund still running).
    pub refund_success_time: Option<NaiveDateTime>,
}

/// One trade-bill row, owned: what the iterator yields and what [`super::BillWriter`] writes.
/// Field meanings are those of [`TradeRecord`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TradeRow {
    pub trade_time: NaiveDateTime,
    pub appid: String,
    pub mch_id: String,
    pub sub_mch_id: String,
    pub device_info: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub openid: String,
    pub trade_type: String,
    pub trade_state: String,
    pub bank: String,
    pub currency: String,
    pub settlement_amount: Fen,
    pub coupon_amount: Fen,
    pub refund_id: String,
    pub out_refund_no: String,
    pub refund_amount: Fen,
    pub recharge_coupon_refund: Fen,
    pub refund_type: String,
    pub refund_status: String,
    pub product_name: String,
    pub attach: String,
    pub fee: MilliFen,
    pub rate: String,
    pub order_amount: Option<Fen>,
    pub requested_refund_amount: Option<Fen>,
    pub rate_remark: Option<String>,
    pub refund_apply_time: Option<NaiveDateTime>,
    pub refund_success_time: Option<NaiveDateTime>,
}

impl TradeRecord<'_> {
    /// Whether this row is a refund (交易状态 `REFUND`) rather than a payment.
    pub fn is_refund(&self) -> bool {
        self.trade_state == "REFUND"
    }

    /// The trade time as an instant.
    pub fn trade_time_utc(&self) -> DateTime<Utc> {
        shanghai_to_utc(self.trade_time)
    }

    /// Copies the borrowed fields out of the line buffer.
    pub fn to_row(&self) -> TradeRow {
        TradeRow {
            trade_time: self.trade_time,
            appid: self.appid.to_owned(),
            mch_id: self.mch_id.to_owned(),
            sub_mch_id: self.sub_mch_id.to_owned(),
            device_info: self.device_info.to_owned(),
            transaction_id: self.transaction_id.to_owned(),
            out_trade_no: self.out_trade_no.to_owned(),
            openid: self.openid.to_owned(),
            trade_type: self.trade_type.to_owned(),
            trade_state: self.trade_state.to_owned(),
            bank: self.bank.to_owned(),
            currency: self.currency.to_owned(),
            settlement_amount: self.settlement_amount,
            coupon_amount: self.coupon_amount,
            refund_id: self.refund_id.to_owned(),
            out_refund_no: self.out_refund_no.to_owned(),
            refund_amount: self.refund_amount,
            recharge_coupon_refund: self.recharge_coupon_refund,
            refund_type: self.refund_type.to_owned(),
            refund_status: self.refund_status.to_owned(),
            product_name: self.product_name.to_owned(),
            attach: self.attach.to_owned(),
            fee: self.fee,
            rate: self.rate.to_owned(),
            order_amount: self.order_amount,
            requested_refund_amount: self.requested_refund_amount,
            rate_remark: self.rate_remark.map(str::to_owned),
            refund_apply_time: self.refund_apply_time,
            refund_success_time: self.refund_success_time,
        }
    }
}

impl TradeRow {
    /// Whether this row is a refund (交易状态 `REFUND`) rather than a payment.
    pub fn is_refund(&self) -> bool {
        self.trade_state == "REFUND"
    }

    /// The trade time as an instant.
    pub fn trade_time_utc(&self) -> DateTime<Utc> {
        shanghai_to_utc(self.trade_time)
    }
}

/// The summary line of a trade bill, already checked against the rows. Totals the layout
/// does not have are `None` (SUCCESS has no refund totals, legacy bills no order totals).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillSummary {
    /// 总交易单数: payment and refund rows together.
    pub count: u64,
    /// 应结订单总金额 (legacy 总交易额).
    pub settlement_total: Fen,
    /// 退款总金额 (legacy 总退款金额).
    pub refund_total: Option<Fen>,
    /// 充值券退款总金额 (legacy 总代金券或立减优惠退款金额).
    pub recharge_coupon_refund_total: Option<Fen>,
    /// 手续费总金额, refund rows' negative fees included.
    pub fee_total: MilliFen,
    /// 订单总金额.
    pub order_total: Option<Fen>,
    /// 申请退款总金额.
    pub requested_refund_total: Option<Fen>,
}

/// Running column sums, in i128 so no bill can overflow them.
#[derive(Default)]
struct Totals {
    count: u64,
    settlement: i128,
    settlement_payments: i128,
    refund: i128,
    recharge: i128,
    fee: i128,
    order: i128,
    order_payments: i128,
    requested: i128,
}

/// Streams a trade bill: `new` reads the header, [`next_record`](Self::next_record) (or the
/// `Iterator` impl, which yields owned rows) reads records, and reaching the summary checks
/// it; [`finish`](Self::finish) returns the checked summary. After the first error the reader
/// yields nothing more and `finish` returns that error.
pub struct BillReader<R> {
    lines: Lines<R>,
    cols: [Option<usize>; NCOLS],
    ncols: usize,
    fields: Vec<(usize, usize)>,
    totals: Totals,
    summary: Option<BillSummary>,
    failed: Option<BillError>,
    done: bool,
}

impl<R: BufRead> BillReader<R> {
    /// Reads the header line and maps the columns. A fund-flow bill is refused here
    /// ([`BillError::WrongKind`]) rather than misread.
    pub fn new(reader: R) -> Result<BillReader<R>, BillError> {
        let mut lines = Lines::new(reader);
        let mut cols = [None; NCOLS];
        let (line, ncols) = match lines.next_line()? {
            None => return Err(BillError::Empty),
            Some((line, text)) => {
                if text.starts_with('`') {
                    return Err(BillError::MissingColumn { line, column: CANON[0] });
                }
                let n = map_header(text, line, ALIASES, &mut cols)?;
                if cols[Col::TradeTime as usize].is_none() && super::text::header_names(text).any(|c| c == "记账时间")
                {
                    return Err(BillError::WrongKind { line, expected: "trade", found: "fund-flow" });
                }
                (line, n)
            }
        };
        if let Some(c) = REQUIRED.iter().find(|c| cols[**c as usize].is_none()) {
            return Err(BillError::MissingColumn { line, column: CANON[*c as usize] });
        }
        Ok(BillReader {
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

    /// Whether the header has a column for this meaning, e.g. to tell the legacy layout
    /// (no 订单金额) from the current one.
    pub fn has_order_amount_column(&self) -> bool {
        self.cols[Col::OrderAmount as usize].is_some()
    }

    /// The next record, borrowed from the line buffer; `None` once the (checked) summary has
    /// been read or after an error. A bill that ends without a summary is an error.
    pub fn next_record(&mut self) -> Option<Result<TradeRecord<'_>, BillError>> {
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
            return match self.summary_header().and_then(|(slots, n)| self.read_summary(&slots, n)) {
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

    /// Maps the summary header (the current line) to summary slots.
    fn summary_header(&self) -> Result<([Option<usize>; NSUMS], usize), BillError> {
        let (line, text) = self.lines.current()?;
        let mut slots = [None; NSUMS];
        let n = map_header(text, line, SUM_ALIASES, &mut slots)?;
        summary_header_ok(&slots, line, text)?;
        Ok((slots, n))
    }

    /// Reads any remaining records and returns the summary, checked against every row.
    pub fn finish(mut self) -> Result<BillSummary, BillError> {
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

    fn read_summary(&mut self, slots: &[Option<usize>; NSUMS], n: usize) -> Result<(), BillError> {
        let (line, text) = match self.lines.next_line()? {
            Some(l) => l,
            None => return Err(BillError::MissingSummary { line: self.lines.line_no() }),
        };
        split_record(text, line, &mut self.fields)?;
        if self.fields.len() != n {
            return Err(BillError::FieldCount { line, expected: n, found: self.fields.len() });
        }
        let field = |s: Sum| slots[s as usize].map(|i| &text[self.fields[i].0..self.fields[i].1]);
        let fen = |s: Sum| -> Result<Option<Fen>, BillError> {
            field(s)
                .map(|v| parse_scaled(v, 2).map(Fen::new).ok_or_else(|| amount_err(line, SUM_CANON[s as usize], v)))
                .transpose()
        };
        let count = field(Sum::Count).unwrap_or_default();
        let summary = BillSummary {
            count: parse_count(count).ok_or_else(|| BillError::Count {
                line,
                column: SUM_CANON[0],
                value: count.to_owned(),
            })?,
            settlement_total: fen(Sum::Settlement)?.unwrap_or_default(),
            refund_total: fen(Sum::Refund)?,
            recharge_coupon_refund_total: fen(Sum::RechargeCouponRefund)?,
            fee_total: {
                let v = field(Sum::Fee).unwrap_or_default();
                MilliFen::new(parse_scaled(v, 5).ok_or_else(|| amount_err(line, SUM_CANON[Sum::Fee as usize], v))?)
            },
            order_total: fen(Sum::Order)?,
            requested_refund_total: fen(Sum::RequestedRefund)?,
        };
        if let Some((extra, _)) = self.lines.next_line()? {
            return Err(BillError::TrailingData { line: extra });
        }
        check(&summary, &self.totals, line)?;
        self.summary = Some(summary);
        Ok(())
    }
}

impl<R: BufRead> Iterator for BillReader<R> {
    type Item = Result<TradeRow, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|r| r.map(|rec| rec.to_row()))
    }
}

fn summary_header_ok(slots: &[Option<usize>; NSUMS], line: u64, text: &str) -> Result<(), BillError> {
    if slots[Sum::Count as usize].is_none() {
        return Err(BillError::UnexpectedLine { line, text: text.chars().take(80).collect() });
    }
    for s in [Sum::Settlement, Sum::Fee] {
        if slots[s as usize].is_none() {
            return Err(BillError::MissingColumn { line, column: SUM_CANON[s as usize] });
        }
    }
    Ok(())
}

fn amount_err(line: u64, column: &'static str, value: &str) -> BillError {
    BillError::Amount { line, column, value: value.to_owned() }
}

fn parse_record<'a>(
    text: &'a str,
    line: u64,
    cols: &[Option<usize>; NCOLS],
    ncols: usize,
    fields: &mut Vec<(usize, usize)>,
    totals: &mut Totals,
) -> Result<TradeRecord<'a>, BillError> {
    split_record(text, line, fields)?;
    if fields.len() != ncols {
        return Err(BillError::FieldCount { line, expected: ncols, found: fields.len() });
    }
    let get = |c: Col| cols[c as usize].map(|i| &text[fields[i].0..fields[i].1]);
    let s = |c: Col| get(c).unwrap_or("");
    let money = |c: Col, scale: u32| -> Result<Option<i64>, BillError> {
        get(c).map(|v| parse_scaled(v, scale).ok_or_else(|| amount_err(line, CANON[c as usize], v))).transpose()
    };
    let time = |c: Col| -> Result<Option<NaiveDateTime>, BillError> {
        match get(c) {
            None | Some("") => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| BillError::Time {
                line,
                column: CANON[c as usize],
                value: v.to_owned(),
            }),
        }
    };
    let fen = |c: Col| money(c, 2).map(|v| v.map(Fen::new));
    let rec = TradeRecord {
        line,
        trade_time: time(Col::TradeTime)?.ok_or_else(|| BillError::Time {
            line,
            column: CANON[0],
            value: String::new(),
        })?,
        appid: s(Col::AppId),
        mch_id: s(Col::MchId),
        sub_mch_id: s(Col::SubMchId),
        device_info: s(Col::DeviceInfo),
        transaction_id: s(Col::TransactionId),
        out_trade_no: s(Col::OutTradeNo),
        openid: s(Col::OpenId),
        trade_type: s(Col::TradeType),
        trade_state: s(Col::TradeState),
        bank: s(Col::Bank),
        currency: s(Col::Currency),
        settlement_amount: fen(Col::Settlement)?.unwrap_or_default(),
        coupon_amount: fen(Col::Coupon)?.unwrap_or_default(),
        refund_id: s(Col::RefundId),
        out_refund_no: s(Col::OutRefundNo),
        refund_amount: fen(Col::RefundAmount)?.unwrap_or_default(),
        recharge_coupon_refund: fen(Col::RechargeCouponRefund)?.unwrap_or_default(),
        refund_type: s(Col::RefundType),
        refund_status: s(Col::RefundStatus),
        product_name: s(Col::ProductName),
        attach: s(Col::Attach),
        fee: MilliFen::new(money(Col::Fee, 5)?.unwrap_or_default()),
        rate: s(Col::Rate),
        order_amount: fen(Col::OrderAmount)?,
        requested_refund_amount: fen(Col::RequestedRefund)?,
        rate_remark: get(Col::RateRemark),
        refund_apply_time: time(Col::RefundApplyTime)?,
        refund_success_time: time(Col::RefundSuccessTime)?,
    };
    let refund = rec.is_refund();
    totals.count += 1;
    totals.settlement += i128::from(rec.settlement_amount.get());
    totals.refund += i128::from(rec.refund_amount.get());
    totals.recharge += i128::from(rec.recharge_coupon_refund.get());
    totals.fee += i128::from(rec.fee.get());
    let order = i128::from(rec.order_amount.unwrap_or_default().get());
    totals.order += order;
    totals.requested += i128::from(rec.requested_refund_amount.unwrap_or_default().get());
    if !refund {
        totals.settlement_payments += i128::from(rec.settlement_amount.get());
        totals.order_payments += order;
    }
    Ok(rec)
}

/// Compares the summary with the rows. Guess (documented in the module overview): totals are
/// column sums over all rows; for 应结订单总金额 and 订单总金额 the sum over payment rows only
/// is accepted too, in case refund rows repeat the original order's amount.
fn check(s: &BillSummary, t: &Totals, line: u64) -> Result<(), BillError> {
    let yuan = |v: i128| -> String {
        let sign = if v < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", v.unsigned_abs() / 100, v.unsigned_abs() % 100)
    };
    let mismatch =
        |what: &'static str, summary: String, rows: String| BillError::SummaryMismatch { line, what, summary, rows };
    if s.count != t.count {
        return Err(mismatch("总交易单数", s.count.to_string(), t.count.to_string()));
    }
    let either = |what: &'static str, v: Fen, all: i128, payments: i128| {
        let v = i128::from(v.get());
        if v == all || v == payments { Ok(()) } else { Err(mismatch(what, yuan(v), yuan(all))) }
    };
    either("应结订单总金额", s.settlement_total, t.settlement, t.settlement_payments)?;
    if let Some(v) = s.order_total {
        either("订单总金额", v, t.order, t.order_payments)?;
    }
    for (what, v, rows) in [
        ("退款总金额", s.refund_total, t.refund),
        ("充值券退款总金额", s.recharge_coupon_refund_total, t.recharge),
        ("申请退款总金额", s.requested_refund_total, t.requested),
    ] {
        if let Some(v) = v {
            either(what, v, rows, rows)?;
        }
    }
    if i128::from(s.fee_total.get()) != t.fee {
        let fee = |v: i128| {
            let sign = if v < 0 { "-" } else { "" };
            format!("{sign}{}.{:05}", v.unsigned_abs() / 100_000, v.unsigned_abs() % 100_000)
        };
        return Err(mismatch("手续费总金额", s.fee_total.to_string(), fee(t.fee)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    const ROW: &str = "`2017-11-25 15:36:17,`wx2421b1c4370ec43b,`10000100,`0,`1000,`4006252001201711254174183744,`2017112510001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`CFT,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`测试商品,有逗号,`a,b,`0.00006,`0.60%,`0.01,`0.00,`";
    const SUM_HEADER: &str =
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

    fn bill(summary: &str) -> String {
        format!("{ALL_HEADER}\r\n{ROW}\r\n{SUM_HEADER}\r\n{summary}\r\n")
    }

    #[test]
    fn reads_one_row_by_header_name() {
        let text = bill("`1,`0.01,`0.00,`0.00,`0.00006,`0.01,`0.00");
        let mut r = BillReader::new(text.as_bytes()).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.line, 2);
        assert_eq!(rec.product_name, "测试商品,有逗号");
        assert_eq!(rec.attach, "a,b");
        assert_eq!(rec.settlement_amount, Fen::new(1));
        assert_eq!(rec.fee, MilliFen::new(6));
        assert_eq!(rec.order_amount, Some(Fen::new(1)));
        assert_eq!(rec.rate_remark, Some(""));
        assert_eq!(rec.refund_apply_time, None);
        assert!(r.next_record().is_none());
        let s = r.finish().unwrap();
        assert_eq!(s.count, 1);
        assert_eq!(s.fee_total, MilliFen::new(6));
    }

    #[test]
    fn summary_disagreement_is_reported_by_next_and_finish() {
        let text = bill("`1,`0.02,`0.00,`0.00,`0.00006,`0.01,`0.00");
        let mut r = BillReader::new(text.as_bytes()).unwrap();
        assert!(r.next_record().unwrap().is_ok());
        let e = r.next_record().unwrap().unwrap_err();
        assert!(matches!(e, BillError::SummaryMismatch { line: 4, what: "应结订单总金额", .. }), "{e}");
        assert!(r.next_record().is_none());
        assert!(matches!(r.finish(), Err(BillError::SummaryMismatch { .. })));
    }

    #[test]
    fn truncated_bill_is_an_error() {
        let text = format!("{ALL_HEADER}\n{ROW}\n");
        let r = BillReader::new(text.as_bytes()).unwrap();
        assert!(matches!(r.finish(), Err(BillError::MissingSummary { line: 2 })));
    }

    #[test]
    fn settlement_total_over_payments_only_is_accepted() {
        // If refund rows repeat the order's amount while the summary sums payments only
        // (our guess covers both readings), the bill still checks; any other total does not.
        let refund = ROW.replace("`SUCCESS,", "`REFUND,").replace("`0.00006,", "`-0.00006,");
        let text = |s: &str| format!("{ALL_HEADER}\n{ROW}\n{refund}\n{SUM_HEADER}\n{s}\n");
        let ok = text("`2,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00");
        assert_eq!(BillReader::new(ok.as_bytes()).unwrap().finish().unwrap().settlement_total, Fen::new(1));
        let all_rows = text("`2,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00");
        assert!(BillReader::new(all_rows.as_bytes()).unwrap().finish().is_ok());
        let wrong = text("`2,`0.03,`0.00,`0.00,`0.00000,`0.02,`0.00");
        assert!(matches!(BillReader::new(wrong.as_bytes()).unwrap().finish(), Err(BillError::SummaryMismatch { .. })));
    }

    #[test]
    fn invalid_utf8_and_bad_times_name_their_line() {
        let mut bytes = format!("{ALL_HEADER}\n").into_bytes();
        bytes.extend_from_slice(b"`2017-11-25 15:36:17,`\xff\xfe\n");
        let err = BillReader::new(&bytes[..]).unwrap().finish().unwrap_err();
        assert!(matches!(err, BillError::NotUtf8 { line: 2 }), "{err}");
        let text = format!("{ALL_HEADER}\n{}\n", ROW.replace("2017-11-25 15:36:17", "2017-11-25 25:00:00"));
        let err = BillReader::new(text.as_bytes()).unwrap().finish().unwrap_err();
        assert!(matches!(err, BillError::Time { line: 2, column: "交易时间", .. }), "{err}");
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let mut bytes = format!("{ALL_HEADER}\n`").into_bytes();
        bytes.resize(bytes.len() + super::super::text::MAX_LINE as usize + 10, b'x');
        let err = BillReader::new(&bytes[..]).unwrap().finish().unwrap_err();
        assert!(matches!(err, BillError::LineTooLong { line: 2 }), "{err}");
    }

    #[test]
    fn missing_required_column_is_named() {
        let text = "交易时间,微信订单号,商户订单号,交易状态,手续费\n";
        assert!(matches!(
            BillReader::new(text.as_bytes()),
            Err(BillError::MissingColumn { line: 1, column: "应结订单金额" })
        ));
        assert!(matches!(BillReader::new(&b""[..]), Err(BillError::Empty)));
    }
}
