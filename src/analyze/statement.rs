//! What kind of statement: an explicit allow-list over sqlparser's `Statement`.
//!
//! Only `Statement::Query` can be cacheable; the walk then decides. Every other variant
//! is named with its kind and refusal, and the wildcard arm refuses, so that a
//! sqlparser upgrade that adds statements never makes one of them cacheable.
//!
//! [`classify_unparsed`] classifies, by its leading words, a statement sqlparser could
//! not parse: a statement that begins with `VACUUM` or `DO` is never a read, whatever
//! follows. Only text that begins like a read is a `parseerror`.

use sqlparser::ast::Statement;

use super::lex::Lead;
use super::{Analysis, Kind, Reason, Status};

/// The statement-level verdict: a kind, and unless the statement is a read, its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    pub kind: Kind,
    /// `None` for a read, whose status the walk decides.
    pub refusal: Option<(Status, Reason)>,
    /// A utility statement that changes no data a read can see (SHOW, VACUUM, LOCK,
    /// cursors, COPY TO, EXPLAIN, …; EXPLAIN ANALYZE runs what it explains).
    pub changes_no_data: bool,
}

impl Class {
    fn read() -> Class {
        Class {
            kind: Kind::Read,
            refusal: None,
            changes_no_data: false,
        }
    }

    fn refused(kind: Kind, status: Status, why: &str) -> Class {
        Class {
            kind,
            refusal: Some((status, Reason::new(why))),
            changes_no_data: false,
        }
    }

    fn changing_no_data(self) -> Class {
        Class {
            changes_no_data: true,
            ..self
        }
    }

    pub(crate) fn empty() -> Class {
        Class::refused(Kind::Empty, Status::NotAQuery, "empty query")
    }
}

const WRITE: &str = "writes data; writes are forwarded to the origin and never cached";
const DDL: &str = "changes the schema or privileges; forwarded, never cached";
const TRANSACTION: &str = "transaction control is not a query; forwarded";
const SESSION: &str = "changes session state; not a query, forwarded";
const INFORMATIONAL: &str = "informational statement, not a query; forwarded";
const UTILITY: &str =
    "utility statement (maintenance, locking, cursors, EXPLAIN, COPY); forwarded, never cached";
const CALL: &str = "runs procedural code (CALL/DO), which may write; never cached";
const NOT_ALLOWED: &str =
    "statement type is not on warpdrive's allow-list of cacheable reads; forwarded";

