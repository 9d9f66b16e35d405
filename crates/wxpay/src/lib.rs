//! # wxpay — WeChat Pay merchant API v2, the protocol only
//!
//! Everything minipay needs to speak WeChat Pay v2 and nothing about our database or servers:
//!
//! - [`xml`]: WeChat's flat `<xml>` documents (CDATA on the way out, an ordered map on the way
//!   in), with DOCTYPE/entity, non-UTF-8 and size limits enforced before anything else.
//! - [`sign`]: the v2 signature (MD5 and HMAC-SHA256), constant-time verification.
//! - [`money`]: [`Fen`], the one money type (integer fen), and exact yuan parsing.
//! - [`secret`]: the API key and other credentials, redacted in `Debug`.
//!
//! Every crate above this one (sandbox, api, notify, worker, cli) uses these modules rather
//! than re-implementing a piece of the wire format.

pub mod bill;
pub mod money;
pub mod secret;
pub mod sign;
pub mod xml;

pub use money::Fen;
pub use secret::ApiKey;
pub use sign::SignType;
pub use xml::Params;
