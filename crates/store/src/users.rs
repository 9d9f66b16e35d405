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