/// Classifies one parsed statement.
pub(crate) fn classify(statement: &Statement) -> Class {
    use Kind::*;
    use Status::{NotAQuery, Uncacheable};
    match statement {
        Statement::Query(_) => Class::read(),

        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::LoadData { .. }
        | Statement::Copy { to: false, .. } => Class::refused(Write, Uncacheable, WRITE),
        Statement::Call(_) => Class::refused(Write, Uncacheable, CALL),

        Statement::CreateView(_)
        | Statement::CreateTable(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateRole(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. }
        | Statement::CreateExtension(_)
        | Statement::CreateCollation(_)
        | Statement::CreateOperator(_)
        | Statement::CreateServer(_)
        | Statement::CreateUser(_)
        | Statement::AlterTable(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterRole { .. }
        | Statement::AlterPolicy(_)
        | Statement::AlterUser(_)
        | Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropPolicy(_)
        | Statement::DropExtension(_)
        | Statement::DropTrigger(_)
        | Statement::Comment { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::RenameTable(_) => Class::refused(Ddl, Uncacheable, DDL),

        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Class::refused(Transaction, NotAQuery, TRANSACTION),

        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::Discard { .. }
        | Statement::Use(_)
        | Statement::Prepare { .. }
        | Statement::Execute { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. } => Class::refused(Session, NotAQuery, SESSION),

        Statement::NOTIFY { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::ExplainTable { .. } => {
            Class::refused(Utility, NotAQuery, INFORMATIONAL).changing_no_data()
        }

        Statement::Explain { .. }
        | Statement::Copy { to: true, .. }
        | Statement::Vacuum(_)
        | Statement::Analyze(_)
        | Statement::Lock(_)
        | Statement::LockTables { .. }
        | Statement::UnlockTables
        | Statement::OptimizeTable { .. }
        | Statement::Flush { .. }
        | Statement::Kill { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => {
            Class::refused(Utility, Uncacheable, UTILITY).changing_no_data()
        }
        Statement::Load { .. } => Class::refused(Utility, Uncacheable, UTILITY),

        _ => Class::refused(Utility, Uncacheable, NOT_ALLOWED),
    }
}

/// Classifies a statement sqlparser refused, by its leading words.
fn classify_lead(lead: &Lead) -> Class {
    use Kind::*;
    use Status::{NotAQuery, ParseError, Uncacheable};
    match (lead.first.as_str(), lead.second.as_str()) {
        ("PREPARE", "TRANSACTION") | ("COMMIT" | "ROLLBACK", "PREPARED") => {
            Class::refused(Transaction, NotAQuery, TRANSACTION)
        }
        ("CHECK", "TABLE") | ("SECURITY", "LABEL") => Class::refused(Utility, Uncacheable, UTILITY),
        ("DO" | "CALL", _) => Class::refused(Write, Uncacheable, CALL),
        (
            "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "REPLACE" | "UPSERT" | "TRUNCATE" | "LOAD"
            | "REFRESH",
            _,
        ) => Class::refused(Write, Uncacheable, WRITE),
        ("CREATE" | "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "RENAME" | "IMPORT", _) => {
            Class::refused(Ddl, Uncacheable, DDL)
        }
        (
            "VACUUM" | "ANALYZE" | "ANALYSE" | "CLUSTER" | "REINDEX" | "CHECKPOINT" | "COPY"
            | "OPTIMIZE" | "REPAIR" | "HANDLER" | "FLUSH" | "KILL" | "LOCK" | "UNLOCK" | "EXPLAIN"
            | "DECLARE" | "FETCH" | "MOVE" | "CLOSE",
            _,
        ) => Class::refused(Utility, Uncacheable, UTILITY),
        ("XA", _) => Class::refused(Transaction, Uncacheable, TRANSACTION),
        (
            "SET" | "RESET" | "DISCARD" | "USE" | "PREPARE" | "EXECUTE" | "DEALLOCATE" | "LISTEN"
            | "UNLISTEN",
            _,
        ) => Class::refused(Session, NotAQuery, SESSION),
        ("SHOW" | "DESCRIBE" | "DESC" | "NOTIFY", _) => {
            Class::refused(Utility, NotAQuery, INFORMATIONAL)
        }
        (
            "BEGIN" | "START" | "COMMIT" | "END" | "ABORT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE",
            _,
        ) => Class::refused(Transaction, NotAQuery, TRANSACTION),
        ("SELECT" | "WITH" | "VALUES" | "TABLE" | "(", _) => Class::refused(Read, ParseError, ""),
        _ => Class::refused(Unknown, ParseError, ""),
    }
}

/// The analysis of text sqlparser refused: several statements are
/// `multiplestatements` (unless the text is one `CREATE` whose body holds semicolons,
/// such as a `BEGIN ATOMIC` function); one statement is classified by its leading words.
pub(crate) fn classify_unparsed(leads: &[Lead], parser_message: &str) -> Analysis {
    let classes: Vec<Class> = leads.iter().map(classify_lead).collect();
    let kind = classes
        .iter()
        .map(|class| class.kind)
        .min()
        .unwrap_or(Kind::Unknown);
    let creates_a_body = leads.first().is_some_and(|lead| lead.first == "CREATE");
    if leads.len() > 1 && !creates_a_body {
        return Analysis::verdict(
            Status::MultipleStatements,
            kind,
            leads.len(),
            Reason::new(format!(
                "{} statements in one query string; each is forwarded, none is cached",
                leads.len()
            )),
        );
    }
    let first = classes.into_iter().next().unwrap_or_else(Class::empty);
    let (status, reason) = first
        .refusal
        .unwrap_or((Status::ParseError, Reason::new("")));
    let reason = if status == Status::ParseError {
        Reason::new(format!("could not parse the query: {parser_message}"))
    } else {
        reason
    };
    Analysis::verdict(status, first.kind, 1, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(first: &str, second: &str) -> Lead {
        Lead {
            first: first.into(),
            second: second.into(),
        }
    }

    #[test]
    fn unparsed_non_reads_are_classified_by_their_leading_words() {
        let cases = [
            (lead("VACUUM", "("), Status::Uncacheable, Kind::Utility),
            (lead("DO", "$$x$$"), Status::Uncacheable, Kind::Write),
            (
                lead("REFRESH", "MATERIALIZED"),
                Status::Uncacheable,
                Kind::Write,
            ),
            (
                lead("PREPARE", "TRANSACTION"),
                Status::NotAQuery,
                Kind::Transaction,
            ),
            (lead("PREPARE", "S"), Status::NotAQuery, Kind::Session),
            (lead("SELECT", "A"), Status::ParseError, Kind::Read),
            (lead("(", "SELECT"), Status::ParseError, Kind::Read),
            (lead("FROBNICATE", ""), Status::ParseError, Kind::Unknown),
        ];
        for (lead, status, kind) in cases {
            let analysis = classify_unparsed(std::slice::from_ref(&lead), "boom");
            assert_eq!((analysis.status, analysis.kind), (status, kind), "{lead:?}");
        }
    }

    #[test]
    fn unparsed_parse_errors_carry_the_parser_message() {
        let analysis = classify_unparsed(&[lead("SELECT", "A")], "Expected: foo");
        assert_eq!(
            analysis.reasons[0].as_str(),
            "could not parse the query: Expected: foo"
        );
    }

    #[test]
    fn unparsed_several_statements_are_multiple_unless_one_create_body() {
        let two = [lead("SELECT", "1"), lead("VACUUM", "(")];
        let analysis = classify_unparsed(&two, "boom");
        assert_eq!(analysis.status, Status::MultipleStatements);
        assert_eq!(analysis.kind, Kind::Utility);
        let body = [
            lead("CREATE", "FUNCTION"),
            lead("SELECT", "2"),
            lead("END", ""),
        ];
        assert_eq!(classify_unparsed(&body, "boom").status, Status::Uncacheable);
    }
}
