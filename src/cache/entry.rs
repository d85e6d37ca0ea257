//! Cache entries, their freshness, and the opaque way to fetch one again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::invalidation::Validity;
use super::tier::TierStamp;

/// How a recording of an origin reply ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A complete result: its segments, and whether it had rows.
    Complete {
        /// The entry's segments.
        segments: Vec<Bytes>,
        /// Whether any row was seen.
        has_rows: bool,
    },
    /// Above max_result_bytes: streamed to the client, not kept.
    Oversized,
    /// Something made the reply unfit for the cache (an error, a notice, …).
    Unusable,
}

/// Why a refetch failed, in the protocol's own words.
pub type RefetchError = Box<dyn std::error::Error + Send + Sync>;

/// A refetch in progress.
pub type RefetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Recorded, RefetchError>> + Send + 'a>>;

/// How to run an entry's request again, supplied by the protocol that stored it: the
/// cache only holds it, weighs it, and hands it to whoever refreshes a stale entry.
pub trait Refetch: Send + Sync + fmt::Debug {
    /// Bytes it holds, counted in the entry's weight.
    fn weight(&self) -> usize;
    /// Runs the request at the origin again and records its reply.
    fn fetch(&self) -> RefetchFuture<'_>;
}

/// How fresh an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than max_age.
    Fresh,
    /// Past max_age, within stale_while_revalidate: served while it is refreshed.
    Stale,
    /// Too old to serve.
    Expired,
}

/// A stored result.
#[derive(Debug)]
pub struct Entry {
    /// The origin's response bytes, in the segments the protocol recorded them in.
    pub segments: Vec<Bytes>,
    /// When its request was sent to the origin (cache clock): the age of the data, which
    /// the origin read after that, is never more than its age by this.
    pub stored_at: Duration,
    /// Fresh for this long.
    pub max_age: Duration,
    /// Then served stale for this long while refreshed.
    pub stale_while_revalidate: Duration,
    /// The relations it read (for invalidation).
    pub tables: Arc<[String]>,
    /// It ran code whose reads warpdrive does not know: `tables` is not all it read.
    pub tables_unknown: bool,
    /// Whether writes since its query started left it current; `None` when the
    /// deployment does not invalidate on writes.
    pub validity: Option<Validity>,
    /// The generations in the upstream tier of what it read, when its query started;
    /// `None` without a tier, or when the tier did not answer.
    pub tier_stamp: Option<TierStamp>,
    /// How to fetch it again.
    pub refetch: Arc<dyn Refetch>,
}

/// Bookkeeping counted in every entry's weight besides its bytes.
const OVERHEAD: usize = 256;

impl Entry {
    /// Whether no write since its query started reached what it read.
    pub fn is_current(&self) -> bool {
        self.validity
            .as_ref()
            .is_none_or(|validity| validity.is_current(&self.tables, self.tables_unknown))
    }

    /// Its freshness at `now`. Durations saturate: an entry never becomes fresh again.
    pub fn freshness(&self, now: Duration) -> Freshness {
        let age = now.saturating_sub(self.stored_at);
        if age < self.max_age {
            Freshness::Fresh
        } else if age < self.max_age.saturating_add(self.stale_while_revalidate) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// Bytes of result data held.
    pub fn result_bytes(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    /// Its weight in the store: the result, the refetch, and bookkeeping.
    pub fn weight(&self) -> u64 {
        (self.result_bytes() + self.refetch.weight() + OVERHEAD) as u64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A refetch that answers with a fixed result, or fails.
    #[derive(Debug)]
    pub(crate) struct FixedRefetch(pub Option<&'static [u8]>);

    impl Refetch for FixedRefetch {
        fn weight(&self) -> usize {
            100
        }

        fn fetch(&self) -> RefetchFuture<'_> {
            let result = self.0;
            Box::pin(async move {
                match result {
                    Some(bytes) => Ok(Recorded::Complete {
                        segments: vec![Bytes::from_static(bytes)],
                        has_rows: true,
                    }),
                    None => Err("the origin is gone".into()),
                }
            })
        }
    }

    fn entry(stored_at: u64, max_age: u64, swr: u64) -> Entry {
        Entry {
            segments: vec![Bytes::from_static(b"rows")],
            stored_at: Duration::from_secs(stored_at),
            max_age: Duration::from_secs(max_age),
            stale_while_revalidate: Duration::from_secs(swr),
            tables: Arc::from(Vec::new()),
            tables_unknown: false,
            validity: None,
            tier_stamp: None,
            refetch: Arc::new(FixedRefetch(None)),
        }
    }

    #[test]
    fn freshness_boundaries() {
        let e = entry(100, 60, 15);
        let at = |s| e.freshness(Duration::from_secs(s));
        assert_eq!(at(100), Freshness::Fresh);
        assert_eq!(at(159), Freshness::Fresh);
        assert_eq!(at(160), Freshness::Stale);
        assert_eq!(at(174), Freshness::Stale);
        assert_eq!(at(175), Freshness::Expired);
        // A clock reading before the store time saturates to age zero.
        assert_eq!(at(0), Freshness::Fresh);
        assert_eq!(
            entry(0, 10, 0).freshness(Duration::from_secs(10)),
            Freshness::Expired
        );
    }

    #[test]
    fn weight_is_the_result_the_refetch_and_the_overhead() {
        let mut e = entry(0, 1, 1);
        assert_eq!(e.weight(), 4 + 100 + 256);
        e.segments.push(Bytes::from_static(b"more rows"));
        assert_eq!(e.weight(), 4 + 9 + 100 + 256);
    }
}
