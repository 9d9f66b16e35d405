//! Red packets: `sendredpack`, `sendgroupredpack` (amt_type ALL_RAND, total_num ≥ 3, no
//! client_ip), `sendminiprogramhb` (notify_way MINI_PROGRAM_JSAPI, answers a `package` for
//! `wx.sendBizRedPacket`) and `gethbinfo` (bill_type MCHT). All under
//! `mmpaymkttransfers/`, client certificate, MD5 only, ids `wxappid`/`mch_id` (gethbinfo:
//! `appid`/`mch_id`).
//!
//! Outcome rules (codes in [`crate::outcome::final_codes`]):
//! - send*: SYSTEMERROR (the same mch_billno is safe: only one packet is ever sent),
//!   PROCESSING (query after a while), FATAL_ERROR, a numeric err_code ("系统繁忙", also
//!   under `return_code` FAIL) and unrecognised codes are Unknown; SEND_FAILED (a new
//!   number may be used), NOTENOUGH, MONEY_LIMIT, SENDNUM_LIMIT, SECOND_OVER_LIMITED,
//!   FREQ_LIMIT, OPENID_ERROR, … are Failed.
//! - gethbinfo: NOT_FOUND is Failed; SYSTEMERROR Unknown; an unknown `status` is Unknown.

use super::{Encode, Fields, FromResponse, ParseError, Request, put, put_opt};
use crate::Fen;
use crate::outcome::Endpoint;
use crate::xml::{Document, Params};

/// `scene_id`: required above 200 yuan (some copies of the docs: also below 1 yuan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SceneId {
    Product1,
    Product2,
    Product3,
    Product4,
    Product5,
    Product6,
    Product7,
    Product8,
}

impl SceneId {
    pub fn as_str(self) -> &'static str {
        match self {
            SceneId::Product1 => "PRODUCT_1",
            SceneId::Product2 => "PRODUCT_2",
            SceneId::Product3 => "PRODUCT_3",
            SceneId::Product4 => "PRODUCT_4",
            SceneId::Product5 => "PRODUCT_5",
            SceneId::Product6 => "PRODUCT_6",
            SceneId::Product7 => "PRODUCT_7",
            SceneId::Product8 => "PRODUCT_8",
        }
    }
}

/// The fields the three send calls share. (Nine plain fields read better positionally here
/// than a one-use struct would.)
#[allow(clippy::too_many_arguments)]
fn put_common(
    p: &mut Params,
    mch_billno: &str,
    send_name: &str,
    re_openid: &str,
    total_amount: Fen,
    wishing: &str,
    act_name: &str,
    remark: &str,
    scene_id: Option<SceneId>,
) {
    put(p, "mch_billno", mch_billno);
    put(p, "send_name", send_name);
    put(p, "re_openid", re_openid);
    put(p, "total_amount", total_amount.get().to_string());
    put(p, "wishing", wishing);
    put(p, "act_name", act_name);
    put(p, "remark", remark);
    if let Some(s) = scene_id {
        put(p, "scene_id", s.as_str());
    }
}

/// `mmpaymkttransfers/sendredpack` (one packet, total_num=1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRedpackRequest {
    pub mch_billno: String,
    pub send_name: String,
    pub re_openid: String,
    pub total_amount: Fen,
    pub wishing: String,
    pub client_ip: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: Option<SceneId>,
    pub risk_info: Option<String>,
}

impl Encode for SendRedpackRequest {
    const ENDPOINT: Endpoint = Endpoint::SendRedpack;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put_common(
            &mut p,
            &self.mch_billno,
            &self.send_name,
            &self.re_openid,
            self.total_amount,
            &self.wishing,
            &self.act_name,
            &self.remark,
            self.scene_id,
        );
        put(&mut p, "total_num", "1");
        put(&mut p, "client_ip", &*self.client_ip);
        put_opt(&mut p, "risk_info", &self.risk_info);
        p
    }

    fn validate(&self) -> Result<(), String> {
        positive(self.total_amount)
    }
}

