//! What only a MySQL origin's `information_schema` can tell the cache: which names are
//! views and what they read, which user functions are DETERMINISTIC and whether they
//! read tables, and which tables a write reaches beyond themselves (triggers, cascading
//! foreign keys).
//!
//! One snapshot per deployment, read when a session first needs it, again before it is
//! next used after DDL went through warpdrive, and in the background once it is the
//! pool's `catalog_max_age` old (DDL may also reach the origin directly; until the new
//! snapshot is in, the old one answers). One read at a time. The judging is pure
//! ([`Snapshot::refine`], [`Snapshot::write_set`]) and tested without a server.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::setup;
use crate::analyze::{Analysis, AnalysisMemo, Dialect, Rules, Status};
use crate::metrics::DeploymentMetrics;
use crate::pool::mysql::{Baseline, ExchangeError, MysqlPool, SessionState};
use crate::proxy::writes::WriteSet;

/// Views inside views are followed this deep; deeper is volatile.
const VIEW_DEPTH: usize = 8;

/// Schemas whose tables change without a write through warpdrive, or with any.
const SERVER_SCHEMAS: [&str; 2] = ["information_schema", "mysql"];

const VIEWS_QUERY: &str = "SELECT LOWER(TABLE_SCHEMA), LOWER(TABLE_NAME), VIEW_DEFINITION \
     FROM information_schema.VIEWS \
     WHERE TABLE_SCHEMA NOT IN ('sys', 'mysql', 'information_schema', 'performance_schema')";
const FUNCTIONS_QUERY: &str = "SELECT LOWER(ROUTINE_SCHEMA), LOWER(ROUTINE_NAME), IS_DETERMINISTIC, SQL_DATA_ACCESS \
     FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION'";
const TRIGGERS_QUERY: &str = "SELECT DISTINCT LOWER(EVENT_OBJECT_SCHEMA), LOWER(EVENT_OBJECT_TABLE) \
     FROM information_schema.TRIGGERS";
const CASCADES_QUERY: &str = "SELECT DISTINCT LOWER(UNIQUE_CONSTRAINT_SCHEMA), LOWER(REFERENCED_TABLE_NAME) \
     FROM information_schema.REFERENTIAL_CONSTRAINTS \
     WHERE DELETE_RULE NOT IN ('RESTRICT', 'NO ACTION') OR UPDATE_RULE NOT IN ('RESTRICT', 'NO ACTION')";

/// A user function, as the origin declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// `DETERMINISTIC`.
    pub deterministic: bool,
    /// `READS SQL DATA` (its reads are not known), or `MODIFIES SQL DATA`.
    pub reads: bool,
    /// `MODIFIES SQL DATA`.
    pub modifies: bool,
}

/// The origin's catalog, as read at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `database.view` → the analysis of its definition.
    pub views: HashMap<String, Arc<Analysis>>,
    /// `database.function` → how it is declared.
    pub functions: HashMap<String, Function>,
    /// Tables a write to which writes others (triggers, cascading foreign keys).
    pub reaching: HashSet<String>,
}

/// `name` with its database: `database.name` unless it names one.
pub fn qualified(name: &str, database: Option<&str>) -> String {
    match database {
        Some(database) if !name.contains('.') => format!("{}.{name}", database.to_lowercase()),
        _ => name.to_owned(),
    }
}

