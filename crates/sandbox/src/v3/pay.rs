//! v3 payments and refunds on the shared order and refund tables: JSAPI prepay, the two
//! queries, close, refund create and query.
//!
//! Guesses (WeChat's v3 error tables give codes, not every condition):
//! - a repeated out_trade_no with the same content gets the same prepay_id (as v2); with
//!   other content 403 `OUT_TRADE_NO_USED`; paid 403 `ORDERPAID`; closed 400 `ORDER_CLOSED`;
//! - closing an already closed order answers 204 again (close is idempotent in v3);
//! - a missing field is 400 `PARAM_ERROR` "缺少参数<field>";
//! - a refund on a missing order is 404 `RESOURCE_NOT_EXISTS`, on an unpaid order or beyond
//!   the refundable amount 400 `INVALID_REQUEST`, a balance short 403 `NOT_ENOUGH`; the same
//!   out_refund_no with the same order and amounts answers the refund as it is now, with
//!   other parameters 400 `INVALID_REQUEST`;
//! - a v3 refund's notification goes to its `notify_url`, else the merchant's configured
//!   refund URL, else nowhere (v3 has no order-level fallback).

use actix_web::http::StatusCode;
use chrono::Duration;
use serde_json::{Value, json};
use wxpay::Fen;
use wxpay::v3::api::format_v3_time;
use wxpay::xml::Params;

use super::{V3Call, V3Reply};
use crate::state::{Key, Order, Refund, RefundStatus, State, TradeState, gen_id};
use crate::{Effects, Shared};

const PREPAY_LIFETIME_HOURS: i64 = 2;

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str().filter(|s| !s.is_empty())
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

fn missing(field: &str) -> V3Reply {
    V3Reply::param_error(&format!("缺少参数{field}"))
}

fn require<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, V3Reply> {
    text(v, path).ok_or_else(|| missing(&path.join(".")))
}

/// The mchid of a body or query must be the caller's (guess: PARAM_ERROR otherwise).
fn same_mchid(call: &V3Call, mchid: Option<&str>) -> Result<(), V3Reply> {
    match mchid {
        None => Err(missing("mchid")),
        Some(m) if m == call.mch_id() => Ok(()),
        Some(_) => Err(V3Reply::param_error("mchid与请求头Authorization中的mchid不一致")),
    }
}

pub fn jsapi(st: &mut State, call: &V3Call) -> V3Reply {
    match jsapi_inner(st, call) {
        Ok(v) | Err(v) => v,
    }
}