impl Request for SendRedpackRequest {
    type Response = RedpackResponse;
}

fn positive(f: Fen) -> Result<(), String> {
    if f.is_positive() { Ok(()) } else { Err("total_amount must be positive".into()) }
}

/// `mmpaymkttransfers/sendgroupredpack` (fission packet shared among `total_num` ≥ 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendGroupRedpackRequest {
    pub mch_billno: String,
    pub send_name: String,
    pub re_openid: String,
    pub total_amount: Fen,
    pub total_num: u32,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: Option<SceneId>,
    pub risk_info: Option<String>,
}

impl Encode for SendGroupRedpackRequest {
    const ENDPOINT: Endpoint = Endpoint::SendGroupRedpack;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put_common(
            &mut p,
            &self.mch_billno,
            &self.send_name,
            &self.re_openid,
            self.total_amount,
            &self.wishing,
            &self.act_name,
            &self.remark,
            self.scene_id,
        );
        put(&mut p, "total_num", self.total_num.to_string());
        put(&mut p, "amt_type", "ALL_RAND");
        put_opt(&mut p, "risk_info", &self.risk_info);
        p
    }

    fn validate(&self) -> Result<(), String> {
        if self.total_num < 3 {
            return Err("sendgroupredpack needs total_num >= 3".into());
        }
        positive(self.total_amount)
    }
}

impl Request for SendGroupRedpackRequest {
    type Response = RedpackResponse;
}

/// `mmpaymkttransfers/sendminiprogramhb`: the user opens it in the mini-program via
/// `wx.sendBizRedPacket` with the returned `package` (see [`crate::jsapi`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMiniProgramHbRequest {
    pub mch_billno: String,
    pub send_name: String,
    pub re_openid: String,
    pub total_amount: Fen,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: Option<SceneId>,
}

impl Encode for SendMiniProgramHbRequest {
    const ENDPOINT: Endpoint = Endpoint::SendMiniProgramHb;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put_common(
            &mut p,
            &self.mch_billno,
            &self.send_name,
            &self.re_openid,
            self.total_amount,
            &self.wishing,
            &self.act_name,
            &self.remark,
            self.scene_id,
        );
        put(&mut p, "total_num", "1");
        put(&mut p, "notify_way", "MINI_PROGRAM_JSAPI");
        p
    }

    fn validate(&self) -> Result<(), String> {
        positive(self.total_amount)
    }
}

impl Request for SendMiniProgramHbRequest {
    type Response = SendMiniProgramHbResponse;
}

/// The answer of sendredpack and sendgroupredpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedpackResponse {
    pub mch_billno: String,
    pub re_openid: Option<String>,
    pub total_amount: Fen,
    /// WeChat's red-packet number.
    pub send_listid: String,
    /// As WeChat wrote it (`yyyyMMddHHmmss`); informational only.
    pub send_time: Option<String>,
}

impl FromResponse for RedpackResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        Ok(RedpackResponse {
            mch_billno: f.req("mch_billno")?,
            re_openid: f.opt("re_openid"),
            total_amount: f.fen("total_amount")?,
            send_listid: f.req("send_listid")?,
            send_time: f.opt("send_time"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMiniProgramHbResponse {
    pub mch_billno: String,
    pub re_openid: Option<String>,
    pub total_amount: Fen,
    pub send_listid: String,
    /// Raw, not yet URL-encoded; [`crate::jsapi::send_biz_red_packet_params`] encodes it.
    pub package: String,
}

impl FromResponse for SendMiniProgramHbResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        Ok(SendMiniProgramHbResponse {
            mch_billno: f.req("mch_billno")?,
            re_openid: f.opt("re_openid"),
            total_amount: f.fen("total_amount")?,
            send_listid: f.req("send_listid")?,
            package: f.req("package")?,
        })
    }
}

/// `mmpaymkttransfers/gethbinfo` by our number (`bill_type=MCHT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetHbInfoRequest {
    pub mch_billno: String,
}

