//! Bill downloads: `pay/downloadbill` and `pay/downloadfundflow` (client certificate,
//! HMAC-SHA256 only). Only the request side lives here: a successful answer is not an XML
//! document but the bill text (or gzip), so [`crate::client::Client::download_bill`] and
//! [`crate::client::Client::download_fund_flow`] hand the raw body over as bytes, and
//! [`crate::bill::decode_body`] tells a bill from WeChat's XML error (`No Bill Exist` is an
//! empty day, `Bill Creating` means "later").

use chrono::NaiveDate;

use super::{Encode, put};
use crate::outcome::Endpoint;
use crate::xml::Params;

/// `bill_type` of downloadbill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BillType {
    All,
    Success,
    Refund,
    RechargeRefund,
}

impl BillType {
    pub fn as_str(self) -> &'static str {
        match self {
            BillType::All => "ALL",
            BillType::Success => "SUCCESS",
            BillType::Refund => "REFUND",
            BillType::RechargeRefund => "RECHARGE_REFUND",
        }
    }
}

/// `account_type` of downloadfundflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountType {
    Basic,
    Operation,
    Fees,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Basic => "Basic",
            AccountType::Operation => "Operation",
            AccountType::Fees => "Fees",
        }
    }
}

/// `pay/downloadbill` for one day (China time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadBillRequest {
    pub bill_date: NaiveDate,
    pub bill_type: BillType,
    /// Ask for a gzip body (`tar_type=GZIP`).
    pub gzip: bool,
}

impl Encode for DownloadBillRequest {
    const ENDPOINT: Endpoint = Endpoint::DownloadBill;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "bill_date", self.bill_date.format("%Y%m%d").to_string());
        put(&mut p, "bill_type", self.bill_type.as_str());
        if self.gzip {
            put(&mut p, "tar_type", "GZIP");
        }
        p
    }
}

/// `pay/downloadfundflow` for one day (China time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadFundFlowRequest {
    pub bill_date: NaiveDate,
    pub account_type: AccountType,
    pub gzip: bool,
}

impl Encode for DownloadFundFlowRequest {
    const ENDPOINT: Endpoint = Endpoint::DownloadFundFlow;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "bill_date", self.bill_date.format("%Y%m%d").to_string());
        put(&mut p, "account_type", self.account_type.as_str());
        if self.gzip {
            put(&mut p, "tar_type", "GZIP");
        }
        p
    }
}
