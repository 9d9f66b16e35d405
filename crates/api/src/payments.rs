//! What the order and refund endpoints do at WeChat, apart from HTTP: issuing unifiedorder
//! with bounded retries, settling an order from orderquery, sending and following a refund.
//!
//! Rules that keep money right:
//! - A number (out_trade_no, out_refund_no) is fixed before the first call and reused for
//!   every retry with the same parameters; an `Unknown` outcome is retried a bounded number
//!   of times and otherwise left for a later read/worker pass to resolve.
//! - Payments and refund results are applied only through `minipay_store::settle`.
//! - A refund is committed `pending` (amount reserved under the order's row lock) before
//!   WeChat is called, so a crash in between leaves a record that is retried, never a
//!   refund we don't know about.
//! - A refund's reservation is released only when WeChat definitely refused it: a refusal
//!   of the first call, or of the call after refundquery said REFUNDNOTEXIST. A refusal that
//!   follows an unclear call leaves the refund `unknown` for refundquery ([`RefundSend`]).

use std::time::Duration;

use minipay_store::domain::RefundStatus;
use minipay_store::orders::{self, Order};
use minipay_store::refunds::{self, Refund};
use minipay_store::settle::{self, PaymentApplied, RefundFacts, RefundResult, Source};
use wxpay::Outcome;
use wxpay::merchant::{NotSent, Op, Prepay, RefundCall};

use crate::error::ApiError;
use crate::idempotency::ClaimTicket;
use crate::state::AppState;

/// Attempts per call when WeChat's answer is Unknown (SYSTEMERROR, timeout, …).
const ATTEMPTS: u32 = 3;

