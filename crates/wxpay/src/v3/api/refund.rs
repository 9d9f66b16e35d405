//! Refunds over APIv3: `POST /v3/refund/domestic/refunds` and
//! `GET /v3/refund/domestic/refunds/{out_refund_no}`. Both answer the same [`Refund`];
//! its `status` is SUCCESS, CLOSED, PROCESSING or ABNORMAL (PROCESSING is a success
//! answer that says "ask again later"). Refunds are allowed within 365 days, at most 50
//! per order (WeChat's rules; WeChat enforces them, we only check amounts).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{Call, MerchantIds, ParseError, WireRequest, json, path_segment, to_json};
use crate::Fen;
use crate::v3::outcome::Endpoint;
use crate::v3::sign::Method;

/// Which payment is refunded: WeChat accepts either number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundTarget {
    TransactionId(String),
    OutTradeNo(String),
}

/// `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRefund {
    pub target: RefundTarget,
    pub out_refund_no: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    /// `AVAILABLE` to refund from the available balance; absent = unsettled funds.
    pub funds_account: Option<String>,
    pub refund: Fen,
    /// The original order's total.
    pub total: Fen,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_trade_no: Option<&'a str>,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    funds_account: Option<&'a str>,
    amount: RefundBodyAmount,
}

#[derive(Serialize)]
struct RefundBodyAmount {
    refund: Fen,
    total: Fen,
    currency: &'static str,
}

impl Call for CreateRefund {
    const ENDPOINT: Endpoint = Endpoint::CreateRefund;
    type Response = Refund;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let (transaction_id, out_trade_no) = match &self.target {
            RefundTarget::TransactionId(t) => (Some(t.as_str()), None),
            RefundTarget::OutTradeNo(o) => (None, Some(o.as_str())),
        };
        let body = RefundBody {
            transaction_id,
            out_trade_no,
            out_refund_no: &self.out_refund_no,
            reason: self.reason.as_deref(),
            notify_url: self.notify_url.as_deref(),
            funds_account: self.funds_account.as_deref(),
            amount: RefundBodyAmount { refund: self.refund, total: self.total, currency: "CNY" },
        };
        WireRequest {
            method: Method::Post,
            path_and_query: Self::ENDPOINT.template().into(),
            body: Some(to_json(&body)),
            wechatpay_serial: None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.refund.is_positive() || self.refund > self.total {
            return Err("refund must be positive and at most total".into());
        }
        if self.out_refund_no.is_empty() {
            return Err("out_refund_no is required".into());
        }
        Ok(())
    }

    fn parse(body: &[u8]) -> Result<Refund, ParseError> {
        json(body)
    }
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRefund {
    pub out_refund_no: String,
}

impl Call for QueryRefund {
    const ENDPOINT: Endpoint = Endpoint::QueryRefund;
    type Response = Refund;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        WireRequest {
            method: Method::Get,
            path_and_query: format!("/v3/refund/domestic/refunds/{}", path_segment(&self.out_refund_no)),
            body: None,
            wechatpay_serial: None,
        }
    }

    fn parse(body: &[u8]) -> Result<Refund, ParseError> {
        json(body)
    }
}

/// `status` of a refund (`refund_status` in its notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Success,
    Closed,
    Processing,
    /// The money could not reach the user (account closed…); handle offline or retry.
    Abnormal,
}

/// A refund as the create and query answers describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub user_received_account: Option<String>,
    #[serde(default)]
    pub success_time: Option<DateTime<FixedOffset>>,
    pub create_time: DateTime<FixedOffset>,
    pub status: RefundStatus,
    #[serde(default)]
    pub funds_account: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: Fen,
    pub refund: Fen,
    #[serde(default)]
    pub payer_total: Option<Fen>,
    #[serde(default)]
    pub payer_refund: Option<Fen>,
    #[serde(default)]
    pub settlement_refund: Option<Fen>,
    #[serde(default)]
    pub settlement_total: Option<Fen>,
    #[serde(default)]
    pub discount_refund: Option<Fen>,
    #[serde(default)]
    pub refund_fee: Option<Fen>,
    #[serde(default)]
    pub currency: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> MerchantIds {
        MerchantIds { mchid: "1900000001".into(), appid: "wx".into() }
    }

    #[test]
    fn create_body_carries_one_number_and_fen() {
        let req = CreateRefund {
            target: RefundTarget::OutTradeNo("MP1".into()),
            out_refund_no: "R1".into(),
            reason: Some("商品已售完".into()),
            notify_url: None,
            funds_account: None,
            refund: Fen::new(1),
            total: Fen::new(100),
        };
        req.validate().unwrap();
        let w = req.wire(&ids());
        assert_eq!(w.path_and_query, "/v3/refund/domestic/refunds");
        let v: serde_json::Value = serde_json::from_str(w.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"out_trade_no":"MP1","out_refund_no":"R1","reason":"商品已售完",
                "amount":{"refund":1,"total":100,"currency":"CNY"}})
        );
        let by_id = CreateRefund { target: RefundTarget::TransactionId("42".into()), ..req.clone() }.wire(&ids());
        assert!(by_id.body.unwrap().starts_with(r#"{"transaction_id":"42","out_refund_no""#));
        assert!(CreateRefund { refund: Fen::new(101), ..req.clone() }.validate().is_err());
        assert!(CreateRefund { refund: Fen::ZERO, ..req }.validate().is_err());
        assert_eq!(
            QueryRefund { out_refund_no: "R 1".into() }.wire(&ids()).path_and_query,
            "/v3/refund/domestic/refunds/R%201"
        );
    }

    #[test]
    fn documented_answer_parses() {
        let body = br#"{"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018",
          "transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018",
          "channel":"ORIGINAL","user_received_account":"\u62db\u5546\u94f6\u884c\u4fe1\u7528\u5361",
          "success_time":"2020-12-01T16:18:12+08:00","create_time":"2020-12-01T16:18:12+08:00",
          "status":"SUCCESS","funds_account":"UNSETTLED",
          "amount":{"total":100,"refund":100,"from":[],"payer_total":90,"payer_refund":90,"settlement_refund":100,
          "settlement_total":100,"discount_refund":10,"currency":"CNY","refund_fee":0},"promotion_detail":[]}"#;
        let r = QueryRefund::parse(body).unwrap();
        assert_eq!(r.status, RefundStatus::Success);
        assert_eq!((r.amount.refund, r.amount.payer_refund), (Fen::new(100), Some(Fen::new(90))));
        assert_eq!(r.user_received_account.as_deref(), Some("招商银行信用卡"));
        for (s, st) in [
            ("CLOSED", RefundStatus::Closed),
            ("PROCESSING", RefundStatus::Processing),
            ("ABNORMAL", RefundStatus::Abnormal),
        ] {
            assert_eq!(serde_json::from_str::<RefundStatus>(&format!("\"{s}\"")).unwrap(), st);
        }
        assert!(serde_json::from_str::<RefundStatus>("\"REFUNDCLOSE\"").is_err());
    }
}
