//! Webhook delivery to client backends, from the outbox (`webhook_outbox`) written in the
//! same transaction as each state change.
//!
//! One step ([`WebhookSender::try_execute`]) takes the oldest due pending event with
//! `FOR UPDATE SKIP LOCKED` (any number of workers), POSTs it to the client's `webhook_url`
//! and records the attempt (`webhook_attempts`: status, error, duration). A 2xx answer marks
//! it delivered; anything else schedules the next attempt with exponential backoff
//! (`initial × 2^(attempts-1)`, capped), and after `max_attempts` the event is `dead`.
//! Delivery is at-least-once: receivers deduplicate by the event id.
//!
//! A disabled client (`minipay keys disable`) gets nothing: its events stay `pending`, are
//! not sent and are looked at again hourly, with `last_error` saying why (so they are kept,
//! visible in `GET /v1/webhooks`, and would flow again if the client were re-enabled).
//! The client's row is share-locked while an event is being delivered, so a disable waits
//! for a delivery already on the wire (at most the webhook timeout) and none starts after it.
//!
//! Each request carries `Minipay-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` keyed
//! with the client's webhook secret, plus `Minipay-Event` (type) and `Minipay-Event-Id`.
//! The body is `{"id", "type", "created_at", "data"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use minipay_config::WebhookConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Schedule, Worker};

