//! Reading the origin's catalog for the analyzer: user functions and their bodies,
//! triggers, rewrite rules, cascading foreign keys, partitions, event triggers. The facts
//! go to [`crate::analyze::catalog::Catalog`], which judges them; this module only reads
//! and keeps them.
//!
//! One catalog per origin database, shared by a deployment's sessions. It is read when a
//! database's first client arrives (in the background), before it is next used after DDL
//! that went through warpdrive, once it is the pool's `catalog_max_age` old (DDL may also
//! reach the origin directly), and on demand when a statement calls a function it does not list (at most
//! once per [`FORCED_READ_INTERVAL`]). One read at a time per database; the others wait.
//!
//! A read runs on a pooled connection, never beyond the pool's `max_size`. An asker that
//! holds no connection waits for one as its own statement would; one that holds a
//! connection (inside a transaction) takes one only if it is free at that moment. When
//! none is, a catalog that is only old keeps serving; a missing one is an error, and the
//! statement that needed it is treated as changing the session.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::analyze::catalog::{
    CastFacts, Catalog, CatalogFacts, FunctionFacts, FunctionRef, OperatorFacts, RelationFacts,
    RelationKind, TypeFacts,
};
use crate::analyze::{AnalysisMemo, Volatility};
use crate::conn::{Conn, ConnError};
use crate::metrics::DeploymentMetrics;
use crate::pool::ConnState;
use crate::pool::pg::{PgPool as Pool, PgPooledConn as PooledConn, read_until_ready};
use crate::wire::pg::backend::{BackendMessage, TransactionStatus, decode_data_row, tag};

/// The shortest time between two reads forced by a call of a function the catalog does
/// not list (an application calling a missing function must not make warpdrive read the
/// catalog at every call).
pub const FORCED_READ_INTERVAL: Duration = Duration::from_secs(1);

/// After a failed read, how long askers get the same failure before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The longest one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the catalog could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CatalogError {
    /// Every pooled connection was busy, and the asking session holds one already.
    #[error("no origin connection was free to read the catalog")]
    NoConnection,
    /// No connection to the origin.
    #[error("cannot connect to the origin to read its catalog: {0}")]
    Connect(String),
    /// The connection failed during the read.
    #[error("the origin connection failed while reading its catalog: {0}")]
    Lost(String),
    /// The origin refused a catalog query.
    #[error("the origin refused a catalog query: {0}")]
    Refused(String),
    /// The origin's answer was not what the queries ask for.
    #[error("unexpected answer to a catalog query: {0}")]
    Unexpected(String),
    /// The read took longer than its bound.
    #[error("reading the origin's catalog took longer than {}s", READ_TIMEOUT.as_secs())]
    Timeout,
}

impl From<ConnError> for CatalogError {
    fn from(error: ConnError) -> Self {
        CatalogError::Lost(error.to_string())
    }
}

/// A catalog and when the read that produced it began (it holds what had committed by
/// then).
#[derive(Clone)]
pub struct Snapshot {
    /// The judged catalog.
    pub catalog: Arc<Catalog>,
    /// When its read began.
    pub read_at: Instant,
}

#[derive(Default)]
struct State {
    current: Option<Snapshot>,
    /// The last time DDL went through warpdrive to this database.
    changed_at: Option<Instant>,
    /// The last failed read, with its error.
    failed: Option<(Instant, CatalogError)>,
    /// A read ahead was started (once per database).
    prefetched: bool,
    /// A read in the background is running (see [`Catalogs::latest`]).
    refreshing: bool,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    /// Held while reading: one read at a time.
    reading: tokio::sync::Mutex<()>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current snapshot if it is usable for a request that needs a read begun at or
    /// after `after` (and after the last DDL seen).
    fn usable(&self, after: Option<Instant>) -> Option<Snapshot> {
        let state = self.state();
        let current = state.current.as_ref()?;
        let needed = state.changed_at.max(after);
        needed
            .is_none_or(|needed| current.read_at >= needed)
            .then(|| current.clone())
    }
}

/// Where a read runs: a connection of this pool, waited for (up to the pool's
/// acquire_timeout) only when the asker holds none, since otherwise it may wait for its
/// own.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    /// The pool.
    pub pool: &'a Pool,
    /// Whether to wait for a connection to be free.
    pub wait: bool,
}

