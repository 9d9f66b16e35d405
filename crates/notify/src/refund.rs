//! `POST /wxpay/notify/refund`: body limit → outer XML → merchant by mch_id/appid →
//! decrypt `req_info` with the merchant key (the outer document is unsigned; decrypting is
//! the authentication) → facts → one transaction (raw notification +
//! [`settle::apply_refund_result`]) → SUCCESS.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use minipay_store::StoreError;
use minipay_store::notifications::{self, NewNotification, NotificationKind};
use minipay_store::settle::{self, RefundApplied, RefundFacts, RefundResult, Source};
use wxpay::api::RefundStatus as WxRefundStatus;
use wxpay::refund_notify::{RefundNotifyInfo, decrypt_req_info};
use wxpay::xml::{self, Params};

use crate::State;
use crate::body;
use crate::outcome::{Handled, Reply};

#[tracing::instrument(name = "notification", skip_all, fields(kind = "refund"))]
pub async fn handle(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    body::receive(&req, payload, &state, NotificationKind::Refund, Reply::V2, |b| process(&state, b)).await
}

async fn process(state: &State, body: Bytes) -> Handled {
    let outer = match xml::decode_with_limit(&body, state.max_body_bytes) {
        Ok(p) => p,
        Err(e) => return Handled::bad_xml(&e, &body),
    };
    if outer.get("return_code").map(String::as_str) != Some("SUCCESS") {
        // No req_info to authenticate: nothing we could act on, and nothing proves it is
        // WeChat's. Refuse like any other unverifiable body.
        return Handled::reject("not_success", "return_code is not SUCCESS", &body);
    }
    let mch_id = outer.get("mch_id").cloned().unwrap_or_default();
    let appid = outer.get("appid").cloned();
    let Some(key) = state.merchants.key_for(&mch_id, appid.as_deref()) else {
        return Handled::reject("unknown_merchant", format!("mch_id {mch_id:?} appid {appid:?}"), &body);
    };
    let Some(req_info) = outer.get("req_info") else {
        return Handled::reject("bad_req_info", "no req_info", &body);
    };
    let inner = match decrypt_req_info(req_info, key) {
        Ok(p) => p,
        Err(e) => return Handled::reject("bad_req_info", e.to_string(), &body),
    };
    // From here on the content is WeChat's word (only our key encrypts it).
    let info = match RefundNotifyInfo::from_params(&inner) {
        Ok(i) => i,
        Err(e) => return Handled::reject("invalid_fields", e.to_string(), &body),
    };
    let reference = info.out_refund_no.clone();
    let text = std::str::from_utf8(&body).expect("decode checked UTF-8");
    let result = match info.refund_status {
        WxRefundStatus::Success => Some(RefundResult::Succeeded),
        WxRefundStatus::RefundClose => Some(RefundResult::Closed),
        WxRefundStatus::Change => Some(RefundResult::Abnormal),
        // Documented as never notified; if it comes, it is not a result yet.
        WxRefundStatus::Processing => None,
    };
    let Some(status) = result else {
        return match record(state, fields_of(&inner), text, &mch_id, appid.as_deref(), &reference, None).await {
            Ok(_) => Handled::Ack { outcome: "not_final", reference },
            Err(e) => Handled::Unavailable { error: e.to_string() },
        };
    };
    let facts = RefundFacts {
        out_refund_no: info.out_refund_no,
        refund_id: info.refund_id,
        mch_id: mch_id.clone(),
        out_trade_no: Some(info.out_trade_no),
        status,
        refund_fee: info.refund_fee,
        success_time: info.success_time,
        recv_account: info.refund_recv_accout,
        source: Source::Notification { notification_id: 0 },
    };
    match record(state, fields_of(&inner), text, &mch_id, appid.as_deref(), &reference, Some(&facts)).await {
        Ok(applied) => Handled::Ack { outcome: outcome_label(&applied, &reference), reference },
        Err(e) => Handled::Unavailable { error: e.to_string() },
    }
}

fn fields_of(inner: &Params) -> serde_json::Value {
    inner.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect()
}

/// The metric label of a refund notification (a mismatch is logged here).
pub(crate) fn outcome_label(applied: &Option<RefundApplied>, reference: &str) -> &'static str {
    match applied {
        Some(RefundApplied::Applied { .. }) => "applied",
        Some(RefundApplied::AlreadyApplied) => "duplicate",
        Some(RefundApplied::Mismatch { anomaly_id, reason }) => {
            tracing::warn!(out_refund_no = %reference, anomaly_id, reason = %reason,
                "genuine refund notification disagrees with the refund");
            "mismatch"
        }
        Some(RefundApplied::UnknownRefund { .. }) => "unknown_refund",
        None => "not_final",
    }
}

/// Keeps the notification and, when there are facts, settles them, in one transaction.
/// `fields`: the decrypted content (v2 `req_info`, v3 resource).
pub(crate) async fn record(
    state: &State,
    fields: serde_json::Value,
    text: &str,
    mch_id: &str,
    appid: Option<&str>,
    reference: &str,
    facts: Option<&RefundFacts>,
) -> Result<Option<RefundApplied>, StoreError> {
    let mut tx = state.pool.begin().await?;
    let stored = notifications::record(
        &mut tx,
        &NewNotification {
            kind: NotificationKind::Refund,
            mch_id,
            appid,
            reference,
            body: text,
            fields: Some(fields),
            expected_outcome: if facts.is_some() { "applied" } else { "not_final" },
        },
    )
    .await?;
    let applied = match facts {
        Some(f) => {
            let f = RefundFacts { source: Source::Notification { notification_id: stored.id }, ..f.clone() };
            Some(settle::apply_refund_result(&mut tx, &f).await?)
        }
        None => None,
    };
    let outcome = match &applied {
        Some(RefundApplied::Applied { .. }) => "applied",
        Some(RefundApplied::AlreadyApplied) => "already_applied",
        Some(RefundApplied::Mismatch { .. }) => "mismatch",
        Some(RefundApplied::UnknownRefund { .. }) => "unknown_refund",
        None => "not_final",
    };
    if stored.first_delivery && outcome != "applied" && outcome != "not_final" {
        notifications::set_outcome(&mut tx, stored.id, outcome).await?;
    }
    tx.commit().await?;
    Ok(applied)
}
