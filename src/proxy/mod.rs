//! The composer: the only module that sees the analyzer's verdict, the cache and the
//! deployment's settings together, for any protocol.
//!
//! For one request it decides the cache status ([`policy`]), looks the key up, waits
//! (bounded) for another client's fetch of the same key, serves stale entries while
//! refreshing them ([`refresh`]), and turns a recorded reply into an entry when the
//! origin reports the request ended outside a transaction ([`flight`]). The protocol
//! supplies the key's parts, a recorder of its replies and a refetch; it never touches
//! the store. Byte layouts stay with the protocol.

pub mod flight;
pub mod policy;
mod refresh;
pub mod upstream;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::analyze::Analysis;
use crate::cache::tier::{Fetched, FlightLock, TierStamp};
use crate::cache::{
    CacheKey, CacheStatus, Entry, Freshness, Generations, Lookup, Recorded, Store, Validity,
};
use crate::config::CacheSettings;
use crate::metrics::DeploymentMetrics;
use crate::protocol::TxnStatus;
use flight::{Fill, Recording};
pub use flight::{Flight, Record, ToRecord};
pub use policy::{Decision, Policy, Source, decide};
pub use upstream::Upstream;

/// The longest a miss waits for another client's fetch of the same key before going to
/// the origin itself.
const COALESCE_WAIT: Duration = Duration::from_secs(5);

/// Where the client stands when a request arrives.
#[derive(Clone, Copy, Debug)]
pub struct Situation {
    /// The origin's last word on the client's transaction.
    pub txn: TxnStatus,
    /// The client is pinned to its origin connection: it may read its own temporary
    /// objects, or settings the key does not show.
    pub pinned: bool,
    /// Requests of the client are still in flight at the origin: they may open a
    /// transaction or change the settings the key is made of.
    pub behind_others: bool,
}

/// What the cache says about a request.
pub enum Consulted<R> {
    /// Answer with this entry.
    Hit(Arc<Entry>),
    /// Send it to the origin, tracked by this.
    Forward(Box<Flight<R>>),
}

/// One deployment's cache, as a request sees it.
pub struct Composer<'a> {
    /// The store.
    pub store: &'a Arc<Store>,
    /// The deployment's cache settings.
    pub settings: &'a CacheSettings,
    /// The deployment's counters.
    pub metrics: &'a Arc<DeploymentMetrics>,
    /// How long a background refresh may take.
    pub refresh_deadline: Duration,
    /// The write clock of the request's origin database, when the deployment
    /// invalidates on writes.
    pub generations: Option<&'a Arc<Generations>>,
    /// The upstream tier, when the deployment has one.
    pub upstream: Option<Upstream<'a>>,
}

