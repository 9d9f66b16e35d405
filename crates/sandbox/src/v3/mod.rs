//! WeChat Pay APIv3 on the sandbox: every `/v3/…` path, one handler.
//!
//! Each request goes through, in order: the route (404 `NOT_FOUND` for a path WeChat does
//! not have), faults for the path's template, the `Authorization` check (401 `SIGN_ERROR`
//! with WeChat's message: merchant, merchant serial, timestamp window, signature over the
//! method, path and query *as received*, and the raw body), then the business logic.
//! Answers are JSON signed with `Wechatpay-Timestamp/Nonce/Signature/Serial` by the key the
//! merchant's [`V3Mode`](crate::config::V3Mode) selects ([`keys::V3Keys::signer`]); errors
//! are `{"code","message"}` with WeChat's HTTP status, also signed.
//!
//! Bills: `/v3/bill/tradebill` and `/v3/bill/fundflowbill` answer a link to
//! [`BILL_DOWNLOAD_PATH`] with the SHA1 of the same text v2's `downloadbill` /
//! `downloadfundflow` serve; the download is a signed GET with an unsigned file answer.
//!
//! State is shared with v2: v3 orders live in the same order table (the payer control
//! endpoint pays them, v2 `orderquery` sees them, bills list them); refunds likewise.
//!
//! Guesses (WeChat does not document them; each is repeated where the code relies on it):
//! - signature timestamps are real time, not the sandbox clock: clients sign with and
//!   verify against their real clocks, and moving the sandbox clock must not break that;
//! - WeChat's messages for the several SIGN_ERROR causes are the ones SDK users report;
//!   the `detail.sign_information` block (what WeChat says it verified) is shaped like the
//!   one in those reports;
//! - unknown paths answer 404 `NOT_FOUND`, unreadable JSON 400 `PARAM_ERROR`.

mod bills;
pub mod keys;
pub(crate) mod notify;
mod pay;
pub(crate) mod transfer;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};
use wxpay::v3::sign::{Authorization, Method, RequestCheckError, request_message, verify_request};
use wxpay::v3::verify::{AnswerSigner, DEFAULT_WINDOW_SECS, SignedHeaders, normalize_serial};

use crate::faults::FaultKind;
use crate::state::{State, nonce};
use crate::{Effects, Merchant, Shared};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v3/{tail:.*}").to(handle));
}

/// Where the download URLs of v3 bills point (a signed GET, like WeChat's).
pub const BILL_DOWNLOAD_PATH: &str = "/v3/billdownload/file";

/// Every v3 path the sandbox serves, with the path parameters it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Jsapi,
    QueryByOutTradeNo(String),
    QueryById(String),
    Close(String),
    CreateRefund,
    QueryRefund(String),
    TradeBill,
    FundFlowBill,
    BillDownload,
    CreateTransfer,
    TransferByOutBillNo(String),
    TransferByBillNo(String),
    CancelTransfer(String),
    Certificates,
}

impl Route {
    /// Reads the method and the path (segments percent-decoded).
    pub fn parse(method: &actix_web::http::Method, path: &str) -> Option<Route> {
        let segs: Vec<String> = path.strip_prefix("/v3/")?.split('/').map(percent_decode).collect::<Option<_>>()?;
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        // (method, path) → route; the arms are long because the paths are.
        let post = method == actix_web::http::Method::POST;
        let get = method == actix_web::http::Method::GET;
        let r = match (s.as_slice(), post, get) {
            (["pay", "transactions", "jsapi"], true, _) => Route::Jsapi,
            (["pay", "transactions", "out-trade-no", no], _, true) => Route::QueryByOutTradeNo((*no).into()),
            (["pay", "transactions", "id", id], _, true) => Route::QueryById((*id).into()),
            (["pay", "transactions", "out-trade-no", no, "close"], true, _) => Route::Close((*no).into()),
            (["refund", "domestic", "refunds"], true, _) => Route::CreateRefund,
            (["refund", "domestic", "refunds", no], _, true) => Route::QueryRefund((*no).into()),
            (["certificates"], _, true) => Route::Certificates,
            (["bill", "tradebill"], _, true) => Route::TradeBill,
            (["bill", "fundflowbill"], _, true) => Route::FundFlowBill,
            (["billdownload", "file"], _, true) => Route::BillDownload,
            (["fund-app", "mch-transfer", "transfer-bills"], true, _) => Route::CreateTransfer,
            (["fund-app", "mch-transfer", "transfer-bills", "out-bill-no", no], _, true) => {
                Route::TransferByOutBillNo((*no).into())
            }
            (["fund-app", "mch-transfer", "transfer-bills", "transfer-bill-no", no], _, true) => {
                Route::TransferByBillNo((*no).into())
            }
            (["fund-app", "mch-transfer", "transfer-bills", "out-bill-no", no, "cancel"], true, _) => {
                Route::CancelTransfer((*no).into())
            }
            _ => return None,
        };
        if s.iter().any(|x| x.is_empty()) {
            return None;
        }
        Some(r)
    }

