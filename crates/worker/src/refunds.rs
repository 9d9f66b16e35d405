//! Refund follow-up: refunds still waiting for WeChat (`pending` after a crash between the
//! commit and the call, `unknown` after an unanswered call, `processing` whose notification
//! has not come) are asked about with refundquery, one step at a time:
//! - a final result (SUCCESS / REFUNDCLOSE / CHANGE) goes through `settle::apply_refund_result`;
//! - PROCESSING moves a pending/unknown refund to `processing`;
//! - REFUNDNOTEXIST for a pending/unknown refund: WeChat never received it, so it is sent
//!   again with the same out_refund_no and amounts (an answer-less Unknown stays unknown).
//!   Only this send may end in `failed` (releasing the reserved amount) on a refusal: the
//!   query has just shown that no earlier, unclear call reached WeChat. A refusal answered to
//!   any other re-send leaves the refund `unknown` (see the api's `payments::send_refund`),
//!   so it comes back here and is asked about again.
//!
//! A refund is claimed by bumping `updated_at` (a lease of [`LEASE_SECS`]), so several
//! workers never ask about the same refund at once, and no row lock is held during calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use minipay_config::Config;
use minipay_store::StoreError;
use minipay_store::domain::RefundStatus;
use minipay_store::orders;
use minipay_store::refunds::{self, Refund};
use minipay_store::settle::{self, RefundFacts, RefundResult, Source};
use sqlx::PgPool;
use wxpay::Outcome;
use wxpay::merchant::{MerchantClient, RefundCall};

use crate::{Schedule, Worker};

/// A refund is followed up at most this often.
pub const LEASE_SECS: f64 = 60.0;

