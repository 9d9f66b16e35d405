//! `GET /v1/webhooks`: the caller's webhook events with their delivery state and latest
//! attempts (status code, error, duration), so a client can see why it missed an event.
//! Staff roles see every client's events.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/webhooks", web::get().to(list_webhooks));
}

#[derive(OpenApi)]
#[openapi(paths(list_webhooks), components(schemas(WebhookList)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// pending, delivered or dead
    pub status: Option<String>,
    /// At most 200 (default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// Newest first: event_id, event_type, subject, status, attempts, next_attempt_at,
    /// last_error, delivered_at, created_at, recent_attempts[{http_status, error, duration_ms, created_at}].
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<minipay_store::webhook_log::EventLog>,
}

/// Webhook events and their delivery attempts.
#[utoipa::path(get, path = "/v1/webhooks", tag = "payments", params(ListQuery),
    responses((status = 200, body = WebhookList), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Viewer, Role::Finance, Role::Approver])?;
    if query.status.as_deref().is_some_and(|s| !matches!(s, "pending" | "delivered" | "dead")) {
        return Err(ApiError::invalid("invalid_request", "status must be pending, delivered or dead"));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("invalid_request", "limit must be 1-200"));
    }
    let client = (caller.role == Role::Client).then_some(caller.id);
    let events = minipay_store::webhook_log::recent(&state.pool, client, query.status.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(WebhookList { events }))
}
