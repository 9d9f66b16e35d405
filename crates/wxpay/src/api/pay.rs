//! Mini-program payment: `pay/unifiedorder` (JSAPI only), `pay/orderquery`, `pay/closeorder`.
//!
//! Outcome rules (the codes live in [`crate::outcome::final_codes`]):
//! - unifiedorder: ORDERPAID, ORDERCLOSED, OUT_TRADE_NO_USED, NOTENOUGH and the request
//!   validation codes are Failed (the caller maps ORDERPAID to "paid", ORDERCLOSED to "new
//!   order needed"); SYSTEMERROR / BIZERR_NEED_RETRY are Unknown (retry the same
//!   out_trade_no with the same parameters).
//! - orderquery: ORDERNOTEXIST is Failed (WeChat has no such order); SYSTEMERROR Unknown.
//!   A `trade_state` we do not know is Unknown (never guessed).
//! - closeorder: ORDERPAID (too late, it is paid), ORDERCLOSED (already closed),
//!   ORDERNOTEXIST are Failed; SYSTEMERROR Unknown.

use chrono::{DateTime, Utc};

use super::{Encode, Fields, FromResponse, ParseError, Request, format_wechat_time, put, put_opt};
use crate::Fen;
use crate::outcome::Endpoint;
use crate::xml::{Document, Params};

/// `pay/unifiedorder` for a mini-program (trade_type JSAPI, openid required).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnifiedOrderRequest {
    pub body: String,
    pub out_trade_no: String,
    pub total_fee: Fen,
    pub spbill_create_ip: String,
    pub notify_url: String,
    pub openid: String,
    pub attach: Option<String>,
    /// Sent as `yyyyMMddHHmmss` in Asia/Shanghai.
    pub time_start: Option<DateTime<Utc>>,
    pub time_expire: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    pub goods_tag: Option<String>,
    /// `no_credit` forbids credit cards.
    pub limit_pay: Option<String>,
    /// `Some(true)` sends `profit_sharing=Y`.
    pub profit_sharing: Option<bool>,
}

impl Encode for UnifiedOrderRequest {
    const ENDPOINT: Endpoint = Endpoint::UnifiedOrder;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "body", &*self.body);
        put(&mut p, "out_trade_no", &*self.out_trade_no);
        put(&mut p, "total_fee", self.total_fee.get().to_string());
        put(&mut p, "spbill_create_ip", &*self.spbill_create_ip);
        put(&mut p, "notify_url", &*self.notify_url);
        put(&mut p, "trade_type", "JSAPI");
        put(&mut p, "openid", &*self.openid);
        put_opt(&mut p, "attach", &self.attach);
        put_opt(&mut p, "time_start", &self.time_start.map(format_wechat_time));
        put_opt(&mut p, "time_expire", &self.time_expire.map(format_wechat_time));
        put_opt(&mut p, "detail", &self.detail);
        put_opt(&mut p, "goods_tag", &self.goods_tag);
        put_opt(&mut p, "limit_pay", &self.limit_pay);
        if let Some(ps) = self.profit_sharing {
            put(&mut p, "profit_sharing", if ps { "Y" } else { "N" });
        }
        p
    }

    fn validate(&self) -> Result<(), String> {
        if !self.total_fee.is_positive() {
            return Err("total_fee must be positive".into());
        }
        if self.openid.is_empty() {
            return Err("openid is required for JSAPI".into());
        }
        Ok(())
    }
}

impl Request for UnifiedOrderRequest {
    type Response = UnifiedOrderResponse;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiedOrderResponse {
    pub trade_type: String,
    /// Valid for 2 hours; goes into `wx.requestPayment` as `package=prepay_id=…`.
    pub prepay_id: String,
}

impl FromResponse for UnifiedOrderResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        Ok(UnifiedOrderResponse { trade_type: f.req("trade_type")?, prepay_id: f.req("prepay_id")? })
    }
}

/// Which number identifies an order in queries and refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    TransactionId(String),
    OutTradeNo(String),
}