impl Snapshot {
    /// The read as the catalog shows it: its tables named with their database, views
    /// replaced by what they read (a view over volatile code is volatile), user
    /// functions the origin declares DETERMINISTIC no longer volatile. `None` when that
    /// changes nothing.
    pub fn refine(
        &self,
        analysis: &Analysis,
        database: Option<&str>,
        rules: &Rules,
    ) -> Option<Analysis> {
        let qualified_already = analysis.tables_read.iter().all(|t| t.contains('.'));
        let unknown_functions = analysis
            .volatile_functions
            .iter()
            .any(|f| !rules.is_builtin_function(f));
        if qualified_already
            && !unknown_functions
            && !analysis.tables_read.iter().any(|t| self.special(t))
        {
            return None;
        }
        let mut refined = analysis.clone();
        // The analyzer counts a user function's reads as unknown; the catalog says.
        let user_functions = analysis
            .functions
            .iter()
            .filter(|f| !rules.is_builtin_function(f))
            .map(|f| self.functions.get(&qualified(f, database)));
        let declared: Option<Vec<&Function>> = user_functions.collect();
        if let Some(declared) = declared.filter(|declared| !declared.is_empty()) {
            refined.reads_unknown_tables = declared.iter().any(|f| f.reads);
        }
        let mut tables = BTreeSet::new();
        let mut volatile = None;
        for table in &analysis.tables_read {
            let table = qualified(table, database);
            if let Err(why) = self.expand(&table, &mut tables, &mut refined, rules, 0) {
                volatile.get_or_insert(why);
            }
        }
        refined.tables_read = tables.into_iter().collect();
        let mut still_volatile = Vec::new();
        for function in &analysis.volatile_functions {
            if rules.is_builtin_function(function) {
                still_volatile.push(function.clone());
                continue;
            }
            match self.functions.get(&qualified(function, database)) {
                Some(declared) if declared.deterministic && !declared.modifies => {}
                _ => still_volatile.push(function.clone()),
            }
        }
        refined.volatile_functions = still_volatile;
        if let Some(why) = volatile {
            return Some(refined.refused(Status::Volatile, why));
        } else if analysis.status == Status::Volatile
            && refined.volatile_functions.is_empty()
            && !analysis.catalog_names.volatile_anyway
        {
            refined.status = Status::Cacheable;
            refined.reasons.clear();
        }
        Some(refined)
    }

    /// Whether a read of `table` needs the catalog's word: a view, or a table of the
    /// server's own.
    fn special(&self, table: &str) -> bool {
        self.views.contains_key(table)
            || SERVER_SCHEMAS
                .iter()
                .any(|schema| table.split('.').next() == Some(schema))
    }

    /// Adds what reading `table` reads to `tables`; an error says why it is volatile.
    fn expand(
        &self,
        table: &str,
        tables: &mut BTreeSet<String>,
        refined: &mut Analysis,
        rules: &Rules,
        depth: usize,
    ) -> Result<(), String> {
        let schema = table.split_once('.').map(|(schema, _)| schema);
        if schema.is_some_and(|schema| SERVER_SCHEMAS.contains(&schema)) {
            // Changes with any write, and with writes that do not go through warpdrive.
            refined.reads_unknown_tables = true;
        }
        let Some(view) = self.views.get(table) else {
            tables.insert(table.to_owned());
            return Ok(());
        };
        if depth >= VIEW_DEPTH {
            return Err(format!(
                "reads view {table}, nested deeper than {VIEW_DEPTH} views"
            ));
        }
        if view.status != Status::Cacheable || !view.volatile_functions.is_empty() {
            return Err(format!(
                "reads view {table}, whose definition is {}: {}",
                view.status,
                view.reasons.first().map_or("", |r| r.as_str())
            ));
        }
        refined.reads_unknown_tables |= view.reads_unknown_tables;
        for function in &view.functions {
            if !rules.is_builtin_function(function) {
                return Err(format!(
                    "reads view {table}, which calls user function {function}"
                ));
            }
        }
        for inner in &view.tables_read {
            let inner = qualified(inner, schema);
            self.expand(&inner, tables, refined, rules, depth + 1)?;
        }
        Ok(())
    }

    /// Whether every function in `calls` is built in, or a user function the origin
    /// declares as not modifying data (the declaration is trusted as its author wrote
    /// it: MySQL does not enforce it).
    pub fn calls_only_readers(
        &self,
        calls: &[String],
        database: Option<&str>,
        rules: &Rules,
    ) -> bool {
        calls.iter().all(|name| {
            rules.is_builtin_function(name)
                || self
                    .functions
                    .get(&qualified(name, database))
                    .is_some_and(|declared| !declared.modifies)
        })
    }

