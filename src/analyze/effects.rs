//! What a statement does to the client's session, for a pooler that multiplexes
//! sessions over shared origin connections.
//!
//! Settings (`SET`, `RESET`) are tracked and replayed on whichever connection serves
//! the client next; `DISCARD ALL` and `DEALLOCATE` are answered for the client alone;
//! state that cannot move between connections (LISTEN, session advisory locks,
//! SQL-level PREPARE, temporary objects, WITH HOLD cursors, variables warpdrive cannot
//! replay) pins the client to its connection. Transaction control is reported too, in
//! statement order, so that settings changed inside a transaction follow its commit,
//! rollback and savepoints as they do in PostgreSQL.

use serde::Serialize;
use sqlparser::ast::{
    ContextModifier, DiscardObject, Expr, Ident, ObjectName, Reset, Set,
    SetSessionAuthorizationParamKind, Statement,
};

use super::lex::Lead;
use super::{Dialect, NameSet};

/// One effect on the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum SessionEffect {
    /// A session-level setting: `SET name TO value` (value as SQL).
    Set {
        /// Lower-case setting name.
        name: String,
        /// The value as SQL text, ready to be replayed after `SET name TO`.
        value: String,
    },
    /// `RESET name` or `SET name TO DEFAULT`.
    Reset {
        /// Lower-case setting name.
        name: String,
    },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`.
    DiscardAll,
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` (`name` is `None`).
    Deallocate {
        /// The statement, or `None` for ALL.
        name: Option<String>,
    },
    /// Session state that stays on the origin connection: the client must keep it.
    Pin {
        /// What it is, for messages and metrics.
        feature: String,
    },
    /// A transaction control statement.
    Transaction(TransactionControl),
    /// The statement needs no other session connected to this database (DROP DATABASE,
    /// ALTER DATABASE, CREATE DATABASE … TEMPLATE): a pooler must let go of it first.
    NeedsDatabaseUnused {
        /// The database, as written (lower case when unquoted).
        database: String,
    },
}

