//! Every call we make to WeChat for a payout or a red packet, with the exact business
//! parameters sent. The row is written and committed (outcome `pending`) before the call
//! and finished after it, and its audit line is written with it; a row left `pending` is
//! the trace of a call whose answer never reached the database.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use wxpay::Params;

use crate::{StoreError, audit};

/// What an attempt is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectType {
    Payout,
    Redpack,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Payout => "payout",
            SubjectType::Redpack => "redpack",
        }
    }
}

/// Send (money may move) or query (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Send,
    Query,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Query => "query",
        }
    }
}

/// How an attempt ended, as [`wxpay::Outcome`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    Failed,
    Unknown,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Unknown => "unknown",
        }
    }
}

/// An attempt about to be made.
pub struct NewAttempt<'a> {
    pub subject_type: SubjectType,
    pub subject_id: i64,
    /// partner_trade_no or mch_billno.
    pub merchant_no: &'a str,
    pub action: Action,
    /// The WeChat path, e.g. `mmpaymkttransfers/promotion/transfers`.
    pub endpoint: &'a str,
    /// Business parameters only: no nonce and no signature.
    pub params: &'a Params,
    /// `system:<component>` for jobs, the API client id when a person triggered it.
    pub actor: &'a str,
}

/// Records an attempt and its audit line; returns its id. Call in the transaction that
/// commits the subject's `sending` state, before calling WeChat.
pub async fn begin(conn: &mut PgConnection, a: &NewAttempt<'_>) -> Result<i64, StoreError> {
    let params = serde_json::to_value(a.params).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO payout_attempts (subject_type, subject_id, merchant_no, action, endpoint, request_params, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(a.subject_type.as_str())
    .bind(a.subject_id)
    .bind(a.merchant_no)
    .bind(a.action.as_str())
    .bind(a.endpoint)
    .bind(&params)
    .bind(a.actor)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        conn,
        a.actor,
        &format!("{}.{}_attempt", a.subject_type.as_str(), a.action.as_str()),
        a.subject_type.as_str(),
        &a.subject_id.to_string(),
        json!({ "attempt_id": id, "merchant_no": a.merchant_no, "endpoint": a.endpoint }),
    )
    .await?;
    Ok(id)
}

/// Stores how an attempt ended.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    outcome: AttemptOutcome,
    code: Option<&str>,
    message: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE payout_attempts SET outcome = $2, code = $3, message = $4, finished_at = now() WHERE id = $1")
        .bind(id)
        .bind(outcome.as_str())
        .bind(code)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}

/// One recorded attempt, for inspection and tests.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub action: String,
    pub endpoint: String,
    pub request_params: serde_json::Value,
    pub actor: String,
    pub outcome: String,
    pub code: Option<String>,
}

/// The attempts for a subject, oldest first.
pub async fn list(
    conn: &mut PgConnection,
    subject_type: SubjectType,
    subject_id: i64,
) -> Result<Vec<Attempt>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, action, endpoint, request_params, actor, outcome, code FROM payout_attempts
         WHERE subject_type = $1 AND subject_id = $2 ORDER BY id",
    )
    .bind(subject_type.as_str())
    .bind(subject_id)
    .fetch_all(conn)
    .await?)
}

/// How the latest *finished* send of a subject ended: its outcome, WeChat's code and
/// message. The sender reads it when a query says WeChat holds nothing under the number:
/// a refused send is then proven final; anything else means "send again".
pub async fn last_send(
    conn: &mut PgConnection,
    subject_type: SubjectType,
    subject_id: i64,
) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT outcome, code, message FROM payout_attempts
          WHERE subject_type = $1 AND subject_id = $2 AND action = 'send' AND outcome <> 'pending'
          ORDER BY id DESC LIMIT 1",
    )
    .bind(subject_type.as_str())
    .bind(subject_id)
    .fetch_optional(conn)
    .await?)
}

/// Extends the lease of a request this sender claimed, before another call: `claim` is the
/// request's `send_attempts` as claimed (each claim increments it, so it names the claim).
/// False when the claim was lost — the lease ran out and another sender took the request,
/// or it was settled meanwhile: the caller must not call WeChat.
pub async fn renew_lease(
    conn: &mut PgConnection,
    subject_type: SubjectType,
    id: i64,
    claim: i32,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = match subject_type {
        SubjectType::Payout => {
            "UPDATE payouts SET lease_until = $4
              WHERE id = $1 AND status = 'sending' AND send_attempts = $2 AND lease_until > $3"
        }
        SubjectType::Redpack => {
            "UPDATE redpacks SET lease_until = $4
              WHERE id = $1 AND status = 'sending' AND send_attempts = $2 AND lease_until > $3"
        }
    };
    let done = sqlx::query(sql).bind(id).bind(claim).bind(now).bind(lease_until).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}
