//! # WeChat Pay APIv3
//!
//! The JSON API under `/v3/…`: RSA-signed requests, answers and notifications signed by
//! WeChat (platform certificate or WeChat Pay public key), AES-256-GCM encrypted
//! notification resources, OAEP-encrypted sensitive fields. Nothing here touches v2's XML
//! or API key; the two share only [`crate::Fen`], [`crate::Outcome`] and the bill parser.
//!
//! - [`sign`]: the five-line request string, SHA256withRSA, the `Authorization` header
//!   ([`MerchantSigner`]).
//! - [`verify`]: the [`Verifier`] of answers and notifications (platform certificates and/or
//!   the public key, keyed by `Wechatpay-Serial`), one error kind per rule.
//! - [`crypto`]: AEAD_AES_256_GCM `resource` decryption/encryption with the APIv3 key,
//!   RSA-OAEP (SHA-1) for sensitive fields.
//! - [`outcome`]: every v3 [`Endpoint`] and the one table from (HTTP status, error code,
//!   verification) to [`crate::Outcome`].
//! - [`api`]: typed calls (JSAPI prepay, queries, close, refunds, bills, transfer-bills),
//!   each a [`api::Call`]; [`notify`]: typed notifications, verified before parsed.
//! - [`jsapi`]: `wx.requestPayment` (signType RSA) and `wx.requestMerchantTransfer` parameters.
//! - [`client`]: the HTTP client — signs, verifies (raw body first), refreshes platform
//!   certificates once on an unknown serial in certificate mode, classifies, parses.
//! - [`keygen`]: RSA keys and certificates for the sandbox, tests and benchmarks.

pub mod api;
pub mod client;
pub mod crypto;
pub mod jsapi;
pub mod keygen;
pub mod notify;
pub mod outcome;
pub mod sign;
pub mod verify;

#[cfg(test)]
mod testkeys;

pub use crate::secret::ApiV3Key;
pub use api::{Call, MerchantIds, WireRequest};
pub use client::{Client, ClientConfig};
pub use crypto::{CryptoError, EncryptedField, EncryptedResource};
pub use notify::{Event, Notification, NotifyError, parse_notification};
pub use outcome::{Endpoint, Received, classify};
pub use sign::{Authorization, MerchantSigner, Method};
pub use verify::{KeySet, Mode, SignedHeaders, Verifier, VerifyError};
