//! # minipay-sandbox — a local WeChat Pay v2 and WeChat API server
//!
//! No machine here reaches WeChat, so tests, `minipay dev` and users talk to this server
//! instead. It behaves like WeChat, field by field: the same paths, required fields,
//! signature checks (MD5 / HMAC-SHA256 with each merchant's key), client certificates on the
//! certificate endpoints, WeChat's error codes and signed answers, business rules
//! (OUT_TRADE_NO_USED, ORDERPAID, ORDERCLOSED, refund totals, balances, payout and red-packet
//! limits, FORCE_CHECK names), notifications with WeChat's retry schedule, bills in WeChat's
//! text format, and a controllable clock and fault injection for the cases WeChat produces
//! only on bad days.
//!
//! ## Running it
//! - Binary: `minipay sandbox [--config FILE] [--port P] [--tls-port P] [--certs-dir DIR]
//!   [--time-scale X]`.
//! - Library (tests): [`Sandbox::start`] with [`SandboxConfig::default()`] binds both
//!   listeners on port 0; [`Sandbox::http_url`], [`Sandbox::https_url`], [`Sandbox::ca_pem`],
//!   [`Sandbox::client_identity_p12`] give a client what it needs; [`Sandbox::shutdown`].
//!
//! ## Listeners
//! - HTTPS (its own CA, generated at start-up): every path. The server asks for a client
//!   certificate but does not require one at the TLS level; certificate endpoints
//!   (`secapi/pay/refund`, `pay/downloadfundflow`, `mmpaymkttransfers/*`) check in the handler
//!   that one was sent, issued by the sandbox CA to the calling merchant (CN = mch_id), and
//!   otherwise answer `CA_ERROR` / 证书出错 in XML as WeChat does.
//! - Plain HTTP: every path too, but certificate endpoints always answer the certificate
//!   error (there is no certificate on a plain connection).
//!
//! ## WeChat paths
//! `POST /pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`, `/secapi/pay/refund`,
//! `/pay/refundquery`, `/pay/downloadbill`, `/pay/downloadfundflow`,
//! `/mmpaymkttransfers/promotion/transfers`, `/mmpaymkttransfers/gettransferinfo`,
//! `/mmpaymkttransfers/sendredpack`, `/mmpaymkttransfers/sendgroupredpack`,
//! `/mmpaymkttransfers/sendminiprogramhb`, `/mmpaymkttransfers/gethbinfo` (each also under
//! `/sandboxnew/`), `GET /sns/jscode2session`, `GET /cgi-bin/token`,
//! `POST /cgi-bin/message/custom/send`.
//!
//! ## APIv3 paths ([`v3`])
//! `POST /v3/pay/transactions/jsapi`, `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`,
//! `GET /v3/pay/transactions/id/{transaction_id}?mchid=`,
//! `POST /v3/pay/transactions/out-trade-no/{no}/close`, `POST /v3/refund/domestic/refunds`,
//! `GET /v3/refund/domestic/refunds/{out_refund_no}`, `GET /v3/certificates`,
//! `GET /v3/bill/tradebill`, `GET /v3/bill/fundflowbill` (and their download URL),
//! `POST /v3/fund-app/mch-transfer/transfer-bills`, its queries by out_bill_no and
//! transfer_bill_no, and cancel. Each merchant
//! has an APIv3 key, a merchant certificate serial (its client certificate's), a platform
//! certificate and a WeChat Pay public key, and a mode (`certificate`, `public_key`,
//! `switching`: [`V3Mode`]). Requests are checked exactly (401 `SIGN_ERROR`), answers and
//! notifications signed; v3 orders and refunds share the v2 tables, and their
//! notifications (`TRANSACTION.SUCCESS`, `REFUND.*`) are encrypted with the APIv3 key and
//! retried on the same ladder until 200/204.
//!
//! ## Control API (JSON, under `/sandbox/`)
//! | method + path | what |
//! |---|---|
//! | `GET /sandbox/` | this list, the demo credentials' ids, the clock |
//! | `POST /sandbox/pay` | pay an order: `{"prepay_id"}` or `{"out_trade_no", "mch_id"?}`, plus `"time"?` (RFC 3339 or Beijing `yyyy-MM-dd HH:mm:ss`), `"notify"?` (default true), `"bank_type"?` |
//! | `POST /sandbox/fail` | fail an order (PAYERROR), same reference fields |
//! | `GET /sandbox/clock` · `POST /sandbox/clock` | read; `{"set": time}`, `{"advance_secs": n}` or `{"reset": true}` |
//! | `GET /sandbox/faults` · `POST /sandbox/faults` · `DELETE /sandbox/faults[?path=]` | list, add (see [`faults::Fault`]; v3 paths by template, plus `unsigned` and `signtest`), clear |
//! | `POST /sandbox/jscode` | mint a login code: `{"user", "appid"?}` → `{"code", "openid", "unionid"}` |
//! | `GET /sandbox/openid?user=&appid=` | a user's openid in an app |
//! | `POST /sandbox/tokens/invalidate` | `{"appid"?}`: every access token (of the app) now answers 40001 |
//! | `POST /sandbox/redpacks/open` | `{"mch_billno", "mch_id"?, "openid"?}`: a share is received (RECEIVED when all are) |
//! | `POST /sandbox/redpacks/expire` | `{"mch_billno", "mch_id"?}`: unreceived money goes back (REFUND) now |
//! | `POST /sandbox/refunds/settle` | `{"out_refund_no", "mch_id"?, "status"?}`: finish a PROCESSING refund now (SUCCESS, CHANGE or REFUNDCLOSE) |
//! | `GET /sandbox/balance?mch_id=` · `POST /sandbox/balance` | read; `{"mch_id"?, "balance_fen"}` |
//! | `POST /sandbox/transfer-bills/{out_bill_no}/confirm` | the user on a v3 transfer bill: `{"accept", "mch_id"?, "fail_reason"?}` → SUCCESS or FAIL |
//! | `GET /sandbox/transfer-bills` | v3 transfer bills (`?mch_id=` filters) |
//! | `GET /sandbox/orders` `/refunds` `/transfers` `/redpacks` `/notifications` `/messages` `/fundflow` | what the sandbox holds (`?mch_id=` filters) |
//!
//! ## Layout
//! - [`config`]: the TOML configuration and its defaults (demo merchant, app, user).
//! - [`clock`]: the sandbox clock and WeChat's time formats.
//! - [`certs`]: the CA, server and client certificates.
//! - [`faults`]: fault injection.
//! - [`state`]: what the sandbox holds.
//! - `wire`: the common request pipeline (decode, merchant, certificate, signature, fields).
//! - `pay`, `mkt`, `bills`: the merchant APIs; `weixin`: the WeChat API; `notify`: delivery;
//!   `control`: the `/sandbox/` API.

