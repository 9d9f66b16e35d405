//! Refunds: `secapi/pay/refund` (client certificate) and `pay/refundquery`.
//!
//! Outcome rules (codes in [`crate::outcome::final_codes`]):
//! - refund: SYSTEMERROR and BIZERR_NEED_RETRY are Unknown — retry with the **same**
//!   out_refund_no and amounts, or query; NOTENOUGH, TRADE_OVERDUE, ERROR,
//!   USER_ACCOUNT_ABNORMAL, INVALID_REQ_TOO_MUCH, FREQUENCY_LIMITED, ORDERNOTEXIST,
//!   INVALID_TRANSACTIONID and the request validation codes are Failed (nothing was
//!   accepted; FREQUENCY_LIMITED and NOTENOUGH may be retried later with the same number).
//!   A Success means WeChat *accepted* the refund; its final state comes from the refund
//!   notification or refundquery.
//! - refundquery: REFUNDNOTEXIST / ORDERNOTEXIST are Failed; SYSTEMERROR Unknown; an
//!   unknown `refund_status_n` is Unknown.

use chrono::{DateTime, Utc};

use super::{Encode, Fields, FromResponse, OrderRef, ParseError, Request, put, put_opt};
use crate::Fen;
use crate::outcome::Endpoint;
use crate::xml::{Document, Params};

/// `secapi/pay/refund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub order: OrderRef,
    pub out_refund_no: String,
    pub total_fee: Fen,
    pub refund_fee: Fen,
    pub refund_desc: Option<String>,
    pub notify_url: Option<String>,
    /// `REFUND_SOURCE_RECHARGE_FUNDS` refunds from the recharge balance.
    pub refund_account: Option<String>,
}

impl Encode for RefundRequest {
    const ENDPOINT: Endpoint = Endpoint::Refund;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        self.order.put(&mut p);
        put(&mut p, "out_refund_no", &*self.out_refund_no);
        put(&mut p, "total_fee", self.total_fee.get().to_string());
        put(&mut p, "refund_fee", self.refund_fee.get().to_string());
        put_opt(&mut p, "refund_desc", &self.refund_desc);
        put_opt(&mut p, "notify_url", &self.notify_url);
        put_opt(&mut p, "refund_account", &self.refund_account);
        p
    }

    fn validate(&self) -> Result<(), String> {
        if !self.refund_fee.is_positive() || self.refund_fee > self.total_fee {
            return Err("refund_fee must be positive and at most total_fee".into());
        }
        Ok(())
    }
}

impl Request for RefundRequest {
    type Response = RefundResponse;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundResponse {
    pub transaction_id: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fee: Fen,
    pub total_fee: Fen,
    pub cash_fee: Option<Fen>,
    pub cash_refund_fee: Option<Fen>,
    pub settlement_refund_fee: Option<Fen>,
}

impl FromResponse for RefundResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        Ok(RefundResponse {
            transaction_id: f.req("transaction_id")?,
            out_trade_no: f.req("out_trade_no")?,
            out_refund_no: f.req("out_refund_no")?,
            refund_id: f.req("refund_id")?,
            refund_fee: f.fen("refund_fee")?,
            total_fee: f.fen("total_fee")?,
            cash_fee: f.opt_fen("cash_fee")?,
            cash_refund_fee: f.opt_fen("cash_refund_fee")?,
            settlement_refund_fee: f.opt_fen("settlement_refund_fee")?,
        })
    }
}

/// Which number refundquery looks up (WeChat's precedence: refund_id > out_refund_no >
/// transaction_id > out_trade_no; we send exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRef {
    RefundId(String),
    OutRefundNo(String),
    TransactionId(String),
    OutTradeNo(String),
}

/// `pay/refundquery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundQueryRequest {
    pub by: RefundRef,
    /// Paging offset when an order has more than 10 refunds.
    pub offset: Option<u32>,
}

