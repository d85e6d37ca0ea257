//! A client's session settings: its startup parameters plus what it `SET` since, as
//! PostgreSQL would hold them, and the SQL that makes a pooled connection match.
//!
//! Each setting is kept as the statement that replays it: `SET "timezone" TO 'UTC'` for
//! a client's own SET (its value SQL as written), `SELECT pg_catalog.set_config(…)` for a
//! startup parameter, whose value is a plain string (so `search_path=app,public` names
//! two schemas, as in PostgreSQL). Changes made inside a transaction only count when it
//! commits; a rollback (of the transaction, or to a savepoint before them) undoes them,
//! as in PostgreSQL. `SET LOCAL` never reaches here.

use std::collections::BTreeMap;

use crate::analyze::SessionEffect;

/// Quotes text as a SQL string literal that reads the same whatever the connection's
/// `standard_conforming_strings`: an escape string (`E'…'`) when it holds a backslash.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Quotes a name as a SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The setting that decides how PostgreSQL reads backslashes in string literals; the
/// origin reports its value (ParameterStatus) whenever it changes.
pub const STANDARD_CONFORMING_STRINGS: &str = "standard_conforming_strings";

/// Settings as name (lower case) → the statement that applies the value.
pub type SettingMap = BTreeMap<String, String>;

/// The statement that applies a value written as SQL (from a client's SET).
pub fn set_statement(name: &str, value_sql: &str) -> String {
    format!("SET {} TO {value_sql}", quote_identifier(name))
}

/// The statement that applies a plain string value (from a startup parameter).
pub fn set_config_statement(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

/// Parses the startup packet's `options` value: `-c name=value` and `--name=value`
/// pairs separated by spaces, where a backslash escapes the next character.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words
                .next()
                .ok_or_else(|| "\"-c\" in options is not followed by name=value".to_owned())?
        } else if let Some(pair) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            pair.to_owned()
        } else {
            return Err(format!(
                "startup option {word:?} is not supported; only \"-c name=value\" settings are"
            ));
        };
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("startup option {pair:?} is not name=value"))?;
        settings.push((name.replace('-', "_").to_lowercase(), value.to_owned()));
    }
    Ok(settings)
}

/// The SQL that brings a connection holding `on_connection` to `desired`, or `None`
/// when they already match: RESET for what only the connection has, the replay
/// statement for every value that differs.
pub fn sync_sql(desired: &SettingMap, on_connection: &SettingMap) -> Option<String> {
    if on_connection == desired {
        return None;
    }
    let mut sql = String::new();
    for name in on_connection
        .keys()
        .filter(|name| !desired.contains_key(*name))
    {
        sql.push_str(&format!("RESET {};", quote_identifier(name)));
    }
    for (name, statement) in desired {
        if on_connection.get(name) != Some(statement) {
            sql.push_str(statement);
            sql.push(';');
        }
    }
    Some(sql)
}

/// Settings PostgreSQL's `RESET ALL` leaves alone (they are only reset by `DISCARD ALL`,
/// or by name).
const KEPT_BY_RESET_ALL: [&str; 2] = ["role", "session_authorization"];

/// What one request (a simple query, or a batch up to Sync) did at the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether an error ended it.
    pub failed: bool,
    /// Number of its statements that completed (CommandComplete, or an empty query's
    /// reply) before the end or the error: the error, if any, was in the next one.
    pub completed: usize,
    /// Whether the origin reported a transaction block open after it.
    pub in_transaction: bool,
}

/// warpdrive cannot tell which settings a request left on the connection (a transaction
/// control statement that PostgreSQL would have refused succeeded, an unknown
/// savepoint): only the connection itself knows, so the client must keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("settings changed in a way warpdrive cannot follow across connections")]
pub struct Untracked;

/// The client's and the connection's settings at one point of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    client: SettingMap,
    connection: SettingMap,
}

