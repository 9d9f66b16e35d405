//! # minipay-notify — WeChat's payment and refund notification callbacks
//!
//! The one place where money arrives. WeChat POSTs XML to `/wxpay/notify/pay` (signed
//! payment results) and `/wxpay/notify/refund` (refund results, `req_info` encrypted with the
//! merchant key). Each is checked step by step and either applied exactly once through
//! [`minipay_store::settle`] or refused:
//!
//! | what arrived | reply | what is kept |
//! |---|---|---|
//! | oversize, not UTF-8, DOCTYPE/entities, malformed, unknown merchant/app, bad signature, undecryptable `req_info` | `FAIL`, HTTP 4xx | a forensic row (reason, first 4 KiB, size, hash) |
//! | genuine and agreeing with our order/refund | `SUCCESS` | raw notification, state change, ledger, webhook, audit — one transaction |
//! | genuine repeat of something applied | `SUCCESS` | the notification's delivery count |
//! | genuine but disagreeing (amount, openid, appid, unknown number, …) | `SUCCESS` | raw notification + an anomaly; the order is **not** paid |
//! | genuine payment for an order we closed locally | `SUCCESS` | paid wins, order flagged, anomaly for an operator |
//! | database down / any error before commit | `FAIL`, HTTP 5xx | nothing (WeChat retries) |
//!
//! Acknowledging a genuine-but-mismatched notification is deliberate: the signature proves it
//! is WeChat's word, so its retries (15 over 24 h) would carry the same facts and could never
//! succeed; what matters is that the disagreement is committed where operators and
//! reconciliation see it (`settlement_anomalies`) before we say SUCCESS. A FAIL would only
//! add noise and, for numbers from another system on the same merchant, never end.
//! Operators list them with `GET /v1/anomalies?status=open` on the api and close each with
//! `POST /v1/anomalies/{id}/resolve` and a note (audited).
//!
//! Layout: [`Application`] (actix-web server, port 0 in tests, graceful stop);
//! `body` (bounded body reading); `pay` and `refund` (the two pipelines); `reply` (WeChat's
//! SUCCESS/FAIL XML); [`metrics`] (Prometheus counters per outcome, served on `/metrics`).

mod body;
pub mod metrics;
mod outcome;
mod pay;
mod refund;
mod reply;
mod v3;

use std::collections::HashMap;
use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, web};
use minipay_config::Config;
use minipay_store::group_commit::{self, GroupCommit};
use minipay_store::settle::{self, GroupAnswer, NotifiedPayment};
use sqlx::PgPool;
use wxpay::ApiKey;

pub use metrics::Metrics;

/// The merchants and apps whose notifications we accept, from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Merchants {
    keys: HashMap<String, ApiKey>,
    /// appid → mch_id
    apps: HashMap<String, String>,
}

impl Merchants {
    pub fn from_config(config: &Config) -> Merchants {
        Merchants {
            keys: config.merchants.iter().filter_map(|m| Some((m.mch_id.clone(), m.api_key.clone()?))).collect(),
            apps: config.apps.iter().map(|a| (a.appid.clone(), a.mch_id.clone())).collect(),
        }
    }

    /// The merchant an app belongs to.
    pub fn app_merchant(&self, appid: &str) -> Option<&str> {
        self.apps.get(appid).map(String::as_str)
    }

    /// The key of `mch_id`, if the merchant is ours and `appid` (when given) is one of its
    /// apps. A notification naming an app of another merchant is refused before its
    /// signature is even checked.
    pub fn key_for(&self, mch_id: &str, appid: Option<&str>) -> Option<&ApiKey> {
        let key = self.keys.get(mch_id)?;
        match appid {
            Some(a) if self.apps.get(a).map(String::as_str) != Some(mch_id) => None,
            _ => Some(key),
        }
    }
}

/// What every handler shares.
pub(crate) struct State {
    pub pool: PgPool,
    pub merchants: Merchants,
    pub max_body_bytes: usize,
    pub rejected_keep: i64,
    pub metrics: Metrics,
    /// Common-case payments of concurrent notifications, applied a group per statement.
    pub payments: GroupCommit<NotifiedPayment, GroupAnswer>,
    /// The v3 client (verifier, certificate refresh, APIv3 key) of every merchant with v3
    /// material, by mch_id.
    pub v3: HashMap<String, wxpay::v3::Client>,
}

/// The running notify service.
pub struct Application {
    port: u16,
    server: Server,
    metrics: Metrics,
}

