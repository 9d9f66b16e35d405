//! Customer-service messages (客服消息) both ways: what users sent (pushed to us by WeChat,
//! deduplicated by WeChat's key) and what we sent through `message/custom/send`, with
//! WeChat's answer. Received messages are announced to client backends through the webhook
//! outbox in the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// A received message as stored.
pub struct Received<'a> {
    pub appid: &'a str,
    pub openid: &'a str,
    pub dedupe_key: &'a str,
    pub msg_type: &'a str,
    pub event: Option<&'a str>,
    pub wechat_time: Option<DateTime<Utc>>,
    pub safe_mode: bool,
    pub body: &'a Value,
}

/// Stores a received message and queues a `cs_message.received` webhook for every client
/// backend with a webhook URL. `None` when WeChat had pushed it before (nothing written).
pub async fn insert_received(tx: &mut PgConnection, m: &Received<'_>) -> Result<Option<i64>, StoreError> {
    let id: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO cs_messages (appid, direction, openid, dedupe_key, msg_type, event, wechat_time, safe_mode, body, status)
         VALUES ($1, 'in', $2, $3, $4, $5, $6, $7, $8, 'received')
         ON CONFLICT (appid, dedupe_key) WHERE direction = 'in' DO NOTHING
         RETURNING id",
    )
    .bind(m.appid)
    .bind(m.openid)
    .bind(m.dedupe_key)
    .bind(m.msg_type)
    .bind(m.event)
    .bind(m.wechat_time)
    .bind(m.safe_mode)
    .bind(m.body)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id,)) = id else { return Ok(None) };
    let clients: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM api_clients WHERE role = 'client' AND webhook_url IS NOT NULL AND disabled_at IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    let payload = serde_json::json!({
        "id": id, "appid": m.appid, "openid": m.openid, "msg_type": m.msg_type, "event": m.event,
        "create_time": m.wechat_time, "message": m.body,
    });
    for (client,) in clients {
        crate::webhooks::enqueue(tx, client, "cs_message.received", &format!("cs_message:{id}"), payload.clone())
            .await?;
    }
    Ok(Some(id))
}

/// A message we sent (or tried to).
pub struct Sent<'a> {
    pub appid: &'a str,
    pub openid: &'a str,
    pub msg_type: &'a str,
    pub body: &'a Value,
    pub ok: bool,
    pub errcode: Option<i64>,
    pub errmsg: Option<&'a str>,
    pub sent_by: Option<Uuid>,
}

pub async fn insert_sent(pool: &PgPool, m: &Sent<'_>) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO cs_messages (appid, direction, openid, msg_type, body, status, errcode, errmsg, sent_by)
         VALUES ($1, 'out', $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(m.appid)
    .bind(m.openid)
    .bind(m.msg_type)
    .bind(m.body)
    .bind(if m.ok { "sent" } else { "failed" })
    .bind(m.errcode)
    .bind(m.errmsg)
    .bind(m.sent_by)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// The 48-hour window as our records see it: when the user last wrote (a message, not an
/// event) and how many messages we sent successfully since.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub last_user_message_at: Option<DateTime<Utc>>,
    pub sent_since: i64,
}

pub async fn window(pool: &PgPool, appid: &str, openid: &str) -> Result<Window, StoreError> {
    let (last, sent): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "WITH last AS (
           SELECT max(created_at) AS at FROM cs_messages
            WHERE appid = $1 AND openid = $2 AND direction = 'in' AND msg_type <> 'event')
         SELECT last.at,
                (SELECT count(*) FROM cs_messages
                  WHERE appid = $1 AND openid = $2 AND direction = 'out' AND status = 'sent'
                    AND created_at > coalesce(last.at, '-infinity'))
           FROM last",
    )
    .bind(appid)
    .bind(openid)
    .fetch_one(pool)
    .await?;
    Ok(Window { last_user_message_at: last, sent_since: sent })
}

/// One stored message, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub id: i64,
    pub direction: String,
    pub msg_type: String,
    pub event: Option<String>,
    pub status: String,
    pub errcode: Option<i64>,
    pub body: Value,
    pub created_at: DateTime<Utc>,
}

type MsgRow = (i64, String, String, Option<String>, String, Option<i64>, Value, DateTime<Utc>);

/// The conversation with one user, newest first.
pub async fn list(pool: &PgPool, appid: &str, openid: &str, limit: i64) -> Result<Vec<StoredMessage>, StoreError> {
    let rows: Vec<MsgRow> = sqlx::query_as(
        "SELECT id, direction, msg_type, event, status, errcode, body, created_at FROM cs_messages
          WHERE appid = $1 AND openid = $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(appid)
    .bind(openid)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, direction, msg_type, event, status, errcode, body, created_at)| StoredMessage {
            id,
            direction,
            msg_type,
            event,
            status,
            errcode,
            body,
            created_at,
        })
        .collect())
}
