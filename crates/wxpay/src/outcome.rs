//! The one answer every WeChat Pay call gives: [`Outcome`], and the one place that turns
//! WeChat's `return_code` / `result_code` / `err_code` into it: [`classify`].
//!
//! The caller's next step must follow from the variant alone:
//!
//! - [`Outcome::Success`]: the call did what was asked; the typed response is inside.
//! - [`Outcome::Failed`]: **known and final** for this request: nothing happened, or WeChat
//!   refused for a business reason. `code` is WeChat's `err_code` (or `RETURN_FAIL` for a
//!   communication-level refusal, with `return_msg` as the message). The caller maps the
//!   code (e.g. `ORDERPAID` → mark paid); it never needs to query to learn more.
//! - [`Outcome::Unknown`]: the action **may or may not** have happened (SYSTEMERROR,
//!   BIZERR_NEED_RETRY, red-packet PROCESSING, timeouts, resets, HTTP 5xx, an unparsable or
//!   unverifiable answer, an `err_code` we do not recognise). Retry with the **same** number
//!   and the same parameters, or query; never issue a new number until a query proves the
//!   old one failed.
//!
//! ## Classification rules (the whole table; see [`classify`])
//!
//! 1. `return_code` missing or neither `SUCCESS` nor `FAIL` → Unknown.
//! 2. `return_code` = `FAIL`:
//!    - transfers and red packets ([`Endpoint::is_payout`]) with an `err_code`: that code is
//!      classified by rule 4 (a numeric code such as red packets' "系统繁忙" is Unknown);
//!    - transfers and red packets whose `return_msg` says busy ("繁忙", SYSTEMERROR) without
//!      an `err_code` → Unknown (a guess: never treat "busy" as "nothing happened");
//!    - otherwise → Failed `RETURN_FAIL` (signature error, missing parameter: nothing
//!      happened).
//! 3. `return_code` = `SUCCESS`, `result_code` = `SUCCESS` → Success. A missing
//!    `result_code` is Unknown (every endpoint we call sends one).
//! 4. `result_code` = `FAIL` → look `err_code` up in the endpoint's tables:
//!    [`UNKNOWN_CODES`] (any endpoint) and numeric codes → Unknown; the endpoint's final
//!    list ([`final_codes`]) → Failed with that code; anything else (including no code) →
//!    Unknown, because a code we have never seen cannot prove that nothing happened.
//!
//! Bill downloads are not classified here: their success body is not XML, and their XML
//! errors (`No Bill Exist` = empty day, `Bill Creating` = later) are read by
//! [`crate::bill::decode_body`]; the client only turns transport failures into Unknown.
//!
//! Two deliberate choices beyond the plain documentation:
//! - `FATAL_ERROR` on transfers and red packets ("the number exists with other
//!   parameters") is **Unknown**: the earlier request under that number may have paid, so
//!   the caller must query it rather than give up or pick a new number.
//! - `OUT_TRADE_NO_USED`, `ORDERPAID`, `ORDERCLOSED` on unifiedorder are Failed with that
//!   code: no money moves on unifiedorder, and the caller maps them (mark paid, new order).

use crate::xml::Params;

/// The result of one WeChat Pay call; see the module docs for what each variant obliges
/// the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Success(T),
    /// Known and final: nothing happened, or WeChat refused (`code` is WeChat's err_code,
    /// or `RETURN_FAIL` for a communication-level refusal).
    Failed {
        code: String,
        message: String,
    },
    /// The action may or may not have happened: retry with the same number, or query.
    Unknown {
        reason: String,
    },
}

impl<T> Outcome<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Success(t) => Outcome::Success(f(t)),
            Outcome::Failed { code, message } => Outcome::Failed { code, message },
            Outcome::Unknown { reason } => Outcome::Unknown { reason },
        }
    }

    /// Chains a fallible step (e.g. parsing the typed response) onto a success.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Outcome<U>) -> Outcome<U> {
        match self {
            Outcome::Success(t) => f(t),
            Outcome::Failed { code, message } => Outcome::Failed { code, message },
            Outcome::Unknown { reason } => Outcome::Unknown { reason },
        }
    }

    pub fn unknown(reason: impl Into<String>) -> Outcome<T> {
        Outcome::Unknown { reason: reason.into() }
    }

    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Outcome<T> {
        Outcome::Failed { code: code.into(), message: message.into() }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }

    /// The failure code, when final.
    pub fn failed_code(&self) -> Option<&str> {
        match self {
            Outcome::Failed { code, .. } => Some(code),
            Outcome::Success(_) | Outcome::Unknown { .. } => None,
        }
    }
}

