//! Mini-program payment over APIv3: `POST /v3/pay/transactions/jsapi` (→ `prepay_id`),
//! the two queries, and close (`204 No Content`).
//!
//! The query answer is also the decrypted payload of the `TRANSACTION.SUCCESS`
//! notification ([`Transaction`]). `trade_state`: SUCCESS, REFUND, NOTPAY, CLOSED,
//! REVOKED, USERPAYING, PAYERROR.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use super::{Call, MerchantIds, ParseError, WireRequest, json, path_segment, to_json};
use crate::Fen;
use crate::v3::outcome::Endpoint;
use crate::v3::sign::Method;

/// `amount` of a payment request: fen, always CNY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub total: Fen,
    pub currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
}

/// `POST /v3/pay/transactions/jsapi` for a mini-program user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsapiPrepay {
    /// Shown to the user (≤ 127 characters).
    pub description: String,
    pub out_trade_no: String,
    pub total: Fen,
    pub openid: String,
    pub notify_url: String,
    pub time_expire: Option<DateTime<Utc>>,
    pub attach: Option<String>,
    pub goods_tag: Option<String>,
}

#[derive(Serialize)]
struct JsapiBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "super::v3_time::serialize")]
    time_expire: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attach: Option<&'a str>,
    notify_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    goods_tag: Option<&'a str>,
    amount: Amount,
    payer: Payer,
}

impl Call for JsapiPrepay {
    const ENDPOINT: Endpoint = Endpoint::JsapiPrepay;
    type Response = JsapiPrepayResponse;

