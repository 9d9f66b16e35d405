//! One merchant, whichever protocol it speaks: the payment and refund calls the services
//! make, over v2 (XML, MD5/HMAC) or APIv3 (JSON, RSA), with one vocabulary of answers.
//!
//! The services were written against v2's answers; rather than a third set of types, a v3
//! answer is translated into the v2 shape the services already decide on, field by field:
//!
//! | v3 | v2 shape |
//! |---|---|
//! | `Transaction.trade_state` (SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR) | `OrderQueryResponse.trade_state` (same names) |
//! | `amount.total` / `amount.payer_total` | `total_fee` / `cash_fee` |
//! | `success_time` (RFC 3339, +08:00) | `time_end` (UTC) |
//! | `payer.openid` | `openid` |
//! | `Refund.status` SUCCESS / CLOSED / PROCESSING / ABNORMAL | `refund_status` SUCCESS / REFUNDCLOSE / PROCESSING / CHANGE |
//! | `Refund.amount.refund`, `user_received_account` | `refund_fee`, `refund_recv_accout` |
//!
//! and v3's refusal codes into the v2 codes the services branch on ([`v2_code`]):
//! `ORDER_CLOSED` → `ORDERCLOSED`, `ORDER_NOT_EXIST` → `ORDERNOTEXIST` (orders) /
//! `REFUNDNOTEXIST` (refunds), `RESOURCE_NOT_EXISTS` likewise, `NOT_ENOUGH` → `NOTENOUGH`,
//! `ORDER_PAID` → `ORDERPAID`; every other code passes through unchanged (the services
//! treat unknown codes as refusals of that one call, as for v2). An unknown outcome stays
//! unknown: a v3 500 / `SYSTEM_ERROR`, a transport failure or an answer whose signature
//! does not verify are all "may have happened" (see [`crate::v3::outcome`]).

use chrono::{DateTime, Utc};

use crate::api::{
    CloseOrderRequest, OrderQueryRequest, OrderQueryResponse, OrderRef, RefundItem, RefundQueryRequest,
    RefundQueryResponse, RefundRef, RefundRequest, RefundStatus, TradeState, UnifiedOrderRequest,
};
use crate::{Fen, Outcome, v3};

/// Which protocol a merchant speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V2,
    V3,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2 => "v2",
            ApiVersion::V3 => "v3",
        }
    }
}

/// The call, for metrics labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Prepay,
    OrderQuery,
    CloseOrder,
    Refund,
    RefundQuery,
}

/// A payment to open (JSAPI, for a mini-program user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepay {
    pub description: String,
    pub out_trade_no: String,
    pub total: Fen,
    pub openid: String,
    pub notify_url: String,
    pub attach: Option<String>,
    pub time_expire: Option<DateTime<Utc>>,
    /// v2 only (`spbill_create_ip`); v3 JSAPI has no such field.
    pub client_ip: String,
}

/// A refund to send (by out_trade_no).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundCall {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub total: Fen,
    pub refund: Fen,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
}

/// Why a call was not made: the request itself is one WeChat would refuse, or the
/// configuration lacks what the call needs.
#[derive(Debug, thiserror::Error)]
pub enum NotSent {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Configuration(String),
}

impl From<crate::CallError> for NotSent {
    fn from(e: crate::CallError) -> NotSent {
        match e {
            crate::CallError::InvalidRequest(m) => NotSent::InvalidRequest(m),
            e @ crate::CallError::NoIdentity(_) => NotSent::Configuration(e.to_string()),
        }
    }
}

impl From<v3::client::CallError> for NotSent {
    fn from(e: v3::client::CallError) -> NotSent {
        match e {
            v3::client::CallError::InvalidRequest(m) => NotSent::InvalidRequest(m),
        }
    }
}

/// What `wx.requestPayment` needs, in the merchant's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayParams {
    V2(crate::jsapi::RequestPaymentParams),
    V3(v3::jsapi::RequestPaymentParams),
}

/// A merchant's client for one of its apps. Cheap to clone.
#[derive(Clone)]
pub enum MerchantClient {
    /// The v2 client (its configuration holds the key and sign type `pay_params` use).
    V2(crate::Client),
    V3(v3::Client),
}

