//! APIv3 notifications: the JSON envelope with the payload sealed by
//! [`EncryptedResource::seal`] under the merchant's APIv3 key. Delivery (the retry ladder,
//! faults, signing each attempt) is [`crate::notify::deliver`]'s.
//!
//! Guesses: the envelope `id` is a fresh UUID-shaped string per event; `summary` uses the
//! wording of WeChat's documented examples (支付成功, 退款成功, 退款异常, 退款关闭).

use serde_json::{Value, json};
use wxpay::v3::EncryptedResource;
use wxpay::v3::api::format_v3_time;

use crate::Shared;
use crate::state::{Order, Refund, RefundStatus, State, nonce};

/// The envelope around an already sealed resource.
pub(crate) fn envelope_with(st: &State, event_type: &str, summary: &str, resource: &EncryptedResource) -> String {
    let id = nonce().to_lowercase();
    let id = format!("{}-{}-{}-{}-{}", &id[..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32]);
    json!({
        "id": id,
        "create_time": format_v3_time(st.clock.now()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": resource,
    })
    .to_string()
}

/// The envelope for one event, its resource sealed with `mch_id`'s APIv3 key.
fn envelope(
    shared: &Shared,
    st: &State,
    mch_id: &str,
    event_type: &str,
    summary: &str,
    kind: &str,
    payload: &Value,
) -> Option<String> {
    let mch = shared.merchants.get(mch_id)?;
    let resource =
        EncryptedResource::seal(&mch.cfg.api_v3_key, &payload.to_string(), &nonce()[..12], kind, Some(kind)).ok()?;
    Some(envelope_with(st, event_type, summary, &resource))
}

/// Records the `TRANSACTION.SUCCESS` notification of a paid v3 order.
pub(crate) fn queue_pay(shared: &Shared, st: &mut State, order: &Order) -> u64 {
    let payload = super::pay::transaction_json(order);
    let body = envelope(shared, st, &order.mch_id, "TRANSACTION.SUCCESS", "支付成功", "transaction", &payload)
        .unwrap_or_default();
    crate::notify::record(st, "pay", true, &order.mch_id, &order.out_trade_no, None, &order.notify_url, body)
}

/// Records the `REFUND.*` notification of a v3 refund in its final state; `None` without a
/// notify URL or while it is still processing.
pub(crate) fn queue_refund(shared: &Shared, st: &mut State, r: &Refund) -> Option<u64> {
    let url = r.notify_url.clone()?;
    let (event, summary) = match r.status {
        RefundStatus::Success => ("REFUND.SUCCESS", "退款成功"),
        RefundStatus::Change => ("REFUND.ABNORMAL", "退款异常"),
        RefundStatus::Refundclose => ("REFUND.CLOSED", "退款关闭"),
        RefundStatus::Processing => return None,
    };
    let mut payload = json!({
        "mchid": r.mch_id,
        "out_trade_no": r.out_trade_no,
        "transaction_id": r.transaction_id,
        "out_refund_no": r.out_refund_no,
        "refund_id": r.refund_id,
        "refund_status": super::pay::refund_json(r)["status"],
        "user_received_account": "支付用户零钱",
        "amount": {
            "total": r.total_fee.get(), "refund": r.refund_fee.get(),
            "payer_total": r.total_fee.get(), "payer_refund": r.refund_fee.get(),
        },
    });
    if let Some(t) = r.success_at {
        payload["success_time"] = json!(format_v3_time(t));
    }
    let body = envelope(shared, st, &r.mch_id, event, summary, "refund", &payload)?;
    Some(crate::notify::record(st, "refund", true, &r.mch_id, &r.out_trade_no, Some(&r.out_refund_no), &url, body))
}
