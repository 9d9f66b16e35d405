//! `pay/downloadbill` and `pay/downloadfundflow`, built from the sandbox's own records with
//! `wxpay::bill`'s writers (WeChat's exact text format).
//!
//! Rules (guesses where WeChat does not say):
//! - the bill day of a row is the Asia/Shanghai date of its time: payment rows use the payment
//!   time, refund rows the refund request time (also written as their 交易时间);
//! - a day's bill exists from 10:00 of the next day on the sandbox clock (`Bill Creating`
//!   before), and a day with no rows for the bill type is `No Bill Exist`;
//! - refund rows carry 0.00 as 应结订单金额 and 订单金额 and a negative fee (the fee on the
//!   refunded amount goes back to the merchant), so the summary sums every row;
//! - fees are exact in milli-fen per row (see [`crate::config::fee_millifen`]);
//! - payment rows show `0` as 微信退款单号 / 商户退款单号, as WeChat's bills do.

use std::io::Write;

use chrono::{Duration, NaiveDate, NaiveTime};
use wxpay::Fen;
use wxpay::bill::{BillWriter, FlowDirection, FundFlowRow, FundFlowWriter, MilliFen, TradeLayout, TradeRow};
use wxpay::xml::Params;

use crate::clock::{bill_day, from_local, local};
use crate::config::{BillLayout, MerchantConfig, fee_millifen, fee_rate_label};
use crate::state::{State, TradeState};
use crate::wire::{Call, Reply};

/// Bill errors are unsigned XML with WeChat's `error_code`.
fn bill_error(msg: &str, code: &str) -> Reply {
    let mut p = Params::new();
    p.insert("return_code".into(), "FAIL".into());
    p.insert("return_msg".into(), msg.into());
    p.insert("error_code".into(), code.into());
    Reply::Xml(p)
}

/// Why a bill cannot be handed out (v2 and v3 word each differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillProblem {
    /// Older than three months.
    TooOld,
    /// Before 10:00 of the next day.
    Creating,
    /// No rows for the day and type.
    NoBill,
    /// The writer failed.
    System,
}

fn v2_problem(p: BillProblem) -> Reply {
    match p {
        BillProblem::TooOld => bill_error("invalid bill_date", "20001"),
        BillProblem::Creating => bill_error("Bill Creating", "20002"),
        BillProblem::NoBill => bill_error("No Bill Exist", "20002"),
        BillProblem::System => bill_error("SYSTEMERROR", "20007"),
    }
}

/// Whether the day's bill exists yet on the sandbox clock, and is still kept.
pub fn check_ready(st: &State, day: NaiveDate) -> Result<(), BillProblem> {
    let now = st.clock.now();
    let ready_at = day.succ_opt().and_then(|d| from_local(d.and_time(NaiveTime::from_hms_opt(10, 0, 0)?)));
    if ready_at.is_none_or(|t| now < t) {
        return Err(BillProblem::Creating);
    }
    // WeChat keeps bills for three months.
    if bill_day(now) - day > Duration::days(92) {
        return Err(BillProblem::TooOld);
    }
    Ok(())
}

/// Checks bill_date and tar_type, and whether the day's bill exists yet.
fn check_day(st: &State, call: &Call) -> Result<(NaiveDate, bool), Reply> {
    let day = NaiveDate::parse_from_str(call.get("bill_date"), "%Y%m%d")
        .map_err(|_| bill_error("invalid bill_date", "20001"))?;
    let gzip = match call.opt("tar_type") {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(bill_error("invalid tar_type", "20001")),
    };
    check_ready(st, day).map_err(v2_problem)?;
    Ok((day, gzip))
}

/// The file as served: the text, gzipped when asked.
pub fn maybe_gzip(text: Vec<u8>, gzip: bool) -> Result<Vec<u8>, BillProblem> {
    if !gzip {
        return Ok(text);
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&text).and_then(|()| enc.finish()).map_err(|_| BillProblem::System)
}

fn body(text: Vec<u8>, gzip: bool) -> Reply {
    match maybe_gzip(text, gzip) {
        Ok(b) if gzip => Reply::Bytes { body: b, content_type: "application/x-gzip" },
        Ok(b) => Reply::Bytes { body: b, content_type: "text/plain; charset=utf-8" },
        Err(p) => v2_problem(p),
    }
}

pub fn downloadbill(st: &mut State, call: &Call) -> Reply {
    let bill_type = call.get("bill_type");
    if !matches!(bill_type, "ALL" | "SUCCESS" | "REFUND" | "RECHARGE_REFUND") {
        return bill_error("invalid bill_type", "20001");
    }
    let (day, gzip) = match check_day(st, call) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match trade_bill_text(st, &call.mch.cfg, day, bill_type) {
        Ok(text) => body(text, gzip),
        Err(p) => v2_problem(p),
    }
}

/// The trade bill text of one day (`bill_type` ALL, SUCCESS, REFUND or RECHARGE_REFUND),
/// the same for v2 `downloadbill` and the v3 download URL.
pub fn trade_bill_text(
    st: &State,
    mch: &MerchantConfig,
    day: NaiveDate,
    bill_type: &str,
) -> Result<Vec<u8>, BillProblem> {
    let rows = trade_rows(st, &mch.mch_id, day, mch.fee_rate_per_100k, bill_type);
    if rows.is_empty() {
        return Err(BillProblem::NoBill);
    }
    let layout = match (bill_type, mch.bill_layout) {
        ("ALL", BillLayout::Legacy) => TradeLayout::Legacy,
        ("ALL", BillLayout::Current) => TradeLayout::All,
        ("SUCCESS", _) => TradeLayout::Success,
        ("REFUND", _) => TradeLayout::Refund,
        _ => TradeLayout::RechargeRefund,
    };
    let written = BillWriter::new(Vec::new(), layout).and_then(|mut w| {
        for r in &rows {
            w.write_row(r)?;
        }
        w.finish()
    });
    written.map_err(|_| BillProblem::System)
}