    fn wire(&self, ids: &MerchantIds) -> WireRequest {
        let body = JsapiBody {
            appid: &ids.appid,
            mchid: &ids.mchid,
            description: &self.description,
            out_trade_no: &self.out_trade_no,
            time_expire: self.time_expire,
            attach: self.attach.as_deref(),
            notify_url: &self.notify_url,
            goods_tag: self.goods_tag.as_deref(),
            amount: Amount { total: self.total, currency: "CNY" },
            payer: Payer { openid: Some(self.openid.clone()) },
        };
        WireRequest {
            method: Method::Post,
            path_and_query: Self::ENDPOINT.template().into(),
            body: Some(to_json(&body)),
            wechatpay_serial: None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.total.is_positive() {
            return Err("total must be positive".into());
        }
        if self.out_trade_no.is_empty() || self.openid.is_empty() || self.notify_url.is_empty() {
            return Err("out_trade_no, openid and notify_url are required".into());
        }
        Ok(())
    }

    fn parse(body: &[u8]) -> Result<JsapiPrepayResponse, ParseError> {
        json(body)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JsapiPrepayResponse {
    /// Valid two hours; hand it to [`crate::v3::jsapi`] for `wx.requestPayment`.
    pub prepay_id: String,
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryByOutTradeNo {
    pub out_trade_no: String,
}

impl Call for QueryByOutTradeNo {
    const ENDPOINT: Endpoint = Endpoint::QueryByOutTradeNo;
    type Response = Transaction;

    fn wire(&self, ids: &MerchantIds) -> WireRequest {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            path_segment(&self.out_trade_no),
            path_segment(&ids.mchid)
        );
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<Transaction, ParseError> {
        json(body)
    }
}

/// `GET /v3/pay/transactions/id/{transaction_id}?mchid=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryByTransactionId {
    pub transaction_id: String,
}

impl Call for QueryByTransactionId {
    const ENDPOINT: Endpoint = Endpoint::QueryByTransactionId;
    type Response = Transaction;

    fn wire(&self, ids: &MerchantIds) -> WireRequest {
        let path = format!(
            "/v3/pay/transactions/id/{}?mchid={}",
            path_segment(&self.transaction_id),
            path_segment(&ids.mchid)
        );
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<Transaction, ParseError> {
        json(body)
    }
}

/// `trade_state` of a v3 payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Success,
    /// Paid, then (partly) refunded.
    Refund,
    #[serde(rename = "NOTPAY")]
    NotPay,
    Closed,
    Revoked,
    #[serde(rename = "USERPAYING")]
    UserPaying,
    #[serde(rename = "PAYERROR")]
    PayError,
}

/// A payment as WeChat describes it: the query answer and the `TRANSACTION.SUCCESS`
/// notification payload. Fields WeChat omits before payment (transaction_id,
/// success_time, payer amounts) are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub trade_type: Option<String>,
    pub trade_state: TradeState,
    #[serde(default)]
    pub trade_state_desc: Option<String>,
    #[serde(default)]
    pub bank_type: Option<String>,
    #[serde(default)]
    pub attach: Option<String>,
    #[serde(default)]
    pub success_time: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub payer: Option<Payer>,
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    #[serde(default)]
    pub total: Option<Fen>,
    #[serde(default)]
    pub payer_total: Option<Fen>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub payer_currency: Option<String>,
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` `{mchid}` → 204.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseOrder {
    pub out_trade_no: String,
}

/// The empty success of close (204 No Content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Closed;

impl Call for CloseOrder {
    const ENDPOINT: Endpoint = Endpoint::CloseOrder;
    type Response = Closed;

    fn wire(&self, ids: &MerchantIds) -> WireRequest {
        WireRequest {
            method: Method::Post,
            path_and_query: format!("/v3/pay/transactions/out-trade-no/{}/close", path_segment(&self.out_trade_no)),
            body: Some(to_json(&serde_json::json!({ "mchid": ids.mchid }))),
            wechatpay_serial: None,
        }
    }

    fn parse(body: &[u8]) -> Result<Closed, ParseError> {
        json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ids() -> MerchantIds {
        MerchantIds { mchid: "1230000109".into(), appid: "wxd678efh567hg6787".into() }
    }

    #[test]
    fn prepay_body_matches_the_documented_shape() {
        let req = JsapiPrepay {
            description: "Image形象店-深圳腾大-QQ公仔".into(),
            out_trade_no: "1217752501201407033233368018".into(),
            total: Fen::new(100),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            notify_url: "https://www.weixin.qq.com/wxpay/pay.php".into(),
            time_expire: Some(Utc.with_ymd_and_hms(2018, 6, 8, 2, 34, 56).unwrap()),
            attach: None,
            goods_tag: None,
        };
        req.validate().unwrap();
        let w = req.wire(&ids());
        assert_eq!((w.method, w.path_and_query.as_str()), (Method::Post, "/v3/pay/transactions/jsapi"));
        let v: serde_json::Value = serde_json::from_str(w.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "appid": "wxd678efh567hg6787", "mchid": "1230000109",
                "description": "Image形象店-深圳腾大-QQ公仔", "out_trade_no": "1217752501201407033233368018",
                "time_expire": "2018-06-08T10:34:56+08:00", "notify_url": "https://www.weixin.qq.com/wxpay/pay.php",
                "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
            })
        );
        let mut bad = req;
        bad.total = Fen::ZERO;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn queries_and_close_paths() {
        let q = QueryByOutTradeNo { out_trade_no: "MP|1".into() }.wire(&ids());
        assert_eq!(q.path_and_query, "/v3/pay/transactions/out-trade-no/MP%7C1?mchid=1230000109");
        assert_eq!((q.method, q.body), (Method::Get, None));
        let q = QueryByTransactionId { transaction_id: "1217752501201407033233368018".into() }.wire(&ids());
        assert_eq!(q.path_and_query, "/v3/pay/transactions/id/1217752501201407033233368018?mchid=1230000109");
        let c = CloseOrder { out_trade_no: "MP1".into() }.wire(&ids());
        assert_eq!(c.path_and_query, "/v3/pay/transactions/out-trade-no/MP1/close");
        assert_eq!(c.body.as_deref(), Some(r#"{"mchid":"1230000109"}"#));
        assert_eq!(CloseOrder::parse(b""), Ok(Closed));
    }

    /// The query answer from WeChat's documentation (amounts in fen, times +08:00).
    #[test]
    fn documented_query_answer_parses() {
        let body = br#"{"amount":{"currency":"CNY","payer_currency":"CNY","payer_total":100,"total":100},
            "appid":"wxd678efh567hg6787","attach":"\u81ea\u5b9a\u4e49\u6570\u636e","bank_type":"OTHERS",
            "mchid":"1230000109","out_trade_no":"1217752501201407033233368018",
            "payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"promotion_detail":[],
            "success_time":"2018-06-08T10:34:56+08:00","trade_state":"SUCCESS","trade_state_desc":"\u652f\u4ed8\u6210\u529f",
            "trade_type":"JSAPI","transaction_id":"1217752501201407033233368018"}"#;
        let t = QueryByOutTradeNo::parse(body).unwrap();
        assert_eq!(t.trade_state, TradeState::Success);
        assert_eq!(t.amount.as_ref().unwrap().payer_total, Some(Fen::new(100)));
        assert_eq!(t.success_time.unwrap().to_rfc3339(), "2018-06-08T10:34:56+08:00");
        assert_eq!(t.attach.as_deref(), Some("自定义数据"));
        for (s, st) in [
            ("NOTPAY", TradeState::NotPay),
            ("USERPAYING", TradeState::UserPaying),
            ("PAYERROR", TradeState::PayError),
            ("REFUND", TradeState::Refund),
            ("CLOSED", TradeState::Closed),
            ("REVOKED", TradeState::Revoked),
        ] {
            assert_eq!(serde_json::from_str::<TradeState>(&format!("\"{s}\"")).unwrap(), st);
        }
        assert!(serde_json::from_str::<TradeState>("\"ACCEPT\"").is_err(), "unknown states never guessed");
        let notpay =
            br#"{"appid":"wx","mchid":"1","out_trade_no":"MP1","trade_state":"NOTPAY","amount":{"total":100}}"#;
        assert_eq!(QueryByOutTradeNo::parse(notpay).unwrap().transaction_id, None);
    }
}