    /// The endpoint (its template names the route in faults).
    pub fn endpoint(&self) -> wxpay::v3::Endpoint {
        use wxpay::v3::Endpoint as E;
        match self {
            Route::Jsapi => E::JsapiPrepay,
            Route::QueryByOutTradeNo(_) => E::QueryByOutTradeNo,
            Route::QueryById(_) => E::QueryByTransactionId,
            Route::Close(_) => E::CloseOrder,
            Route::CreateRefund => E::CreateRefund,
            Route::QueryRefund(_) => E::QueryRefund,
            Route::Certificates => E::Certificates,
            Route::TradeBill => E::TradeBill,
            Route::FundFlowBill => E::FundFlowBill,
            Route::BillDownload => E::DownloadBill,
            Route::CreateTransfer => E::CreateTransferBill,
            Route::TransferByOutBillNo(_) => E::QueryTransferByOutBillNo,
            Route::TransferByBillNo(_) => E::QueryTransferByBillNo,
            Route::CancelTransfer(_) => E::CancelTransferBill,
        }
    }

    /// The transfer-bill calls, which share WeChat's per-merchant rate limit.
    pub fn is_transfer(&self) -> bool {
        matches!(
            self,
            Route::CreateTransfer
                | Route::TransferByOutBillNo(_)
                | Route::TransferByBillNo(_)
                | Route::CancelTransfer(_)
        )
    }

    pub fn fault_path(&self) -> &'static str {
        match self {
            Route::BillDownload => BILL_DOWNLOAD_PATH,
            r => r.endpoint().template(),
        }
    }
}

/// The v3 paths faults may name: the served endpoints' templates.
pub const FAULT_PATHS: [&str; 14] = [
    "/v3/fund-app/mch-transfer/transfer-bills",
    "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}",
    "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}",
    "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel",
    "/v3/bill/tradebill",
    "/v3/bill/fundflowbill",
    BILL_DOWNLOAD_PATH,
    "/v3/pay/transactions/jsapi",
    "/v3/pay/transactions/out-trade-no/{out_trade_no}",
    "/v3/pay/transactions/id/{transaction_id}",
    "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
    "/v3/refund/domestic/refunds",
    "/v3/refund/domestic/refunds/{out_refund_no}",
    "/v3/certificates",
];

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A v3 answer before it is signed and sent.
#[derive(Debug, Clone)]
pub struct V3Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Bill files are not signed; everything else is.
    pub signed: bool,
}

impl V3Reply {
    pub fn json(status: StatusCode, v: &Value) -> V3Reply {
        V3Reply { status, body: v.to_string().into_bytes(), content_type: "application/json", signed: true }
    }

    pub fn ok(v: &Value) -> V3Reply {
        V3Reply::json(StatusCode::OK, v)
    }

    pub fn no_content() -> V3Reply {
        V3Reply { status: StatusCode::NO_CONTENT, body: Vec::new(), content_type: "application/json", signed: true }
    }

    /// WeChat's error shape `{"code","message"}`.
    pub fn error(status: StatusCode, code: &str, message: &str) -> V3Reply {
        V3Reply::json(status, &json!({ "code": code, "message": message }))
    }

