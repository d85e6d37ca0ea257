//! The cache and the write clock in a session: a status for every COM_QUERY and
//! COM_STMT_EXECUTE, hits answered without the origin, results recorded as they are
//! relayed, and each statement's writes marked as it completes.
//!
//! A request is looked up only when the client is outside a transaction with autocommit
//! on, and not pinned (it may read its own temporary tables or user variables).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{InFlight, Session};
use crate::analyze::{Analysis, Dialect, Status, StringLiterals, Writes};
use crate::cache::{CacheStatus, Entry, Generations, KeyScope};
use crate::metrics::DeploymentMetrics;
use crate::pool::mysql::{Baseline, MysqlPool, SessionState};
use crate::protocol::TxnStatus;
use crate::proxy::writes::{Control, WriteSet};
use crate::proxy::{Composer, Consulted, Flight, Situation, ToRecord};
use crate::session::mysql::Shared;
use crate::session::mysql::caching::{self, MysqlRefetch, Request};
use crate::session::mysql::catalog::{Snapshot, qualified};
use crate::session::mysql::recorder::{Recorder, Unstorable, unstorable};
use crate::session::{SessionContext, SessionError};
use crate::wire::mysql::response::Part;
use crate::wire::mysql::status;

/// The sql_mode flag under which a backslash in a string is itself.
const NO_BACKSLASH_ESCAPES: &str = "NO_BACKSLASH_ESCAPES";

