//! The append-only audit log: who did what to which subject, with details. Written in the
//! same transaction as the change it describes, so an audit line exists iff the change does.

use serde_json::Value;
use sqlx::PgConnection;

use crate::StoreError;

/// One audit line. `actor` is an API client id, or `system:<component>` for jobs.
pub async fn record(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    details: Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (actor, action, subject_type, subject_id, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(actor)
        .bind(action)
        .bind(subject_type)
        .bind(subject_id)
        .bind(details)
        .execute(conn)
        .await?;
    Ok(())
}
