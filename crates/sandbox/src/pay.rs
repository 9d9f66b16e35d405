//! Orders and refunds: `pay/unifiedorder`, `pay/orderquery`, `pay/closeorder`,
//! `secapi/pay/refund`, `pay/refundquery`, and the payer (what `wx.requestPayment` does).

use chrono::{DateTime, Duration, Utc};
use wxpay::Fen;
use wxpay::xml::Params;

use crate::clock::{compact, dashed, parse_compact};
use crate::state::{Key, Order, Refund, RefundStatus, State, TradeState, gen_id};
use crate::wire::{Call, Reply, fields, positive_fen};
use crate::{Effects, Shared};

/// A prepay_id is valid for two hours (WeChat's documented lifetime).
const PREPAY_LIFETIME_HOURS: i64 = 2;

/// Fields whose change turns a repeated out_trade_no into OUT_TRADE_NO_USED (guess: the
/// order's content; the nonce, IP, notify_url and time_start may differ between retries).
const CONTENT_FIELDS: [&str; 12] = [
    "appid",
    "body",
    "detail",
    "attach",
    "total_fee",
    "fee_type",
    "trade_type",
    "openid",
    "goods_tag",
    "limit_pay",
    "product_id",
    "time_expire",
];

pub fn unifiedorder(st: &mut State, call: &Call) -> Reply {
    let total_fee = match positive_fen(call, "total_fee") {
        Ok(f) => f,
        Err(r) => return r,
    };
    let trade_type = call.get("trade_type");
    if !matches!(trade_type, "JSAPI" | "NATIVE" | "APP" | "MWEB") {
        return call.err("PARAM_ERROR", "trade_type参数错误");
    }
    if trade_type == "JSAPI" && call.opt("openid").is_none() {
        return call.err("PARAM_ERROR", "JSAPI支付必须传openid");
    }
    let out_trade_no = call.get("out_trade_no");
    // Field lengths from WeChat's table (String(32), String(128), String(127), String(256)),
    // counted in UTF-8 bytes (guess, matching the 参数长度有误 reports for Chinese bodies).
    for (field, max) in [("out_trade_no", 32), ("body", 128), ("attach", 127), ("notify_url", 256)] {
        if call.get(field).len() > max {
            return call.err("PARAM_ERROR", &format!("{field}参数长度有误"));
        }
    }
    let notify_url = call.get("notify_url");
    if !(notify_url.starts_with("http://") || notify_url.starts_with("https://")) {
        return call.err("PARAM_ERROR", "notify_url参数格式错误");
    }
    if call.opt("fee_type").is_some_and(|f| f != "CNY") {
        return call.err("PARAM_ERROR", "fee_type参数错误");
    }
    let time_expire = match call.opt("time_expire") {
        Some(t) => match parse_compact(t) {
            Some(t) => Some(t),
            None => return call.err("PARAM_ERROR", "time_expire参数格式错误"),
        },
        None => None,
    };
    let now = st.clock.now();
    if time_expire.is_some_and(|t| t <= now) {
        return call.err("PARAM_ERROR", "time_expire时间过短，刷卡至少1分钟，其他5分钟");
    }
    let content: Params =
        CONTENT_FIELDS.iter().filter_map(|f| call.opt(f).map(|v| ((*f).to_owned(), v.to_owned()))).collect();
    let key: Key = (call.mch.cfg.mch_id.clone(), out_trade_no.to_owned());
    if let Some(o) = st.orders.get_mut(&key) {
        match o.state {
            TradeState::Success | TradeState::Refund => return call.err("ORDERPAID", "该订单已支付"),
            TradeState::Closed => return call.err("ORDERCLOSED", "该订单已关闭"),
            TradeState::Notpay | TradeState::Payerror => {}
        }
        if o.content != content {
            return call.err("OUT_TRADE_NO_USED", "商户订单号重复");
        }
        // Same number, same content: WeChat hands back the same prepay_id while it is valid.
        if o.prepay_expires_at <= now {
            let old = std::mem::take(&mut o.prepay_id);
            st.by_prepay.remove(&old);
            let seq = st.next_seq();
            let o = st.orders.get_mut(&key).expect("order exists");
            o.prepay_id = gen_id("wx", now, seq, 36);
            o.prepay_expires_at = now + Duration::hours(PREPAY_LIFETIME_HOURS);
            st.by_prepay.insert(o.prepay_id.clone(), key.clone());
        }
        let prepay_id = st.orders[&key].prepay_id.clone();
        return call.ok(fields([("trade_type", trade_type.to_owned()), ("prepay_id", prepay_id)]));
    }
    let seq = st.next_seq();
    let prepay_id = gen_id("wx", now, seq, 36);
    let order = Order {
        mch_id: key.0.clone(),
        appid: call.appid.clone(),
        out_trade_no: key.1.clone(),
        prepay_id: prepay_id.clone(),
        prepay_expires_at: now + Duration::hours(PREPAY_LIFETIME_HOURS),
        transaction_id: None,
        body: call.get("body").to_owned(),
        attach: call.get("attach").to_owned(),
        total_fee,
        openid: call.get("openid").to_owned(),
        notify_url: call.get("notify_url").to_owned(),
        trade_type: trade_type.to_owned(),
        sign_type: call.sign_type,
        state: TradeState::Notpay,
        created_at: now,
        paid_at: None,
        closed_at: None,
        time_expire,
        bank_type: String::new(),
        refunded: Fen::ZERO,
        v3: false,
        content,
    };
    st.insert_order(key, order);
    call.ok(fields([("trade_type", trade_type.to_owned()), ("prepay_id", prepay_id)]))
}

