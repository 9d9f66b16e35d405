//! Orders: `POST /v1/orders` (unifiedorder → `wx.requestPayment` parameters),
//! `GET /v1/orders/{out_trade_no}` (settled with orderquery when asked or stale),
//! `POST /v1/orders/{out_trade_no}/close`.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use minipay_store::domain::{AppId, OpenId, OrderStatus, OutTradeNo, State};
use minipay_store::orders::{self, GroupInsert, NewOrder, NewOrderOwned, Order};
use minipay_store::refunds;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wxpay::Fen;
use wxpay::merchant::PayParams as WirePayParams;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::idempotency::{ClaimTicket, IdempotencyKey};
use crate::payments::{self, Closed, Issued};
use crate::routes::common::{MAX_AMOUNT, check_visible, generate_number, parse_amount};
use crate::routes::refunds::RefundView;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orders", web::post().to(create_order))
        .route("/v1/orders/{out_trade_no}", web::get().to(get_order))
        .route("/v1/orders/{out_trade_no}/close", web::post().to(close_order));
}

#[derive(OpenApi)]
#[openapi(
    paths(create_order, get_order, close_order),
    components(schemas(CreateOrder, OrderView, PayParams, RefundView))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// Longest time to pay (seconds). Guess: WeChat accepts time_expire up to days ahead, but a
/// prepay_id is only valid 2 hours; a week bounds the orders the expiry job keeps open.
pub const MAX_EXPIRES_IN: i64 = 7 * 24 * 3600;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// 1–32 of `[0-9A-Za-z_-|*]`; generated when absent (derived from the Idempotency-Key
    /// when one is sent, so a retried request reaches the same order).
    pub out_trade_no: Option<String>,
    /// Default: the configured default app.
    pub appid: Option<String>,
    /// The payer, as returned by `POST /v1/sessions` for this app.
    pub openid: String,
    /// Integer fen, > 0.
    #[schema(value_type = i64)]
    pub amount: serde_json::Value,
    /// Shown to the payer (WeChat's `body`, at most 128 bytes).
    pub description: String,
    /// Returned untouched in webhooks and queries (at most 127 bytes).
    pub attach: Option<String>,
    /// Seconds the payer has (default `api.default_expires_in_secs`).
    pub expires_in: Option<i64>,
}

/// The five fields `wx.requestPayment` takes, plus `signType`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

