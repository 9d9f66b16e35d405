//! Refunds: `POST /v1/orders/{out_trade_no}/refunds` (partial and multiple; never more than
//! was paid, also under concurrent requests) and `GET /v1/refunds/{out_refund_no}`
//! (refundquery while WeChat has not given a final result).

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use minipay_store::domain::{OrderStatus, OutRefundNo, RefundStatus, State};
use minipay_store::orders;
use minipay_store::refunds::{self, CreateError, Refund};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::payments::{self, RefundSend};
use crate::routes::common::{MAX_AMOUNT, check_visible, generate_number, parse_amount};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orders/{out_trade_no}/refunds", web::post().to(create_refund))
        .route("/v1/refunds/{out_refund_no}", web::get().to(get_refund));
}

#[derive(OpenApi)]
#[openapi(paths(create_refund, get_refund), components(schemas(CreateRefund, RefundView)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// 1–64 of `[0-9A-Za-z_-|*@]`. Optional only with an `Idempotency-Key` header: then it
    /// is derived from the key (the same key always gives the same number). Without either,
    /// 422 `refund_number_required`: a retry must never become a second refund.
    pub out_refund_no: Option<String>,
    /// Integer fen, > 0, at most what is left to refund.
    #[schema(value_type = i64)]
    pub amount: serde_json::Value,
    /// Shown to the user (WeChat's `refund_desc`, at most 80 bytes).
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundView {
    pub out_refund_no: String,
    pub out_trade_no: String,
    /// pending, processing, unknown, succeeded, failed, closed, abnormal
    pub status: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl RefundView {
    pub fn new(r: &Refund) -> RefundView {
        RefundView {
            out_refund_no: r.out_refund_no.clone(),
            out_trade_no: r.out_trade_no.clone(),
            status: r.status.as_str().to_owned(),
            amount: r.amount.get(),
            reason: r.reason.clone(),
            refund_id: r.refund_id.clone(),
            failure_code: r.failure_code.clone(),
            failure_message: r.failure_message.clone(),
            succeeded_at: r.succeeded_at,
            created_at: r.created_at,
        }
    }
}

/// Refunds part or all of a paid order. Every refund needs a number fixed by the caller:
/// `out_refund_no` in the body or an `Idempotency-Key` header (the number is then derived
/// from the key); without either, 422 `refund_number_required`. The refund is recorded (and
/// its amount reserved) before WeChat is asked; 201 with `processing` when WeChat accepted
/// it, 202 with `unknown` when WeChat did not answer clearly (the amount stays reserved and
/// refundquery settles it). Sending the same number again returns that refund (200).
#[utoipa::path(post, path = "/v1/orders/{out_trade_no}/refunds", tag = "payments", request_body = CreateRefund,
    params(("out_trade_no" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "replay protection; required when the body has no out_refund_no")),
    responses((status = 201, body = RefundView), (status = 202, body = RefundView),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_refund(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<CreateRefund>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let amount = parse_amount(&body.amount, MAX_AMOUNT)?;
    if body.reason.as_ref().is_some_and(|r| r.len() > 80) {
        return Err(ApiError::invalid("invalid_request", "reason must be at most 80 bytes"));
    }
    let out_refund_no = match &body.out_refund_no {
        Some(n) => {
            OutRefundNo::parse(n.clone()).map_err(|e| ApiError::invalid("invalid_out_refund_no", e.to_string()))?
        }
        None => {
            // A random number here would make a client's retry a second refund.
            let Some(key) = req.extensions().get::<IdempotencyKey>().cloned() else {
                return Err(ApiError::invalid(
                    "refund_number_required",
                    "send out_refund_no in the body or an Idempotency-Key header, so that a retry cannot refund twice",
                ));
            };
            OutRefundNo::parse(generate_number(&caller, Some(&key), &format!("refund:{path}")))
                .map_err(|e| ApiError::internal(&e))?
        }
    };

    let mut tx = state.pool.begin().await?;
    let order =
        orders::lock(&mut tx, &path).await?.ok_or_else(|| ApiError::not_found("order_not_found", "no such order"))?;
    check_visible(&caller, order.client_id)?;
    if order.status != OrderStatus::Paid {
        return Err(ApiError::conflict("order_not_paid", format!("the order is {}", order.status.as_str())));
    }
    let (refund, fresh) = match refunds::create_pending(
        &mut tx,
        &order,
        out_refund_no.as_str(),
        amount,
        body.reason.as_deref(),
        Some(caller.id),
    )
    .await
    {
        Ok(r) => (r, true),
        Err(CreateError::NumberTaken(_)) => {
            let existing = refunds::find(&mut *tx, out_refund_no.as_str())
                .await?
                .ok_or_else(|| ApiError::conflict("out_refund_no_used", "out_refund_no is taken"))?;
            if existing.order_id != order.id || existing.amount != amount || existing.client_id != Some(caller.id) {
                return Err(ApiError::conflict("out_refund_no_used", "out_refund_no is taken by a different refund"));
            }
            (existing, false)
        }
        Err(CreateError::ExceedsRefundable { refundable }) => {
            return Err(ApiError::conflict(
                "refund_exceeds_refundable",
                format!("the order has {} fen left to refund", refundable.get()),
            ));
        }
        Err(CreateError::Store(e)) => return Err(e.into()),
    };
    tx.commit().await?;

    let refund = match refund.status {
        RefundStatus::Pending if fresh => {
            payments::send_refund(&state, &order, &refund, RefundSend::KnownAbsent).await?
        }
        // A retry of a refund whose first call may have reached WeChat: ask before sending.
        RefundStatus::Pending | RefundStatus::Unknown => payments::sync_refund(&state, &order, &refund).await?,
        _ => refund,
    };
    match refund.status {
        RefundStatus::Failed if fresh => Err(ApiError::conflict(
            "refund_failed",
            format!(
                "WeChat refused the refund: {}: {}",
                refund.failure_code.as_deref().unwrap_or(""),
                refund.failure_message.as_deref().unwrap_or("")
            ),
        )),
        RefundStatus::Unknown | RefundStatus::Pending => {
            Ok(HttpResponse::build(StatusCode::ACCEPTED).json(RefundView::new(&refund)))
        }
        _ if fresh => Ok(HttpResponse::Created().json(RefundView::new(&refund))),
        _ => Ok(HttpResponse::Ok().json(RefundView::new(&refund))),
    }
}

/// A refund. While WeChat has not given a final result it is followed up first
/// (refundquery; a refund WeChat never received is sent again with the same number).
#[utoipa::path(get, path = "/v1/refunds/{out_refund_no}", tag = "payments",
    params(("out_refund_no" = String, Path)),
    responses((status = 200, body = RefundView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_refund(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Viewer, Role::Finance, Role::Approver])?;
    let not_found = || ApiError::not_found("refund_not_found", "no such refund");
    let mut refund = refunds::find(&state.pool, &path).await?.ok_or_else(not_found)?;
    if caller.role == Role::Client && refund.client_id != Some(caller.id) {
        return Err(not_found());
    }
    if matches!(refund.status, RefundStatus::Pending | RefundStatus::Unknown | RefundStatus::Processing) {
        let order = orders::find(&state.pool, &refund.out_trade_no).await?.ok_or_else(not_found)?;
        refund = payments::sync_refund(&state, &order, &refund).await?;
    }
    Ok(HttpResponse::Ok().json(RefundView::new(&refund)))
}