/// When DDL last went through warpdrive to each database, by name, for every
/// deployment of the process: a deployment's catalog is read again after DDL that went
/// through another deployment too.
#[derive(Debug, Default)]
pub struct SchemaChanges(Mutex<HashMap<String, Instant>>);

impl SchemaChanges {
    fn note(&self, database: &str) {
        let mut changes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        changes.insert(database.to_owned(), Instant::now());
    }

    fn last(&self, database: &str) -> Option<Instant> {
        let changes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        changes.get(database).copied()
    }
}

/// The catalogs of one deployment's databases.
pub struct Catalogs {
    analyzer: Arc<AnalysisMemo>,
    metrics: Arc<DeploymentMetrics>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    changes: Arc<SchemaChanges>,
}

impl Catalogs {
    /// Catalogs judged with `analyzer` (its rules; it reads view definitions and
    /// policies), counting their reads into `metrics`, read again after the DDL noted in
    /// `changes`.
    pub fn new(
        analyzer: Arc<AnalysisMemo>,
        metrics: Arc<DeploymentMetrics>,
        changes: Arc<SchemaChanges>,
    ) -> Catalogs {
        Catalogs {
            analyzer,
            metrics,
            slots: Mutex::new(HashMap::new()),
            changes,
        }
    }

    fn slot(&self, database: &str) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = match slots.get(database) {
            Some(slot) => Arc::clone(slot),
            None => Arc::clone(slots.entry(database.to_owned()).or_default()),
        };
        drop(slots);
        if let Some(changed_at) = self.changes.last(database) {
            let mut state = slot.state();
            state.changed_at = state.changed_at.max(Some(changed_at));
        }
        slot
    }

    /// The catalog of `database` to judge with now: read first when there is none yet,
    /// DDL went through warpdrive since, or it is `catalog_max_age` old (when it is only
    /// old and cannot be read now, it serves a while longer).
    pub async fn current(
        &self,
        database: &str,
        reader: Reader<'_>,
    ) -> Result<Snapshot, CatalogError> {
        let slot = self.slot(database);
        let max_age = reader.pool.settings().catalog_max_age;
        let aged = match slot.usable(None) {
            Some(snapshot) if snapshot.read_at.elapsed() < max_age => return Ok(snapshot),
            aged => aged,
        };
        // An old catalog still serves: reading it again never waits for a connection.
        let reader = Reader {
            wait: reader.wait && aged.is_none(),
            ..reader
        };
        match (self.read(&slot, reader, None, max_age).await, aged) {
            (Ok(snapshot), _) => Ok(snapshot),
            (Err(error), Some(aged)) => {
                tracing::debug!(%error, %database, "the origin's catalog is old but cannot be read now; the last one read serves");
                Ok(aged)
            }
            (Err(error), None) => Err(error),
        }
    }

    /// A catalog read at or after `after` (a statement calls a function the current one
    /// does not list), unless one was read less than [`FORCED_READ_INTERVAL`] ago.
    pub async fn read_since(
        &self,
        database: &str,
        after: Instant,
        reader: Reader<'_>,
    ) -> Result<Snapshot, CatalogError> {
        let slot = self.slot(database);
        let recent = slot
            .usable(None)
            .filter(|snapshot| snapshot.read_at.elapsed() < FORCED_READ_INTERVAL);
        match recent {
            Some(snapshot) => Ok(snapshot),
            None => {
                self.read(&slot, reader, Some(after), FORCED_READ_INTERVAL)
                    .await
            }
        }
    }

    /// Reads the catalog of `pool`'s database in the background if there is none yet, so
    /// that a database's first statements find it.
    pub fn prefetch(self: &Arc<Self>, pool: &Pool) {
        let database = pool.target().target.database.clone();
        if !std::mem::replace(&mut self.slot(&database).state().prefetched, true) {
            self.read_in_background(pool, database);
        }
    }

    /// Reads the catalog of `pool`'s database on a connection free now, unless a read in
    /// the background runs already.
    fn read_in_background(self: &Arc<Self>, pool: &Pool, database: String) {
        if std::mem::replace(&mut self.slot(&database).state().refreshing, true) {
            return;
        }
        let (catalogs, pool) = (Arc::clone(self), pool.clone());
        tokio::spawn(async move {
            let reader = Reader {
                pool: &pool,
                wait: false,
            };
            if let Err(error) = catalogs.current(&database, reader).await {
                tracing::debug!(%error, %database, "the origin's catalog could not be read in the background; it will be when next needed");
            }
            catalogs.slot(&database).state().refreshing = false;
        });
    }

    /// The catalog of `pool`'s database as last read, whatever its age, unless DDL went
    /// through warpdrive since; `None` when there is none. It never waits: a read starts
    /// in the background when the catalog is missing or `catalog_max_age` old. For judging
    /// writes, whose sessions hold a connection, so that they never queue behind a read
    /// (nor take a connection for one) while other clients wait for the pool.
    pub fn latest(self: &Arc<Self>, pool: &Pool) -> Option<Snapshot> {
        let database = pool.target().target.database.clone();
        let slot = self.slot(&database);
        let snapshot = slot.usable(None);
        let max_age = pool.settings().catalog_max_age;
        let aged = snapshot
            .as_ref()
            .is_none_or(|snapshot| snapshot.read_at.elapsed() >= max_age);
        if aged {
            self.read_in_background(pool, database);
        }
        snapshot
    }

    /// DDL went through warpdrive to `database`: the next user, of any deployment, reads
    /// the catalog again.
    pub fn note_changed(&self, database: &str) {
        self.changes.note(database);
    }

    /// Reads unless a read already done gives what is needed: a catalog read at or after
    /// `after` and after the last DDL seen, younger than `young`. The connection is taken
    /// before the read lock, so that a reader never holds the lock while it waits for a
    /// connection (which another asker, waiting for the lock, may hold).
    async fn read(
        &self,
        slot: &Slot,
        reader: Reader<'_>,
        after: Option<Instant>,
        young: Duration,
    ) -> Result<Snapshot, CatalogError> {
        let done = |slot: &Slot| {
            slot.usable(after)
                .filter(|snapshot| snapshot.read_at.elapsed() < young)
        };
        // Wait out a read in progress (holding no connection), then see if it did.
        loop {
            if let Some(snapshot) = done(slot) {
                return Ok(snapshot);
            }
            if slot.reading.try_lock().is_ok() {
                break;
            }
            drop(slot.reading.lock().await);
        }
        if let Some((at, error)) = &slot.state().failed
            && at.elapsed() < RETRY_AFTER_FAILURE
        {
            return Err(error.clone());
        }
        let taken = if reader.wait {
            Some(reader.pool.checkout().await)
        } else {
            reader.pool.checkout_if_free().await
        };
        let mut checkout = match taken {
            None => return Err(CatalogError::NoConnection),
            Some(Err(error)) => return Err(CatalogError::Connect(error.to_string())),
            Some(Ok(checkout)) => checkout,
        };
        let _reading = slot.reading.lock().await;
        if let Some(snapshot) = done(slot) {
            return Ok(snapshot);
        }
        let read_at = Instant::now();
        let read = read_on(checkout.conn()).await;
        if checkout.conn().state() == ConnState::Busy {
            checkout.discard();
        }
        self.metrics.catalog_reads.fetch_add(1, Ordering::Relaxed);
        let mut state = slot.state();
        match read {
            Ok(facts) => {
                let snapshot = Snapshot {
                    catalog: Arc::new(Catalog::new(facts, &self.analyzer)),
                    read_at,
                };
                tracing::debug!(took = ?read_at.elapsed(), "read the origin's catalog");
                state.current = Some(snapshot.clone());
                state.failed = None;
                Ok(snapshot)
            }
            Err(error) => {
                self.metrics
                    .catalog_read_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "cannot read the origin's catalog");
                state.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }
}

