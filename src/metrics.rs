//! Counters per deployment, and their two faces: Prometheus text and JSON.
//!
//! Main counters, labelled by deployment and cache status (Hyperdrive's names):
//! `warpdrive_queries_total`, `warpdrive_query_bytes_total`,
//! `warpdrive_result_bytes_total`. Outside dashboards rely on these names and labels.
//! Beside them: stale serves, revalidations, coalesced waits, evictions, entries and
//! bytes held, pinned sessions, query outcomes, and latency histograms for origin
//! connection set-up and for queries.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::cache::tier::Tier;
use crate::cache::{CacheStatus, Store};
use crate::protocol::Protocol;
pub use tier::TierSnapshot;
use tier::render_tier;

mod tier;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, deployment: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{deployment=\"{deployment}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(
            out,
            "{name}_bucket{{deployment=\"{deployment}\",le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{deployment=\"{deployment}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{deployment=\"{deployment}\"}} {count}");
    }
}

/// Counters of a deployment's origin connections, over all its databases' pools.
#[derive(Debug, Default)]
pub struct PoolMetrics {
    /// Connections opened since start.
    pub opened: AtomicU64,
    /// Connections closed since start.
    pub closed: AtomicU64,
    /// Connections open now (idle, checked out, or being opened).
    pub open: AtomicU64,
    /// Checkouts that gave up after acquire_timeout.
    pub acquire_timeouts: AtomicU64,
    /// Origin connection set-up (connect, TLS, authentication).
    pub connect_latency: Histogram,
}

#[derive(Debug, Default)]
struct StatusCounters {
    queries: AtomicU64,
    query_bytes: AtomicU64,
    result_bytes: AtomicU64,
}

/// Counters of one deployment.
pub struct DeploymentMetrics {
    name: String,
    /// The protocol of its origin (`postgres`, `mysql`).
    protocol: Protocol,
    by_status: [StatusCounters; CacheStatus::ALL.len()],
    /// Hits answered with a stale entry.
    pub stale_served: AtomicU64,
    /// Background refreshes that stored a new entry.
    pub revalidations_ok: AtomicU64,
    /// Background refreshes that failed (the stale entry stays until it expires).
    pub revalidations_failed: AtomicU64,
    /// Lookups that waited for another client's fetch of the same key.
    pub coalesced_waits: AtomicU64,
    /// Clients pinned to their origin connection.
    pub pinned_sessions: AtomicU64,
    /// Cacheable queries of pinned clients, forwarded without looking at the cache.
    pub pinned_bypasses: AtomicU64,
    /// Reads of the origin's catalog.
    pub catalog_reads: AtomicU64,
    /// Connections closed for a startup packet of an invalid length.
    pub invalid_startup_packets: AtomicU64,
    /// Reads of the origin's catalog that failed.
    pub catalog_read_failures: AtomicU64,
    /// Writes through the deployment that invalidated the reads of the tables they
    /// reached.
    pub invalidations_write: AtomicU64,
    /// Writes through the deployment whose tables warpdrive could not name: they
    /// invalidated every read of their database.
    pub invalidations_unknown_write: AtomicU64,
    /// Purges of the deployment's cache asked of this instance.
    pub invalidations_purge: AtomicU64,
    /// Queries that completed.
    pub completed: AtomicU64,
    /// Queries that ended in an error.
    pub errors: AtomicU64,
    /// Cacheable results not stored because they carried warnings (MySQL).
    pub results_with_warnings: AtomicU64,
    /// The deployment's origin connections.
    pub pool: Arc<PoolMetrics>,
    /// From a query's arrival to its ReadyForQuery.
    pub query_duration: Histogram,
    store: Arc<Store>,
    tier: OnceLock<Arc<Tier>>,
}

