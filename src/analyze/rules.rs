//! Volatility rules: which functions and relations make a result uncacheable.
//!
//! The rules are data, not code: `rules/postgres.toml` is generated from a real
//! PostgreSQL catalog (`pg_proc.provolatile`) by `rules/gen-postgres-rules.sh`, plus
//! curated overrides for functions the catalog calls stable whose answer depends on the
//! pooled connection; `rules/mysql.toml` is curated from the MySQL and MariaDB manuals.
//! Both are compiled in as the defaults; a file given at run time is merged over them.
//!
//! File format (every table optional in an override file; unknown keys are refused):
//!
//! ```toml
//! [meta]
//! dialect = "postgres"          # must match the dialect the file is loaded for
//! source = "where the entries come from"
//!
//! [functions]                   # lower-case name, or "schema.name"
//! lower = "immutable"
//! now = "stable"
//! pg_backend_pid = { class = "volatile", reason = "differs per pooled connection" }
//!
//! [relations]                   # lower-case name or "schema.name"; a trailing * is a prefix
//! "pg_stat_*" = { class = "volatile", reason = "statistics change without writes" }
//!
//! [session]                     # user functions: can they change the caller's session?
//! "app.set_tenant" = "unsafe"   # overrides what warpdrive reads in the function's body
//! "st_*" = { safety = "safe", reason = "PostGIS, written in C; keeps no session state" }
//! ```
//!
//! A function that is called but not listed is treated as volatile: the analyzer cannot
//! know what a user-defined function does. A relation that is not listed is an ordinary
//! table. For relations an exact entry beats a pattern, and a longer pattern beats a
//! shorter one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Dialect;

const POSTGRES_RULES: &str = include_str!("../../rules/postgres.toml");
const MYSQL_RULES: &str = include_str!("../../rules/mysql.toml");

/// How a function's or relation's answer may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Volatility {
    /// Same arguments, same answer, forever.
    Immutable,
    /// Same answer within one statement; may change with the clock, the session's
    /// settings, or the catalog. Cacheable unless the deployment bypasses them.
    Stable,
    /// May change from one call to the next, or depends on the connection that runs it.
    Volatile,
}

impl fmt::Display for Volatility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Volatility::Immutable => "immutable",
            Volatility::Stable => "stable",
            Volatility::Volatile => "volatile",
        })
    }
}

/// A rule for one function or relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its volatility class.
    pub class: Volatility,
    /// Why, when the class is not simply the catalog's.
    pub reason: Option<String>,
}

/// Errors loading a rules file. Each names the file and the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the rules shape.
    #[error("rules file {origin} is invalid: {message}")]
    Syntax {
        /// The file (or "built-in postgres rules").
        origin: String,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// The file says it is for another dialect.
    #[error("rules file {origin} is for dialect {found:?} but was loaded for {expected}")]
    WrongDialect {
        /// The file.
        origin: String,
        /// What [meta].dialect says.
        found: String,
        /// The dialect it was loaded for.
        expected: Dialect,
    },
    /// A key is not lower case, or a pattern's `*` is not at the end.
    #[error(
        "rules file {origin}: [{table}] key {key:?} is invalid: names must be lower case, and `*` may only end a relation pattern"
    )]
    BadKey {
        /// The file.
        origin: String,
        /// `functions` or `relations`.
        table: &'static str,
        /// The key.
        key: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    meta: RawMeta,
    #[serde(default)]
    functions: HashMap<String, RawRule>,
    #[serde(default)]
    relations: HashMap<String, RawRule>,
    #[serde(default)]
    session: HashMap<String, RawSessionRule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSessionRule {
    Safety(SessionSafety),
    Explained {
        safety: SessionSafety,
        reason: Option<String>,
    },
}

impl From<RawSessionRule> for SessionRule {
    fn from(raw: RawSessionRule) -> SessionRule {
        match raw {
            RawSessionRule::Safety(safety) => SessionRule {
                safety,
                reason: None,
            },
            RawSessionRule::Explained { safety, reason } => SessionRule { safety, reason },
        }
    }
}

/// Whether a user-defined function can change the state of the session that calls it
/// (settings, locks, temporary objects, prepared statements, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionSafety {
    /// It cannot: its callers stay pooled.
    Safe,
    /// It can: a client that calls it keeps its origin connection.
    Unsafe,
}

/// A rule saying whether a function is session-safe, overriding the reading of its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRule {
    /// Safe or not.
    pub safety: SessionSafety,
    /// Why, as the rules file says.
    pub reason: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    dialect: Option<String>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRule {
    Class(Volatility),
    Explained {
        class: Volatility,
        reason: Option<String>,
    },
}