impl MerchantClient {
    pub fn version(&self) -> ApiVersion {
        match self {
            MerchantClient::V2(_) => ApiVersion::V2,
            MerchantClient::V3(_) => ApiVersion::V3,
        }
    }

    /// The v3 client, for what only v3 has (notifications, transfer-bills, certificates).
    pub fn v3(&self) -> Option<&v3::Client> {
        match self {
            MerchantClient::V3(c) => Some(c),
            MerchantClient::V2(_) => None,
        }
    }

    /// The path of a call as WeChat names it (metrics label).
    pub fn path(&self, op: Op) -> &'static str {
        match (self.version(), op) {
            (ApiVersion::V2, Op::Prepay) => crate::Endpoint::UnifiedOrder.path(),
            (ApiVersion::V2, Op::OrderQuery) => crate::Endpoint::OrderQuery.path(),
            (ApiVersion::V2, Op::CloseOrder) => crate::Endpoint::CloseOrder.path(),
            (ApiVersion::V2, Op::Refund) => crate::Endpoint::Refund.path(),
            (ApiVersion::V2, Op::RefundQuery) => crate::Endpoint::RefundQuery.path(),
            (ApiVersion::V3, Op::Prepay) => "/v3/pay/transactions/jsapi",
            (ApiVersion::V3, Op::OrderQuery) => "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            (ApiVersion::V3, Op::CloseOrder) => "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            (ApiVersion::V3, Op::Refund) => "/v3/refund/domestic/refunds",
            (ApiVersion::V3, Op::RefundQuery) => "/v3/refund/domestic/refunds/{out_refund_no}",
        }
    }

    /// Opens the payment; success carries the prepay_id.
    pub async fn prepay(&self, p: &Prepay) -> Result<Outcome<String>, NotSent> {
        match self {
            MerchantClient::V2(client) => {
                let req = UnifiedOrderRequest {
                    body: p.description.clone(),
                    out_trade_no: p.out_trade_no.clone(),
                    total_fee: p.total,
                    spbill_create_ip: p.client_ip.clone(),
                    notify_url: p.notify_url.clone(),
                    openid: p.openid.clone(),
                    attach: p.attach.clone(),
                    time_start: None,
                    time_expire: p.time_expire,
                    ..UnifiedOrderRequest::default()
                };
                Ok(client.unified_order(&req).await?.map(|r| r.prepay_id))
            }
            MerchantClient::V3(c) => {
                let req = v3::api::JsapiPrepay {
                    description: p.description.clone(),
                    out_trade_no: p.out_trade_no.clone(),
                    total: p.total,
                    openid: p.openid.clone(),
                    notify_url: p.notify_url.clone(),
                    time_expire: p.time_expire,
                    attach: p.attach.clone(),
                    goods_tag: None,
                };
                Ok(translate(c.jsapi_prepay(&req).await?, Subject::Order).map(|r| r.prepay_id))
            }
        }
    }

    /// `wx.requestPayment` parameters for a prepay_id of `appid`, signed now.
    pub fn pay_params(&self, appid: &str, prepay_id: &str) -> PayParams {
        match self {
            MerchantClient::V2(client) => {
                let c = client.config();
                PayParams::V2(crate::jsapi::request_payment_params(appid, prepay_id, c.sign_type, &c.api_key))
            }
            MerchantClient::V3(c) => {
                PayParams::V3(v3::jsapi::request_payment_params(appid, prepay_id, &c.config().signer))
            }
        }
    }

    pub async fn order_query(&self, out_trade_no: &str) -> Result<Outcome<OrderQueryResponse>, NotSent> {
        match self {
            MerchantClient::V2(client) => {
                let req = OrderQueryRequest { order: OrderRef::OutTradeNo(out_trade_no.to_owned()) };
                Ok(client.order_query(&req).await?)
            }
            MerchantClient::V3(c) => {
                let req = v3::api::QueryByOutTradeNo { out_trade_no: out_trade_no.to_owned() };
                Ok(translate(c.query_by_out_trade_no(&req).await?, Subject::Order).map(order_from_v3))
            }
        }
    }

    /// Closes an unpaid order; success has no content.
    pub async fn close_order(&self, out_trade_no: &str) -> Result<Outcome<()>, NotSent> {
        match self {
            MerchantClient::V2(client) => {
                let req = CloseOrderRequest { out_trade_no: out_trade_no.to_owned() };
                Ok(client.close_order(&req).await?.map(|_| ()))
            }
            MerchantClient::V3(c) => {
                let req = v3::api::CloseOrder { out_trade_no: out_trade_no.to_owned() };
                Ok(translate(c.close_order(&req).await?, Subject::Order).map(|_| ()))
            }
        }
    }

    /// Sends a refund; success (accepted, not necessarily done) carries WeChat's refund_id.
    pub async fn refund(&self, r: &RefundCall) -> Result<Outcome<String>, NotSent> {
        match self {
            MerchantClient::V2(client) => {
                let req = RefundRequest {
                    order: OrderRef::OutTradeNo(r.out_trade_no.clone()),
                    out_refund_no: r.out_refund_no.clone(),
                    total_fee: r.total,
                    refund_fee: r.refund,
                    refund_desc: r.reason.clone(),
                    notify_url: r.notify_url.clone(),
                    refund_account: None,
                };
                Ok(client.refund(&req).await?.map(|a| a.refund_id))
            }
            MerchantClient::V3(c) => {
                let req = v3::api::CreateRefund {
                    target: v3::api::RefundTarget::OutTradeNo(r.out_trade_no.clone()),
                    out_refund_no: r.out_refund_no.clone(),
                    reason: r.reason.clone(),
                    notify_url: r.notify_url.clone(),
                    funds_account: None,
                    refund: r.refund,
                    total: r.total,
                };
                Ok(translate(c.create_refund(&req).await?, Subject::Order).map(|a| a.refund_id))
            }
        }
    }

    /// Asks about one refund (v2 answers list the order's refunds; v3 answers one, listed
    /// alone).
    pub async fn refund_query(&self, out_refund_no: &str) -> Result<Outcome<RefundQueryResponse>, NotSent> {
        match self {
            MerchantClient::V2(client) => {
                let req = RefundQueryRequest { by: RefundRef::OutRefundNo(out_refund_no.to_owned()), offset: None };
                Ok(client.refund_query(&req).await?)
            }
            MerchantClient::V3(c) => {
                let req = v3::api::QueryRefund { out_refund_no: out_refund_no.to_owned() };
                Ok(translate(c.query_refund(&req).await?, Subject::Refund).map(refund_from_v3))
            }
        }
    }
}

