//! Unit tests of the settings tracker: transactions, savepoints, failures, replay SQL.

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

use crate::analyze::TransactionControl as T;

fn control(control: T) -> SessionEffect {
    SessionEffect::Transaction(control)
}

const OK: Outcome = Outcome {
    failed: false,
    completed: 1,
    in_transaction: false,
};
const OK_IN_TRANSACTION: Outcome = Outcome {
    in_transaction: true,
    ..OK
};

/// Runs requests of one statement each, checking the outcome they are given.
fn run(
    settings: &mut Settings,
    connection: &mut SettingMap,
    requests: &[(SessionEffect, Outcome)],
) {
    for (effect, outcome) in requests {
        settings
            .settle(&[vec![effect.clone()]], *outcome, connection)
            .expect("tracked");
    }
}

#[test]
fn transaction_changes_count_only_on_commit() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    run(
        &mut settings,
        &mut connection,
        &[
            (control(T::Begin), OK_IN_TRANSACTION),
            (set("search_path", "app"), OK_IN_TRANSACTION),
            (control(T::Rollback), OK),
        ],
    );
    assert!(settings.current().is_empty() && connection.is_empty());
    run(
        &mut settings,
        &mut connection,
        &[
            (control(T::Begin), OK_IN_TRANSACTION),
            (set("search_path", "app"), OK_IN_TRANSACTION),
            (control(T::Commit), OK),
        ],
    );
    let expected = map(&[("search_path", "SET \"search_path\" TO app")]);
    assert_eq!(settings.current(), &expected);
    assert_eq!(connection, expected);
}

/// Settles one request of several statements, each with the effects given.
fn request(
    settings: &mut Settings,
    connection: &mut SettingMap,
    statements: &[&[SessionEffect]],
    outcome: Outcome,
) -> Result<(), Untracked> {
    let statements: Vec<Vec<SessionEffect>> = statements.iter().map(|s| s.to_vec()).collect();
    settings.settle(&statements, outcome, connection)
}

fn path(value: &str) -> SettingMap {
    map(&[("search_path", &set_statement("search_path", value))])
}

#[test]
fn a_rollback_in_one_request_undoes_what_came_before_it() {
    // `SET search_path = s2; BEGIN; SET search_path = public; ROLLBACK`: BEGIN absorbs
    // the implicit block, so the ROLLBACK undoes the first SET too.
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    let all = Outcome { completed: 4, ..OK };
    request(
        &mut settings,
        &mut connection,
        &[
            &[set("search_path", "s2")],
            &[control(T::Begin)],
            &[set("search_path", "public")],
            &[control(T::Rollback)],
        ],
        all,
    )
    .expect("tracked");
    assert!(settings.current().is_empty() && connection.is_empty());
    // Without BEGIN too: a ROLLBACK in the implicit block rolls it back.
    request(
        &mut settings,
        &mut connection,
        &[&[set("search_path", "s2")], &[control(T::Rollback)]],
        all,
    )
    .expect("tracked");
    assert!(settings.current().is_empty());
    // A COMMIT keeps what came before; what follows runs in a new block.
    request(
        &mut settings,
        &mut connection,
        &[
            &[set("search_path", "a")],
            &[control(T::Commit)],
            &[set("search_path", "b")],
            &[control(T::Rollback)],
        ],
        all,
    )
    .expect("tracked");
    assert_eq!(settings.current(), &path("a"));
    assert_eq!(connection, path("a"));
}

#[test]
fn an_error_undoes_the_block_it_happened_in() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    // `SET a; SELECT 1/0`: the implicit block rolls back, the SET with it.
    let failed_second = Outcome {
        failed: true,
        completed: 1,
        in_transaction: false,
    };
    request(
        &mut settings,
        &mut connection,
        &[&[set("search_path", "a")], &[]],
        failed_second,
    )
    .expect("tracked");
    assert!(settings.current().is_empty() && connection.is_empty());
    // `SET a; COMMIT; SET b; SELECT 1/0`: only the block after the COMMIT is undone.
    request(
        &mut settings,
        &mut connection,
        &[
            &[set("search_path", "a")],
            &[control(T::Commit)],
            &[set("search_path", "b")],
            &[],
        ],
        Outcome {
            completed: 3,
            ..failed_second
        },
    )
    .expect("tracked");
    assert_eq!(settings.current(), &path("a"));
    // `SET b; BEGIN; SET c; SELECT 1/0; COMMIT`: the transaction is aborted; its end
    // rolls back to before `SET b`, whatever ends it.
    request(
        &mut settings,
        &mut connection,
        &[
            &[set("search_path", "b")],
            &[control(T::Begin)],
            &[set("search_path", "c")],
            &[],
            &[control(T::Commit)],
        ],
        Outcome {
            failed: true,
            completed: 3,
            in_transaction: true,
        },
    )
    .expect("tracked");
    assert_eq!(settings.current(), &path("c"));
    run(&mut settings, &mut connection, &[(control(T::Commit), OK)]);
    assert_eq!(settings.current(), &path("a"));
    assert_eq!(connection, path("a"));
}

