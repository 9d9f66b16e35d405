//! Resolved API keys, cached only while this replica listens for key changes.
//!
//! Authentication is on every request, so reading `api_clients` each time would add a
//! round trip to every order. Instead a resolved key is cached, and the cache is trusted
//! only while a `LISTEN` on [`CHANNEL`] is up: `minipay_store::clients::disable` sends a
//! `pg_notify` on that channel in the transaction that disables the key, so every replica
//! drops its cache when the disable commits — within the notification's delivery, a few
//! milliseconds, not the 10 s the old time-to-live allowed. While the listener is not
//! connected (start-up, a lost connection, a restarted database) the cache is bypassed and
//! every request reads the database, so there is never a window in which a disabled key
//! keeps working because a notification was missed.
//!
//! A read that raced with an invalidation is not cached: each invalidation bumps a
//! generation counter, and a result read under an older generation is used once but not
//! stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use minipay_store::StoreError;
use minipay_store::clients::{self, ApiClient};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

pub use minipay_store::clients::KEYS_CHANNEL as CHANNEL;

/// Bound of the cache (cleared when full; it only saves queries).
const LIMIT: usize = 100_000;
/// How long the listener waits before reconnecting after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// See the module docs.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, ApiClient>>,
    generation: AtomicU64,
    live: AtomicBool,
}

impl KeyCache {
    /// A cache whose listener runs on the current Tokio runtime until the cache is dropped.
    pub fn start(pool: &PgPool) -> Arc<KeyCache> {
        let cache = Arc::new(KeyCache::default());
        tokio::spawn(listen(Arc::downgrade(&cache), pool.clone()));
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ApiClient>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every key (a key changed, or the listener's state did).
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.lock().clear();
    }

    /// The enabled client holding the key with this hash: from the cache while the
    /// listener is up, else from the database.
    pub async fn authenticate(&self, pool: &PgPool, hash: &str) -> Result<Option<ApiClient>, StoreError> {
        let live = self.live.load(Ordering::SeqCst);
        if live {
            if let Some(c) = self.lock().get(hash) {
                return Ok(Some(c.clone()));
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let found = clients::authenticate_hash(pool, hash).await?;
        if let Some(c) = &found {
            let mut entries = self.lock();
            // Checked under the lock that `invalidate` clears under: an invalidation that
            // happened during the read leaves the result uncached.
            if live && self.live.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation {
                if entries.len() >= LIMIT {
                    entries.clear();
                }
                entries.insert(hash.to_owned(), c.clone());
            }
        }
        Ok(found)
    }
}

/// The listener: (re)connects, LISTENs, marks the cache live, and invalidates it on every
/// notification; on any error it marks the cache not live, waits and starts again. Ends
/// when the cache is dropped.
async fn listen(cache: Weak<KeyCache>, pool: PgPool) {
    loop {
        let mut listener = match connect(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "api key listener: cannot listen; keys are read on every request");
                tokio::time::sleep(RECONNECT_AFTER).await;
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        {
            let Some(c) = cache.upgrade() else { return };
            c.invalidate();
            c.live.store(true, Ordering::SeqCst);
        }
        loop {
            // A timeout only to notice that the cache was dropped.
            let next = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
            let Some(c) = cache.upgrade() else { return };
            match next {
                Err(_) => continue,
                Ok(Ok(Some(_))) => c.invalidate(),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    // The connection was lost: notifications may have been missed.
                    c.live.store(false, Ordering::SeqCst);
                    c.invalidate();
                    tracing::warn!(
                        "api key listener: connection lost; keys are read on every request until it is back"
                    );
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
