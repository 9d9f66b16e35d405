//! Order expiry: open orders past `expires_at` are closed at WeChat and here — after asking
//! WeChat first, because a payment made in the last second wins over our clock.
//!
//! One step ([`OrderExpiry::try_execute`]) takes the oldest expired open order with
//! `FOR UPDATE SKIP LOCKED` (any number of workers can run), then:
//! 1. orderquery: paid (SUCCESS/REFUND) → applied through `settle::apply_payment`, done;
//!    CLOSED → closed here; USERPAYING → left for a later pass (the user is paying now);
//!    ORDERNOTEXIST → WeChat never saw it, closed here; Unknown → retried on a later pass.
//! 2. otherwise closeorder: success, ORDERCLOSED or ORDERNOTEXIST → closed here; ORDERPAID
//!    (paid between our two calls) → left open, the next pass's orderquery applies it.
//!
//! Every attempt stamps `queried_at`, and an order queried within [`RETRY_AFTER`] is
//! skipped, so an order WeChat does not answer for cannot hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use minipay_config::Config;
use minipay_store::StoreError;
use minipay_store::orders::{self, Order};
use minipay_store::settle::{self, PaymentApplied};
use sqlx::PgPool;
use wxpay::Outcome;
use wxpay::api::TradeState;
use wxpay::merchant::MerchantClient;

use crate::{Schedule, Worker};

/// An order WeChat did not answer for is retried after this long.
pub const RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// What one step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpiryStep {
    /// WeChat said paid: the payment was applied (`late` is never true here: the order was
    /// still open) or had been applied already.
    Paid {
        out_trade_no: String,
    },
    Closed {
        out_trade_no: String,
    },
    /// Left open for a later pass, with the reason.
    Deferred {
        out_trade_no: String,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("no WeChat Pay client for merchant {0}")]
    NoClient(String),
    #[error(transparent)]
    Config(#[from] minipay_config::ConfigError),
}

/// The expiry job: a pool and a WeChat Pay client per (merchant, app).
#[derive(Clone)]
pub struct OrderExpiry {
    pool: PgPool,
    clients: Arc<HashMap<(String, String), MerchantClient>>,
    batch: i64,
}

impl OrderExpiry {
    pub fn new(pool: PgPool, config: &Config) -> Result<OrderExpiry, ExpiryError> {
        let mut clients = HashMap::new();
        for app in &config.apps {
            let client = config.merchant_client_for(&app.mch_id, &app.appid)?;
            minipay_store::platform_certs::attach_merchant(&client, &pool, &app.mch_id);
            clients.insert((app.mch_id.clone(), app.appid.clone()), client);
        }
        Ok(OrderExpiry { pool, clients: Arc::new(clients), batch: config.worker.expiry_batch.max(1) })
    }

    fn client(&self, o: &Order) -> Result<&MerchantClient, ExpiryError> {
        self.clients.get(&(o.mch_id.clone(), o.appid.clone())).ok_or_else(|| ExpiryError::NoClient(o.mch_id.clone()))
    }

    /// One expired order, handled; `None` when there is none due.
    pub async fn try_execute(&self) -> Result<Option<ExpiryStep>, ExpiryError> {
        self.try_execute_at(Utc::now()).await
    }

