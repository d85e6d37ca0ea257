//! The cache in a session: a status for every request, lookups, hits answered without
//! the origin, misses recorded and stored, stale entries refreshed in the background.
//!
//! A request is a simple query or an extended-protocol batch up to Sync. Its status is
//! decided by [`crate::cache::policy::decide`]; a cacheable request is looked up only when
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
use std::time::{Duration, Instant};

use super::extended::Unsynced;
use super::recorder::{Recorded, Recorder};
use super::settings::Outcome;
use super::{Session, SessionError, apply_settings};
use crate::analyze::{Analysis, SessionEffect};
use crate::cache::policy::{Decision, Policy, decide};
use crate::cache::{
    CacheKey, CacheStatus, CachedRequest, Described, Entry, FillGuard, KeyInputs, Lookup, Request,
    RevalidationGuard, Store,
};
use crate::conn::ConnError;
use crate::metrics::DeploymentMetrics;
use crate::pool::{ConnState, Pool};
use crate::wire::pg::backend::{BackendMessage, TransactionStatus, tag};
use crate::wire::pg::frontend::Target;
use crate::wire::pg::{Frame, encode};

/// The longest a miss waits for another client's fetch of the same key before going to
/// the origin itself.
const COALESCE_WAIT: Duration = Duration::from_secs(5);

/// Where a recorded result goes.
pub(super) enum Fill {
    /// The single-flight claim on the key.
    Guard(FillGuard),
    /// Straight into the store (the cache was not consulted first).
    Key(CacheKey),
}

/// A result being recorded for the cache.
pub(super) struct Recording {
    recorder: Recorder,
    fill: Fill,
    /// When the request was sent (cache clock): the result is as old as that, however
    /// long the origin took, so its lifetime starts there.
    requested_at: Duration,
    policy: Policy,
    tables: Arc<[String]>,
    request: Arc<CachedRequest>,
}

/// A request sent to the origin, until its ReadyForQuery.
pub(super) struct InFlight {
    status: CacheStatus,
    query_bytes: usize,
    result_bytes: usize,
    started: Instant,
    failed: bool,
    recording: Option<Recording>,
    /// What its statements do to the session, one list per statement in order; settled
    /// at ReadyForQuery.
    effects: Vec<Vec<SessionEffect>>,
    /// Statements completed so far.
    completed: usize,
    /// Why code it runs may change the session (the catalog's judgement): each pins the
    /// client at its end.
    pins: Vec<String>,
}

/// What a request did, once its ReadyForQuery arrived.
pub(super) struct Finished {
    /// Its session effects, one list per statement in order.
    pub(super) effects: Vec<Vec<SessionEffect>>,
    /// Why code it ran may have changed the session.
    pub(super) pins: Vec<String>,
    /// What the origin said of it.
    pub(super) outcome: Outcome,
}

impl InFlight {
    /// Its status so far.
    pub(super) fn status(&self) -> CacheStatus {
        self.status
    }

    /// A request that is forwarded with this status and not recorded.
    pub(super) fn forwarded(status: CacheStatus, query_bytes: usize, started: Instant) -> InFlight {
        InFlight {
            status,
            query_bytes,
            result_bytes: 0,
            started,
            failed: false,
            recording: None,
            effects: Vec::new(),
            completed: 0,
            pins: Vec::new(),
        }
    }

    /// Code the request runs may change the session: the client is pinned at its end,
    /// and its result, which may depend on that change, is not stored (a cacheable
    /// request becomes `volatile`).
    pub(super) fn changes_session(&mut self, why: String) {
        self.pins.push(why);
        if self.recording.take().is_some() || self.status == CacheStatus::Miss {
            self.status = CacheStatus::Volatile;
        }
    }

    /// Whether this request may change the setting `name` (code it runs may change any).
    pub(super) fn may_change_setting(&self, name: &str) -> bool {
        !self.pins.is_empty()
            || self
                .effects
                .iter()
                .flatten()
                .any(|effect| effect.may_change_setting(name))
    }

    /// Adds the statements this request runs, by their effects.
    pub(super) fn runs(&mut self, effects: &[Vec<SessionEffect>]) {
        self.effects.extend(effects.iter().cloned());
    }

    /// Takes in the messages of this request sent before its Sync.
    pub(super) fn absorb(&mut self, unsynced: Unsynced) {
        self.failed |= unsynced.failed;
        self.completed += unsynced.completed;
        self.pins.extend(unsynced.pins);
        let mut effects = unsynced.effects;
        effects.append(&mut self.effects);
        self.effects = effects;
    }
}