impl From<RawRule> for Rule {
    fn from(raw: RawRule) -> Rule {
        match raw {
            RawRule::Class(class) => Rule {
                class,
                reason: None,
            },
            RawRule::Explained { class, reason } => Rule { class, reason },
        }
    }
}

/// A key's pattern prefix: `Some(None)` for an exact key, `Some(Some(prefix))` for a
/// pattern ending in `*`, `None` for an invalid key (not lower case, or a `*` elsewhere).
fn pattern_prefix(key: &str) -> Option<Option<&str>> {
    let star = key.find('*');
    if key != key.to_lowercase() || star.is_some_and(|at| at + 1 != key.len()) {
        return None;
    }
    Some(key.strip_suffix('*'))
}

/// The volatility rules of one dialect.
#[derive(Clone, Debug)]
pub struct Rules {
    dialect: Dialect,
    sources: Vec<String>,
    functions: HashMap<String, Rule>,
    relations: HashMap<String, Rule>,
    /// Relation prefix patterns, longest first.
    relation_patterns: Vec<(String, Rule)>,
    session: HashMap<String, SessionRule>,
    /// Session-safety prefix patterns, longest first.
    session_patterns: Vec<(String, SessionRule)>,
    /// The functions of the built-in rules: the database's own, and the SQL syntax that
    /// reads like a call (`coalesce`, `current_date`, …).
    builtin_functions: std::collections::HashSet<String>,
}

impl Rules {
    /// The rules compiled into warpdrive for `dialect`.
    pub fn builtin(dialect: Dialect) -> Rules {
        let text = match dialect {
            Dialect::Postgres => POSTGRES_RULES,
            Dialect::Mysql => MYSQL_RULES,
        };
        let origin = format!("built-in {dialect} rules");
        let mut rules = Rules::parse(dialect, text, &origin)
            .expect("the built-in rules are checked by the unit tests");
        rules.builtin_functions = rules.functions.keys().cloned().collect();
        rules
    }

    /// Parses rules from TOML text. `origin` names the text in errors.
    pub fn parse(dialect: Dialect, text: &str, origin: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules {
            dialect,
            sources: Vec::new(),
            functions: HashMap::new(),
            relations: HashMap::new(),
            relation_patterns: Vec::new(),
            session: HashMap::new(),
            session_patterns: Vec::new(),
            builtin_functions: std::collections::HashSet::new(),
        };
        rules.merge_text(text, origin)?;
        Ok(rules)
    }

    /// These rules with the entries of the file at `path` merged over them.
    pub fn with_overrides_from(mut self, path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.merge_text(&text, &path.display().to_string())?;
        Ok(self)
    }

