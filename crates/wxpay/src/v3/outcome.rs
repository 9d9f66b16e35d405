//! The v3 outcome table: every v3 endpoint minipay calls ([`Endpoint`]), and the one
//! function ([`classify`]) that turns what came back — HTTP status, WeChat's error `code`,
//! the verification result — into the crate's [`Outcome`] (`Success` / `Failed` /
//! `Unknown`, with the same obligations as in v2: see [`crate::outcome`]).
//!
//! ## The whole table
//!
//! | what came back | outcome |
//! |---|---|
//! | nothing: timeout, reset, TLS or connect error | Unknown |
//! | any answer whose signature check **failed** (bad signature, stale, SIGNTEST probe, unknown serial after the one refresh, certificate not valid) | Unknown |
//! | 2xx, verified | Success (then parse; an unreadable body is Unknown) |
//! | 2xx, unsigned | Unknown (forged or broken; never Success) |
//! | 2xx from a bill-file download (files are not signed; the hash is checked instead) | Success |
//! | 429 (FREQUENCY_LIMITED), any 5xx, 1xx, 3xx | Unknown |
//! | 4xx unsigned, on an endpoint that moves money ([`Endpoint::moves_money`]) | Unknown |
//! | 4xx, `code` in [`UNKNOWN_CODES`] (SYSTEM_ERROR, FREQUENCY_LIMITED…) | Unknown |
//! | 4xx, `code` in [`COMMON_FINAL`] or the endpoint's [`final_codes`] | Failed(code) |
//! | 4xx, no readable `code`, or a code not listed | Unknown |
//!
//! Deliberate choices, each a guess about WeChat to revisit with real traffic:
//! - A 4xx *without* signature headers is accepted as a refusal on calls that move no money
//!   (a refusal written by a gateway in front of the signer is plausible, and the worst
//!   case there is a needless retry), but not on refund and transfer-bill creation/cancel:
//!   an unsigned "refused" could make a caller pick a new number and pay twice.
//! - `INVALID_REQUEST` on transfer-bill **creation** is Unknown, not Failed: WeChat uses it
//!   for "this out_bill_no exists with other parameters" as well as for rule violations,
//!   and in the first case the earlier request may have paid (like v2's `FATAL_ERROR`).
//! - `NO_STATEMENT_EXIST` and `STATEMENT_CREATING` on bill requests are Failed with that
//!   code: the reconciler maps them ("empty day" / "later").

use super::verify::VerifyError;
use crate::Outcome;
use crate::v3::sign::Method;

/// Every APIv3 endpoint minipay calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    JsapiPrepay,
    QueryByOutTradeNo,
    QueryByTransactionId,
    CloseOrder,
    CreateRefund,
    QueryRefund,
    TradeBill,
    FundFlowBill,
    /// The second step of a bill: a signed GET of `download_url`, whose answer is a file.
    DownloadBill,
    CreateTransferBill,
    QueryTransferByOutBillNo,
    QueryTransferByBillNo,
    CancelTransferBill,
    Certificates,
}

impl Endpoint {
    pub const ALL: [Endpoint; 14] = [
        Endpoint::JsapiPrepay,
        Endpoint::QueryByOutTradeNo,
        Endpoint::QueryByTransactionId,
        Endpoint::CloseOrder,
        Endpoint::CreateRefund,
        Endpoint::QueryRefund,
        Endpoint::TradeBill,
        Endpoint::FundFlowBill,
        Endpoint::DownloadBill,
        Endpoint::CreateTransferBill,
        Endpoint::QueryTransferByOutBillNo,
        Endpoint::QueryTransferByBillNo,
        Endpoint::CancelTransferBill,
        Endpoint::Certificates,
    ];

    pub fn method(self) -> Method {
        match self {
            Endpoint::JsapiPrepay
            | Endpoint::CloseOrder
            | Endpoint::CreateRefund
            | Endpoint::CreateTransferBill
            | Endpoint::CancelTransferBill => Method::Post,
            Endpoint::QueryByOutTradeNo
            | Endpoint::QueryByTransactionId
            | Endpoint::QueryRefund
            | Endpoint::TradeBill
            | Endpoint::FundFlowBill
            | Endpoint::DownloadBill
            | Endpoint::QueryTransferByOutBillNo
            | Endpoint::QueryTransferByBillNo
            | Endpoint::Certificates => Method::Get,
        }
    }