/// Transaction control, as it matters to session settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "control", content = "savepoint", rename_all = "snake_case")]
pub enum TransactionControl {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END` (a rollback when the transaction has failed).
    Commit,
    /// `COMMIT AND CHAIN`: commits and opens a new transaction at once.
    CommitAndChain,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `ROLLBACK AND CHAIN`.
    RollbackAndChain,
    /// `SAVEPOINT name` (name folded as PostgreSQL folds it).
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
}

impl SessionEffect {
    /// Whether the effect may change the setting `name`: it sets or resets it, resets
    /// everything, or leaves the session in a state warpdrive cannot read (a pin).
    pub fn may_change_setting(&self, name: &str) -> bool {
        match self {
            SessionEffect::Set { name: set, .. } | SessionEffect::Reset { name: set } => {
                set == name
            }
            SessionEffect::ResetAll | SessionEffect::DiscardAll | SessionEffect::Pin { .. } => true,
            SessionEffect::Deallocate { .. }
            | SessionEffect::Transaction(_)
            | SessionEffect::NeedsDatabaseUnused { .. } => false,
        }
    }

    /// Whether the effect changes settings warpdrive replays.
    pub fn changes_settings(&self) -> bool {
        matches!(
            self,
            SessionEffect::Set { .. }
                | SessionEffect::Reset { .. }
                | SessionEffect::ResetAll
                | SessionEffect::DiscardAll
        )
    }
}

/// Built-in functions whose effect outlives the statement on the connection that ran it,
/// with what that effect is. Session-level advisory locks (the `_xact_` variants end with
/// the transaction and need nothing); set_config(), which changes settings warpdrive
/// cannot track (and row-level security policies may read them); setseed(), which seeds
/// the connection's random(); backups and replication origins tied to the session.
pub(crate) const SESSION_STATE_FUNCTIONS: [(&str, &str); 10] = [
    ("pg_advisory_lock", ADVISORY_LOCKS),
    ("pg_advisory_lock_shared", ADVISORY_LOCKS),
    ("pg_try_advisory_lock", ADVISORY_LOCKS),
    ("pg_try_advisory_lock_shared", ADVISORY_LOCKS),
    ("get_lock", ADVISORY_LOCKS),
    ("set_config", "set_config()"),
    ("setseed", "setseed()"),
    ("pg_backup_start", "a backup started with pg_backup_start()"),
    ("pg_start_backup", "a backup started with pg_start_backup()"),
    (
        "pg_replication_origin_session_setup",
        "a replication origin set up for the session",
    ),
];

const ADVISORY_LOCKS: &str = "session-level advisory locks";

/// What calling a built-in function leaves on the connection, if anything.
pub(crate) fn session_state_feature(function: &str) -> Option<&'static str> {
    SESSION_STATE_FUNCTIONS
        .iter()
        .find(|(name, _)| *name == function)
        .map(|(_, feature)| *feature)
}

/// The pins for calls of these functions, one per feature.
fn session_state_pins<'a>(functions: impl IntoIterator<Item = &'a str>) -> Vec<SessionEffect> {
    let mut features: Vec<&str> = functions
        .into_iter()
        .filter_map(session_state_feature)
        .collect();
    features.sort_unstable();
    features.dedup();
    features.into_iter().map(pin).collect()
}

/// State that stays on the origin connection, or that warpdrive cannot know.
pub(crate) fn pin(feature: &str) -> SessionEffect {
    SessionEffect::Pin {
        feature: feature.to_owned(),
    }
}

/// A setting value with a backslash in a plain string reads differently on a connection
/// whose `standard_conforming_strings` differs (the replay is read under the
/// connection's setting, not the client's): the client keeps its connection instead.
/// An escape string (`E'…'`) reads the same everywhere.
pub(crate) fn pin_ambiguous_values(statements: &mut [Vec<SessionEffect>]) {
    for effect in statements.iter_mut().flatten() {
        if let SessionEffect::Set { value, .. } = effect
            && value.contains('\\')
            && !(value.starts_with("E'") || value.starts_with("e'"))
        {
            *effect = pin("a setting value with a backslash in a plain string");
        }
    }
}

/// A setting's name as PostgreSQL looks it up: case-insensitive, quotes removed
/// (`SET "TimeZone"` is `timezone`).
fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether a CREATE statement names an object in `pg_temp` (CREATE TYPE, DOMAIN, …,
/// which have no TEMPORARY form).
fn creates_in_pg_temp(statement: &Statement) -> bool {
    let shown = statement.to_string().to_ascii_lowercase();
    shown.starts_with("create ") && shown.contains("pg_temp.")
}

/// Whether a search_path value puts the temporary schema first, so that objects created
/// without a schema are temporary.
fn temporary_first(search_path: &str) -> bool {
    let first = search_path
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase();
    first == "pg_temp" || first.starts_with("pg_temp_")
}

/// Whether a name is in the session's own temporary schema (`pg_temp.x`).
fn in_pg_temp(name: &ObjectName) -> bool {
    name.0.len() > 1
        && name.0[0]
            .as_ident()
            .is_some_and(|schema| schema.value.eq_ignore_ascii_case("pg_temp"))
}

/// A savepoint's name as PostgreSQL folds it: unquoted names are lower case.
fn savepoint_name(name: &Ident) -> String {
    match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_lowercase(),
    }
}

fn transaction(control: TransactionControl) -> SessionEffect {
    SessionEffect::Transaction(control)
}

fn values_sql(values: &[Expr]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn assignment(dialect: Dialect, name: String, value: String) -> SessionEffect {
    if dialect == Dialect::Mysql && name.starts_with('@') {
        return pin("MySQL user variables");
    }
    if dialect == Dialect::Postgres && name == "search_path" && temporary_first(&value) {
        return pin("temporary objects (search_path starts with pg_temp)");
    }
    if value.eq_ignore_ascii_case("default") {
        SessionEffect::Reset { name }
    } else {
        SessionEffect::Set { name, value }
    }
}

fn set_effects(dialect: Dialect, set: &Set) -> Vec<SessionEffect> {
    match set {
        Set::SingleAssignment {
            scope: Some(ContextModifier::Local),
            ..
        }
        | Set::SetTransaction { session: false, .. } => Vec::new(),
        Set::SingleAssignment {
            scope: Some(ContextModifier::Global),
            ..
        } => vec![pin("SET GLOBAL")],
        Set::SingleAssignment {
            variable, values, ..
        } => vec![assignment(
            dialect,
            setting_name(variable),
            values_sql(values),
        )],
        Set::SetTimeZone { local: true, .. } => Vec::new(),
        Set::SetTimeZone { value, .. } => vec![assignment(
            dialect,
            "timezone".to_owned(),
            value.to_string(),
        )],
        Set::SetRole {
            context_modifier: Some(ContextModifier::Local),
            ..
        } => Vec::new(),
        Set::SetRole { role_name, .. } => vec![match role_name {
            Some(role) => SessionEffect::Set {
                name: "role".to_owned(),
                value: role.to_string(),
            },
            None => SessionEffect::Reset {
                name: "role".to_owned(),
            },
        }],
        Set::SetSessionAuthorization(param) => vec![match &param.kind {
            SetSessionAuthorizationParamKind::Default => SessionEffect::Reset {
                name: "session_authorization".to_owned(),
            },
            other => SessionEffect::Set {
                name: "session_authorization".to_owned(),
                value: other.to_string(),
            },
        }],
        Set::SetNames { charset_name, .. } if dialect == Dialect::Postgres => {
            vec![SessionEffect::Set {
                name: "client_encoding".to_owned(),
                value: format!("'{}'", charset_name.value.replace('\'', "''")),
            }]
        }
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|a| assignment(dialect, setting_name(&a.name), a.value.to_string()))
            .collect(),
        _ => vec![pin("a SET form warpdrive does not track")],
    }
}

/// The session effects of one parsed statement, given the functions it calls.
pub(crate) fn effects(
    dialect: Dialect,
    statement: &Statement,
    functions: &NameSet,
) -> Vec<SessionEffect> {
    let mut found = match statement {
        Statement::Set(set) => set_effects(dialect, set),
        Statement::Reset(reset) => vec![match &reset.reset {
            Reset::ALL => SessionEffect::ResetAll,
            Reset::SessionAuthorization => SessionEffect::Reset {
                name: "session_authorization".to_owned(),
            },
            Reset::ConfigurationParameter(name) => SessionEffect::Reset {
                name: setting_name(name),
            },
        }],
        Statement::Discard { object_type } => match object_type {
            DiscardObject::ALL => vec![SessionEffect::DiscardAll],
            DiscardObject::TEMP => Vec::new(),
            _ => Vec::new(),
        },
        Statement::Deallocate { name, .. } => vec![SessionEffect::Deallocate {
            name: (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                .then(|| name.value.clone()),
        }],
        Statement::StartTransaction { .. } => vec![transaction(TransactionControl::Begin)],
        Statement::Commit { chain: false, .. } => vec![transaction(TransactionControl::Commit)],
        Statement::Commit { chain: true, .. } => {
            vec![transaction(TransactionControl::CommitAndChain)]
        }
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => vec![transaction(TransactionControl::RollbackTo(savepoint_name(
            name,
        )))],
        Statement::Rollback { chain, .. } => vec![transaction(if *chain {
            TransactionControl::RollbackAndChain
        } else {
            TransactionControl::Rollback
        })],
        Statement::Savepoint { name } => {
            vec![transaction(TransactionControl::Savepoint(savepoint_name(
                name,
            )))]
        }
        Statement::ReleaseSavepoint { name } => vec![transaction(TransactionControl::Release(
            savepoint_name(name),
        ))],
        Statement::Prepare { .. } => vec![pin("SQL-level PREPARE")],
        Statement::LISTEN { .. } => vec![pin("LISTEN")],
        Statement::CreateTable(create) if create.temporary || in_pg_temp(&create.name) => {
            vec![pin("temporary tables")]
        }
        Statement::CreateView(view) if view.temporary || in_pg_temp(&view.name) => {
            vec![pin("temporary views")]
        }
        Statement::CreateSequence {
            temporary, name, ..
        } if *temporary || in_pg_temp(name) => vec![pin("temporary sequences")],
        Statement::CreateFunction(function) if in_pg_temp(&function.name) => {
            vec![pin("temporary functions")]
        }
        // Every other CREATE of an object in the session's temporary schema (a type, a
        // domain, an index, …), by its name as written.
        create if creates_in_pg_temp(create) => vec![pin("temporary objects")],
        Statement::Declare { stmts } if stmts.iter().any(|d| d.hold == Some(true)) => {
            vec![pin("WITH HOLD cursors")]
        }
        Statement::Query(query) => match query.body.as_select().and_then(|s| s.into.as_ref()) {
            Some(into) if into.temporary => vec![pin("temporary tables")],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    found.extend(session_state_pins(functions.iter().map(String::as_str)));
    found
}

/// What statements sqlparser could not parse may do to the session, guessed from their
/// words. warpdrive cannot replay what it could not read, so session statements,
/// temporary objects, WITH HOLD cursors and the functions of [`SESSION_STATE_FUNCTIONS`]
/// pin the client.
pub(crate) fn unparsed_effects(leads: &[Lead], words: &[String]) -> Vec<SessionEffect> {
    let mut found = Vec::new();
    for lead in leads {
        let feature = match (lead.first.as_str(), lead.second.as_str()) {
            ("PREPARE", "TRANSACTION") => continue,
            ("SET" | "RESET" | "PREPARE" | "LISTEN" | "DISCARD", _) => {
                "a session statement warpdrive could not parse"
            }
            ("CREATE", "TEMP" | "TEMPORARY" | "LOCAL" | "GLOBAL") => "temporary objects",
            ("CREATE", _) if words.iter().any(|w| w == "pg_temp") => "temporary objects",
            ("DECLARE", _) if words.iter().any(|w| w == "hold") => "WITH HOLD cursors",
            _ => continue,
        };
        found.push(pin(feature));
    }
    found.extend(session_state_pins(words.iter().map(String::as_str)));
    found
}

/// Whether a statement's leading words are DDL on a whole database.
pub(crate) fn is_database_ddl(lead: &Lead) -> bool {
    matches!(lead.first.as_str(), "DROP" | "ALTER" | "CREATE") && lead.second == "DATABASE"
}

/// The database a DROP / ALTER / CREATE DATABASE statement needs unused, from its words:
/// the one dropped or altered, or the template copied.
pub(crate) fn database_ddl_effects(words: &[String]) -> Vec<SessionEffect> {
    let database = match words {
        [verb, database, rest @ ..] if verb == "drop" && database == "database" => match rest {
            [if_, exists, name, ..] if if_ == "if" && exists == "exists" => Some(name),
            [name, ..] => Some(name),
            [] => None,
        },
        [verb, database, name, ..] if verb == "alter" && database == "database" => Some(name),
        [verb, database, ..] if verb == "create" && database == "database" => words
            .iter()
            .position(|word| word == "template")
            .and_then(|at| words.get(at + 1)),
        _ => None,
    };
    database
        .map(|database| SessionEffect::NeedsDatabaseUnused {
            database: database.clone(),
        })
        .into_iter()
        .collect()
}

/// What a text the analyzer did not read (too long, not UTF-8, not tokenizable) may do
/// to the session, from a plain case-insensitive scan: naming a function of
/// [`SESSION_STATE_FUNCTIONS`], or beginning like a session statement, a temporary object or a cursor,
/// pins the client. A false alarm only costs pooling for that client; a miss would leave
/// session state on a shared connection.
pub(crate) fn unread_effects(text: &[u8]) -> Vec<SessionEffect> {
    let lowered = String::from_utf8_lossy(text).to_ascii_lowercase();
    let mut found = Vec::new();
    let statement = skip_comments(&lowered);
    let session_statement = [
        "set ", "reset ", "listen ", "prepare ", "discard ", "declare ",
    ]
    .iter()
    .any(|lead| statement.starts_with(lead));
    let temporary = ["create temp", "create local temp", "create global temp"]
        .iter()
        .any(|lead| statement.starts_with(lead));
    if session_statement || temporary {
        found.push(pin("a session statement warpdrive could not read"));
    }
    found.extend(session_state_pins(
        SESSION_STATE_FUNCTIONS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| lowered.contains(name)),
    ));
    found
}

/// The text after leading white space and comments.
fn skip_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return text;
        }
    }
}