/// User functions. `body` is the text of a SQL-standard body where there is one
/// (PostgreSQL 14 and later keep it parsed, with an empty `prosrc`).
fn functions_query(sql_standard_bodies: bool) -> String {
    let body = if sql_standard_bodies {
        "CASE WHEN p.prosqlbody IS NOT NULL THEN pg_catalog.pg_get_function_sqlbody(p.oid) ELSE p.prosrc END"
    } else {
        "p.prosrc"
    };
    format!(
        "SELECT p.oid, n.nspname, p.proname, l.lanname, {body},
           (SELECT pg_catalog.string_agg(f::text, ',')
              FROM pg_catalog.pg_aggregate a,
                   pg_catalog.unnest(ARRAY[a.aggtransfn::oid, a.aggfinalfn::oid,
                     a.aggcombinefn::oid, a.aggserialfn::oid, a.aggdeserialfn::oid,
                     a.aggmtransfn::oid, a.aggminvtransfn::oid, a.aggmfinalfn::oid]) AS f
             WHERE a.aggfnoid = p.oid AND f <> 0),
           p.provolatile, p.pronargs
         FROM pg_catalog.pg_proc p
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema');"
    )
}

/// Every relation that can be read or written: its kind, a user view's definition, the
/// user functions that run on a write (triggers, column defaults, CHECK constraints, the
/// constraints of its columns' domains), whether rules act on writes, what else a write
/// reaches, and the inheritance parents whose reads see its rows.
const RELATIONS_QUERY: &str = "WITH
  uses AS (SELECT d.objid, d.classid, d.refobjid FROM pg_catalog.pg_depend d
           WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384),
  runs AS (SELECT tgrelid AS rel, tgfoid AS fn FROM pg_catalog.pg_trigger
           WHERE NOT tgisinternal AND tgenabled <> 'D'
           UNION SELECT ad.adrelid, u.refobjid FROM pg_catalog.pg_attrdef ad
             JOIN uses u ON u.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND u.objid = ad.oid
           UNION SELECT co.conrelid, u.refobjid FROM pg_catalog.pg_constraint co
             JOIN uses u ON u.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND u.objid = co.oid
             WHERE co.conrelid <> 0
           UNION SELECT a.attrelid, u.refobjid FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_constraint co ON co.contypid = a.atttypid
             JOIN uses u ON u.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND u.objid = co.oid
             WHERE a.attnum > 0 AND NOT a.attisdropped),
  rules AS (SELECT DISTINCT ev_class AS rel FROM pg_catalog.pg_rewrite WHERE ev_type <> '1'),
  reaches AS (SELECT confrelid AS rel, conrelid AS other FROM pg_catalog.pg_constraint
              WHERE contype = 'f' AND (confdeltype IN ('c', 'n', 'd') OR confupdtype IN ('c', 'n', 'd'))
              UNION SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits)
