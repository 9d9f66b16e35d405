//! Settlement anomalies for operators: genuine facts from WeChat (a notification, a query,
//! the bill) that disagreed with our records and were not applied, or were applied but need
//! a person (a payment after a local close, a refund WeChat could not deliver).
//!
//! - `GET /v1/anomalies` (viewer, finance, approver): newest first, filtered by status, kind,
//!   reference (out_trade_no / out_refund_no) and merchant, paged with `before_id`.
//! - `GET /v1/anomalies/{id}`.
//! - `POST /v1/anomalies/{id}/resolve` `{resolution}` (finance): closes an open anomaly with
//!   a note; the audit log records who and why. Resolving changes no money: whatever the
//!   anomaly calls for (a refund, a manual order, a reconciliation repair) is done through
//!   its own endpoint, and the note says what was done.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use minipay_store::anomalies::{self, ANOMALY_KINDS, Anomaly, AnomalyFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::common::{next_before_id, page_limit, query_filter};
use crate::state::AppState;

/// The longest resolution note accepted.
const MAX_RESOLUTION_CHARS: usize = 2000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/anomalies", web::get().to(list_anomalies))
        .route("/v1/anomalies/{id}", web::get().to(get_anomaly))
        .route("/v1/anomalies/{id}/resolve", web::post().to(resolve_anomaly));
}

#[derive(OpenApi)]
#[openapi(
    paths(list_anomalies, get_anomaly, resolve_anomaly),
    components(schemas(AnomalyView, AnomalyList, Resolution))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// One anomaly.
#[derive(Serialize, ToSchema)]
pub struct AnomalyView {
    pub id: i64,
    /// unknown_order, order_mismatch, duplicate_payment, paid_after_close, unknown_refund,
    /// refund_mismatch, refund_conflict, refund_abnormal
    pub kind: String,
    /// out_trade_no or out_refund_no as WeChat reported it.
    pub reference: String,
    pub mch_id: String,
    /// notification, orderquery, refundquery, reconciliation, operator
    pub source: String,
    /// The raw notification it came from, when it came from one.
    pub notification_id: Option<i64>,
    pub reason: String,
    /// What WeChat said and what we hold (openids masked).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// How often the same problem was seen (WeChat's retries, repeated queries).
    pub occurrences: i32,
    /// open or resolved
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

impl From<Anomaly> for AnomalyView {
    fn from(a: Anomaly) -> Self {
        AnomalyView {
            id: a.id,
            kind: a.kind,
            reference: a.reference,
            mch_id: a.mch_id,
            source: a.source,
            notification_id: a.notification_id,
            reason: a.reason,
            details: a.details,
            occurrences: a.occurrences,
            status: a.status,
            created_at: a.created_at,
            last_seen_at: a.last_seen_at,
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by,
            resolution: a.resolution,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AnomalyList {
    pub data: Vec<AnomalyView>,
    /// Pass as `before_id` for the next page; absent on the last page.
    pub next_before_id: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// open or resolved
    pub status: Option<String>,
    pub kind: Option<String>,
    /// out_trade_no or out_refund_no
    pub reference: Option<String>,
    pub mch_id: Option<String>,
    pub before_id: Option<i64>,
    /// 1–500, default 50.
    pub limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// What was found and done (1–2000 characters), e.g. "refunded by hand, refund r-17".
    pub resolution: String,
}

fn not_found() -> ApiError {
    ApiError::not_found("anomaly_not_found", "no anomaly with this id")
}

/// Anomalies, newest first.
#[utoipa::path(get, path = "/v1/anomalies", tag = "anomalies", params(ListQuery),
    responses((status = 200, body = AnomalyList), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_anomalies(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Viewer, Role::Finance, Role::Approver])?;
    let status = query_filter(q.status.as_deref(), "invalid_status", "status", |s| {
        ["open", "resolved"].into_iter().find(|k| *k == s)
    })?;
    let kind = query_filter(q.kind.as_deref(), "invalid_kind", "anomaly kind", |s| {
        ANOMALY_KINDS.into_iter().find(|k| *k == s)
    })?;
    let limit = page_limit(q.limit);
    let filter = AnomalyFilter {
        status,
        kind,
        reference: q.reference.as_deref().filter(|r| !r.is_empty()),
        mch_id: q.mch_id.as_deref().filter(|m| !m.is_empty()),
        before_id: q.before_id,
        limit,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = anomalies::list_anomalies(&mut conn, &filter).await?;
    let next = next_before_id(rows.len(), limit, rows.last().map(|a| a.id));
    Ok(HttpResponse::Ok()
        .json(AnomalyList { data: rows.into_iter().map(AnomalyView::from).collect(), next_before_id: next }))
}

/// One anomaly.
#[utoipa::path(get, path = "/v1/anomalies/{id}", tag = "anomalies", params(("id" = i64, Path)),
    responses((status = 200, body = AnomalyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_anomaly(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Viewer, Role::Finance, Role::Approver])?;
    let mut conn = state.pool.acquire().await?;
    let a = anomalies::get_anomaly(&mut conn, *path).await?.ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(AnomalyView::from(a)))
}

/// Resolves an open anomaly with a note (finance). 409 `anomaly_not_open` when it was
/// already resolved (the first resolution stands; with the same Idempotency-Key a retry
/// gets the first answer instead).
#[utoipa::path(post, path = "/v1/anomalies/{id}/resolve", tag = "anomalies", params(("id" = i64, Path)),
    request_body = Resolution,
    responses((status = 200, body = AnomalyView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn resolve_anomaly(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
    body: web::Json<Resolution>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance])?;
    let note = body.resolution.trim();
    if note.is_empty() || note.chars().count() > MAX_RESOLUTION_CHARS {
        return Err(ApiError::invalid(
            "invalid_resolution",
            format!("resolution must be 1–{MAX_RESOLUTION_CHARS} characters saying what was found and done"),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let resolved = anomalies::resolve_anomaly(&mut tx, *path, &caller.actor(), note).await?;
    let a = anomalies::get_anomaly(&mut tx, *path).await?.ok_or_else(not_found)?;
    tx.commit().await?;
    if !resolved {
        return Err(ApiError::conflict(
            "anomaly_not_open",
            format!("anomaly {} was already resolved by {}", a.id, a.resolved_by.as_deref().unwrap_or("?")),
        ));
    }
    tracing::info!(anomaly = a.id, kind = %a.kind, "anomaly resolved");
    Ok(HttpResponse::Ok().json(AnomalyView::from(a)))
}
