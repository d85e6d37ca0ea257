//! Cache entries and their freshness.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Which kind of Describe a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Described {
    /// Describe of the statement: ParameterDescription, then RowDescription or NoData.
    Statement,
    /// Describe of the portal: RowDescription or NoData.
    Portal,
}

/// A cacheable request, as needed both for its key and to run it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A simple-protocol query.
    Simple {
        /// Its text.
        sql: Bytes,
    },
    /// One extended-protocol execution.
    Extended {
        /// The statement's text.
        sql: Bytes,
        /// Parameter type OIDs as the client sent them in Parse.
        parameter_types: Bytes,
        /// The Bind's parameter formats, values and result formats.
        arguments: Bytes,
        /// The Describes in the batch, in order (each is one segment of the entry, before
        /// the Execute's).
        describes: Vec<Described>,
    },
}

/// What a background revalidation needs to run a request again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRequest {
    /// Origin database.
    pub database: String,
    /// The client's settings: name → the statement that sets it.
    pub settings: std::collections::BTreeMap<String, String>,
    /// The request.
    pub request: Request,
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
    /// The origin's messages: one segment per Describe answered, then the Execute's (rows
    /// and CommandComplete); one segment in all for a simple query.
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
    /// How to fetch it again.
    pub request: Arc<CachedRequest>,
}

impl Entry {
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

    /// Its weight in the store: the result plus bookkeeping.
    pub fn weight(&self) -> u64 {
        const OVERHEAD: usize = 256;
        let request = match &self.request.request {
            Request::Simple { sql } => sql.len(),
            Request::Extended { sql, arguments, .. } => sql.len() + arguments.len(),
        };
        (self.result_bytes() + request + OVERHEAD) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stored_at: u64, max_age: u64, swr: u64) -> Entry {
        Entry {
            segments: vec![Bytes::from_static(b"rows")],
            stored_at: Duration::from_secs(stored_at),
            max_age: Duration::from_secs(max_age),
            stale_while_revalidate: Duration::from_secs(swr),
            tables: Arc::from(Vec::new()),
            request: Arc::new(CachedRequest {
                database: "db".into(),
                settings: Default::default(),
                request: Request::Simple {
                    sql: Bytes::from_static(b"SELECT 1"),
                },
            }),
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
    fn weight_counts_the_result() {
        assert!(entry(0, 1, 1).weight() >= 4);
    }
}
