//! Single flight across instances: on a miss in Redis, one instance takes a short lock
//! on the key and asks the origin; the others wait (bounded) for its entry to appear in
//! Redis. The lock expires by itself, so an instance that dies holding it delays the
//! others by at most its TTL; it is released as soon as its holder's flight ends,
//! stored or not.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Fetched, Tier};
use crate::cache::key::CacheKey;

/// How often a waiter looks for the entry.
const POLL: Duration = Duration::from_millis(5);

/// The right to fetch a key for every instance; released when dropped.
pub struct FlightLock {
    tier: Arc<Tier>,
    database: String,
    key: CacheKey,
}

/// Who fetches a key Redis does not hold.
pub enum Claim {
    /// This instance: the others wait for it.
    Won(FlightLock),
    /// Another instance is fetching it.
    Lost,
    /// Redis did not answer: every instance for itself.
    Unknown,
}

impl Tier {
    /// Claims the fetch of `key` for `ttl`.
    pub async fn claim(self: &Arc<Self>, database: &str, key: CacheKey, ttl: Duration) -> Claim {
        let lock_key = self.keys(database).lock(key);
        let holder = self.clocks.instance();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken = self
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(&lock_key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await;
        match taken {
            Some(Some(_)) => Claim::Won(FlightLock {
                tier: Arc::clone(self),
                database: database.to_owned(),
                key,
            }),
            Some(None) => {
                self.stats.flight_waits.fetch_add(1, Ordering::Relaxed);
                Claim::Lost
            }
            None => Claim::Unknown,
        }
    }

    /// Waits, at most `wait`, for another instance's fetch of `key` to land in Redis:
    /// what a lookup then finds. It stops waiting when the lock is gone (its holder
    /// stored nothing, or died and the lock expired).
    pub async fn await_flight(
        &self,
        database: &str,
        key: CacheKey,
        tables: &[String],
        tables_unknown: bool,
        wait: Duration,
    ) -> Fetched {
        let deadline = tokio::time::Instant::now() + wait;
        let lock_key = self.keys(database).lock(key);
        loop {
            tokio::time::sleep(POLL).await;
            let fetched = self.fetch(database, key, tables, tables_unknown).await;
            if !matches!(fetched, Fetched::Missing(_)) || tokio::time::Instant::now() >= deadline {
                return fetched;
            }
            let lock_key = lock_key.clone();
            let held = self
                .run(|mut connection| async move {
                    redis::cmd("EXISTS")
                        .arg(&lock_key)
                        .query_async::<bool>(&mut connection)
                        .await
                })
                .await;
            if held != Some(true) {
                return fetched;
            }
        }
    }
}

impl Drop for FlightLock {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tier, lock_key) = (
            Arc::clone(&self.tier),
            self.tier.keys(&self.database).lock(self.key),
        );
        runtime.spawn(async move {
            let _released = tier
                .run(|mut connection| async move {
                    redis::cmd("DEL")
                        .arg(&lock_key)
                        .query_async::<()>(&mut connection)
                        .await
                })
                .await;
        });
    }
}
