//! The WeChat Pay side of the wire: one handler for every merchant API path. It applies
//! faults, decodes the XML, finds the merchant, checks the client certificate, the sign type
//! and the signature, the appid binding and the required fields — in that order, each
//! failing the way WeChat answers — and then calls the endpoint's business logic.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use openssl::x509::X509;
use wxpay::sign::{self, SignType};
use wxpay::xml::{self, Document, Params};

use crate::faults::FaultKind;
use crate::state::{State, nonce};
use crate::{Effects, Merchant, Shared};

/// The client certificate of a TLS connection, captured in `on_connect`.
#[derive(Clone)]
pub struct PeerCert(pub Option<X509>);

/// Which family an endpoint belongs to: it decides field names and whether answers are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `pay/*`, `secapi/pay/refund`: appid + mch_id, signed answers.
    Pay,
    /// `mmpaymkttransfers/promotion/transfers`: mch_appid + mchid, MD5, unsigned answers.
    Transfer,
    /// Red packets and payout queries: wxappid or appid + mch_id, MD5, unsigned answers.
    Mkt,
}

/// A merchant API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    UnifiedOrder,
    OrderQuery,
    CloseOrder,
    Refund,
    RefundQuery,
    DownloadBill,
    DownloadFundFlow,
    Transfers,
    GetTransferInfo,
    SendRedPack,
    SendGroupRedPack,
    SendMiniProgramHb,
    GetHbInfo,
}

pub const ENDPOINTS: [Endpoint; 13] = [
    Endpoint::UnifiedOrder,
    Endpoint::OrderQuery,
    Endpoint::CloseOrder,
    Endpoint::Refund,
    Endpoint::RefundQuery,
    Endpoint::DownloadBill,
    Endpoint::DownloadFundFlow,
    Endpoint::Transfers,
    Endpoint::GetTransferInfo,
    Endpoint::SendRedPack,
    Endpoint::SendGroupRedPack,
    Endpoint::SendMiniProgramHb,
    Endpoint::GetHbInfo,
];

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::UnifiedOrder => "/pay/unifiedorder",
            Endpoint::OrderQuery => "/pay/orderquery",
            Endpoint::CloseOrder => "/pay/closeorder",
            Endpoint::Refund => "/secapi/pay/refund",
            Endpoint::RefundQuery => "/pay/refundquery",
            Endpoint::DownloadBill => "/pay/downloadbill",
            Endpoint::DownloadFundFlow => "/pay/downloadfundflow",
            Endpoint::Transfers => "/mmpaymkttransfers/promotion/transfers",
            Endpoint::GetTransferInfo => "/mmpaymkttransfers/gettransferinfo",
            Endpoint::SendRedPack => "/mmpaymkttransfers/sendredpack",
            Endpoint::SendGroupRedPack => "/mmpaymkttransfers/sendgroupredpack",
            Endpoint::SendMiniProgramHb => "/mmpaymkttransfers/sendminiprogramhb",
            Endpoint::GetHbInfo => "/mmpaymkttransfers/gethbinfo",
        }
    }

    pub fn from_path(path: &str) -> Option<Endpoint> {
        // WeChat's own simulation environment prefixed paths with /sandboxnew: accept both.
        let path = path.strip_prefix("/sandboxnew").unwrap_or(path);
        ENDPOINTS.into_iter().find(|e| e.path() == path)
    }

    pub fn needs_cert(self) -> bool {
        matches!(
            self,
            Endpoint::Refund
                | Endpoint::DownloadFundFlow
                | Endpoint::Transfers
                | Endpoint::GetTransferInfo
                | Endpoint::SendRedPack
                | Endpoint::SendGroupRedPack
                | Endpoint::SendMiniProgramHb
                | Endpoint::GetHbInfo
        )
    }

    pub fn family(self) -> Family {
        match self {
            Endpoint::Transfers => Family::Transfer,
            Endpoint::GetTransferInfo
            | Endpoint::SendRedPack
            | Endpoint::SendGroupRedPack
            | Endpoint::SendMiniProgramHb
            | Endpoint::GetHbInfo => Family::Mkt,
            _ => Family::Pay,
        }
    }

    /// (appid field, mch_id field).
    fn id_fields(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Transfers => ("mch_appid", "mchid"),
            Endpoint::SendRedPack | Endpoint::SendGroupRedPack | Endpoint::SendMiniProgramHb => ("wxappid", "mch_id"),
            _ => ("appid", "mch_id"),
        }
    }

    /// The sign type the endpoint insists on, if any.
    fn fixed_sign_type(self) -> Option<SignType> {
        match self {
            Endpoint::DownloadFundFlow => Some(SignType::HmacSha256),
            e if e.family() != Family::Pay => Some(SignType::Md5),
            _ => None,
        }
    }

    /// Required fields beyond appid, mch_id, nonce_str and sign.
    fn required(self) -> &'static [&'static str] {
        match self {
            Endpoint::UnifiedOrder => {
                &["body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type"]
            }
            Endpoint::OrderQuery | Endpoint::RefundQuery => &[],
            Endpoint::CloseOrder => &["out_trade_no"],
            Endpoint::Refund => &["out_refund_no", "total_fee", "refund_fee"],
            Endpoint::DownloadBill => &["bill_date", "bill_type"],
            Endpoint::DownloadFundFlow => &["bill_date", "account_type"],
            Endpoint::Transfers => &["partner_trade_no", "openid", "check_name", "amount", "desc", "spbill_create_ip"],
            Endpoint::GetTransferInfo => &["partner_trade_no"],
            Endpoint::SendRedPack => {
                &["mch_billno", "send_name", "re_openid", "total_amount", "total_num", "wishing", "act_name", "remark"]
            }
            Endpoint::SendGroupRedPack => &[
                "mch_billno",
                "send_name",
                "re_openid",
                "total_amount",
                "total_num",
                "amt_type",
                "wishing",
                "act_name",
                "remark",
            ],
            Endpoint::SendMiniProgramHb => &[
                "mch_billno",
                "send_name",
                "re_openid",
                "total_amount",
                "total_num",
                "wishing",
                "act_name",
                "remark",
                "notify_way",
            ],
            Endpoint::GetHbInfo => &["mch_billno", "bill_type"],
        }
    }
}

