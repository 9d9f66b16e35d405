//! 商家转账 (transfer-bills), the only payout product open to merchants since 2025-01-15:
//! create `POST /v3/fund-app/mch-transfer/transfer-bills`, query by `out_bill_no` or by
//! `transfer_bill_no`, cancel `POST …/out-bill-no/{out_bill_no}/cancel`.
//!
//! A created bill is usually `WAIT_USER_CONFIRM` with a `package_info` that the
//! mini-program hands to `wx.requestMerchantTransfer` ([`crate::v3::jsapi`]); the user's
//! confirmation moves it on to `SUCCESS` or `FAIL`, and the `MCHTRANSFER.BILL.FINISHED`
//! notification reports the end. **On any non-200 or unclear answer the out_bill_no must
//! not change: query first, then retry with the same number** (WeChat's rule); the outcome
//! table makes every such case `Unknown`.
//!
//! `user_name` (required from 2,000 yuan) is OAEP-encrypted: build it with
//! [`crate::v3::crypto::encrypt_field`], whose serial the request then sends as
//! `Wechatpay-Serial`.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{Call, MerchantIds, ParseError, WireRequest, json, path_segment, to_json};
use crate::Fen;
use crate::v3::crypto::EncryptedField;
use crate::v3::outcome::Endpoint;
use crate::v3::sign::Method;

/// From this amount up WeChat requires the payee's real name (2,000 yuan).
pub const USER_NAME_REQUIRED_FROM: Fen = Fen::new(200_000);

/// `transfer_remark` is shown to the user and limited to 32 characters.
pub const MAX_REMARK_CHARS: usize = 32;

/// One `transfer_scene_report_infos` entry; each scene fixes which `info_type`s it needs
/// (scene `1000` 现金营销: 活动名称 + 奖励说明).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneReportInfo {
    pub info_type: String,
    pub info_content: String,
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTransferBill {
    pub out_bill_no: String,
    /// The scene opened on the merchant platform, e.g. `1000` (现金营销).
    pub transfer_scene_id: String,
    pub openid: String,
    pub transfer_amount: Fen,
    pub transfer_remark: String,
    pub notify_url: Option<String>,
    /// e.g. "现金奖励" for scene 1000.
    pub user_recv_perception: Option<String>,
    pub transfer_scene_report_infos: Vec<SceneReportInfo>,
    pub user_name: Option<EncryptedField>,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    appid: &'a str,
    out_bill_no: &'a str,
    transfer_scene_id: &'a str,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a EncryptedField>,
    transfer_amount: Fen,
    transfer_remark: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_recv_perception: Option<&'a str>,
    transfer_scene_report_infos: &'a [SceneReportInfo],
}

impl Call for CreateTransferBill {
    const ENDPOINT: Endpoint = Endpoint::CreateTransferBill;
    type Response = TransferBillCreated;

    fn wire(&self, ids: &MerchantIds) -> WireRequest {
        let body = CreateBody {
            appid: &ids.appid,
            out_bill_no: &self.out_bill_no,
            transfer_scene_id: &self.transfer_scene_id,
            openid: &self.openid,
            user_name: self.user_name.as_ref(),
            transfer_amount: self.transfer_amount,
            transfer_remark: &self.transfer_remark,
            notify_url: self.notify_url.as_deref(),
            user_recv_perception: self.user_recv_perception.as_deref(),
            transfer_scene_report_infos: &self.transfer_scene_report_infos,
        };
        WireRequest {
            method: Method::Post,
            path_and_query: Self::ENDPOINT.template().into(),
            body: Some(to_json(&body)),
            wechatpay_serial: self.user_name.as_ref().map(|u| u.serial.clone()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.transfer_amount.is_positive() {
            return Err("transfer_amount must be positive".into());
        }
        if self.transfer_amount >= USER_NAME_REQUIRED_FROM && self.user_name.is_none() {
            return Err("user_name (encrypted) is required from 2,000 yuan".into());
        }
        if self.transfer_remark.is_empty() || self.transfer_remark.chars().count() > MAX_REMARK_CHARS {
            return Err(format!("transfer_remark must be 1..={MAX_REMARK_CHARS} characters"));
        }
        if self.out_bill_no.is_empty() || self.openid.is_empty() || self.transfer_scene_id.is_empty() {
            return Err("out_bill_no, openid and transfer_scene_id are required".into());
        }
        Ok(())
    }

    fn parse(body: &[u8]) -> Result<TransferBillCreated, ParseError> {
        json(body)
    }
}

/// The `state` of a transfer bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferBillState {
    Accepted,
    Processing,
    /// Waiting for the user to confirm in the mini-program (`package_info`).
    WaitUserConfirm,
    /// WeChat's spelling.
    Transfering,
    Success,
    Fail,
    Canceling,
    Cancelled,
}

impl TransferBillState {
    /// SUCCESS, FAIL and CANCELLED never change again.
    pub fn is_final(self) -> bool {
        match self {
            TransferBillState::Success | TransferBillState::Fail | TransferBillState::Cancelled => true,
            TransferBillState::Accepted
            | TransferBillState::Processing
            | TransferBillState::WaitUserConfirm
            | TransferBillState::Transfering
            | TransferBillState::Canceling => false,
        }
    }
}

/// The create answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillCreated {
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub create_time: DateTime<FixedOffset>,
    pub state: TransferBillState,
    #[serde(default)]
    pub package_info: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
}

