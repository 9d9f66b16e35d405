//! Typed APIv3 calls: one request struct per endpoint that knows its [`Endpoint`], builds
//! its exact path, query and JSON body ([`Call::wire`]), checks what WeChat would refuse
//! anyway ([`Call::validate`]) and reads its success answer ([`Call::parse`]).
//!
//! - [`pay`]: JSAPI prepay, query by out_trade_no / transaction_id, close.
//! - [`refund`]: refund create and query.
//! - [`bill`]: trade and fund-flow bill links, and the downloaded file's hash check.
//! - [`transfer`]: 商家转账 transfer-bills create, query (both numbers), cancel.
//!
//! Amounts are [`crate::Fen`] (APIv3 amounts are integers in fen). Times arrive as RFC 3339
//! with `+08:00` and are kept as `DateTime<FixedOffset>`; times we send are written in
//! Asia/Shanghai the same way. Enumerated states are exhaustive enums: a state WeChat adds
//! tomorrow fails to parse, which the client turns into `Unknown` rather than a guess.

pub mod bill;
pub mod pay;
pub mod refund;
pub mod transfer;

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Shanghai;
use serde::de::DeserializeOwned;

use super::outcome::Endpoint;
use super::sign::Method;

pub use bill::{BillLink, DownloadBill, FundAccountType, FundFlowBillRequest, TradeBillRequest, TradeBillType};
pub use pay::{
    Amount, CloseOrder, Closed, JsapiPrepay, JsapiPrepayResponse, Payer, QueryByOutTradeNo, QueryByTransactionId,
    TradeState, Transaction, TransactionAmount,
};
pub use refund::{CreateRefund, QueryRefund, Refund, RefundAmount, RefundStatus, RefundTarget};
pub use transfer::{
    CancelTransferBill, CreateTransferBill, QueryTransferByBillNo, QueryTransferByOutBillNo, SceneReportInfo,
    TransferBill, TransferBillCancelled, TransferBillCreated, TransferBillState,
};

/// Who is calling: the ids WeChat wants in bodies and query strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantIds {
    pub mchid: String,
    pub appid: String,
}

/// One request as it goes on the wire: what is signed and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    pub method: Method,
    /// Path and query exactly as sent and signed, e.g.
    /// `/v3/pay/transactions/out-trade-no/MP1?mchid=1900000001`.
    pub path_and_query: String,
    /// The JSON body (POST); `None` sends and signs an empty body.
    pub body: Option<String>,
    /// `Wechatpay-Serial` to send because the body holds an encrypted field.
    pub wechatpay_serial: Option<String>,
}

/// Why a success answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable success answer: {0}")]
pub struct ParseError(pub String);

/// A typed v3 call.
pub trait Call {
    const ENDPOINT: Endpoint;
    type Response;
    fn wire(&self, ids: &MerchantIds) -> WireRequest;
    /// Rules WeChat would refuse anyway, checked before any I/O.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn parse(body: &[u8]) -> Result<Self::Response, ParseError>;
}

/// Reads a JSON answer; an empty body (204) reads as JSON `null`, which unit structs accept.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { &b"null"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Our request structs hold only strings, integers and nested structs of them.
    serde_json::to_string(v).expect("request structs serialise")
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters kept). WeChat's
/// numbers are `[0-9A-Za-z_-|*@]`; `|`, `*` and `@` get encoded, which is what the official
/// SDKs' URL builders do (a guess that WeChat decodes them back; the signature covers the
/// encoded form either way, because it is computed over the path as sent).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2018-06-08T10:34:56+08:00`: how v3 request fields want times.
pub fn format_v3_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

pub(crate) mod v3_time {
    use chrono::{DateTime, Utc};

    pub fn serialize<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_v3_time(*t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_and_segments() {
        let t = Utc.with_ymd_and_hms(2018, 6, 8, 2, 34, 56).unwrap();
        assert_eq!(format_v3_time(t), "2018-06-08T10:34:56+08:00");
        assert_eq!(path_segment("MP_2026-1"), "MP_2026-1");
        assert_eq!(path_segment("a|b*c@d/e"), "a%7Cb%2Ac%40d%2Fe");
    }

    #[test]
    fn empty_body_reads_as_unit() {
        assert_eq!(json::<Closed>(b""), Ok(Closed));
        assert!(json::<JsapiPrepayResponse>(b"").is_err());
    }
}
