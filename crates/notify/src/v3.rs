//! `POST /wxpay/v3/notify/{mch_id}/pay` and `/wxpay/v3/notify/{mch_id}/refund`: APIv3
//! notifications for the merchant the path names.
//!
//! Body limit → the four `Wechatpay-*` headers verified against the raw body (SIGNTEST
//! probes, stale timestamps, unknown serials and bad signatures refused; an unknown serial in
//! certificate mode costs one `/v3/certificates` refresh first) → envelope → AEAD_AES_256_GCM
//! with the APIv3 key (tag and associated_data checked) → the event must belong on this path
//! (`TRANSACTION.*` on pay, `REFUND.*` on refund) and name this merchant (`mchid`) and, for
//! payments, one of its apps → the same facts, the same settlement and the same one
//! transaction as v2 ([`crate::pay::apply`], [`crate::refund::record`]).
//!
//! Replies follow v3: 204 with no body once committed; a refusal is a 4xx and a database
//! failure a 5xx, both with `{"code":"FAIL","message":…}` (WeChat retries every non-2xx).
//! The path carries the merchant because a v3 notification names its merchant only inside
//! the encrypted resource, and the APIv3 key that decrypts it is per merchant.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use minipay_store::notifications::NotificationKind;
use minipay_store::settle::{PaymentFacts, RefundFacts, RefundResult, Source};
use wxpay::v3::api::{RefundStatus, TradeState};
use wxpay::v3::notify::{RefundEvent, RefundNotice};
use wxpay::v3::{Event, Notification, NotifyError, SignedHeaders, VerifyError};

use crate::State;
use crate::body;
use crate::outcome::{Handled, Reply};

#[tracing::instrument(name = "notification", skip_all, fields(kind = "payment", protocol = "v3"))]
pub async fn pay(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    receive(req, payload, path.into_inner(), state, NotificationKind::Payment).await
}

#[tracing::instrument(name = "notification", skip_all, fields(kind = "refund", protocol = "v3"))]
pub async fn refund(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    receive(req, payload, path.into_inner(), state, NotificationKind::Refund).await
}

async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    mch_id: String,
    state: web::Data<State>,
    kind: NotificationKind,
) -> HttpResponse {
    body::receive(&req, payload, &state, kind, Reply::V3, |b| process(&state, &req, &mch_id, kind, b)).await
}

fn unauthorized(reason: &'static str, detail: String, body: &Bytes) -> Handled {
    Handled::Reject { reason, detail, status: StatusCode::UNAUTHORIZED, body: body.clone(), size: body.len() as u64 }
}

async fn process(state: &State, req: &HttpRequest, mch_id: &str, kind: NotificationKind, body: Bytes) -> Handled {
    let Some(client) = state.v3.get(mch_id) else {
        return Handled::reject("unknown_merchant", format!("no APIv3 merchant {mch_id:?}"), &body);
    };
    let lookup = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = match SignedHeaders::from_lookup(lookup) {
        Ok(h) => h,
        Err(e) => return unauthorized("unsigned", e.to_string(), &body),
    };
    let (envelope, event) = match client.parse_notification(&headers, &body).await {
        Ok(parsed) => parsed,
        Err(NotifyError::Verify(e)) => {
            let reason = match e {
                VerifyError::SignTest => "signtest",
                VerifyError::Stale { .. } | VerifyError::BadTimestamp(_) => "stale",
                VerifyError::UnknownSerial(_) | VerifyError::CertificateNotValid { .. } => "unknown_serial",
                VerifyError::Unsigned(_) => "unsigned",
                VerifyError::BadSignature => "bad_signature",
            };
            return unauthorized(reason, e.to_string(), &body);
        }
        Err(e @ NotifyError::Crypto(_)) => return Handled::reject("bad_resource", e.to_string(), &body),
        Err(e) => return Handled::reject("invalid_fields", e.to_string(), &body),
    };
    // From here on the content is WeChat's word.
    let text = std::str::from_utf8(&body).unwrap_or_default();
    match (kind, event) {
        (NotificationKind::Payment, Event::Payment(t)) => payment(state, mch_id, &envelope, t, text).await,
        (NotificationKind::Refund, Event::Refund(e, notice)) => refund_event(state, mch_id, e, notice, text).await,
        (_, other) => Handled::reject(
            "wrong_endpoint",
            format!("{} delivered to the {} endpoint ({other:?})", envelope.event_type, kind.endpoint()),
            &body,
        ),
    }
}