/// A transaction block, as far as settings are concerned.
#[derive(Clone, Debug)]
struct Transaction {
    /// The settings when it began: a rollback returns to them.
    base: Snapshot,
    /// Savepoints, oldest first, with the settings when each was set.
    savepoints: Vec<(String, Snapshot)>,
    /// An error aborted it: COMMIT now rolls back.
    aborted: bool,
    /// The implicit block PostgreSQL opens for one request (a query string, or the
    /// messages up to Sync) outside a transaction: it commits at the request's end, and
    /// a BEGIN inside the request turns it into an explicit block that keeps what ran
    /// before the BEGIN.
    implicit: bool,
}

/// A client's settings.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    startup: SettingMap,
    current: SettingMap,
    transaction: Option<Transaction>,
}

impl Settings {
    /// The settings of a new session.
    pub fn new(startup: SettingMap) -> Settings {
        Settings {
            current: startup.clone(),
            startup,
            transaction: None,
        }
    }

    /// The values in force.
    pub fn current(&self) -> &SettingMap {
        &self.current
    }

    /// The SQL that brings a connection holding `on_connection` to this client's
    /// settings, or `None` when they already match.
    pub fn sync_sql(&self, on_connection: &SettingMap) -> Option<String> {
        sync_sql(&self.current, on_connection)
    }

    /// Follows one request's effects (one list per statement, in order), given what the
    /// origin said of it. `connection` is the serving connection's settings, which change
    /// alike. As in PostgreSQL, the request runs in an implicit transaction block unless
    /// one is open: a ROLLBACK in it undoes what the request did before, a BEGIN turns it
    /// into a transaction that keeps what ran before the BEGIN, and an error undoes the
    /// block (or aborts the transaction, whose end then undoes it).
    pub fn settle(
        &mut self,
        statements: &[Vec<SessionEffect>],
        outcome: Outcome,
        connection: &mut SettingMap,
    ) -> Result<(), Untracked> {
        let touches = statements.iter().flatten().any(|effect| {
            effect.changes_settings() || matches!(effect, SessionEffect::Transaction(_))
        });
        if touches {
            if self.transaction.is_none() {
                self.open(true, connection);
            }
            let followed = statements
                .iter()
                .take(outcome.completed)
                .flatten()
                .try_for_each(|effect| self.follow(effect, connection));
            if outcome.failed {
                self.abort(connection);
            }
            if self.transaction.as_ref().is_some_and(|t| t.implicit) {
                // The request ended: its implicit block commits.
                self.transaction = None;
            }
            followed?;
        }
        self.reconcile(outcome, connection)
    }

    /// Brings the transaction warpdrive follows in line with the origin's status.
    fn reconcile(
        &mut self,
        outcome: Outcome,
        connection: &mut SettingMap,
    ) -> Result<(), Untracked> {
        match (&mut self.transaction, outcome.in_transaction) {
            (Some(transaction), true) => {
                transaction.aborted |= outcome.failed;
                Ok(())
            }
            (None, false) => Ok(()),
            (Some(_), false) if outcome.failed => {
                // The error ended the transaction (a COMMIT that failed): rolled back.
                self.roll_back(connection);
                Ok(())
            }
            (Some(transaction), false) => {
                // Ended by a statement warpdrive did not recognise (PREPARE TRANSACTION, …):
                // harmless unless settings changed inside it.
                let unchanged = transaction.base.client == self.current;
                self.transaction = None;
                if unchanged { Ok(()) } else { Err(Untracked) }
            }
            (None, true) => {
                self.open(false, connection);
                if let Some(transaction) = self.transaction.as_mut() {
                    transaction.aborted = outcome.failed;
                }
                Ok(())
            }
        }
    }

    fn snapshot(&self, connection: &SettingMap) -> Snapshot {
        Snapshot {
            client: self.current.clone(),
            connection: connection.clone(),
        }
    }

    fn restore(&mut self, snapshot: Snapshot, connection: &mut SettingMap) {
        self.current = snapshot.client;
        *connection = snapshot.connection;
    }

    fn roll_back(&mut self, connection: &mut SettingMap) {
        if let Some(transaction) = self.transaction.take() {
            self.restore(transaction.base, connection);
        }
    }

    fn open(&mut self, implicit: bool, connection: &SettingMap) {
        self.transaction = Some(Transaction {
            base: self.snapshot(connection),
            savepoints: Vec::new(),
            aborted: false,
            implicit,
        });
    }