/// The `code` of a communication-level refusal (`return_code` = `FAIL`).
pub const RETURN_FAIL: &str = "RETURN_FAIL";

/// Every WeChat Pay v2 endpoint minipay calls. Knows its path, whether it needs the
/// merchant client certificate, its signature rule and how it names appid/mch_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    SendRedpack,
    SendGroupRedpack,
    SendMiniProgramHb,
    GetHbInfo,
}

/// Which hash an endpoint signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignRule {
    /// The merchant's configured sign type.
    Merchant,
    /// WeChat accepts only this one.
    Fixed(crate::SignType),
}

impl Endpoint {
    pub const ALL: [Endpoint; 13] = [
        Endpoint::UnifiedOrder,
        Endpoint::OrderQuery,
        Endpoint::CloseOrder,
        Endpoint::Refund,
        Endpoint::RefundQuery,
        Endpoint::DownloadBill,
        Endpoint::DownloadFundFlow,
        Endpoint::Transfers,
        Endpoint::GetTransferInfo,
        Endpoint::SendRedpack,
        Endpoint::SendGroupRedpack,
        Endpoint::SendMiniProgramHb,
        Endpoint::GetHbInfo,
    ];

    /// The path under the API host, without a leading slash.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::UnifiedOrder => "pay/unifiedorder",
            Endpoint::OrderQuery => "pay/orderquery",
            Endpoint::CloseOrder => "pay/closeorder",
            Endpoint::Refund => "secapi/pay/refund",
            Endpoint::RefundQuery => "pay/refundquery",
            Endpoint::DownloadBill => "pay/downloadbill",
            Endpoint::DownloadFundFlow => "pay/downloadfundflow",
            Endpoint::Transfers => "mmpaymkttransfers/promotion/transfers",
            Endpoint::GetTransferInfo => "mmpaymkttransfers/gettransferinfo",
            Endpoint::SendRedpack => "mmpaymkttransfers/sendredpack",
            Endpoint::SendGroupRedpack => "mmpaymkttransfers/sendgroupredpack",
            Endpoint::SendMiniProgramHb => "mmpaymkttransfers/sendminiprogramhb",
            Endpoint::GetHbInfo => "mmpaymkttransfers/gethbinfo",
        }
    }

    /// Looks an endpoint up by its path (what the sandbox routes on).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.trim_start_matches('/');
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Whether the call needs the merchant client certificate (mutual TLS).
    pub fn needs_cert(self) -> bool {
        match self {
            Endpoint::Refund
            | Endpoint::DownloadFundFlow
            | Endpoint::Transfers
            | Endpoint::GetTransferInfo
            | Endpoint::SendRedpack
            | Endpoint::SendGroupRedpack
            | Endpoint::SendMiniProgramHb
            | Endpoint::GetHbInfo => true,
            Endpoint::UnifiedOrder
            | Endpoint::OrderQuery
            | Endpoint::CloseOrder
            | Endpoint::RefundQuery
            | Endpoint::DownloadBill => false,
        }
    }

    pub fn sign_rule(self) -> SignRule {
        match self {
            Endpoint::DownloadFundFlow => SignRule::Fixed(crate::SignType::HmacSha256),
            Endpoint::Transfers
            | Endpoint::GetTransferInfo
            | Endpoint::SendRedpack
            | Endpoint::SendGroupRedpack
            | Endpoint::SendMiniProgramHb
            | Endpoint::GetHbInfo => SignRule::Fixed(crate::SignType::Md5),
            Endpoint::UnifiedOrder
            | Endpoint::OrderQuery
            | Endpoint::CloseOrder
            | Endpoint::Refund
            | Endpoint::RefundQuery
            | Endpoint::DownloadBill => SignRule::Merchant,
        }
    }

    /// The sign type used for this endpoint given the merchant's configured one.
    pub fn sign_type(self, merchant: crate::SignType) -> crate::SignType {
        match self.sign_rule() {
            SignRule::Merchant => merchant,
            SignRule::Fixed(t) => t,
        }
    }

    /// The request field names for the app id and the merchant id: transfers say
    /// `mch_appid`/`mchid`, red packets `wxappid`/`mch_id`, everything else `appid`/`mch_id`.
    pub fn id_fields(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Transfers => ("mch_appid", "mchid"),
            Endpoint::SendRedpack | Endpoint::SendGroupRedpack | Endpoint::SendMiniProgramHb => ("wxappid", "mch_id"),
            Endpoint::UnifiedOrder
            | Endpoint::OrderQuery
            | Endpoint::CloseOrder
            | Endpoint::Refund
            | Endpoint::RefundQuery
            | Endpoint::DownloadBill
            | Endpoint::DownloadFundFlow
            | Endpoint::GetTransferInfo
            | Endpoint::GetHbInfo => ("appid", "mch_id"),
        }
    }

    /// Transfers and red packets: MD5 only, quirky `return_code` FAIL answers with an
    /// `err_code`, and (per public SDKs and the documentation's examples) unsigned answers.
    pub fn is_payout(self) -> bool {
        matches!(
            self,
            Endpoint::Transfers
                | Endpoint::GetTransferInfo
                | Endpoint::SendRedpack
                | Endpoint::SendGroupRedpack
                | Endpoint::SendMiniProgramHb
                | Endpoint::GetHbInfo
        )
    }

    /// Whether a `return_code` SUCCESS answer must carry a `sign`. WeChat signs the
    /// payment, query and refund answers; the transfer and red-packet answers carry no
    /// sign in the documentation's examples nor in what public SDKs parse (WxJava checks
    /// the sign there only "if present"), so for those a present sign is verified and an
    /// absent one accepted. This is a documented guess.
    pub fn response_signed(self) -> bool {
        !self.is_payout()
    }
}