/// What a "not found" answer is about.
#[derive(Clone, Copy)]
enum Subject {
    Order,
    Refund,
}

fn translate<T>(o: Outcome<T>, subject: Subject) -> Outcome<T> {
    match o {
        Outcome::Failed { code, message } => Outcome::Failed { code: v2_code(&code, subject).to_owned(), message },
        other => other,
    }
}

/// A v3 refusal code in the v2 vocabulary the services branch on (see the module docs).
fn v2_code(code: &str, subject: Subject) -> &str {
    match (code, subject) {
        ("ORDER_CLOSED", _) => "ORDERCLOSED",
        ("ORDER_PAID", _) => "ORDERPAID",
        ("NOT_ENOUGH", _) => "NOTENOUGH",
        ("ORDER_NOT_EXIST" | "RESOURCE_NOT_EXISTS", Subject::Order) => "ORDERNOTEXIST",
        ("ORDER_NOT_EXIST" | "RESOURCE_NOT_EXISTS", Subject::Refund) => "REFUNDNOTEXIST",
        (other, _) => other,
    }
}

/// A v3 trade state under its v2 name (they are the same words).
pub fn trade_state_from_v3(s: v3::api::TradeState) -> TradeState {
    use v3::api::TradeState as V3;
    match s {
        V3::Success => TradeState::Success,
        V3::Refund => TradeState::Refund,
        V3::NotPay => TradeState::NotPay,
        V3::Closed => TradeState::Closed,
        V3::Revoked => TradeState::Revoked,
        V3::UserPaying => TradeState::UserPaying,
        V3::PayError => TradeState::PayError,
    }
}

