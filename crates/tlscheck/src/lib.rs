//! # minipay-tlscheck — will a mini-program accept this server?
//!
//! A mini-program only talks to the server domains configured in its admin console, and
//! checks their HTTPS certificates more strictly than a browser (iOS applies Apple's App
//! Transport Security). When a request fails in the mini-program with nothing in the
//! server log, the cause is usually one of these rules; this crate checks them ahead of
//! time, the way the seed note (§3–4) asks: "use a tool to check the certificate".
//!
//! ## Layout
//! - [`cert`]: `minipay check-cert HOST[:PORT]` — connects, probes the TLS versions and
//!   cipher suites, and judges the certificate chain rule by rule ([`cert::check_cert`]).
//! - [`domains`]: `minipay check-domains FILE` — the server-domain lists (request, socket,
//!   uploadFile, downloadFile) against WeChat's configuration rules
//!   ([`domains::check_domains`]).
//! - [`Level`], [`Finding`]: one line per rule, pass / warn / fail.

pub mod cert;
pub mod domains;

use serde::Serialize;

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// The result of one rule, with what was seen (for the human reading the report).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable rule name, e.g. `chain-trusted`.
    pub rule: &'static str,
    pub level: Level,
    pub detail: String,
}

impl Finding {
    pub fn new(rule: &'static str, level: Level, detail: impl Into<String>) -> Finding {
        Finding { rule, level, detail: detail.into() }
    }
}