    fn merge_text(&mut self, text: &str, origin: &str) -> Result<(), RulesError> {
        let raw: RawRules = toml::from_str(text).map_err(|error| RulesError::Syntax {
            origin: origin.to_owned(),
            message: error.to_string(),
        })?;
        if let Some(found) = raw.meta.dialect
            && found != self.dialect.name()
        {
            return Err(RulesError::WrongDialect {
                origin: origin.to_owned(),
                found,
                expected: self.dialect,
            });
        }
        let bad_key = |table: &'static str, key: &str| RulesError::BadKey {
            origin: origin.to_owned(),
            table,
            key: key.to_owned(),
        };
        for (name, rule) in raw.functions {
            if name != name.to_lowercase() || name.contains('*') {
                return Err(bad_key("functions", &name));
            }
            self.functions.insert(name, rule.into());
        }
        for (name, rule) in raw.relations {
            let prefix = pattern_prefix(&name).ok_or_else(|| bad_key("relations", &name))?;
            match prefix {
                Some(prefix) => {
                    self.relation_patterns.retain(|(known, _)| known != prefix);
                    self.relation_patterns
                        .push((prefix.to_owned(), rule.into()));
                }
                None => {
                    self.relations.insert(name, rule.into());
                }
            }
        }
        for (name, rule) in raw.session {
            let prefix = pattern_prefix(&name).ok_or_else(|| bad_key("session", &name))?;
            match prefix {
                Some(prefix) => {
                    self.session_patterns.retain(|(known, _)| known != prefix);
                    self.session_patterns.push((prefix.to_owned(), rule.into()));
                }
                None => {
                    self.session.insert(name, rule.into());
                }
            }
        }
        let longest_first = |a: &String, b: &String| b.len().cmp(&a.len()).then_with(|| a.cmp(b));
        self.relation_patterns
            .sort_by(|a, b| longest_first(&a.0, &b.0));
        self.session_patterns
            .sort_by(|a, b| longest_first(&a.0, &b.0));
        self.sources
            .push(raw.meta.source.unwrap_or_else(|| origin.to_owned()));
        Ok(())
    }

    /// Where the entries came from, in merge order.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The rule for a function, by its resolved lower-case name (`"lower"`,
    /// `"myschema.f"`). `None` means unknown, which callers treat as volatile.
    pub fn function(&self, name: &str) -> Option<&Rule> {
        self.functions.get(name)
    }

    /// The rule for a relation by its resolved name (`"pg_locks"`,
    /// `"performance_schema.threads"`): an exact entry, else the longest matching pattern.
    pub fn relation(&self, name: &str) -> Option<&Rule> {
        self.relations.get(name).or_else(|| {
            self.relation_patterns
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|(_, rule)| rule)
        })
    }

    /// Whether the rules declare a user function session-safe or not: an exact entry for
    /// its `"schema.name"` or its bare name, else the longest pattern matching either.
    pub fn session(&self, schema: &str, name: &str) -> Option<&SessionRule> {
        let qualified = format!("{schema}.{name}");
        self.session
            .get(&qualified)
            .or_else(|| self.session.get(name))
            .or_else(|| {
                self.session_patterns
                    .iter()
                    .find(|(prefix, _)| {
                        qualified.starts_with(prefix.as_str()) || name.starts_with(prefix.as_str())
                    })
                    .map(|(_, rule)| rule)
            })
    }

    /// Whether a function is one of the built-in rules' (the database's own or SQL
    /// syntax), whatever a rules file of the user's says about it.
    pub fn is_builtin_function(&self, name: &str) -> bool {
        self.builtin_functions.contains(name)
    }

    /// Number of function entries.
    pub fn function_count(&self) -> usize {
        self.functions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load_for_both_dialects() {
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            let rules = Rules::builtin(dialect);
            assert!(
                rules.function_count() > 200,
                "{dialect}: {}",
                rules.function_count()
            );
        }
    }

    /// The generated and curated files keep their keys sorted, lower case and unique, so
    /// that a regeneration shows as a readable diff.
    #[test]
    fn builtin_rule_files_are_sorted_lower_case_and_unique() {
        for (name, text) in [("postgres", POSTGRES_RULES), ("mysql", MYSQL_RULES)] {
            let mut table = String::new();
            let mut keys: Vec<String> = Vec::new();
            for line in text.lines().chain(std::iter::once("[end]")) {
                let line = line.trim();
                if line.starts_with('[') {
                    let mut sorted = keys.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(
                        keys, sorted,
                        "{name}.toml [{table}] is not sorted and unique"
                    );
                    table = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                    keys.clear();
                } else if let Some((key, _)) = line.split_once('=')
                    && !line.starts_with('#')
                    && table != "meta"
                {
                    let key = key.trim().trim_matches('"').to_owned();
                    assert_eq!(
                        key,
                        key.to_lowercase(),
                        "{name}.toml key {key} is not lower case"
                    );
                    keys.push(key);
                }
            }
        }
    }

    #[test]
    fn builtin_functions_stay_builtin_under_overrides() {
        let rules = Rules::builtin(Dialect::Postgres);
        assert!(rules.is_builtin_function("coalesce"));
        assert!(rules.is_builtin_function("lower"));
        assert!(!rules.is_builtin_function("slugify"));
    }

    #[test]
    fn postgres_catalog_classes_and_overrides() {
        let rules = Rules::builtin(Dialect::Postgres);
        let class = |name: &str| rules.function(name).map(|rule| rule.class);
        assert_eq!(class("lower"), Some(Volatility::Immutable));
        assert_eq!(class("now"), Some(Volatility::Stable));
        assert_eq!(class("current_timestamp"), Some(Volatility::Stable));
        assert_eq!(class("random"), Some(Volatility::Volatile));
        assert_eq!(class("nextval"), Some(Volatility::Volatile));
        for connection_bound in [
            "pg_backend_pid",
            "inet_client_addr",
            "inet_server_port",
            "txid_current",
            "pg_current_xact_id",
            "pg_stat_get_numscans",
        ] {
            let rule = rules.function(connection_bound).expect(connection_bound);
            assert_eq!(rule.class, Volatility::Volatile, "{connection_bound}");
            assert!(rule.reason.is_some(), "{connection_bound} has no reason");
        }
    }

    #[test]
    fn relation_patterns_and_exact_entries() {
        let rules = Rules::builtin(Dialect::Postgres);
        let class = |name: &str| rules.relation(name).map(|rule| rule.class);
        assert_eq!(class("pg_stat_activity"), Some(Volatility::Volatile));
        assert_eq!(class("pg_statio_user_tables"), Some(Volatility::Volatile));
        assert_eq!(class("pg_locks"), Some(Volatility::Volatile));
        assert_eq!(class("pg_class"), None);
        assert_eq!(class("users"), None);
        let mysql = Rules::builtin(Dialect::Mysql);
        assert_eq!(
            mysql
                .relation("performance_schema.threads")
                .map(|r| r.class),
            Some(Volatility::Volatile)
        );
        assert_eq!(
            mysql
                .relation("information_schema.processlist")
                .map(|r| r.class),
            Some(Volatility::Volatile)
        );
        assert_eq!(mysql.relation("information_schema.tables"), None);
    }

    #[test]
    fn overrides_replace_entries_and_exact_beats_pattern() {
        let rules = Rules::parse(
            Dialect::Postgres,
            r#"
            [functions]
            f = "volatile"
            [relations]
            "stats_*" = "volatile"
            "stats_daily_*" = "stable"
            "#,
            "test",
        )
        .expect("parses");
        let rules = {
            let dir = std::env::temp_dir().join(format!("warpdrive-rules-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("override.toml");
            std::fs::write(
                &path,
                "[functions]\nf = { class = \"immutable\", reason = \"pure\" }\n[relations]\nstats_summary = \"stable\"\n",
            )
            .expect("write");
            let merged = rules.with_overrides_from(&path).expect("merges");
            std::fs::remove_dir_all(&dir).expect("cleanup");
            merged
        };
        assert_eq!(
            rules.function("f").map(|r| r.class),
            Some(Volatility::Immutable)
        );
        let class = |name: &str| rules.relation(name).map(|rule| rule.class);
        assert_eq!(class("stats_summary"), Some(Volatility::Stable));
        assert_eq!(class("stats_daily_2024"), Some(Volatility::Stable));
        assert_eq!(class("stats_hourly"), Some(Volatility::Volatile));
        assert_eq!(rules.sources().len(), 2);
        assert_eq!(rules.sources()[0], "test");
        assert!(rules.sources()[1].ends_with("override.toml"));
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_named() {
        let upper = Rules::parse(
            Dialect::Postgres,
            "[functions]\nRandom = \"volatile\"\n",
            "f.toml",
        )
        .expect_err("upper case refused");
        assert!(upper.to_string().contains("\"Random\""), "{upper}");
        let class = Rules::parse(
            Dialect::Postgres,
            "[functions]\nf = \"sometimes\"\n",
            "f.toml",
        )
        .expect_err("bad class refused");
        assert!(class.to_string().contains("f.toml"), "{class}");
        let unknown = Rules::parse(Dialect::Postgres, "[funtions]\nf = \"stable\"\n", "f.toml")
            .expect_err("unknown table refused");
        assert!(unknown.to_string().contains("funtions"), "{unknown}");
        let dialect = Rules::parse(Dialect::Mysql, "[meta]\ndialect = \"postgres\"\n", "f.toml")
            .expect_err("wrong dialect refused");
        assert!(matches!(dialect, RulesError::WrongDialect { .. }));
        let star = Rules::parse(
            Dialect::Postgres,
            "[relations]\n\"a*b\" = \"volatile\"\n",
            "f.toml",
        )
        .expect_err("inner star refused");
        assert!(matches!(star, RulesError::BadKey { .. }));
        let safety = Rules::parse(Dialect::Postgres, "[session]\nf = \"maybe\"\n", "f.toml")
            .expect_err("bad safety refused");
        assert!(safety.to_string().contains("f.toml"), "{safety}");
    }

    #[test]
    fn session_rules_by_qualified_then_bare_name() {
        let rules = Rules::parse(
            Dialect::Postgres,
            r#"
            [session]
            "app.set_tenant" = "unsafe"
            set_tenant = { safety = "safe", reason = "only in tests" }
            "st_*" = "safe"
            "app.st_*" = "unsafe"
            "#,
            "test",
        )
        .expect("parses");
        let safety = |schema: &str| rules.session(schema, "set_tenant").map(|r| r.safety);
        assert_eq!(safety("app"), Some(SessionSafety::Unsafe));
        assert_eq!(safety("public"), Some(SessionSafety::Safe));
        assert_eq!(rules.session("app", "other"), None);
        let pattern = |schema: &str| rules.session(schema, "st_distance").map(|r| r.safety);
        assert_eq!(pattern("public"), Some(SessionSafety::Safe));
        assert_eq!(pattern("app"), Some(SessionSafety::Unsafe));
    }
}
