//! WeChat Pay platform certificates shared between replicas (migration
//! `20261202000700_platform_certificates`): the [`wxpay::v3::CertificateStore`] of every
//! APIv3 client in certificate or switching mode, and the lock that lets one worker at a
//! time refresh a merchant's certificates.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use wxpay::v3::{CertificateStore, StoreFuture, StoredCertificate};

use crate::StoreError;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The merchant's stored certificates that have not expired at `now`.
pub async fn load(
    conn: &mut PgConnection,
    mch_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<StoredCertificate>, StoreError> {
    let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT serial_no, pem, not_before, not_after FROM wechatpay_platform_certificates
         WHERE mch_id = $1 AND not_after > $2 ORDER BY not_after DESC",
    )
    .bind(mch_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(serial_no, pem, nb, na)| StoredCertificate {
            serial_no,
            pem,
            not_before: nb.timestamp(),
            not_after: na.timestamp(),
        })
        .collect())
}

/// Stores certificates (an existing serial gets the new fetch time), and drops the
/// merchant's expired ones.
pub async fn save(conn: &mut PgConnection, mch_id: &str, certs: &[StoredCertificate]) -> Result<(), StoreError> {
    for c in certs {
        sqlx::query(
            "INSERT INTO wechatpay_platform_certificates (mch_id, serial_no, pem, not_before, not_after)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (mch_id, serial_no) DO UPDATE SET fetched_at = now()",
        )
        .bind(mch_id)
        .bind(&c.serial_no)
        .bind(&c.pem)
        .bind(at(c.not_before))
        .bind(at(c.not_after))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM wechatpay_platform_certificates WHERE mch_id = $1 AND not_after < now()")
        .bind(mch_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// When the merchant's certificates were last fetched from WeChat (`None`: never).
pub async fn last_fetched(conn: &mut PgConnection, mch_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row: (Option<DateTime<Utc>>,) =
        sqlx::query_as("SELECT max(fetched_at) FROM wechatpay_platform_certificates WHERE mch_id = $1")
            .bind(mch_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(row.0)
}

/// Takes the transaction-scoped lock that makes one worker at a time refresh `mch_id`'s
/// certificates; `false`: another holds it (skip this round).
pub async fn try_refresh_lock(conn: &mut PgConnection, mch_id: &str) -> Result<bool, StoreError> {
    let (got,): (bool,) = sqlx::query_as(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('wechatpay_platform_certificates:' || $1, 0))",
    )
    .bind(mch_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(got)
}

/// The Postgres [`CertificateStore`] of one merchant.
pub struct PgCertificates {
    pool: PgPool,
    mch_id: String,
}

impl PgCertificates {
    pub fn new(pool: PgPool, mch_id: impl Into<String>) -> Arc<PgCertificates> {
        Arc::new(PgCertificates { pool, mch_id: mch_id.into() })
    }
}

impl CertificateStore for PgCertificates {
    fn load(&self) -> StoreFuture<'_, Vec<StoredCertificate>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
            load(&mut conn, &self.mch_id, Utc::now()).await.map_err(|e| e.to_string())
        })
    }

    fn save(&self, certs: Vec<StoredCertificate>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
            save(&mut tx, &self.mch_id, &certs).await.map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        })
    }
}

/// Shares `client`'s certificates through Postgres (a no-op for public-key merchants,
/// whose clients never fetch certificates).
pub fn attach(client: &wxpay::v3::Client, pool: &PgPool, mch_id: &str) {
    client.set_certificate_store(PgCertificates::new(pool.clone(), mch_id));
}

/// [`attach`] for a merchant client of either protocol (v2 clients have no certificates).
pub fn attach_merchant(client: &wxpay::merchant::MerchantClient, pool: &PgPool, mch_id: &str) {
    if let Some(v3) = client.v3() {
        attach(v3, pool, mch_id);
    }
}
