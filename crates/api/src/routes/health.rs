//! Operational endpoints: liveness, readiness (the database answers), Prometheus metrics,
//! the OpenAPI document, and the JSON 404 for unknown paths.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi_json));
}

#[derive(OpenApi)]
#[openapi(
    paths(healthz, readyz, metrics, openapi_json),
    components(schemas(Health, crate::error::ErrorBody, crate::error::ErrorDetail))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: the database answers within the pool's timeout.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = crate::error::ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database does not answer")
    })?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

/// Prometheus text exposition: requests, WeChat calls by outcome, orders by state.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match minipay_store::orders::count_by_status(&state.pool).await {
        Ok(counts) => {
            state.metrics.orders.reset();
            for (status, n) in counts {
                state.metrics.orders.with_label_values(&[status.as_str()]).set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "orders gauge not refreshed"),
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi())
}

/// Unknown paths and methods get the error shape too.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("not_found", format!("no route for {} {}", req.method(), req.path())))
}