impl Session {
    fn composer(&self) -> Composer<'_> {
        caching::composer(&self.ctx, &self.io.pool, &self.generations)
    }

    /// Where the client stands.
    fn situation(&self) -> Situation {
        Situation {
            txn: transaction_of(self.status),
            pinned: self.io.pinned().is_some(),
            behind_others: false,
        }
    }

    /// The analysis of a COM_QUERY's text (or a statement's), from the memo. Under
    /// NO_BACKSLASH_ESCAPES a text with a backslash may be other statements than the
    /// analyzer reads: it is not cached, and may write anything.
    pub(super) fn analysis_of(&self, sql: &[u8]) -> Arc<Analysis> {
        let analysis =
            self.ctx
                .analyzer
                .analyze_bytes(Dialect::Mysql, sql, StringLiterals::BackslashEscapes);
        let literal_backslashes = self
            .state
            .variables
            .get("sql_mode")
            .is_some_and(|mode| mode.contains(NO_BACKSLASH_ESCAPES));
        if literal_backslashes && sql.contains(&b'\\') {
            let mut unread = analysis.refused(
                Status::ParseError,
                "sql_mode has NO_BACKSLASH_ESCAPES and the text has a backslash",
            );
            unread.statement_writes = vec![Writes::anything()];
            return Arc::new(unread);
        }
        analysis
    }

    /// The request's view of the session, for the cache (only what may be held across
    /// a wait).
    pub(super) fn consulting(&self) -> Consult<'_> {
        Consult {
            ctx: &self.ctx,
            pool: &self.io.pool,
            generations: &self.generations,
            state: &self.state,
            baseline: &self.baseline,
            capabilities: self.capabilities,
            situation: self.situation(),
            holds_connection: self.io.holds(),
            judgements: &self.judgements,
        }
    }

    /// The status a request the cache cannot serve in its shape is forwarded with.
    pub(super) fn forwarded(
        &self,
        analysis: &Analysis,
        query_bytes: usize,
        started: Instant,
    ) -> Box<Flight<Recorder>> {
        let status = self
            .composer()
            .forwarded_status(analysis, self.situation().txn);
        Box::new(Flight::forwarded(status, query_bytes, started))
    }

    /// Answers the client's command `seq` from `entry`.
    pub(super) async fn serve_hit(
        &mut self,
        seq: u8,
        entry: &Entry,
        query_bytes: usize,
        started: Instant,
    ) -> Result<(), SessionError> {
        let out = &mut self.io.client.out;
        let sent = caching::write_hit(out, seq, entry, self.capabilities, self.status);
        self.composer().served(query_bytes, sent, started);
        self.io.client.flush().await?;
        Ok(())
    }

    /// One statement of the request in flight completed (an OK, or the end of a result
    /// set), or `failed` (an ERR): what it wrote is marked, or kept until its
    /// transaction ends. A failed statement is marked too: a stored procedure commits
    /// as it goes, and a non-transactional table keeps the rows written before an error.
    pub(super) fn statement_completed(&mut self, in_flight: &mut InFlight, failed: bool) {
        let Some(analysis) = in_flight.analysis.clone() else {
            return;
        };
        let index = in_flight.completed;
        in_flight.completed += 1;
        let statement_writes = analysis.statement_writes.get(index);
        if analysis.kind == crate::analyze::Kind::Ddl || statement_writes.is_none_or(|w| w.anything)
        {
            // It may have created, changed or dropped a view, a function or a trigger.
            self.ctx.protocol.catalog.schema_changed();
        }
        let writes = self.write_set(statement_writes, self.names_in(in_flight));
        let control = match analysis.statement_effects.get(index) {
            Some(effects) if !failed => ends_block_with_its_writes(Control::of(effects, false)),
            _ => Control::None,
        };
        let marking = self.ctx.marking(&self.generations);
        self.writes.completed(control, &writes, marking);
    }

    /// The database the request's unqualified names resolve in: a statement's, the one
    /// it was prepared in; a text's, the current one (as an earlier USE in the same
    /// text left it).
    fn names_in<'a>(&'a self, in_flight: &'a InFlight) -> Option<&'a str> {
        in_flight
            .names_in
            .as_deref()
            .or(self.state.database.as_deref())
    }

    /// What the statements of the request in flight that did not complete may have
    /// written.
    pub(super) fn writes_in_flight(&self, in_flight: &InFlight) -> WriteSet {
        let mut writes = WriteSet::Nothing;
        if let Some(analysis) = &in_flight.analysis {
            let database = self.names_in(in_flight);
            for index in in_flight.completed..analysis.statement_writes.len().max(1) {
                let statement = analysis.statement_writes.get(index);
                writes.add(&self.write_set(statement, database));
            }
        }
        writes
    }

    /// The reply ended with the client's transaction `txn`: its result is stored if it
    /// may be, it is counted, and what committed is marked, then told to the tier.
    pub(super) async fn request_ended(&mut self, in_flight: &mut InFlight, status: u16) {
        if let Some(flight) = in_flight.flight.take() {
            self.composer().finish(*flight, transaction_of(status));
        }
        if in_flight.analysis.is_some() {
            let marking = self.ctx.marking(&self.generations);
            self.writes
                .ready(crate::pool::mysql::txn_status(status), marking);
        }
        self.publish_writes().await;
    }

    /// Tells the upstream tier of the writes marked here, before the replies that
    /// completed them reach the client.
    pub(super) async fn publish_writes(&mut self) {
        if let Some(tier) = &self.ctx.tier {
            self.writes.publish(tier, caching::CLOCK).await;
        }
    }

    /// The connection went with the request in flight: what it may have written is
    /// marked, and its flight ends failed.
    pub(super) async fn request_lost(&mut self, in_flight: &mut InFlight) {
        let doubtful = self.writes_in_flight(in_flight);
        let marking = self.ctx.marking(&self.generations);
        self.writes.lost(&doubtful, marking);
        if let Some(flight) = in_flight.flight.take() {
            self.composer().abandon(*flight);
        }
        self.publish_writes().await;
    }

    /// What one statement's writes reach: its tables, named with `database` where it
    /// names none; anything when it may call a function of the database's that writes.
    fn write_set(&self, writes: Option<&Writes>, database: Option<&str>) -> WriteSet {
        let Some(writes) = writes else {
            return WriteSet::Everything;
        };
        if writes.is_nothing() {
            return WriteSet::Nothing;
        }
        let Some(snapshot) = self.ctx.protocol.catalog.known() else {
            // Views, triggers and functions unknown: anything may be behind the write.
            return WriteSet::Everything;
        };
        let rules = self.ctx.analyzer.analyzer().rules(Dialect::Mysql);
        if writes.anything || !snapshot.calls_only_readers(&writes.calls, database, rules) {
            return WriteSet::Everything;
        }
        snapshot.write_set(writes.tables.iter().map(|table| qualified(table, database)))
    }
}