/// A v3 transaction (query answer or notification payload) in the v2 query shape.
pub fn order_from_v3(t: v3::api::Transaction) -> OrderQueryResponse {
    let amount = t.amount.as_ref();
    OrderQueryResponse {
        trade_state: trade_state_from_v3(t.trade_state),
        trade_state_desc: t.trade_state_desc,
        out_trade_no: Some(t.out_trade_no),
        transaction_id: t.transaction_id,
        total_fee: amount.and_then(|a| a.total),
        cash_fee: amount.and_then(|a| a.payer_total),
        time_end: t.success_time.map(|s| s.with_timezone(&Utc)),
        openid: t.payer.and_then(|p| p.openid),
        attach: t.attach,
        bank_type: t.bank_type,
        trade_type: t.trade_type,
    }
}

/// A v3 refund status under its v2 name.
pub fn refund_status_from_v3(s: v3::api::RefundStatus) -> RefundStatus {
    match s {
        v3::api::RefundStatus::Success => RefundStatus::Success,
        v3::api::RefundStatus::Closed => RefundStatus::RefundClose,
        v3::api::RefundStatus::Processing => RefundStatus::Processing,
        v3::api::RefundStatus::Abnormal => RefundStatus::Change,
    }
}

/// A v3 refund (query answer) in the v2 refundquery shape, as the only refund listed.
pub fn refund_from_v3(r: v3::api::Refund) -> RefundQueryResponse {
    RefundQueryResponse {
        transaction_id: Some(r.transaction_id),
        out_trade_no: Some(r.out_trade_no),
        total_fee: Some(r.amount.total),
        cash_fee: r.amount.payer_total,
        total_refund_count: None,
        refunds: vec![RefundItem {
            out_refund_no: r.out_refund_no,
            refund_id: r.refund_id,
            refund_fee: r.amount.refund,
            refund_status: refund_status_from_v3(r.status),
            refund_success_time: r.success_time.map(|s| s.with_timezone(&Utc)),
            refund_recv_accout: r.user_received_account,
            refund_channel: r.channel,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_codes_read_as_the_v2_codes_the_services_know() {
        assert_eq!(v2_code("ORDER_CLOSED", Subject::Order), "ORDERCLOSED");
        assert_eq!(v2_code("ORDERPAID", Subject::Order), "ORDERPAID");
        assert_eq!(v2_code("ORDER_NOT_EXIST", Subject::Order), "ORDERNOTEXIST");
        assert_eq!(v2_code("RESOURCE_NOT_EXISTS", Subject::Refund), "REFUNDNOTEXIST");
        assert_eq!(v2_code("NOT_ENOUGH", Subject::Order), "NOTENOUGH");
        assert_eq!(v2_code("OUT_TRADE_NO_USED", Subject::Order), "OUT_TRADE_NO_USED");
        assert_eq!(v2_code("PARAM_ERROR", Subject::Refund), "PARAM_ERROR");
    }

    #[test]
    fn a_v3_transaction_reads_as_an_orderquery_answer() {
        let t: v3::api::Transaction = serde_json::from_str(
            r#"{"appid":"wxapp","mchid":"1900000109","out_trade_no":"T1","transaction_id":"4200",
                "trade_type":"JSAPI","trade_state":"SUCCESS","bank_type":"OTHERS","attach":"a",
                "success_time":"2026-12-01T10:00:05+08:00","payer":{"openid":"o1"},
                "amount":{"total":1500,"payer_total":1400,"currency":"CNY","payer_currency":"CNY"}}"#,
        )
        .unwrap();
        let q = order_from_v3(t);
        assert_eq!(q.trade_state, TradeState::Success);
        assert_eq!((q.total_fee, q.cash_fee), (Some(Fen::new(1500)), Some(Fen::new(1400))));
        assert_eq!(q.time_end.unwrap().to_rfc3339(), "2026-12-01T02:00:05+00:00");
        assert_eq!(q.openid.as_deref(), Some("o1"));
        assert_eq!(q.transaction_id.as_deref(), Some("4200"));
    }
}