/// What one step did (the refund's status afterwards, or why nothing changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowupStep {
    Status { out_refund_no: String, status: RefundStatus },
    Resent { out_refund_no: String, status: RefundStatus },
    NoAnswer { out_refund_no: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FollowupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Config(#[from] minipay_config::ConfigError),
    #[error("refund {0}: {1}")]
    Missing(String, &'static str),
}

#[derive(Clone)]
pub struct RefundFollowup {
    pool: PgPool,
    clients: Arc<HashMap<(String, String), MerchantClient>>,
    config: Arc<Config>,
    lease_secs: f64,
}

impl RefundFollowup {
    pub fn new(pool: PgPool, config: &Config) -> Result<RefundFollowup, FollowupError> {
        let mut clients = HashMap::new();
        for app in &config.apps {
            let client = config.merchant_client_for(&app.mch_id, &app.appid)?;
            minipay_store::platform_certs::attach_merchant(&client, &pool, &app.mch_id);
            clients.insert((app.mch_id.clone(), app.appid.clone()), client);
        }
        Ok(RefundFollowup {
            pool,
            clients: Arc::new(clients),
            config: Arc::new(config.clone()),
            lease_secs: LEASE_SECS,
        })
    }

    /// Follows refunds untouched for `secs` instead of [`LEASE_SECS`] (tests).
    pub fn with_lease(mut self, secs: f64) -> RefundFollowup {
        self.lease_secs = secs;
        self
    }

    /// Follows up one refund; `None` when none is due.
    pub async fn try_execute(&self) -> Result<Option<FollowupStep>, FollowupError> {
        let Some(no) = refunds::claim_open(&self.pool, self.lease_secs).await? else {
            return Ok(None);
        };
        let refund = refunds::find(&self.pool, &no).await?.ok_or(FollowupError::Missing(no.clone(), "vanished"))?;
        let order = orders::find(&self.pool, &refund.out_trade_no)
            .await?
            .ok_or(FollowupError::Missing(no.clone(), "its order vanished"))?;
        let Some(client) = self.clients.get(&(order.mch_id.clone(), order.appid.clone())) else {
            return Ok(Some(FollowupStep::NoAnswer { out_refund_no: no, reason: "merchant not configured".into() }));
        };
        let step = match client.refund_query(&no).await {
            Ok(Outcome::Success(q)) => match q.refunds.iter().find(|i| i.out_refund_no == no) {
                None => FollowupStep::NoAnswer { out_refund_no: no.clone(), reason: "not in the answer".into() },
                Some(item) => {
                    let mut tx = self.pool.begin().await?;
                    match RefundResult::from_wechat(item.refund_status.as_str()) {
                        Some(result) => {
                            let facts = RefundFacts {
                                out_refund_no: no.clone(),
                                refund_id: item.refund_id.clone(),
                                mch_id: order.mch_id.clone(),
                                out_trade_no: q.out_trade_no.clone(),
                                status: result,
                                refund_fee: item.refund_fee,
                                success_time: item.refund_success_time,
                                recv_account: item.refund_recv_accout.clone(),
                                source: Source::RefundQuery,
                            };
                            settle::apply_refund_result(&mut tx, &facts).await?;
                        }
                        None => {
                            orders::lock(&mut tx, &order.out_trade_no).await?;
                            let r = refunds::lock(&mut tx, &no).await?;
                            if let Some(r) =
                                r.filter(|r| matches!(r.status, RefundStatus::Pending | RefundStatus::Unknown))
                            {
                                refunds::set_processing(&mut tx, &r, &item.refund_id).await?;
                            }
                        }
                    }
                    tx.commit().await?;
                    FollowupStep::Status { out_refund_no: no.clone(), status: self.status(&no).await? }
                }
            },
            Ok(Outcome::Failed { code, .. })
                if code == "REFUNDNOTEXIST"
                    && matches!(refund.status, RefundStatus::Pending | RefundStatus::Unknown) =>
            {
                self.resend(client, &order, &refund).await?
            }
            Ok(Outcome::Failed { code, message }) => {
                FollowupStep::NoAnswer { out_refund_no: no, reason: format!("{code}: {message}") }
            }
            Ok(Outcome::Unknown { reason }) => FollowupStep::NoAnswer { out_refund_no: no, reason },
            Err(e) => FollowupStep::NoAnswer { out_refund_no: no, reason: e.to_string() },
        };
        Ok(Some(step))
    }

    async fn status(&self, no: &str) -> Result<RefundStatus, FollowupError> {
        Ok(refunds::find(&self.pool, no).await?.ok_or(FollowupError::Missing(no.into(), "vanished"))?.status)
    }

    /// Sends the refund again: same number, same amounts (WeChat never received it, as
    /// refundquery's REFUNDNOTEXIST just said). One call, no retry: a refusal here answers a
    /// call made while WeChat held nothing, so it is final; an unclear answer stays unknown
    /// and the next pass queries again.
    async fn resend(
        &self,
        client: &MerchantClient,
        order: &orders::Order,
        refund: &Refund,
    ) -> Result<FollowupStep, FollowupError> {
        let req = RefundCall {
            out_trade_no: order.out_trade_no.clone(),
            out_refund_no: refund.out_refund_no.clone(),
            total: order.amount,
            refund: refund.amount,
            reason: refund.reason.clone(),
            notify_url: Some(self.config.refund_notify_url_for(&order.mch_id)),
        };
        let outcome = client.refund(&req).await;
        let mut tx = self.pool.begin().await?;
        orders::lock(&mut tx, &order.out_trade_no).await?;
        let current = refunds::lock(&mut tx, &refund.out_refund_no)
            .await?
            .ok_or(FollowupError::Missing(refund.out_refund_no.clone(), "vanished"))?;
        let open = matches!(current.status, RefundStatus::Pending | RefundStatus::Unknown);
        match outcome {
            Ok(Outcome::Success(refund_id)) if open => refunds::set_processing(&mut tx, &current, &refund_id).await?,
            Ok(Outcome::Failed { code, message }) if open => {
                refunds::set_failed(&mut tx, &current, &code, &message).await?
            }
            Ok(Outcome::Unknown { reason }) if current.status == RefundStatus::Pending => {
                refunds::set_unknown(&mut tx, &current, &reason).await?
            }
            _ => {}
        }
        tx.commit().await?;
        let status = self.status(&refund.out_refund_no).await?;
        Ok(FollowupStep::Resent { out_refund_no: refund.out_refund_no.clone(), status })
    }

    /// Follows up to `max` due refunds.
    pub async fn run_until_idle(&self, max: usize) -> Result<Vec<FollowupStep>, FollowupError> {
        let mut steps = Vec::new();
        while steps.len() < max {
            match self.try_execute().await? {
                Some(s) => steps.push(s),
                None => break,
            }
        }
        Ok(steps)
    }

    /// Registers the job: due refunds every `every`.
    pub fn register(self, worker: &mut Worker, every: Duration) {
        let job = Arc::new(self);
        worker.add_job("refund_followup", Schedule::Every(every), move |_ctx| {
            let job = job.clone();
            async move {
                job.run_until_idle(100).await?;
                Ok(())
            }
        });
    }
}