    /// The path template, for logs and metrics (`{…}` marks a path parameter).
    pub fn template(self) -> &'static str {
        match self {
            Endpoint::JsapiPrepay => "/v3/pay/transactions/jsapi",
            Endpoint::QueryByOutTradeNo => "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            Endpoint::QueryByTransactionId => "/v3/pay/transactions/id/{transaction_id}",
            Endpoint::CloseOrder => "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            Endpoint::CreateRefund => "/v3/refund/domestic/refunds",
            Endpoint::QueryRefund => "/v3/refund/domestic/refunds/{out_refund_no}",
            Endpoint::TradeBill => "/v3/bill/tradebill",
            Endpoint::FundFlowBill => "/v3/bill/fundflowbill",
            Endpoint::DownloadBill => "{download_url}",
            Endpoint::CreateTransferBill => "/v3/fund-app/mch-transfer/transfer-bills",
            Endpoint::QueryTransferByOutBillNo => "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}",
            Endpoint::QueryTransferByBillNo => {
                "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}"
            }
            Endpoint::CancelTransferBill => "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel",
            Endpoint::Certificates => "/v3/certificates",
        }
    }

    /// Calls after which money may have moved (or stopped moving): an unsigned refusal is
    /// not trusted there.
    pub fn moves_money(self) -> bool {
        match self {
            Endpoint::CreateRefund | Endpoint::CreateTransferBill | Endpoint::CancelTransferBill => true,
            Endpoint::JsapiPrepay
            | Endpoint::QueryByOutTradeNo
            | Endpoint::QueryByTransactionId
            | Endpoint::CloseOrder
            | Endpoint::QueryRefund
            | Endpoint::TradeBill
            | Endpoint::FundFlowBill
            | Endpoint::DownloadBill
            | Endpoint::QueryTransferByOutBillNo
            | Endpoint::QueryTransferByBillNo
            | Endpoint::Certificates => false,
        }
    }

    /// Whether a 2xx answer carries WeChat's signature (everything but bill files).
    pub fn answer_signed(self) -> bool {
        !matches!(self, Endpoint::DownloadBill)
    }
}

