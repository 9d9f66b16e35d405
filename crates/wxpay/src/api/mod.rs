//! Typed requests and responses for every WeChat Pay v2 endpoint minipay calls, one module
//! per family: [`pay`] (unifiedorder, orderquery, closeorder), [`refund`] (refund,
//! refundquery), [`download`] (downloadbill, downloadfundflow), [`transfer`] (transfers,
//! gettransferinfo), [`redpack`] (sendredpack, sendgroupredpack, sendminiprogramhb, gethbinfo).
//!
//! A request knows its [`Endpoint`] (path, certificate, sign rule, id field names) and
//! encodes its business fields to [`Params`]; [`build_request`] adds the ids, the nonce and
//! the signature. A response decodes from the answer's [`Document`] after
//! [`crate::outcome::classify`] said Success; a decode error becomes `Outcome::Unknown` in
//! the client (the call may have worked, we just cannot read the proof).
//!
//! Amounts are [`Fen`]; WeChat times (`yyyyMMddHHmmss` or `yyyy-MM-dd HH:mm:ss`, both
//! Asia/Shanghai) become `DateTime<Utc>`.

pub mod download;
pub mod pay;
pub mod redpack;
pub mod refund;
pub mod transfer;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;

use crate::Fen;
use crate::outcome::Endpoint;
use crate::secret::ApiKey;
use crate::sign::{SignType, sign_params};
use crate::xml::{Document, Params};

pub use download::{AccountType, BillType, DownloadBillRequest, DownloadFundFlowRequest};
pub use pay::{
    CloseOrderRequest, CloseOrderResponse, OrderQueryRequest, OrderQueryResponse, OrderRef, TradeState,
    UnifiedOrderRequest, UnifiedOrderResponse,
};
pub use redpack::{
    GetHbInfoRequest, GetHbInfoResponse, HbInfo, RedpackResponse, RedpackStatus, SceneId, SendGroupRedpackRequest,
    SendMiniProgramHbRequest, SendMiniProgramHbResponse, SendRedpackRequest,
};
pub use refund::{
    RefundItem, RefundQueryRequest, RefundQueryResponse, RefundRef, RefundRequest, RefundResponse, RefundStatus,
};
pub use transfer::{
    CheckName, GetTransferInfoRequest, GetTransferInfoResponse, TransferRequest, TransferResponse, TransferStatus,
};

/// Anything that can be sent to an endpoint: its business fields as [`Params`].
pub trait Encode {
    const ENDPOINT: Endpoint;
    /// The business fields only; ids, `nonce_str`, `sign_type` and `sign` are added by
    /// [`build_request`].
    fn to_params(&self) -> Params;
    /// Checks rules WeChat would refuse anyway, before any I/O.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A call whose success answer is an XML document with a typed response.
pub trait Request: Encode {
    type Response: FromResponse;
}

/// Decodes a classified-as-success answer.
pub trait FromResponse: Sized {
    fn from_document(doc: &Document) -> Result<Self, ParseError>;
}

/// Why a success answer could not be read into its typed response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field} has an invalid value {value:?}")]
    Invalid { field: String, value: String },
    #[error("unknown {field} {value:?}")]
    UnknownState { field: &'static str, value: String },
}

/// Who is calling: the ids every request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantIds {
    pub appid: String,
    pub mch_id: String,
}

/// The complete signed request for `req`: business fields, ids under the endpoint's names,
/// `nonce_str`, `sign_type` (when not MD5) and `sign`. Returns the params and the sign type
/// used (the endpoint's fixed one, or `merchant_sign_type`).
pub fn build_request<R: Encode>(
    req: &R,
    ids: &MerchantIds,
    key: &ApiKey,
    merchant_sign_type: SignType,
    nonce: &str,
) -> (Params, SignType) {
    let mut p = req.to_params();
    let (app_field, mch_field) = R::ENDPOINT.id_fields();
    p.insert(app_field.into(), ids.appid.clone());
    p.insert(mch_field.into(), ids.mch_id.clone());
    p.insert("nonce_str".into(), nonce.to_owned());
    let st = R::ENDPOINT.sign_type(merchant_sign_type);
    sign_params(&mut p, key, st);
    (p, st)
}

/// Formats a time the way request fields want it: `yyyyMMddHHmmss` in Asia/Shanghai.
pub fn format_wechat_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai).format("%Y%m%d%H%M%S").to_string()
}

/// Parses `yyyyMMddHHmmss` or `yyyy-MM-dd HH:mm:ss` (both Asia/Shanghai) into UTC.
pub fn parse_wechat_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    // Shanghai has had no DST since 1991, so `single` never fails for real timestamps.
    Shanghai.from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

/// Field access helpers shared by the response decoders.
pub(crate) struct Fields<'a>(pub &'a Params);

impl<'a> Fields<'a> {
    pub fn opt(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }

    pub fn req(&self, k: &'static str) -> Result<String, ParseError> {
        self.opt(k).ok_or(ParseError::Missing(k))
    }

    pub fn fen(&self, k: &'static str) -> Result<Fen, ParseError> {
        let v = self.req(k)?;
        Fen::parse_fen(&v).map_err(|_| ParseError::Invalid { field: k.into(), value: v })
    }

    pub fn opt_fen(&self, k: &str) -> Result<Option<Fen>, ParseError> {
        match self.opt(k) {
            None => Ok(None),
            Some(v) => Fen::parse_fen(&v).map(Some).map_err(|_| ParseError::Invalid { field: k.into(), value: v }),
        }
    }

    pub fn time(&self, k: &'static str) -> Result<DateTime<Utc>, ParseError> {
        let v = self.req(k)?;
        parse_wechat_time(&v).ok_or(ParseError::Invalid { field: k.into(), value: v })
    }

    pub fn opt_time(&self, k: &str) -> Result<Option<DateTime<Utc>>, ParseError> {
        match self.opt(k) {
            None => Ok(None),
            Some(v) => parse_wechat_time(&v).map(Some).ok_or(ParseError::Invalid { field: k.into(), value: v }),
        }
    }

    pub fn count(&self, k: &'static str) -> Result<usize, ParseError> {
        let v = self.req(k)?;
        v.parse().map_err(|_| ParseError::Invalid { field: k.into(), value: v })
    }
}

/// Inserts `k` when `v` is `Some` (absent optional fields are not sent at all).
pub(crate) fn put_opt(p: &mut Params, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        p.insert(k.into(), v.clone());
    }
}

pub(crate) fn put(p: &mut Params, k: &str, v: impl Into<String>) {
    p.insert(k.into(), v.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_time_round_trip() {
        let t = Utc.with_ymd_and_hms(2017, 11, 25, 7, 36, 17).unwrap();
        assert_eq!(format_wechat_time(t), "20171125153617");
        assert_eq!(parse_wechat_time("20171125153617"), Some(t));
        assert_eq!(parse_wechat_time("2017-11-25 15:36:17"), Some(t));
        assert_eq!(parse_wechat_time("2017-11-25"), None);
    }
}