/// A verified request: the merchant, the fields as received, the sign type that matched.
pub struct Call {
    pub endpoint: Endpoint,
    pub mch: Arc<Merchant>,
    pub appid: String,
    pub params: Params,
    pub sign_type: SignType,
}

impl Call {
    pub fn get(&self, k: &str) -> &str {
        self.params.get(k).map(String::as_str).unwrap_or("")
    }

    /// An optional field: `None` when absent or empty.
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A success answer: `return_code`/`result_code` SUCCESS plus `fields`, with the
    /// family's identity fields, signed with the request's sign type where WeChat signs.
    pub fn ok(&self, fields: Params) -> Reply {
        self.answer("SUCCESS", None, fields)
    }

    /// A business failure: `result_code` FAIL with `err_code` and `err_code_des`.
    pub fn err(&self, code: &str, des: &str) -> Reply {
        self.answer("FAIL", Some((code, des)), Params::new())
    }

    fn answer(&self, result: &str, err: Option<(&str, &str)>, fields: Params) -> Reply {
        let mut p = Params::new();
        p.insert("return_code".into(), "SUCCESS".into());
        p.insert("return_msg".into(), "OK".into());
        p.insert("result_code".into(), result.into());
        if let Some((code, des)) = err {
            p.insert("err_code".into(), code.into());
            p.insert("err_code_des".into(), des.into());
        }
        let (appid_field, mch_field) = self.endpoint.id_fields();
        p.insert(appid_field.into(), self.appid.clone());
        p.insert(mch_field.into(), self.mch.cfg.mch_id.clone());
        p.insert("nonce_str".into(), nonce());
        p.extend(fields);
        if self.endpoint.family() == Family::Pay {
            // WeChat signs pay answers with the request's sign type, without a sign_type field.
            let s = sign::sign(&p, &self.mch.cfg.api_key, self.sign_type);
            p.insert("sign".into(), s);
        }
        Reply::Xml(p)
    }
}

/// What a handler answers before it is turned into HTTP.
pub enum Reply {
    Xml(Params),
    Document(Document),
    Bytes {
        body: Vec<u8>,
        content_type: &'static str,
    },
    Http500,
    /// Close the connection without an answer.
    Drop,
}

