//! The client's session state as warpdrive tracks it (current database, system
//! variables that differ from a fresh connection's, multi-statements), what the origin's
//! session-state reports change in it, and the commands that bring an origin
//! connection's state to the client's on checkout.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::pool::mysql::{Baseline, SessionState};
use crate::wire::mysql::command::code;
use crate::wire::mysql::reply::StateChange;

/// System variables that do not move between connections: setting one pins the client.
const PINNING_VARIABLES: &[&str] = &[
    "sql_log_bin",
    "pseudo_thread_id",
    "timestamp",
    "insert_id",
    "last_insert_id",
    "identity",
    "rand_seed1",
    "rand_seed2",
    "session_track_system_variables",
    "session_track_schema",
    "session_track_state_change",
    "session_track_transaction_info",
    "gtid_next",
];

/// The character-set variables, in the order SET must apply them (the collation last:
/// setting character_set_connection resets it).
const CHARSET_VARIABLES: [&str; 4] = [
    "character_set_client",
    "character_set_results",
    "character_set_connection",
    "collation_connection",
];

/// The variables that change how the origin parses a statement's text (and so what a
/// prepared statement is): quoting, and the character set of its literals.
const PARSE_VARIABLES: [&str; 4] = [
    "sql_mode",
    "character_set_client",
    "character_set_connection",
    "collation_connection",
];

/// What a statement prepared under `state` is on a connection: its text, with the
/// database its names resolve in and the settings it was parsed under. Two clients'
/// statements share an origin statement only when all of these match.
pub fn statement_key(sql: &[u8], state: &SessionState, baseline: &Baseline) -> Bytes {
    let mut key = BytesMut::with_capacity(sql.len() + 64);
    key.put_slice(state.database.as_deref().unwrap_or_default().as_bytes());
    key.put_u8(0);
    for name in PARSE_VARIABLES {
        let value = state.variables.get(name).or(baseline.variables.get(name));
        key.put_slice(value.map(String::as_bytes).unwrap_or_default());
        key.put_u8(0);
    }
    key.put_slice(sql);
    key.freeze()
}

/// `state` with the database and parse settings of `context`: what a connection must be
/// in to prepare a statement as the client prepared it under `context`.
pub fn with_parse_context(state: &SessionState, context: &SessionState) -> SessionState {
    let mut out = state.clone();
    // Prepared without a database, its names are qualified: any database will do.
    if context.database.is_some() {
        out.database = context.database.clone();
    }
    for name in PARSE_VARIABLES {
        match context.variables.get(name) {
            Some(value) => out.variables.insert(name.to_owned(), value.clone()),
            None => out.variables.remove(name),
        };
    }
    out
}

/// What a reply's state changes mean for the session.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// A change that cannot move between connections: pin, for this reason.
    pub pins: Option<String>,
    /// The origin reported a change of state it did not detail.
    pub undetailed: bool,
}

/// Applies `name = value` to `state`, recorded only where it differs from a fresh
/// connection.
fn set_variable(state: &mut SessionState, baseline: &Baseline, name: String, value: String) {
    if baseline.variables.get(&name) == Some(&value) {
        state.variables.remove(&name);
    } else {
        state.variables.insert(name, value);
    }
}

/// The state of a client that logged in with `collation` and `database`.
pub fn initial(
    baseline: &Baseline,
    collation: u8,
    database: Option<String>,
    multi_statements: bool,
) -> SessionState {
    let mut state = SessionState {
        database,
        variables: BTreeMap::new(),
        multi_statements,
    };
    if let Some((charset, collation)) = baseline.collations.get(&collation) {
        for name in &CHARSET_VARIABLES[..3] {
            set_variable(&mut state, baseline, (*name).to_owned(), charset.clone());
        }
        set_variable(
            &mut state,
            baseline,
            CHARSET_VARIABLES[3].to_owned(),
            collation.clone(),
        );
    }
    state
}

/// Takes in the changes one OK reported, in the client's state and in its connection's
/// (both now hold them).
pub fn adopt(
    changes: &[StateChange],
    baseline: &Baseline,
    client: &mut SessionState,
    conn: &mut SessionState,
) -> Adopted {
    let mut adopted = Adopted::default();
    for change in changes {
        match change {
            StateChange::Variable { name, value } => {
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                let value = String::from_utf8_lossy(value).into_owned();
                if PINNING_VARIABLES.contains(&name.as_str()) {
                    adopted.pins.get_or_insert(format!("SET {name}"));
                }
                set_variable(client, baseline, name.clone(), value.clone());
                set_variable(conn, baseline, name, value);
            }
            StateChange::Schema(database) => {
                let database = String::from_utf8_lossy(database).into_owned();
                client.database = Some(database.clone());
                conn.database = Some(database);
            }
            StateChange::State => adopted.undetailed = true,
            StateChange::Other(_) => {}
        }
    }
    adopted
}

