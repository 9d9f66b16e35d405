//! # wxpay — WeChat Pay merchant API v2, the protocol only
//!
//! Everything minipay needs to speak WeChat Pay v2 and nothing about our database or servers:
//!
//! - [`xml`]: WeChat's flat `<xml>` documents (CDATA on the way out, an ordered map on the way
//!   in), with DOCTYPE/entity, non-UTF-8 and size limits enforced before anything else.
//! - [`sign`]: the v2 signature (MD5 and HMAC-SHA256), constant-time verification.
//! - [`money`]: [`Fen`], the one money type (integer fen), and exact yuan parsing.
//! - [`secret`]: the API key and other credentials, redacted in `Debug`.
//! - [`outcome`]: [`Outcome`] (`Success` / `Failed` / `Unknown`) and the one table that
//!   classifies WeChat's return/result/err codes per [`Endpoint`].
//! - [`api`]: typed requests and responses for every endpoint; [`client`]: the HTTP client
//!   (one async method per endpoint, merchant certificate, response verification).
//! - [`jsapi`]: `wx.requestPayment` / `wx.sendBizRedPacket` parameters; [`refund_notify`]:
//!   `req_info` decryption; [`weixin`]: the `api.weixin.qq.com` client and token cache.
//!
//! Every crate above this one (sandbox, api, notify, worker, cli) uses these modules rather
//! than re-implementing a piece of the wire format.

pub mod api;
pub mod bill;
pub mod client;
pub mod jsapi;
pub mod money;
pub mod outcome;
pub mod refund_notify;
pub mod secret;
pub mod sign;
pub mod weixin;
pub mod xml;

pub use client::{CallError, Client, ClientConfig, ClientIdentity};
pub use money::Fen;
pub use outcome::{Endpoint, Outcome};
pub use secret::ApiKey;
pub use sign::SignType;
pub use xml::Params;