/// `GET …/transfer-bills/out-bill-no/{out_bill_no}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTransferByOutBillNo {
    pub out_bill_no: String,
}

impl Call for QueryTransferByOutBillNo {
    const ENDPOINT: Endpoint = Endpoint::QueryTransferByOutBillNo;
    type Response = TransferBill;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let path = format!("/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{}", path_segment(&self.out_bill_no));
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<TransferBill, ParseError> {
        json(body)
    }
}

/// `GET …/transfer-bills/transfer-bill-no/{transfer_bill_no}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTransferByBillNo {
    pub transfer_bill_no: String,
}

impl Call for QueryTransferByBillNo {
    const ENDPOINT: Endpoint = Endpoint::QueryTransferByBillNo;
    type Response = TransferBill;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let path = format!(
            "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{}",
            path_segment(&self.transfer_bill_no)
        );
        WireRequest { method: Method::Get, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<TransferBill, ParseError> {
        json(body)
    }
}

/// A transfer bill as the queries describe it (and, with fewer fields, the
/// `MCHTRANSFER.BILL.FINISHED` notification). The merchant id is `mch_id` in the query
/// documentation and `mchid` in the notification's; both names are accepted (a guess that
/// the difference is real rather than a documentation slip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBill {
    #[serde(alias = "mchid", default)]
    pub mch_id: Option<String>,
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    #[serde(default)]
    pub appid: Option<String>,
    pub state: TransferBillState,
    pub transfer_amount: Fen,
    #[serde(default)]
    pub transfer_remark: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
    #[serde(default)]
    pub openid: Option<String>,
    /// Encrypted (OAEP) when present; we never need to read it back.
    #[serde(default)]
    pub user_name: Option<String>,
    pub create_time: DateTime<FixedOffset>,
    pub update_time: DateTime<FixedOffset>,
}

/// `POST …/transfer-bills/out-bill-no/{out_bill_no}/cancel` (no body). Answers CANCELING,
/// then the bill becomes CANCELLED; only bills not yet confirmed can be cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTransferBill {
    pub out_bill_no: String,
}

impl Call for CancelTransferBill {
    const ENDPOINT: Endpoint = Endpoint::CancelTransferBill;
    type Response = TransferBillCancelled;

    fn wire(&self, _ids: &MerchantIds) -> WireRequest {
        let path =
            format!("/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{}/cancel", path_segment(&self.out_bill_no));
        WireRequest { method: Method::Post, path_and_query: path, body: None, wechatpay_serial: None }
    }