    pub fn param_error(message: &str) -> V3Reply {
        V3Reply::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }

    /// Signs (when `sign` and the answer is a signed kind) and builds the HTTP answer.
    fn into_http(self, signer: Option<&AnswerSigner>, sign: bool) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        b.insert_header(("Request-ID", format!("sandbox-{}", nonce())));
        if let (Some(s), true, true) = (signer, sign, self.signed) {
            for (k, v) in sign_now(s, &self.body).pairs() {
                b.insert_header((k, v.to_owned()));
            }
            b.insert_header(SIGNATURE_TYPE);
        }
        if self.status == StatusCode::NO_CONTENT {
            return b.finish();
        }
        b.content_type(self.content_type).body(self.body)
    }
}

/// WeChat sends the algorithm beside the signature; some SDKs (wechatpayv3) refuse an
/// answer or notification without it.
pub const SIGNATURE_TYPE: (&str, &str) = ("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048");

/// WeChat's signature headers over `body`, at real time now (not the sandbox clock:
/// receivers check the timestamp against their own real clocks).
pub fn sign_now(signer: &AnswerSigner, body: &[u8]) -> SignedHeaders {
    signer.sign(body, chrono::Utc::now().timestamp(), &nonce())
}

/// HTTP status WeChat uses with an error code (for the `error` fault).
fn status_for(code: &str) -> StatusCode {
    match code {
        "SYSTEM_ERROR" | "SYSTEMERROR" | "BANK_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
        "FREQUENCY_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
        "SIGN_ERROR" => StatusCode::UNAUTHORIZED,
        "NO_AUTH" | "NOT_ENOUGH" | "ORDERPAID" | "OUT_TRADE_NO_USED" => StatusCode::FORBIDDEN,
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" | "RESOURCE_NOT_EXISTS" | "NOT_FOUND" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

type S = Data<Arc<Shared>>;

/// The single entry point for every `/v3/…` path.
pub(crate) async fn handle(req: HttpRequest, body: Bytes, shared: S) -> HttpResponse {
    let Some(route) = Route::parse(req.method(), req.path()) else {
        return V3Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", "请求的资源不存在").into_http(None, false);
    };
    let fault = shared.lock().faults.take(route.fault_path());
    match &fault {
        Some(FaultKind::Drop) => return crate::wire::dropped_connection(),
        Some(FaultKind::Delay { delay_ms }) => tokio::time::sleep(std::time::Duration::from_millis(*delay_ms)).await,
        _ => {}
    }
    let mch = match authenticate(&shared, &req, &body) {
        Ok(m) => m,
        Err((m, reply)) => return reply.into_http(m.as_ref().map(|m| m.v3.signer()).as_ref(), true),
    };
    let signer = &mch.v3.signer();
    match &fault {
        // WeChat's 500 is its signed SYSTEM_ERROR answer; nothing happened.
        Some(FaultKind::Http500) => {
            return V3Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误")
                .into_http(Some(signer), true);
        }
        Some(FaultKind::Error { err_code, err_code_des }) => {
            let msg = err_code_des.as_deref().unwrap_or("系统繁忙，请稍后重试");
            return V3Reply::error(status_for(err_code), err_code, msg).into_http(Some(signer), true);
        }
        _ => {}
    }
    if route.is_transfer() && !shared.lock().within_transfer_rate(&mch) {
        return V3Reply::error(StatusCode::TOO_MANY_REQUESTS, "FREQUENCY_LIMITED", "请求过于频繁，请稍后再试")
            .into_http(Some(signer), true);
    }
    let mut fx = Effects::default();
    let reply = {
        let mut st = shared.lock();
        dispatch(&shared, &mut st, &mut fx, &mch, &route, &req, &body)
    };
    crate::apply(shared.get_ref(), fx);
    match fault {
        Some(FaultKind::LostAnswer) => crate::wire::dropped_connection(),
        Some(FaultKind::Unsigned) => reply.into_http(Some(signer), false),
        Some(FaultKind::CorruptBill) if reply.status == StatusCode::OK => {
            let body = bills::corrupt(&reply.body);
            V3Reply { body, ..reply }.into_http(Some(signer), true)
        }
        _ => reply.into_http(Some(signer), true),
    }
}

/// What the handlers get: the merchant, the parsed JSON body (POST) and the query.
pub struct V3Call<'a> {
    pub mch: &'a Merchant,
    pub body: Value,
    pub query: &'a str,
    pub wechatpay_serial: Option<&'a str>,
    /// `scheme://host` the request came to (bill download URLs point back at it).
    pub base_url: String,
}

impl V3Call<'_> {
    /// A query parameter (not decoded: WeChat's numbers are plain ASCII).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn mch_id(&self) -> &str {
        &self.mch.cfg.mch_id
    }
}