/// A variable's value as SQL: numbers bare, the rest quoted; an empty
/// character_set_results is NULL (no conversion).
fn sql_value(name: &str, value: &str) -> String {
    if value.is_empty() && name == "character_set_results" {
        return "NULL".to_owned();
    }
    let numeric = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && value.parse::<f64>().is_ok();
    if numeric {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// One step that brings a connection to a client's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// COM_INIT_DB.
    UseDatabase(String),
    /// One SET statement for every variable that differs.
    Set(String),
    /// COM_SET_OPTION.
    MultiStatements(bool),
}

impl Step {
    /// The command that takes it.
    pub fn command(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Step::UseDatabase(database) => {
                out.put_u8(code::INIT_DB);
                out.put_slice(database.as_bytes());
            }
            Step::Set(sql) => {
                out.put_u8(code::QUERY);
                out.put_slice(sql.as_bytes());
            }
            Step::MultiStatements(on) => {
                out.put_u8(code::SET_OPTION);
                out.put_u16_le(if *on { 0 } else { 1 });
            }
        }
        out.freeze()
    }
}

/// The steps from `conn`'s state to `want`, none when they match. A variable either
/// side lacks has its fresh-connection value; one the baseline lacks too cannot be put
/// back, nor can a connection with a current database serve a client without one,
/// which `None` says (the connection must not serve this client).
pub fn steps<'a>(
    conn: &'a SessionState,
    want: &'a SessionState,
    baseline: &'a Baseline,
) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    match (&want.database, &conn.database) {
        (Some(database), current) if current.as_ref() != Some(database) => {
            steps.push(Step::UseDatabase(database.clone()));
        }
        // MySQL has no way back to no database (short of COM_CHANGE_USER).
        (None, Some(_)) => return None,
        _ => {}
    }
    let names: std::collections::BTreeSet<&'a String> =
        conn.variables.keys().chain(want.variables.keys()).collect();
    let mut assignments: Vec<(usize, String)> = Vec::new();
    for name in names {
        let value_of =
            |state: &'a SessionState| state.variables.get(name).or(baseline.variables.get(name));
        let target = value_of(want)?;
        if value_of(conn) != Some(target) {
            let order = CHARSET_VARIABLES
                .iter()
                .position(|v| v == name)
                .unwrap_or(0);
            assignments.push((order, format!("{name} = {}", sql_value(name, target))));
        }
    }
    if !assignments.is_empty() {
        assignments.sort_by_key(|(order, _)| *order);
        let list: Vec<String> = assignments.into_iter().map(|(_, a)| a).collect();
        steps.push(Step::Set(format!("SET SESSION {}", list.join(", "))));
    }
    if conn.multi_statements != want.multi_statements {
        steps.push(Step::MultiStatements(want.multi_statements));
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Baseline {
        let mut baseline = Baseline::default();
        for (name, value) in [
            ("sql_mode", "STRICT_TRANS_TABLES"),
            ("time_zone", "SYSTEM"),
            ("autocommit", "ON"),
            ("character_set_client", "utf8mb4"),
            ("character_set_results", "utf8mb4"),
            ("character_set_connection", "utf8mb4"),
            ("collation_connection", "utf8mb4_general_ci"),
            ("max_statement_time", "0.000000"),
        ] {
            baseline.variables.insert(name.to_owned(), value.to_owned());
        }
        baseline
            .collations
            .insert(8, ("latin1".to_owned(), "latin1_swedish_ci".to_owned()));
        baseline
            .collations
            .insert(45, ("utf8mb4".to_owned(), "utf8mb4_general_ci".to_owned()));
        baseline
    }

    fn variable(name: &'static str, value: &'static str) -> StateChange {
        StateChange::Variable {
            name: Bytes::from_static(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
        }
    }

    #[test]
    fn a_connection_with_a_database_cannot_serve_a_client_without_one() {
        let baseline = baseline();
        let none = SessionState::default();
        let in_shop = SessionState {
            database: Some("shop".into()),
            ..SessionState::default()
        };
        assert_eq!(steps(&in_shop, &none, &baseline), None);
        assert_eq!(
            steps(&none, &in_shop, &baseline),
            Some(vec![Step::UseDatabase("shop".into())])
        );
    }

    #[test]
    fn a_fresh_client_with_the_origins_charset_needs_nothing() {
        let baseline = baseline();
        let client = initial(&baseline, 45, Some("shop".into()), true);
        assert!(client.variables.is_empty());
        let conn = SessionState {
            database: Some("shop".into()),
            multi_statements: true,
            ..SessionState::default()
        };
        assert_eq!(steps(&conn, &client, &baseline), Some(vec![]));
        let latin1 = initial(&baseline, 8, Some("shop".into()), true);
        assert_eq!(
            steps(&conn, &latin1, &baseline),
            Some(vec![Step::Set(
                "SET SESSION character_set_client = 'latin1', character_set_results = 'latin1', character_set_connection = 'latin1', collation_connection = 'latin1_swedish_ci'".into()
            )])
        );
    }

    #[test]
    fn adopted_changes_are_put_back_where_they_differ() {
        let baseline = baseline();
        let mut client = initial(&baseline, 45, Some("shop".into()), true);
        let mut conn = client.clone();
        let adopted = adopt(
            &[
                variable("sql_mode", "ANSI"),
                StateChange::Schema(Bytes::from_static(b"crm")),
                StateChange::State,
            ],
            &baseline,
            &mut client,
            &mut conn,
        );
        assert_eq!(
            adopted,
            Adopted {
                pins: None,
                undetailed: true
            }
        );
        assert_eq!(client, conn);
        let fresh = initial(&baseline, 45, Some("shop".into()), true);
        // Another client on this connection: the database and sql_mode go back.
        assert_eq!(
            steps(&conn, &fresh, &baseline),
            Some(vec![
                Step::UseDatabase("shop".into()),
                Step::Set("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'".into())
            ])
        );
        // Setting it back to the default forgets it.
        adopt(
            &[variable("sql_mode", "STRICT_TRANS_TABLES")],
            &baseline,
            &mut client,
            &mut conn,
        );
        assert!(client.variables.is_empty());
        let numeric = SessionState {
            variables: [("max_statement_time".to_owned(), "5.000000".to_owned())].into(),
            ..fresh.clone()
        };
        assert_eq!(
            steps(&numeric, &fresh, &baseline),
            Some(vec![Step::Set(
                "SET SESSION max_statement_time = 0.000000".into()
            )])
        );
    }

    #[test]
    fn statements_are_told_apart_by_database_and_parse_settings() {
        let baseline = baseline();
        let shop = initial(&baseline, 45, Some("shop".into()), true);
        let crm = initial(&baseline, 45, Some("crm".into()), true);
        let latin1 = initial(&baseline, 8, Some("shop".into()), true);
        let sql = b"SELECT v FROM t";
        let key = |state: &SessionState| statement_key(sql, state, &baseline);
        assert_eq!(key(&shop), key(&shop.clone()));
        assert_ne!(key(&shop), key(&crm));
        assert_ne!(key(&shop), key(&latin1));
        let mut ansi = shop.clone();
        ansi.variables
            .insert("sql_mode".into(), "ANSI_QUOTES".into());
        assert_ne!(key(&shop), key(&ansi));
        let mut zoned = shop.clone();
        zoned.variables.insert("time_zone".into(), "+01:00".into());
        assert_eq!(
            key(&shop),
            key(&zoned),
            "the time zone does not change parsing"
        );
        let back = with_parse_context(&crm, &ansi);
        assert_eq!(back.database.as_deref(), Some("shop"));
        assert_eq!(
            back.variables.get("sql_mode").map(String::as_str),
            Some("ANSI_QUOTES")
        );
        assert_eq!(
            with_parse_context(&ansi, &crm).variables.get("sql_mode"),
            None
        );
    }

    #[test]
    fn unrestorable_and_pinning_variables() {
        let baseline = baseline();
        let mut client = initial(&baseline, 45, None, true);
        let mut conn = client.clone();
        let adopted = adopt(
            &[variable("sql_log_bin", "OFF")],
            &baseline,
            &mut client,
            &mut conn,
        );
        assert_eq!(adopted.pins.as_deref(), Some("SET sql_log_bin"));
        let unknown = SessionState {
            variables: [("mystery".to_owned(), "1".to_owned())].into(),
            ..SessionState::default()
        };
        assert_eq!(steps(&unknown, &SessionState::default(), &baseline), None);
        assert_eq!(sql_value("time_zone", "it's"), "'it''s'");
        assert_eq!(sql_value("character_set_results", ""), "NULL");
        assert_eq!(
            Step::MultiStatements(false).command()[..],
            [code::SET_OPTION, 1, 0]
        );
    }
}