    /// An error: an implicit block rolls back at once; an explicit one is aborted and
    /// rolls back when it ends.
    fn abort(&mut self, connection: &mut SettingMap) {
        match self.transaction.as_mut() {
            Some(transaction) if transaction.implicit => self.roll_back(connection),
            Some(transaction) => transaction.aborted = true,
            None => {}
        }
    }

    /// The explicit transaction, or `Untracked` where PostgreSQL would have refused a
    /// statement that needs one (which therefore did not succeed as warpdrive believes).
    fn explicit(&mut self) -> Result<&mut Transaction, Untracked> {
        self.transaction
            .as_mut()
            .filter(|transaction| !transaction.implicit)
            .ok_or(Untracked)
    }

    fn follow(
        &mut self,
        effect: &SessionEffect,
        connection: &mut SettingMap,
    ) -> Result<(), Untracked> {
        use crate::analyze::TransactionControl as Control;
        match effect {
            SessionEffect::Transaction(control) => match control {
                Control::Begin => match self.transaction.as_mut() {
                    Some(transaction) => transaction.implicit = false,
                    None => self.open(false, connection),
                },
                Control::Commit | Control::CommitAndChain => {
                    let chain = matches!(control, Control::CommitAndChain);
                    let transaction = self.transaction.as_ref().ok_or(Untracked)?;
                    if chain && transaction.implicit {
                        return Err(Untracked);
                    }
                    if transaction.aborted {
                        self.roll_back(connection);
                    }
                    // What follows in the same request runs in a new block.
                    self.open(!chain, connection);
                }
                Control::Rollback | Control::RollbackAndChain => {
                    let chain = matches!(control, Control::RollbackAndChain);
                    if chain && self.transaction.as_ref().is_none_or(|t| t.implicit) {
                        return Err(Untracked);
                    }
                    self.roll_back(connection);
                    self.open(!chain, connection);
                }
                Control::Savepoint(name) => {
                    let snapshot = self.snapshot(connection);
                    self.explicit()?.savepoints.push((name.clone(), snapshot));
                }
                Control::RollbackTo(name) | Control::Release(name) => {
                    let transaction = self.explicit()?;
                    let at = transaction
                        .savepoints
                        .iter()
                        .rposition(|(saved, _)| saved == name)
                        .ok_or(Untracked)?;
                    if matches!(control, Control::RollbackTo(_)) {
                        // The savepoint stays; later ones go.
                        transaction.savepoints.truncate(at + 1);
                        transaction.aborted = false;
                        let snapshot = transaction.savepoints[at].1.clone();
                        self.restore(snapshot, connection);
                    } else {
                        transaction.savepoints.truncate(at);
                    }
                }
            },
            SessionEffect::Set { name, value } => {
                let statement = set_statement(name, value);
                self.current.insert(name.clone(), statement.clone());
                connection.insert(name.clone(), statement);
            }
            SessionEffect::Reset { name } => {
                // The origin resets to the connection's own default; the client's default
                // is its startup value, which the next sync re-applies.
                match self.startup.get(name) {
                    Some(value) => self.current.insert(name.clone(), value.clone()),
                    None => self.current.remove(name),
                };
                connection.remove(name);
            }
            SessionEffect::ResetAll => {
                let kept = |map: &SettingMap| -> SettingMap {
                    map.iter()
                        .filter(|(name, _)| KEPT_BY_RESET_ALL.contains(&name.as_str()))
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect()
                };
                let mut current = self.startup.clone();
                current.extend(kept(&self.current));
                self.current = current;
                *connection = kept(connection);
            }
            SessionEffect::DiscardAll => {
                self.current = self.startup.clone();
                connection.clear();
            }
            SessionEffect::Deallocate { .. }
            | SessionEffect::Pin { .. }
            | SessionEffect::NeedsDatabaseUnused { .. } => {}
        }
        Ok(())
    }

    /// DISCARD ALL answered for this client: back to the startup values.
    pub fn discard_all(&mut self) {
        self.current = self.startup.clone();
        self.transaction = None;
    }
}

#[cfg(test)]
mod tests;
