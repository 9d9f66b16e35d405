//! What every handler shares: the pools, the configuration, one WeChat Pay client per
//! (merchant, app), the `api.weixin.qq.com` client, the metrics and a small cache of users
//! known to have logged in.
//!
//! Resolved API keys are cached only while the replica listens for key changes
//! ([`crate::keys`]): a key disabled with `minipay keys disable` fails on every replica as
//! soon as the disable commits. (Until issue 22 a resolved key was trusted for 10 s.)
//!
//! Two pools on the same database: `pool` commits durably (money and every state WeChat
//! may act on), `pool_async` commits with `synchronous_commit = off` for writes whose loss
//! in a crash is harmless because the request that made them is safe to repeat: stored
//! idempotency responses (a lost one makes a retry run again, reaching the same numbers)
//! and the `prepaid` mark (a lost one leaves the order `created`; re-issuing unifiedorder
//! with the same number returns the same prepay_id, and a payment applies to either state).
//! This keeps one WAL flush per order instead of four, and [`Groups`] shares that flush (and
//! each statement) among the orders created concurrently. With an Idempotency-Key an order
//! costs two statements: the claim with the order insert (durable), and the stored
//! response with the `prepaid` mark (asynchronous).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minipay_store::StoreError;
use minipay_store::clients::ApiClient;
use minipay_store::group_commit::{Connections, GroupCommit, Limits};
use minipay_store::idempotency::{self, Claim, Completion};
use minipay_store::orders::{self, GroupInsert, NewOrderOwned};

use minipay_config::Config;
use sqlx::PgPool;
use wxpay::Outcome;
use wxpay::merchant::{MerchantClient, Op};
use wxpay::weixin::WeixinClient;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Bound of the known-user cache (cleared when full; it only saves queries).
const CACHE_LIMIT: usize = 100_000;

pub struct AppState {
    pub pool: PgPool,
    /// Resolved API keys (see [`crate::keys`]).
    keys: Arc<crate::keys::KeyCache>,
    /// `synchronous_commit = off`; see the module docs for what may use it.
    pub pool_async: PgPool,
    /// (appid, openid) pairs known to have logged in. Users are never deleted, so a
    /// positive answer never goes stale.
    known_users: Mutex<HashSet<(String, String)>>,
    pub config: Arc<Config>,
    /// Keyed by (mch_id, appid): requests carry the app they are made for. Each speaks its
    /// merchant's protocol (v2 or v3).
    clients: HashMap<(String, String), MerchantClient>,
    pub weixin: WeixinClient,
    pub metrics: Metrics,
    /// Group commit for the order-creation path (see [`Groups`]).
    pub groups: Groups,
    /// Access token, session keys, customer-service pushes (issue 18).
    pub platform: crate::platform::Platform,
}

/// The hot writes of `POST /v1/orders`, each grouped across concurrent requests (one
/// statement and one commit per group; see `minipay_store::group_commit`). Each answers
/// "not done" when its group fails, and the caller then takes the single-request function,
/// which decides conflicts and reports errors as before.
pub struct Groups {
    /// Idempotency-Key claims (`pool_async`); false: call `idempotency::begin`.
    pub claims: GroupCommit<Claim, bool>,
    /// Order inserts with their Idempotency-Key claims (`pool`, durable); see
    /// `orders::claim_and_insert_group` for what the caller does with each answer.
    pub orders: GroupCommit<(NewOrderOwned, Option<Claim>), GroupInsert>,
    /// `prepaid` marks (`pool_async`); None: call `orders::mark_prepaid`.
    pub prepaid: GroupCommit<(String, String), Option<bool>>,
    /// Stored idempotent responses, with their orders' prepay marks (`pool_async`); false:
    /// call `idempotency::complete` (and `orders::mark_prepaid`).
    pub completions: GroupCommit<Completion, bool>,
}