SELECT c.oid, n.nspname, c.relname, c.relkind,
  CASE WHEN c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       THEN pg_catalog.pg_get_viewdef(c.oid) END,
  (SELECT pg_catalog.string_agg(r.fn::text, ',') FROM runs r WHERE r.rel = c.oid),
  EXISTS (SELECT 1 FROM rules r WHERE r.rel = c.oid),
  (SELECT pg_catalog.string_agg(w.other::text, ',') FROM reaches w WHERE w.rel = c.oid),
  (SELECT pg_catalog.string_agg(i.inhparent::text, ',') FROM pg_catalog.pg_inherits i
   WHERE i.inhrelid = c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname <> 'pg_toast';";

/// The USING expressions of row-level-security policies.
const POLICIES_QUERY: &str = "SELECT polrelid, pg_catalog.pg_get_expr(polqual, polrelid)
FROM pg_catalog.pg_policy WHERE polqual IS NOT NULL;";

const EVENT_TRIGGERS_QUERY: &str =
    "SELECT evtfoid FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D';";

const BUILTINS_QUERY: &str = "SELECT p.oid,
  CASE WHEN n.nspname = 'pg_catalog' THEN p.proname ELSE n.nspname || '.' || p.proname END
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('pg_catalog', 'information_schema');";

/// User operators with the function each runs.
const OPERATORS_QUERY: &str = "SELECT n.nspname, o.oprname, pn.nspname, p.proname, p.provolatile
FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema');";

const BUILTIN_OPERATORS_QUERY: &str = "SELECT DISTINCT oprname FROM pg_catalog.pg_operator
WHERE oprnamespace = 'pg_catalog'::pg_catalog.regnamespace;";

/// User types (not arrays) with their input function, and a domain's base type.
const TYPES_QUERY: &str = "SELECT t.oid, n.nspname, t.typname, pn.nspname, p.proname, p.provolatile, t.typbasetype
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.typinput JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.typcategory <> 'A';";

/// The CHECK expressions of domains.
const DOMAIN_CHECKS_QUERY: &str = "SELECT contypid, pg_catalog.pg_get_expr(conbin, 0)
FROM pg_catalog.pg_constraint WHERE contypid <> 0 AND contype = 'c';";

const BUILTIN_TYPES_QUERY: &str = "SELECT t.typname FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname IN ('pg_catalog', 'information_schema') AND t.typcategory <> 'A';";

/// User casts that run a function, by the type they cast to.
const CASTS_QUERY: &str = "SELECT tn.nspname, t.typname, pn.nspname, p.proname, p.provolatile
FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE c.oid >= 16384;";

/// Runs the catalog queries on an idle origin connection, in one round trip and one
/// implicit transaction (one snapshot). The connection counts as busy until the origin's
/// ReadyForQuery, so that it is closed, not reused, if the read fails half-way.
async fn read_on(conn: &mut PooledConn) -> Result<CatalogFacts, CatalogError> {
    conn.set_busy();
    let major = conn
        .origin
        .parameters
        .iter()
        .find(|(name, _)| &name[..] == b"server_version")
        .and_then(|(_, value)| server_major(value))
        .unwrap_or(0);
    conn.write_query(catalog_sql(major).as_bytes());
    let exchange = tokio::time::timeout(READ_TIMEOUT, exchange(&mut conn.origin.conn));
    let (status, facts) = exchange.await.map_err(|_| CatalogError::Timeout)??;
    conn.set_ready(status.into());
    facts
}

/// The catalog queries for a server of this major version, in one simple query.
fn catalog_sql(major: u32) -> String {
    // Bounded by warpdrive, not by a statement_timeout the session may have set; SET LOCAL
    // ends with this query's implicit transaction.
    format!(
        "SET LOCAL statement_timeout = 0;{}{RELATIONS_QUERY}{POLICIES_QUERY}{EVENT_TRIGGERS_QUERY}         {BUILTINS_QUERY}{OPERATORS_QUERY}{BUILTIN_OPERATORS_QUERY}{TYPES_QUERY}         {DOMAIN_CHECKS_QUERY}{BUILTIN_TYPES_QUERY}{CASTS_QUERY}",
        functions_query(major >= 14)
    )
}

/// Sends the queries written and reads every answer up to ReadyForQuery: the transaction
/// status, and the facts or the origin's refusal.
async fn exchange(
    conn: &mut Conn,
) -> Result<(TransactionStatus, Result<CatalogFacts, CatalogError>), CatalogError> {
    let mut results: Vec<Vec<Vec<Option<Bytes>>>> = Vec::new();
    let mut rows = Vec::new();
    let mut refusal = None;
    let status = read_until_ready(conn, |frame| {
        match frame.tag() {
            tag::DATA_ROW => rows.push(decode_data_row(&frame)?),
            tag::COMMAND_COMPLETE => results.push(std::mem::take(&mut rows)),
            tag::ERROR_RESPONSE => {
                if let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&frame) {
                    refusal = Some(fields.message());
                }
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    let facts = match refusal {
        Some(message) => Err(CatalogError::Refused(message)),
        // The first result is the SET's.
        None => facts_from(results.into_iter().skip(1)),
    };
    Ok((status, facts))
}

/// The facts from the results, in query order.
fn facts_from(
    mut results: impl Iterator<Item = Vec<Vec<Option<Bytes>>>>,
) -> Result<CatalogFacts, CatalogError> {
    let mut next = || results.next().unwrap_or_default();
    let functions = rows(next(), function)?;
    let mut relations = rows(next(), relation)?;
    for (relation, policy) in rows(next(), |row| Ok((oid(row.first())?, text(row.get(1))?)))? {
        if let Some(relation) = relations.iter_mut().find(|r| r.oid == relation) {
            relation.policies.push(policy);
        }
    }
    let event_trigger_functions = rows(next(), |row| oid(row.first()))?;
    let builtins = rows(next(), |row| Ok((oid(row.first())?, text(row.get(1))?)))?;
    let operators = rows(next(), |row| {
        Ok(OperatorFacts {
            schema: text(row.first())?,
            name: text(row.get(1))?,
            function: function_ref(&row[2.min(row.len())..])?,
        })
    })?;
    let builtin_operators = rows(next(), |row| text(row.first()))?;
    let mut types = rows(next(), |row| {
        Ok(TypeFacts {
            oid: oid(row.first())?,
            schema: text(row.get(1))?,
            name: text(row.get(2))?,
            input: function_ref(&row[3.min(row.len())..])?,
            base: oid(row.get(6))?,
            checks: Vec::new(),
        })
    })?;
    for (domain, check) in rows(next(), |row| Ok((oid(row.first())?, text(row.get(1))?)))? {
        if let Some(domain) = types.iter_mut().find(|t| t.oid == domain) {
            domain.checks.push(check);
        }
    }
    let builtin_types = rows(next(), |row| text(row.first()))?;
    let casts = rows(next(), |row| {
        Ok(CastFacts {
            target_schema: text(row.first())?,
            target: text(row.get(1))?,
            function: function_ref(&row[2.min(row.len())..])?,
        })
    })?;
    Ok(CatalogFacts {
        functions,
        relations,
        event_trigger_functions,
        builtins,
        operators,
        builtin_operators,
        types,
        builtin_types,
        casts,
    })
}

fn rows<T>(
    rows: Vec<Vec<Option<Bytes>>>,
    read: impl Fn(&[Option<Bytes>]) -> Result<T, CatalogError>,
) -> Result<Vec<T>, CatalogError> {
    rows.iter().map(|row| read(row)).collect()
}

/// A function as three columns: schema, name, `provolatile`.
fn function_ref(columns: &[Option<Bytes>]) -> Result<FunctionRef, CatalogError> {
    Ok(FunctionRef {
        schema: text(columns.first())?,
        name: text(columns.get(1))?,
        volatility: volatility(columns.get(2))?,
    })
}

/// `provolatile`: `i`, `s` or `v`.
fn volatility(value: Option<&Option<Bytes>>) -> Result<Volatility, CatalogError> {
    match text(value)?.as_str() {
        "i" => Ok(Volatility::Immutable),
        "s" => Ok(Volatility::Stable),
        "v" => Ok(Volatility::Volatile),
        other => Err(CatalogError::Unexpected(format!(
            "{other:?} is not a volatility class"
        ))),
    }
}

/// The major version from `server_version` (`15.19 (Debian …)` → 15).
fn server_major(version: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(version).ok()?;
    text.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn text(value: Option<&Option<Bytes>>) -> Result<String, CatalogError> {
    match value {
        Some(Some(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        _ => Err(CatalogError::Unexpected(
            "a column is missing or NULL".to_owned(),
        )),
    }
}

fn oid(value: Option<&Option<Bytes>>) -> Result<u32, CatalogError> {
    let text = text(value)?;
    text.parse()
        .map_err(|_| CatalogError::Unexpected(format!("{text:?} is not an OID")))
}

/// A comma-separated list of OIDs (NULL: none).
fn oids(value: Option<&Option<Bytes>>) -> Result<Vec<u32>, CatalogError> {
    match value {
        Some(Some(_)) => text(value)?
            .split(',')
            .map(|part| {
                part.parse()
                    .map_err(|_| CatalogError::Unexpected(format!("{part:?} is not an OID")))
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn function(row: &[Option<Bytes>]) -> Result<FunctionFacts, CatalogError> {
    let arguments = text(row.get(7))?;
    Ok(FunctionFacts {
        oid: oid(row.first())?,
        schema: text(row.get(1))?,
        name: text(row.get(2))?,
        language: text(row.get(3))?,
        body: text(row.get(4)).unwrap_or_default(),
        support: oids(row.get(5))?,
        volatility: volatility(row.get(6))?,
        arguments: arguments
            .parse()
            .map_err(|_| CatalogError::Unexpected(format!("{arguments:?} is not a count")))?,
    })
}

fn relation(row: &[Option<Bytes>]) -> Result<RelationFacts, CatalogError> {
    Ok(RelationFacts {
        oid: oid(row.first())?,
        schema: text(row.get(1))?,
        name: text(row.get(2))?,
        kind: RelationKind::from_relkind(&text(row.get(3))?),
        definition: text(row.get(4)).ok(),
        policies: Vec::new(),
        write_functions: oids(row.get(5))?,
        has_write_rules: text(row.get(6))? == "t",
        also_writes: oids(row.get(7))?,
        parents: oids(row.get(8))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_and_oid_lists_parse() {
        assert_eq!(server_major(b"15.19 (Debian 15.19-0+deb12u1)"), Some(15));
        assert_eq!(server_major(b"9.6.24"), Some(9));
        assert_eq!(server_major(b"devel"), None);
        let list = Some(Bytes::from_static(b"1,20,300"));
        assert_eq!(oids(Some(&list)).expect("parses"), vec![1, 20, 300]);
        assert_eq!(oids(Some(&None)).expect("null is none"), Vec::<u32>::new());
        let bad = Some(Bytes::from_static(b"1,x"));
        assert!(oids(Some(&bad)).is_err());
        assert!(functions_query(true).contains("prosqlbody"));
        assert!(!functions_query(false).contains("prosqlbody"));
    }
}
