//! The query-result cache: keys, entries with their freshness, and the bounded store
//! with single flight.
//!
//! Protocol-blind and pure: no sockets, no SQL, no wire formats, no configuration. A key
//! hashes canonical parts the protocol module supplies; an entry holds the origin's
//! response bytes (in segments the protocol chose) and an opaque way to fetch them
//! again; the protocol turns them back into the replies a client's own messages call
//! for. Which queries are cached and for how long is decided in [`crate::proxy`].

pub mod entry;
pub mod invalidation;
pub mod key;
pub mod store;
pub mod tier;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use entry::{Entry, Freshness, Recorded, Refetch, RefetchError, RefetchFuture};
pub use invalidation::{Clocks, Generations, Validity, Written};
pub use key::{CacheKey, KeyBuilder, KeyScope};
pub use store::{FillGuard, Lookup, RevalidationGuard, Store, StoreStats};

/// The cache status of a query, exactly as Cloudflare Hyperdrive names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Caching is off for the deployment, a rule or a hint.
    Disabled,
    /// Answered from the cache (fresh, or stale within stale_while_revalidate).
    Hit,
    /// Cacheable, not in the cache: answered by the origin and stored.
    Miss,
    /// Not a plain read (writes, DDL, locking reads, …).
    Uncacheable,
    /// Several statements in one query string.
    MultipleStatements,
    /// Session, transaction-control and informational statements.
    NotAQuery,
    /// Query text above the size limit.
    OversizedQuery,
    /// Result above max_result_bytes: streamed, not stored.
    OversizedResult,
    /// The analyzer could not parse it.
    ParseError,
    /// Inside a transaction.
    Transaction,
    /// Reads something that can change without a write.
    Volatile,
}

impl CacheStatus {
    /// Every status, in the order metrics list them.
    pub const ALL: [CacheStatus; 11] = [
        CacheStatus::Disabled,
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Uncacheable,
        CacheStatus::MultipleStatements,
        CacheStatus::NotAQuery,
        CacheStatus::OversizedQuery,
        CacheStatus::OversizedResult,
        CacheStatus::ParseError,
        CacheStatus::Transaction,
        CacheStatus::Volatile,
    ];

    /// The status's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            CacheStatus::Disabled => "disabled",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Uncacheable => "uncacheable",
            CacheStatus::MultipleStatements => "multiplestatements",
            CacheStatus::NotAQuery => "notaquery",
            CacheStatus::OversizedQuery => "oversizedquery",
            CacheStatus::OversizedResult => "oversizedresult",
            CacheStatus::ParseError => "parseerror",
            CacheStatus::Transaction => "transaction",
            CacheStatus::Volatile => "volatile",
        }
    }

    /// Position in [`CacheStatus::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_indexed_in_order() {
        for (index, status) in CacheStatus::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), index);
        }
    }
}
