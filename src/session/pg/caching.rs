//! The cache in a session: a status for every request, lookups, hits answered without
//! the origin, misses recorded and stored, stale entries refreshed in the background.
//!
//! A request is a simple query or an extended-protocol batch up to Sync. Its status is
//! decided by [`crate::proxy::policy::decide`]; a cacheable request is looked up only when
//! nothing of this client is in flight at the origin (a request pipelined behind others
//! may run in a transaction they open, or with settings they change, which the key would
//! not show), and only when the client is not pinned to its connection (it may read its
//! own temporary tables, or settings set with set_config()).
//!
//! Before it is looked up, a read is refined with the origin's catalog (see
//! [`super::catalog`]): a view over a volatile function is volatile, a user function its
//! owner declared immutable is cacheable, and the base tables of views count as read.
//!
//! A hit produces exactly the replies the client's own messages call for: the entry
//! holds only result messages, and ParseComplete, BindComplete, CloseComplete and
//! ReadyForQuery are synthesised per the client's batch.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::catalog::CatalogView;
use super::inflight::{Consulted, InFlight};
use super::request::{PgRefetch, Request};
use crate::analyze::Analysis;
use crate::cache::{Entry, Generations, KeyScope};
use crate::pool::pg::PgPool;
use crate::proxy::{self, Composer, Situation, ToRecord};
use crate::session::SessionContext;
use crate::session::settings::SettingMap;
use crate::wire::pg::backend::TransactionStatus;
use crate::wire::pg::encode;

/// The deployment's cache, as requests on `pool` see it, with the write clock of the
/// pool's database.
pub(super) fn composer<'a>(
    ctx: &'a SessionContext,
    pool: &'a PgPool,
    generations: &'a Arc<Generations>,
) -> Composer<'a> {
    let database = &pool.target().target.database;
    ctx.composer(database, generations, pool.settings().max_query_duration)
}

/// A client's request as the cache sees it.
pub(super) struct Consult<'a> {
    pub(super) ctx: &'a SessionContext,
    /// The pool of the client's database (refetches run there).
    pub(super) pool: &'a PgPool,
    /// The origin database.
    pub(super) database: &'a str,
    /// Its write clock.
    pub(super) generations: &'a Arc<Generations>,
    /// The client's settings.
    pub(super) settings: &'a SettingMap,
    /// Where the client stands.
    pub(super) situation: Situation,
    /// The origin's catalog, as the session asks it.
    pub(super) catalog: CatalogView<'a>,
}

impl Consult<'_> {
    /// Decides a request's status and, for a cacheable one, looks it up (waiting, bounded,
    /// when another client is fetching the same key).
    pub(super) async fn consult(
        &self,
        analysis: &Analysis,
        request: Request,
        query_bytes: usize,
        started: Instant,
    ) -> Consulted {
        let composer = composer(self.ctx, self.pool, self.generations);
        // What the read really runs (views, user functions, operators, …) decides, when
        // it could be cached at all.
        let refined = match composer.may_cache(self.situation) {
            true => self.catalog.refine_for_cache(analysis, started).await,
            false => None,
        };
        let analysis = refined.as_ref().unwrap_or(analysis);
        let policy = match composer.decide(analysis, self.situation) {
            Ok(policy) => policy,
            Err(status) => {
                return Consulted::Forward(Box::new(InFlight::forwarded(
                    status,
                    query_bytes,
                    started,
                )));
            }
        };
        let scope = KeyScope {
            deployment: &self.ctx.deployment.name,
            database: self.database,
            role: &self.ctx.deployment.origin.user,
        };
        let key = request.key(scope, self.settings);
        let limit = self.ctx.deployment.cache.max_result_bytes;
        let tables: Arc<[String]> = analysis.tables_read.clone().into();
        let to_record = || ToRecord {
            recorder: request.recorder(limit),
            tables: Arc::clone(&tables),
            tables_unknown: analysis.reads_unknown_tables,
            refetch: Arc::new(PgRefetch {
                pool: self.pool.clone(),
                settings: self.settings.clone(),
                request: request.clone(),
                limit,
            }),
        };
        match composer
            .lookup(key, policy, query_bytes, started, to_record)
            .await
        {
            proxy::Consulted::Hit(entry) => Consulted::Hit(entry, ()),
            proxy::Consulted::Forward(flight) => {
                Consulted::Forward(Box::new(InFlight::tracking(*flight)))
            }
        }
    }
}

/// Writes the reply to a simple query answered from `entry`.
pub(super) fn write_simple_hit(out: &mut BytesMut, entry: &Entry) {
    for segment in &entry.segments {
        out.extend_from_slice(segment);
    }
}

/// Ends a reply from the cache that starts at `reply_starts` in `out` with its
/// ReadyForQuery, and counts it (before it leaves: whoever sees the reply sees the count).
pub(super) fn end_hit(
    out: &mut BytesMut,
    composer: &Composer<'_>,
    reply_starts: usize,
    query_bytes: usize,
    started: Instant,
) {
    encode::ready_for_query(out, TransactionStatus::Idle);
    composer.served(query_bytes, out.len() - reply_starts, started);
}
