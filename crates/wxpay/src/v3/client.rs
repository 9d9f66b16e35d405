//! The APIv3 HTTP client: one async method per endpoint, each returning
//! `Result<Outcome<Response>, CallError>`, like the v2 [`crate::client`].
//!
//! - `Err(CallError)` only for mistakes found **before any I/O**: nothing was sent.
//! - Otherwise an [`Outcome`] from the one table ([`super::outcome::classify`]): every
//!   request is signed ([`MerchantSigner`]), every answer is verified over its raw body
//!   *before* it is parsed ([`Verifier`]), and anything that failed, timed out or could not
//!   be read is `Unknown`.
//!
//! Certificates: when an answer names a `Wechatpay-Serial` we do not hold and the verifier
//! is in certificate (or switching) mode, the client fetches `GET /v3/certificates` once,
//! decrypts every certificate with the APIv3 key, keeps every one that is valid now (plus
//! the public key, if any) and verifies the answer again. In public-key mode an unknown
//! serial stays an error (→ Unknown). [`Client::refresh_certificates_if_expiring`] lets a
//! scheduler refresh ahead of expiry.
//!
//! In public-key and switching mode every request carries `Wechatpay-Serial: PUB_KEY_ID_…`
//! so that WeChat signs its answer with the public key; a request with an encrypted field
//! names the key it was encrypted with instead.
//!
//! The base URL is configurable (the sandbox); bill `download_url`s are fetched from the
//! configured host with their own path and query.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::api::{self, BillLink, Call, MerchantIds, WireRequest};
use super::crypto::EncryptedResource;
use super::outcome::{Endpoint, Received, classify};
use super::sign::{MerchantSigner, Method};
use super::verify::{KeySet, KeySource, SignedHeaders, Verifier, VerifyError};
use crate::Outcome;
use crate::secret::ApiV3Key;

/// WeChat's API host (the same for v2 and v3).
pub const DEFAULT_BASE_URL: &str = crate::client::DEFAULT_BASE_URL;

/// Everything the client needs. Build with [`ClientConfig::new`] and adjust the fields.
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub appid: String,
    pub signer: MerchantSigner,
    pub api_v3_key: ApiV3Key,
    pub connect_timeout: Duration,
    /// Whole request, connect included.
    pub timeout: Duration,
    /// Extra trusted root CA (PEM), e.g. the sandbox's.
    pub extra_root_ca_pem: Option<Vec<u8>>,
    pub user_agent: String,
}

impl ClientConfig {
    pub fn new(appid: impl Into<String>, signer: MerchantSigner, api_v3_key: ApiV3Key) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.into(),
            appid: appid.into(),
            signer,
            api_v3_key,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            extra_root_ca_pem: None,
            user_agent: concat!("minipay-wxpay/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .field("signer", &self.signer)
            .field("api_v3_key", &self.api_v3_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("extra_root_ca_pem", &self.extra_root_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("root CA: {0}")]
    RootCa(String),
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A call refused before any I/O: nothing was sent to WeChat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Why a certificate refresh failed (the old key set stays in place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("GET /v3/certificates: {0}")]
    Call(String),
    #[error("certificate answer: {0}")]
    Answer(String),
    #[error("no certificate in the answer is valid now")]
    NoneValid,
    #[error("certificate store: {0}")]
    Store(String),
}

/// A platform certificate as kept between processes: PEM and validity (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    pub serial_no: String,
    pub pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// A boxed future, for [`CertificateStore`]'s object-safe methods.
pub type StoreFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// Where a merchant's platform certificates are shared between replicas (minipay keeps
/// them in Postgres). The client reads the store before asking WeChat about a serial it
/// does not know, and writes what a verified `/v3/certificates` answer gave it; so one
/// process fetches and the others load.
pub trait CertificateStore: Send + Sync {
    /// Every certificate stored for the merchant.
    fn load(&self) -> StoreFuture<'_, Vec<StoredCertificate>>;
    /// Certificates from a verified answer (stored ones not listed stay until they expire).
    fn save(&self, certs: Vec<StoredCertificate>) -> StoreFuture<'_, ()>;
}

/// The APIv3 client. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    http: reqwest::Client,
    verifier: Verifier,
    /// One refresh at a time; a caller that waited checks whether it is still needed.
    refresh: tokio::sync::Mutex<()>,
    /// Shared certificates (see [`CertificateStore`]); unset: this process only.
    store: std::sync::OnceLock<Arc<dyn CertificateStore>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.cfg).field("verifier", &self.inner.verifier).finish()
    }
}