async fn payment(
    state: &State,
    mch_id: &str,
    envelope: &Notification,
    t: wxpay::v3::api::Transaction,
    text: &str,
) -> Handled {
    let reference = t.out_trade_no.clone();
    let fields = serde_json::to_value(&t).unwrap_or_default();
    // A genuine notification for another merchant or an app that is not this merchant's:
    // the same refusal as a v2 notification naming a foreign app.
    if t.mchid != mch_id || state.merchants.app_merchant(&t.appid) != Some(mch_id) {
        return Handled::reject(
            "unknown_merchant",
            format!("event {} names mchid {:?} appid {:?} on merchant {mch_id}'s path", envelope.id, t.mchid, t.appid),
            &Bytes::copy_from_slice(text.as_bytes()),
        );
    }
    if t.trade_state != TradeState::Success {
        // WeChat documents TRANSACTION.SUCCESS only; anything else is kept, not applied.
        return match crate::pay::keep_only(state, text, mch_id, Some(&t.appid), &reference, Some(fields)).await {
            Ok(()) => Handled::Ack { outcome: "not_paid", reference },
            Err(e) => Handled::Unavailable { error: e.to_string() },
        };
    }
    let facts = match facts_of(&t) {
        Ok(f) => f,
        Err(why) => return Handled::reject("invalid_fields", why, &Bytes::copy_from_slice(text.as_bytes())),
    };
    match crate::pay::apply(state, &facts, text, Some(fields)).await {
        Ok(applied) => Handled::Ack { outcome: crate::pay::outcome_label(&applied, &facts), reference },
        Err(e) => Handled::Unavailable { error: e.to_string() },
    }
}

/// The payment facts of a `TRANSACTION.SUCCESS` payload; a required field missing is
/// refused (WeChat's retry or the orderquery follow-up may do better).
fn facts_of(t: &wxpay::v3::api::Transaction) -> Result<PaymentFacts, String> {
    let amount = t.amount.as_ref().ok_or("missing amount")?;
    Ok(PaymentFacts {
        out_trade_no: t.out_trade_no.clone(),
        mch_id: t.mchid.clone(),
        appid: t.appid.clone(),
        openid: t.payer.as_ref().and_then(|p| p.openid.clone()).ok_or("missing payer.openid")?,
        total_fee: amount.total.ok_or("missing amount.total")?,
        cash_fee: amount.payer_total,
        transaction_id: t.transaction_id.clone().filter(|s| !s.is_empty()).ok_or("missing transaction_id")?,
        paid_at: t.success_time.ok_or("missing success_time")?.to_utc(),
        bank_type: t.bank_type.clone(),
        source: Source::Notification { notification_id: 0 },
    })
}

async fn refund_event(state: &State, mch_id: &str, event: RefundEvent, n: RefundNotice, text: &str) -> Handled {
    let reference = n.out_refund_no.clone();
    if n.mchid != mch_id {
        return Handled::reject(
            "unknown_merchant",
            format!("refund {} names mchid {:?} on merchant {mch_id}'s path", n.out_refund_no, n.mchid),
            &Bytes::copy_from_slice(text.as_bytes()),
        );
    }
    let fields = serde_json::to_value(&n).unwrap_or_default();
    // The event type and the status inside must agree; the status is what is applied.
    let status = match (event, n.refund_status) {
        (RefundEvent::Success, RefundStatus::Success) => RefundResult::Succeeded,
        (RefundEvent::Closed, RefundStatus::Closed) => RefundResult::Closed,
        (RefundEvent::Abnormal, RefundStatus::Abnormal) => RefundResult::Abnormal,
        (e, s) => {
            return Handled::reject(
                "invalid_fields",
                format!("event {e:?} carries refund_status {s:?}"),
                &Bytes::copy_from_slice(text.as_bytes()),
            );
        }
    };
    let facts = RefundFacts {
        out_refund_no: n.out_refund_no,
        refund_id: n.refund_id,
        mch_id: mch_id.to_owned(),
        out_trade_no: Some(n.out_trade_no),
        status,
        refund_fee: n.amount.refund,
        success_time: n.success_time.map(|t| t.to_utc()),
        recv_account: n.user_received_account,
        source: Source::Notification { notification_id: 0 },
    };
    match crate::refund::record(state, fields, text, mch_id, None, &reference, Some(&facts)).await {
        Ok(applied) => Handled::Ack { outcome: crate::refund::outcome_label(&applied, &reference), reference },
        Err(e) => Handled::Unavailable { error: e.to_string() },
    }
}