    /// As [`OrderExpiry::try_execute`] with an explicit "now" (tests).
    pub async fn try_execute_at(&self, now: DateTime<Utc>) -> Result<Option<ExpiryStep>, ExpiryError> {
        let mut tx = self.pool.begin().await?;
        let Some(order) = orders::lock_next_expired(&mut tx, now, now - RETRY_AFTER).await? else {
            return Ok(None);
        };
        let client = self.client(&order)?;
        orders::mark_queried(&mut *tx, order.id).await?;
        let no = order.out_trade_no.clone();
        let query = client.order_query(&no).await;
        let step = match query {
            Err(e) => defer(&mut tx, &order, format!("orderquery not sent: {e}")).await?,
            Ok(Outcome::Success(q)) => match orders::facts_from_query(&order, &q) {
                Some(facts) => match settle::apply_payment(&mut tx, &facts).await? {
                    PaymentApplied::Applied { .. } | PaymentApplied::AlreadyApplied => {
                        tracing::info!(out_trade_no = %no, "expired order was paid: payment applied");
                        ExpiryStep::Paid { out_trade_no: no }
                    }
                    PaymentApplied::Mismatch { reason, .. } => {
                        defer(&mut tx, &order, format!("orderquery disagrees: {reason}")).await?
                    }
                    PaymentApplied::UnknownOrder { .. } => defer(&mut tx, &order, "order vanished".into()).await?,
                },
                None if q.trade_state == TradeState::Closed => {
                    orders::set_closed(&mut tx, &order).await?;
                    ExpiryStep::Closed { out_trade_no: no }
                }
                // Guess: USERPAYING (password being entered) usually resolves within
                // seconds; closing now would race the user, so wait for the next pass.
                None if q.trade_state == TradeState::UserPaying => {
                    defer(&mut tx, &order, "user is paying".into()).await?
                }
                None => self.close(&mut tx, client, &order).await?,
            },
            Ok(Outcome::Failed { code, .. }) if code == "ORDERNOTEXIST" => {
                // unifiedorder never reached WeChat: nothing can be paid; close here only.
                orders::set_closed(&mut tx, &order).await?;
                ExpiryStep::Closed { out_trade_no: no }
            }
            Ok(Outcome::Failed { code, message }) => {
                defer(&mut tx, &order, format!("orderquery {code}: {message}")).await?
            }
            Ok(Outcome::Unknown { reason }) => defer(&mut tx, &order, format!("orderquery unknown: {reason}")).await?,
        };
        tx.commit().await?;
        Ok(Some(step))
    }

    async fn close(
        &self,
        tx: &mut sqlx::PgConnection,
        client: &MerchantClient,
        order: &Order,
    ) -> Result<ExpiryStep, ExpiryError> {
        let no = order.out_trade_no.clone();
        match client.close_order(&no).await {
            Ok(Outcome::Success(_)) => {}
            Ok(Outcome::Failed { code, .. }) if code == "ORDERCLOSED" || code == "ORDERNOTEXIST" => {}
            Ok(Outcome::Failed { code, .. }) if code == "ORDERPAID" => {
                return defer(tx, order, "paid between orderquery and closeorder".into()).await;
            }
            Ok(Outcome::Failed { code, message }) => {
                return defer(tx, order, format!("closeorder {code}: {message}")).await;
            }
            Ok(Outcome::Unknown { reason }) => return defer(tx, order, format!("closeorder unknown: {reason}")).await,
            Err(e) => return defer(tx, order, format!("closeorder not sent: {e}")).await,
        }
        orders::set_closed(tx, order).await?;
        tracing::info!(out_trade_no = %no, "expired order closed");
        Ok(ExpiryStep::Closed { out_trade_no: no })
    }

    /// Handles up to the configured batch of expired orders.
    pub async fn run_batch(&self) -> Result<Vec<ExpiryStep>, ExpiryError> {
        let mut steps = Vec::new();
        for _ in 0..self.batch {
            match self.try_execute().await? {
                Some(s) => steps.push(s),
                None => break,
            }
        }
        Ok(steps)
    }

    /// Registers the job: a batch every `every`.
    pub fn register(self, worker: &mut Worker, every: Duration) {
        let job = Arc::new(self);
        worker.add_job("order_expiry", Schedule::Every(every), move |_ctx| {
            let job = job.clone();
            async move {
                job.run_batch().await?;
                Ok(())
            }
        });
    }
}

async fn defer(tx: &mut sqlx::PgConnection, order: &Order, reason: String) -> Result<ExpiryStep, ExpiryError> {
    tracing::warn!(out_trade_no = %order.out_trade_no, %reason, "expired order left open for now");
    orders::record_error(&mut *tx, order.id, &reason).await?;
    Ok(ExpiryStep::Deferred { out_trade_no: order.out_trade_no.clone(), reason })
}
