//! v3 notifications: verify the raw body, then parse the envelope, then decrypt the
//! resource with the APIv3 key, then read the payload for its `event_type`.
//!
//! ```json
//! {"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00",
//!  "event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource","summary":"支付成功",
//!  "resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"…","nonce":"…",
//!              "associated_data":"transaction","original_type":"transaction"}}
//! ```
//!
//! - `TRANSACTION.SUCCESS` → [`Event::Payment`] ([`Transaction`], the query answer's shape);
//! - `REFUND.SUCCESS` / `REFUND.ABNORMAL` / `REFUND.CLOSED` → [`Event::Refund`];
//! - `MCHTRANSFER.BILL.FINISHED` → [`Event::TransferBillFinished`].
//!
//! Acknowledge with 200 or 204; refuse with 4xx/5xx and [`failure_body`] (never v2 XML:
//! WeChat re-delivers forever, WxJava #2501). Every failure here — a SIGNTEST probe
//! included — must be answered non-2xx. The same event arrives more than once: dedupe by
//! `id` and by the business number.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::api::pay::Transaction;
use super::api::refund::RefundStatus;
use super::api::transfer::TransferBill;
use super::crypto::{CryptoError, EncryptedResource};
use super::verify::{Verifier, VerifyError};
use crate::Fen;
use crate::secret::ApiV3Key;

/// The outer, unencrypted notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: DateTime<FixedOffset>,
    pub event_type: String,
    pub resource_type: String,
    pub resource: EncryptedResource,
    #[serde(default)]
    pub summary: String,
}

/// Which refund notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundEvent {
    Success,
    Abnormal,
    Closed,
}

/// The decrypted payload of a refund notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundStatus,
    #[serde(default)]
    pub success_time: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub user_received_account: Option<String>,
    pub amount: RefundNoticeAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNoticeAmount {
    pub total: Fen,
    pub refund: Fen,
    #[serde(default)]
    pub payer_total: Option<Fen>,
    #[serde(default)]
    pub payer_refund: Option<Fen>,
}

/// A verified, decrypted, typed notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Payment(Transaction),
    Refund(RefundEvent, RefundNotice),
    TransferBillFinished(TransferBill),
}

/// Why a notification was refused. All of them must be answered non-2xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("signature: {0}")]
    Verify(#[from] VerifyError),
    #[error("not a v3 notification: {0}")]
    Envelope(String),
    #[error("resource: {0}")]
    Crypto(#[from] CryptoError),
    #[error("unknown event_type {0:?}")]
    UnknownEvent(String),
    #[error("unreadable {event_type} payload: {reason}")]
    Payload { event_type: String, reason: String },
}

impl Notification {
    /// Decrypts and types the payload (the envelope must already be verified: use
    /// [`parse_notification`] for the whole sequence).
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<Event, NotifyError> {
        let event_type = self.event_type.as_str();
        let refund = match event_type {
            "REFUND.SUCCESS" => Some(RefundEvent::Success),
            "REFUND.ABNORMAL" => Some(RefundEvent::Abnormal),
            "REFUND.CLOSED" => Some(RefundEvent::Closed),
            "TRANSACTION.SUCCESS" | "MCHTRANSFER.BILL.FINISHED" => None,
            other => return Err(NotifyError::UnknownEvent(other.to_owned())),
        };
        let plain = self.resource.decrypt(key)?;
        let bad =
            |e: serde_json::Error| NotifyError::Payload { event_type: event_type.to_owned(), reason: e.to_string() };
        Ok(match (event_type, refund) {
            (_, Some(kind)) => Event::Refund(kind, serde_json::from_str(&plain).map_err(bad)?),
            ("TRANSACTION.SUCCESS", None) => Event::Payment(serde_json::from_str(&plain).map_err(bad)?),
            _ => Event::TransferBillFinished(serde_json::from_str(&plain).map_err(bad)?),
        })
    }
}

/// The whole check of one notification, in the only safe order: verify the raw body and
/// headers (`get` looks a header up, case-insensitively), then parse, then decrypt.
pub fn parse_notification<'a>(
    verifier: &Verifier,
    get: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    key: &ApiV3Key,
    now: i64,
) -> Result<(Notification, Event), NotifyError> {
    verifier.verify_lookup(get, body, now)?;
    open_verified(body, key)
}

/// Parses and decrypts a notification whose signature the caller has already verified.
pub(crate) fn open_verified(body: &[u8], key: &ApiV3Key) -> Result<(Notification, Event), NotifyError> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| NotifyError::Envelope(e.to_string()))?;
    let event = n.decrypt(key)?;
    Ok((n, event))
}