/// `err_code`s that mean "maybe" on every endpoint.
pub const UNKNOWN_CODES: &[&str] = &["SYSTEMERROR", "BIZERR_NEED_RETRY", "PROCESSING", "FATAL_ERROR"];

/// Request-validation codes WeChat uses across the v2 API: nothing was processed.
const COMMON_FINAL: &[&str] = &[
    "PARAM_ERROR",
    "SIGNERROR",
    "SIGN_ERROR",
    "LACK_PARAMS",
    "XML_FORMAT_ERROR",
    "XML_ERROR",
    "REQUIRE_POST_METHOD",
    "POST_DATA_EMPTY",
    "NOT_UTF8",
    "APPID_NOT_EXIST",
    "MCHID_NOT_EXIST",
    "APPID_MCHID_NOT_MATCH",
    "NOAUTH",
    "NO_AUTH",
    "INVALID_REQUEST",
    "CA_ERROR",
];

/// The endpoint-specific `err_code`s that are final (Failed) on `result_code` FAIL, on top
/// of the common request-validation codes.
pub fn final_codes(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::UnifiedOrder => &["ORDERPAID", "ORDERCLOSED", "OUT_TRADE_NO_USED", "NOTENOUGH"],
        Endpoint::OrderQuery => &["ORDERNOTEXIST"],
        Endpoint::CloseOrder => &["ORDERPAID", "ORDERCLOSED", "ORDERNOTEXIST"],
        Endpoint::Refund => &[
            "NOTENOUGH",
            "INVALID_TRANSACTIONID",
            "ORDERNOTEXIST",
            "TRADE_OVERDUE",
            "ERROR",
            "USER_ACCOUNT_ABNORMAL",
            "INVALID_REQ_TOO_MUCH",
            "FREQUENCY_LIMITED",
        ],
        Endpoint::RefundQuery => &["REFUNDNOTEXIST", "ORDERNOTEXIST", "INVALID_TRANSACTIONID"],
        Endpoint::DownloadBill | Endpoint::DownloadFundFlow => &[],
        Endpoint::Transfers => &[
            "SEND_FAILED",
            "NOTENOUGH",
            "NAME_MISMATCH",
            "AMOUNT_LIMIT",
            "MONEY_LIMIT",
            "SENDNUM_LIMIT",
            "FREQ_LIMIT",
            "V2_ACCOUNT_SIMPLE_BAN",
            "OPENID_ERROR",
            "RECV_ACCOUNT_NOT_ALLOWED",
            "PAY_CHANNEL_NOT_ALLOWED",
            "SEND_MONEY_LIMIT",
            "RECEIVED_MONEY_LIMIT",
        ],
        Endpoint::GetTransferInfo | Endpoint::GetHbInfo => &["NOT_FOUND", "FREQ_LIMIT"],
        Endpoint::SendRedpack | Endpoint::SendGroupRedpack | Endpoint::SendMiniProgramHb => &[
            "SEND_FAILED",
            "NOTENOUGH",
            "MONEY_LIMIT",
            "SENDNUM_LIMIT",
            "SECOND_OVER_LIMITED",
            "FREQ_LIMIT",
            "OPENID_ERROR",
            "ILLEGAL_APPID",
            "MSGAPPID_ERROR",
            "ACCEPTMODE_ERROR",
            "PROCESSING_LIMIT",
        ],
    }
}