/// `return_code` FAIL with a message: the communication-level failure, never signed.
pub fn return_fail(msg: &str) -> Reply {
    let mut p = Params::new();
    p.insert("return_code".into(), "FAIL".into());
    p.insert("return_msg".into(), msg.into());
    Reply::Xml(p)
}

impl Reply {
    pub fn into_http(self) -> HttpResponse {
        match self {
            Reply::Xml(p) => xml_response(xml::encode(&p)),
            Reply::Document(d) => xml_response(xml::encode_document(&d, "hbinfo")),
            Reply::Bytes { body, content_type } => HttpResponse::Ok().content_type(content_type).body(body),
            Reply::Http500 => HttpResponse::build(StatusCode::INTERNAL_SERVER_ERROR)
                .content_type("text/html; charset=utf-8")
                .body("<html><body><h1>500 Internal Server Error</h1></body></html>"),
            Reply::Drop => dropped_connection(),
        }
    }
}

fn xml_response(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").body(body)
}

/// A response whose body stream fails before its first byte: actix-web then closes the
/// connection without flushing the status line, so the client sees the connection end with
/// no answer at all (EOF / reset), which is what "the answer is lost" looks like.
pub fn dropped_connection() -> HttpResponse {
    let failing = futures::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault")) });
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").streaming(failing)
}

/// Certificate errors as WeChat words them (guess: the `CA_ERROR` wording reported by SDK
/// users for payouts and red packets, for every certificate endpoint).
const CA_ERROR_MSG: &str = "证书出错，请登录微信支付商户平台下载证书";

/// The single entry point for every WeChat Pay path.
pub async fn handle(req: HttpRequest, body: Bytes, shared: Data<Arc<Shared>>) -> HttpResponse {
    if req.path() == "/sandboxnew/pay/getsignkey" {
        return getsignkey(&shared, &body).into_http();
    }
    let Some(endpoint) = Endpoint::from_path(req.path()) else {
        return HttpResponse::NotFound().finish();
    };
    let fault = shared.lock().faults.take(endpoint.path());
    match &fault {
        Some(FaultKind::Http500) => return Reply::Http500.into_http(),
        Some(FaultKind::Drop) => return Reply::Drop.into_http(),
        Some(FaultKind::Delay { delay_ms }) => tokio::time::sleep(std::time::Duration::from_millis(*delay_ms)).await,
        _ => {}
    }
    let peer = req.conn_data::<PeerCert>().and_then(|p| p.0.clone());
    let mut effects = Effects::default();
    let reply = {
        let mut st = shared.lock();
        process(&shared, &mut st, &mut effects, endpoint, &body, peer.as_ref(), fault.as_ref())
    };
    crate::apply(shared.get_ref(), effects);
    match fault {
        Some(FaultKind::LostAnswer) => Reply::Drop.into_http(),
        _ => reply.into_http(),
    }
}

fn process(
    shared: &Shared,
    st: &mut State,
    fx: &mut Effects,
    endpoint: Endpoint,
    body: &[u8],
    peer: Option<&X509>,
    fault: Option<&FaultKind>,
) -> Reply {
    let params = match xml::decode(body) {
        Ok(p) => p,
        // Guess at WeChat's wording for an unreadable body.
        Err(_) => return return_fail("XML格式错误"),
    };
    let (appid_field, mch_field) = endpoint.id_fields();
    let mch_id = params.get(mch_field).map(String::as_str).unwrap_or("");
    if mch_id.is_empty() {
        return return_fail(&format!("缺少参数{mch_field}"));
    }
    let Some(mch) = shared.merchants.get(mch_id).cloned() else {
        // Guess: an unknown merchant number is reported at the communication level.
        return return_fail("mch_id参数格式错误");
    };
    if endpoint.needs_cert() {
        if let Err(problem) = shared.pki.check_client(peer, mch_id) {
            tracing::info!(mch_id, path = endpoint.path(), %problem, "certificate refused");
            return cert_error(endpoint);
        }
    }
    let Some(sent_sign) = params.get("sign").filter(|s| !s.is_empty()) else {
        return return_fail("缺少参数sign");
    };
    let declared = params.get("sign_type").map(String::as_str).filter(|s| !s.is_empty());
    let sign_type = match (endpoint.fixed_sign_type(), declared) {
        (Some(fixed), Some(d)) if d != fixed.as_str() => return return_fail("sign_type参数错误"),
        (Some(fixed), _) => fixed,
        (None, Some(d)) => match SignType::parse(d) {
            Some(t) => t,
            None => return return_fail("sign_type参数错误"),
        },
        (None, None) => SignType::Md5,
    };
    if sent_sign.len() != sign_type.hex_len() || sign::verify_as(&params, &mch.cfg.api_key, sign_type).is_err() {
        return sign_error(endpoint);
    }
    if params.get("nonce_str").is_none_or(|n| n.is_empty() || n.chars().count() > 32) {
        return return_fail("nonce_str参数错误");
    }
    let appid = params.get(appid_field).cloned().unwrap_or_default();
    let call = Call { endpoint, mch: mch.clone(), appid, params, sign_type };
    if call.appid.is_empty() {
        return call.err("LACK_PARAMS", &format!("缺少参数{appid_field}"));
    }
    if !mch.cfg.appids.contains(&call.appid) {
        return call.err("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配");
    }
    match fault {
        Some(FaultKind::Error { err_code, err_code_des }) => {
            return call.err(err_code, err_code_des.as_deref().unwrap_or("系统繁忙,请稍后再试."));
        }
        Some(FaultKind::ReturnFail { return_msg }) => return return_fail(return_msg),
        _ => {}
    }
    if let Some(missing) = endpoint.required().iter().find(|f| call.opt(f).is_none()) {
        return call.err("LACK_PARAMS", &format!("缺少参数{missing}"));
    }
    crate::api::dispatch(shared, st, fx, &call)
}

