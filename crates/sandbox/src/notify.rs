//! Payment and refund notifications: built like WeChat's (payment: signed XML; refund:
//! unsigned XML with an encrypted `req_info`), POSTed to the notify URL, and retried on
//! WeChat's schedule (15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h)
//! times `time_scale` until the receiver answers `return_code` SUCCESS. Every attempt is
//! recorded (time, HTTP status, an excerpt of the reply) for `/sandbox/notifications`.
//!
//! APIv3 notifications (built in [`crate::v3::notify`]) ride the same ladder and faults;
//! each attempt is signed afresh (WeChat's timestamps must be within 300 s of the
//! receiver's clock, and retries span a day) and succeeds on HTTP 200 or 204.

use std::sync::Arc;
use std::time::Duration;

use wxpay::sign;
use wxpay::xml;

use crate::Shared;
use crate::clock::{compact, dashed};
use crate::faults::FaultKind;
use crate::state::{Attempt, Key, Notification, Order, State, nonce};
use crate::wire::fields;

/// Records a payment notification for `order`; the caller starts its delivery.
pub fn queue_pay(shared: &Shared, st: &mut State, order: &Order) -> u64 {
    if order.v3 {
        return crate::v3::notify::queue_pay(shared, st, order);
    }
    let mch = &shared.merchants[&order.mch_id];
    let mut p = fields([
        ("return_code", "SUCCESS".to_owned()),
        ("result_code", "SUCCESS".to_owned()),
        ("appid", order.appid.clone()),
        ("mch_id", order.mch_id.clone()),
        ("nonce_str", nonce()),
        ("openid", order.openid.clone()),
        ("is_subscribe", "N".to_owned()),
        ("trade_type", order.trade_type.clone()),
        ("bank_type", order.bank_type.clone()),
        ("total_fee", order.total_fee.get().to_string()),
        ("fee_type", "CNY".to_owned()),
        ("cash_fee", order.total_fee.get().to_string()),
        ("transaction_id", order.transaction_id.clone().unwrap_or_default()),
        ("out_trade_no", order.out_trade_no.clone()),
        ("time_end", order.paid_at.map(compact).unwrap_or_default()),
    ]);
    if !order.attach.is_empty() {
        p.insert("attach".into(), order.attach.clone());
    }
    // Signed with the order's sign type (an HMAC-SHA256 order gets an HMAC-signed notification).
    if order.sign_type != wxpay::SignType::Md5 {
        p.insert("sign_type".into(), order.sign_type.as_str().into());
    }
    let s = sign::sign(&p, &mch.cfg.api_key, order.sign_type);
    p.insert("sign".into(), s);
    record(st, "pay", false, &order.mch_id, &order.out_trade_no, None, &order.notify_url, xml::encode(&p))
}

/// Records a refund notification for the refund at `key` (in its current final state);
/// `None` when there is nowhere to send it.
pub fn queue_refund(shared: &Shared, st: &mut State, key: &Key) -> Option<u64> {
    let r = st.refunds.get(key)?.clone();
    if r.v3 {
        return crate::v3::notify::queue_refund(shared, st, &r);
    }
    let url = r.notify_url.clone()?;
    let mch = &shared.merchants[&r.mch_id];
    let mut inner = fields([
        ("transaction_id", r.transaction_id.clone()),
        ("out_trade_no", r.out_trade_no.clone()),
        ("refund_id", r.refund_id.clone()),
        ("out_refund_no", r.out_refund_no.clone()),
        ("total_fee", r.total_fee.get().to_string()),
        ("settlement_total_fee", r.total_fee.get().to_string()),
        ("refund_fee", r.refund_fee.get().to_string()),
        ("settlement_refund_fee", r.refund_fee.get().to_string()),
        ("refund_status", r.status.as_str().to_owned()),
        ("refund_recv_accout", "支付用户的零钱".to_owned()),
        ("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".to_owned()),
        ("refund_request_source", "API".to_owned()),
    ]);
    if let Some(t) = r.success_at {
        inner.insert("success_time".into(), dashed(t));
    }
    let req_info = wxpay::refund_notify::encrypt_req_info(&inner, &mch.cfg.api_key);
    let outer = fields([
        ("return_code", "SUCCESS".to_owned()),
        ("appid", r.appid.clone()),
        ("mch_id", r.mch_id.clone()),
        ("nonce_str", nonce()),
        ("req_info", req_info),
    ]);
    Some(record(st, "refund", false, &r.mch_id, &r.out_trade_no, Some(&r.out_refund_no), &url, xml::encode(&outer)))
}

/// Records a notification of `kind` (`pay`, `refund`, `transfer`); `v3` picks the v3
/// delivery (signed JSON). `out_trade_no` holds the business number (out_bill_no for transfers).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    st: &mut State,
    kind: &str,
    v3: bool,
    mch_id: &str,
    out_trade_no: &str,
    out_refund_no: Option<&str>,
    url: &str,
    body: String,
) -> u64 {
    let id = st.next_seq();
    let now = st.clock.now();
    st.notifications.push(Notification {
        id,
        kind: kind.to_owned(),
        v3,
        mch_id: mch_id.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: out_refund_no.map(str::to_owned),
        url: url.to_owned(),
        status: "pending".into(),
        created_at: now,
        body,
        attempts: Vec::new(),
    });
    id
}