/// The day's rows for a bill type, in time order.
fn trade_rows(st: &State, mch_id: &str, day: NaiveDate, rate: i64, bill_type: &str) -> Vec<TradeRow> {
    let label = fee_rate_label(rate);
    let mut rows = Vec::new();
    let payments = matches!(bill_type, "ALL" | "SUCCESS");
    let refunds = matches!(bill_type, "ALL" | "REFUND");
    for o in st.orders.values().filter(|o| o.mch_id == mch_id) {
        let Some(paid) = o.paid_at else { continue };
        if !payments || bill_day(paid) != day || !matches!(o.state, TradeState::Success | TradeState::Refund) {
            continue;
        }
        rows.push(TradeRow {
            trade_time: local(paid),
            appid: o.appid.clone(),
            mch_id: o.mch_id.clone(),
            sub_mch_id: String::new(),
            device_info: String::new(),
            transaction_id: o.transaction_id.clone().unwrap_or_default(),
            out_trade_no: o.out_trade_no.clone(),
            openid: o.openid.clone(),
            trade_type: o.trade_type.clone(),
            trade_state: "SUCCESS".into(),
            bank: o.bank_type.clone(),
            currency: "CNY".into(),
            settlement_amount: o.total_fee,
            coupon_amount: Fen::ZERO,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            refund_amount: Fen::ZERO,
            recharge_coupon_refund: Fen::ZERO,
            refund_type: String::new(),
            refund_status: String::new(),
            product_name: o.body.clone(),
            attach: o.attach.clone(),
            fee: MilliFen::new(fee_millifen(o.total_fee, rate)),
            rate: label.clone(),
            order_amount: Some(o.total_fee),
            requested_refund_amount: Some(Fen::ZERO),
            rate_remark: Some(String::new()),
            refund_apply_time: None,
            refund_success_time: None,
        });
    }
    for r in st.refunds.values().filter(|r| r.mch_id == mch_id) {
        if !refunds || bill_day(r.created_at) != day {
            continue;
        }
        let Some(o) = st.orders.get(&(r.mch_id.clone(), r.out_trade_no.clone())) else { continue };
        rows.push(TradeRow {
            trade_time: local(r.created_at),
            appid: r.appid.clone(),
            mch_id: r.mch_id.clone(),
            sub_mch_id: String::new(),
            device_info: String::new(),
            transaction_id: r.transaction_id.clone(),
            out_trade_no: r.out_trade_no.clone(),
            openid: o.openid.clone(),
            trade_type: o.trade_type.clone(),
            trade_state: "REFUND".into(),
            bank: o.bank_type.clone(),
            currency: "CNY".into(),
            settlement_amount: Fen::ZERO,
            coupon_amount: Fen::ZERO,
            refund_id: r.refund_id.clone(),
            out_refund_no: r.out_refund_no.clone(),
            refund_amount: r.refund_fee,
            recharge_coupon_refund: Fen::ZERO,
            refund_type: "ORIGINAL".into(),
            refund_status: r.status.as_str().into(),
            product_name: o.body.clone(),
            attach: o.attach.clone(),
            fee: MilliFen::new(-fee_millifen(r.refund_fee, rate)),
            rate: label.clone(),
            order_amount: Some(Fen::ZERO),
            requested_refund_amount: Some(r.refund_fee),
            rate_remark: Some(String::new()),
            refund_apply_time: Some(local(r.created_at)),
            refund_success_time: r.success_at.map(local),
        });
    }
    rows.sort_by_key(|r| r.trade_time);
    rows
}

pub fn downloadfundflow(st: &mut State, call: &Call) -> Reply {
    let account = call.get("account_type");
    if !matches!(account, "Basic" | "Operation" | "Fees") {
        return bill_error("invalid account_type", "20001");
    }
    let (day, gzip) = match check_day(st, call) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match fund_flow_text(st, &call.mch.cfg.mch_id, day, account) {
        Ok(text) => body(text, gzip),
        Err(p) => v2_problem(p),
    }
}

/// The fund-flow bill text of one day and account (`Basic`, `Operation`, `Fees`).
pub fn fund_flow_text(st: &State, mch_id: &str, day: NaiveDate, account: &str) -> Result<Vec<u8>, BillProblem> {
    // Everything the sandbox books moves the basic account; the operation and fees accounts
    // stay empty (guess: a merchant without the operation account enabled).
    let entries: Vec<FundFlowRow> = if account == "Basic" {
        st.fund
            .iter()
            .filter(|f| f.mch_id == mch_id && bill_day(f.at) == day)
            .map(|f| FundFlowRow {
                booked_at: local(f.at),
                business_no: f.biz_no.clone(),
                flow_no: f.flow_no.clone(),
                business_name: f.biz_name.clone(),
                business_type: f.biz_type.clone(),
                direction: if f.income { FlowDirection::Income } else { FlowDirection::Expense },
                amount: f.amount,
                balance: f.balance_after,
                applicant: f.applicant.clone(),
                remark: f.remark.clone(),
                voucher_no: f.voucher.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    if entries.is_empty() {
        return Err(BillProblem::NoBill);
    }
    let written = FundFlowWriter::new(Vec::new()).and_then(|mut w| {
        for e in &entries {
            w.write_row(e)?;
        }
        w.finish()
    });
    written.map_err(|_| BillProblem::System)
}