fn cert_error(endpoint: Endpoint) -> Reply {
    match endpoint.family() {
        Family::Pay => return_fail(CA_ERROR_MSG),
        Family::Transfer | Family::Mkt => {
            let mut p = Params::new();
            p.insert("return_code".into(), "FAIL".into());
            p.insert("return_msg".into(), CA_ERROR_MSG.into());
            p.insert("result_code".into(), "FAIL".into());
            p.insert("err_code".into(), "CA_ERROR".into());
            p.insert("err_code_des".into(), CA_ERROR_MSG.into());
            Reply::Xml(p)
        }
    }
}

/// WeChat's famous 签名错误: return_code FAIL for pay endpoints; payouts and red packets
/// also carry err_code SIGN_ERROR (guess from SDK error tables).
fn sign_error(endpoint: Endpoint) -> Reply {
    match endpoint.family() {
        Family::Pay => return_fail("签名错误"),
        Family::Transfer | Family::Mkt => {
            let mut p = Params::new();
            p.insert("return_code".into(), "FAIL".into());
            p.insert("return_msg".into(), "签名错误".into());
            p.insert("result_code".into(), "FAIL".into());
            p.insert("err_code".into(), "SIGN_ERROR".into());
            p.insert("err_code_des".into(), "签名错误".into());
            Reply::Xml(p)
        }
    }
}

/// Parses a positive fen amount field, answering PARAM_ERROR otherwise.
pub fn positive_fen(call: &Call, field: &str) -> Result<wxpay::Fen, Reply> {
    match wxpay::Fen::parse_fen(call.get(field)) {
        Ok(f) if f.is_positive() => Ok(f),
        _ => Err(call.err("PARAM_ERROR", &format!("{field}参数错误"))),
    }
}

/// A helper to build answer fields.
pub fn fields<const N: usize>(pairs: [(&str, String); N]) -> Params {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// WeChat's old simulation environment first fetched a "sandbox key" (SDKs with a sandbox
/// switch still do). The sandbox verifies with the merchant's own key, so it hands that back.
fn getsignkey(shared: &Shared, body: &[u8]) -> Reply {
    let Ok(params) = xml::decode(body) else {
        return return_fail("XML格式错误");
    };
    let Some(mch) = params.get("mch_id").and_then(|m| shared.merchants.get(m)) else {
        return return_fail("mch_id参数格式错误");
    };
    if sign::verify_as(&params, &mch.cfg.api_key, SignType::Md5).is_err() {
        return return_fail("签名错误");
    }
    let mut p = Params::new();
    p.insert("return_code".into(), "SUCCESS".into());
    p.insert("return_msg".into(), "ok".into());
    p.insert("mch_id".into(), mch.cfg.mch_id.clone());
    p.insert("sandbox_signkey".into(), mch.cfg.api_key.expose().to_owned());
    Reply::Xml(p)
}