    /// What a write to `tables` (named with their database) reaches: the base tables
    /// of views written through, and anything when a trigger or a cascading foreign key
    /// writes further.
    pub fn write_set(&self, tables: impl IntoIterator<Item = String>) -> WriteSet {
        let mut reached = BTreeSet::new();
        let mut todo: Vec<(String, usize)> = tables.into_iter().map(|t| (t, 0)).collect();
        while let Some((table, depth)) = todo.pop() {
            if self.reaching.contains(&table) || depth > VIEW_DEPTH {
                return WriteSet::Everything;
            }
            match self.views.get(&table) {
                Some(view) => {
                    let schema = table.split_once('.').map(|(schema, _)| schema);
                    todo.extend(
                        view.tables_read
                            .iter()
                            .map(|inner| (qualified(inner, schema), depth + 1)),
                    );
                    reached.insert(table);
                }
                None => {
                    reached.insert(table);
                }
            }
        }
        WriteSet::Tables(reached)
    }
}

/// Why the catalog could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CatalogError {
    /// No origin connection.
    #[error("no origin connection to read the catalog: {0}")]
    Connection(String),
    /// The origin refused a catalog query, or the connection failed.
    #[error("the catalog read failed: {0}")]
    Read(String),
}

/// A deployment's snapshot of the catalog, and when it must be read again.
pub struct MysqlCatalog {
    /// The latest snapshot, when it was read, and the count of schema changes it saw.
    latest: Mutex<Option<Latest>>,
    /// Schema changes through warpdrive so far: a snapshot read before the last one
    /// is not used.
    changes: AtomicU64,
    reading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
struct Latest {
    snapshot: Arc<Snapshot>,
    read_at: Instant,
    changes: u64,
}

impl Default for MysqlCatalog {
    fn default() -> Self {
        MysqlCatalog {
            latest: Mutex::new(None),
            changes: AtomicU64::new(0),
            reading: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl MysqlCatalog {
    /// DDL went through warpdrive: the next use reads the catalog again.
    pub fn schema_changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The latest snapshot, unless a schema change went through since it was read.
    fn usable(&self) -> Option<Latest> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        (latest.changes == self.changes.load(Ordering::Acquire)).then_some(latest)
    }

    /// The snapshot as last read, when there is one and no DDL went through since.
    pub fn known(&self) -> Option<Arc<Snapshot>> {
        self.usable().map(|latest| latest.snapshot)
    }

    /// A snapshot to judge by: the latest, refreshed in the background once it is
    /// `max_age` old; read now when there is none or DDL went through since.
    /// `may_wait` says whether the asker may wait for a pooled connection and for
    /// another asker's read (it holds no connection itself: waiting while holding one
    /// could wait for its own).
    pub async fn current(
        self: &Arc<Self>,
        pool: &MysqlPool,
        analyzer: &Arc<AnalysisMemo>,
        baseline: &Arc<Baseline>,
        metrics: &Arc<DeploymentMetrics>,
        may_wait: bool,
    ) -> Result<Arc<Snapshot>, CatalogError> {
        if let Some(latest) = self.usable() {
            if latest.read_at.elapsed() >= pool.settings().catalog_max_age
                && let Ok(guard) = Arc::clone(&self.reading).try_lock_owned()
            {
                let (catalog, pool) = (Arc::clone(self), pool.clone());
                let (analyzer, baseline) = (Arc::clone(analyzer), Arc::clone(baseline));
                let metrics = Arc::clone(metrics);
                tokio::spawn(async move {
                    let _guard = guard;
                    let read = catalog.read(&pool, &analyzer, &baseline, &metrics, true);
                    if let Err(error) = read.await {
                        metrics
                            .catalog_read_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "reading the MySQL catalog in the background failed");
                    }
                });
            }
            return Ok(latest.snapshot);
        }
        let _reading = match may_wait {
            true => self.reading.lock().await,
            false => self.reading.try_lock().map_err(|_| {
                CatalogError::Connection("another session is reading the catalog".to_owned())
            })?,
        };
        if let Some(latest) = self.usable() {
            return Ok(latest.snapshot);
        }
        self.read(pool, analyzer, baseline, metrics, may_wait).await
    }

    async fn read(
        &self,
        pool: &MysqlPool,
        analyzer: &AnalysisMemo,
        baseline: &Baseline,
        metrics: &DeploymentMetrics,
        may_wait: bool,
    ) -> Result<Arc<Snapshot>, CatalogError> {
        let started = Instant::now();
        // A change during the read makes the next use read again.
        let changes = self.changes.load(Ordering::Acquire);
        let checkout = match may_wait {
            true => pool.checkout().await,
            false => pool.checkout_if_free().await.ok_or_else(|| {
                CatalogError::Connection("every pooled connection was busy".to_owned())
            })?,
        };
        let mut checkout = checkout.map_err(|e| CatalogError::Connection(e.to_string()))?;
        let conn = checkout.conn();
        // A fresh connection's settings (another client's character_set_results would
        // change the definitions' bytes).
        let fresh = SessionState {
            database: conn.session.database.clone(),
            multi_statements: conn.session.multi_statements,
            ..SessionState::default()
        };
        match setup::bring(conn, &fresh, baseline).await {
            Ok(true) => {}
            Ok(false) => {
                conn.keep_from_others();
                return Err(CatalogError::Connection(
                    "the connection holds a setting that cannot be put back".to_owned(),
                ));
            }
            Err(failed) => return Err(CatalogError::Read(failed.error.to_string())),
        }
        let mut query = async |sql: &'static str| {
            let read = conn.link.query("the catalog", sql);
            match tokio::time::timeout(Duration::from_secs(15), read).await {
                Ok(Ok(outcome)) => Ok(outcome.rows),
                Ok(Err(error)) => Err(CatalogError::Read(error.to_string())),
                Err(_) => Err(CatalogError::Read(ExchangeError::Timeout.to_string())),
            }
        };
        let views = query(VIEWS_QUERY).await?;
        let functions = query(FUNCTIONS_QUERY).await?;
        let triggers = query(TRIGGERS_QUERY).await?;
        let cascades = query(CASCADES_QUERY).await?;
        let snapshot = Arc::new(Snapshot::from_rows(
            views, functions, triggers, cascades, analyzer,
        ));
        tracing::debug!(elapsed = ?started.elapsed(), views = snapshot.views.len(), "read the MySQL catalog");
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Latest {
            snapshot: Arc::clone(&snapshot),
            read_at: started,
            changes,
        });
        metrics.catalog_reads.fetch_add(1, Ordering::Relaxed);
        Ok(snapshot)
    }
}