/// What one step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        event_id: Uuid,
        http_status: u16,
    },
    Retry {
        event_id: Uuid,
        attempts: i32,
        error: String,
    },
    Dead {
        event_id: Uuid,
        attempts: i32,
        error: String,
    },
    /// The client has no webhook URL: the event waits (an hour) until it gets one.
    NoEndpoint {
        event_id: Uuid,
    },
    /// The client is disabled: the event is not sent; it waits (an hour) in case the client
    /// is enabled again.
    ClientDisabled {
        event_id: Uuid,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// The signature header value for `body` at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempts + 1`.
pub fn backoff(cfg: &WebhookConfig, attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let ms = cfg.initial_backoff_ms.saturating_mul(1u64 << exp.min(40));
    Duration::from_millis(ms.min(cfg.max_backoff_ms))
}

#[derive(sqlx::FromRow)]
struct Due {
    id: i64,
    event_id: Uuid,
    event_type: String,
    payload: Value,
    attempts: i32,
    created_at: DateTime<Utc>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    client_disabled: bool,
}

/// Why a disabled client's event was not sent (kept in `last_error`).
pub const CLIENT_DISABLED: &str = "not delivered: the client is disabled";

#[derive(Clone)]
pub struct WebhookSender {
    pool: PgPool,
    http: reqwest::Client,
    cfg: WebhookConfig,
}

impl WebhookSender {
    pub fn new(pool: PgPool, cfg: WebhookConfig) -> Result<WebhookSender, WebhookError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookError::Http(e.to_string()))?;
        Ok(WebhookSender { pool, http, cfg })
    }

    /// Delivers one due event; `None` when nothing is due.
    pub async fn try_execute(&self) -> Result<Option<Delivery>, WebhookError> {
        let mut tx = self.pool.begin().await?;
        let due: Option<Due> = sqlx::query_as(
            "SELECT o.id, o.event_id, o.event_type, o.payload, o.attempts, o.created_at, c.webhook_url, c.webhook_secret,
                    c.disabled_at IS NOT NULL AS client_disabled
               FROM webhook_outbox o JOIN api_clients c ON c.id = o.client_id
              WHERE o.status = 'pending' AND o.next_attempt_at <= now()
              ORDER BY o.next_attempt_at LIMIT 1
              FOR UPDATE OF o SKIP LOCKED FOR SHARE OF c SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else { return Ok(None) };
        if due.client_disabled {
            sqlx::query(
                "UPDATE webhook_outbox SET next_attempt_at = now() + interval '1 hour', last_error = $2 WHERE id = $1",
            )
            .bind(due.id)
            .bind(CLIENT_DISABLED)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(event_id = %due.event_id, "webhook held back: the client is disabled");
            return Ok(Some(Delivery::ClientDisabled { event_id: due.event_id }));
        }
        let (Some(url), Some(secret)) = (due.webhook_url.clone(), due.webhook_secret.clone()) else {
            sqlx::query(
                "UPDATE webhook_outbox SET next_attempt_at = now() + interval '1 hour', last_error = $2 WHERE id = $1",
            )
            .bind(due.id)
            .bind("the client has no webhook_url")
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(Delivery::NoEndpoint { event_id: due.event_id }));
        };
        let body = json!({
            "id": due.event_id, "type": due.event_type, "created_at": due.created_at, "data": due.payload,
        })
        .to_string();
        let t = Utc::now().timestamp();
        let started = Instant::now();
        let result = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Minipay-Signature", signature(&secret, t, &body))
            .header("Minipay-Event", &due.event_type)
            .header("Minipay-Event-Id", due.event_id.to_string())
            .body(body)
            .send()
            .await;
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (status, error) = match result {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (Some(r.status().as_u16()), Some(format!("HTTP {}", r.status()))),
            // Without the URL: it may carry a token the client put in it.
            Err(e) => (None, Some(e.without_url().to_string())),
        };
        sqlx::query(
            "INSERT INTO webhook_attempts (outbox_id, http_status, error, duration_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(due.id)
        .bind(status.map(i32::from))
        .bind(&error)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await?;
        let attempts = due.attempts + 1;
        let delivery = match error {
            None => {
                sqlx::query(
                    "UPDATE webhook_outbox SET status = 'delivered', attempts = $2, delivered_at = now(), last_error = NULL
                      WHERE id = $1",
                )
                .bind(due.id)
                .bind(attempts)
                .execute(&mut *tx)
                .await?;
                Delivery::Delivered { event_id: due.event_id, http_status: status.unwrap_or(200) }
            }
            Some(error) if attempts >= self.cfg.max_attempts => {
                sqlx::query("UPDATE webhook_outbox SET status = 'dead', attempts = $2, last_error = $3 WHERE id = $1")
                    .bind(due.id)
                    .bind(attempts)
                    .bind(&error)
                    .execute(&mut *tx)
                    .await?;
                tracing::error!(event_id = %due.event_id, attempts, %error, "webhook given up");
                Delivery::Dead { event_id: due.event_id, attempts, error }
            }
            Some(error) => {
                let wait = backoff(&self.cfg, attempts);
                sqlx::query(
                    "UPDATE webhook_outbox SET attempts = $2, last_error = $3,
                            next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                )
                .bind(due.id)
                .bind(attempts)
                .bind(&error)
                .bind(wait.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                tracing::warn!(event_id = %due.event_id, attempts, %error, "webhook delivery failed; will retry");
                Delivery::Retry { event_id: due.event_id, attempts, error }
            }
        };
        tx.commit().await?;
        Ok(Some(delivery))
    }

    /// Delivers due events until none is left or `max` were tried.
    pub async fn run_until_idle(&self, max: usize) -> Result<Vec<Delivery>, WebhookError> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.try_execute().await? {
                Some(d) => out.push(d),
                None => break,
            }
        }
        Ok(out)
    }

    /// Registers the job: deliver what is due every `every`.
    pub fn register(self, worker: &mut Worker, every: Duration) {
        let sender = Arc::new(self);
        worker.add_job("webhooks", Schedule::Every(every), move |_ctx| {
            let sender = sender.clone();
            async move {
                sender.run_until_idle(BATCH).await?;
                Ok(())
            }
        });
    }
}

/// Events per tick: bounded so one tick stays short even with a large backlog.
const BATCH: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_t_dot_body() {
        // HMAC-SHA256("whsec_test", "1700000000.{}") computed independently with openssl:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test
        let s = signature("whsec_test", 1_700_000_000, "{}");
        assert_eq!(s, "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = WebhookConfig { initial_backoff_ms: 1000, max_backoff_ms: 5000, ..WebhookConfig::default() };
        assert_eq!(backoff(&cfg, 1), Duration::from_millis(1000));
        assert_eq!(backoff(&cfg, 2), Duration::from_millis(2000));
        assert_eq!(backoff(&cfg, 3), Duration::from_millis(4000));
        assert_eq!(backoff(&cfg, 4), Duration::from_millis(5000));
        assert_eq!(backoff(&cfg, 30), Duration::from_millis(5000));
    }
}
