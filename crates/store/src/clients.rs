//! API clients: the mini-program backends and staff that call the api, each with one Bearer
//! key and one role. Keys are shown once at creation and stored only as their SHA-256 hex,
//! so a database leak does not leak working keys.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// What a client may do. `Admin` may do everything; the api checks roles per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A mini-program backend: sessions, orders, refunds.
    Client,
    /// Finance staff: payouts and red packets, reports.
    Finance,
    /// Approves payouts above the threshold (not the requester).
    Approver,
    /// Read-only.
    Viewer,
    Admin,
    /// Our own services that call WeChat themselves: may read the shared access token
    /// (issue 18), nothing else.
    Internal,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Client, Role::Finance, Role::Approver, Role::Viewer, Role::Admin, Role::Internal];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Finance => "finance",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
            Role::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller as the api sees it (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiClient {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub webhook_url: Option<String>,
}

/// A freshly created client: `key` (and `webhook_secret`) are shown once and never again.
pub struct NewClientKey {
    pub client: ApiClient,
    pub key: String,
    pub webhook_secret: Option<String>,
}

impl fmt::Debug for NewClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewClientKey").field("client", &self.client).field("key", &"***").finish()
    }
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random(n: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(n).map(char::from).collect()
}

/// Creates a client with a new random key (`mp_<role>_<40 alphanumerics>`); with a webhook
/// URL, also a webhook signing secret (`whsec_…`).
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    role: Role,
    webhook_url: Option<&str>,
) -> Result<NewClientKey, StoreError> {
    let key = format!("mp_{}_{}", role.as_str(), random(40));
    let webhook_secret = webhook_url.map(|_| format!("whsec_{}", random(40)));
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_clients (id, name, role, key_hash, key_prefix, webhook_url, webhook_secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_key(&key))
    .bind(&key[..key.len().min(12)])
    .bind(webhook_url)
    .bind(&webhook_secret)
    .execute(conn)
    .await?;
    Ok(NewClientKey {
        client: ApiClient { id, name: name.into(), role, webhook_url: webhook_url.map(Into::into) },
        key,
        webhook_secret,
    })
}

type ClientRow = (Uuid, String, String, Option<String>);

fn from_row((id, name, role, webhook_url): ClientRow) -> Result<ApiClient, StoreError> {
    let role = Role::parse(&role).ok_or_else(|| StoreError::Conflict(format!("unknown role {role:?}")))?;
    Ok(ApiClient { id, name, role, webhook_url })
}

/// The enabled client holding `key`, if any.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<ApiClient>, StoreError> {
    authenticate_hash(pool, &hash_key(key)).await
}

/// The enabled client whose key has this [`hash_key`], if any.
pub async fn authenticate_hash(pool: &PgPool, key_hash: &str) -> Result<Option<ApiClient>, StoreError> {
    let row: Option<ClientRow> = sqlx::query_as(
        "SELECT id, name, role, webhook_url FROM api_clients WHERE key_hash = $1 AND disabled_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// Sets (or clears) where a client's webhooks go; a new secret is generated when set.
/// Returns the new secret.
pub async fn set_webhook(conn: &mut PgConnection, id: Uuid, url: Option<&str>) -> Result<Option<String>, StoreError> {
    let secret = url.map(|_| format!("whsec_{}", random(40)));
    let done = sqlx::query("UPDATE api_clients SET webhook_url = $2, webhook_secret = $3 WHERE id = $1")
        .bind(id)
        .bind(url)
        .bind(&secret)
        .execute(conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("api client {id}")));
    }
    Ok(secret)
}

/// A client by id, with whether it is disabled (`None`: no such client).
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<(ApiClient, bool)>, StoreError> {
    let row: Option<(Uuid, String, String, Option<String>, bool)> =
        sqlx::query_as("SELECT id, name, role, webhook_url, disabled_at IS NOT NULL FROM api_clients WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(|(id, name, role, url, disabled)| Ok((from_row((id, name, role, url))?, disabled))).transpose()
}

/// Every client named `name` (names are not unique), with whether each is disabled.
pub async fn find_by_name(conn: &mut PgConnection, name: &str) -> Result<Vec<(ApiClient, bool)>, StoreError> {
    let rows: Vec<(Uuid, String, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, name, role, webhook_url, disabled_at IS NOT NULL FROM api_clients WHERE name = $1 ORDER BY created_at",
    )
    .bind(name)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(|(id, name, role, url, disabled)| Ok((from_row((id, name, role, url))?, disabled))).collect()
}

/// The channel on which key changes are announced (`pg_notify`, delivered at commit):
/// every api replica drops its cache of resolved keys when it hears one.
pub const KEYS_CHANNEL: &str = "minipay_api_clients";

/// Disables a client: its key fails authentication as soon as the caller commits (the
/// commit delivers a notification on [`KEYS_CHANNEL`] that makes every api replica drop
/// its cached keys; a replica that is not listening reads keys on every request), and its
/// webhooks are held back by the worker (left pending with the reason, never sent).
/// Written with an audit line by `actor` in the caller's transaction. `false` when it was
/// already disabled.
pub async fn disable(conn: &mut PgConnection, id: Uuid, actor: &str) -> Result<bool, StoreError> {
    let done: Option<(String, String)> = sqlx::query_as(
        "UPDATE api_clients SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL RETURNING name, role",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((name, role)) = done else {
        return Ok(false);
    };
    crate::audit::record(
        conn,
        actor,
        "api_client.disabled",
        "api_client",
        &id.to_string(),
        serde_json::json!({ "name": name, "role": role }),
    )
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(KEYS_CHANNEL).bind(id.to_string()).execute(&mut *conn).await?;
    Ok(true)
}