/// `signType` is `MD5` / `HMAC-SHA256` for a v2 merchant and `RSA` for a v3 one; the
/// mini-program passes the object to `wx.requestPayment` as it is either way.
impl From<WirePayParams> for PayParams {
    fn from(p: WirePayParams) -> PayParams {
        match p {
            WirePayParams::V2(p) => PayParams {
                app_id: p.app_id,
                time_stamp: p.time_stamp,
                nonce_str: p.nonce_str,
                package: p.package,
                sign_type: p.sign_type.as_str().to_owned(),
                pay_sign: p.pay_sign,
            },
            WirePayParams::V3(p) => PayParams {
                app_id: p.app_id,
                time_stamp: p.time_stamp,
                nonce_str: p.nonce_str,
                package: p.package,
                sign_type: p.sign_type.to_owned(),
                pay_sign: p.pay_sign,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrderView {
    pub out_trade_no: String,
    pub appid: String,
    pub mch_id: String,
    /// created, prepaid, paid, closed, failed
    pub status: String,
    pub amount: i64,
    pub description: String,
    pub attach: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub cash_fee: Option<i64>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Paid after we had closed it: the payment stands, an operator follows up.
    pub paid_after_close: bool,
    /// Amount held by refunds that have not failed or closed.
    pub refunded_amount: i64,
    /// Present on a successful create: hand these to `wx.requestPayment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_params: Option<PayParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
}

impl OrderView {
    pub fn new(o: &Order) -> OrderView {
        OrderView {
            out_trade_no: o.out_trade_no.clone(),
            appid: o.appid.clone(),
            mch_id: o.mch_id.clone(),
            status: o.status.as_str().to_owned(),
            amount: o.amount.get(),
            description: o.description.clone(),
            attach: o.attach.clone(),
            expires_at: o.expires_at,
            created_at: o.created_at,
            transaction_id: o.transaction_id.clone(),
            paid_at: o.paid_at,
            cash_fee: o.cash_fee.map(Fen::get),
            closed_at: o.closed_at,
            paid_after_close: o.paid_after_close,
            refunded_amount: o.refunded_amount.get(),
            pay_params: None,
            refunds: None,
        }
    }
}

fn same_request(o: &Order, caller: &Caller, appid: &str, openid: &str, amount: Fen, body: &CreateOrder) -> bool {
    o.client_id == Some(caller.id)
        && o.appid == appid
        && o.openid == openid
        && o.amount == amount
        && o.description == body.description
        && o.attach == body.attach
}

/// Creates an order and its WeChat prepay; returns `pay_params` for `wx.requestPayment`.
#[utoipa::path(post, path = "/v1/orders", tag = "payments", request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "replay protection")),
    responses((status = 201, body = OrderView), (status = 200, body = OrderView, description = "repeat of an existing order"),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
              (status = 502, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn create_order(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateOrder>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let amount = parse_amount(&body.amount, MAX_AMOUNT)?;
    let app = match &body.appid {
        Some(a) => state.config.app(a),
        None => state.config.default_app(),
    }
    .ok_or_else(|| ApiError::invalid("unknown_appid", "the appid is not configured"))?;
    let appid = AppId::parse(app.appid.clone()).map_err(|e| ApiError::internal(&e))?;
    let openid = OpenId::parse(body.openid.clone()).map_err(|e| ApiError::invalid("invalid_openid", e.to_string()))?;
    if body.description.trim().is_empty() || body.description.len() > 128 {
        return Err(ApiError::invalid("invalid_description", "description must be 1-128 bytes"));
    }
    if body.attach.as_ref().is_some_and(|a| a.len() > 127) {
        return Err(ApiError::invalid("invalid_request", "attach must be at most 127 bytes"));
    }
    let expires_in = body.expires_in.unwrap_or(state.config.api.default_expires_in_secs as i64);
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::invalid("invalid_expires_in", format!("expires_in must be 1-{MAX_EXPIRES_IN} seconds")));
    }
    let out_trade_no = match &body.out_trade_no {
        Some(n) => {
            OutTradeNo::parse(n.clone()).map_err(|e| ApiError::invalid("invalid_out_trade_no", e.to_string()))?
        }
        None => {
            let key = req.extensions().get::<IdempotencyKey>().cloned();
            OutTradeNo::parse(generate_number(&caller, key.as_ref(), "order")).map_err(|e| ApiError::internal(&e))?
        }
    };
    if !state.user_known(&appid, &openid).await? {
        return Err(ApiError::invalid(
            "unknown_openid",
            "this openid has not logged in to the app (POST /v1/sessions)",
        ));
    }

    let now = Utc::now();
    let new = NewOrder {
        out_trade_no: out_trade_no.as_str(),
        appid: appid.as_str(),
        mch_id: &app.mch_id,
        client_id: Some(caller.id),
        openid: openid.as_str(),
        amount,
        description: &body.description,
        attach: body.attach.as_deref(),
        sign_type: state.config.merchant(&app.mch_id).map_or("MD5", |m| m.sign_type.as_str()),
        expires_at: now + chrono::Duration::seconds(expires_in),
    };
    // A new number (the common case) is inserted together with concurrent requests' orders,
    // and its Idempotency-Key claimed in the same statement: one durable commit for the group.
    // Anything else (a key already used, a taken number, a failed group) takes the single
    // insert below, after claiming the key on its own; the insert reports the conflict.
    let ticket = req.extensions().get::<ClaimTicket>().cloned();
    let claim = ticket.as_ref().and_then(ClaimTicket::take);
    let keyed = claim.is_some();
    match state.groups.orders.submit((NewOrderOwned::new(&new), claim)).await {
        Ok(GroupInsert::Inserted(order)) => {
            if let Some(t) = &ticket {
                t.hold();
            }
            return prepay(&state, *order, true, &out_trade_no, ticket.as_ref()).await;
        }
        Ok(GroupInsert::Claimed) => {
            if let Some(t) = &ticket {
                t.hold();
            }
        }
        Ok(GroupInsert::Skipped) | Err(_) => {
            if let (Some(t), true) = (&ticket, keyed) {
                if let Err(answer) = t.claim(&state).await {
                    return Ok(answer);
                }
            }
        }
    }
    let mut conn = state.pool.acquire().await?;
    let (order, created) = match orders::insert(&mut conn, &new).await {
        Ok(o) => (o, true),
        Err(minipay_store::StoreError::Conflict(_)) => {
            let existing = orders::find(&mut *conn, out_trade_no.as_str())
                .await?
                .ok_or_else(|| ApiError::conflict("out_trade_no_used", "out_trade_no is taken"))?;
            if !same_request(&existing, &caller, appid.as_str(), openid.as_str(), amount, &body) {
                return Err(ApiError::conflict("out_trade_no_used", "out_trade_no is taken by a different order"));
            }
            (existing, false)
        }
        Err(e) => return Err(e.into()),
    };
    drop(conn);
    prepay(&state, order, created, &out_trade_no, ticket.as_ref()).await
}

/// unifiedorder for an order just inserted (`created`) or found again, and the answer.
async fn prepay(
    state: &AppState,
    order: Order,
    created: bool,
    out_trade_no: &OutTradeNo,
    ticket: Option<&ClaimTicket>,
) -> Result<HttpResponse, ApiError> {
    if !order.is_open() {
        // A repeat of a finished order: report it as it stands (no new prepay).
        return Ok(HttpResponse::Ok().json(OrderView::new(&order)));
    }
    let issued = payments::issue(state, &order, ticket).await?;
    let current = match &issued {
        // Known without reading back: the order we inserted, now prepaid.
        Issued::Prepaid { .. } => Order { status: OrderStatus::Prepaid, ..order },
        _ => orders::find(&state.pool, out_trade_no.as_str()).await?.unwrap_or(order),
    };
    let mut view = OrderView::new(&current);
    match issued {
        Issued::Prepaid { prepay_id } => {
            let client = state.wxpay(&current.mch_id, &current.appid)?;
            view.pay_params = Some(client.pay_params(&current.appid, &prepay_id).into());
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(HttpResponse::build(status).json(view))
        }
        Issued::Paid => Ok(HttpResponse::Ok().json(view)),
        Issued::Refused { code, message } if code == "OUT_TRADE_NO_USED" => Err(ApiError::conflict(
            "out_trade_no_used",
            format!("WeChat already has this out_trade_no with other parameters: {message}"),
        )),
        Issued::Refused { code, message } if code == "ORDERCLOSED" => {
            Err(ApiError::conflict("order_closed", format!("WeChat closed this order: {message}")))
        }
        Issued::Refused { code, message } => Err(ApiError::wechat_rejected(&code, &message)),
        Issued::Unknown { .. } => Err(ApiError::upstream_unavailable(format!(
            "WeChat did not answer; retry with out_trade_no {out_trade_no} (safe to repeat)"
        ))),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct GetOrderQuery {
    /// Ask WeChat (orderquery) before answering when the order is still open.
    pub refresh: Option<bool>,
}

/// An order with its refunds. An open order is settled with orderquery first when
/// `?refresh=true` or when it was not checked for `api.stale_after_secs`.
#[utoipa::path(get, path = "/v1/orders/{out_trade_no}", tag = "payments",
    params(("out_trade_no" = String, Path), GetOrderQuery),
    responses((status = 200, body = OrderView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_order(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<GetOrderQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Viewer, Role::Finance, Role::Approver])?;
    let mut order = orders::find(&state.pool, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("order_not_found", "no such order"))?;
    check_visible(&caller, order.client_id)?;
    let checked = order.queried_at.unwrap_or(order.created_at);
    let stale = Utc::now() - checked > chrono::Duration::seconds(state.config.api.stale_after_secs as i64);
    if order.is_open() && (query.refresh.unwrap_or(false) || stale) {
        order = payments::settle_from_query(&state, &order).await?;
    }
    let mut view = OrderView::new(&order);
    let list = refunds::for_order(&state.pool, order.id).await?;
    view.refunds = Some(list.iter().map(RefundView::new).collect());
    Ok(HttpResponse::Ok().json(view))
}

/// Closes an unpaid order at WeChat and here. A paid order is never closed: 409 `order_paid`.
#[utoipa::path(post, path = "/v1/orders/{out_trade_no}/close", tag = "payments",
    params(("out_trade_no" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "replay protection")),
    responses((status = 200, body = OrderView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn close_order(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let order = orders::find(&state.pool, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("order_not_found", "no such order"))?;
    check_visible(&caller, order.client_id)?;
    match order.status {
        OrderStatus::Closed => return Ok(HttpResponse::Ok().json(OrderView::new(&order))),
        OrderStatus::Paid => return Err(ApiError::conflict("order_paid", "the order is paid; refund it instead")),
        OrderStatus::Failed => return Err(ApiError::conflict("order_not_open", "the order failed and is not open")),
        OrderStatus::Created | OrderStatus::Prepaid => {}
    }
    let outcome = payments::close(&state, &order).await?;
    let current = orders::find(&state.pool, &path).await?.unwrap_or(order);
    match outcome {
        Closed::Closed => Ok(HttpResponse::Ok().json(OrderView::new(&current))),
        Closed::Paid => Err(ApiError::conflict("order_paid", "WeChat says the order is paid; it was not closed")),
        Closed::Unknown { .. } => Err(ApiError::upstream_unavailable("WeChat did not answer; retry the close")),
    }
}
