//! The shared WeChat access token: one row per app, read by every replica, written only by
//! the replica holding the app's advisory lock. Callers run
//! `begin → lock_app → current → (fetch upstream) → save → commit`, so two replicas that
//! find the token stale at the same moment make one upstream call between them: the second
//! waits on the lock and then finds the first one's token.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::StoreError;

/// A stored token. `Debug` hides the token.
#[derive(Clone)]
pub struct StoredToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub fetched_at: DateTime<Utc>,
    pub fetches: i64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .field("fetches", &self.fetches)
            .finish()
    }
}

/// Takes the app's token lock until the transaction ends.
pub async fn lock_app(tx: &mut PgConnection, appid: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('minipay.wechat_token'), hashtext($1))")
        .bind(appid)
        .execute(tx)
        .await?;
    Ok(())
}

type Row = (String, DateTime<Utc>, DateTime<Utc>, i64);

/// The app's stored token, if any (expired or not).
pub async fn current(conn: &mut PgConnection, appid: &str) -> Result<Option<StoredToken>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as("SELECT token, expires_at, fetched_at, fetches FROM wechat_access_tokens WHERE appid = $1")
            .bind(appid)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(token, expires_at, fetched_at, fetches)| StoredToken { token, expires_at, fetched_at, fetches }))
}

/// Stores what WeChat just answered (call with the lock held).
pub async fn save(
    tx: &mut PgConnection,
    appid: &str,
    token: &str,
    expires_at: DateTime<Utc>,
) -> Result<StoredToken, StoreError> {
    let (token, expires_at, fetched_at, fetches): Row = sqlx::query_as(
        "INSERT INTO wechat_access_tokens (appid, token, expires_at, fetched_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (appid) DO UPDATE
           SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at, fetched_at = now(),
               fetches = wechat_access_tokens.fetches + 1
         RETURNING token, expires_at, fetched_at, fetches",
    )
    .bind(appid)
    .bind(token)
    .bind(expires_at)
    .fetch_one(tx)
    .await?;
    Ok(StoredToken { token, expires_at, fetched_at, fetches })
}