fn dispatch(
    shared: &Shared,
    st: &mut State,
    fx: &mut Effects,
    mch: &Merchant,
    route: &Route,
    req: &HttpRequest,
    body: &[u8],
) -> V3Reply {
    let body = if req.method() == actix_web::http::Method::POST {
        // Cancel has no body: an empty one reads as `{}`.
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.is_object() => v,
            // Guess at WeChat's wording for a body that is not a JSON object.
            _ => return V3Reply::param_error("请求体不是合法的JSON对象"),
        }
    } else {
        Value::Null
    };
    let serial = req.headers().get("Wechatpay-Serial").and_then(|v| v.to_str().ok());
    let base_url = {
        let ci = req.connection_info();
        format!("{}://{}", ci.scheme(), ci.host())
    };
    let call = V3Call { mch, body, query: req.query_string(), wechatpay_serial: serial, base_url };
    match route {
        Route::Jsapi => pay::jsapi(st, &call),
        Route::QueryByOutTradeNo(no) => pay::query(st, &call, pay::OrderRef::OutTradeNo(no)),
        Route::QueryById(id) => pay::query(st, &call, pay::OrderRef::TransactionId(id)),
        Route::Close(no) => pay::close(st, &call, no),
        Route::CreateRefund => pay::refund(shared, st, fx, &call),
        Route::QueryRefund(no) => pay::refund_query(shared, st, fx, &call, no),
        Route::Certificates => certificates(mch),
        Route::TradeBill => bills::trade_bill(st, &call),
        Route::FundFlowBill => bills::fund_flow_bill(st, &call),
        Route::BillDownload => bills::download(st, &call),
        Route::CreateTransfer => transfer::create(shared, st, fx, &call),
        Route::TransferByOutBillNo(no) => transfer::query(shared, st, fx, &call, transfer::BillRef::OutBillNo(no)),
        Route::TransferByBillNo(no) => transfer::query(shared, st, fx, &call, transfer::BillRef::BillNo(no)),
        Route::CancelTransfer(no) => transfer::cancel(shared, st, fx, &call, no),
    }
}

/// `GET /v3/certificates`: the platform certificate encrypted with the APIv3 key; 404
/// `RESOURCE_NOT_EXISTS` for public-key merchants (WeChat's answer for merchants that never
/// had platform certificates).
fn certificates(mch: &Merchant) -> V3Reply {
    if mch.v3.mode == crate::config::V3Mode::PublicKey {
        return V3Reply::error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥",
        );
    }
    match wxpay::v3::client::certificates_answer(&mch.v3.platform_certs(), &mch.cfg.api_v3_key, |_| {
        nonce()[..12].to_owned()
    }) {
        Ok(body) => {
            V3Reply { status: StatusCode::OK, body: body.into_bytes(), content_type: "application/json", signed: true }
        }
        Err(_) => V3Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误"),
    }
}

type AuthFailure = (Option<Arc<Merchant>>, V3Reply);

fn sign_error(message: &str, detail: Option<Value>) -> V3Reply {
    let mut v = json!({ "code": "SIGN_ERROR", "message": message });
    if let Some(d) = detail {
        v["detail"] = d;
    }
    V3Reply::json(StatusCode::UNAUTHORIZED, &v)
}