impl DeploymentMetrics {
    /// Counters for a deployment of `protocol` whose cache is `store`.
    pub fn new(name: &str, protocol: Protocol, store: Arc<Store>) -> DeploymentMetrics {
        DeploymentMetrics {
            name: name.to_owned(),
            protocol,
            by_status: Default::default(),
            stale_served: AtomicU64::new(0),
            revalidations_ok: AtomicU64::new(0),
            revalidations_failed: AtomicU64::new(0),
            coalesced_waits: AtomicU64::new(0),
            pinned_sessions: AtomicU64::new(0),
            pinned_bypasses: AtomicU64::new(0),
            catalog_reads: AtomicU64::new(0),
            invalid_startup_packets: AtomicU64::new(0),
            catalog_read_failures: AtomicU64::new(0),
            invalidations_write: AtomicU64::new(0),
            invalidations_unknown_write: AtomicU64::new(0),
            invalidations_purge: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            results_with_warnings: AtomicU64::new(0),
            pool: Arc::new(PoolMetrics::default()),
            query_duration: Histogram::default(),
            store,
            tier: OnceLock::new(),
        }
    }

    /// The deployment's upstream tier, whose counters are shown with its own.
    pub fn set_tier(&self, tier: Option<Arc<Tier>>) {
        if let Some(tier) = tier {
            let _ = self.tier.set(tier);
        }
    }

    /// Counts one query.
    pub fn record(
        &self,
        status: CacheStatus,
        query_bytes: usize,
        result_bytes: usize,
        elapsed: Duration,
        failed: bool,
    ) {
        let counters = &self.by_status[status.index()];
        counters.queries.fetch_add(1, Ordering::Relaxed);
        counters
            .query_bytes
            .fetch_add(query_bytes as u64, Ordering::Relaxed);
        counters
            .result_bytes
            .fetch_add(result_bytes as u64, Ordering::Relaxed);
        self.query_duration.observe(elapsed);
        let outcome = if failed {
            &self.errors
        } else {
            &self.completed
        };
        outcome.fetch_add(1, Ordering::Relaxed);
    }

    /// Queries counted with `status`.
    pub fn queries(&self, status: CacheStatus) -> u64 {
        self.by_status[status.index()]
            .queries
            .load(Ordering::Relaxed)
    }

