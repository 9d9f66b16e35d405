//! The WeChat Pay v2 HTTP client: one async method per endpoint, each returning
//! `Result<Outcome<Response>, CallError>`.
//!
//! - `Err(CallError)` only for mistakes found **before any I/O** (a certificate endpoint
//!   without a configured identity, a request WeChat would refuse): nothing was sent.
//! - Otherwise an [`Outcome`]: transport errors, timeouts, connection resets, non-2xx
//!   statuses, unparsable bodies and bad signatures are all `Unknown`, because the request
//!   may have reached WeChat. Business answers are classified by
//!   [`crate::outcome::classify`].
//!
//! Response signatures: whenever `return_code` is SUCCESS and a `sign` is present it is
//! verified (the endpoint's fixed sign type, else detected from `sign_type`/length); a
//! mismatch is Unknown. A SUCCESS answer *without* a sign is Unknown on the endpoints
//! WeChat signs, and accepted on transfers and red packets, whose answers WeChat does not
//! sign (see [`Endpoint::response_signed`]).
//!
//! TLS is OpenSSL (reqwest native-tls). Two reqwest clients live inside: a plain one, and
//! one presenting the merchant certificate, built only when an identity is configured. The
//! API key never reaches a log line; `Debug` of the configuration redacts every secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};

use crate::api::{self, DownloadBillRequest, DownloadFundFlowRequest, Encode, FromResponse, MerchantIds, Request};
use crate::outcome::{Endpoint, Outcome, classify};
use crate::secret::ApiKey;
use crate::sign::{self, SignType};
use crate::xml::{self, Document};

/// The official host.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// The merchant client certificate (`apiclient_cert.p12`, or the PEM pair).
#[derive(Clone)]
pub enum ClientIdentity {
    /// PKCS#12 DER; `password` defaults to the mch_id, as WeChat issues them.
    Pkcs12 { der: Vec<u8>, password: Option<SecretString> },
    /// `apiclient_cert.pem` (leaf first, chain after) and `apiclient_key.pem`; turned into a
    /// PKCS#12 with OpenSSL because that is what native-tls loads everywhere.
    Pem { cert_pem: Vec<u8>, key_pem: SecretString },
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdentity::Pkcs12 { der, .. } => write!(f, "Pkcs12({} bytes, password ***)", der.len()),
            ClientIdentity::Pem { cert_pem, .. } => write!(f, "Pem(cert {} bytes, key ***)", cert_pem.len()),
        }
    }
}

