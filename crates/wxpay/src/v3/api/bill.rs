//! v3 bills, in two steps.
//!
//! 1. `GET /v3/bill/tradebill?bill_date=…&bill_type=…&tar_type=GZIP` or
//!    `GET /v3/bill/fundflowbill?bill_date=…&account_type=…&tar_type=GZIP` answer a signed
//!    [`BillLink`]: `hash_type` (SHA1), `hash_value`, `download_url`.
//! 2. A *signed* GET of `download_url` ([`DownloadBill`], within 5 minutes) answers the file,
//!    which is **not** signed: [`BillLink::check_file`] gunzips it when asked for GZIP and
//!    compares the SHA-1 of the original (uncompressed) bill with `hash_value`. The text is
//!    the same backtick CSV as v2, so it goes to [`crate::bill::BillReader`] /
//!    [`crate::bill::FundFlowReader`] unchanged.
//!
//! `NO_STATEMENT_EXIST` (no bill for that day) and `STATEMENT_CREATING` (ready after about
//! 10:00 the next day) come back as `Failed` with that code; see [`crate::v3::outcome`].

use std::io::Read;

use chrono::NaiveDate;
use flate2::read::MultiGzDecoder;
use serde::Deserialize;

use super::{Call, MerchantIds, ParseError, WireRequest, json};
use crate::v3::outcome::Endpoint;
use crate::v3::sign::Method;

/// `bill_type` of the v3 trade bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradeBillType {
    All,
    Success,
    Refund,
}

impl TradeBillType {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeBillType::All => "ALL",
            TradeBillType::Success => "SUCCESS",
            TradeBillType::Refund => "REFUND",
        }
    }
}

/// `account_type` of the v3 fund-flow bill (uppercase in v3, unlike v2's `Basic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FundAccountType {
    Basic,
    Operation,
    Fees,
}

impl FundAccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            FundAccountType::Basic => "BASIC",
            FundAccountType::Operation => "OPERATION",
            FundAccountType::Fees => "FEES",
        }
    }
}

fn tar(gzip: bool) -> &'static str {
    if gzip { "&tar_type=GZIP" } else { "" }
}

/// `GET /v3/bill/tradebill` for one day (China time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBillRequest {
    pub bill_date: NaiveDate,
    pub bill_type: TradeBillType,
    pub gzip: bool,
}

impl Call for TradeBillRequest {
    const ENDPOINT: Endpoint = Endpoint::TradeBill;
    type Response = BillLink;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type={}{}",
            self.bill_date.format("%Y-%m-%d"),
            self.bill_type.as_str(),
            tar(self.gzip)
        );
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<BillLink, ParseError> {
        json(body)
    }
}

/// `GET /v3/bill/fundflowbill` for one day and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundFlowBillRequest {
    pub bill_date: NaiveDate,
    pub account_type: FundAccountType,
    pub gzip: bool,
}

impl Call for FundFlowBillRequest {
    const ENDPOINT: Endpoint = Endpoint::FundFlowBill;
    type Response = BillLink;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let path = format!(
            "/v3/bill/fundflowbill?bill_date={}&account_type={}{}",
            self.bill_date.format("%Y-%m-%d"),
            self.account_type.as_str(),
            tar(self.gzip)
        );
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<BillLink, ParseError> {
        json(body)
    }
}

/// The first step's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BillLink {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
}

/// Why a downloaded bill file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillFileError {
    #[error("unsupported hash_type {0:?}")]
    HashType(String),
    #[error("not a gzip file: {0}")]
    Gzip(String),
    #[error("bill larger than {0} bytes uncompressed")]
    TooLarge(u64),
    #[error("SHA1 mismatch: expected {expected}, file has {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("download_url {0:?} is not an https/http URL")]
    Url(String),
}

/// The largest bill we gunzip (a defence against gzip bombs; a million-row bill is about
/// 300 MB of text).
pub const MAX_BILL_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl BillLink {
    /// Checks a downloaded file against this link and returns the bill text (gunzipped when
    /// `gzip`). SHA-1 is computed over the uncompressed bill, as WeChat documents
    /// ("原始账单（gzip需要解压缩）的摘要值"); hex is compared without regard to case.
    pub fn check_file(&self, file: &[u8], gzip: bool) -> Result<Vec<u8>, BillFileError> {
        if !self.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(BillFileError::HashType(self.hash_type.clone()));
        }
        let text = if gzip {
            let mut out = Vec::new();
            MultiGzDecoder::new(file)
                .take(MAX_BILL_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| BillFileError::Gzip(e.to_string()))?;
            if out.len() as u64 > MAX_BILL_BYTES {
                return Err(BillFileError::TooLarge(MAX_BILL_BYTES));
            }
            out
        } else {
            file.to_vec()
        };
        let actual = hex::encode(openssl::sha::sha1(&text));
        if !actual.eq_ignore_ascii_case(self.hash_value.trim()) {
            return Err(BillFileError::HashMismatch { expected: self.hash_value.clone(), actual });
        }
        Ok(text)
    }

    /// The second step's request.
    pub fn download(&self) -> Result<DownloadBill, BillFileError> {
        DownloadBill::from_url(&self.download_url)
    }
}

