//! Reading the webhook outbox and its delivery attempts, for clients and operators
//! (`GET /v1/webhooks`). Writing is in [`crate::webhooks`] (enqueue) and the worker.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::StoreError;

/// One event with its delivery state and its latest attempts.
#[derive(Clone, Debug, Serialize)]
pub struct EventLog {
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    /// pending, delivered, dead
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub recent_attempts: Vec<AttemptLog>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AttemptLog {
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    subject: String,
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// The newest `limit` events of a client (all clients when `client_id` is `None`),
/// optionally of one status, each with its last 5 attempts.
pub async fn recent<'c, E>(
    e: E,
    client_id: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<EventLog>, StoreError>
where
    E: PgExecutor<'c> + Copy,
{
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, subject, status, attempts, next_attempt_at, last_error, delivered_at, created_at
           FROM webhook_outbox
          WHERE ($1::uuid IS NULL OR client_id = $1) AND ($2::text IS NULL OR status = $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(client_id)
    .bind(status)
    .bind(limit)
    .fetch_all(e)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let recent_attempts: Vec<AttemptLog> = sqlx::query_as(
            "SELECT http_status, error, duration_ms, created_at FROM webhook_attempts
              WHERE outbox_id = $1 ORDER BY id DESC LIMIT 5",
        )
        .bind(r.id)
        .fetch_all(e)
        .await?;
        out.push(EventLog {
            event_id: r.event_id,
            event_type: r.event_type,
            subject: r.subject,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            delivered_at: r.delivered_at,
            created_at: r.created_at,
            recent_attempts,
        });
    }
    Ok(out)
}