    /// A snapshot for JSON.
    pub fn snapshot(&self) -> DeploymentSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let hits = self.queries(CacheStatus::Hit);
        let misses = self.queries(CacheStatus::Miss);
        let store = self.store.stats();
        DeploymentSnapshot {
            deployment: self.name.clone(),
            protocol: self.protocol.name().to_owned(),
            hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            statuses: CacheStatus::ALL
                .iter()
                .map(|status| {
                    let counters = &self.by_status[status.index()];
                    StatusSnapshot {
                        status: *status,
                        queries: load(&counters.queries),
                        query_bytes: load(&counters.query_bytes),
                        result_bytes: load(&counters.result_bytes),
                    }
                })
                .collect(),
            stale_served: load(&self.stale_served),
            revalidations_ok: load(&self.revalidations_ok),
            revalidations_failed: load(&self.revalidations_failed),
            coalesced_waits: load(&self.coalesced_waits),
            evictions: store.evictions,
            entries: store.entries,
            bytes: store.bytes,
            pinned_sessions: load(&self.pinned_sessions),
            pinned_bypasses: load(&self.pinned_bypasses),
            catalog_reads: load(&self.catalog_reads),
            invalid_startup_packets: load(&self.invalid_startup_packets),
            catalog_read_failures: load(&self.catalog_read_failures),
            invalidations_write: load(&self.invalidations_write),
            invalidations_unknown_write: load(&self.invalidations_unknown_write),
            invalidations_purge: load(&self.invalidations_purge),
            entries_invalidated: store.invalidated,
            fills_refused: store.refused_fills,
            completed: load(&self.completed),
            errors: load(&self.errors),
            results_with_warnings: load(&self.results_with_warnings),
            origin_connections: load(&self.pool.open),
            origin_connections_opened: load(&self.pool.opened),
            acquire_timeouts: load(&self.pool.acquire_timeouts),
            l2: self.tier.get().map(|tier| TierSnapshot::of(tier)),
        }
    }

    fn render(&self, out: &mut String) {
        let d = &self.name;
        let protocol = self.protocol.name();
        for status in CacheStatus::ALL {
            let counters = &self.by_status[status.index()];
            for (metric, counter) in [
                ("warpdrive_queries_total", &counters.queries),
                ("warpdrive_query_bytes_total", &counters.query_bytes),
                ("warpdrive_result_bytes_total", &counters.result_bytes),
            ] {
                let _ = writeln!(
                    out,
                    "{metric}{{deployment=\"{d}\",protocol=\"{protocol}\",cache_status=\"{status}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let store = self.store.stats();
        let plain = [
            (
                "warpdrive_cache_stale_served_total",
                self.stale_served.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_cache_coalesced_waits_total",
                self.coalesced_waits.load(Ordering::Relaxed),
            ),
            ("warpdrive_cache_evictions_total", store.evictions),
            (
                "warpdrive_cache_entries_invalidated_total",
                store.invalidated,
            ),
            ("warpdrive_cache_fills_refused_total", store.refused_fills),
            ("warpdrive_cache_entries", store.entries),
            ("warpdrive_cache_bytes", store.bytes),
            (
                "warpdrive_pinned_sessions_total",
                self.pinned_sessions.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_cache_results_with_warnings_total",
                self.results_with_warnings.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_cache_pinned_bypasses_total",
                self.pinned_bypasses.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_catalog_reads_total",
                self.catalog_reads.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_catalog_read_failures_total",
                self.catalog_read_failures.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_invalid_startup_packets_total",
                self.invalid_startup_packets.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_origin_connections",
                self.pool.open.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_origin_connections_opened_total",
                self.pool.opened.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_origin_connections_closed_total",
                self.pool.closed.load(Ordering::Relaxed),
            ),
            (
                "warpdrive_pool_acquire_timeouts_total",
                self.pool.acquire_timeouts.load(Ordering::Relaxed),
            ),
        ];
        for (metric, value) in plain {
            let _ = writeln!(out, "{metric}{{deployment=\"{d}\"}} {value}");
        }
        for (outcome, counter) in [
            ("ok", &self.revalidations_ok),
            ("failed", &self.revalidations_failed),
        ] {
            let _ = writeln!(
                out,
                "warpdrive_cache_revalidations_total{{deployment=\"{d}\",outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        for (cause, counter) in [
            ("write", &self.invalidations_write),
            ("unknown_write", &self.invalidations_unknown_write),
            ("purge", &self.invalidations_purge),
        ] {
            let _ = writeln!(
                out,
                "warpdrive_cache_invalidations_total{{deployment=\"{d}\",cause=\"{cause}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        for (outcome, counter) in [("complete", &self.completed), ("error", &self.errors)] {
            let _ = writeln!(
                out,
                "warpdrive_query_events_total{{deployment=\"{d}\",outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        self.pool
            .connect_latency
            .render(out, "warpdrive_origin_connect_seconds", d);
        self.query_duration
            .render(out, "warpdrive_query_duration_seconds", d);
        if let Some(tier) = self.tier.get() {
            render_tier(out, d, tier);
        }
    }
}

/// One status's counters in a snapshot.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StatusSnapshot {
    /// The cache status.
    pub status: CacheStatus,
    /// Queries.
    pub queries: u64,
    /// Bytes of query messages received.
    pub query_bytes: u64,
    /// Bytes of result messages sent.
    pub result_bytes: u64,
}

/// A deployment's numbers, as `/stats` returns them.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeploymentSnapshot {
    /// Deployment name.
    pub deployment: String,
    /// The protocol of its origin (`postgres`, `mysql`).
    #[serde(default)]
    pub protocol: String,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
    /// Counters per status.
    pub statuses: Vec<StatusSnapshot>,
    /// Stale serves.
    pub stale_served: u64,
    /// Successful refreshes.
    pub revalidations_ok: u64,
    /// Failed refreshes.
    pub revalidations_failed: u64,
    /// Waits on another client's fetch.
    pub coalesced_waits: u64,
    /// Evictions.
    pub evictions: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Pinned sessions.
    pub pinned_sessions: u64,
    /// Cacheable queries of pinned clients, forwarded without the cache.
    #[serde(default)]
    pub pinned_bypasses: u64,
    /// Catalog reads.
    #[serde(default)]
    pub catalog_reads: u64,
    /// Connections closed for an invalid startup packet length.
    #[serde(default)]
    pub invalid_startup_packets: u64,
    /// Failed catalog reads.
    #[serde(default)]
    pub catalog_read_failures: u64,
    /// Writes that invalidated the reads of their tables.
    #[serde(default)]
    pub invalidations_write: u64,
    /// Writes of tables warpdrive could not name, which invalidated their database.
    #[serde(default)]
    pub invalidations_unknown_write: u64,
    /// Purges asked of this instance.
    #[serde(default)]
    pub invalidations_purge: u64,
    /// Entries dropped because a write reached what they read.
    #[serde(default)]
    pub entries_invalidated: u64,
    /// Results not stored because a write overtook their query.
    #[serde(default)]
    pub fills_refused: u64,
    /// Completed queries.
    pub completed: u64,
    /// Failed queries.
    pub errors: u64,
    /// Cacheable results not stored because they carried warnings.
    #[serde(default)]
    pub results_with_warnings: u64,
    /// Origin connections open now.
    pub origin_connections: u64,
    /// Origin connections opened since start.
    pub origin_connections_opened: u64,
    /// Checkouts that gave up after acquire_timeout.
    pub acquire_timeouts: u64,
    /// The upstream tier's numbers, when the deployment has one.
    #[serde(default)]
    pub l2: Option<TierSnapshot>,
}

/// The `warpdrive stats` table: per deployment, the hit ratio first, then the cache's
/// counters, then queries and bytes per status.
pub fn stats_table(snapshots: &[DeploymentSnapshot]) -> String {
    let mut out = String::new();
    for snapshot in snapshots {
        let count = |status: CacheStatus| {
            snapshot
                .statuses
                .iter()
                .find(|s| s.status == status)
                .map_or(0, |s| s.queries)
        };
        let _ = writeln!(
            out,
            "deployment {} ({}): hit ratio {:.1}% ({} hits, {} misses)",
            snapshot.deployment,
            snapshot.protocol,
            snapshot.hit_ratio * 100.0,
            count(CacheStatus::Hit),
            count(CacheStatus::Miss)
        );
        let _ = writeln!(
            out,
            "  cache: {} entries, {} bytes; {} stale serves; revalidations {} ok, {} failed; {} coalesced waits; {} evictions; {} results with warnings not stored",
            snapshot.entries,
            snapshot.bytes,
            snapshot.stale_served,
            snapshot.revalidations_ok,
            snapshot.revalidations_failed,
            snapshot.coalesced_waits,
            snapshot.evictions,
            snapshot.results_with_warnings
        );
        let _ = writeln!(
            out,
            "  invalidation: {} writes, {} writes of unknown tables, {} purges; {} entries dropped, {} fills refused",
            snapshot.invalidations_write,
            snapshot.invalidations_unknown_write,
            snapshot.invalidations_purge,
            snapshot.entries_invalidated,
            snapshot.fills_refused
        );
        if let Some(l2) = &snapshot.l2 {
            let _ = writeln!(
                out,
                "  upstream: {}; {} hits, {} misses; {} errors, {} timeouts, {} skipped while down, {} values refused; {} bytes read, {} written; {} remote invalidations, {} remote purges, {} for resubscribing; {} connects",
                if l2.up { "up" } else { "down" },
                l2.hits,
                l2.misses,
                l2.errors,
                l2.timeouts,
                l2.skipped,
                l2.refused_values,
                l2.bytes_read,
                l2.bytes_written,
                l2.invalidations_remote,
                l2.invalidations_purge,
                l2.invalidations_resubscribe,
                l2.connects
            );
        }
        let _ = writeln!(
            out,
            "  queries: {} completed, {} errors; {} pinned sessions, whose {} cacheable queries bypassed the cache",
            snapshot.completed, snapshot.errors, snapshot.pinned_sessions, snapshot.pinned_bypasses
        );
        let _ = writeln!(
            out,
            "  catalog: {} reads, {} failed",
            snapshot.catalog_reads, snapshot.catalog_read_failures
        );
        let _ = writeln!(
            out,
            "  origin: {} connections open, {} opened since start, {} acquire timeouts",
            snapshot.origin_connections,
            snapshot.origin_connections_opened,
            snapshot.acquire_timeouts
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>12} {:>16} {:>16}",
            "status", "queries", "query bytes", "result bytes"
        );
        for status in &snapshot.statuses {
            let _ = writeln!(
                out,
                "  {:<20} {:>12} {:>16} {:>16}",
                status.status.name(),
                status.queries,
                status.query_bytes,
                status.result_bytes
            );
        }
    }
    out
}

/// All deployments' metrics.
#[derive(Clone, Default)]
pub struct Registry {
    deployments: Vec<Arc<DeploymentMetrics>>,
}

const HELP: &str = "\
# HELP warpdrive_queries_total Queries by deployment, protocol and cache status.
# TYPE warpdrive_queries_total counter
# HELP warpdrive_query_bytes_total Bytes of query messages by deployment, protocol and cache status.
# TYPE warpdrive_query_bytes_total counter
# HELP warpdrive_result_bytes_total Bytes of result messages by deployment, protocol and cache status.
# TYPE warpdrive_result_bytes_total counter
# HELP warpdrive_cache_stale_served_total Hits served from a stale entry while it was refreshed.
# TYPE warpdrive_cache_stale_served_total counter
# HELP warpdrive_cache_coalesced_waits_total Misses that waited for another client's fetch of the same key.
# TYPE warpdrive_cache_coalesced_waits_total counter
# HELP warpdrive_cache_evictions_total Entries evicted to stay within capacity_bytes.
# TYPE warpdrive_cache_evictions_total counter
# HELP warpdrive_cache_entries Entries held.
# TYPE warpdrive_cache_entries gauge
# HELP warpdrive_cache_bytes Bytes held.
# TYPE warpdrive_cache_bytes gauge
# HELP warpdrive_pinned_sessions_total Clients pinned to their origin connection.
# TYPE warpdrive_pinned_sessions_total counter
# HELP warpdrive_cache_results_with_warnings_total Cacheable MySQL results not stored because they carried warnings.
# TYPE warpdrive_cache_results_with_warnings_total counter
# HELP warpdrive_cache_pinned_bypasses_total Cacheable queries of pinned clients, forwarded without the cache.
# TYPE warpdrive_cache_pinned_bypasses_total counter
# HELP warpdrive_catalog_reads_total Reads of the origin's catalog (functions, triggers) to judge code statements run.
# TYPE warpdrive_catalog_reads_total counter
# HELP warpdrive_catalog_read_failures_total Reads of the origin's catalog that failed.
# TYPE warpdrive_catalog_read_failures_total counter
# HELP warpdrive_invalid_startup_packets_total Connections closed without a word for a startup packet of an invalid length.
# TYPE warpdrive_invalid_startup_packets_total counter
# HELP warpdrive_origin_connections Origin connections open now.
# TYPE warpdrive_origin_connections gauge
# HELP warpdrive_origin_connections_opened_total Origin connections opened.
# TYPE warpdrive_origin_connections_opened_total counter
# HELP warpdrive_origin_connections_closed_total Origin connections closed.
# TYPE warpdrive_origin_connections_closed_total counter
# HELP warpdrive_pool_acquire_timeouts_total Checkouts that gave up after acquire_timeout.
# TYPE warpdrive_pool_acquire_timeouts_total counter
# HELP warpdrive_cache_invalidations_total Invalidations of cached reads, by cause (write: a write of named tables here; unknown_write: of the whole database; purge: a purge asked of this instance; remote: another instance's write; remote_purge: another instance's purge; resubscribe: everything, for a lost or renewed subscription to the upstream).
# TYPE warpdrive_cache_invalidations_total counter
# HELP warpdrive_cache_entries_invalidated_total Entries dropped because a write reached what they read.
# TYPE warpdrive_cache_entries_invalidated_total counter
# HELP warpdrive_cache_fills_refused_total Results not stored because a write reached what they read while their query ran.
# TYPE warpdrive_cache_fills_refused_total counter
# HELP warpdrive_cache_revalidations_total Background refreshes of stale entries.
# TYPE warpdrive_cache_revalidations_total counter
# HELP warpdrive_query_events_total Queries that completed or ended in an error.
# TYPE warpdrive_query_events_total counter
# HELP warpdrive_origin_connect_seconds Origin connection set-up time.
# TYPE warpdrive_origin_connect_seconds histogram
# HELP warpdrive_query_duration_seconds Time from a query's arrival to its ReadyForQuery.
# TYPE warpdrive_query_duration_seconds histogram
# HELP warpdrive_l2_lookups_total Lookups in the upstream tier (Redis) after a local miss, by outcome.
# TYPE warpdrive_l2_lookups_total counter
# HELP warpdrive_l2_failures_total Upstream tier operations without an answer (error, timeout), or not sent while it was down (skipped), and values refused as corrupt or of another format.
# TYPE warpdrive_l2_failures_total counter
# HELP warpdrive_l2_bytes_total Bytes of entries read from and written to the upstream tier.
# TYPE warpdrive_l2_bytes_total counter
# HELP warpdrive_l2_flight_waits_total Misses that waited for another instance's fetch of the same key (single flight across instances).
# TYPE warpdrive_l2_flight_waits_total counter
# HELP warpdrive_l2_connects_total Connections (with subscription) made to the upstream tier.
# TYPE warpdrive_l2_connects_total counter
# HELP warpdrive_l2_up Whether the upstream tier is reachable now.
# TYPE warpdrive_l2_up gauge
# HELP warpdrive_invalidation_propagation_seconds From another instance's write notice being sent to its arrival (clocks of both hosts).
# TYPE warpdrive_invalidation_propagation_seconds histogram
";

impl Registry {
    /// Adds a deployment.
    pub fn add(&mut self, metrics: Arc<DeploymentMetrics>) {
        self.deployments.push(metrics);
    }

    /// Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(HELP);
        for deployment in &self.deployments {
            deployment.render(&mut out);
        }
        out
    }

    /// Snapshots of every deployment.
    pub fn snapshots(&self) -> Vec<DeploymentSnapshot> {
        self.deployments.iter().map(|d| d.snapshot()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn counters_render_with_the_documented_names() {
        let metrics = DeploymentMetrics::new(
            "shop",
            Protocol::Postgres,
            Store::new(1 << 20, 1 << 10, Clock::system()),
        );
        metrics.record(CacheStatus::Hit, 10, 100, Duration::from_micros(50), false);
        metrics.record(CacheStatus::Hit, 10, 100, Duration::from_micros(70), false);
        metrics.record(CacheStatus::Miss, 10, 100, Duration::from_millis(3), true);
        let mut registry = Registry::default();
        registry.add(Arc::new(metrics));
        let text = registry.prometheus();
        assert!(
            text.contains("warpdrive_queries_total{deployment=\"shop\",protocol=\"postgresql\",cache_status=\"hit\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "warpdrive_result_bytes_total{deployment=\"shop\",protocol=\"postgresql\",cache_status=\"miss\"} 100"
        ));
        assert!(text.contains(
            "warpdrive_query_bytes_total{deployment=\"shop\",protocol=\"postgresql\",cache_status=\"volatile\"} 0"
        ));
        assert!(text.contains(
            "warpdrive_query_duration_seconds_bucket{deployment=\"shop\",le=\"0.0001\"} 2"
        ));
        assert!(text.contains("warpdrive_query_duration_seconds_count{deployment=\"shop\"} 3"));
        assert!(
            text.contains("warpdrive_query_events_total{deployment=\"shop\",outcome=\"error\"} 1")
        );
        let snapshot = &registry.snapshots()[0];
        assert!((snapshot.hit_ratio - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(snapshot.statuses[CacheStatus::Hit.index()].queries, 2);
    }
}
