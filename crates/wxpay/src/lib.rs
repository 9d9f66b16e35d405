//! # wxpay — WeChat Pay merchant APIs v2 and v3, the protocol only
//!
//! Everything minipay needs to speak WeChat Pay and nothing about our database or servers.
//!
//! ## Layout
//! APIv2 (XML, MD5/HMAC signatures, the API key) lives at the crate root, as it always has;
//! APIv3 (JSON, RSA signatures, the APIv3 key, 商家转账) lives under [`v3`]. The two families
//! share [`Fen`], [`Outcome`] (the same three-way discipline), [`secret`] and [`bill`] (the
//! bill file format is the same in both). Red packets exist only in v2.
//!
//! ### APIv2, at the root
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
//!   `req_info` decryption; [`weixin`]: the `api.weixin.qq.com` client and token cache;
//!   [`push`]: 消息推送 (customer-service messages pushed to us), plaintext and safe mode.
//!
//! ### APIv3, under [`v3`]
//!
//! Request signing, the answer/notification [`v3::verify::Verifier`], AES-GCM and OAEP, typed
//! calls and notifications, the v3 outcome table, mini-program parameters and the v3 client;
//! see the module's own overview.
//!
//! Every crate above this one (sandbox, api, notify, worker, cli) uses these modules rather
//! than re-implementing a piece of the wire format.

pub mod api;
pub mod bill;
pub mod client;
pub mod jsapi;
pub mod merchant;
pub mod money;
pub mod outcome;
pub mod push;
pub mod refund_notify;
pub mod secret;
pub mod sign;
pub mod v3;
pub mod weixin;
pub mod xml;

pub use client::{CallError, Client, ClientConfig, ClientIdentity};
pub use money::Fen;
pub use outcome::{Endpoint, Outcome};
pub use secret::{ApiKey, ApiV3Key};
pub use sign::SignType;
pub use xml::Params;