impl Encode for GetHbInfoRequest {
    const ENDPOINT: Endpoint = Endpoint::GetHbInfo;

    fn to_params(&self) -> Params {
        let mut p = Params::new();
        put(&mut p, "mch_billno", &*self.mch_billno);
        put(&mut p, "bill_type", "MCHT");
        p
    }
}

impl Request for GetHbInfoRequest {
    type Response = GetHbInfoResponse;
}

/// `status` of gethbinfo (`RFUND_ING` is WeChat's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedpackStatus {
    Sending,
    Sent,
    Failed,
    Received,
    /// Unclaimed after 24 h, being returned to the merchant.
    RfundIng,
    /// Returned to the merchant.
    Refund,
}

impl RedpackStatus {
    pub fn parse(s: &str) -> Option<RedpackStatus> {
        Some(match s {
            "SENDING" => RedpackStatus::Sending,
            "SENT" => RedpackStatus::Sent,
            "FAILED" => RedpackStatus::Failed,
            "RECEIVED" => RedpackStatus::Received,
            "RFUND_ING" => RedpackStatus::RfundIng,
            "REFUND" => RedpackStatus::Refund,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RedpackStatus::Sending => "SENDING",
            RedpackStatus::Sent => "SENT",
            RedpackStatus::Failed => "FAILED",
            RedpackStatus::Received => "RECEIVED",
            RedpackStatus::RfundIng => "RFUND_ING",
            RedpackStatus::Refund => "REFUND",
        }
    }
}

/// One receiver in `hblist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbInfo {
    pub openid: String,
    pub amount: Fen,
    /// As WeChat wrote it (`yyyy-MM-dd HH:mm:ss`).
    pub rcv_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetHbInfoResponse {
    pub mch_billno: String,
    pub detail_id: Option<String>,
    pub status: RedpackStatus,
    pub send_type: Option<String>,
    pub hb_type: Option<String>,
    pub total_num: Option<u32>,
    pub total_amount: Fen,
    pub reason: Option<String>,
    pub send_time: Option<String>,
    pub refund_time: Option<String>,
    pub refund_amount: Option<Fen>,
    pub wishing: Option<String>,
    pub remark: Option<String>,
    pub act_name: Option<String>,
    pub hblist: Vec<HbInfo>,
}

impl FromResponse for GetHbInfoResponse {
    fn from_document(doc: &Document) -> Result<Self, ParseError> {
        let f = Fields(&doc.fields);
        let s = f.req("status")?;
        let mut hblist = Vec::new();
        for item in doc.lists.get("hblist").map(Vec::as_slice).unwrap_or(&[]) {
            let i = Fields(item);
            hblist.push(HbInfo { openid: i.req("openid")?, amount: i.fen("amount")?, rcv_time: i.opt("rcv_time") });
        }
        Ok(GetHbInfoResponse {
            mch_billno: f.req("mch_billno")?,
            detail_id: f.opt("detail_id"),
            status: RedpackStatus::parse(&s).ok_or(ParseError::UnknownState { field: "status", value: s })?,
            send_type: f.opt("send_type"),
            hb_type: f.opt("hb_type"),
            total_num: match f.opt("total_num") {
                None => None,
                Some(v) => Some(v.parse().map_err(|_| ParseError::Invalid { field: "total_num".into(), value: v })?),
            },
            total_amount: f.fen("total_amount")?,
            reason: f.opt("reason"),
            send_time: f.opt("send_time"),
            refund_time: f.opt("refund_time"),
            refund_amount: f.opt_fen("refund_amount")?,
            wishing: f.opt("wishing"),
            remark: f.opt("remark"),
            act_name: f.opt("act_name"),
            hblist,
        })
    }
}