    fn parse(body: &[u8]) -> Result<TransferBillCancelled, ParseError> {
        json(body)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillCancelled {
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub state: TransferBillState,
    pub update_time: DateTime<FixedOffset>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::crypto::{encrypt_field, oaep_decrypt};
    use crate::v3::testkeys;
    use crate::v3::verify::KeySet;

    fn ids() -> MerchantIds {
        MerchantIds { mchid: "1900000001".into(), appid: "wxf636efh567hg4356".into() }
    }

    fn create() -> CreateTransferBill {
        CreateTransferBill {
            out_bill_no: "plfk2020042013".into(),
            transfer_scene_id: "1000".into(),
            openid: "o-MYE42l80oelYMDE34nYD456Xoy".into(),
            transfer_amount: Fen::new(400_000),
            transfer_remark: "新会员开通有礼".into(),
            notify_url: Some("https://www.weixin.qq.com/wxpay/pay.php".into()),
            user_recv_perception: Some("现金奖励".into()),
            transfer_scene_report_infos: vec![
                SceneReportInfo { info_type: "活动名称".into(), info_content: "新会员有礼".into() },
                SceneReportInfo {
                    info_type: "奖励说明".into(), info_content: "注册会员抽奖一等奖".into()
                },
            ],
            user_name: None,
        }
    }

    #[test]
    fn create_with_encrypted_name_sends_its_serial() {
        let mut ks = KeySet::new();
        ks.add_public_key_pem(testkeys::PUB_KEY_ID, &testkeys::wechat_public_pem()).unwrap();
        let mut req = create();
        assert!(req.validate().unwrap_err().contains("user_name"));
        req.user_name = Some(encrypt_field(&ks, "张三", 0).unwrap());
        req.validate().unwrap();
        let w = req.wire(&ids());
        assert_eq!(w.path_and_query, "/v3/fund-app/mch-transfer/transfer-bills");
        assert_eq!(w.wechatpay_serial.as_deref(), Some(testkeys::PUB_KEY_ID));
        let v: serde_json::Value = serde_json::from_str(w.body.as_deref().unwrap()).unwrap();
        assert_eq!(v["appid"], "wxf636efh567hg4356");
        assert_eq!(v["transfer_amount"], 400_000);
        assert_eq!(v["transfer_scene_report_infos"][1]["info_type"], "奖励说明");
        let name = v["user_name"].as_str().unwrap();
        assert_eq!(oaep_decrypt(&testkeys::wechat_public_private(), name).unwrap(), "张三");
        // Below 2,000 yuan no name is needed and none is sent.
        let small = CreateTransferBill { transfer_amount: Fen::new(199_999), ..create() };
        small.validate().unwrap();
        let w = small.wire(&ids());
        assert!(w.wechatpay_serial.is_none() && !w.body.unwrap().contains("user_name"));
    }

    #[test]
    fn create_rules() {
        let long = CreateTransferBill { transfer_amount: Fen::new(100), transfer_remark: "字".repeat(33), ..create() };
        assert!(long.validate().is_err());
        let ok = CreateTransferBill { transfer_amount: Fen::new(100), transfer_remark: "字".repeat(32), ..create() };
        ok.validate().unwrap();
        assert!(CreateTransferBill { transfer_amount: Fen::ZERO, ..ok }.validate().is_err());
    }

    #[test]
    fn paths() {
        let q = QueryTransferByOutBillNo { out_bill_no: "plfk2020042013".into() }.wire(&ids());
        assert_eq!(q.path_and_query, "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/plfk2020042013");
        let q =
            QueryTransferByBillNo { transfer_bill_no: "1330000071100999991182020050700019480001".into() }.wire(&ids());
        assert_eq!(
            q.path_and_query,
            "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/1330000071100999991182020050700019480001"
        );
        let c = CancelTransferBill { out_bill_no: "plfk2020042013".into() }.wire(&ids());
        assert_eq!(c.path_and_query, "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/plfk2020042013/cancel");
        assert_eq!((c.method, c.body), (Method::Post, None));
    }

    #[test]
    fn documented_answers_parse() {
        let created = CreateTransferBill::parse(
            br#"{"out_bill_no":"plfk2020042013","transfer_bill_no":"1330000071100999991182020050700019480001",
                "create_time":"2015-05-20T13:29:35.120+08:00","state":"WAIT_USER_CONFIRM",
                "package_info":"affffddafdfafddffda=="}"#,
        )
        .unwrap();
        assert_eq!(created.state, TransferBillState::WaitUserConfirm);
        assert_eq!(created.package_info.as_deref(), Some("affffddafdfafddffda=="));
        let bill = QueryTransferByOutBillNo::parse(
            br#"{"mch_id":"1900001109","out_bill_no":"plfk2020042013","transfer_bill_no":"1330000071100999991182020050700019480001",
                "appid":"wxf636efh567hg4356","state":"SUCCESS","transfer_amount":400000,"transfer_remark":"\u65b0\u4f1a\u5458\u5f00\u901a\u6709\u793c",
                "openid":"o-MYE42l80oelYMDE34nYD456Xoy","create_time":"2015-05-20T13:29:35.120+08:00",
                "update_time":"2015-05-20T13:29:35.120+08:00"}"#,
        )
        .unwrap();
        assert_eq!(bill.transfer_amount, Fen::new(400_000));
        assert!(bill.state.is_final());
        let cancelled = CancelTransferBill::parse(
            br#"{"out_bill_no":"plfk2020042013","transfer_bill_no":"1330000071100999991182020050700019480001",
                "state":"CANCELING","update_time":"2015-05-20T13:29:35.120+08:00"}"#,
        )
        .unwrap();
        assert!(!cancelled.state.is_final());
        assert_eq!(
            serde_json::from_str::<TransferBillState>("\"TRANSFERING\"").unwrap(),
            TransferBillState::Transfering
        );
        assert!(serde_json::from_str::<TransferBillState>("\"TRANSFERRING\"").is_err());
    }
}