/// Takes one packet of the reply in flight into its recording: `written` is what
/// the client was sent for it.
pub(super) fn record(
    metrics: &DeploymentMetrics,
    in_flight: &mut InFlight,
    part: &Part,
    written: &[u8],
) {
    let Some(flight) = in_flight.flight.as_mut() else {
        return;
    };
    flight.count(written.len());
    match unstorable(part) {
        None => flight.record(written),
        Some(Unstorable::Failed) => flight.fail(),
        Some(Unstorable::Warnings) => {
            if flight.status() == CacheStatus::Miss {
                metrics
                    .results_with_warnings
                    .fetch_add(1, Ordering::Relaxed);
            }
            flight.not_stored(CacheStatus::Miss);
        }
        Some(Unstorable::Shape(status)) => flight.not_stored(status),
    }
}

/// How a MySQL statement moves the client's transaction, for its writes: BEGIN commits
/// a transaction that is open, and a ROLLBACK leaves the writes to non-transactional
/// tables (MyISAM, Aria, MEMORY) in place, so both end the block with its writes
/// marked (a rolled-back write costs misses, never a stale read).
fn ends_block_with_its_writes(control: Control) -> Control {
    match control {
        Control::Begin => Control::Commit {
            committed: true,
            chain: true,
        },
        Control::Rollback { chain } => Control::Commit {
            committed: true,
            chain,
        },
        other => other,
    }
}

/// The client's transaction as the cache sees it from the status flags: autocommit off
/// counts as a transaction (every statement opens one).
fn transaction_of(flags: u16) -> TxnStatus {
    match flags & status::AUTOCOMMIT {
        0 => TxnStatus::InTransaction,
        _ => crate::pool::mysql::txn_status(flags),
    }
}

/// A request's view of its session, for the cache.
pub(super) struct Consult<'a> {
    ctx: &'a SessionContext<Shared>,
    pool: &'a MysqlPool,
    generations: &'a Arc<Generations>,
    state: &'a SessionState,
    baseline: &'a Arc<Baseline>,
    capabilities: u32,
    situation: Situation,
    /// The client holds a connection: the catalog is read only on a free one.
    holds_connection: bool,
    judgements: &'a Mutex<Judgements>,
}

/// A read as the catalog judged it, and the tables it reads.
#[derive(Clone)]
struct Judged {
    analysis: Arc<Analysis>,
    tables: Arc<[String]>,
}

impl Judged {
    /// `analysis` refused with `status`, for `why`: no table of it is looked at.
    fn refused(analysis: &Analysis, status: Status, why: impl Into<String>) -> Judged {
        Judged {
            analysis: Arc::new(analysis.refused(status, why)),
            tables: Arc::from([]),
        }
    }
}

/// How many judgements a session keeps; past that it starts over.
const JUDGEMENTS: usize = 256;

/// The session's judged reads, by the analysis of their text (kept alive here, so its
/// address names it), the database their names resolve in and the catalog snapshot.
#[derive(Default)]
pub(super) struct Judgements {
    by_analysis: HashMap<usize, (Arc<Analysis>, String, Arc<Snapshot>, Judged)>,
}

impl Judgements {
    fn get(
        &self,
        analysis: &Arc<Analysis>,
        database: &str,
        snapshot: &Arc<Snapshot>,
    ) -> Option<Judged> {
        let (_, known_database, known_snapshot, judged) =
            self.by_analysis.get(&(Arc::as_ptr(analysis) as usize))?;
        (known_database == database && Arc::ptr_eq(known_snapshot, snapshot))
            .then(|| judged.clone())
    }