/// What the cache says about a request.
pub(super) enum Consulted<T = ()> {
    /// Answer with this entry (and what the caller needs to).
    Hit(Arc<Entry>, T),
    /// Send it to the origin, tracked by this.
    Forward(Box<InFlight>),
}

impl Session {
    /// Decides a request's status and, for a cacheable one, looks it up (waiting, bounded,
    /// when another client is fetching the same key).
    pub(super) async fn consult(
        &mut self,
        analysis: &Analysis,
        request: Request,
        describes_for_recorder: Option<Vec<Described>>,
        query_bytes: usize,
        started: Instant,
    ) -> Consulted {
        let in_transaction = self.status != TransactionStatus::Idle;
        // What the read really runs (views, user functions, operators, …) decides, when
        // it could be cached at all.
        let may_cache = self.ctx.deployment.cache.enabled
            && !in_transaction
            && self.pinned.is_none()
            && !self.relay.awaits_origin();
        let refined = match may_cache {
            true => self.refine_for_cache(analysis, started).await,
            false => None,
        };
        let analysis = refined.as_ref().unwrap_or(analysis);
        let decision = match decide(&self.ctx.deployment.cache, analysis, in_transaction).0 {
            // A pinned session may read its own temporary tables, or settings set with
            // set_config() that are not in the key: its reads are its own.
            Decision::Cache(_) if self.pinned.is_some() => {
                self.ctx
                    .metrics
                    .pinned_bypasses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Decision::Refuse(CacheStatus::Uncacheable)
            }
            // Pipelined behind requests in flight: those may change the settings the key
            // is made of, or open a transaction. Forwarded, not looked up or stored.
            Decision::Cache(_) if self.relay.awaits_origin() => Decision::Refuse(CacheStatus::Miss),
            decision => decision,
        };
        let policy = match decision {
            Decision::Refuse(status) => {
                return Consulted::Forward(Box::new(InFlight::forwarded(
                    status,
                    query_bytes,
                    started,
                )));
            }
            Decision::Cache(policy) => policy,
        };
        let key = KeyInputs {
            deployment: &self.ctx.deployment.name,
            database: &self.database,
            role: &self.ctx.deployment.origin.user,
            settings: self.settings.current(),
            request: &request,
        }
        .key();
        let limit = self.ctx.deployment.cache.max_result_bytes;
        // What a fetched result needs to be stored and refreshed; built on a miss only.
        let settings = self.settings.current();
        let database = &self.database;
        let clock = self.ctx.cache.clock();
        let recording = |fill: Fill| {
            let request = Arc::new(CachedRequest {
                database: database.clone(),
                settings: settings.clone(),
                request: request.clone(),
            });
            let recorder = match &describes_for_recorder {
                Some(describes) => Recorder::extended(describes.clone(), limit),
                None => Recorder::simple(limit),
            };
            InFlight {
                recording: Some(Recording {
                    recorder,
                    fill,
                    requested_at: clock.now(),
                    policy,
                    tables: analysis.tables_read.clone().into(),
                    request,
                }),
                ..InFlight::forwarded(CacheStatus::Miss, query_bytes, started)
            }
        };

        let deadline = tokio::time::Instant::now() + COALESCE_WAIT;
        let mut waited = false;
        loop {
            match self.ctx.cache.lookup(key) {
                Lookup::Fresh(entry) => return Consulted::Hit(entry, ()),
                Lookup::Stale(entry, refresh) => {
                    self.ctx
                        .metrics
                        .stale_served
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(refresh) = refresh {
                        self.spawn_revalidation(refresh, Arc::clone(&entry), policy);
                    }
                    return Consulted::Hit(entry, ());
                }
                Lookup::Miss(guard) if waited => {
                    // The fetch waited for ended without an entry (too large, an error, a
                    // notice, its client gone): each waiter now asks the origin itself, at
                    // once and unrecorded, rather than one after another.
                    drop(guard);
                    return Consulted::Forward(Box::new(InFlight::forwarded(
                        CacheStatus::Miss,
                        query_bytes,
                        started,
                    )));
                }
                Lookup::Miss(guard) => {
                    return Consulted::Forward(Box::new(recording(Fill::Guard(guard))));
                }
                Lookup::Wait(mut flight) => {
                    if !waited {
                        self.ctx
                            .metrics
                            .coalesced_waits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        waited = true;
                    }
                    if tokio::time::timeout_at(deadline, flight.changed())
                        .await
                        .is_err()
                    {
                        return Consulted::Forward(Box::new(recording(Fill::Key(key))));
                    }
                }
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
        let reply_starts = self.client.out.len();
        for segment in &entry.segments {
            self.client.out.extend_from_slice(segment);
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
        encode::ready_for_query(&mut self.client.out, TransactionStatus::Idle);
        let result_bytes = self.client.out.len() - reply_starts;
        // Counted before the reply leaves: whoever sees the reply sees the count.
        self.ctx.metrics.record(
            CacheStatus::Hit,
            query_bytes,
            result_bytes,
            started.elapsed(),
            false,
        );
        self.client.flush().await?;
        Ok(())
    }

    /// Counts a result message sent to the client, and records it if its request is
    /// being recorded. A recording that gives up lets go of its single-flight claim at
    /// once: clients waiting for it need not wait for the rest of a result that will not
    /// be stored.
    pub(super) fn note_result(&mut self, frame: &Frame) {
        if let Some(request) = self.requests.front_mut() {
            request.result_bytes += frame.len();
            if let Some(recording) = request.recording.as_mut()
                && frame.tag() != tag::READY_FOR_QUERY
            {
                recording.recorder.accept(frame);
                if let Some(outcome) = recording.recorder.gave_up() {
                    if outcome == Recorded::Oversized {
                        request.status = CacheStatus::OversizedResult;
                    }
                    request.recording = None;
                }
            }
        }
    }

    /// The origin (or warpdrive) reported an error for the request at the front, or for
    /// messages sent before a Sync not sent yet. A failed request is never stored.
    pub(super) fn note_failure(&mut self) {
        match self.requests.front_mut() {
            Some(request) => {
                request.failed = true;
                request.recording = None;
            }
            None => self.unsynced.failed = true,
        }
    }

    /// A statement of the request at the front (or of messages sent before a Sync not
    /// sent yet) completed.
    pub(super) fn note_completed(&mut self) {
        match self.requests.front_mut() {
            Some(request) => request.completed += 1,
            None => self.unsynced.completed += 1,
        }
    }

    /// ReadyForQuery ended the request at the front: store its result if it is whole and
    /// was produced outside a transaction, and count it.
    pub(super) fn finish_request(&mut self, ready: TransactionStatus) -> Finished {
        let Some(request) = self.requests.pop_front() else {
            return Finished {
                effects: Vec::new(),
                pins: Vec::new(),
                outcome: Outcome {
                    failed: false,
                    completed: 0,
                    in_transaction: ready != TransactionStatus::Idle,
                },
            };
        };
        let mut status = request.status;
        if let Some(recording) = request.recording {
            match recording.recorder.finish() {
                Recorded::Complete { segments, has_rows }
                    if !request.failed && ready == TransactionStatus::Idle =>
                {
                    let entry = Entry {
                        segments,
                        stored_at: recording.requested_at,
                        max_age: if has_rows {
                            recording.policy.max_age
                        } else {
                            recording.policy.empty_max_age
                        },
                        stale_while_revalidate: recording.policy.stale_while_revalidate,
                        tables: recording.tables,
                        request: recording.request,
                    };
                    match recording.fill {
                        Fill::Guard(guard) => guard.fill(entry),
                        Fill::Key(key) => self.ctx.cache.insert(key, entry),
                    }
                }
                Recorded::Oversized => status = CacheStatus::OversizedResult,
                _ => {}
            }
        }
        if status == CacheStatus::Miss && ready != TransactionStatus::Idle {
            // Pipelined behind a BEGIN: it ran inside the transaction.
            status = CacheStatus::Transaction;
        }
        self.ctx.metrics.record(
            status,
            request.query_bytes,
            request.result_bytes,
            request.started.elapsed(),
            request.failed,
        );
        Finished {
            effects: request.effects,
            pins: request.pins,
            outcome: Outcome {
                failed: request.failed,
                completed: request.completed,
                in_transaction: ready != TransactionStatus::Idle,
            },
        }
    }

    /// Ends every request in flight as failed (the origin connection is gone).
    pub(super) fn abandon_requests(&mut self) {
        while let Some(mut request) = self.requests.pop_front() {
            request.failed = true;
            request.recording = None;
            self.ctx.metrics.record(
                request.status,
                request.query_bytes,
                request.result_bytes,
                request.started.elapsed(),
                true,
            );
        }
    }

    fn spawn_revalidation(&self, refresh: RevalidationGuard, entry: Arc<Entry>, policy: Policy) {
        let pool = self.pool.clone();
        let metrics = Arc::clone(&self.ctx.metrics);
        let store = Arc::clone(&self.ctx.cache);
        let limit = self.ctx.deployment.cache.max_result_bytes;
        tokio::spawn(revalidate(
            pool, store, refresh, entry, policy, limit, metrics,
        ));
    }
}

/// Fetches a stale entry again on a pooled connection and stores the fresh result. A
/// failure leaves the stale entry in place until it expires.
async fn revalidate(
    pool: Pool,
    store: Arc<Store>,
    refresh: RevalidationGuard,
    stale: Arc<Entry>,
    policy: Policy,
    limit: usize,
    metrics: Arc<DeploymentMetrics>,
) {
    let deadline = pool.settings().max_query_duration;
    let requested_at = store.clock().now();
    let fetched = tokio::time::timeout(deadline, fetch(&pool, &stale.request, limit)).await;
    match fetched {
        Ok(Ok(Recorded::Complete { segments, has_rows })) => {
            refresh.fill(Entry {
                segments,
                stored_at: requested_at,
                max_age: if has_rows {
                    policy.max_age
                } else {
                    policy.empty_max_age
                },
                stale_while_revalidate: policy.stale_while_revalidate,
                tables: Arc::clone(&stale.tables),
                request: Arc::clone(&stale.request),
            });
            metrics
                .revalidations_ok
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        outcome => {
            let reason = match outcome {
                Ok(Ok(_)) => {
                    "the origin's answer could not be cached (an error, a notice, or too large)"
                        .to_owned()
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "it ran longer than max_query_duration".to_owned(),
            };
            tracing::info!(%reason, "revalidation of a stale cache entry failed; the entry is served until it expires");
            metrics
                .revalidations_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Why a background fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("no origin connection: {0}")]
    Pool(crate::pool::PoolError),
    #[error("{0}")]
    Settings(String),
    #[error("origin connection failed: {0}")]
    Origin(ConnError),
}

/// Runs a cached request on a pooled connection, recording its result.
async fn fetch(pool: &Pool, cached: &CachedRequest, limit: usize) -> Result<Recorded, FetchError> {
    let mut checkout = pool.checkout().await.map_err(FetchError::Pool)?;
    let conn = checkout.conn();
    apply_settings(conn, &cached.settings)
        .await
        .map_err(|error| FetchError::Settings(error.message))?;
    let mut recorder = match &cached.request {
        Request::Simple { sql } => {
            encode::query_raw(&mut conn.origin.conn.out, sql);
            Recorder::simple(limit)
        }
        Request::Extended {
            sql,
            parameter_types,
            arguments,
            describes,
        } => {
            let out = &mut conn.origin.conn.out;
            encode::parse_raw(out, b"", sql, parameter_types);
            encode::bind_raw(out, b"", b"", arguments);
            for described in describes {
                let target = match described {
                    Described::Statement => Target::Statement,
                    Described::Portal => Target::Portal,
                };
                encode::describe(out, target, b"");
            }
            encode::execute(out, b"", 0);
            encode::sync(out);
            conn.unnamed_statement = None;
            Recorder::extended(describes.clone(), limit)
        }
    };
    conn.state = ConnState::Busy;
    let io = &mut conn.origin.conn;
    io.flush()
        .await
        .map_err(|e| FetchError::Origin(ConnError::Io(e)))?;
    let mut failed = false;
    loop {
        let frame = io
            .read_frame()
            .await
            .map_err(FetchError::Origin)?
            .ok_or(FetchError::Origin(ConnError::TruncatedFrame))?;
        match frame.tag() {
            tag::READY_FOR_QUERY => {
                if let Ok(BackendMessage::ReadyForQuery(status)) = BackendMessage::decode(&frame) {
                    conn.state = ConnState::Ready(status);
                    failed |= status != TransactionStatus::Idle;
                }
                break;
            }
            tag::ERROR_RESPONSE => failed = true,
            _ => recorder.accept(&frame),
        }
    }
    Ok(if failed {
        Recorded::Unusable
    } else {
        recorder.finish()
    })
}
