//! Platform certificates of APIv3 merchants in certificate or switching mode: fetched from
//! `/v3/certificates` by one worker at a time (a transaction-scoped advisory lock per
//! merchant) and stored in Postgres, where every replica's clients find them
//! ([`minipay_store::platform_certs`]). A round refreshes a merchant whose certificates
//! were fetched longer than `every` ago, or none of whose certificates stays valid for
//! [`EXPIRY_MARGIN`] more; an unknown serial between rounds is handled by the client itself
//! (store first, then one refresh).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use minipay_config::Config;
use minipay_store::StoreError;
use minipay_store::platform_certs;
use sqlx::PgPool;

use crate::{Schedule, Worker};

/// WeChat overlaps old and new certificates well before expiry; refreshing when the last
/// valid one has less than this left leaves room for retries (guess: a week).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(7 * 86_400);

/// What a round did for one merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStep {
    /// Fetched and stored; how many certificates are held now.
    Refreshed { mch_id: String, certificates: usize },
    /// Fresh enough: nothing to do.
    Fresh { mch_id: String },
    /// Another worker holds the merchant's refresh lock.
    Busy { mch_id: String },
    /// WeChat did not give a usable answer; the next round tries again.
    Failed { mch_id: String, reason: String },
}

#[derive(Clone)]
pub struct CertificateRefresh {
    pool: PgPool,
    clients: Arc<Vec<(String, wxpay::v3::Client)>>,
    every: Duration,
}

impl CertificateRefresh {
    /// One client per v3 merchant whose mode uses certificates; `every` is how stale the
    /// stored certificates may get before a round fetches them again.
    pub fn new(
        pool: PgPool,
        config: &Config,
        every: Duration,
    ) -> Result<CertificateRefresh, minipay_config::ConfigError> {
        let mut clients = Vec::new();
        for m in &config.merchants {
            let Some(v3) = &m.v3 else { continue };
            if !v3.mode.mode().refreshes_certificates() {
                continue;
            }
            let appid = config.merchant_app(&m.mch_id).map(|a| a.appid.clone()).unwrap_or_default();
            let client = v3.client(config, &appid)?;
            platform_certs::attach(&client, &pool, &m.mch_id);
            clients.push((m.mch_id.clone(), client));
        }
        Ok(CertificateRefresh { pool, clients: Arc::new(clients), every })
    }

    /// One round over every merchant.
    pub async fn run_once(&self) -> Result<Vec<CertStep>, StoreError> {
        let mut steps = Vec::new();
        for (mch_id, client) in self.clients.iter() {
            steps.push(self.one(mch_id, client).await?);
        }
        Ok(steps)
    }

    async fn one(&self, mch_id: &str, client: &wxpay::v3::Client) -> Result<CertStep, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !platform_certs::try_refresh_lock(&mut tx, mch_id).await? {
            return Ok(CertStep::Busy { mch_id: mch_id.into() });
        }
        let now = Utc::now();
        let stale = match platform_certs::last_fetched(&mut tx, mch_id).await? {
            None => true,
            Some(t) => now - t > chrono::Duration::from_std(self.every).unwrap_or(chrono::Duration::MAX),
        };
        let horizon = now + chrono::Duration::from_std(EXPIRY_MARGIN).unwrap_or_default();
        let covered =
            platform_certs::load(&mut tx, mch_id, now).await?.iter().any(|c| c.not_after > horizon.timestamp());
        let step = if stale || !covered {
            // The lock is held (by this transaction) while WeChat is asked and the store
            // written on the client's own connection.
            match client.refresh_certificates().await {
                Ok(n) => CertStep::Refreshed { mch_id: mch_id.into(), certificates: n },
                Err(e) => {
                    tracing::warn!(mch_id, error = %e, "platform certificate refresh failed");
                    CertStep::Failed { mch_id: mch_id.into(), reason: e.to_string() }
                }
            }
        } else {
            CertStep::Fresh { mch_id: mch_id.into() }
        };
        tx.commit().await?;
        Ok(step)
    }

    /// Registers the job: a round every hour (each merchant is fetched only when stale).
    pub fn register(self, worker: &mut Worker) {
        if self.clients.is_empty() {
            return;
        }
        let job = Arc::new(self);
        worker.add_job("platform_certificates", Schedule::Every(Duration::from_secs(3600)), move |_ctx| {
            let job = job.clone();
            async move {
                job.run_once().await?;
                Ok(())
            }
        });
    }
}
