//! What a statement writes that a cached read may depend on: the relations it names as
//! written, the functions only the origin's catalog can clear of writing, or anything at
//! all (DDL, CALL, DO, EXECUTE, EXPLAIN ANALYZE, a function the rules declare volatile
//! that is not the database's own, a statement warpdrive cannot read).
//!
//! Conservative by construction: a statement is said to write nothing only when it is on
//! the allow-list below; everything else may write anything.

use serde::Serialize;
use sqlparser::ast::{CascadeOption, Statement};

use super::lex::Lead;
use super::rules::Rules;
use super::statement::Class;
use super::walk::Facts;
use super::{Kind, Volatility};

/// What one statement may write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Writes {
    /// Relations it writes, as named (resolved as the dialect resolves names).
    pub tables: Vec<String>,
    /// Every function it calls: a user function may write, unless the origin's catalog
    /// declares it immutable or stable (PostgreSQL refuses writes in those), and a user
    /// function may carry a built-in's name (an overload in the search path). Only the
    /// catalog can clear them.
    pub calls: Vec<String>,
    /// The operators it applies: a user operator runs its function.
    pub operators: Vec<String>,
    /// The last parts of its `x.name` references: a column, or a call of a user
    /// function `name(x)`.
    pub attributes: Vec<String>,
    /// It may write what warpdrive cannot name: the whole database.
    pub anything: bool,
}

impl Writes {
    /// A statement that may write anything.
    pub fn anything() -> Writes {
        Writes {
            anything: true,
            ..Writes::default()
        }
    }

    /// Whether it writes nothing at all.
    pub fn is_nothing(&self) -> bool {
        !self.anything
            && self.tables.is_empty()
            && self.calls.is_empty()
            && self.operators.is_empty()
            && self.attributes.is_empty()
    }

    /// Adds what `other` writes.
    pub fn absorb(&mut self, other: &Writes) {
        self.anything |= other.anything;
        for table in &other.tables {
            if !self.tables.contains(table) {
                self.tables.push(table.clone());
            }
        }
        for (mine, theirs) in [
            (&mut self.calls, &other.calls),
            (&mut self.operators, &other.operators),
            (&mut self.attributes, &other.attributes),
        ] {
            for name in theirs {
                if !mine.contains(name) {
                    mine.push(name.clone());
                }
            }
        }
    }
}

/// What a parsed statement of this class may write, from what its walk found.
pub(crate) fn of(statement: &Statement, class: &Class, found: &Facts, rules: &Rules) -> Writes {
    let kind = class.kind;
    let explains_by_running = matches!(statement, Statement::Explain { analyze: true, .. });
    let tables: Vec<String> = found.written().iter().cloned().collect();
    let volatile_user_function = found.functions().iter().any(|name| {
        !rules.is_builtin_function(name)
            && rules
                .function(name)
                .is_some_and(|rule| rule.class == Volatility::Volatile)
    });
    // TRUNCATE … CASCADE empties every table with a foreign key to it, whatever its
    // ON DELETE action: more than the catalog's cascades.
    let truncates_referencing_tables = matches!(
        statement,
        Statement::Truncate(truncate) if truncate.cascade == Some(CascadeOption::Cascade)
    );
    let anything = volatile_user_function
        || truncates_referencing_tables
        || match kind {
            Kind::Write => tables.is_empty() || matches!(statement, Statement::Call(_)),
            Kind::Read => found.changes_data() && tables.is_empty(),
            Kind::Ddl | Kind::Unknown => true,
            Kind::Session => matches!(statement, Statement::Execute { .. }),
            Kind::Transaction | Kind::Empty => false,
            Kind::Utility => {
                !class.changes_no_data
                    || explains_by_running
                    || (found.changes_data() && tables.is_empty())
            }
        };
    Writes {
        tables,
        calls: found.functions().iter().cloned().collect(),
        operators: found.operators().iter().cloned().collect(),
        attributes: found.attributes().iter().cloned().collect(),
        anything,
    }
}

