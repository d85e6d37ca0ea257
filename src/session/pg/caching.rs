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

use super::Session;
use super::inflight::{Consulted, InFlight};
use super::request::{PgRefetch, Request};
use crate::analyze::Analysis;
use crate::cache::{Entry, KeyScope};
use crate::pool::pg::PgPool;
use crate::proxy::{self, Composer, Situation, ToRecord};
use crate::session::{SessionContext, SessionError};
use crate::wire::pg::backend::TransactionStatus;
use crate::wire::pg::encode;

/// The deployment's cache, as requests on `pool` see it.
pub(super) fn composer<'a>(ctx: &'a SessionContext, pool: &PgPool) -> Composer<'a> {
    Composer {
        store: &ctx.cache,
        settings: &ctx.deployment.cache,
        metrics: &ctx.metrics,
        refresh_deadline: pool.settings().max_query_duration,
    }
}

impl Session {
    /// The deployment's cache, as this session's requests see it.
    pub(super) fn composer(&self) -> Composer<'_> {
        composer(&self.ctx, &self.io.pool)
    }

    /// Where the client stands for the cache.
    pub(super) fn situation(&self) -> Situation {
        Situation {
            txn: self.status.into(),
            pinned: self.io.pinned().is_some(),
            behind_others: self.relay.awaits_origin(),
        }
    }

    /// Decides a request's status and, for a cacheable one, looks it up (waiting, bounded,
    /// when another client is fetching the same key).
    pub(super) async fn consult(
        &mut self,
        analysis: &Analysis,
        request: Request,
        query_bytes: usize,
        started: Instant,
    ) -> Consulted {
        let situation = self.situation();
        // What the read really runs (views, user functions, operators, …) decides, when
        // it could be cached at all.
        let refined = match self.composer().may_cache(situation) {
            true => self.catalog().refine_for_cache(analysis, started).await,
            false => None,
        };
        let analysis = refined.as_ref().unwrap_or(analysis);
        let composer = self.composer();
        let policy = match composer.decide(analysis, situation) {
            Ok(policy) => policy,
            Err(status) => {
                return Consulted::Forward(Box::new(InFlight::forwarded(
                    status,
                    query_bytes,
                    started,
                )));
            }
        };
        let settings = self.settings.current();
        let scope = KeyScope {
            deployment: &self.ctx.deployment.name,
            database: &self.database,
            role: &self.ctx.deployment.origin.user,
        };
        let key = request.key(scope, settings);
        let limit = self.ctx.deployment.cache.max_result_bytes;
        let tables: Arc<[String]> = analysis.tables_read.clone().into();
        let to_record = || ToRecord {
            recorder: request.recorder(limit),
            tables: Arc::clone(&tables),
            refetch: Arc::new(PgRefetch {
                pool: self.io.pool.clone(),
                settings: settings.clone(),
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
                Consulted::Forward(Box::new(InFlight::tracking(flight)))
            }
        }
    }

    /// Answers a simple query from an entry.
    pub(super) async fn answer_simple_hit(
        &mut self,
        entry: &Entry,
        query_bytes: usize,
        started: Instant,
    ) -> Result<(), SessionError> {
        let reply_starts = self.io.client.out.len();
        for segment in &entry.segments {
            self.io.client.out.extend_from_slice(segment);
        }
        self.finish_hit(reply_starts, query_bytes, started).await
    }

    /// Ends a reply from the cache that starts at `reply_starts` in the output buffer:
    /// ReadyForQuery, the count, the write.
    pub(super) async fn finish_hit(
        &mut self,
        reply_starts: usize,
        query_bytes: usize,
        started: Instant,
    ) -> Result<(), SessionError> {
        encode::ready_for_query(&mut self.io.client.out, TransactionStatus::Idle);
        let result_bytes = self.io.client.out.len() - reply_starts;
        // Counted before the reply leaves: whoever sees the reply sees the count.
        self.composer().served(query_bytes, result_bytes, started);
        self.io.client.flush().await?;
        Ok(())
    }
}