impl Groups {
    /// Starts the four dispatchers on the current Tokio runtime; each keeps its connections
    /// (see `Connections`).
    pub fn start(pool: &PgPool, pool_async: &PgPool, limits: Limits) -> Groups {
        let held = || Connections::new(pool_async.clone());
        let (a1, d, a2, a3) = (held(), Connections::new(pool.clone()), held(), held());
        Groups {
            claims: GroupCommit::start_with_fallback("api.claims", limits, false, move |c: Vec<Claim>| {
                let conns = a1.clone();
                async move { conns.run(async |conn| idempotency::claim_group(conn, &c).await).await }
            }),
            orders: GroupCommit::start_with_fallback(
                "api.orders",
                limits,
                GroupInsert::Skipped,
                move |o: Vec<(NewOrderOwned, Option<Claim>)>| {
                    let conns = d.clone();
                    async move { conns.run(async |conn| orders::claim_and_insert_group(conn, &o).await).await }
                },
            ),
            prepaid: GroupCommit::start_with_fallback("api.prepaid", limits, None, move |m: Vec<(String, String)>| {
                let conns = a2.clone();
                async move {
                    let marked = conns.run(async |conn| orders::mark_prepaid_group(conn, &m).await).await?;
                    Ok::<_, StoreError>(marked.into_iter().map(Some).collect())
                }
            }),
            completions: GroupCommit::start_with_fallback(
                "api.completions",
                limits,
                false,
                move |c: Vec<Completion>| {
                    let conns = a3.clone();
                    async move {
                        let n = c.len();
                        conns
                            .run(async |conn| idempotency::complete_group(conn, &c).await)
                            .await
                            .map(|()| vec![true; n])
                    }
                },
            ),
        }
    }
}

impl AppState {
    pub fn new(config: Arc<Config>, pool: PgPool, metrics: Metrics) -> Result<AppState, minipay_config::ConfigError> {
        let mut clients = HashMap::new();
        for app in &config.apps {
            let c = config.merchant_client_for(&app.mch_id, &app.appid)?;
            minipay_store::platform_certs::attach_merchant(&c, &pool, &app.mch_id);
            clients.insert((app.mch_id.clone(), app.appid.clone()), c);
        }
        // A merchant without an app still serves merchant-level calls (payouts, queries).
        for m in config.merchants.iter().filter(|m| config.merchant_app(&m.mch_id).is_none()) {
            clients.insert((m.mch_id.clone(), String::new()), config.merchant_client_for(&m.mch_id, "")?);
        }
        let weixin = config.weixin_client()?;
        let platform = crate::platform::Platform::new(&config, pool.clone(), weixin.clone(), &metrics)?;
        // Every statement on this pool is a write by key, for which the generic plan is the
        // plan. Without `force_generic_plan` PostgreSQL plans the group statements afresh on
        // every execution (measured: 5,118 plans in 5,108 executions, 0.32 ms each): a custom
        // plan for a 3-element array looks cheaper than the generic plan, costed for 10.
        let async_options = (*pool.connect_options())
            .clone()
            .options([("synchronous_commit", "off"), ("plan_cache_mode", "force_generic_plan")]);
        let pool_async = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool.options().get_max_connections())
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(async_options);
        let limits = Limits { max_group: config.database.group_max, in_flight: config.api.group_in_flight };
        let groups = Groups::start(&pool, &pool_async, limits);
        Ok(AppState {
            keys: crate::keys::KeyCache::start(&pool),
            groups,
            pool,
            pool_async,
            known_users: Mutex::new(HashSet::new()),
            config,
            clients,
            weixin,
            metrics,
            platform,
        })
    }

    /// The enabled client holding `key` (cached while the key listener is up; see
    /// [`crate::keys`]).
    pub async fn authenticate(&self, key: &str) -> Result<Option<ApiClient>, ApiError> {
        let hash = minipay_store::clients::hash_key(key);
        Ok(self.keys.authenticate(&self.pool, &hash).await?)
    }

    /// Whether the user has logged in to the app (positives cached).
    pub async fn user_known(
        &self,
        appid: &minipay_store::domain::AppId,
        openid: &minipay_store::domain::OpenId,
    ) -> Result<bool, ApiError> {
        let k = (appid.as_str().to_owned(), openid.as_str().to_owned());
        if self.known_users.lock().unwrap_or_else(|e| e.into_inner()).contains(&k) {
            return Ok(true);
        }
        let known = minipay_store::users::exists(&self.pool, appid, openid).await?;
        if known {
            let mut set = self.known_users.lock().unwrap_or_else(|e| e.into_inner());
            if set.len() >= CACHE_LIMIT {
                set.clear();
            }
            set.insert(k);
        }
        Ok(known)
    }

    /// The client for a merchant acting for an app (both as configured).
    pub fn wxpay(&self, mch_id: &str, appid: &str) -> Result<&MerchantClient, ApiError> {
        self.clients.get(&(mch_id.to_owned(), appid.to_owned())).ok_or_else(|| {
            ApiError::internal(&std::io::Error::other(format!(
                "no WeChat Pay client for merchant {mch_id} app {appid}"
            )))
        })
    }

    /// Counts an upstream call by endpoint and outcome, and passes the outcome on.
    pub fn observe<T>(&self, client: &MerchantClient, op: Op, outcome: &Outcome<T>) {
        self.metrics.observe_upstream(client.path(op), outcome);
    }
}