/// Finds an order by transaction_id (preferred, as WeChat does) or out_trade_no.
fn find_order(st: &State, call: &Call) -> Option<Key> {
    if let Some(tx) = call.opt("transaction_id") {
        return st.by_transaction.get(tx).filter(|k| k.0 == call.mch.cfg.mch_id).cloned();
    }
    let key = (call.mch.cfg.mch_id.clone(), call.opt("out_trade_no")?.to_owned());
    st.orders.contains_key(&key).then_some(key)
}

pub fn orderquery(st: &mut State, call: &Call) -> Reply {
    if call.opt("transaction_id").is_none() && call.opt("out_trade_no").is_none() {
        return call.err("LACK_PARAMS", "缺少参数out_trade_no或transaction_id");
    }
    let Some(key) = find_order(st, call) else {
        return call.err("ORDERNOTEXIST", "订单不存在");
    };
    let o = &st.orders[&key];
    let mut f = fields([
        ("out_trade_no", o.out_trade_no.clone()),
        ("trade_state", o.state.as_str().to_owned()),
        ("trade_state_desc", o.state.desc().to_owned()),
        ("attach", o.attach.clone()),
        ("total_fee", o.total_fee.get().to_string()),
        ("fee_type", "CNY".to_owned()),
        ("trade_type", o.trade_type.clone()),
    ]);
    if let (Some(tx), Some(paid)) = (&o.transaction_id, o.paid_at) {
        f.extend(fields([
            ("transaction_id", tx.clone()),
            ("openid", o.openid.clone()),
            ("is_subscribe", "N".to_owned()),
            ("bank_type", o.bank_type.clone()),
            ("cash_fee", o.total_fee.get().to_string()),
            ("cash_fee_type", "CNY".to_owned()),
            ("time_end", compact(paid)),
        ]));
    }
    call.ok(f)
}

pub fn closeorder(st: &mut State, call: &Call) -> Reply {
    let key = (call.mch.cfg.mch_id.clone(), call.get("out_trade_no").to_owned());
    let now = st.clock.now();
    let Some(o) = st.orders.get_mut(&key) else {
        return call.err("ORDERNOTEXIST", "订单不存在");
    };
    match o.state {
        TradeState::Success | TradeState::Refund => call.err("ORDERPAID", "订单已支付，不能发起关单"),
        TradeState::Closed => call.err("ORDERCLOSED", "订单已关闭，无法重复关闭"),
        // Guess: WeChat's "wait 5 minutes before closing" advice is not enforced.
        TradeState::Notpay | TradeState::Payerror => {
            o.state = TradeState::Closed;
            o.closed_at = Some(now);
            call.ok(Params::new())
        }
    }
}

