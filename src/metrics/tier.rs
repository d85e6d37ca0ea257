//! The upstream tier's counters, beside a deployment's: Prometheus lines and the
//! snapshot `/stats` and `warpdrive stats` show.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::cache::tier::Tier;

pub(super) fn render_tier(out: &mut String, d: &str, tier: &Tier) {
    let stats = tier.stats();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let labelled = [
        ("warpdrive_l2_lookups_total", "outcome", "hit", &stats.hits),
        (
            "warpdrive_l2_lookups_total",
            "outcome",
            "miss",
            &stats.misses,
        ),
        (
            "warpdrive_l2_failures_total",
            "kind",
            "error",
            &stats.errors,
        ),
        (
            "warpdrive_l2_failures_total",
            "kind",
            "timeout",
            &stats.timeouts,
        ),
        (
            "warpdrive_l2_failures_total",
            "kind",
            "skipped",
            &stats.skipped,
        ),
        (
            "warpdrive_l2_failures_total",
            "kind",
            "refused_value",
            &stats.refused_values,
        ),
        (
            "warpdrive_l2_bytes_total",
            "direction",
            "read",
            &stats.bytes_read,
        ),
        (
            "warpdrive_l2_bytes_total",
            "direction",
            "written",
            &stats.bytes_written,
        ),
        (
            "warpdrive_cache_invalidations_total",
            "cause",
            "remote",
            &stats.invalidations_remote,
        ),
        (
            "warpdrive_cache_invalidations_total",
            "cause",
            "resubscribe",
            &stats.invalidations_resubscribe,
        ),
    ];
    for (metric, label, value, counter) in labelled {
        let _ = writeln!(
            out,
            "{metric}{{deployment=\"{d}\",{label}=\"{value}\"}} {}",
            load(counter)
        );
    }
    let _ = writeln!(
        out,
        "warpdrive_l2_flight_waits_total{{deployment=\"{d}\"}} {}",
        load(&stats.flight_waits)
    );
    let _ = writeln!(
        out,
        "warpdrive_l2_connects_total{{deployment=\"{d}\"}} {}",
        load(&stats.connects)
    );
    let _ = writeln!(
        out,
        "warpdrive_l2_up{{deployment=\"{d}\"}} {}",
        u8::from(tier.is_up())
    );
    stats
        .propagation
        .render(out, "warpdrive_invalidation_propagation_seconds", d);
}

/// The upstream tier's numbers, in a deployment's snapshot.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TierSnapshot {
    /// Redis is reachable now.
    pub up: bool,
    /// Lookups that found a current entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Failed operations.
    pub errors: u64,
    /// Operations with no answer within the timeout.
    pub timeouts: u64,
    /// Operations not sent while Redis was down.
    pub skipped: u64,
    /// Corrupt, foreign or old-format values.
    pub refused_values: u64,
    /// Bytes of entries read.
    pub bytes_read: u64,
    /// Bytes of entries written.
    pub bytes_written: u64,
    /// Other instances' writes heard of.
    pub invalidations_remote: u64,
    /// Entries dropped for a lost or renewed subscription.
    pub invalidations_resubscribe: u64,
    /// Other instances' purges heard of.
    pub invalidations_purge: u64,
    /// Connections made.
    pub connects: u64,
    /// Misses that waited for another instance's fetch.
    pub flight_waits: u64,
    /// Remote invalidations whose propagation delay was measured.
    pub propagation_count: u64,
}

impl TierSnapshot {
    pub(super) fn of(tier: &Tier) -> TierSnapshot {
        let stats = tier.stats();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TierSnapshot {
            up: tier.is_up(),
            hits: load(&stats.hits),
            misses: load(&stats.misses),
            errors: load(&stats.errors),
            timeouts: load(&stats.timeouts),
            skipped: load(&stats.skipped),
            refused_values: load(&stats.refused_values),
            bytes_read: load(&stats.bytes_read),
            bytes_written: load(&stats.bytes_written),
            invalidations_remote: load(&stats.invalidations_remote),
            invalidations_resubscribe: load(&stats.invalidations_resubscribe),
            invalidations_purge: load(&stats.invalidations_purge),
            connects: load(&stats.connects),
            flight_waits: load(&stats.flight_waits),
            propagation_count: stats.propagation.count(),
        }
    }
}