/// A call refused before any I/O: a request WeChat would refuse is the caller's (422); a
/// missing client certificate or key is our configuration's (500, logged).
fn not_sent(e: NotSent) -> ApiError {
    match e {
        NotSent::InvalidRequest(m) => ApiError::invalid("invalid_request", m),
        e @ NotSent::Configuration(_) => ApiError::internal(&e),
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
}

/// What unifiedorder led to.
pub enum Issued {
    Prepaid {
        prepay_id: String,
    },
    /// WeChat says the order is paid (ORDERPAID); settled from orderquery when possible.
    Paid,
    /// WeChat refused for good with this code (the order was marked failed or closed).
    Refused {
        code: String,
        message: String,
    },
    /// No answer after the retries: the order stays `created`; retrying is safe.
    Unknown {
        reason: String,
    },
}

/// Issues (or re-issues, same number and parameters) unifiedorder for an open order. With
/// the request's [`ClaimTicket`], the `prepaid` mark is left to be written with the stored
/// response.
pub async fn issue(state: &AppState, order: &Order, ticket: Option<&ClaimTicket>) -> Result<Issued, ApiError> {
    let client = state.wxpay(&order.mch_id, &order.appid)?;
    let req = Prepay {
        description: order.description.clone(),
        out_trade_no: order.out_trade_no.clone(),
        total: order.amount,
        client_ip: state.config.api.spbill_create_ip.clone(),
        notify_url: state.config.pay_notify_url_for(&order.mch_id),
        openid: order.openid.clone(),
        attach: order.attach.clone(),
        // Guess (WeChat docs: time_expire must be at least 5 minutes after the call for
        // JSAPI, v2 and v3 alike): shorter lifetimes are not sent, and our expiry job closes
        // the order.
        time_expire: (order.expires_at - order.created_at >= chrono::Duration::minutes(5)).then_some(order.expires_at),
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let outcome = client.prepay(&req).await.map_err(not_sent)?;
        state.observe(client, Op::Prepay, &outcome);
        match outcome {
            Outcome::Success(prepay_id) => {
                // Asynchronous commit: see `state` for why losing this mark is harmless.
                if ticket.is_some_and(|t| t.defer_prepaid(&order.out_trade_no, &prepay_id)) {
                    return Ok(Issued::Prepaid { prepay_id });
                }
                let mark = (order.out_trade_no.clone(), prepay_id.clone());
                if !matches!(state.groups.prepaid.submit(mark).await, Ok(Some(_))) {
                    orders::mark_prepaid(&state.pool_async, &order.out_trade_no, &prepay_id).await?;
                }
                return Ok(Issued::Prepaid { prepay_id });
            }
            Outcome::Failed { code, message } => return refused(state, order, code, message).await,
            Outcome::Unknown { reason } => {
                tracing::warn!(out_trade_no = %order.out_trade_no, attempt, %reason, "unifiedorder unknown");
                last = reason;
                if attempt < ATTEMPTS {
                    backoff(attempt).await;
                }
            }
        }
    }
    orders::record_error(&state.pool, order.id, &format!("unifiedorder unknown: {last}")).await?;
    Ok(Issued::Unknown { reason: last })
}

async fn refused(state: &AppState, order: &Order, code: String, message: String) -> Result<Issued, ApiError> {
    match code.as_str() {
        "ORDERPAID" => {
            settle_from_query(state, order).await?;
            Ok(Issued::Paid)
        }
        "ORDERCLOSED" => {
            let mut tx = state.pool.begin().await?;
            if let Some(o) = orders::lock(&mut tx, &order.out_trade_no).await?.filter(Order::is_open) {
                orders::set_closed(&mut tx, &o).await?;
            }
            tx.commit().await?;
            Ok(Issued::Refused { code, message })
        }
        _ => {
            // OUT_TRADE_NO_USED, parameter and account errors: this order can never be
            // prepaid as it stands. A genuine payment arriving later still wins (failed → paid).
            let mut tx = state.pool.begin().await?;
            if let Some(o) = orders::lock(&mut tx, &order.out_trade_no).await?.filter(Order::is_open) {
                orders::set_failed(&mut tx, &o, &format!("{code}: {message}")).await?;
            }
            tx.commit().await?;
            Ok(Issued::Refused { code, message })
        }
    }
}

/// Asks orderquery about an open order and applies what it proves (paid; closed at WeChat).
/// Returns the order as stored afterwards. Unknown answers change nothing.
pub async fn settle_from_query(state: &AppState, order: &Order) -> Result<Order, ApiError> {
    let client = state.wxpay(&order.mch_id, &order.appid)?;
    let outcome = client.order_query(&order.out_trade_no).await.map_err(not_sent)?;
    state.observe(client, Op::OrderQuery, &outcome);
    let mut tx = state.pool.begin().await?;
    let Some(current) = orders::lock(&mut tx, &order.out_trade_no).await? else {
        return Err(ApiError::not_found("order_not_found", "no such order"));
    };
    match outcome {
        Outcome::Success(q) => {
            if let Some(facts) = orders::facts_from_query(&current, &q) {
                let applied = settle::apply_payment(&mut tx, &facts).await?;
                if let PaymentApplied::Mismatch { reason, .. } = &applied {
                    tracing::error!(out_trade_no = %order.out_trade_no, %reason, "orderquery disagrees with the order");
                }
            } else if q.trade_state == wxpay::api::TradeState::Closed && current.is_open() {
                orders::set_closed(&mut tx, &current).await?;
            }
            orders::mark_queried(&mut *tx, current.id).await?;
        }
        Outcome::Failed { code, message } => {
            // ORDERNOTEXIST: WeChat never saw it (unifiedorder did not arrive); it stays open.
            orders::record_error(&mut *tx, current.id, &format!("orderquery {code}: {message}")).await?;
            orders::mark_queried(&mut *tx, current.id).await?;
        }
        Outcome::Unknown { reason } => {
            tracing::warn!(out_trade_no = %order.out_trade_no, %reason, "orderquery unknown");
        }
    }
    tx.commit().await?;
    Ok(orders::find(&state.pool, &order.out_trade_no).await?.unwrap_or(current))
}

/// What closeorder led to.
pub enum Closed {
    Closed,
    /// Too late: WeChat says it is paid (settled from orderquery when possible).
    Paid,
    Unknown {
        reason: String,
    },
}

/// Closes an open order at WeChat and here. ORDERPAID means paid, never closed.
pub async fn close(state: &AppState, order: &Order) -> Result<Closed, ApiError> {
    let client = state.wxpay(&order.mch_id, &order.appid)?;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let outcome = client.close_order(&order.out_trade_no).await.map_err(not_sent)?;
        state.observe(client, Op::CloseOrder, &outcome);
        let close_here = match outcome {
            Outcome::Success(_) => true,
            Outcome::Failed { code, .. } if code == "ORDERPAID" => {
                settle_from_query(state, order).await?;
                return Ok(Closed::Paid);
            }
            // Already closed, or never reached WeChat: no payment can come for it.
            Outcome::Failed { code, .. } if code == "ORDERCLOSED" || code == "ORDERNOTEXIST" => true,
            Outcome::Failed { code, message } => {
                last = format!("{code}: {message}");
                break;
            }
            Outcome::Unknown { reason } => {
                last = reason;
                if attempt < ATTEMPTS {
                    backoff(attempt).await;
                }
                false
            }
        };
        if close_here {
            let mut tx = state.pool.begin().await?;
            if let Some(o) = orders::lock(&mut tx, &order.out_trade_no).await?.filter(Order::is_open) {
                orders::set_closed(&mut tx, &o).await?;
            }
            tx.commit().await?;
            return Ok(Closed::Closed);
        }
    }
    orders::record_error(&state.pool, order.id, &format!("closeorder: {last}")).await?;
    Ok(Closed::Unknown { reason: last })
}