/// Delivers notification `id`: a first attempt at once, then one per schedule step, until
/// a SUCCESS reply.
pub async fn deliver(shared: Arc<Shared>, id: u64) {
    let waits = std::iter::once(0).chain(shared.cfg.retry_schedule_secs.iter().copied());
    for wait in waits {
        tokio::time::sleep(shared.cfg.scaled(Duration::from_secs(wait))).await;
        let Some(n) = ({
            let st = shared.lock();
            st.notifications.iter().find(|n| n.id == id).map(|n| Outgoing {
                kind: n.kind.clone(),
                v3: n.v3,
                mch_id: n.mch_id.clone(),
                url: n.url.clone(),
                body: n.body.clone(),
            })
        }) else {
            return;
        };
        let kind = &n.kind;
        let fault = shared.lock().faults.take_notify(kind);
        let copies = match &fault {
            Some(FaultKind::Drop) => {
                push_attempt(&shared, id, dropped());
                continue;
            }
            Some(FaultKind::Delay { delay_ms }) => {
                tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
                1
            }
            Some(FaultKind::Reorder { hold_ms }) => {
                let hold = Duration::from_millis(hold_ms.unwrap_or(2000));
                let _ = tokio::time::timeout(hold, shared.sent.notified()).await;
                1
            }
            Some(FaultKind::Duplicate) => 2,
            Some(FaultKind::SignTest) if n.v3 => {
                let mut probe = post(&shared, &n, true).await;
                probe.fault = Some("signtest".into());
                if probe.success {
                    probe.error = Some("the receiver accepted a SIGNTEST probe (it must answer non-2xx)".into());
                }
                // A probe never counts as delivery, whatever the receiver said.
                probe.success = false;
                push_attempt(&shared, id, probe);
                1
            }
            _ => 1,
        };
        let mut delivered = false;
        for _ in 0..copies {
            let mut a = post(&shared, &n, false).await;
            a.fault = fault.as_ref().map(fault_name);
            delivered |= a.success;
            push_attempt(&shared, id, a);
            shared.sent.notify_waiters();
        }
        if delivered {
            set_status(&shared, id, "delivered");
            return;
        }
    }
    set_status(&shared, id, "gave_up");
}

fn fault_name(f: &FaultKind) -> String {
    match f {
        FaultKind::Delay { .. } => "delay",
        FaultKind::Reorder { .. } => "reorder",
        FaultKind::Duplicate => "duplicate",
        FaultKind::SignTest => "signtest",
        _ => "other",
    }
    .to_owned()
}

fn dropped() -> Attempt {
    Attempt {
        at: chrono::Utc::now(),
        http_status: None,
        reply_excerpt: String::new(),
        error: Some("not sent (drop fault)".into()),
        fault: Some("drop".into()),
        success: false,
    }
}

/// One notification as it is about to be sent.
struct Outgoing {
    kind: String,
    v3: bool,
    mch_id: String,
    url: String,
    body: String,
}

/// POSTs one attempt; `probe` sends a v3 body with a `WECHATPAY/SIGNTEST/` signature.
async fn post(shared: &Shared, n: &Outgoing, probe: bool) -> Attempt {
    let at = shared.lock().clock.now();
    let mut req =
        shared.http.post(&n.url).body(n.body.clone()).timeout(Duration::from_millis(shared.cfg.notify_timeout_ms));
    if n.v3 {
        req = req.header("Content-Type", "application/json");
        if let Some(m) = shared.merchants.get(&n.mch_id) {
            let mut h = crate::v3::sign_now(&m.v3.signer(), n.body.as_bytes());
            if probe {
                h.signature = format!("{}{}", wxpay::v3::verify::SIGNTEST_PREFIX, h.signature);
            }
            for (k, v) in h.pairs() {
                req = req.header(k, v);
            }
            req = req.header(crate::v3::SIGNATURE_TYPE.0, crate::v3::SIGNATURE_TYPE.1);
        }
    } else {
        req = req.header("Content-Type", "text/xml; charset=utf-8");
    }
    let res = req.send().await;
    match res {
        Err(e) => Attempt {
            at,
            http_status: None,
            reply_excerpt: String::new(),
            error: Some(e.to_string()),
            fault: None,
            success: false,
        },
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            // v2: WeChat stops retrying once the receiver answers return_code SUCCESS with
            // HTTP 200. v3: HTTP 200 or 204, whatever the body.
            let success = if n.v3 {
                status == 200 || status == 204
            } else {
                status == 200
                    && xml::decode(text.as_bytes()).is_ok_and(|p| p.get("return_code").is_some_and(|c| c == "SUCCESS"))
            };
            Attempt {
                at,
                http_status: Some(status),
                reply_excerpt: text.chars().take(200).collect(),
                error: None,
                fault: None,
                success,
            }
        }
    }
}

fn push_attempt(shared: &Shared, id: u64, mut a: Attempt) {
    let mut st = shared.lock();
    a.at = st.clock.now();
    if let Some(n) = st.notifications.iter_mut().find(|n| n.id == id) {
        n.attempts.push(a);
    }
}

fn set_status(shared: &Shared, id: u64, status: &str) {
    let mut st = shared.lock();
    if let Some(n) = st.notifications.iter_mut().find(|n| n.id == id) {
        n.status = status.to_owned();
    }
}

/// Settles the refund at `key` when its (scaled) processing delay has passed, and starts its
/// notification.
pub async fn settle_refund_later(shared: Arc<Shared>, key: Key, wait: Duration) {
    tokio::time::sleep(wait).await;
    let id = {
        let mut st = shared.lock();
        let now = st.clock.now();
        match st.refunds.get_mut(&key) {
            Some(r) if r.status == crate::state::RefundStatus::Processing => {
                r.status = crate::state::RefundStatus::Success;
                r.success_at = Some(now);
            }
            _ => return,
        }
        queue_refund(&shared, &mut st, &key)
    };
    if let Some(id) = id {
        shared.spawn(deliver(shared.clone(), id));
    }
}