/// Codes that mean "maybe" whatever the endpoint.
pub const UNKNOWN_CODES: &[&str] = &["SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "BANK_ERROR"];

/// Request-validation refusals WeChat documents on every v3 endpoint: nothing was processed.
pub const COMMON_FINAL: &[&str] =
    &["PARAM_ERROR", "SIGN_ERROR", "NO_AUTH", "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS", "INVALID_REQUEST_FORMAT"];

/// The endpoint's own documented refusals (Failed), on top of [`COMMON_FINAL`].
pub fn final_codes(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::JsapiPrepay => &[
            "INVALID_REQUEST",
            "OUT_TRADE_NO_USED",
            "ORDERPAID",
            "ORDER_CLOSED",
            "RULE_LIMIT",
            "TRADE_ERROR",
            "ACCOUNT_ERROR",
            "OPENID_MISMATCH",
        ],
        Endpoint::QueryByOutTradeNo | Endpoint::QueryByTransactionId => {
            &["ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "INVALID_REQUEST"]
        }
        Endpoint::CloseOrder => {
            &["ORDER_NOT_EXIST", "ORDERNOTEXIST", "ORDERPAID", "ORDER_CLOSED", "RESOURCE_NOT_EXISTS", "INVALID_REQUEST"]
        }
        Endpoint::CreateRefund => &["NOT_ENOUGH", "USER_ACCOUNT_ABNORMAL", "RESOURCE_NOT_EXISTS", "INVALID_REQUEST"],
        Endpoint::QueryRefund => &["RESOURCE_NOT_EXISTS"],
        Endpoint::TradeBill | Endpoint::FundFlowBill => {
            &["NO_STATEMENT_EXIST", "STATEMENT_CREATING", "INVALID_REQUEST"]
        }
        Endpoint::DownloadBill => &["RESOURCE_NOT_EXISTS", "INVALID_REQUEST"],
        Endpoint::CreateTransferBill => &["NOT_ENOUGH", "OPENID_MISMATCH"],
        Endpoint::QueryTransferByOutBillNo | Endpoint::QueryTransferByBillNo => &["NOT_FOUND", "RESOURCE_NOT_EXISTS"],
        Endpoint::CancelTransferBill => &["NOT_FOUND", "RESOURCE_NOT_EXISTS", "INVALID_REQUEST"],
        Endpoint::Certificates => &["RESOURCE_NOT_EXISTS"],
    }
}

/// What a call got back, as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// No answer: timeout, connection reset, TLS error. The request may have arrived.
    NoAnswer { reason: String },
    /// An HTTP answer; `verification` is the [`super::verify::Verifier`]'s verdict on it
    /// (`Err(VerifyError::Unsigned(_))` when the headers are missing).
    Answer { status: u16, body: &'a [u8], verification: Result<(), VerifyError> },
}

/// WeChat's v3 error body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The table of the module docs. `Success(())` means "parse the typed response next".
pub fn classify(endpoint: Endpoint, received: &Received<'_>) -> Outcome<()> {
    let path = endpoint.template();
    let (status, body, verification) = match received {
        Received::NoAnswer { reason } => return Outcome::unknown(format!("{path}: no answer: {reason}")),
        Received::Answer { status, body, verification } => (*status, *body, verification),
    };
    let unsigned = match verification {
        Ok(()) => false,
        Err(VerifyError::Unsigned(_)) => true,
        Err(e) => {
            if (200..300).contains(&status) && !endpoint.answer_signed() {
                return Outcome::Success(());
            }
            return Outcome::unknown(format!("{path}: HTTP {status}, answer failed verification: {e}"));
        }
    };
    match status {
        200..=299 if !endpoint.answer_signed() => Outcome::Success(()),
        200..=299 if unsigned => {
            Outcome::unknown(format!("{path}: HTTP {status} without WeChat's signature (forged?)"))
        }
        200..=299 => Outcome::Success(()),
        429 => Outcome::unknown(format!("{path}: HTTP 429 {}", error_text(body))),
        400..=499 if unsigned && endpoint.moves_money() => {
            Outcome::unknown(format!("{path}: unsigned HTTP {status} refusal on a money call: {}", error_text(body)))
        }
        400..=499 => classify_code(endpoint, status, body),
        _ => Outcome::unknown(format!("{path}: HTTP {status} {}", error_text(body))),
    }
}

fn classify_code(endpoint: Endpoint, status: u16, body: &[u8]) -> Outcome<()> {
    let path = endpoint.template();
    let Ok(err) = serde_json::from_slice::<ErrorBody>(body) else {
        return Outcome::unknown(format!("{path}: HTTP {status} without a readable error code"));
    };
    let code = err.code.as_str();
    if UNKNOWN_CODES.contains(&code) {
        return Outcome::unknown(format!("{path}: HTTP {status} {code}: {}", err.message));
    }
    if COMMON_FINAL.contains(&code) || final_codes(endpoint).contains(&code) {
        return Outcome::failed(code, err.message);
    }
    Outcome::unknown(format!("{path}: HTTP {status} unrecognised code {code}: {}", err.message))
}

fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("{} {}", e.code, e.message),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> Vec<u8> {
        format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes()
    }

    fn answer(status: u16, body: &[u8], v: Result<(), VerifyError>) -> Received<'_> {
        Received::Answer { status, body, verification: v }
    }

    const OK: Result<(), VerifyError> = Ok(());
    fn unsigned() -> Result<(), VerifyError> {
        Err(VerifyError::Unsigned("Wechatpay-Signature"))
    }

    /// The table of the module docs, row by row, on every endpoint.
    #[test]
    fn table_rows_on_every_endpoint() {
        let failures = [
            VerifyError::BadSignature,
            VerifyError::SignTest,
            VerifyError::Stale { timestamp: 0, skew: 301, window: 300 },
            VerifyError::UnknownSerial("X".into()),
            VerifyError::CertificateNotValid { serial: "X".into(), not_before: 0, not_after: 1, now: 2 },
            VerifyError::BadTimestamp("x".into()),
        ];
        for e in Endpoint::ALL {
            let na = Received::NoAnswer { reason: "timeout".into() };
            assert!(classify(e, &na).is_unknown(), "{e:?} timeout");
            assert!(classify(e, &answer(200, b"{}", OK)).is_success(), "{e:?} 200 verified");
            assert!(classify(e, &answer(204, b"", OK)).is_success(), "{e:?} 204 verified");
            // Unsigned 2xx: forged, except bill files which are never signed.
            assert_eq!(classify(e, &answer(200, b"{}", unsigned())).is_success(), e == Endpoint::DownloadBill, "{e:?}");
            for f in &failures {
                // Verification failure beats any code, even a documented refusal.
                let code = final_codes(e).first().copied().unwrap_or("PARAM_ERROR");
                assert!(classify(e, &answer(400, &err(code), Err(f.clone()))).is_unknown(), "{e:?} {f:?}");
                assert_eq!(classify(e, &answer(200, b"{}", Err(f.clone()))).is_success(), e == Endpoint::DownloadBill);
            }
            for status in [500, 502, 503, 504, 302, 101] {
                assert!(classify(e, &answer(status, &err("PARAM_ERROR"), OK)).is_unknown(), "{e:?} {status}");
            }
            assert!(classify(e, &answer(429, &err("FREQUENCY_LIMITED"), OK)).is_unknown());
            assert!(classify(e, &answer(429, &err("PARAM_ERROR"), OK)).is_unknown(), "429 whatever the code");
            for c in UNKNOWN_CODES {
                assert!(classify(e, &answer(400, &err(c), OK)).is_unknown(), "{e:?} {c}");
            }
            for c in COMMON_FINAL.iter().chain(final_codes(e)) {
                assert_eq!(classify(e, &answer(400, &err(c), OK)).failed_code(), Some(*c), "{e:?} {c}");
                assert_eq!(classify(e, &answer(400, &err(c), unsigned())).is_unknown(), e.moves_money(), "{e:?} {c}");
            }
            for body in [&b"<html>bad gateway</html>"[..], b"", br#"{"message":"no code"}"#, &err("BRAND_NEW_CODE")] {
                assert!(classify(e, &answer(400, body, OK)).is_unknown(), "{e:?}");
            }
        }
    }

    #[test]
    fn documented_refusals_per_endpoint() {
        let cases: &[(Endpoint, u16, &str)] = &[
            (Endpoint::JsapiPrepay, 403, "OUT_TRADE_NO_USED"),
            (Endpoint::JsapiPrepay, 400, "ORDER_CLOSED"),
            (Endpoint::QueryByOutTradeNo, 404, "ORDER_NOT_EXIST"),
            (Endpoint::QueryByTransactionId, 404, "ORDER_NOT_EXIST"),
            (Endpoint::CloseOrder, 400, "ORDERPAID"),
            (Endpoint::CreateRefund, 403, "NOT_ENOUGH"),
            (Endpoint::CreateRefund, 404, "RESOURCE_NOT_EXISTS"),
            (Endpoint::QueryRefund, 404, "RESOURCE_NOT_EXISTS"),
            (Endpoint::TradeBill, 400, "NO_STATEMENT_EXIST"),
            (Endpoint::FundFlowBill, 400, "STATEMENT_CREATING"),
            (Endpoint::CreateTransferBill, 403, "NOT_ENOUGH"),
            (Endpoint::CreateTransferBill, 401, "SIGN_ERROR"),
            (Endpoint::CreateTransferBill, 403, "NO_AUTH"),
            (Endpoint::QueryTransferByOutBillNo, 404, "NOT_FOUND"),
            (Endpoint::CancelTransferBill, 400, "INVALID_REQUEST"),
            (Endpoint::Certificates, 404, "RESOURCE_NOT_EXISTS"),
        ];
        for (e, status, code) in cases {
            assert_eq!(classify(*e, &answer(*status, &err(code), OK)).failed_code(), Some(*code), "{e:?} {code}");
        }
    }

    #[test]
    fn payout_maybe_cases_are_unknown() {
        let maybe: &[(Endpoint, u16, &str)] = &[
            (Endpoint::CreateTransferBill, 400, "INVALID_REQUEST"),
            (Endpoint::CreateTransferBill, 500, "SYSTEM_ERROR"),
            (Endpoint::CreateTransferBill, 429, "FREQUENCY_LIMITED"),
            (Endpoint::CreateTransferBill, 403, "SOMETHING_NEW"),
            (Endpoint::CreateRefund, 500, "SYSTEM_ERROR"),
            (Endpoint::CreateRefund, 429, "FREQUENCY_LIMITED"),
            (Endpoint::QueryByOutTradeNo, 400, "SYSTEM_ERROR"),
        ];
        for (e, status, code) in maybe {
            assert!(classify(*e, &answer(*status, &err(code), OK)).is_unknown(), "{e:?} {code}");
        }
    }

    #[test]
    fn messages_travel_with_failures() {
        let body = br#"{"code":"NOT_ENOUGH","message":"\u4f59\u989d\u4e0d\u8db3","detail":{"field":"x"}}"#;
        assert_eq!(classify(Endpoint::CreateRefund, &answer(403, body, OK)), Outcome::failed("NOT_ENOUGH", "余额不足"));
    }

    #[test]
    fn methods_and_money() {
        assert_eq!(Endpoint::CloseOrder.method(), Method::Post);
        assert_eq!(Endpoint::QueryTransferByBillNo.method(), Method::Get);
        assert!(Endpoint::CreateTransferBill.moves_money() && !Endpoint::JsapiPrepay.moves_money());
        assert!(!Endpoint::DownloadBill.answer_signed() && Endpoint::TradeBill.answer_signed());
    }
}
