//! # minipay-store — domain types and Postgres access
//!
//! The only crate that writes SQL. Services (api, notify, worker) call functions here with a
//! pool or an open transaction; functions that change money take `&mut PgConnection` inside
//! a transaction the caller commits, so one business step is one database transaction.
//!
//! Layout:
//! - [`db`]: connecting and the embedded migrations ([`MIGRATOR`]).
//! - [`domain`]: newtypes parsed once at the edge (`OutTradeNo`, `OpenId`, …) and the state
//!   enums with their allowed transitions, in one place.
//! - [`ledger`]: the append-only double-entry ledger; postings are idempotent by
//!   `(kind, reference)` and balanced by a deferred database check.
//! - [`audit`]: the append-only audit log.
//!
//! Queries use runtime `sqlx::query` with binds rather than the compile-time macros: the
//! schema is being built by several people at once and builds must not need a database.

pub mod anomalies;
pub mod audit;
pub mod batches;
pub mod clients;
pub mod cs_messages;
pub mod db;
pub mod domain;
pub mod group_commit;
pub mod idempotency;
pub mod ledger;
pub mod notifications;
pub mod orders;
pub mod payout_attempts;
pub mod payout_limits;
pub mod payouts;
pub mod platform_certs;
pub mod recon;
pub mod redpacks;
pub mod refunds;
mod sendable;
pub mod settle;
pub mod tokens;
pub mod users;
pub mod webhook_log;
pub mod webhooks;

pub use db::MIGRATOR;
pub use wxpay::Fen;

/// Errors from the store that callers map to HTTP or retry decisions.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid state transition {entity} {from} -> {to}")]
    InvalidTransition { entity: &'static str, from: String, to: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database refused a unique key: the caller lost a race or repeated itself.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}