/// Everything the client needs. Build with [`ClientConfig::new`] and adjust the fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// Default [`DEFAULT_BASE_URL`]; the sandbox's URL in tests and `minipay dev`.
    pub base_url: String,
    pub mch_id: String,
    pub appid: String,
    pub api_key: ApiKey,
    /// For endpoints whose sign type is not fixed by WeChat.
    pub sign_type: SignType,
    pub connect_timeout: Duration,
    /// Whole request, connect included.
    pub timeout: Duration,
    pub identity: Option<ClientIdentity>,
    /// Extra trusted root CA (PEM), e.g. the sandbox's.
    pub extra_root_ca_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    pub fn new(mch_id: impl Into<String>, appid: impl Into<String>, api_key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.into(),
            mch_id: mch_id.into(),
            appid: appid.into(),
            api_key,
            sign_type: SignType::Md5,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            identity: None,
            extra_root_ca_pem: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("mch_id", &self.mch_id)
            .field("appid", &self.appid)
            .field("api_key", &self.api_key)
            .field("sign_type", &self.sign_type)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("identity", &self.identity)
            .field("extra_root_ca_pem", &self.extra_root_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client certificate: {0}")]
    Identity(String),
    #[error("root CA: {0}")]
    RootCa(String),
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A call refused before any I/O: nothing was sent to WeChat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0:?} needs the merchant client certificate, and none is configured")]
    NoIdentity(Endpoint),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The WeChat Pay v2 client. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    plain: reqwest::Client,
    with_cert: Option<reqwest::Client>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.cfg).finish()
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        let root = match &cfg.extra_root_ca_pem {
            None => None,
            Some(pem) => Some(reqwest::Certificate::from_pem(pem).map_err(|e| ClientError::RootCa(e.to_string()))?),
        };
        let builder = || {
            let mut b = reqwest::Client::builder()
                .tls_backend_native()
                .connect_timeout(cfg.connect_timeout)
                .timeout(cfg.timeout);
            if let Some(r) = &root {
                b = b.add_root_certificate(r.clone());
            }
            b
        };
        let plain = builder().build().map_err(ClientError::Build)?;
        let with_cert = match &cfg.identity {
            None => None,
            Some(id) => {
                let identity = load_identity(id, &cfg.mch_id)?;
                Some(builder().identity(identity).build().map_err(ClientError::Build)?)
            }
        };
        Ok(Client { inner: Arc::new(Inner { cfg, plain, with_cert }) })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    pub fn has_identity(&self) -> bool {
        self.inner.with_cert.is_some()
    }

    fn ids(&self) -> MerchantIds {
        MerchantIds { appid: self.inner.cfg.appid.clone(), mch_id: self.inner.cfg.mch_id.clone() }
    }

    pub async fn unified_order(
        &self,
        req: &api::UnifiedOrderRequest,
    ) -> Result<Outcome<api::UnifiedOrderResponse>, CallError> {
        self.call(req).await
    }

    pub async fn order_query(
        &self,
        req: &api::OrderQueryRequest,
    ) -> Result<Outcome<api::OrderQueryResponse>, CallError> {
        self.call(req).await
    }

    pub async fn close_order(
        &self,
        req: &api::CloseOrderRequest,
    ) -> Result<Outcome<api::CloseOrderResponse>, CallError> {
        self.call(req).await
    }

    pub async fn refund(&self, req: &api::RefundRequest) -> Result<Outcome<api::RefundResponse>, CallError> {
        self.call(req).await
    }

    pub async fn refund_query(
        &self,
        req: &api::RefundQueryRequest,
    ) -> Result<Outcome<api::RefundQueryResponse>, CallError> {
        self.call(req).await
    }

    pub async fn transfer(&self, req: &api::TransferRequest) -> Result<Outcome<api::TransferResponse>, CallError> {
        self.call(req).await
    }

    pub async fn get_transfer_info(
        &self,
        req: &api::GetTransferInfoRequest,
    ) -> Result<Outcome<api::GetTransferInfoResponse>, CallError> {
        self.call(req).await
    }

    pub async fn send_redpack(
        &self,
        req: &api::SendRedpackRequest,
    ) -> Result<Outcome<api::RedpackResponse>, CallError> {
        self.call(req).await
    }

    pub async fn send_group_redpack(
        &self,
        req: &api::SendGroupRedpackRequest,
    ) -> Result<Outcome<api::RedpackResponse>, CallError> {
        self.call(req).await
    }

    pub async fn send_mini_program_hb(
        &self,
        req: &api::SendMiniProgramHbRequest,
    ) -> Result<Outcome<api::SendMiniProgramHbResponse>, CallError> {
        self.call(req).await
    }

    pub async fn get_hb_info(&self, req: &api::GetHbInfoRequest) -> Result<Outcome<api::GetHbInfoResponse>, CallError> {
        self.call(req).await
    }

    /// Downloads a trade bill. `Success` carries the raw body of any 2xx answer: bill text,
    /// gzip, or WeChat's XML error (`No Bill Exist`, `Bill Creating`, …) — hand it to
    /// [`crate::bill::decode_body`], which tells them apart. Transport errors and non-2xx
    /// statuses are Unknown (a download is safe to repeat).
    pub async fn download_bill(&self, req: &DownloadBillRequest) -> Result<Outcome<Vec<u8>>, CallError> {
        self.download(req).await
    }

    /// Downloads a fund-flow bill (client certificate, HMAC-SHA256); as [`Client::download_bill`].
    pub async fn download_fund_flow(&self, req: &DownloadFundFlowRequest) -> Result<Outcome<Vec<u8>>, CallError> {
        self.download(req).await
    }

    /// Sends any typed request: what the per-endpoint methods call.
    pub async fn call<R: Request>(&self, req: &R) -> Result<Outcome<R::Response>, CallError> {
        let body = match self.send(req).await? {
            Outcome::Success(b) => b,
            Outcome::Failed { code, message } => return Ok(Outcome::Failed { code, message }),
            Outcome::Unknown { reason } => return Ok(Outcome::Unknown { reason }),
        };
        let outcome = interpret::<R::Response>(R::ENDPOINT, &body, &self.inner.cfg.api_key);
        let kind = match &outcome {
            Outcome::Success(_) => "success",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        };
        tracing::debug!(endpoint = R::ENDPOINT.path(), outcome = kind, code = outcome.failed_code(), "wxpay call");
        Ok(outcome)
    }

    async fn download<R: Encode>(&self, req: &R) -> Result<Outcome<Vec<u8>>, CallError> {
        self.send(req).await
    }

    /// Validates, signs, encodes and posts; returns the raw body of a 2xx answer.
    async fn send<R: Encode>(&self, req: &R) -> Result<Outcome<Vec<u8>>, CallError> {
        req.validate().map_err(CallError::InvalidRequest)?;
        let endpoint = R::ENDPOINT;
        let http = if endpoint.needs_cert() {
            self.inner.with_cert.as_ref().ok_or(CallError::NoIdentity(endpoint))?
        } else {
            &self.inner.plain
        };
        let cfg = &self.inner.cfg;
        let (params, _) = api::build_request(req, &self.ids(), &cfg.api_key, cfg.sign_type, &nonce());
        let url = format!("{}/{}", cfg.base_url.trim_end_matches('/'), endpoint.path());
        let resp = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(xml::encode(&params))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::unknown(transport_reason(endpoint, &e))),
        };
        let status = resp.status();
        if !status.is_success() {
            return Ok(Outcome::unknown(format!("{}: HTTP {status}", endpoint.path())));
        }
        match resp.bytes().await {
            Ok(b) => Ok(Outcome::Success(b.to_vec())),
            Err(e) => Ok(Outcome::unknown(transport_reason(endpoint, &e))),
        }
    }
}