/// What a statement sqlparser could not parse may write, by its leading words: nothing
/// only for settings, plain transaction control and a few utilities; else anything.
pub(crate) fn of_unparsed(lead: &Lead) -> Writes {
    let harmless = match (lead.first.as_str(), lead.second.as_str()) {
        ("PREPARE", "TRANSACTION") | ("COMMIT" | "ROLLBACK", "PREPARED") => false,
        (
            "SET" | "RESET" | "DISCARD" | "USE" | "PREPARE" | "DEALLOCATE" | "LISTEN" | "UNLISTEN"
            | "BEGIN" | "START" | "COMMIT" | "END" | "ABORT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE"
            | "SHOW" | "DESCRIBE" | "DESC" | "NOTIFY" | "VACUUM" | "ANALYZE" | "ANALYSE"
            | "CLUSTER" | "REINDEX" | "CHECKPOINT" | "LOCK" | "UNLOCK" | "FETCH" | "MOVE" | "CLOSE",
            _,
        ) => true,
        _ => false,
    };
    match harmless {
        true => Writes::default(),
        false => Writes::anything(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions, Dialect};

    fn writes(sql: &str) -> Writes {
        let analyzer = Analyzer::with_builtin_rules(AnalyzerOptions::default());
        analyzer.analyze(Dialect::Postgres, sql).writes()
    }

    #[test]
    fn data_changes_name_their_tables() {
        for (sql, table) in [
            ("INSERT INTO shop.prices VALUES (1)", "shop.prices"),
            ("UPDATE prices SET p = 2", "prices"),
            ("DELETE FROM prices WHERE id = 1", "prices"),
            (
                "MERGE INTO prices p USING n ON p.id = n.id WHEN MATCHED THEN DELETE",
                "prices",
            ),
            ("TRUNCATE prices", "prices"),
            ("COPY prices FROM STDIN", "prices"),
            (
                "WITH d AS (DELETE FROM prices RETURNING *) SELECT * FROM d",
                "prices",
            ),
            ("SELECT * INTO archive FROM prices", "archive"),
        ] {
            let writes = writes(sql);
            assert!(!writes.anything, "{sql}: {writes:?}");
            assert!(
                writes.tables.contains(&table.to_owned()),
                "{sql}: {writes:?}"
            );
        }
    }

    #[test]
    fn code_ddl_and_what_cannot_be_named_may_write_anything() {
        for sql in [
            "CALL refresh_all()",
            "DO $$ BEGIN DELETE FROM prices; END $$",
            "CREATE INDEX ON prices (p)",
            "ALTER TABLE prices ADD COLUMN q int",
            "EXECUTE stmt(1)",
            "EXPLAIN ANALYZE DELETE FROM prices",
            "REFRESH MATERIALIZED VIEW totals",
            "COMMIT PREPARED 'tx'",
            "PREPARE TRANSACTION 'tx'",
            "GRANT SELECT ON prices TO app",
            "TRUNCATE prices CASCADE",
            "this is not sql",
        ] {
            assert!(writes(sql).anything, "{sql} should write anything");
        }
    }

    #[test]
    fn reads_settings_and_transaction_control_write_nothing() {
        for sql in [
            "SELECT * FROM prices",
            "SET search_path = shop",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "ROLLBACK TO SAVEPOINT a",
            "PREPARE s AS SELECT 1",
            "SHOW work_mem",
            "VACUUM prices",
            "EXPLAIN SELECT * FROM prices",
            "COPY prices TO STDOUT",
            "",
        ] {
            assert!(writes(sql).is_nothing(), "{sql}: {:?}", writes(sql));
        }
    }

    #[test]
    fn calls_and_operators_are_for_the_catalog_to_clear() {
        let writes = writes("SELECT my_func(1), length('x'), 1 ### 2 FROM t AS a WHERE a.f > 0");
        assert!(!writes.anything);
        for call in ["my_func", "length"] {
            assert!(writes.calls.contains(&call.to_owned()), "{writes:?}");
        }
        assert!(writes.operators.contains(&"###".to_owned()), "{writes:?}");
        assert_eq!(writes.attributes, vec!["f".to_owned()]);
    }
}
