//! Route modules, one per resource family; each has `configure` and `openapi` (see the
//! crate docs for how to add one).

pub mod anomalies;
pub mod common;
pub mod cs;
pub mod health;
pub mod orders;
pub mod payouts;
pub mod platform_common;
pub mod push;
pub mod reconciliation_requests;
pub mod reconciliations;
pub mod redpacks;
pub mod refunds;
pub mod sessions;
pub mod users;
pub mod webhooks;
pub mod wechat_token;