pub mod certs;
pub mod clock;
pub mod config;
pub mod faults;
pub mod state;

mod api;
mod bills;
mod control;
mod mkt;
mod notify;
mod pay;
pub mod platform;
mod server;
pub mod v3;
mod weixin;
mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use config::{AppConfig, BillLayout, Limits, MerchantConfig, SandboxConfig, UserConfig, V3Mode};
pub use faults::{Fault, FaultKind};
pub use pay::{PayError, PayOrder};
pub use server::{Sandbox, SandboxError};
pub use state::{Message, Notification, Order, RedPack, Refund, Transfer};

/// A merchant as the handlers see it.
#[derive(Debug)]
pub struct Merchant {
    pub cfg: MerchantConfig,
    /// APIv3 keys: the merchant's certificate serial and public key, WeChat's signing keys.
    pub v3: v3::keys::V3Keys,
}

/// Work a handler leaves for after the lock is released: notifications to deliver and
/// refunds to settle later.
#[derive(Default)]
pub(crate) struct Effects {
    pub notifications: Vec<u64>,
    pub refund_timers: Vec<(state::Key, std::time::Duration)>,
}

/// Everything the handlers and background tasks share.
pub(crate) struct Shared {
    pub cfg: SandboxConfig,
    pub merchants: BTreeMap<String, Arc<Merchant>>,
    pub apps: BTreeMap<String, AppConfig>,
    pub users: BTreeMap<String, UserConfig>,
    /// openid → user id, for every configured user in every known app.
    pub openids: BTreeMap<String, String>,
    pub pki: certs::Pki,
    pub http: reqwest::Client,
    /// Background tasks (notification delivery, refund timers) run here, so they outlive
    /// the request that started them and stop with [`Sandbox::shutdown`].
    pub runtime: tokio::runtime::Handle,
    pub tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Signalled after every notification POST (the reorder fault waits on it).
    pub sent: tokio::sync::Notify,
    state: Mutex<state::State>,
}

impl Shared {
    /// The state lock. A handler that panicked cannot leave the simulator half-updated in a
    /// way worse than a crash would, so a poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = self.runtime.spawn(fut);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(h.abort_handle());
    }
}

/// Starts what a handler left to do.
pub(crate) fn apply(shared: &Arc<Shared>, fx: Effects) {
    for id in fx.notifications {
        shared.spawn(notify::deliver(shared.clone(), id));
    }
    for (key, wait) in fx.refund_timers {
        shared.spawn(notify::settle_refund_later(shared.clone(), key, wait));
    }
}

/// A user's openid in an app: stable across runs, different per app (as WeChat's are).
pub fn openid_for(user: &str, appid: &str) -> String {
    use md5::{Digest, Md5};
    let h = hex::encode(Md5::digest(format!("openid:{appid}:{user}").as_bytes()));
    format!("o{}", &h[..27])
}

/// A user's unionid: the same in every app of the open-platform account.
pub fn unionid_for(user: &str) -> String {
    use md5::{Digest, Md5};
    let h = hex::encode(Md5::digest(format!("unionid:{user}").as_bytes()));
    format!("o{}", &h[..27])
}