/// The second step: a signed GET of `download_url`. What is signed is the URL's path and
/// query, exactly as WeChat wrote them; the host is WeChat's (the client sends the request
/// to its own configured base URL, so a sandbox's links work too — a guess that WeChat
/// always answers `download_url`s on the API host, which is what its examples show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadBill {
    pub path_and_query: String,
}

impl DownloadBill {
    pub fn from_url(url: &str) -> Result<DownloadBill, BillFileError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| BillFileError::Url(url.to_owned()))?;
        let slash = rest.find('/').ok_or_else(|| BillFileError::Url(url.to_owned()))?;
        Ok(DownloadBill { path_and_query: rest[slash..].to_owned() })
    }
}

impl Call for DownloadBill {
    const ENDPOINT: Endpoint = Endpoint::DownloadBill;
    /// The file as downloaded; check it with [`BillLink::check_file`].
    type Response = Vec<u8>;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        WireRequest {
            method: Method::Get,
            path_and_query: self.path_and_query.clone(),
            body: None,
            wechatpay_serial: None,
        }
    }

    fn parse(body: &[u8]) -> Result<Vec<u8>, ParseError> {
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::Fen;
    use crate::bill::{BillReader, MilliFen, TradeLayout, TradeRow, write_trade_bill};

    fn ids() -> MerchantIds {
        MerchantIds { mchid: "1".into(), appid: "wx".into() }
    }

    #[test]
    fn first_step_paths() {
        let d = NaiveDate::from_ymd_opt(2019, 6, 11).unwrap();
        let t = TradeBillRequest { bill_date: d, bill_type: TradeBillType::All, gzip: true }.wire(&ids());
        assert_eq!(t.path_and_query, "/v3/bill/tradebill?bill_date=2019-06-11&bill_type=ALL&tar_type=GZIP");
        let f =
            FundFlowBillRequest { bill_date: d, account_type: FundAccountType::Operation, gzip: false }.wire(&ids());
        assert_eq!(f.path_and_query, "/v3/bill/fundflowbill?bill_date=2019-06-11&account_type=OPERATION");
        let link: BillLink = TradeBillRequest::parse(
            br#"{"hash_type":"SHA1","hash_value":"79bb0f45fc4c42234a918000b2668d689e2bde04",
                "download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO"}"#,
        )
        .unwrap();
        assert_eq!(
            link.download().unwrap().path_and_query,
            "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO"
        );
        assert!(DownloadBill::from_url("ftp://x/y").is_err());
    }

    fn sample_bill() -> Vec<u8> {
        let t = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap().and_hms_opt(15, 36, 17).unwrap();
        let row = TradeRow {
            trade_time: t,
            appid: "wx2421b1c4370ec43b".into(),
            mch_id: "10000100".into(),
            sub_mch_id: String::new(),
            device_info: String::new(),
            transaction_id: "4200000015202611256947025404".into(),
            out_trade_no: "MP1".into(),
            openid: "oUpF8uMEb4qRXf22hE3X68TekukE".into(),
            trade_type: "JSAPI".into(),
            trade_state: "SUCCESS".into(),
            bank: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_amount: Fen::new(2500),
            coupon_amount: Fen::ZERO,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            refund_amount: Fen::ZERO,
            recharge_coupon_refund: Fen::ZERO,
            refund_type: String::new(),
            refund_status: String::new(),
            product_name: "测试,商品".into(),
            attach: String::new(),
            fee: MilliFen::new(15_000),
            rate: "0.60%".into(),
            order_amount: Some(Fen::new(2500)),
            requested_refund_amount: Some(Fen::ZERO),
            rate_remark: Some(String::new()),
            refund_apply_time: None,
            refund_success_time: None,
        };
        write_trade_bill(Vec::new(), TradeLayout::All, [&row]).unwrap()
    }

    #[test]
    fn gzip_file_checked_against_sha1_of_the_text_then_parsed() {
        let text = sample_bill();
        let sha1 = hex::encode(openssl::sha::sha1(&text));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let link = BillLink { hash_type: "SHA1".into(), hash_value: sha1.to_uppercase(), download_url: String::new() };
        let back = link.check_file(&gz, true).unwrap();
        assert_eq!(back, text);
        let mut reader = BillReader::new(&back[..]).unwrap();
        let mut rows = 0;
        while let Some(r) = reader.next_record() {
            r.unwrap();
            rows += 1;
        }
        assert_eq!(rows, 1);
        reader.finish().unwrap();
        // Plain files too; and the hash of the *compressed* file is not what WeChat sends.
        assert_eq!(link.check_file(&text, false).unwrap(), text);
        let wrong = BillLink { hash_value: hex::encode(openssl::sha::sha1(&gz)), ..link.clone() };
        assert!(matches!(wrong.check_file(&gz, true), Err(BillFileError::HashMismatch { .. })));
        let mut tampered = text.clone();
        tampered[10] ^= 1;
        assert!(matches!(link.check_file(&tampered, false), Err(BillFileError::HashMismatch { .. })));
        assert!(matches!(link.check_file(&text, true), Err(BillFileError::Gzip(_))));
        let md5 = BillLink { hash_type: "MD5".into(), ..link };
        assert_eq!(md5.check_file(&text, false), Err(BillFileError::HashType("MD5".into())));
    }
}
