//! `POST /wxpay/notify/pay`: body limit → XML → merchant by mch_id/appid → signature over
//! the fields as received → return_code/result_code → facts → one transaction (raw
//! notification + [`settle::apply_payment`]) → SUCCESS.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use minipay_store::domain::mask;
use minipay_store::notifications::{self, NewNotification, NotificationKind};
use minipay_store::settle::{self, GroupAnswer, NotifiedPayment, PaymentApplied, PaymentFacts, Source};
use minipay_store::{Fen, StoreError};
use wxpay::api::parse_wechat_time;
use wxpay::xml::{self, Params};

use crate::State;
use crate::body;
use crate::outcome::{Handled, Reply};

#[tracing::instrument(name = "notification", skip_all, fields(kind = "payment"))]
pub async fn handle(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    body::receive(&req, payload, &state, NotificationKind::Payment, Reply::V2, |b| process(&state, b)).await
}

async fn process(state: &State, body: Bytes) -> Handled {
    let params = match xml::decode_with_limit(&body, state.max_body_bytes) {
        Ok(p) => p,
        Err(e) => return Handled::bad_xml(&e, &body),
    };
    let mch_id = params.get("mch_id").cloned().unwrap_or_default();
    let appid = params.get("appid").cloned();
    let Some(key) = state.merchants.key_for(&mch_id, appid.as_deref()) else {
        return Handled::reject("unknown_merchant", format!("mch_id {mch_id:?} appid {appid:?}"), &body);
    };
    if let Err(e) = wxpay::sign::verify(&params, key) {
        return Handled::reject("bad_signature", e.to_string(), &body);
    }
    // From here on the document is WeChat's word.
    let reference = params.get("out_trade_no").cloned().unwrap_or_default();
    let text = std::str::from_utf8(&body).expect("decode checked UTF-8");
    let success = |k: &str| params.get(k).map(String::as_str) == Some("SUCCESS");
    if !success("return_code") || !success("result_code") {
        // A genuine "payment failed" notice: nothing to apply (the order stays open for the
        // user to retry; expiry and orderquery close it). Keep it and acknowledge.
        return match keep_only(state, text, &mch_id, appid.as_deref(), &reference, None).await {
            Ok(()) => Handled::Ack { outcome: "not_paid", reference },
            Err(e) => Handled::Unavailable { error: e.to_string() },
        };
    }
    let facts = match facts_of(&params) {
        Ok(f) => f,
        Err(why) => return Handled::reject("invalid_fields", why, &body),
    };
    match apply(state, &facts, text, None).await {
        Ok(applied) => Handled::Ack { outcome: outcome_label(&applied, &facts), reference },
        Err(e) => Handled::Unavailable { error: e.to_string() },
    }
}

/// The metric label of a settled payment notification (a mismatch is logged here, masked).
pub(crate) fn outcome_label(applied: &PaymentApplied, facts: &PaymentFacts) -> &'static str {
    if let PaymentApplied::Mismatch { anomaly_id, reason } = applied {
        tracing::warn!(out_trade_no = %facts.out_trade_no, anomaly_id, reason = %reason,
            openid = %mask(&facts.openid), "genuine payment notification disagrees with the order");
    }
    match applied {
        PaymentApplied::Applied { late: false } => "applied",
        PaymentApplied::Applied { late: true } => "applied_late",
        PaymentApplied::AlreadyApplied => "duplicate",
        PaymentApplied::Mismatch { .. } => "mismatch",
        PaymentApplied::UnknownOrder { .. } => "unknown_order",
    }
}