impl OrderRef {
    pub(crate) fn put(&self, p: &mut Params) {
        match self {
            OrderRef::TransactionId(id) => put(p, "transaction_id", &**id),
            OrderRef::OutTradeNo(no) => put(p, "out_trade_no", &**no),
        }
    }
}

/// `pay/orderquery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQueryRequest {
    pub order: OrderRef,
}

impl Encode for OrderQueryRequest {
    const ENDPOINT: Endpoint = Endpoint::OrderQuery;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        self.order.put(&mut p);
        p
    }
}

impl Request for OrderQueryRequest {
    type Response = OrderQueryResponse;
}

/// `trade_state`: every value WeChat documents for orderquery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradeState {
    Success,
    /// Paid, then (partly) refunded.
    Refund,
    NotPay,
    Closed,
    /// Micropay only; listed because WeChat documents it for orderquery.
    Revoked,
    UserPaying,
    PayError,
    /// "已接收，等待扣款" (withholding contracts); listed in newer copies of the docs.
    Accept,
}

impl TradeState {
    pub fn parse(s: &str) -> Option<TradeState> {
        Some(match s {
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "NOTPAY" => TradeState::NotPay,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "USERPAYING" => TradeState::UserPaying,
            "PAYERROR" => TradeState::PayError,
            "ACCEPT" => TradeState::Accept,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::NotPay => "NOTPAY",
            TradeState::Closed => "CLOSED",
            TradeState::Revoked => "REVOKED",
            TradeState::UserPaying => "USERPAYING",
            TradeState::PayError => "PAYERROR",
            TradeState::Accept => "ACCEPT",
        }
    }

    /// Whether the money reached the merchant (REFUND implies it was paid first).
    pub fn is_paid(self) -> bool {
        match self {
            TradeState::Success | TradeState::Refund => true,
            TradeState::NotPay
            | TradeState::Closed
            | TradeState::Revoked
            | TradeState::UserPaying
            | TradeState::PayError
            | TradeState::Accept => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQueryResponse {
    pub trade_state: TradeState,
    pub trade_state_desc: Option<String>,
    pub out_trade_no: Option<String>,
    /// Present once paid.
    pub transaction_id: Option<String>,
    pub total_fee: Option<Fen>,
    pub cash_fee: Option<Fen>,
    pub time_end: Option<DateTime<Utc>>,
    pub openid: Option<String>,
    pub attach: Option<String>,
    pub bank_type: Option<String>,
    pub trade_type: Option<String>,
}

impl FromResponse for OrderQueryResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        let state = f.req("trade_state")?;
        let trade_state =
            TradeState::parse(&state).ok_or(ParseError::UnknownState { field: "trade_state", value: state })?;
        let r = OrderQueryResponse {
            trade_state,
            trade_state_desc: f.opt("trade_state_desc"),
            out_trade_no: f.opt("out_trade_no"),
            transaction_id: f.opt("transaction_id"),
            total_fee: f.opt_fen("total_fee")?,
            cash_fee: f.opt_fen("cash_fee")?,
            time_end: f.opt_time("time_end")?,
            openid: f.opt("openid"),
            attach: f.opt("attach"),
            bank_type: f.opt("bank_type"),
            trade_type: f.opt("trade_type"),
        };
        // A paid order without its amount and WeChat number cannot be acted on safely.
        if trade_state.is_paid() {
            if r.total_fee.is_none() {
                return Err(ParseError::Missing("total_fee"));
            }
            if r.transaction_id.is_none() {
                return Err(ParseError::Missing("transaction_id"));
            }
        }
        Ok(r)
    }
}

/// `pay/closeorder`. WeChat wants at least 5 minutes between creating and closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseOrderRequest {
    pub out_trade_no: String,
}

impl Encode for CloseOrderRequest {
    const ENDPOINT: Endpoint = Endpoint::CloseOrder;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "out_trade_no", &*self.out_trade_no);
        p
    }
}

impl Request for CloseOrderRequest {
    type Response = CloseOrderResponse;
}

/// closeorder answers nothing beyond the result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOrderResponse;

impl FromResponse for CloseOrderResponse {
    fn from_document(_doc: &Document) -> Result<Self, ParseError> {
        Ok(CloseOrderResponse)
    }
}
