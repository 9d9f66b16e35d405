//! Payouts to a user's balance: `mmpaymkttransfers/promotion/transfers` (ids named
//! `mch_appid` / `mchid`!) and `mmpaymkttransfers/gettransferinfo` (`appid` / `mch_id`).
//! Both need the client certificate and sign with MD5 only.
//!
//! Outcome rules (codes in [`crate::outcome::final_codes`]):
//! - transfers: SEND_FAILED is final (a new partner_trade_no may be used); NOTENOUGH,
//!   NAME_MISMATCH, AMOUNT_LIMIT, MONEY_LIMIT, SENDNUM_LIMIT, FREQ_LIMIT,
//!   V2_ACCOUNT_SIMPLE_BAN, OPENID_ERROR, … are Failed (nothing paid). SYSTEMERROR, a
//!   numeric err_code (also under `return_code` FAIL), FATAL_ERROR (the number exists with
//!   other parameters: the earlier request may have paid) and any unrecognised code are
//!   Unknown: WeChat's own words are "请使用原单号以及原请求参数重试，否则可能造成重复支付".
//! - gettransferinfo: NOT_FOUND is Failed (never received under that number); SYSTEMERROR
//!   Unknown. `status` PROCESSING is a Success whose status says "ask again later".

use chrono::{DateTime, Utc};

use super::{Encode, Fields, FromResponse, ParseError, Request, put, put_opt};
use crate::Fen;
use crate::outcome::Endpoint;
use crate::xml::{Document, Params};

/// `check_name`: whether WeChat must check the payee's real name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckName {
    NoCheck,
    /// Sends `FORCE_CHECK` and `re_user_name`.
    ForceCheck {
        re_user_name: String,
    },
}

/// `mmpaymkttransfers/promotion/transfers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub partner_trade_no: String,
    pub openid: String,
    pub check_name: CheckName,
    pub amount: Fen,
    pub desc: String,
    pub spbill_create_ip: Option<String>,
    pub device_info: Option<String>,
}

impl Encode for TransferRequest {
    const ENDPOINT: Endpoint = Endpoint::Transfers;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "partner_trade_no", &*self.partner_trade_no);
        put(&mut p, "openid", &*self.openid);
        match &self.check_name {
            CheckName::NoCheck => put(&mut p, "check_name", "NO_CHECK"),
            CheckName::ForceCheck { re_user_name } => {
                put(&mut p, "check_name", "FORCE_CHECK");
                put(&mut p, "re_user_name", &**re_user_name);
            }
        }
        put(&mut p, "amount", self.amount.get().to_string());
        put(&mut p, "desc", &*self.desc);
        put_opt(&mut p, "spbill_create_ip", &self.spbill_create_ip);
        put_opt(&mut p, "device_info", &self.device_info);
        p
    }

    fn validate(&self) -> Result<(), String> {
        if !self.amount.is_positive() {
            return Err("amount must be positive".into());
        }
        match &self.check_name {
            CheckName::ForceCheck { re_user_name } if re_user_name.is_empty() => {
                Err("FORCE_CHECK needs re_user_name".into())
            }
            CheckName::ForceCheck { .. } | CheckName::NoCheck => Ok(()),
        }
    }
}

impl Request for TransferRequest {
    type Response = TransferResponse;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResponse {
    pub partner_trade_no: String,
    /// WeChat's payment number.
    pub payment_no: String,
    pub payment_time: DateTime<Utc>,
}

impl FromResponse for TransferResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        Ok(TransferResponse {
            partner_trade_no: f.req("partner_trade_no")?,
            payment_no: f.req("payment_no")?,
            payment_time: f.time("payment_time")?,
        })
    }
}

/// `mmpaymkttransfers/gettransferinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTransferInfoRequest {
    pub partner_trade_no: String,
}

impl Encode for GetTransferInfoRequest {
    const ENDPOINT: Endpoint = Endpoint::GetTransferInfo;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "partner_trade_no", &*self.partner_trade_no);
        p
    }
}

impl Request for GetTransferInfoRequest {
    type Response = GetTransferInfoResponse;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferStatus {
    Success,
    Failed,
    Processing,
}

impl TransferStatus {
    pub fn parse(s: &str) -> Option<TransferStatus> {
        Some(match s {
            "SUCCESS" => TransferStatus::Success,
            "FAILED" => TransferStatus::Failed,
            "PROCESSING" => TransferStatus::Processing,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Success => "SUCCESS",
            TransferStatus::Failed => "FAILED",
            TransferStatus::Processing => "PROCESSING",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTransferInfoResponse {
    pub partner_trade_no: String,
    pub detail_id: Option<String>,
    pub status: TransferStatus,
    /// Why it failed (FAILED only).
    pub reason: Option<String>,
    pub openid: Option<String>,
    pub transfer_name: Option<String>,
    pub payment_amount: Fen,
    pub transfer_time: Option<DateTime<Utc>>,
    pub payment_time: Option<DateTime<Utc>>,
    pub desc: Option<String>,
}

impl FromResponse for GetTransferInfoResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        let s = f.req("status")?;
        Ok(GetTransferInfoResponse {
            partner_trade_no: f.req("partner_trade_no")?,
            detail_id: f.opt("detail_id"),
            status: TransferStatus::parse(&s).ok_or(ParseError::UnknownState { field: "status", value: s })?,
            reason: f.opt("reason"),
            openid: f.opt("openid"),
            transfer_name: f.opt("transfer_name"),
            payment_amount: f.fen("payment_amount")?,
            transfer_time: f.opt_time("transfer_time")?,
            payment_time: f.opt_time("payment_time")?,
            desc: f.opt("desc"),
        })
    }
}
