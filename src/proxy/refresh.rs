//! Stale-while-revalidate: a stale entry served to a client is fetched again in the
//! background, through the refetch its protocol stored with it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::policy::{Policy, Source};
use super::upstream::Upstream;
use crate::cache::tier::Tier;
use crate::cache::{Entry, Recorded, RevalidationGuard, Store, Validity};
use crate::metrics::DeploymentMetrics;

/// Refreshes `stale` in the background, within `deadline`, and stores the new entry in
/// the upstream tier too when there is one (`upstream`: the tier and the database). A
/// failure leaves the stale entry in place until it expires.
pub(super) fn spawn(
    store: Arc<Store>,
    refresh: RevalidationGuard,
    stale: Arc<Entry>,
    policy: Policy,
    deadline: Duration,
    metrics: Arc<DeploymentMetrics>,
    upstream: Option<(Arc<Tier>, String)>,
) {
    tokio::spawn(async move {
        let requested_at = store.clock().now();
        let validity = stale.validity.as_ref().map(Validity::restarted);
        let tier_stamp = match &upstream {
            Some((tier, database)) => tier.stamp(database, &stale.tables).await,
            None => None,
        };
        let fetched = tokio::time::timeout(deadline, stale.refetch.fetch()).await;
        let reason = match fetched {
            Ok(Ok(Recorded::Complete { segments, has_rows })) => {
                let source = Source {
                    tables: Arc::clone(&stale.tables),
                    tables_unknown: stale.tables_unknown,
                    validity,
                    tier_stamp,
                    refetch: Arc::clone(&stale.refetch),
                };
                let refreshed = Arc::new(policy.entry(segments, has_rows, requested_at, source));
                let key = refresh.key();
                if refresh.fill(Arc::clone(&refreshed)) {
                    metrics.revalidations_ok.fetch_add(1, Ordering::Relaxed);
                    if let Some((tier, database)) = &upstream {
                        let upstream = Upstream { tier, database };
                        upstream.store(key, &refreshed, store.clock().now(), None);
                    }
                    return;
                }
                "a write reached what it read while it ran (the next read fetches it again)"
                    .to_owned()
            }
            Ok(Ok(_)) => {
                "the origin's answer could not be cached (an error, a notice, or too large)"
                    .to_owned()
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "it ran longer than max_query_duration".to_owned(),
        };
        tracing::info!(%reason, "revalidation of a stale cache entry failed; the entry is served until it expires");
        metrics.revalidations_failed.fetch_add(1, Ordering::Relaxed);
    });
}
