//! The composer's use of the upstream tier ([`crate::cache::tier`]): entries moved
//! between the store and Redis keeping their age, and, in strict consistency, the
//! check of a local entry against the generations in Redis before it is served.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::tier::format::{FORMAT, StoredEntry};
use crate::cache::tier::{Claim, Fetched, FlightLock, Tier, TierStamp, wall_clock};
use crate::cache::{CacheKey, Entry};

/// The tier, for requests to one origin database.
#[derive(Clone, Copy)]
pub struct Upstream<'a> {
    /// The deployment's tier.
    pub tier: &'a Arc<Tier>,
    /// The request's origin database.
    pub database: &'a str,
}

impl Upstream<'_> {
    /// Looks `key` up in Redis after a local miss. With single flight, a miss takes the
    /// key's lock (returned, to hold until the result is stored), or waits at most
    /// `wait` for the instance holding it.
    pub async fn look(
        &self,
        key: CacheKey,
        tables: &[String],
        tables_unknown: bool,
        wait: Duration,
    ) -> (Fetched, Option<FlightLock>) {
        let fetched = self
            .tier
            .fetch(self.database, key, tables, tables_unknown)
            .await;
        if !matches!(fetched, Fetched::Missing(_)) || !self.tier.single_flight() {
            return (fetched, None);
        }
        match self.tier.claim(self.database, key, wait).await {
            Claim::Won(lock) => (fetched, Some(lock)),
            Claim::Lost => {
                let waited =
                    self.tier
                        .await_flight(self.database, key, tables, tables_unknown, wait);
                (waited.await, None)
            }
            Claim::Unknown => (fetched, None),
        }
    }

    /// Whether Redis confirms that no write reached what `entry` read since its query
    /// started; `None` when Redis does not answer. An entry without generations (stored
    /// while Redis was away) cannot be confirmed.
    pub async fn confirms(&self, entry: &Entry) -> Option<bool> {
        let Some(stamped) = &entry.tier_stamp else {
            return Some(false);
        };
        let now = self.tier.stamp(self.database, &entry.tables).await?;
        Some(stamped.is_current(&now, entry.tables_unknown))
    }

    /// Stores `entry` in Redis too, for the life it has left at `now` (cache clock),
    /// when it carries generations; then lets go of `lock`.
    pub fn store(&self, key: CacheKey, entry: &Entry, now: Duration, lock: Option<FlightLock>) {
        let Some(stamp) = &entry.tier_stamp else {
            return;
        };
        let age = now.saturating_sub(entry.stored_at);
        let life = entry.max_age.saturating_add(entry.stale_while_revalidate);
        let stored = StoredEntry {
            format: FORMAT,
            created_at_ms: millis(wall_clock().saturating_sub(age)),
            max_age_ms: millis(entry.max_age),
            stale_while_revalidate_ms: millis(entry.stale_while_revalidate),
            tables: entry.tables.to_vec(),
            tables_unknown: entry.tables_unknown,
            generations: stamp.0.to_vec(),
            segments: entry.segments.clone(),
        };
        self.tier
            .store(self.database, key, stored, life.saturating_sub(age), lock);
    }
}

/// The local entry for one found in Redis, at `now` (cache clock): it keeps the age it
/// has there. Its tables, validity and refetch are this instance's (`local`).
pub fn from_stored(stored: StoredEntry, stamp: TierStamp, now: Duration, local: Entry) -> Entry {
    let age = wall_clock().saturating_sub(Duration::from_millis(stored.created_at_ms));
    let max_age = Duration::from_millis(stored.max_age_ms);
    let life = max_age.saturating_add(Duration::from_millis(stored.stale_while_revalidate_ms));
    let fresh_left = max_age.saturating_sub(age);
    let life_left = life.saturating_sub(age);
    // The cache clock starts with the process: an entry older than that is dated at
    // its start, with what it has left of both lifetimes.
    let stored_at = now.saturating_sub(age);
    let dated_age = now - stored_at;
    Entry {
        segments: stored.segments,
        stored_at,
        max_age: dated_age + fresh_left,
        stale_while_revalidate: life_left - fresh_left,
        tier_stamp: Some(stamp),
        ..local
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Freshness;

    fn local() -> Entry {
        Entry {
            segments: Vec::new(),
            stored_at: Duration::ZERO,
            max_age: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            tables: Arc::from(vec!["t".to_owned()]),
            tables_unknown: false,
            validity: None,
            tier_stamp: None,
            refetch: Arc::new(crate::cache::entry::tests::FixedRefetch(None)),
        }
    }

    fn stored(age: Duration) -> StoredEntry {
        StoredEntry {
            format: FORMAT,
            created_at_ms: millis(wall_clock() - age),
            max_age_ms: 60_000,
            stale_while_revalidate_ms: 15_000,
            tables: vec!["t".to_owned()],
            tables_unknown: false,
            generations: vec![0, 0, 0],
            segments: Vec::new(),
        }
    }

    /// The local entry, at `now`, for one stored in Redis `age` seconds ago.
    fn aged(age: u64, now: Duration) -> Entry {
        from_stored(
            stored(Duration::from_secs(age)),
            TierStamp::from(vec![]),
            now,
            local(),
        )
    }

    #[test]
    fn an_entry_from_redis_keeps_its_age() {
        let now = Duration::from_secs(1000);
        let entry = aged(50, now);
        let later = |s| entry.freshness(now + Duration::from_secs(s));
        assert_eq!(later(9), Freshness::Fresh);
        assert_eq!(later(11), Freshness::Stale);
        assert_eq!(later(26), Freshness::Expired);
    }

    #[test]
    fn an_entry_older_than_the_process_keeps_its_age_too() {
        // The process started 20 s ago; the entry was made 50 s ago.
        let now = Duration::from_secs(20);
        let entry = aged(50, now);
        let later = |s| entry.freshness(now + Duration::from_secs(s));
        assert_eq!(later(9), Freshness::Fresh);
        assert_eq!(later(11), Freshness::Stale);
        assert_eq!(later(26), Freshness::Expired);
        let stale = aged(70, now);
        assert_eq!(stale.freshness(now), Freshness::Stale);
        assert_eq!(
            stale.freshness(now + Duration::from_secs(6)),
            Freshness::Expired
        );
    }
}