/// The body of a refusal: `{"code":"FAIL","message":"…"}` (send it with a 4xx/5xx).
pub fn failure_body(message: &str) -> String {
    serde_json::json!({ "code": "FAIL", "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::api::TransferBillState;
    use crate::v3::api::pay::TradeState;
    use crate::v3::testkeys;
    use crate::v3::verify::{AnswerSigner, KeySet, Mode, SIGNTEST_PREFIX};

    const NOW: i64 = 1_764_660_000;

    fn key() -> ApiV3Key {
        ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap()
    }

    fn verifier() -> Verifier {
        let mut ks = KeySet::new();
        ks.add_public_key_pem(testkeys::PUB_KEY_ID, &testkeys::wechat_public_pem()).unwrap();
        Verifier::new(Mode::PublicKey, ks)
    }

    /// A notification as WeChat builds it: encrypt the payload, wrap, sign the raw body.
    fn build(event_type: &str, aad: &str, payload: &str) -> (Vec<u8>, Vec<(String, String)>) {
        let resource = EncryptedResource::seal(&key(), payload, "fdasflkja484", aad, Some(aad)).unwrap();
        let n = serde_json::json!({
            "id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
            "event_type": event_type, "resource_type": "encrypt-resource", "summary": "支付成功",
            "resource": resource,
        });
        let body = n.to_string().into_bytes();
        let h = AnswerSigner::new(testkeys::PUB_KEY_ID, testkeys::wechat_public_private()).sign(&body, NOW, "n1");
        let headers = h.pairs().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        (body, headers)
    }

    fn lookup<'a>(h: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name: &str| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    const PAYMENT: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018",
        "transaction_id":"1217752501201407033233368018","trade_type":"JSAPI","trade_state":"SUCCESS",
        "trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"2018-06-08T10:34:56+08:00",
        "payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;

    #[test]
    fn payment_notification() {
        let (body, h) = build("TRANSACTION.SUCCESS", "transaction", PAYMENT);
        let (n, e) = parse_notification(&verifier(), lookup(&h), &body, &key(), NOW).unwrap();
        assert_eq!(n.id, "EV-2018022511223320873");
        let Event::Payment(t) = e else { panic!("not a payment: {e:?}") };
        assert_eq!(t.trade_state, TradeState::Success);
        assert_eq!(t.amount.unwrap().total, Some(Fen::new(100)));
    }

    #[test]
    fn refund_notifications() {
        let payload = |status: &str| {
            format!(
                r#"{{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"20150806125346",
                "refund_id":"50200207182018070300011301001","out_refund_no":"7752501201407033233368018",
                "refund_status":"{status}","success_time":"2018-06-08T10:34:56+08:00",
                "user_received_account":"招商银行信用卡0403","amount":{{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}}}"#
            )
        };
        for (ev, status, kind) in [
            ("REFUND.SUCCESS", "SUCCESS", RefundEvent::Success),
            ("REFUND.ABNORMAL", "ABNORMAL", RefundEvent::Abnormal),
            ("REFUND.CLOSED", "CLOSED", RefundEvent::Closed),
        ] {
            let (body, h) = build(ev, "refund", &payload(status));
            let (_, e) = parse_notification(&verifier(), lookup(&h), &body, &key(), NOW).unwrap();
            let Event::Refund(k, r) = e else { panic!("not a refund") };
            assert_eq!(k, kind);
            assert_eq!(r.amount.refund, Fen::new(999));
        }
    }

    #[test]
    fn transfer_bill_finished() {
        let payload = r#"{"out_bill_no":"plfk2020042013","transfer_bill_no":"1330000071100999991182020050700019480001",
            "state":"SUCCESS","mchid":"1900001109","transfer_amount":2000,"openid":"o-MYE42l80oelYMDE34nYD456Xoy",
            "create_time":"2015-05-20T13:29:35.120+08:00","update_time":"2015-05-20T13:29:35.120+08:00"}"#;
        let (body, h) = build("MCHTRANSFER.BILL.FINISHED", "mch_payment", payload);
        let (_, e) = parse_notification(&verifier(), lookup(&h), &body, &key(), NOW).unwrap();
        let Event::TransferBillFinished(b) = e else { panic!("not a transfer") };
        assert_eq!(
            (b.state, b.transfer_amount, b.mch_id.as_deref()),
            (TransferBillState::Success, Fen::new(2000), Some("1900001109"))
        );
    }

    #[test]
    fn verification_comes_before_parsing() {
        let (body, h) = build("TRANSACTION.SUCCESS", "transaction", PAYMENT);
        // Unsigned.
        assert_eq!(
            parse_notification(&verifier(), |_| None, &body, &key(), NOW).unwrap_err(),
            NotifyError::Verify(VerifyError::Unsigned("Wechatpay-Timestamp"))
        );
        // SIGNTEST probe.
        let mut probe = h.clone();
        for (k, v) in probe.iter_mut() {
            if k == "Wechatpay-Signature" {
                *v = format!("{SIGNTEST_PREFIX}{v}");
            }
        }
        assert_eq!(
            parse_notification(&verifier(), lookup(&probe), &body, &key(), NOW).unwrap_err(),
            NotifyError::Verify(VerifyError::SignTest)
        );
        // Tampered body: a re-serialised (pretty) body is different bytes, so it fails.
        let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&body).unwrap()).unwrap();
        assert_eq!(
            parse_notification(&verifier(), lookup(&h), &pretty, &key(), NOW).unwrap_err(),
            NotifyError::Verify(VerifyError::BadSignature)
        );
        // Replayed an hour later.
        assert!(matches!(
            parse_notification(&verifier(), lookup(&h), &body, &key(), NOW + 3600).unwrap_err(),
            NotifyError::Verify(VerifyError::Stale { .. })
        ));
        // Signed but encrypted with another APIv3 key.
        let other = ApiV3Key::new("ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(
            parse_notification(&verifier(), lookup(&h), &body, &other, NOW).unwrap_err(),
            NotifyError::Crypto(CryptoError::Aead)
        );
    }

    #[test]
    fn unknown_event_and_bad_payload() {
        let (body, h) = build("PROFITSHARING.SUCCESS", "x", "{}");
        assert_eq!(
            parse_notification(&verifier(), lookup(&h), &body, &key(), NOW).unwrap_err(),
            NotifyError::UnknownEvent("PROFITSHARING.SUCCESS".into())
        );
        let (body, h) = build("TRANSACTION.SUCCESS", "transaction", r#"{"trade_state":"SUCCESS"}"#);
        assert!(matches!(
            parse_notification(&verifier(), lookup(&h), &body, &key(), NOW).unwrap_err(),
            NotifyError::Payload { .. }
        ));
        assert_eq!(failure_body("验签失败"), r#"{"code":"FAIL","message":"验签失败"}"#);
    }
}
