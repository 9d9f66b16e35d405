//! How a notification ended, and the one place that turns that into a reply, a metric, a log
//! line and (for refusals) a forensic row.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use minipay_store::notifications::{self, NotificationKind, PRUNE_EVERY, Rejected};
use wxpay::xml::XmlError;

use crate::{State, reply};

/// The end of one notification's journey.
pub enum Handled {
    /// Committed (or nothing to commit): reply SUCCESS. `outcome` is the metric label.
    Ack { outcome: &'static str, reference: String },
    /// Not acceptable: reply FAIL with a 4xx and keep the body for forensics.
    Reject { reason: &'static str, detail: String, status: StatusCode, body: Bytes, size: u64 },
    /// Could not commit (database down, …): reply FAIL with a 5xx so WeChat retries.
    Unavailable { error: String },
}

impl Handled {
    pub fn reject(reason: &'static str, detail: impl Into<String>, body: &Bytes) -> Handled {
        Handled::Reject {
            reason,
            detail: detail.into(),
            status: StatusCode::BAD_REQUEST,
            body: body.clone(),
            size: body.len() as u64,
        }
    }

    /// A body the XML decoder refused, with a stable reason code per kind of refusal.
    pub fn bad_xml(e: &XmlError, body: &Bytes) -> Handled {
        let reason = match e {
            XmlError::TooLarge { .. } => "too_large",
            XmlError::NotUtf8 => "not_utf8",
            XmlError::Doctype => "doctype",
            XmlError::UnknownEntity(_) => "entity",
            XmlError::DuplicateField(_) => "duplicate_field",
            XmlError::TooDeep | XmlError::Empty | XmlError::Malformed(_) => "malformed",
        };
        Handled::reject(reason, e.to_string(), body)
    }
}

/// Which protocol's reply: v2's XML document, or v3's 204 / `{"code":"FAIL"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    V2,
    V3,
}

impl Reply {
    fn success(self) -> HttpResponse {
        match self {
            Reply::V2 => reply::success(),
            Reply::V3 => reply::v3_success(),
        }
    }

    fn fail(self, status: StatusCode) -> HttpResponse {
        match self {
            Reply::V2 => reply::fail(status),
            Reply::V3 => reply::v3_fail(status),
        }
    }
}

/// Replies, counts, logs and keeps refused bodies. Never fails: if even the forensic insert
/// fails (database down), the reply is still FAIL.
pub async fn finish(
    state: &State,
    req: &HttpRequest,
    kind: NotificationKind,
    reply: Reply,
    handled: Handled,
    started: Instant,
) -> HttpResponse {
    let k = kind.as_str();
    let elapsed = started.elapsed().as_secs_f64();
    match handled {
        Handled::Ack { outcome, reference } => {
            state.metrics.observe(k, outcome, elapsed);
            tracing::info!(kind = k, outcome, reference = %reference, "notification acknowledged");
            reply.success()
        }
        Handled::Reject { reason, detail, status, body, size } => {
            state.metrics.observe(k, &format!("rejected_{reason}"), elapsed);
            let remote = req.peer_addr().map(|a| a.ip().to_string());
            tracing::warn!(kind = k, reason, detail = %detail, remote = ?remote, size, "notification rejected");
            let row = Rejected {
                kind,
                reason,
                detail: &detail,
                remote_addr: remote.as_deref(),
                body: &body,
                body_size: size,
            };
            match notifications::record_rejected(&state.pool, &row).await {
                Ok(id) if id % PRUNE_EVERY == 0 => {
                    if let Err(e) = notifications::prune_rejected(&state.pool, state.rejected_keep).await {
                        tracing::warn!(error = %e, "pruning the forensic table failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not keep the rejected body"),
            }
            reply.fail(status)
        }
        Handled::Unavailable { error } => {
            state.metrics.observe(k, "error", elapsed);
            tracing::error!(kind = k, error = %error, "notification not applied; WeChat will retry");
            reply.fail(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}