fn jsapi_inner(st: &mut State, call: &V3Call) -> Result<V3Reply, V3Reply> {
    let b = &call.body;
    same_mchid(call, text(b, &["mchid"]))?;
    let appid = require(b, &["appid"])?;
    let description = require(b, &["description"])?;
    let out_trade_no = require(b, &["out_trade_no"])?;
    let notify_url = require(b, &["notify_url"])?;
    let openid = require(b, &["payer", "openid"])?;
    let total = int(b, &["amount", "total"]).ok_or_else(|| missing("amount.total"))?;
    if total <= 0 {
        return Err(V3Reply::param_error("amount.total必须大于0"));
    }
    if text(b, &["amount", "currency"]).is_some_and(|c| c != "CNY") {
        return Err(V3Reply::param_error("amount.currency仅支持CNY"));
    }
    for (field, v, max) in
        [("out_trade_no", out_trade_no, 32), ("description", description, 127), ("notify_url", notify_url, 255)]
    {
        if v.len() > max {
            return Err(V3Reply::param_error(&format!("{field}长度超过限制")));
        }
    }
    if !notify_url.starts_with("https://") && !notify_url.starts_with("http://") {
        return Err(V3Reply::param_error("notify_url格式不正确"));
    }
    if !call.mch.cfg.appids.iter().any(|a| a == appid) {
        return Err(V3Reply::error(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"));
    }
    let now = st.clock.now();
    let time_expire = match text(b, &["time_expire"]) {
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) if t.with_timezone(&chrono::Utc) > now => Some(t.with_timezone(&chrono::Utc)),
            Ok(_) => return Err(V3Reply::param_error("time_expire已过期")),
            Err(_) => return Err(V3Reply::param_error("time_expire格式不正确")),
        },
        None => None,
    };
    let attach = text(b, &["attach"]).unwrap_or("");
    let content: Params = [
        ("appid", appid.to_owned()),
        ("description", description.to_owned()),
        ("attach", attach.to_owned()),
        ("total", total.to_string()),
        ("openid", openid.to_owned()),
        ("time_expire", text(b, &["time_expire"]).unwrap_or("").to_owned()),
        ("api", "v3".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let key: Key = (call.mch_id().to_owned(), out_trade_no.to_owned());
    if let Some(o) = st.orders.get(&key) {
        match o.state {
            TradeState::Success | TradeState::Refund => {
                return Err(V3Reply::error(StatusCode::FORBIDDEN, "ORDERPAID", "该订单已支付"));
            }
            TradeState::Closed => return Err(V3Reply::error(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "该订单已关闭")),
            TradeState::Notpay | TradeState::Payerror => {}
        }
        if o.content != content {
            return Err(V3Reply::error(StatusCode::FORBIDDEN, "OUT_TRADE_NO_USED", "商户订单号重复"));
        }
        if o.prepay_expires_at <= now {
            let old = o.prepay_id.clone();
            st.by_prepay.remove(&old);
            let seq = st.next_seq();
            let o = st.orders.get_mut(&key).expect("order exists");
            o.prepay_id = gen_id("wx", now, seq, 36);
            o.prepay_expires_at = now + Duration::hours(PREPAY_LIFETIME_HOURS);
            st.by_prepay.insert(o.prepay_id.clone(), key.clone());
        }
        return Ok(V3Reply::ok(&json!({ "prepay_id": st.orders[&key].prepay_id })));
    }
    let seq = st.next_seq();
    let prepay_id = gen_id("wx", now, seq, 36);
    let order = Order {
        mch_id: key.0.clone(),
        appid: appid.to_owned(),
        out_trade_no: key.1.clone(),
        prepay_id: prepay_id.clone(),
        prepay_expires_at: now + Duration::hours(PREPAY_LIFETIME_HOURS),
        transaction_id: None,
        body: description.to_owned(),
        attach: attach.to_owned(),
        total_fee: Fen::new(total),
        openid: openid.to_owned(),
        notify_url: notify_url.to_owned(),
        trade_type: "JSAPI".into(),
        // v3 has no sign type; the field only matters for v2 notifications.
        sign_type: wxpay::SignType::Md5,
        state: TradeState::Notpay,
        created_at: now,
        paid_at: None,
        closed_at: None,
        time_expire,
        bank_type: String::new(),
        refunded: Fen::ZERO,
        v3: true,
        content,
    };
    st.insert_order(key, order);
    Ok(V3Reply::ok(&json!({ "prepay_id": prepay_id })))
}

/// How a query names its order.
pub enum OrderRef<'a> {
    OutTradeNo(&'a str),
    TransactionId(&'a str),
}

/// A v3 transaction as WeChat describes it (the query answer and the notification payload).
pub fn transaction_json(o: &Order) -> Value {
    let mut v = json!({
        "appid": o.appid,
        "mchid": o.mch_id,
        "out_trade_no": o.out_trade_no,
        "trade_type": o.trade_type,
        "trade_state": o.state.as_str(),
        "trade_state_desc": o.state.desc(),
        "attach": o.attach,
        "payer": { "openid": o.openid },
        "amount": { "total": o.total_fee.get(), "currency": "CNY" },
    });
    if let (Some(tx), Some(paid)) = (&o.transaction_id, o.paid_at) {
        v["transaction_id"] = json!(tx);
        v["bank_type"] = json!(o.bank_type);
        v["success_time"] = json!(format_v3_time(paid));
        v["amount"] = json!({ "total": o.total_fee.get(), "payer_total": o.total_fee.get(), "currency": "CNY", "payer_currency": "CNY" });
    }
    v
}

pub fn query(st: &mut State, call: &V3Call, by: OrderRef) -> V3Reply {
    if let Err(r) = same_mchid(call, call.query_param("mchid")) {
        return r;
    }
    let mch = call.mch_id().to_owned();
    let key = match by {
        OrderRef::OutTradeNo(no) => Some((mch, no.to_owned())).filter(|k| st.orders.contains_key(k)),
        OrderRef::TransactionId(tx) => st.by_transaction.get(tx).filter(|k| k.0 == mch).cloned(),
    };
    match key.and_then(|k| st.orders.get(&k)) {
        Some(o) => V3Reply::ok(&transaction_json(o)),
        None => V3Reply::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

pub fn close(st: &mut State, call: &V3Call, no: &str) -> V3Reply {
    if let Err(r) = same_mchid(call, text(&call.body, &["mchid"])) {
        return r;
    }
    let now = st.clock.now();
    let Some(o) = st.orders.get_mut(&(call.mch_id().to_owned(), no.to_owned())) else {
        return V3Reply::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在");
    };
    match o.state {
        TradeState::Success | TradeState::Refund => {
            V3Reply::error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付，不能发起关单")
        }
        TradeState::Closed => V3Reply::no_content(),
        TradeState::Notpay | TradeState::Payerror => {
            o.state = TradeState::Closed;
            o.closed_at = Some(now);
            V3Reply::no_content()
        }
    }
}

fn v3_refund_status(s: RefundStatus) -> &'static str {
    match s {
        RefundStatus::Processing => "PROCESSING",
        RefundStatus::Success => "SUCCESS",
        RefundStatus::Change => "ABNORMAL",
        RefundStatus::Refundclose => "CLOSED",
    }
}

/// A refund as WeChat's v3 answers describe it.
pub fn refund_json(r: &Refund) -> Value {
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": format_v3_time(r.created_at),
        "status": v3_refund_status(r.status),
        "funds_account": "AVAILABLE",
        "amount": {
            "total": r.total_fee.get(), "refund": r.refund_fee.get(),
            "payer_total": r.total_fee.get(), "payer_refund": r.refund_fee.get(),
            "settlement_total": r.total_fee.get(), "settlement_refund": r.refund_fee.get(),
            "discount_refund": 0, "refund_fee": 0, "currency": "CNY",
        },
    });
    if let Some(t) = r.success_at {
        v["success_time"] = json!(format_v3_time(t));
    }
    v
}

pub fn refund(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call) -> V3Reply {
    match refund_inner(shared, st, fx, call) {
        Ok(v) | Err(v) => v,
    }
}

fn refund_inner(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call) -> Result<V3Reply, V3Reply> {
    let b = &call.body;
    let mch = call.mch_id().to_owned();
    let out_refund_no = require(b, &["out_refund_no"])?;
    let refund = int(b, &["amount", "refund"]).ok_or_else(|| missing("amount.refund"))?;
    let total = int(b, &["amount", "total"]).ok_or_else(|| missing("amount.total"))?;
    if refund <= 0 || total <= 0 {
        return Err(V3Reply::param_error("amount.refund和amount.total必须大于0"));
    }
    if text(b, &["amount", "currency"]).is_none() {
        return Err(missing("amount.currency"));
    }
    let okey = match (text(b, &["transaction_id"]), text(b, &["out_trade_no"])) {
        (Some(tx), _) => st.by_transaction.get(tx).filter(|k| k.0 == mch).cloned(),
        (None, Some(no)) => Some((mch.clone(), no.to_owned())).filter(|k| st.orders.contains_key(k)),
        (None, None) => return Err(missing("transaction_id或out_trade_no")),
    };
    let not_found = || V3Reply::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    let okey = okey.ok_or_else(not_found)?;
    let invalid = |m: &str| V3Reply::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let rkey = (mch.clone(), out_refund_no.to_owned());
    if let Some(r) = st.refunds.get(&rkey) {
        if r.out_trade_no != okey.1 || r.refund_fee.get() != refund || r.total_fee.get() != total {
            return Err(invalid("退款单号已存在，且与本次请求的订单或金额不一致"));
        }
        return Ok(V3Reply::ok(&refund_json(r)));
    }
    let o = &st.orders[&okey];
    if !matches!(o.state, TradeState::Success | TradeState::Refund) {
        return Err(invalid("订单状态错误，未支付的订单不能退款"));
    }
    if total != o.total_fee.get() {
        return Err(V3Reply::param_error("amount.total与订单金额不一致"));
    }
    if refund > o.total_fee.get() - o.refunded.get() {
        return Err(invalid("申请退款金额超过订单可退金额"));
    }
    if st.balance(&okey.0).get() < refund {
        return Err(V3Reply::error(StatusCode::FORBIDDEN, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起"));
    }
    let now = st.clock.now();
    let seq = st.next_seq();
    let refund_id = gen_id("50300", now, seq, 29);
    let refund_fee = Fen::new(refund);
    let o = st.orders.get_mut(&okey).expect("order exists");
    o.refunded = Fen::new(o.refunded.get() + refund);
    o.state = TradeState::Refund;
    let delay = Duration::seconds(i64::try_from(shared.cfg.refund_delay_secs).unwrap_or(i64::MAX / 2));
    let r = Refund {
        mch_id: okey.0.clone(),
        appid: o.appid.clone(),
        out_trade_no: o.out_trade_no.clone(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        out_refund_no: rkey.1.clone(),
        refund_id: refund_id.clone(),
        total_fee: Fen::new(total),
        refund_fee,
        refund_desc: text(b, &["reason"]).unwrap_or("").to_owned(),
        notify_url: text(b, &["notify_url"]).map(str::to_owned).or_else(|| call.mch.cfg.refund_notify_url.clone()),
        status: RefundStatus::Processing,
        created_at: now,
        settle_due: now + delay,
        success_at: None,
        v3: true,
    };
    st.book(&okey.0, false, refund_fee, &refund_id, "退款", "退款", &r.out_refund_no, now);
    st.by_refund_id.insert(refund_id, rkey.clone());
    let answer = refund_json(&r);
    st.refunds.insert(rkey.clone(), r);
    fx.refund_timers.push((rkey, shared.cfg.scaled(delay.to_std().unwrap_or_default())));
    Ok(V3Reply::ok(&answer))
}

pub fn refund_query(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call, no: &str) -> V3Reply {
    crate::pay::settle_refunds(shared, st, fx);
    match st.refunds.get(&(call.mch_id().to_owned(), no.to_owned())) {
        Some(r) => V3Reply::ok(&refund_json(r)),
        None => V3Reply::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    }
}
