//! What every handler shares: the pool, the configuration, one WeChat Pay client per
//! (merchant, app), the `api.weixin.qq.com` client and the metrics.

use std::collections::HashMap;
use std::sync::Arc;

use minipay_config::Config;
use sqlx::PgPool;
use wxpay::Outcome;
use wxpay::weixin::WeixinClient;

use crate::error::ApiError;
use crate::metrics::Metrics;

pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// Keyed by (mch_id, appid): requests carry the app they are made for.
    clients: HashMap<(String, String), wxpay::Client>,
    pub weixin: WeixinClient,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(config: Arc<Config>, pool: PgPool, metrics: Metrics) -> Result<AppState, minipay_config::ConfigError> {
        let mut clients = HashMap::new();
        for app in &config.apps {
            let c = config.wxpay_client_for(&app.mch_id, &app.appid)?;
            clients.insert((app.mch_id.clone(), app.appid.clone()), c);
        }
        // A merchant without an app still serves merchant-level calls (payouts, queries).
        for m in config.merchants.iter().filter(|m| config.merchant_app(&m.mch_id).is_none()) {
            clients.insert((m.mch_id.clone(), String::new()), config.wxpay_client_for(&m.mch_id, "")?);
        }
        let weixin = config.weixin_client()?;
        Ok(AppState { pool, config, clients, weixin, metrics })
    }

    /// The client for a merchant acting for an app (both as configured).
    pub fn wxpay(&self, mch_id: &str, appid: &str) -> Result<&wxpay::Client, ApiError> {
        self.clients.get(&(mch_id.to_owned(), appid.to_owned())).ok_or_else(|| {
            ApiError::internal(&std::io::Error::other(format!(
                "no WeChat Pay client for merchant {mch_id} app {appid}"
            )))
        })
    }

    /// The client for a merchant with its default app (payouts, queries by merchant).
    pub fn wxpay_for_merchant(&self, mch_id: &str) -> Result<&wxpay::Client, ApiError> {
        let appid = self.config.merchant_app(mch_id).map(|a| a.appid.as_str()).unwrap_or("");
        self.wxpay(mch_id, appid)
    }

    /// Counts an upstream call by endpoint and outcome, and passes the outcome on.
    pub fn observe<T>(&self, endpoint: wxpay::Endpoint, outcome: &Outcome<T>) {
        self.metrics.observe_upstream(endpoint.path(), outcome);
    }
}