type Rows = Vec<Vec<Option<Bytes>>>;

fn text(field: Option<&Option<Bytes>>) -> String {
    field
        .and_then(Option::as_ref)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default()
}

fn name(row: &[Option<Bytes>]) -> String {
    format!("{}.{}", text(row.first()), text(row.get(1)))
}

impl Snapshot {
    /// A snapshot from the rows of the four catalog queries.
    fn from_rows(
        views: Rows,
        functions: Rows,
        triggers: Rows,
        cascades: Rows,
        analyzer: &AnalysisMemo,
    ) -> Snapshot {
        Snapshot {
            views: views
                .iter()
                .map(|row| {
                    // A definition the user may not see is empty: it parses as nothing
                    // cacheable.
                    let definition = text(row.get(2));
                    (name(row), analyzer.analyze(Dialect::Mysql, &definition))
                })
                .collect(),
            functions: functions
                .iter()
                .map(|row| {
                    let access = text(row.get(3));
                    let declared = Function {
                        deterministic: text(row.get(2)) == "YES",
                        reads: access == "READS SQL DATA" || access == "MODIFIES SQL DATA",
                        modifies: access == "MODIFIES SQL DATA",
                    };
                    (name(row), declared)
                })
                .collect(),
            reaching: triggers
                .iter()
                .chain(&cascades)
                .map(|row| name(row))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::Analyzer;

    fn memo() -> AnalysisMemo {
        AnalysisMemo::new(Analyzer::with_builtin_rules(Default::default()), 64)
    }

    fn row(fields: &[&str]) -> Vec<Option<Bytes>> {
        fields
            .iter()
            .map(|f| Some(Bytes::copy_from_slice(f.as_bytes())))
            .collect()
    }

    fn snapshot(memo: &AnalysisMemo) -> Snapshot {
        Snapshot::from_rows(
            vec![
                row(&[
                    "shop",
                    "totals",
                    "select `shop`.`orders`.`id` AS `id` from `shop`.`orders`",
                ]),
                row(&["shop", "lucky", "select rand() AS `r` from `shop`.`orders`"]),
                row(&["shop", "outer", "select `id` from `shop`.`totals`"]),
            ],
            vec![
                row(&["shop", "tax", "YES", "NO SQL"]),
                row(&["shop", "stock", "YES", "READS SQL DATA"]),
                row(&["shop", "roll", "NO", "NO SQL"]),
            ],
            vec![row(&["shop", "audited"])],
            vec![row(&["shop", "customers"])],
            memo,
        )
    }

    fn refined(sql: &str, database: Option<&str>) -> Analysis {
        let memo = memo();
        let analysis = memo.analyze(Dialect::Mysql, sql);
        let rules = memo.analyzer().rules(Dialect::Mysql);
        snapshot(&memo)
            .refine(&analysis, database, rules)
            .unwrap_or_else(|| (*analysis).clone())
    }

    #[test]
    fn views_count_as_their_base_tables_and_volatile_ones_are_volatile() {
        let read = refined("SELECT * FROM outer", Some("shop"));
        assert_eq!(read.status, Status::Cacheable);
        assert_eq!(read.tables_read, ["shop.orders"]);
        let read = refined("SELECT * FROM shop.lucky", None);
        assert_eq!(read.status, Status::Volatile);
        let read = refined("SELECT * FROM `Orders`", Some("Shop"));
        assert_eq!(read.tables_read, ["shop.orders"]);
    }

    #[test]
    fn deterministic_functions_are_cacheable_and_their_reads_unknown() {
        let read = refined("SELECT tax(price) FROM orders", Some("shop"));
        assert_eq!(read.status, Status::Cacheable);
        assert!(!read.reads_unknown_tables);
        let read = refined("SELECT shop.stock(1)", None);
        assert_eq!(read.status, Status::Cacheable);
        assert!(read.reads_unknown_tables);
        assert_eq!(
            refined("SELECT roll(1)", Some("shop")).status,
            Status::Volatile
        );
        assert_eq!(
            refined("SELECT tax(1), @x", Some("shop")).status,
            Status::Volatile
        );
        assert_eq!(
            refined("SELECT missing(1)", Some("shop")).status,
            Status::Volatile
        );
    }

    #[test]
    fn server_tables_change_with_any_write() {
        let read = refined("SELECT * FROM information_schema.tables", Some("shop"));
        assert!(read.reads_unknown_tables);
    }

    #[test]
    fn writes_reach_view_bases_and_triggers_reach_everything() {
        let memo = memo();
        let snapshot = snapshot(&memo);
        let tables = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            snapshot.write_set(tables(&["shop.outer"])),
            WriteSet::Tables(BTreeSet::from([
                "shop.orders".to_owned(),
                "shop.outer".to_owned(),
                "shop.totals".to_owned()
            ]))
        );
        assert_eq!(
            snapshot.write_set(tables(&["shop.audited"])),
            WriteSet::Everything
        );
        let rules = memo.analyzer().rules(Dialect::Mysql);
        let calls = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(snapshot.calls_only_readers(&calls(&["now", "tax"]), Some("shop"), rules));
        assert!(!snapshot.calls_only_readers(&calls(&["tax"]), Some("other"), rules));
        assert!(!snapshot.calls_only_readers(&calls(&["missing"]), Some("shop"), rules));
        assert_eq!(
            snapshot.write_set(tables(&["shop.customers"])),
            WriteSet::Everything
        );
    }
}
