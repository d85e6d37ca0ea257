//! Keeps a tier connected and subscribed while it lives: connects with backoff, listens
//! to the other instances' notices, checks the link every [`HEARTBEAT`], and starts
//! again when the link or the subscription drops, dropping what the instance holds
//! each time (it may have missed notices).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::servers::{CONNECT_TIMEOUT, redacted};
use super::{Tier, Written};

/// The shortest and longest wait before connecting again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often a live link is checked when nothing else is sent.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Keeps the tier connected and subscribed while it lives: connects with backoff,
/// listens to notices, checks the link every [`HEARTBEAT`], and starts again when the
/// link or the subscription drops.
pub(super) async fn supervise(tier: Weak<Tier>, broken: Arc<tokio::sync::Notify>) {
    let mut backoff = BACKOFF.0;
    let mut first = true;
    loop {
        let Some(live) = tier.upgrade() else { return };
        match live.connect().await {
            Ok((connection, sink, stream)) => {
                live.stats.connects.fetch_add(1, Ordering::Relaxed);
                // Subscribed first, then forgotten: no notice falls in between.
                live.forget_everything(!first);
                live.link.up(connection);
                if let Some(database) = live.first_owed() {
                    live.mark(&database, Written::Everything).await;
                }
                if !first {
                    tracing::info!(upstream = %redacted(&live.settings.url), "cache upstream reachable again");
                }
                first = false;
                backoff = BACKOFF.0;
                drop(live);
                listen(&tier, &broken, sink, stream).await;
                let Some(live) = tier.upgrade() else { return };
                let _was_up = live.link.down();
                live.forget_everything(true);
                live.log_failure("the connection (or the subscription to other instances' writes) was lost; this instance's cached results were dropped");
            }
            Err(error) => {
                live.log_failure(&format!("connecting failed: {error}"));
                drop(live);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Hears notices until the subscription or the link drops, or the tier is gone.
async fn listen(
    tier: &Weak<Tier>,
    broken: &tokio::sync::Notify,
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let (Some(message), Some(live)) = (message, tier.upgrade()) else { return };
                live.heard(message.get_payload_bytes());
            }
            _ = heartbeat.tick() => {
                if tier.strong_count() == 0 {
                    return;
                }
                let ping = tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
            _ = broken.notified() => return,
        }
    }
}