/// The payment facts of a genuine SUCCESS notification. A required field missing or
/// unreadable is refused: we cannot apply what we cannot read, and WeChat's retry (or the
/// orderquery follow-up) may do better.
fn facts_of(p: &Params) -> Result<PaymentFacts, String> {
    let req = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned().ok_or_else(|| format!("missing {k}"));
    let fen = |k: &str| -> Result<Option<Fen>, String> {
        match p.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => Fen::parse_fen(v).map(Some).map_err(|_| format!("invalid {k}")),
        }
    };
    let time_end = req("time_end")?;
    Ok(PaymentFacts {
        out_trade_no: req("out_trade_no")?,
        mch_id: req("mch_id")?,
        appid: req("appid")?,
        openid: req("openid")?,
        total_fee: fen("total_fee")?.ok_or("missing total_fee")?,
        cash_fee: fen("cash_fee")?,
        transaction_id: req("transaction_id")?,
        paid_at: parse_wechat_time(&time_end).ok_or("invalid time_end")?,
        bank_type: p.get("bank_type").filter(|v| !v.is_empty()).cloned(),
        // replaced by the stored notification's id inside the transaction
        source: Source::Notification { notification_id: 0 },
    })
}

/// Settles a genuine payment notification: the raw notification and the payment in one
/// transaction. `fields`: the decrypted payload of a v3 notification (its body is
/// ciphertext); `None` for v2, whose body shows every field.
pub(crate) async fn apply(
    state: &State,
    facts: &PaymentFacts,
    text: &str,
    fields: Option<serde_json::Value>,
) -> Result<PaymentApplied, StoreError> {
    // The common case (first delivery for an open, matching order): grouped with the other
    // notifications arriving meanwhile, one statement and one commit for the group. The
    // grouped statement stores bodies only, so v3 notifications take the single path.
    if fields.is_none() {
        let grouped = NotifiedPayment { facts: facts.clone(), body: text.to_owned() };
        match state.payments.submit(grouped).await {
            Ok(GroupAnswer::Applied) => return Ok(PaymentApplied::Applied { late: false }),
            Ok(GroupAnswer::Repeat) => return Ok(PaymentApplied::AlreadyApplied),
            Ok(GroupAnswer::NotHandled) | Err(_) => {}
        }
    }
    // Not applied by the group: a repeat, a mismatch, a late payment, or the group failed.
    // A repeat of the very body that was applied costs one statement; everything else takes
    // the single path, which decides exactly as without grouping.
    let notification = NewNotification {
        kind: NotificationKind::Payment,
        mch_id: &facts.mch_id,
        appid: Some(&facts.appid),
        reference: &facts.out_trade_no,
        body: text,
        fields,
        expected_outcome: "applied",
    };
    {
        let mut conn = state.pool.acquire().await?;
        if notifications::count_applied_repeat(&mut conn, NotificationKind::Payment, text).await? {
            return Ok(PaymentApplied::AlreadyApplied);
        }
        if settle::apply_notified_payment(&mut conn, &notification, facts).await?.is_some() {
            return Ok(PaymentApplied::Applied { late: false });
        }
    }
    let mut tx = state.pool.begin().await?;
    let stored = notifications::record(&mut tx, &notification).await?;
    let facts = PaymentFacts { source: Source::Notification { notification_id: stored.id }, ..facts.clone() };
    let applied = settle::apply_payment(&mut tx, &facts).await?;
    let outcome = match applied {
        PaymentApplied::Applied { .. } => "applied",
        PaymentApplied::AlreadyApplied => "already_applied",
        PaymentApplied::Mismatch { .. } => "mismatch",
        PaymentApplied::UnknownOrder { .. } => "unknown_order",
    };
    if stored.first_delivery && outcome != "applied" {
        notifications::set_outcome(&mut tx, stored.id, outcome).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

pub(crate) async fn keep_only(
    state: &State,
    text: &str,
    mch_id: &str,
    appid: Option<&str>,
    reference: &str,
    fields: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    // One statement: no transaction needed.
    let mut conn = state.pool.acquire().await?;
    notifications::record(
        &mut conn,
        &NewNotification {
            kind: NotificationKind::Payment,
            mch_id,
            appid,
            reference,
            body: text,
            fields,
            expected_outcome: "not_paid",
        },
    )
    .await?;
    Ok(())
}