/// What the payer was asked to do.
#[derive(Debug, Clone, serde::Deserialize, Default)]
pub struct PayOrder {
    pub prepay_id: Option<String>,
    pub out_trade_no: Option<String>,
    /// Which merchant `out_trade_no` belongs to (default: the first merchant).
    pub mch_id: Option<String>,
    /// Payment time (RFC 3339 or Beijing `yyyy-MM-dd HH:mm:ss`); default: the sandbox clock.
    pub time: Option<String>,
    /// Whether to send the payment notification (default true).
    pub notify: Option<bool>,
    /// bank_type to report (default `OTHERS`, WeChat's value for balance payments).
    pub bank_type: Option<String>,
}

/// Why the payer refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    #[error("no such order")]
    NotFound,
    #[error("give prepay_id or out_trade_no")]
    NoReference,
    #[error("order is {0} and cannot be paid")]
    WrongState(&'static str),
    #[error("prepay_id expired")]
    PrepayExpired,
    #[error("order expired (time_expire)")]
    OrderExpired,
    #[error("unreadable time {0:?}")]
    BadTime(String),
}

fn payer_key(shared: &Shared, st: &State, req: &PayOrder) -> Result<Key, PayError> {
    if let Some(p) = &req.prepay_id {
        return st.by_prepay.get(p).cloned().ok_or(PayError::NotFound);
    }
    let no = req.out_trade_no.as_ref().ok_or(PayError::NoReference)?;
    let mch = req.mch_id.clone().unwrap_or_else(|| shared.cfg.merchants[0].mch_id.clone());
    let key = (mch, no.clone());
    st.orders.contains_key(&key).then_some(key).ok_or(PayError::NotFound)
}

/// Pays an order as the user would: SUCCESS, a transaction_id, the money on the merchant's
/// account (minus the fee), and a notification unless `notify` is false.
pub fn pay(shared: &Shared, st: &mut State, fx: &mut Effects, req: &PayOrder) -> Result<Order, PayError> {
    let key = payer_key(shared, st, req)?;
    let now = st.clock.now();
    let at = match &req.time {
        Some(t) => crate::clock::parse_any(t).ok_or_else(|| PayError::BadTime(t.clone()))?,
        None => now,
    };
    let o = &st.orders[&key];
    match o.state {
        TradeState::Notpay | TradeState::Payerror => {}
        s => return Err(PayError::WrongState(s.as_str())),
    }
    if req.prepay_id.is_some() && o.prepay_expires_at <= now {
        return Err(PayError::PrepayExpired);
    }
    if o.time_expire.is_some_and(|t| t <= now) {
        return Err(PayError::OrderExpired);
    }
    let seq = st.next_seq();
    let tx = gen_id("4200001", at, seq, 28);
    let mch = shared.merchants[&key.0].clone();
    let o = st.orders.get_mut(&key).expect("order exists");
    o.state = TradeState::Success;
    o.paid_at = Some(at);
    o.transaction_id = Some(tx.clone());
    o.bank_type = req.bank_type.clone().unwrap_or_else(|| "OTHERS".into());
    let order = o.clone();
    st.by_transaction.insert(tx.clone(), key.clone());
    let fee = Fen::new(wxpay_fee_fen(order.total_fee, mch.cfg.fee_rate_per_100k));
    st.book(&key.0, true, order.total_fee, &tx, "交易", "交易", "", at);
    if fee.is_positive() {
        st.book(&key.0, false, fee, &tx, "扣除交易手续费", "扣除交易手续费", "", at);
    }
    if req.notify.unwrap_or(true) {
        let id = crate::notify::queue_pay(shared, st, &order);
        fx.notifications.push(id);
    }
    Ok(order)
}

/// The fee posted to the fund flow in whole fen (the bill keeps five decimals).
fn wxpay_fee_fen(amount: Fen, per_100k: i64) -> i64 {
    let milli = crate::config::fee_millifen(amount, per_100k);
    let q = milli / 1000;
    if milli % 1000 >= 500 { q + 1 } else { q }
}

/// Marks an order PAYERROR (the user's payment failed); guess: WeChat sends no notification
/// for it, so none is sent.
pub fn fail(shared: &Shared, st: &mut State, req: &PayOrder) -> Result<Order, PayError> {
    let key = payer_key(shared, st, req)?;
    let o = st.orders.get_mut(&key).expect("order exists");
    match o.state {
        TradeState::Notpay | TradeState::Payerror => {}
        s => return Err(PayError::WrongState(s.as_str())),
    }
    o.state = TradeState::Payerror;
    Ok(o.clone())
}