impl Application {
    /// Binds `config.notify.listen` (port 0 picks a free port) and builds the server; it
    /// starts serving when [`Application::run_until_stopped`] is polled (or spawned).
    pub async fn build(config: &Config, pool: PgPool) -> std::io::Result<Application> {
        let listener = TcpListener::bind(&config.notify.listen)?;
        Application::from_listener(listener, config, pool)
    }

    /// Builds on an already bound listener.
    pub fn from_listener(listener: TcpListener, config: &Config, pool: PgPool) -> std::io::Result<Application> {
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        let limits =
            group_commit::Limits { max_group: config.database.group_max, in_flight: config.database.group_in_flight };
        let payments = payment_group(pool.clone(), metrics.clone(), limits);
        let mut v3 = HashMap::new();
        for m in config.merchants.iter().filter(|m| m.v3.is_some()) {
            let appid = config.merchant_app(&m.mch_id).map(|a| a.appid.clone()).unwrap_or_default();
            let client = config.v3_client_for(&m.mch_id, &appid).map_err(std::io::Error::other)?;
            minipay_store::platform_certs::attach(&client, &pool, &m.mch_id);
            v3.insert(m.mch_id.clone(), client);
        }
        let state = web::Data::new(State {
            pool,
            payments,
            merchants: Merchants::from_config(config),
            max_body_bytes: config.notify.max_body_bytes,
            rejected_keep: config.notify.rejected_keep,
            metrics: metrics.clone(),
            v3,
        });
        let mut server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/wxpay/notify/pay", web::post().to(pay::handle))
                .route("/wxpay/notify/refund", web::post().to(refund::handle))
                .route("/wxpay/v3/notify/{mch_id}/pay", web::post().to(v3::pay))
                .route("/wxpay/v3/notify/{mch_id}/refund", web::post().to(v3::refund))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics::serve))
        })
        // Let in-flight notifications finish their transaction on shutdown. Signals are the
        // binary's (`serve` stops every service in order on SIGTERM/SIGINT, gracefully).
        .shutdown_timeout(10)
        .disable_signals();
        if config.notify.workers > 0 {
            server = server.workers(config.notify.workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Application { port, server, metrics })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully (`stop(true)`) from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The service's metrics (the same registry `/metrics` serves).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The group commit in front of the payment path (see [`minipay_store::group_commit`]):
/// `limits` from `[database] group_max / group_in_flight`. A group that cannot run (database
/// down, a constraint) answers `NotHandled` for all: each notification then takes the
/// single path, which reports the error (FAIL) or the repeat on its own.
fn payment_group(
    pool: PgPool,
    metrics: Metrics,
    limits: group_commit::Limits,
) -> GroupCommit<NotifiedPayment, GroupAnswer> {
    let fallback = GroupAnswer::NotHandled;
    GroupCommit::start_with_fallback("notify.payments", limits, fallback, move |items: Vec<NotifiedPayment>| {
        let pool = pool.clone();
        metrics.observe_group(items.len());
        async move {
            let mut conn = pool.acquire().await?;
            settle::apply_notified_payments(&mut conn, &items).await
        }
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Readiness (the Kubernetes probe in `deploy/k8s` asks for it): the database answers
/// within two seconds. A notify replica that cannot write can only answer FAIL, so it
/// should not receive WeChat's callbacks meanwhile; WeChat retries elsewhere or later.
async fn readyz(state: web::Data<State>) -> HttpResponse {
    let check = tokio::time::timeout(std::time::Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.pool));
    match check.await {
        Ok(Ok(_)) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable")
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_key_is_found_only_with_one_of_its_own_apps() {
        let m = Merchants {
            keys: [("1900000109".to_owned(), ApiKey::new("k1")), ("1900000110".to_owned(), ApiKey::new("k2"))].into(),
            apps: [("wxapp1".to_owned(), "1900000109".to_owned()), ("wxapp2".to_owned(), "1900000110".to_owned())]
                .into(),
        };
        assert_eq!(m.key_for("1900000109", Some("wxapp1")).map(ApiKey::expose), Some("k1"));
        assert_eq!(m.key_for("1900000109", None).map(ApiKey::expose), Some("k1"));
        assert!(m.key_for("1900000109", Some("wxapp2")).is_none(), "another merchant's app");
        assert!(m.key_for("1900000109", Some("wxunknown")).is_none());
        assert!(m.key_for("1234", Some("wxapp1")).is_none());
    }
}
