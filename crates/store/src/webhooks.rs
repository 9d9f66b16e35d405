//! The webhook outbox: events for client backends, written in the same transaction as the
//! state change they report and delivered later by the worker. One event per
//! `(event_type, subject)`, so re-applying a change never queues a second event.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// Queues an event for `client_id`. Returns `false` when the same event was queued before.
pub async fn enqueue(
    conn: &mut PgConnection,
    client_id: Uuid,
    event_type: &str,
    subject: &str,
    payload: Value,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_outbox (client_id, event_id, event_type, subject, payload)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (event_type, subject) DO NOTHING",
    )
    .bind(client_id)
    .bind(Uuid::new_v4())
    .bind(event_type)
    .bind(subject)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