#[test]
fn statements_postgres_refuses_outside_a_transaction_are_untracked() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    for refused in [
        control(T::Savepoint("s".into())),
        control(T::Release("s".into())),
        control(T::RollbackAndChain),
    ] {
        assert_eq!(
            request(&mut settings, &mut connection, &[&[refused]], OK),
            Err(Untracked)
        );
    }
}

#[test]
fn savepoints_undo_what_followed_them() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    run(
        &mut settings,
        &mut connection,
        &[
            (control(T::Begin), OK_IN_TRANSACTION),
            (set("search_path", "a"), OK_IN_TRANSACTION),
            (control(T::Savepoint("s".into())), OK_IN_TRANSACTION),
            (set("search_path", "b"), OK_IN_TRANSACTION),
            (
                set("timezone", "'nowhere'"),
                Outcome {
                    failed: true,
                    ..OK_IN_TRANSACTION
                },
            ),
            (control(T::RollbackTo("s".into())), OK_IN_TRANSACTION),
            (control(T::Commit), OK),
        ],
    );
    let expected = map(&[("search_path", "SET \"search_path\" TO a")]);
    assert_eq!(settings.current(), &expected);
    assert_eq!(connection, expected);
    // An unknown savepoint means warpdrive lost track.
    run(
        &mut settings,
        &mut connection,
        &[(control(T::Begin), OK_IN_TRANSACTION)],
    );
    assert_eq!(
        settings.settle(
            &[vec![control(T::Release("nope".into()))]],
            OK_IN_TRANSACTION,
            &mut connection
        ),
        Err(Untracked)
    );
}

#[test]
fn commit_of_a_failed_transaction_rolls_back() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    let failed = Outcome {
        failed: true,
        ..OK_IN_TRANSACTION
    };
    run(
        &mut settings,
        &mut connection,
        &[
            (control(T::Begin), OK_IN_TRANSACTION),
            (set("search_path", "a"), OK_IN_TRANSACTION),
            (control(T::Savepoint("s".into())), failed),
            (control(T::Commit), OK),
        ],
    );
    assert!(settings.current().is_empty() && connection.is_empty());
}

#[test]
fn reset_returns_to_startup_values() {
    let utc = set_config_statement("timezone", "UTC");
    let mut settings = Settings::new(map(&[("timezone", &utc)]));
    let mut connection = settings.current().clone();
    run(
        &mut settings,
        &mut connection,
        &[
            (set("timezone", "'Asia/Tokyo'"), OK),
            (set("search_path", "x"), OK),
            (
                SessionEffect::Reset {
                    name: "timezone".into(),
                },
                OK,
            ),
        ],
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
    run(
        &mut settings,
        &mut connection,
        &[(SessionEffect::ResetAll, OK)],
    );
    assert_eq!(settings.current(), &map(&[("timezone", &utc)]));
    assert!(connection.is_empty());
}

#[test]
fn reset_all_keeps_the_role_as_postgres_does() {
    let mut settings = Settings::new(SettingMap::new());
    let mut connection = SettingMap::new();
    run(
        &mut settings,
        &mut connection,
        &[
            (set("role", "reporting"), OK),
            (set("search_path", "x"), OK),
            (SessionEffect::ResetAll, OK),
        ],
    );
    let role = map(&[("role", &set_statement("role", "reporting"))]);
    assert_eq!(settings.current(), &role);
    assert_eq!(connection, role);
    run(
        &mut settings,
        &mut connection,
        &[(SessionEffect::DiscardAll, OK)],
    );
    assert!(settings.current().is_empty() && connection.is_empty());
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
    assert_eq!(quote_literal(r"a\'b"), r"E'a\\''b'");
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
}