/// Whether WeChat is known not to hold a refund before a call: a refusal is final only then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundSend {
    /// The first call for a refund just created, or the call right after refundquery
    /// answered REFUNDNOTEXIST: a definite refusal (NOTENOUGH, …) means nothing was refunded.
    KnownAbsent,
    /// An earlier call for this number may have reached WeChat (its answer was lost, or a
    /// crash left it `pending`): a refusal now proves nothing.
    MaybeSent,
}

/// Sends a committed refund to WeChat (same number, same amounts on every attempt) and
/// records what WeChat said. Returns the refund as stored afterwards.
///
/// The reservation is released (`failed`) only for a refusal that answers a call made when
/// WeChat was known not to hold the refund ([`RefundSend::KnownAbsent`]) with no unclear
/// attempt before it. A refusal after an unclear attempt leaves the refund `unknown` (amount
/// still reserved) for refundquery to settle: this call sees it as a re-send.
///
/// Guess about WeChat (not documented either way): a re-sent `secapi/pay/refund` with an
/// out_refund_no WeChat already accepted may still be answered with a business error
/// (NOTENOUGH when the balance moved meanwhile, FREQUENCY_LIMITED, ERROR…) instead of the
/// first answer, so such a code cannot prove that the first call did nothing.
pub async fn send_refund(
    state: &AppState,
    order: &Order,
    refund: &Refund,
    send: RefundSend,
) -> Result<Refund, ApiError> {
    let client = state.wxpay(&order.mch_id, &order.appid)?;
    let req = RefundCall {
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        total: order.amount,
        refund: refund.amount,
        reason: refund.reason.clone(),
        notify_url: Some(state.config.refund_notify_url_for(&order.mch_id)),
    };
    let mut outcome = Outcome::unknown("not sent");
    let mut definite = send == RefundSend::KnownAbsent;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            // The attempt before was unclear: from now on this is a re-send.
            definite = false;
        }
        outcome = client.refund(&req).await.map_err(not_sent)?;
        state.observe(client, Op::Refund, &outcome);
        if !outcome.is_unknown() {
            break;
        }
        if attempt < ATTEMPTS {
            backoff(attempt).await;
        }
    }
    let mut tx = state.pool.begin().await?;
    orders::lock(&mut tx, &order.out_trade_no).await?;
    let current = refunds::lock(&mut tx, &refund.out_refund_no)
        .await?
        .ok_or_else(|| ApiError::not_found("refund_not_found", "no such refund"))?;
    let open = matches!(current.status, RefundStatus::Pending | RefundStatus::Unknown);
    match outcome {
        Outcome::Success(refund_id) if open => refunds::set_processing(&mut tx, &current, &refund_id).await?,
        Outcome::Failed { code, message } if open && definite => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, %code, "refund refused by WeChat");
            refunds::set_failed(&mut tx, &current, &code, &message).await?;
        }
        Outcome::Failed { code, message } if open => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, %code, "refund refused on a re-send: left for refundquery");
            let reason =
                format!("re-sent after an unclear answer, WeChat said {code}: {message}; settled by refundquery");
            refunds::set_unknown(&mut tx, &current, &reason).await?;
        }
        Outcome::Unknown { reason } if current.status == RefundStatus::Pending => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, %reason, "refund outcome unknown");
            refunds::set_unknown(&mut tx, &current, &reason).await?;
        }
        // A notification or another request settled it meanwhile: theirs stands.
        _ => {}
    }
    tx.commit().await?;
    refunds::find(&state.pool, &refund.out_refund_no)
        .await?
        .ok_or_else(|| ApiError::not_found("refund_not_found", "no such refund"))
}