/// Checks the `Authorization` header against the request as received. WeChat's messages
/// (guesses from SDK users' reports): a missing or malformed header, an unknown mchid, a
/// serial that is not the merchant's certificate, an expired timestamp, a bad signature.
fn authenticate(shared: &Shared, req: &HttpRequest, body: &[u8]) -> Result<Arc<Merchant>, AuthFailure> {
    const MALFORMED: &str = "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》";
    let header = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let auth = Authorization::parse(header).map_err(|_| (None, sign_error(MALFORMED, None)))?;
    let Some(mch) = shared.merchants.get(&auth.mchid).cloned() else {
        return Err((None, sign_error("商户号不存在或Authorization中的mchid有误", None)));
    };
    let fail = |r: V3Reply| (Some(mch.clone()), r);
    if normalize_serial(&auth.serial_no) != normalize_serial(&mch.v3.merchant_serial) {
        return Err(fail(sign_error("商户证书序列号有误。请使用签名私钥匹配的证书序列号", None)));
    }
    let method = if req.method() == actix_web::http::Method::POST { Method::Post } else { Method::Get };
    let path_and_query = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), |p| p.as_str().to_owned());
    let Ok(body) = std::str::from_utf8(body) else {
        return Err(fail(V3Reply::param_error("请求体不是UTF-8编码")));
    };
    let now = chrono::Utc::now().timestamp();
    match verify_request(header, method, &path_and_query, body, &mch.v3.merchant_public, now, DEFAULT_WINDOW_SECS) {
        Ok(_) => Ok(mch),
        Err(RequestCheckError::Header(_)) => Err(fail(sign_error(MALFORMED, None))),
        Err(RequestCheckError::Stale { .. }) => {
            Err(fail(sign_error("Http头Authorization中的timestamp与当前时间相差超过5分钟，请检查系统时间", None)))
        }
        Err(RequestCheckError::BadSignature { .. }) => {
            let message = request_message(method, &path_and_query, auth.timestamp, &auth.nonce_str, body);
            let truncated: String = message.chars().take(200).collect();
            let detail = json!({
                "field": "signature",
                "location": "authorization",
                "detail": { "issue": "sign not match" },
                "sign_information": {
                    "method": method.as_str(),
                    "url": path_and_query,
                    "sign_message_length": message.len(),
                    "truncated_sign_message": truncated,
                },
            });
            Err(fail(sign_error("签名错误，请检查后再试", Some(detail))))
        }
    }
}

impl State {
    /// Counts one transfer-bill call; false when the merchant is over its per-second limit
    /// (counted in real seconds: the limit protects WeChat's servers, not its clock).
    fn within_transfer_rate(&mut self, mch: &Merchant) -> bool {
        let now = chrono::Utc::now().timestamp();
        let e = self.transfer_rate.entry(mch.cfg.mch_id.clone()).or_insert((now, 0));
        if e.0 != now {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= mch.cfg.limits.transfer_bill_calls_per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_with_decoded_segments() {
        let get = actix_web::http::Method::GET;
        let post = actix_web::http::Method::POST;
        assert_eq!(Route::parse(&post, "/v3/pay/transactions/jsapi"), Some(Route::Jsapi));
        assert_eq!(Route::parse(&get, "/v3/pay/transactions/jsapi"), None);
        assert_eq!(
            Route::parse(&get, "/v3/pay/transactions/out-trade-no/MP%7C1"),
            Some(Route::QueryByOutTradeNo("MP|1".into()))
        );
        assert_eq!(Route::parse(&post, "/v3/pay/transactions/out-trade-no/A/close"), Some(Route::Close("A".into())));
        assert_eq!(Route::parse(&get, "/v3/refund/domestic/refunds/R1"), Some(Route::QueryRefund("R1".into())));
        assert_eq!(Route::parse(&get, "/v3/pay/transactions/out-trade-no/"), None);
        assert_eq!(Route::parse(&get, "/v3/nope"), None);
        assert_eq!(Route::parse(&get, "/v3/pay/transactions/id/%zz"), None);
        for r in [Route::Jsapi, Route::QueryById("x".into()), Route::Certificates] {
            assert!(FAULT_PATHS.contains(&r.fault_path()));
        }
    }
}