/// Classifies a decoded, already signature-checked answer. `Success(())` means "parse the
/// typed response next"; see the module docs for the rules.
pub fn classify(endpoint: Endpoint, params: &Params) -> Outcome<()> {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let describe = || {
        let des = get("err_code_des");
        if des.is_empty() { get("return_msg").to_owned() } else { des.to_owned() }
    };
    match get("return_code") {
        "SUCCESS" => {}
        "FAIL" => {
            let code = get("err_code");
            if endpoint.is_payout() && !code.is_empty() {
                return classify_err_code(endpoint, code, describe());
            }
            let msg = get("return_msg");
            // Guess: payout endpoints have been seen answering "系统繁忙" as a bare
            // return_code FAIL; that is not "nothing happened", so it must not be Failed.
            if endpoint.is_payout() && (msg.contains("繁忙") || msg.contains("SYSTEMERROR")) {
                return Outcome::unknown(format!("return_code FAIL, busy: {msg}"));
            }
            return Outcome::failed(RETURN_FAIL, msg);
        }
        other => return Outcome::unknown(format!("unexpected return_code {other:?}")),
    }
    match get("result_code") {
        "SUCCESS" => Outcome::Success(()),
        "FAIL" => classify_err_code(endpoint, get("err_code"), describe()),
        other => Outcome::unknown(format!("unexpected result_code {other:?}")),
    }
}