impl Encode for RefundQueryRequest {
    const ENDPOINT: Endpoint = Endpoint::RefundQuery;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        let (k, v) = match &self.by {
            RefundRef::RefundId(v) => ("refund_id", v),
            RefundRef::OutRefundNo(v) => ("out_refund_no", v),
            RefundRef::TransactionId(v) => ("transaction_id", v),
            RefundRef::OutTradeNo(v) => ("out_trade_no", v),
        };
        put(&mut p, k, &**v);
        if let Some(o) = self.offset {
            put(&mut p, "offset", o.to_string());
        }
        p
    }
}

impl Request for RefundQueryRequest {
    type Response = RefundQueryResponse;
}

/// `refund_status_n` in refundquery and `refund_status` in the refund notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    Success,
    /// Closed without money moving.
    RefundClose,
    Processing,
    /// The user's card/account refused; needs manual handling ("退款异常").
    Change,
}

impl RefundStatus {
    pub fn parse(s: &str) -> Option<RefundStatus> {
        Some(match s {
            "SUCCESS" => RefundStatus::Success,
            "REFUNDCLOSE" => RefundStatus::RefundClose,
            "PROCESSING" => RefundStatus::Processing,
            "CHANGE" => RefundStatus::Change,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Success => "SUCCESS",
            RefundStatus::RefundClose => "REFUNDCLOSE",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Change => "CHANGE",
        }
    }
}

/// One refund of an order (the `_n` fields of refundquery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundItem {
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fee: Fen,
    pub refund_status: RefundStatus,
    pub refund_success_time: Option<DateTime<Utc>>,
    pub refund_recv_accout: Option<String>,
    pub refund_channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundQueryResponse {
    pub transaction_id: Option<String>,
    pub out_trade_no: Option<String>,
    pub total_fee: Option<Fen>,
    pub cash_fee: Option<Fen>,
    /// All refunds of the order (refundquery pages 10 at a time above that).
    pub total_refund_count: Option<usize>,
    pub refunds: Vec<RefundItem>,
}

/// More than this many refunds in one answer would be a malformed (or hostile) document.
const MAX_REFUNDS: usize = 50;

impl FromResponse for RefundQueryResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        let n = f.count("refund_count")?;
        if n > MAX_REFUNDS {
            return Err(ParseError::Invalid { field: "refund_count".into(), value: n.to_string() });
        }
        let mut refunds = Vec::with_capacity(n);
        for i in 0..n {
            let key = |name: &str| format!("{name}_{i}");
            let get = |name: &str| {
                f.opt(&key(name)).ok_or_else(|| ParseError::Invalid { field: key(name), value: String::new() })
            };
            let status = get("refund_status")?;
            let refund_status = RefundStatus::parse(&status)
                .ok_or(ParseError::UnknownState { field: "refund_status_n", value: status })?;
            let fee = get("refund_fee")?;
            refunds.push(RefundItem {
                out_refund_no: get("out_refund_no")?,
                refund_id: get("refund_id")?,
                refund_fee: Fen::parse_fen(&fee)
                    .map_err(|_| ParseError::Invalid { field: key("refund_fee"), value: fee })?,
                refund_status,
                refund_success_time: f.opt_time(&key("refund_success_time"))?,
                refund_recv_accout: f.opt(&key("refund_recv_accout")),
                refund_channel: f.opt(&key("refund_channel")),
            });
        }
        Ok(RefundQueryResponse {
            transaction_id: f.opt("transaction_id"),
            out_trade_no: f.opt("out_trade_no"),
            total_fee: f.opt_fen("total_fee")?,
            cash_fee: f.opt_fen("cash_fee")?,
            total_refund_count: match f.opt("total_refund_count") {
                None => None,
                Some(v) => {
                    Some(v.parse().map_err(|_| ParseError::Invalid { field: "total_refund_count".into(), value: v })?)
                }
            },
            refunds,
        })
    }
}