/// Follows an open refund with refundquery: applies a final result through `settle`, moves
/// an accepted one to processing, and re-sends one WeChat never received (REFUNDNOTEXIST
/// while pending/unknown; a definite refusal of that send releases the reservation). Any
/// other answer leaves it as it is. Returns the refund as stored afterwards.
pub async fn sync_refund(state: &AppState, order: &Order, refund: &Refund) -> Result<Refund, ApiError> {
    let client = state.wxpay(&order.mch_id, &order.appid)?;
    let outcome = client.refund_query(&refund.out_refund_no).await.map_err(not_sent)?;
    state.observe(client, Op::RefundQuery, &outcome);
    match outcome {
        Outcome::Success(q) => {
            let Some(item) = q.refunds.iter().find(|i| i.out_refund_no == refund.out_refund_no) else {
                return Ok(refund.clone());
            };
            let mut tx = state.pool.begin().await?;
            match RefundResult::from_wechat(item.refund_status.as_str()) {
                Some(result) => {
                    let facts = RefundFacts {
                        out_refund_no: refund.out_refund_no.clone(),
                        refund_id: item.refund_id.clone(),
                        mch_id: order.mch_id.clone(),
                        out_trade_no: q.out_trade_no.clone(),
                        status: result,
                        refund_fee: item.refund_fee,
                        success_time: item.refund_success_time,
                        recv_account: item.refund_recv_accout.clone(),
                        source: Source::RefundQuery,
                    };
                    settle::apply_refund_result(&mut tx, &facts).await?;
                }
                None => {
                    orders::lock(&mut tx, &order.out_trade_no).await?;
                    let locked = refunds::lock(&mut tx, &refund.out_refund_no).await?;
                    if let Some(r) =
                        locked.filter(|r| matches!(r.status, RefundStatus::Pending | RefundStatus::Unknown))
                    {
                        refunds::set_processing(&mut tx, &r, &item.refund_id).await?;
                    }
                }
            }
            tx.commit().await?;
        }
        Outcome::Failed { code, .. }
            if code == "REFUNDNOTEXIST" && matches!(refund.status, RefundStatus::Pending | RefundStatus::Unknown) =>
        {
            // WeChat does not hold it (not even from a lost call): this send is a first one.
            return send_refund(state, order, refund, RefundSend::KnownAbsent).await;
        }
        Outcome::Failed { code, message } => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, %code, %message, "refundquery refused");
        }
        Outcome::Unknown { reason } => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, %reason, "refundquery unknown");
        }
    }
    refunds::find(&state.pool, &refund.out_refund_no)
        .await?
        .ok_or_else(|| ApiError::not_found("refund_not_found", "no such refund"))
}