/// Rule 4 of the module docs for one `err_code`.
pub fn classify_err_code(endpoint: Endpoint, code: &str, message: String) -> Outcome<()> {
    if code.is_empty() {
        return Outcome::unknown(format!("result FAIL without err_code: {message}"));
    }
    if code.bytes().all(|b| b.is_ascii_digit()) {
        return Outcome::unknown(format!("numeric err_code {code} (busy): {message}"));
    }
    if UNKNOWN_CODES.contains(&code) {
        return Outcome::unknown(format!("{code}: {message}"));
    }
    if final_codes(endpoint).contains(&code) || COMMON_FINAL.contains(&code) {
        return Outcome::failed(code, message);
    }
    Outcome::unknown(format!("unrecognised err_code {code}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn fail(code: &str) -> Params {
        p(&[("return_code", "SUCCESS"), ("result_code", "FAIL"), ("err_code", code), ("err_code_des", "d")])
    }

    #[test]
    fn every_endpoint_has_a_distinct_path() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
            assert_eq!(Endpoint::from_path(&format!("/{}", e.path())), Some(e));
        }
    }

    #[test]
    fn success_and_return_fail() {
        let ok = p(&[("return_code", "SUCCESS"), ("result_code", "SUCCESS")]);
        assert_eq!(classify(Endpoint::UnifiedOrder, &ok), Outcome::Success(()));
        let rf = p(&[("return_code", "FAIL"), ("return_msg", "签名错误")]);
        assert_eq!(classify(Endpoint::Refund, &rf), Outcome::failed(RETURN_FAIL, "签名错误"));
        assert_eq!(classify(Endpoint::Transfers, &rf), Outcome::failed(RETURN_FAIL, "签名错误"));
        assert!(classify(Endpoint::Refund, &p(&[])).is_unknown());
        assert!(classify(Endpoint::Refund, &p(&[("return_code", "SUCCESS")])).is_unknown());
    }

    #[test]
    fn unified_order_codes() {
        for c in ["ORDERPAID", "ORDERCLOSED", "OUT_TRADE_NO_USED", "NOTENOUGH", "NOAUTH", "PARAM_ERROR", "SIGNERROR"] {
            assert_eq!(classify(Endpoint::UnifiedOrder, &fail(c)).failed_code(), Some(c), "{c}");
        }
        for c in ["SYSTEMERROR", "BIZERR_NEED_RETRY", "SOMETHING_NEW", ""] {
            assert!(classify(Endpoint::UnifiedOrder, &fail(c)).is_unknown(), "{c}");
        }
    }

    #[test]
    fn refund_codes() {
        for c in ["SYSTEMERROR", "BIZERR_NEED_RETRY"] {
            assert!(classify(Endpoint::Refund, &fail(c)).is_unknown(), "{c}");
        }
        for c in ["NOTENOUGH", "TRADE_OVERDUE", "ERROR", "FREQUENCY_LIMITED", "INVALID_TRANSACTIONID"] {
            assert_eq!(classify(Endpoint::Refund, &fail(c)).failed_code(), Some(c), "{c}");
        }
        assert_eq!(classify(Endpoint::RefundQuery, &fail("REFUNDNOTEXIST")).failed_code(), Some("REFUNDNOTEXIST"));
        assert_eq!(classify(Endpoint::OrderQuery, &fail("ORDERNOTEXIST")).failed_code(), Some("ORDERNOTEXIST"));
        assert!(classify(Endpoint::OrderQuery, &fail("SYSTEMERROR")).is_unknown());
    }

    #[test]
    fn transfer_codes() {
        for c in ["SEND_FAILED", "NOTENOUGH", "NAME_MISMATCH", "AMOUNT_LIMIT", "MONEY_LIMIT", "V2_ACCOUNT_SIMPLE_BAN"] {
            assert_eq!(classify(Endpoint::Transfers, &fail(c)).failed_code(), Some(c), "{c}");
        }
        for c in ["SYSTEMERROR", "FATAL_ERROR", "268", "BRAND_NEW"] {
            assert!(classify(Endpoint::Transfers, &fail(c)).is_unknown(), "{c}");
        }
        // A communication-level FAIL that still carries a business code (payout quirk).
        let busy = p(&[("return_code", "FAIL"), ("return_msg", "系统繁忙,请稍后再试."), ("err_code", "268")]);
        assert!(classify(Endpoint::Transfers, &busy).is_unknown());
        let nomoney = p(&[("return_code", "FAIL"), ("return_msg", "余额不足"), ("err_code", "NOTENOUGH")]);
        assert_eq!(classify(Endpoint::Transfers, &nomoney).failed_code(), Some("NOTENOUGH"));
        assert_eq!(classify(Endpoint::GetTransferInfo, &fail("NOT_FOUND")).failed_code(), Some("NOT_FOUND"));
    }

    #[test]
    fn redpack_codes() {
        for e in [Endpoint::SendRedpack, Endpoint::SendGroupRedpack, Endpoint::SendMiniProgramHb] {
            for c in ["SYSTEMERROR", "PROCESSING", "FATAL_ERROR", "3"] {
                assert!(classify(e, &fail(c)).is_unknown(), "{e:?} {c}");
            }
            for c in ["SEND_FAILED", "MONEY_LIMIT", "SENDNUM_LIMIT", "SECOND_OVER_LIMITED", "NOTENOUGH", "FREQ_LIMIT"] {
                assert_eq!(classify(e, &fail(c)).failed_code(), Some(c), "{e:?} {c}");
            }
            let busy = p(&[("return_code", "FAIL"), ("return_msg", "系统繁忙"), ("err_code", "4")]);
            assert!(classify(e, &busy).is_unknown());
            let bare_busy = p(&[("return_code", "FAIL"), ("return_msg", "系统繁忙,请稍后再试.")]);
            assert!(classify(e, &bare_busy).is_unknown());
        }
        assert_eq!(classify(Endpoint::GetHbInfo, &fail("NOT_FOUND")).failed_code(), Some("NOT_FOUND"));
    }

    #[test]
    fn endpoint_properties() {
        assert!(Endpoint::Refund.needs_cert() && !Endpoint::RefundQuery.needs_cert());
        assert_eq!(Endpoint::DownloadFundFlow.sign_type(crate::SignType::Md5), crate::SignType::HmacSha256);
        assert_eq!(Endpoint::Transfers.sign_type(crate::SignType::HmacSha256), crate::SignType::Md5);
        assert_eq!(Endpoint::UnifiedOrder.sign_type(crate::SignType::HmacSha256), crate::SignType::HmacSha256);
        assert_eq!(Endpoint::Transfers.id_fields(), ("mch_appid", "mchid"));
        assert_eq!(Endpoint::SendRedpack.id_fields(), ("wxappid", "mch_id"));
        assert_eq!(Endpoint::GetTransferInfo.id_fields(), ("appid", "mch_id"));
    }
}
