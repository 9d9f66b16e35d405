//! Starting and stopping the sandbox: both listeners, the routes, and the library handle
//! tests use ([`Sandbox`]).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::ServerHandle;
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpServer, web};
use chrono::{DateTime, Utc};
use wxpay::Fen;

use crate::config::{ConfigError, SandboxConfig};
use crate::faults::Fault;
use crate::pay::{PayError, PayOrder};
use crate::state::{Notification, Order, RedPack, Refund, State, Transfer};
use crate::wire::PeerCert;
use crate::{Effects, Merchant, Shared, apply, openid_for};

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot generate certificates: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the notification client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A running sandbox. Dropping it leaves the server running until the runtime ends; call
/// [`Sandbox::shutdown`] to stop it.
pub struct Sandbox {
    shared: Arc<Shared>,
    handle: ServerHandle,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
}

impl Sandbox {
    /// Generates the certificates, binds both listeners (port 0 = any free port) and starts
    /// serving on the current tokio runtime.
    pub async fn start(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        cfg.validate()?;
        let pki = crate::certs::Pki::generate_for(cfg.merchants.iter().map(|m| m.mch_id.as_str()), &cfg.tls_names)?;
        let mut merchants = BTreeMap::new();
        for m in &cfg.merchants {
            let v3 = crate::v3::keys::V3Keys::generate(m, &pki.clients[&m.mch_id])?;
            merchants.insert(m.mch_id.clone(), Arc::new(Merchant { cfg: m.clone(), v3 }));
        }
        let apps: BTreeMap<_, _> = cfg.apps.iter().map(|a| (a.appid.clone(), a.clone())).collect();
        let users: BTreeMap<_, _> = cfg.users.iter().map(|u| (u.id.clone(), u.clone())).collect();
        let mut appids: Vec<&str> = apps.keys().map(String::as_str).collect();
        appids.extend(cfg.merchants.iter().flat_map(|m| m.appids.iter().map(String::as_str)));
        let openids = users.keys().flat_map(|u| appids.iter().map(move |a| (openid_for(u, a), u.clone()))).collect();
        let mut state = State::default();
        for m in &cfg.merchants {
            state.balances.insert(m.mch_id.clone(), Fen::new(m.balance_fen));
        }
        // Notify URLs are the user's own (usually local) servers: no proxy from the environment.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let http_listener = TcpListener::bind((cfg.host.as_str(), cfg.port))?;
        let tls_listener = TcpListener::bind((cfg.host.as_str(), cfg.tls_port))?;
        let http_addr = http_listener.local_addr()?;
        let https_addr = tls_listener.local_addr()?;
        let acceptor = pki.acceptor()?;
        let workers = cfg.workers.max(1);
        let shared = Arc::new(Shared {
            cfg,
            merchants,
            apps,
            users,
            openids,
            pki,
            http,
            runtime: tokio::runtime::Handle::current(),
            tasks: Mutex::new(Vec::new()),
            sent: tokio::sync::Notify::new(),
            state: Mutex::new(state),
        });
        let data = web::Data::new(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(wxpay::xml::DEFAULT_LIMIT))
                .app_data(web::JsonConfig::default().limit(64 * 1024))
                // Before control: its `/sandbox` scope would swallow the platform's
                // `/sandbox/…` control paths.
                .configure(crate::platform::routes)
                .configure(crate::control::routes)
                .configure(crate::v3::routes)
                .configure(crate::weixin::routes)
                .default_service(web::post().to(crate::wire::handle))
        })
        .workers(workers)
        .on_connect(|conn, ext| {
            if let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() {
                ext.insert(PeerCert(tls.ssl().peer_certificate()));
            }
        })
        .disable_signals()
        .shutdown_timeout(1)
        .listen(http_listener)?
        .listen_openssl(tls_listener, acceptor)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        tracing::info!(%http_addr, %https_addr, "sandbox listening");
        Ok(Sandbox { shared, handle, http_addr, https_addr })
    }

    fn url_host(&self, addr: SocketAddr) -> String {
        if addr.ip().is_unspecified() { "127.0.0.1".into() } else { addr.ip().to_string() }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.url_host(self.http_addr), self.http_addr.port())
    }

    /// `https://127.0.0.1:PORT`; the server certificate covers 127.0.0.1, ::1 and localhost.
    pub fn https_url(&self) -> String {
        format!("https://{}:{}", self.url_host(self.https_addr), self.https_addr.port())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.cfg
    }

    /// The CA certificate (PEM) clients must trust for [`Sandbox::https_url`].
    pub fn ca_pem(&self) -> Vec<u8> {
        self.shared.pki.ca_pem()
    }

    /// The merchant's client identity as PKCS#12 (password = mch_id).
    pub fn client_identity_p12(&self, mch_id: &str) -> Option<Vec<u8>> {
        self.shared.pki.client_p12(mch_id)
    }

    /// The merchant's client certificate (PEM).
    pub fn client_cert_pem(&self, mch_id: &str) -> Option<Vec<u8>> {
        self.shared.pki.client_cert_pem(mch_id)
    }

    /// The merchant's client private key (PKCS#8 PEM).
    pub fn client_key_pem(&self, mch_id: &str) -> Option<Vec<u8>> {
        self.shared.pki.client_key_pem(mch_id)
    }

    /// Writes `ca.pem`, `apiclient_cert.pem`, `apiclient_key.pem`, `apiclient_cert.p12`
    /// and the APIv3 files (see [`crate::v3::keys::V3Keys::write_dir`]: merchant serial,
    /// APIv3 key, WeChat Pay public key and id, platform certificate) for the first merchant,
    /// and the same in a `<mch_id>/` folder per merchant.
    pub fn write_certs(&self, dir: &Path) -> std::io::Result<()> {
        let first = &self.shared.cfg.merchants[0].mch_id;
        self.shared.pki.write_dir(dir, first)?;
        for (mch_id, m) in &self.shared.merchants {
            m.v3.write_dir(&dir.join(mch_id), &m.cfg)?;
            if mch_id == first {
                m.v3.write_dir(dir, &m.cfg)?;
            }
        }
        Ok(())
    }

    /// A merchant's APIv3 key material (for tests and `minipay dev`).
    pub fn v3_keys(&self, mch_id: &str) -> Option<&crate::v3::keys::V3Keys> {
        self.shared.merchants.get(mch_id).map(|m| &m.v3)
    }

    /// A configured user's openid in an app.
    pub fn openid(&self, user: &str, appid: &str) -> String {
        openid_for(user, appid)
    }

    /// Pays an order (what `POST /sandbox/pay` does).
    pub fn pay(&self, req: &PayOrder) -> Result<Order, PayError> {
        let mut fx = Effects::default();
        let r = crate::pay::pay(&self.shared, &mut self.shared.lock(), &mut fx, req);
        apply(&self.shared, fx);
        r
    }

    /// Marks an order PAYERROR (what `POST /sandbox/fail` does).
    pub fn fail(&self, req: &PayOrder) -> Result<Order, PayError> {
        crate::pay::fail(&self.shared, &mut self.shared.lock(), req)
    }

    /// Mints a one-time `wx.login` code for `user` in `appid` (what `POST /sandbox/jscode`
    /// does); `None` when the app is not configured.
    pub fn mint_code(&self, user: &str, appid: &str) -> Option<String> {
        crate::control::mint_code(&self.shared, user, appid)
    }

    /// Customer-service messages received by `cgi-bin/message/custom/send`.
    pub fn messages(&self) -> Vec<crate::state::Message> {
        self.shared.lock().messages.clone()
    }

    /// Adds a fault (what `POST /sandbox/faults` does).
    pub fn add_fault(&self, fault: Fault) -> Result<(), crate::faults::FaultError> {
        self.shared.lock().faults.add(fault, crate::api::known_path)
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear(None);
    }

    /// The sandbox clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.lock().clock.now()
    }

    pub fn set_clock(&self, t: DateTime<Utc>) {
        self.shared.lock().clock.set(t);
    }

    pub fn advance_clock(&self, d: chrono::Duration) {
        self.shared.lock().clock.advance(d);
    }

    pub fn set_balance(&self, mch_id: &str, balance: Fen) {
        self.shared.lock().balances.insert(mch_id.to_owned(), balance);
    }

    pub fn balance(&self, mch_id: &str) -> Fen {
        self.shared.lock().balance(mch_id)
    }

    pub fn orders(&self) -> Vec<Order> {
        self.shared.lock().orders.values().cloned().collect()
    }

    pub fn refunds(&self) -> Vec<Refund> {
        self.shared.lock().refunds.values().cloned().collect()
    }

    pub fn transfers(&self) -> Vec<Transfer> {
        self.shared.lock().transfers.values().cloned().collect()
    }

    pub fn redpacks(&self) -> Vec<RedPack> {
        self.shared.lock().redpacks.values().cloned().collect()
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.shared.lock().notifications.clone()
    }

    /// Stops both listeners and every background task (pending notifications are dropped).
    pub async fn shutdown(self) {
        let tasks = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        self.handle.stop(false).await;
    }
}
