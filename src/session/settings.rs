//! A client's session settings: its startup parameters plus what it `SET` since, as
//! PostgreSQL would hold them, and the SQL that makes a pooled connection match.
//!
//! Each setting is kept as the statement that replays it: `SET "timezone" TO 'UTC'` for
//! a client's own SET (its value SQL as written), `SELECT pg_catalog.set_config(…)` for a
//! startup parameter, whose value is a plain string (so `search_path=app,public` names
//! two schemas, as in PostgreSQL). Changes made inside a transaction only count when it
//! commits; a rollback discards them, as in PostgreSQL. `SET LOCAL` never reaches here.

use std::collections::BTreeMap;

use crate::analyze::SessionEffect;

/// Quotes text as a SQL string literal (standard_conforming_strings on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Quotes a name as a SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

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

/// A client's settings.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    startup: SettingMap,
    current: SettingMap,
    /// Changes made inside the open transaction, applied when it commits.
    in_transaction: Vec<SessionEffect>,
}

impl Settings {
    /// The settings of a new session.
    pub fn new(startup: SettingMap) -> Settings {
        Settings {
            current: startup.clone(),
            startup,
            in_transaction: Vec::new(),
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

    /// Records effects of statements that succeeded. `in_transaction` says whether they
    /// ran inside a transaction block that is still open; `connection` is the serving
    /// connection's settings, which follow the same changes.
    pub fn record(
        &mut self,
        effects: &[SessionEffect],
        in_transaction: bool,
        connection: &mut SettingMap,
    ) {
        if in_transaction {
            self.in_transaction.extend(effects.iter().cloned());
        } else {
            for effect in effects {
                self.apply(effect, connection);
            }
        }
    }

    /// The open transaction ended: its changes count only if it committed.
    pub fn end_transaction(&mut self, committed: bool, connection: &mut SettingMap) {
        let effects = std::mem::take(&mut self.in_transaction);
        if committed {
            for effect in &effects {
                self.apply(effect, connection);
            }
        }
    }

    /// Whether changes are waiting for the transaction's end.
    pub fn has_pending(&self) -> bool {
        !self.in_transaction.is_empty()
    }

    /// DISCARD ALL answered for this client: back to the startup values.
    pub fn discard_all(&mut self) {
        self.current = self.startup.clone();
        self.in_transaction.clear();
    }

    fn apply(&mut self, effect: &SessionEffect, connection: &mut SettingMap) {
        match effect {
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
                self.current = self.startup.clone();
                connection.clear();
            }
            SessionEffect::DiscardAll
            | SessionEffect::Deallocate { .. }
            | SessionEffect::Pin { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> SettingMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(name: &str, value: &str) -> SessionEffect {
        SessionEffect::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn sync_sql_sets_and_resets_only_differences() {
        let zone = set_statement("timezone", "'UTC'");
        let app = set_config_statement("application_name", "psql");
        let settings = Settings::new(map(&[("timezone", &zone), ("application_name", &app)]));
        assert_eq!(settings.sync_sql(&settings.current().clone()), None);
        let sql = settings
            .sync_sql(&map(&[("timezone", &zone), ("search_path", "x")]))
            .expect("differs");
        assert_eq!(
            sql,
            "RESET \"search_path\";SELECT pg_catalog.set_config('application_name', 'psql', false);"
        );
    }

    #[test]
    fn transaction_changes_count_only_on_commit() {
        let mut settings = Settings::new(SettingMap::new());
        let mut connection = SettingMap::new();
        settings.record(&[set("search_path", "app")], true, &mut connection);
        assert!(settings.current().is_empty() && settings.has_pending());
        settings.end_transaction(false, &mut connection);
        assert!(settings.current().is_empty() && !settings.has_pending());
        settings.record(&[set("search_path", "app")], true, &mut connection);
        settings.end_transaction(true, &mut connection);
        let expected = map(&[("search_path", "SET \"search_path\" TO app")]);
        assert_eq!(settings.current(), &expected);
        assert_eq!(connection, expected);
    }

    #[test]
    fn reset_returns_to_startup_values() {
        let utc = set_config_statement("timezone", "UTC");
        let mut settings = Settings::new(map(&[("timezone", &utc)]));
        let mut connection = settings.current().clone();
        settings.record(
            &[set("timezone", "'Asia/Tokyo'"), set("search_path", "x")],
            false,
            &mut connection,
        );
        settings.record(
            &[SessionEffect::Reset {
                name: "timezone".into(),
            }],
            false,
            &mut connection,
        );
        let path = set_statement("search_path", "x");
        assert_eq!(
            settings.current(),
            &map(&[("timezone", &utc), ("search_path", &path)])
        );
        // The origin's RESET went back to the connection's own default, so a sync is due.
        assert!(
            settings
                .sync_sql(&connection)
                .expect("differs")
                .contains("'UTC'")
        );
        settings.record(&[SessionEffect::ResetAll], false, &mut connection);
        assert_eq!(settings.current(), &map(&[("timezone", &utc)]));
        assert!(connection.is_empty());
    }

    #[test]
    fn options_parse_like_postgres() {
        assert_eq!(
            parse_options("-c search_path=app,public --statement-timeout=5s -cwork_mem=64MB")
                .expect("valid"),
            vec![
                ("search_path".to_owned(), "app,public".to_owned()),
                ("statement_timeout".to_owned(), "5s".to_owned()),
                ("work_mem".to_owned(), "64MB".to_owned()),
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=my\ app").expect("valid"),
            vec![("application_name".to_owned(), "my app".to_owned())]
        );
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-x foo").is_err());
        assert!(parse_options("-c novalue").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