impl Composer<'_> {
    /// Whether a request in this situation could be served from the cache at all (so
    /// that the protocol need not look further into it otherwise).
    pub fn may_cache(&self, situation: Situation) -> bool {
        self.settings.enabled
            && situation.txn.is_idle()
            && !situation.pinned
            && !situation.behind_others
    }

    /// The policy for a request that is looked up, or the status it is forwarded with.
    pub fn decide(&self, analysis: &Analysis, situation: Situation) -> Result<Policy, CacheStatus> {
        match decide(self.settings, analysis, !situation.txn.is_idle()).0 {
            Decision::Refuse(status) => Err(status),
            Decision::Cache(_) if situation.pinned => {
                self.metrics.pinned_bypasses.fetch_add(1, Ordering::Relaxed);
                Err(CacheStatus::Uncacheable)
            }
            // Forwarded, not looked up or stored: the key may not hold what it runs with.
            Decision::Cache(_) if situation.behind_others => Err(CacheStatus::Miss),
            Decision::Cache(policy) => Ok(policy),
        }
    }

    /// The status of a request forwarded without a lookup because the protocol cannot
    /// serve its shape from the cache: the policy's refusal, else `uncacheable`.
    pub fn forwarded_status(&self, analysis: &Analysis, txn: TxnStatus) -> CacheStatus {
        match decide(self.settings, analysis, !txn.is_idle()).0 {
            Decision::Refuse(status) => status,
            Decision::Cache(_) => CacheStatus::Uncacheable,
        }
    }

    /// Looks `key` up. A fresh entry is a hit; a stale one is a hit whose refresh starts
    /// in the background; while another client fetches the key, this waits (bounded) for
    /// its entry; on a miss the request is forwarded and recorded with what `to_record`
    /// gives.
    pub async fn lookup<R: Record>(
        &self,
        key: CacheKey,
        policy: Policy,
        query_bytes: usize,
        started: Instant,
        to_record: impl Fn() -> ToRecord<R>,
    ) -> Consulted<R> {
        let recorded = |record: ToRecord<R>,
                        fill: Fill,
                        tier_stamp: Option<TierStamp>,
                        lock: Option<FlightLock>| {
            let ToRecord {
                recorder,
                tables,
                tables_unknown,
                refetch,
            } = record;
            Flight {
                recording: Some(Recording {
                    recorder,
                    fill,
                    requested_at: self.store.clock().now(),
                    policy,
                    source: Source {
                        tables,
                        tables_unknown,
                        validity: self.generations.map(Validity::starting),
                        tier_stamp,
                        refetch,
                    },
                    lock,
                }),
                ..Flight::forwarded(CacheStatus::Miss, query_bytes, started)
            }
        };
        let unrecorded = || Flight::forwarded(CacheStatus::Miss, query_bytes, started);
        let deadline = tokio::time::Instant::now() + COALESCE_WAIT;
        let mut waited = false;
        loop {
            let (entry, refresh) = match self.store.lookup(key) {
                Lookup::Fresh(entry) => (entry, None),
                Lookup::Stale(entry, refresh) => (entry, Some(refresh)),
                Lookup::Miss(guard) if waited => {
                    // The fetch waited for ended without an entry (too large, an error, a
                    // notice, its client gone): each waiter now asks the origin itself, at
                    // once and unrecorded, rather than one after another.
                    drop(guard);
                    return Consulted::Forward(Box::new(unrecorded()));
                }
                Lookup::Miss(guard) => {
                    let Some(upstream) = self.upstream else {
                        return Consulted::Forward(Box::new(recorded(
                            to_record(),
                            Fill::Guard(guard),
                            None,
                            None,
                        )));
                    };
                    let validity = self.generations.map(Validity::starting);
                    let record = to_record();
                    let (fetched, lock) = upstream
                        .look(key, &record.tables, record.tables_unknown, COALESCE_WAIT)
                        .await;
                    let stamp = match fetched {
                        Fetched::Found(stored, stamp) => {
                            let now = self.store.clock().now();
                            let local = policy.entry(
                                Vec::new(),
                                true,
                                now,
                                Source {
                                    tables: Arc::clone(&record.tables),
                                    tables_unknown: record.tables_unknown,
                                    validity,
                                    tier_stamp: None,
                                    refetch: Arc::clone(&record.refetch),
                                },
                            );
                            let entry = upstream::from_stored(stored, stamp.clone(), now, local);
                            if entry.freshness(now) == Freshness::Expired {
                                Some(stamp)
                            } else {
                                let fresh = entry.freshness(now) == Freshness::Fresh;
                                let entry = Arc::new(entry);
                                if !guard.fill(Arc::clone(&entry)) {
                                    // A write here overtook it on its way.
                                    return Consulted::Forward(Box::new(unrecorded()));
                                }
                                if fresh {
                                    return Consulted::Hit(entry);
                                }
                                // Stale: served as the store serves it, refreshed.
                                continue;
                            }
                        }
                        Fetched::Missing(stamp) => Some(stamp),
                        Fetched::Unavailable => None,
                    };
                    return Consulted::Forward(Box::new(recorded(
                        record,
                        Fill::Guard(guard),
                        stamp,
                        lock,
                    )));
                }
                Lookup::Wait(mut flight) => {
                    if !waited {
                        self.metrics.coalesced_waits.fetch_add(1, Ordering::Relaxed);
                        waited = true;
                    }
                    if tokio::time::timeout_at(deadline, flight.changed())
                        .await
                        .is_err()
                    {
                        return Consulted::Forward(Box::new(recorded(
                            to_record(),
                            Fill::Key(key),
                            None,
                            None,
                        )));
                    }
                    continue;
                }
            };
            if let Some(upstream) = self.upstream.filter(|upstream| upstream.tier.strict()) {
                match upstream.confirms(&entry).await {
                    Some(true) => {}
                    Some(false) => {
                        // Another instance wrote what it read: look again (a miss now).
                        self.store.invalidate(key, &entry);
                        continue;
                    }
                    None => return Consulted::Forward(Box::new(unrecorded())),
                }
            }
            if let Some(refresh) = refresh {
                self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
                if let Some(refresh) = refresh {
                    refresh::spawn(
                        Arc::clone(self.store),
                        refresh,
                        Arc::clone(&entry),
                        policy,
                        self.refresh_deadline,
                        Arc::clone(self.metrics),
                        self.upstream
                            .map(|u| (Arc::clone(u.tier), u.database.to_owned())),
                    );
                }
            }
            return Consulted::Hit(entry);
        }
    }

    /// Counts a reply served from the cache, of `result_bytes`.
    pub fn served(&self, query_bytes: usize, result_bytes: usize, started: Instant) {
        self.metrics.record(
            CacheStatus::Hit,
            query_bytes,
            result_bytes,
            started.elapsed(),
            false,
        );
    }

    /// The origin reported the request ended, the client's transaction then `txn`: its
    /// result is stored if it is whole and was produced outside a transaction, and it is
    /// counted.
    pub fn finish<R: Record>(&self, flight: Flight<R>, txn: TxnStatus) {
        let mut status = flight.status;
        if let Some(recording) = flight.recording {
            match recording.recorder.finish() {
                Recorded::Complete { segments, has_rows } if !flight.failed && txn.is_idle() => {
                    let entry = recording.policy.entry(
                        segments,
                        has_rows,
                        recording.requested_at,
                        recording.source,
                    );
                    let entry = Arc::new(entry);
                    let (key, stored) = match recording.fill {
                        Fill::Guard(guard) => (guard.key(), guard.fill(Arc::clone(&entry))),
                        Fill::Key(key) => (key, self.store.insert(key, Arc::clone(&entry))),
                    };
                    // Not stored when a write overtook it (counted by the store).
                    if let (true, Some(upstream)) = (stored, self.upstream) {
                        let now = self.store.clock().now();
                        upstream.store(key, &entry, now, recording.lock);
                    }
                }
                Recorded::Oversized => status = CacheStatus::OversizedResult,
                _ => {}
            }
        }
        if status == CacheStatus::Miss && !txn.is_idle() {
            // Pipelined behind a BEGIN: it ran inside the transaction.
            status = CacheStatus::Transaction;
        }
        self.metrics.record(
            status,
            flight.query_bytes,
            flight.result_bytes,
            flight.started.elapsed(),
            flight.failed,
        );
    }

    /// Ends a request whose origin connection is gone: failed, not stored, counted.
    pub fn abandon<R: Record>(&self, mut flight: Flight<R>) {
        flight.fail();
        self.metrics.record(
            flight.status,
            flight.query_bytes,
            flight.result_bytes,
            flight.started.elapsed(),
            true,
        );
    }
}

#[cfg(test)]
mod tests;
