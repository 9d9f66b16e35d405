//! `Idempotency-Key`: the first response to a (client, key) is stored and replayed to every
//! repeat with the same request; a repeat with a different request is refused.
//!
//! Protocol (the api's middleware drives it):
//! 1. [`begin`] inserts the key with the request's hash (`INSERT … ON CONFLICT DO NOTHING`).
//!    Inserted → [`Begin::Started`]: run the request, then [`complete`] with the response.
//! 2. Not inserted → the stored row decides: a different hash (or method/path) is
//!    [`Begin::Mismatch`]; a stored response is [`Begin::Replay`]; no response yet is
//!    [`Begin::InProgress`] (another request with the key is running; poll [`begin`] again).
//! 3. A key whose request never completed (the process died) is taken over after
//!    `stale_after`, so a crash cannot block a key forever.

use std::time::Duration;

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// The outcome of claiming a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    Started,
    Replay { status: u16, body: serde_json::Value },
    Mismatch,
    InProgress,
}

/// The request as the key remembers it.
#[derive(Clone, Copy, Debug)]
pub struct KeyedRequest<'a> {
    pub client_id: Uuid,
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// SHA-256 hex of the body (the caller decides what "same request" means).
    pub request_hash: &'a str,
}

/// Claims `key` for this request, or tells what to do instead (see the module docs).
pub async fn begin(pool: &PgPool, r: &KeyedRequest<'_>, stale_after: Duration) -> Result<Begin, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (client_id, key, method, path, request_hash)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, key) DO NOTHING",
    )
    .bind(r.client_id)
    .bind(r.key)
    .bind(r.method)
    .bind(r.path)
    .bind(r.request_hash)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Begin::Started);
    }
    type Row = (String, String, String, Option<i32>, Option<serde_json::Value>, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT method, path, request_hash, response_status, response_body,
                updated_at < now() - make_interval(secs => $3)
           FROM idempotency_keys WHERE client_id = $1 AND key = $2",
    )
    .bind(r.client_id)
    .bind(r.key)
    .bind(stale_after.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let Some((method, path, hash, status, body, stale)) = row else {
        // Deleted between our insert and select (an aborted request released it): retry.
        return Ok(Begin::InProgress);
    };
    if method != r.method || path != r.path || hash != r.request_hash {
        return Ok(Begin::Mismatch);
    }
    match (status, body) {
        (Some(s), body) => Ok(Begin::Replay { status: s as u16, body: body.unwrap_or(serde_json::Value::Null) }),
        (None, _) if stale => {
            // Take the abandoned key over; only one of several racing takers wins.
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET updated_at = now()
                  WHERE client_id = $1 AND key = $2 AND response_status IS NULL
                    AND updated_at < now() - make_interval(secs => $3)",
            )
            .bind(r.client_id)
            .bind(r.key)
            .bind(stale_after.as_secs_f64())
            .execute(pool)
            .await?;
            Ok(if taken.rows_affected() == 1 { Begin::Started } else { Begin::InProgress })
        }
        (None, _) => Ok(Begin::InProgress),
    }
}

/// An owned claim, for [`claim_group`].
#[derive(Clone, Debug)]
pub struct Claim {
    pub client_id: Uuid,
    pub key: String,
    pub method: String,
    pub path: String,
    pub request_hash: String,
}

/// The group form of [`begin`]'s first step (see [`crate::group_commit`]): inserts many
/// keys in one statement. Answers, per input, whether that key was newly claimed
/// ([`Begin::Started`]); `false` (already there, or an earlier input of the group has the
/// same key) means the caller must call [`begin`], which reads the stored row and decides.
pub async fn claim_group<'c>(e: impl PgExecutor<'c>, claims: &[Claim]) -> Result<Vec<bool>, StoreError> {
    let text = |f: fn(&Claim) -> &str| claims.iter().map(f).collect::<Vec<&str>>();
    let inserted: Vec<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (client_id, key, method, path, request_hash)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (client_id, key) DO NOTHING
         RETURNING client_id, key",
    )
    .bind(claims.iter().map(|c| c.client_id).collect::<Vec<_>>())
    .bind(text(|c| &c.key))
    .bind(text(|c| &c.method))
    .bind(text(|c| &c.path))
    .bind(text(|c| &c.request_hash))
    .fetch_all(e)
    .await?;
    let mut inserted: std::collections::HashSet<(Uuid, String)> = inserted.into_iter().collect();
    Ok(claims.iter().map(|c| inserted.remove(&(c.client_id, c.key.clone()))).collect())
}

/// A response to store, for [`complete_group`].
#[derive(Clone, Debug)]
pub struct Completion {
    pub client_id: Uuid,
    pub key: String,
    pub status: u16,
    pub body: serde_json::Value,
    /// An order's (out_trade_no, prepay_id) to record in the same statement, as
    /// `crate::orders::mark_prepaid` does: the request that made the response also got the
    /// prepay, and both writes are equally safe to lose (see the api's `state` docs).
    pub prepaid: Option<(String, String)>,
}

/// The group form of [`complete`] (and of `crate::orders::mark_prepaid` for the completions
/// that carry a prepay): stores many responses in one statement. On `Err` nothing was
/// written (or all of it, if the commit's outcome is unknown); the caller may repeat each
/// with [`complete`] and `mark_prepaid`, which are idempotent.
pub async fn complete_group<'c>(e: impl PgExecutor<'c>, done: &[Completion]) -> Result<(), StoreError> {
    let marks: Vec<&(String, String)> = done.iter().filter_map(|c| c.prepaid.as_ref()).collect();
    sqlx::query(
        "WITH stored AS (
             UPDATE idempotency_keys k SET response_status = i.status, response_body = i.body
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::jsonb[]) AS i(client_id, key, status, body)
              WHERE k.client_id = i.client_id AND k.key = i.key
         )
         UPDATE orders o SET status = 'prepaid', prepay_id = m.prepay_id, prepay_at = now(), last_error = NULL
           FROM unnest($5::text[], $6::text[]) AS m(out_trade_no, prepay_id)
          WHERE o.out_trade_no = m.out_trade_no AND o.status IN ('created', 'prepaid')",
    )
    .bind(done.iter().map(|c| c.client_id).collect::<Vec<_>>())
    .bind(done.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
    .bind(done.iter().map(|c| i32::from(c.status)).collect::<Vec<_>>())
    .bind(done.iter().map(|c| &c.body).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.0.as_str()).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.1.as_str()).collect::<Vec<_>>())
    .execute(e)
    .await?;
    Ok(())
}

/// Stores the response to replay.
pub async fn complete(
    pool: &PgPool,
    client_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE client_id = $1 AND key = $2",
    )
    .bind(client_id)
    .bind(key)
    .bind(i32::from(status))
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets a claimed key whose request produced nothing worth replaying (the handler
/// panicked or the response could not be stored), so a retry runs again.
pub async fn release(pool: &PgPool, client_id: Uuid, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2 AND response_status IS NULL")
        .bind(client_id)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