    fn insert(
        &mut self,
        analysis: &Arc<Analysis>,
        database: &str,
        snapshot: Arc<Snapshot>,
        judged: Judged,
    ) {
        if self.by_analysis.len() >= JUDGEMENTS {
            self.by_analysis.clear();
        }
        let entry = (Arc::clone(analysis), database.to_owned(), snapshot, judged);
        self.by_analysis
            .insert(Arc::as_ptr(analysis) as usize, entry);
    }
}

impl Consult<'_> {
    /// Decides a request's status and, for a cacheable one, looks it up.
    pub(super) async fn consult(
        &self,
        analysis: &Arc<Analysis>,
        request: Request,
        query_bytes: usize,
        started: Instant,
    ) -> Consulted<Recorder> {
        let composer = caching::composer(self.ctx, self.pool, self.generations);
        let situation = self.situation;
        let judged = match composer.may_cache(situation) {
            true => self.judge(analysis, &request).await,
            false => Judged {
                analysis: Arc::clone(analysis),
                tables: Arc::from([]),
            },
        };
        let analysis = &judged.analysis;
        let policy = match composer.decide(analysis, situation) {
            Ok(policy) => policy,
            Err(status) => {
                return Consulted::Forward(Box::new(Flight::forwarded(
                    status,
                    query_bytes,
                    started,
                )));
            }
        };
        let deployment = &self.ctx.deployment;
        let scope = KeyScope {
            deployment: &deployment.name,
            database: &deployment.origin.database,
            role: &deployment.origin.user,
        };
        let key = request.key(scope, self.state, self.capabilities);
        let limit = deployment.cache.max_result_bytes;
        let to_record = || ToRecord {
            recorder: Recorder::new(limit, self.capabilities),
            tables: Arc::clone(&judged.tables),
            tables_unknown: analysis.reads_unknown_tables,
            refetch: Arc::new(MysqlRefetch {
                pool: self.pool.clone(),
                baseline: Arc::clone(self.baseline),
                state: self.state.clone(),
                client_caps: self.capabilities,
                request: request.clone(),
                limit,
            }),
        };
        composer
            .lookup(key, policy, query_bytes, started, to_record)
            .await
    }

    /// The read as the origin's catalog shows it (see [`crate::session::mysql::catalog`]),
    /// with the tables it reads; judged once per text, database and catalog snapshot in
    /// a session, so that a hit does not judge its text again.
    async fn judge(&self, analysis: &Arc<Analysis>, request: &Request) -> Judged {
        let unjudged = || Judged {
            analysis: Arc::clone(analysis),
            tables: analysis.tables_read.clone().into(),
        };
        let may_be_cacheable = match analysis.status {
            Status::Cacheable => true,
            Status::Volatile => !analysis.catalog_names.volatile_anyway,
            _ => false,
        };
        if !may_be_cacheable {
            return unjudged();
        }
        let Some(database) = request.names_in(self.state) else {
            // The origin connection may be in another client's database: what it
            // answers for this session cannot be told from what it answers for that.
            return Judged::refused(
                analysis,
                Status::Uncacheable,
                "the session has no current database",
            );
        };
        let catalog = &self.ctx.protocol.catalog;
        let snapshot = match catalog
            .current(
                self.pool,
                &self.ctx.analyzer,
                self.baseline,
                &self.ctx.metrics,
                !self.holds_connection,
            )
            .await
        {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.ctx
                    .metrics
                    .catalog_read_failures
                    .fetch_add(1, Ordering::Relaxed);
                let why = format!("{error}: the views and functions it reads cannot be judged");
                return Judged::refused(analysis, Status::Volatile, why);
            }
        };
        let mut judgements = self.judgements.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = judgements.get(analysis, database, &snapshot) {
            return known;
        }
        let rules = self.ctx.analyzer.analyzer().rules(Dialect::Mysql);
        let judged = match snapshot.refine(analysis, Some(database), rules) {
            Some(refined) => Judged {
                tables: refined.tables_read.clone().into(),
                analysis: Arc::new(refined),
            },
            None => unjudged(),
        };
        judgements.insert(analysis, database, snapshot, judged.clone());
        judged
    }
}