pub fn refund(shared: &Shared, st: &mut State, fx: &mut Effects, call: &Call) -> Reply {
    if call.opt("transaction_id").is_none() && call.opt("out_trade_no").is_none() {
        return call.err("LACK_PARAMS", "缺少参数out_trade_no或transaction_id");
    }
    let (total_fee, refund_fee) = match (positive_fen(call, "total_fee"), positive_fen(call, "refund_fee")) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let Some(okey) = find_order(st, call) else {
        return call.err("ORDERNOTEXIST", "订单不存在");
    };
    let rkey = (call.mch.cfg.mch_id.clone(), call.get("out_refund_no").to_owned());
    if let Some(r) = st.refunds.get(&rkey) {
        // A retry of the same refund answers as the first time did; a different amount under
        // the same out_refund_no is refused (WeChat's REFUND_FEE_MISMATCH).
        if r.out_trade_no != okey.1 || r.refund_fee != refund_fee || r.total_fee != total_fee {
            return call.err("REFUND_FEE_MISMATCH", "订单金额或退款金额与之前请求不一致，请核实后再试");
        }
        let r = r.clone();
        return call.ok(refund_fields(&r));
    }
    let o = &st.orders[&okey];
    if !matches!(o.state, TradeState::Success | TradeState::Refund) {
        return call.err("TRADE_STATE_ERROR", "订单状态错误");
    }
    if total_fee != o.total_fee {
        return call.err("PARAM_ERROR", "订单金额或退款金额与之前请求不一致，请核实后再试");
    }
    if refund_fee > o.total_fee {
        return call.err("PARAM_ERROR", "退款金额大于支付金额");
    }
    let left = o.total_fee.get() - o.refunded.get();
    if left == 0 {
        return call.err("ERROR", "订单已全额退款");
    }
    if refund_fee.get() > left {
        return call.err("ERROR", "累计退款金额大于支付金额");
    }
    if st.balance(&okey.0).get() < refund_fee.get() {
        return call.err("NOTENOUGH", "基本账户余额不足，请充值后重新发起");
    }
    let now = st.clock.now();
    let seq = st.next_seq();
    let refund_id = gen_id("50300", now, seq, 29);
    let o = st.orders.get_mut(&okey).expect("order exists");
    o.refunded = Fen::new(o.refunded.get() + refund_fee.get());
    o.state = TradeState::Refund;
    let delay = Duration::seconds(i64::try_from(shared.cfg.refund_delay_secs).unwrap_or(i64::MAX / 2));
    let r = Refund {
        mch_id: okey.0.clone(),
        appid: o.appid.clone(),
        out_trade_no: o.out_trade_no.clone(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        out_refund_no: rkey.1.clone(),
        refund_id: refund_id.clone(),
        total_fee,
        refund_fee,
        refund_desc: call.get("refund_desc").to_owned(),
        notify_url: call
            .opt("notify_url")
            .map(str::to_owned)
            .or_else(|| call.mch.cfg.refund_notify_url.clone())
            .or_else(|| Some(o.notify_url.clone()).filter(|u| !u.is_empty())),
        status: RefundStatus::Processing,
        created_at: now,
        settle_due: now + delay,
        success_at: None,
        v3: false,
    };
    st.book(&okey.0, false, refund_fee, &refund_id, "退款", "退款", &r.out_refund_no, now);
    st.by_refund_id.insert(refund_id, rkey.clone());
    let answer = refund_fields(&r);
    st.refunds.insert(rkey.clone(), r);
    fx.refund_timers.push((rkey, shared.cfg.scaled(delay.to_std().unwrap_or_default())));
    call.ok(answer)
}

fn refund_fields(r: &Refund) -> Params {
    fields([
        ("transaction_id", r.transaction_id.clone()),
        ("out_trade_no", r.out_trade_no.clone()),
        ("out_refund_no", r.out_refund_no.clone()),
        ("refund_id", r.refund_id.clone()),
        ("refund_fee", r.refund_fee.get().to_string()),
        ("total_fee", r.total_fee.get().to_string()),
        ("cash_fee", r.total_fee.get().to_string()),
        ("cash_refund_fee", r.refund_fee.get().to_string()),
        ("refund_channel", String::new()),
        ("coupon_refund_fee", "0".to_owned()),
    ])
}

pub fn refundquery(shared: &Shared, st: &mut State, fx: &mut Effects, call: &Call) -> Reply {
    settle_refunds(shared, st, fx);
    let mch = call.mch.cfg.mch_id.clone();
    let mut list: Vec<&Refund> = if let Some(id) = call.opt("refund_id") {
        st.by_refund_id.get(id).and_then(|k| st.refunds.get(k)).filter(|r| r.mch_id == mch).into_iter().collect()
    } else if let Some(no) = call.opt("out_refund_no") {
        st.refunds.get(&(mch.clone(), no.to_owned())).into_iter().collect()
    } else if let Some(tx) = call.opt("transaction_id") {
        st.refunds.values().filter(|r| r.mch_id == mch && r.transaction_id == tx).collect()
    } else if let Some(no) = call.opt("out_trade_no") {
        st.refunds.values().filter(|r| r.mch_id == mch && r.out_trade_no == no).collect()
    } else {
        return call.err("LACK_PARAMS", "缺少参数refund_id、out_refund_no、transaction_id或out_trade_no");
    };
    if list.is_empty() {
        return call.err("REFUNDNOTEXIST", "退款订单查询失败");
    }
    list.sort_by_key(|r| r.created_at);
    let first = list[0];
    let total_refund: i64 = list.iter().map(|r| r.refund_fee.get()).sum();
    let mut f = fields([
        ("transaction_id", first.transaction_id.clone()),
        ("out_trade_no", first.out_trade_no.clone()),
        ("total_fee", first.total_fee.get().to_string()),
        ("cash_fee", first.total_fee.get().to_string()),
        ("refund_fee", total_refund.to_string()),
        ("refund_count", list.len().to_string()),
    ]);
    for (n, r) in list.iter().enumerate() {
        let mut put = |k: &str, v: String| {
            f.insert(format!("{k}_{n}"), v);
        };
        put("out_refund_no", r.out_refund_no.clone());
        put("refund_id", r.refund_id.clone());
        put("refund_channel", "ORIGINAL".into());
        put("refund_fee", r.refund_fee.get().to_string());
        put("settlement_refund_fee", r.refund_fee.get().to_string());
        put("refund_status", r.status.as_str().into());
        put("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".into());
        put("refund_recv_accout", "支付用户的零钱".into());
        if let Some(t) = r.success_at {
            put("refund_success_time", dashed(t));
        }
    }
    call.ok(f)
}

/// Settles refunds due on the sandbox clock and queues their notifications.
pub fn settle_refunds(shared: &Shared, st: &mut State, fx: &mut Effects) {
    for key in st.settle_due_refunds() {
        if let Some(id) = crate::notify::queue_refund(shared, st, &key) {
            fx.notifications.push(id);
        }
    }
}

/// Forces a refund into a final state (control API): SUCCESS, CHANGE or REFUNDCLOSE.
pub fn force_refund(
    shared: &Shared,
    st: &mut State,
    fx: &mut Effects,
    key: &Key,
    status: RefundStatus,
) -> Result<Refund, &'static str> {
    let now: DateTime<Utc> = st.clock.now();
    let r = st.refunds.get_mut(key).ok_or("no such refund")?;
    if r.status != RefundStatus::Processing {
        return Err("refund is already final");
    }
    r.status = status;
    if status == RefundStatus::Success {
        r.success_at = Some(now);
    }
    let r = r.clone();
    if status == RefundStatus::Refundclose || status == RefundStatus::Change {
        // The money did not reach the user: it goes back to the merchant (guess for CHANGE,
        // where WeChat asks the merchant to handle the refund offline).
        st.book(&key.0, true, r.refund_fee, &r.refund_id, "退款", "退款撤销", &r.out_refund_no, now);
        if let Some(o) = st.orders.get_mut(&(key.0.clone(), r.out_trade_no.clone())) {
            o.refunded = Fen::new(o.refunded.get() - r.refund_fee.get());
        }
    }
    if let Some(id) = crate::notify::queue_refund(shared, st, key) {
        fx.notifications.push(id);
    }
    Ok(r)
}