/// One HTTP answer, as received.
struct RawAnswer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl RawAnswer {
    fn signed_headers(&self) -> Result<SignedHeaders, VerifyError> {
        SignedHeaders::from_lookup(|name| self.headers.get(name).and_then(|v| v.to_str().ok()))
    }
}

impl Client {
    pub fn new(cfg: ClientConfig, verifier: Verifier) -> Result<Client, ClientError> {
        let mut b = reqwest::Client::builder()
            .tls_backend_native()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .user_agent(cfg.user_agent.clone());
        if let Some(pem) = &cfg.extra_root_ca_pem {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(pem).map_err(|e| ClientError::RootCa(e.to_string()))?,
            );
        }
        let http = b.build().map_err(ClientError::Build)?;
        let inner =
            Inner { cfg, http, verifier, refresh: tokio::sync::Mutex::new(()), store: std::sync::OnceLock::new() };
        Ok(Client { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    fn ids(&self) -> MerchantIds {
        MerchantIds { mchid: self.inner.cfg.signer.mchid().to_owned(), appid: self.inner.cfg.appid.clone() }
    }

    pub async fn jsapi_prepay(&self, r: &api::JsapiPrepay) -> Result<Outcome<api::JsapiPrepayResponse>, CallError> {
        self.call(r).await
    }

    pub async fn query_by_out_trade_no(
        &self,
        r: &api::QueryByOutTradeNo,
    ) -> Result<Outcome<api::Transaction>, CallError> {
        self.call(r).await
    }

    pub async fn query_by_transaction_id(
        &self,
        r: &api::QueryByTransactionId,
    ) -> Result<Outcome<api::Transaction>, CallError> {
        self.call(r).await
    }

    pub async fn close_order(&self, r: &api::CloseOrder) -> Result<Outcome<api::Closed>, CallError> {
        self.call(r).await
    }

    pub async fn create_refund(&self, r: &api::CreateRefund) -> Result<Outcome<api::Refund>, CallError> {
        self.call(r).await
    }

    pub async fn query_refund(&self, r: &api::QueryRefund) -> Result<Outcome<api::Refund>, CallError> {
        self.call(r).await
    }

    pub async fn trade_bill(&self, r: &api::TradeBillRequest) -> Result<Outcome<BillLink>, CallError> {
        self.call(r).await
    }

    pub async fn fund_flow_bill(&self, r: &api::FundFlowBillRequest) -> Result<Outcome<BillLink>, CallError> {
        self.call(r).await
    }

    /// The second step of a bill: downloads `link.download_url` (signed GET, unsigned
    /// answer) and checks the file's SHA-1. `Success` carries the bill *text* (gunzipped
    /// when `gzip`), ready for [`crate::bill::BillReader`] / [`crate::bill::FundFlowReader`].
    /// A hash mismatch is Unknown: a broken download, safe to repeat.
    pub async fn download_bill(&self, link: &BillLink, gzip: bool) -> Result<Outcome<Vec<u8>>, CallError> {
        let req = link.download().map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        Ok(self.call(&req).await?.and_then(|file| match link.check_file(&file, gzip) {
            Ok(text) => Outcome::Success(text),
            Err(e) => Outcome::unknown(format!("bill download: {e}")),
        }))
    }

    pub async fn create_transfer_bill(
        &self,
        r: &api::CreateTransferBill,
    ) -> Result<Outcome<api::TransferBillCreated>, CallError> {
        self.call(r).await
    }

    pub async fn query_transfer_by_out_bill_no(
        &self,
        r: &api::QueryTransferByOutBillNo,
    ) -> Result<Outcome<api::TransferBill>, CallError> {
        self.call(r).await
    }

    pub async fn query_transfer_by_bill_no(
        &self,
        r: &api::QueryTransferByBillNo,
    ) -> Result<Outcome<api::TransferBill>, CallError> {
        self.call(r).await
    }

    pub async fn cancel_transfer_bill(
        &self,
        r: &api::CancelTransferBill,
    ) -> Result<Outcome<api::TransferBillCancelled>, CallError> {
        self.call(r).await
    }

    /// Sends any typed call: sign, send, verify the raw answer (one certificate refresh on
    /// an unknown serial in certificate mode), classify, parse.
    pub async fn call<C: Call>(&self, req: &C) -> Result<Outcome<C::Response>, CallError> {
        req.validate().map_err(CallError::InvalidRequest)?;
        let endpoint = C::ENDPOINT;
        let answer = match self.send(&req.wire(&self.ids())).await {
            Ok(a) => a,
            Err(reason) => return Ok(Outcome::unknown(format!("{}: {reason}", endpoint.template()))),
        };
        let verification = if endpoint.answer_signed() || !(200..300).contains(&answer.status) {
            self.verify_answer(&answer).await
        } else {
            Ok(())
        };
        let received = Received::Answer { status: answer.status, body: &answer.body, verification };
        let outcome = classify(endpoint, &received).and_then(|()| match C::parse(&answer.body) {
            Ok(r) => Outcome::Success(r),
            Err(e) => Outcome::unknown(format!("{}: {e}", endpoint.template())),
        });
        let kind = match &outcome {
            Outcome::Success(_) => "success",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        };
        tracing::debug!(
            endpoint = endpoint.template(),
            status = answer.status,
            outcome = kind,
            code = outcome.failed_code(),
            "wxpay v3 call"
        );
        Ok(outcome)
    }

    /// Verifies an answer; on an unknown serial in certificate mode, refreshes once and
    /// verifies again.
    async fn verify_answer(&self, a: &RawAnswer) -> Result<(), VerifyError> {
        self.verify_signed(&a.signed_headers()?, &a.body).await
    }

    /// Verifies a signed message (an answer or a notification) now; on an unknown serial
    /// in certificate or switching mode, refreshes `/v3/certificates` once (single flight)
    /// and verifies again. Public-key mode never fetches.
    pub async fn verify_signed(&self, headers: &SignedHeaders, body: &[u8]) -> Result<(), VerifyError> {
        match self.inner.verifier.verify_at(headers, body, Utc::now().timestamp()) {
            Err(VerifyError::UnknownSerial(serial)) if self.inner.verifier.mode().refreshes_certificates() => {
                if let Err(e) = self.refresh_unless_known(&serial).await {
                    tracing::warn!(error = %e, serial = %serial, "wxpay v3: certificate refresh failed");
                }
                self.inner.verifier.verify_at(headers, body, Utc::now().timestamp()).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// A notification as WeChat delivers it: verified on the raw body (learning a new
    /// platform certificate first if WeChat signed with one we have not fetched yet — the
    /// same rule as for answers), then the envelope parsed and the resource decrypted with
    /// the APIv3 key.
    pub async fn parse_notification(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
    ) -> Result<(crate::v3::Notification, crate::v3::Event), crate::v3::NotifyError> {
        self.verify_signed(headers, body).await?;
        crate::v3::notify::open_verified(body, &self.inner.cfg.api_v3_key)
    }

    /// Shares this merchant's platform certificates through `store` (set once; later calls
    /// are ignored). Certificate and switching modes only make use of it.
    pub fn set_certificate_store(&self, store: Arc<dyn CertificateStore>) {
        let _ = self.inner.store.set(store);
    }

    /// Adopts the stored certificates that are valid now (added to the key set; nothing is
    /// removed). Returns how many were added.
    pub async fn load_stored_certificates(&self) -> Result<usize, RefreshError> {
        let Some(store) = self.inner.store.get() else { return Ok(0) };
        if !self.inner.verifier.mode().refreshes_certificates() {
            return Ok(0);
        }
        let stored = store.load().await.map_err(RefreshError::Store)?;
        let now = Utc::now().timestamp();
        let mut keys = (*self.inner.verifier.keys()).clone();
        let mut added = 0;
        for c in stored.iter().filter(|c| c.not_before <= now && now <= c.not_after) {
            if keys.get(&c.serial_no).is_none() && keys.add_certificate_pem(c.pem.as_bytes()).is_ok() {
                added += 1;
            }
        }
        if added > 0 {
            self.inner.verifier.replace_keys(keys);
            tracing::info!(certificates = added, "wxpay v3: platform certificates loaded from the store");
        }
        Ok(added)
    }

    async fn refresh_unless_known(&self, serial: &str) -> Result<usize, RefreshError> {
        let _guard = self.inner.refresh.lock().await;
        if self.inner.verifier.keys().get(serial).is_some() {
            return Ok(0);
        }
        // Another replica may have fetched it already: the store first, WeChat second.
        match self.load_stored_certificates().await {
            Ok(_) if self.inner.verifier.keys().get(serial).is_some() => return Ok(0),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "wxpay v3: stored certificates unavailable"),
        }
        self.refresh_locked().await
    }

    /// Fetches `/v3/certificates` now and replaces the certificates in the key set (the
    /// public key stays). Returns how many valid certificates are kept.
    pub async fn refresh_certificates(&self) -> Result<usize, RefreshError> {
        let _guard = self.inner.refresh.lock().await;
        self.refresh_locked().await
    }

    /// Refreshes when no certificate in the key set stays valid for `margin` more (WeChat
    /// rotates ahead of expiry; call this daily). Public-key mode never refreshes.
    pub async fn refresh_certificates_if_expiring(&self, margin: Duration) -> Result<Option<usize>, RefreshError> {
        if !self.inner.verifier.mode().refreshes_certificates() {
            return Ok(None);
        }
        let horizon = Utc::now().timestamp().saturating_add(i64::try_from(margin.as_secs()).unwrap_or(i64::MAX));
        let keys = self.inner.verifier.keys();
        let covered =
            keys.keys().any(|k| matches!(k.source, KeySource::Certificate { not_after, .. } if not_after >= horizon));
        if covered {
            return Ok(None);
        }
        self.refresh_certificates().await.map(Some)
    }

    async fn refresh_locked(&self) -> Result<usize, RefreshError> {
        let wire = WireRequest {
            method: Method::Get,
            path_and_query: Endpoint::Certificates.template().into(),
            body: None,
            wechatpay_serial: None,
        };
        let a = self.send(&wire).await.map_err(RefreshError::Call)?;
        if !(200..300).contains(&a.status) {
            return Err(RefreshError::Call(format!("HTTP {} {}", a.status, String::from_utf8_lossy(&a.body))));
        }
        let now = Utc::now().timestamp();
        let candidate =
            certificates_from_answer(&a.body, &self.inner.cfg.api_v3_key, &self.inner.verifier.keys(), now)?;
        // The answer itself is signed by one of the certificates it carries (or one we
        // already hold): verify it against the candidate set before adopting it.
        let headers = a.signed_headers().map_err(|e| RefreshError::Answer(e.to_string()))?;
        candidate
            .verify(&headers, &a.body, now, super::verify::DEFAULT_WINDOW_SECS)
            .map_err(|e| RefreshError::Answer(e.to_string()))?;
        let kept = candidate.keys().filter(|k| matches!(k.source, KeySource::Certificate { .. })).count();
        if let Some(store) = self.inner.store.get() {
            let certs = stored_certificates(&a.body, &self.inner.cfg.api_v3_key, &candidate);
            if let Err(e) = store.save(certs).await {
                // Not fatal: this process verifies with them; the others fetch for themselves.
                tracing::warn!(error = %e, "wxpay v3: refreshed certificates not stored");
            }
        }
        self.inner.verifier.replace_keys(candidate);
        tracing::info!(certificates = kept, "wxpay v3: platform certificates refreshed");
        Ok(kept)
    }

    async fn send(&self, w: &WireRequest) -> Result<RawAnswer, String> {
        let cfg = &self.inner.cfg;
        let body = w.body.as_deref().unwrap_or("");
        let auth = cfg.signer.authorization(w.method, &w.path_and_query, body);
        let url = format!("{}{}", cfg.base_url.trim_end_matches('/'), w.path_and_query);
        let mut rb = match w.method {
            Method::Get => self.inner.http.get(&url),
            Method::Post => self.inner.http.post(&url),
        }
        .header(reqwest::header::AUTHORIZATION, auth.to_string())
        .header(reqwest::header::ACCEPT, "application/json");
        let serial = w.wechatpay_serial.clone().or_else(|| self.public_key_id());
        if let Some(s) = serial {
            rb = rb.header(super::verify::HEADER_SERIAL, s);
        }
        if w.method == Method::Post {
            rb = rb.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_owned());
        }
        let resp = rb.send().await.map_err(|e| transport_reason(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| transport_reason(&e))?.to_vec();
        Ok(RawAnswer { status, headers, body })
    }

    fn public_key_id(&self) -> Option<String> {
        let keys = self.inner.verifier.keys();
        keys.keys().find(|k| k.source == KeySource::PublicKey).map(|k| k.serial.clone())
    }
}

fn transport_reason(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    format!("{what}: {e}")
}

#[derive(Deserialize)]
struct CertificatesAnswer {
    data: Vec<CertificateItem>,
}

#[derive(Deserialize)]
struct CertificateItem {
    serial_no: String,
    encrypt_certificate: EncryptedResource,
}

/// The certificates of a verified answer that made it into `adopted`, as PEM with their
/// validity, for the [`CertificateStore`].
fn stored_certificates(body: &[u8], key: &ApiV3Key, adopted: &KeySet) -> Vec<StoredCertificate> {
    let Ok(answer) = serde_json::from_slice::<CertificatesAnswer>(body) else { return Vec::new() };
    let mut out = Vec::new();
    for item in answer.data {
        let (Ok(pem), Some(k)) = (item.encrypt_certificate.decrypt(key), adopted.get(&item.serial_no)) else {
            continue;
        };
        if let KeySource::Certificate { not_before, not_after } = k.source {
            out.push(StoredCertificate { serial_no: k.serial.clone(), pem, not_before, not_after });
        }
    }
    out
}

/// Builds the key set a `/v3/certificates` answer describes: the public key of `current`
/// (if any) plus every certificate in the answer that decrypts, matches its `serial_no`
/// and is valid at `now`. Certificates we held that the answer no longer lists are
/// dropped even if not yet expired: the list is taken as WeChat's current truth (a guess;
/// WeChat documents the list as "all currently usable certificates"). Certificates that fail are skipped (and logged), not fatal,
/// unless none is left.
pub fn certificates_from_answer(
    body: &[u8],
    key: &ApiV3Key,
    current: &KeySet,
    now: i64,
) -> Result<KeySet, RefreshError> {
    let answer: CertificatesAnswer = serde_json::from_slice(body).map_err(|e| RefreshError::Answer(e.to_string()))?;
    let mut set = current.without_certificates();
    let mut kept = 0;
    for item in answer.data {
        let mut one = KeySet::new();
        let added = item
            .encrypt_certificate
            .decrypt(key)
            .map_err(|e| e.to_string())
            .and_then(|pem| one.add_certificate_pem(pem.as_bytes()).map_err(|e| e.to_string()));
        match added {
            Ok(serial)
                if super::verify::normalize_serial(&serial) != super::verify::normalize_serial(&item.serial_no) =>
            {
                tracing::warn!(serial_no = %item.serial_no, certificate = %serial, "wxpay v3: certificate serial mismatch, skipped");
            }
            Ok(_) => {
                for k in one.keys().filter(|k| k.is_valid_at(now)) {
                    kept += 1;
                    set.insert(k.clone());
                }
            }
            Err(e) => tracing::warn!(serial_no = %item.serial_no, error = %e, "wxpay v3: certificate skipped"),
        }
    }
    if kept == 0 {
        return Err(RefreshError::NoneValid);
    }
    Ok(set)
}

/// The body of a `/v3/certificates` answer for the given certificates, each sealed with
/// the APIv3 key under `nonce(i)` (the sandbox; 12 fresh characters each).
pub fn certificates_answer(
    certs: &[openssl::x509::X509],
    key: &ApiV3Key,
    nonce: impl Fn(usize) -> String,
) -> Result<String, super::crypto::CryptoError> {
    let mut data = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let pem = String::from_utf8(c.to_pem().expect("a certificate encodes to PEM")).expect("PEM is ASCII");
        let mut one = KeySet::new();
        let serial = one.add_certificate(c).expect("a built certificate has a serial and a key");
        let (from, until) = match one.get(&serial).map(|k| k.source) {
            Some(KeySource::Certificate { not_before, not_after }) => (not_before, not_after),
            Some(KeySource::PublicKey) | None => unreachable!("add_certificate adds a certificate"),
        };
        let resource = EncryptedResource::seal(key, &pem, &nonce(i), "certificate", None)?;
        data.push(serde_json::json!({
            "serial_no": serial,
            "effective_time": rfc3339_shanghai(from),
            "expire_time": rfc3339_shanghai(until),
            "encrypt_certificate": resource,
        }));
    }
    Ok(serde_json::json!({ "data": data }).to_string())
}

fn rfc3339_shanghai(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map(super::api::format_v3_time).unwrap_or_default()
}
