//! Mini-program users: one row per (appid, openid), written at login. Orders may only be
//! created for users we know, which catches a backend sending an openid of another app.

use sqlx::{PgConnection, PgPool};

use crate::StoreError;
use crate::domain::{AppId, OpenId};

/// Records a login; keeps an existing unionid when WeChat sends none this time.
pub async fn upsert(
    conn: &mut PgConnection,
    appid: &AppId,
    openid: &OpenId,
    unionid: Option<&str>,
) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO users (appid, openid, unionid) VALUES ($1, $2, $3)
         ON CONFLICT (appid, openid) DO UPDATE SET unionid = coalesce(EXCLUDED.unionid, users.unionid)
         RETURNING id",
    )
    .bind(appid.as_str())
    .bind(openid.as_str())
    .bind(unionid)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Whether the user has logged in to this app.
pub async fn exists(pool: &PgPool, appid: &AppId, openid: &OpenId) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE appid = $1 AND openid = $2")
        .bind(appid.as_str())
        .bind(openid.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}

/// Makes the configured apps known to the database (foreign keys and reports name them).
pub async fn upsert_app(pool: &PgPool, appid: &str, mch_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO apps (appid, mch_id) VALUES ($1, $2)
         ON CONFLICT (appid) DO UPDATE SET mch_id = EXCLUDED.mch_id WHERE apps.mch_id <> EXCLUDED.mch_id",
    )
    .bind(appid)
    .bind(mch_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A user in one app, as the UnionID lookups return it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppUser {
    pub appid: String,
    pub openid: String,
    pub unionid: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

type AppUserRow = (String, String, Option<String>, chrono::DateTime<chrono::Utc>);

fn app_user((appid, openid, unionid, created_at): AppUserRow) -> AppUser {
    AppUser { appid, openid, unionid, created_at }
}

/// Every (app, openid) of one UnionID, oldest first.
pub async fn by_unionid(pool: &PgPool, unionid: &str) -> Result<Vec<AppUser>, StoreError> {
    let rows: Vec<AppUserRow> = sqlx::query_as(
        "SELECT appid, openid, unionid, created_at FROM users WHERE unionid = $1 ORDER BY created_at, id",
    )
    .bind(unionid)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(app_user).collect())
}

/// One user by app and openid.
pub async fn by_openid(pool: &PgPool, appid: &str, openid: &str) -> Result<Option<AppUser>, StoreError> {
    let row: Option<AppUserRow> =
        sqlx::query_as("SELECT appid, openid, unionid, created_at FROM users WHERE appid = $1 AND openid = $2")
            .bind(appid)
            .bind(openid)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(app_user))
}

/// Keeps the latest session_key, already sealed by the caller (the store never sees it in
/// clear).
pub async fn set_session_key(
    conn: &mut PgConnection,
    appid: &str,
    openid: &str,
    sealed: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET session_key_enc = $3, session_key_at = now() WHERE appid = $1 AND openid = $2")
        .bind(appid)
        .bind(openid)
        .bind(sealed)
        .execute(conn)
        .await?;
    Ok(())
}

/// The sealed session_key of a user, if one is kept.
pub async fn session_key(pool: &PgPool, appid: &str, openid: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT session_key_enc FROM users WHERE appid = $1 AND openid = $2")
            .bind(appid)
            .bind(openid)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(k,)| k))
}

/// A phone number WeChat gave for a user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phone {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
    pub fetched_at: chrono::DateTime<chrono::Utc>,
}

type PhoneRow = (Option<String>, Option<String>, Option<String>, Option<chrono::DateTime<chrono::Utc>>);

/// The cached phone number of a user.
pub async fn phone(pool: &PgPool, appid: &str, openid: &str) -> Result<Option<Phone>, StoreError> {
    let row: Option<PhoneRow> = sqlx::query_as(
        "SELECT phone_number, phone_pure_number, phone_country_code, phone_at FROM users
              WHERE appid = $1 AND openid = $2",
    )
    .bind(appid)
    .bind(openid)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((Some(phone_number), Some(pure_phone_number), Some(country_code), Some(fetched_at))) => {
            Some(Phone { phone_number, pure_phone_number, country_code, fetched_at })
        }
        _ => None,
    })
}

/// Caches the phone number on a known user; false when the user is unknown.
pub async fn set_phone(
    pool: &PgPool,
    appid: &str,
    openid: &str,
    phone_number: &str,
    pure: &str,
    country_code: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE users SET phone_number = $3, phone_pure_number = $4, phone_country_code = $5, phone_at = now()
          WHERE appid = $1 AND openid = $2",
    )
    .bind(appid)
    .bind(openid)
    .bind(phone_number)
    .bind(pure)
    .bind(country_code)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What recording a getPhoneNumber code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneCodeClaim {
    /// First use (or a retry after an unknown outcome): call WeChat, then `finish_phone_code`.
    Go(i64),
    /// WeChat already answered this code (`success` or `failed`): never send it again.
    Used { status: String, errcode: Option<i64> },
    /// Another request is asking WeChat with this code right now.
    InProgress,
}

/// Records a code before it is sent (codes are single-use; only its hash is kept).
pub async fn claim_phone_code(
    pool: &PgPool,
    appid: &str,
    code_hash: &str,
    openid: Option<&str>,
) -> Result<PhoneCodeClaim, StoreError> {
    let fresh: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO phone_number_requests (appid, code_hash, openid, status) VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (appid, code_hash) DO NOTHING RETURNING id",
    )
    .bind(appid)
    .bind(code_hash)
    .bind(openid)
    .fetch_optional(pool)
    .await?;
    if let Some((id,)) = fresh {
        return Ok(PhoneCodeClaim::Go(id));
    }
    // Only an unknown outcome may be retried: take it back to pending atomically.
    let retry: Option<(i64,)> = sqlx::query_as(
        "UPDATE phone_number_requests SET status = 'pending' WHERE appid = $1 AND code_hash = $2 AND status = 'unknown'
         RETURNING id",
    )
    .bind(appid)
    .bind(code_hash)
    .fetch_optional(pool)
    .await?;
    if let Some((id,)) = retry {
        return Ok(PhoneCodeClaim::Go(id));
    }
    let (status, errcode): (String, Option<i64>) =
        sqlx::query_as("SELECT status, errcode FROM phone_number_requests WHERE appid = $1 AND code_hash = $2")
            .bind(appid)
            .bind(code_hash)
            .fetch_one(pool)
            .await?;
    Ok(if status == "pending" { PhoneCodeClaim::InProgress } else { PhoneCodeClaim::Used { status, errcode } })
}

/// Records WeChat's answer for a claimed code: `success`, `failed` or `unknown`.
pub async fn finish_phone_code(pool: &PgPool, id: i64, status: &str, errcode: Option<i64>) -> Result<(), StoreError> {
    sqlx::query("UPDATE phone_number_requests SET status = $2, errcode = $3 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(errcode)
        .execute(pool)
        .await?;
    Ok(())
}

/// Successful phone-number calls of an app since a time: what WeChat bills.
pub async fn phone_successes_since(
    pool: &PgPool,
    appid: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM phone_number_requests WHERE appid = $1 AND status = 'success' AND created_at >= $2",
    )
    .bind(appid)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(n)
}