fn transport_reason(endpoint: Endpoint, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    // The error's URL is our configured host and path: nothing secret.
    format!("{}: {what}: {e}", endpoint.path())
}

/// Turns a raw answer into the typed outcome: decode, verify the signature, classify,
/// parse. Public so the sandbox and tests can check answers without HTTP.
pub fn interpret<T: FromResponse>(endpoint: Endpoint, body: &[u8], key: &ApiKey) -> Outcome<T> {
    let doc = match xml::decode_document(body) {
        Ok(d) => d,
        Err(e) => return Outcome::unknown(format!("{}: unreadable answer: {e}", endpoint.path())),
    };
    if let Err(reason) = check_signature(endpoint, &doc, key) {
        return Outcome::unknown(format!("{}: {reason}", endpoint.path()));
    }
    classify(endpoint, &doc.fields).and_then(|()| match T::from_document(&doc) {
        Ok(t) => Outcome::Success(t),
        Err(e) => Outcome::unknown(format!("{}: unusable success answer: {e}", endpoint.path())),
    })
}

/// The signature rule of the module docs. Only `return_code` SUCCESS answers are signed;
/// a FAIL answer (e.g. "签名错误") carries no sign and is classified as is.
fn check_signature(endpoint: Endpoint, doc: &Document, key: &ApiKey) -> Result<(), String> {
    if doc.fields.get("return_code").map(String::as_str) != Some("SUCCESS") {
        return Ok(());
    }
    if !doc.fields.contains_key("sign") {
        return if endpoint.response_signed() { Err("success answer without sign".into()) } else { Ok(()) };
    }
    let checked = match endpoint.sign_rule() {
        crate::outcome::SignRule::Fixed(t) => sign::verify_as(&doc.fields, key, t),
        crate::outcome::SignRule::Merchant => sign::verify(&doc.fields, key).map(|_| ()),
    };
    checked.map_err(|e| format!("answer signature not accepted: {e}"))
}

/// 32 random alphanumerics, as WeChat allows at most 32.
pub fn nonce() -> String {
    rand::rng().sample_iter(Alphanumeric).take(32).map(char::from).collect()
}

fn load_identity(id: &ClientIdentity, mch_id: &str) -> Result<reqwest::Identity, ClientError> {
    let err = |e: &dyn fmt::Display| ClientError::Identity(e.to_string());
    match id {
        ClientIdentity::Pkcs12 { der, password } => {
            let pw = password.as_ref().map(|p| p.expose_secret()).unwrap_or(mch_id);
            reqwest::Identity::from_pkcs12_der(der, pw).map_err(|e| err(&e))
        }
        ClientIdentity::Pem { cert_pem, key_pem } => {
            let der = pem_to_pkcs12(cert_pem, key_pem.expose_secret().as_bytes(), mch_id)?;
            reqwest::Identity::from_pkcs12_der(&der, mch_id).map_err(|e| err(&e))
        }
    }
}

/// Builds a PKCS#12 (DER) from a PEM certificate chain (leaf first) and a PEM private key.
pub fn pem_to_pkcs12(cert_pem: &[u8], key_pem: &[u8], password: &str) -> Result<Vec<u8>, ClientError> {
    let err = |e: openssl::error::ErrorStack| ClientError::Identity(e.to_string());
    let mut certs = openssl::x509::X509::stack_from_pem(cert_pem).map_err(err)?.into_iter();
    let leaf = certs.next().ok_or_else(|| ClientError::Identity("no certificate in PEM".into()))?;
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem).map_err(err)?;
    let mut b = openssl::pkcs12::Pkcs12::builder();
    b.name("apiclient").pkey(&key).cert(&leaf);
    let rest: Vec<_> = certs.collect();
    if !rest.is_empty() {
        let mut stack = openssl::stack::Stack::new().map_err(err)?;
        for c in rest {
            stack.push(c).map_err(err)?;
        }
        b.ca(stack);
    }
    b.build2(password).map_err(err)?.to_der().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_32_alphanumerics() {
        let n = nonce();
        assert_eq!(n.len(), 32);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(n, nonce());
    }

    #[test]
    fn config_debug_redacts() {
        let mut c = ClientConfig::new("1900000109", "wx123", ApiKey::new("192006250b4c09247ec02edce69f6a2d"));
        c.identity = Some(ClientIdentity::Pkcs12 { der: vec![1, 2, 3], password: Some("hunter2".to_string().into()) });
        let d = format!("{c:?}");
        assert!(!d.contains("1920062"), "{d}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("1900000109"));
    }
}
