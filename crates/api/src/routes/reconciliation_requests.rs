//! Reconciliation on demand: `POST /v1/reconciliations` (finance) asks for a run of one day,
//! for one merchant or every configured one, and `GET /v1/reconciliations/requests/{id}`
//! follows it. The api only records the request; a worker runs it (bills downloaded, report
//! stored) exactly as `minipay reconcile` would, and the report then appears in
//! `GET /v1/reconciliations/{date}` with trigger `api`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use minipay_store::recon::{self, ReconRequest};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/reconciliations", web::post().to(request_reconciliation))
        .route("/v1/reconciliations/requests/{id}", web::get().to(get_request));
}

#[derive(OpenApi)]
#[openapi(
    paths(request_reconciliation, get_request),
    components(schemas(NewReconciliation, RequestView, RequestsAccepted))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReconciliation {
    /// The day (Beijing time), YYYY-MM-DD, not in the future. WeChat's bill of a day is ready
    /// from the next morning; asked earlier, the run records `waiting` and is retried.
    pub date: String,
    /// One configured merchant; absent: every configured merchant.
    pub merchant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestView {
    pub id: i64,
    pub mch_id: String,
    pub date: NaiveDate,
    /// pending, running, completed, failed
    pub status: String,
    /// The run this request started; its report is in `GET /v1/reconciliations/{date}`.
    pub run_id: Option<i64>,
    pub error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestsAccepted {
    pub requests: Vec<RequestView>,
}

fn view(r: ReconRequest) -> RequestView {
    RequestView {
        id: r.id,
        mch_id: r.mch_id,
        date: r.bill_date,
        status: r.status,
        run_id: r.run_id,
        error: r.error,
        requested_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Asks for a reconciliation run now (202): one request per merchant, served by a worker.
#[utoipa::path(post, path = "/v1/reconciliations", tag = "reconciliation", request_body = NewReconciliation,
    responses((status = 202, body = RequestsAccepted), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn request_reconciliation(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewReconciliation>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance])?;
    let date = NaiveDate::parse_from_str(&body.date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("invalid_date", "the date must be YYYY-MM-DD"))?;
    let today = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    if date > today {
        return Err(ApiError::invalid("invalid_date", format!("{date} is in the future (Beijing time)")));
    }
    let merchants: Vec<String> = match &body.merchant {
        Some(m) if state.config.merchant(m).is_none() => {
            return Err(ApiError::invalid("unknown_merchant", format!("merchant {m} is not configured")));
        }
        Some(m) => vec![m.clone()],
        None => state.config.merchants.iter().map(|m| m.mch_id.clone()).collect(),
    };
    if merchants.is_empty() {
        return Err(ApiError::invalid("unknown_merchant", "no merchant is configured"));
    }
    let mut tx = state.pool.begin().await?;
    let mut requests = Vec::new();
    for m in &merchants {
        requests.push(view(recon::insert_request(&mut tx, m, date, caller.id).await?));
    }
    tx.commit().await?;
    tracing::info!(date = %date, merchants = ?merchants, caller = %caller.name, "reconciliation requested");
    Ok(HttpResponse::Accepted().json(RequestsAccepted { requests }))
}

/// One reconciliation request: pending, running, completed (with its run) or failed (why).
#[utoipa::path(get, path = "/v1/reconciliations/requests/{id}", tag = "reconciliation",
    params(("id" = i64, Path, description = "the request's id")),
    responses((status = 200, body = RequestView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_request(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Viewer, Role::Finance])?;
    let mut conn = state.pool.acquire().await?;
    let r = recon::get_request(&mut conn, *path)
        .await?
        .ok_or_else(|| ApiError::not_found("reconciliation_request_not_found", format!("no request {}", *path)))?;
    Ok(HttpResponse::Ok().json(view(r)))
}
