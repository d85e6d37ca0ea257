//! Unit tests of what statements do to the session: settings to replay, transaction
//! control, pins, and code only the catalog can judge.

use super::*;

fn effects(sql: &str) -> Vec<SessionEffect> {
    flat(&pg(sql))
}

fn flat(analysis: &crate::analyze::Analysis) -> Vec<SessionEffect> {
    analysis.effects().cloned().collect()
}

fn set(name: &str, value: &str) -> SessionEffect {
    SessionEffect::Set {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

fn pinned(feature: &str) -> SessionEffect {
    SessionEffect::Pin {
        feature: feature.to_owned(),
    }
}

#[test]
fn session_settings_are_reported_for_replay() {
    assert_eq!(
        effects("SET search_path TO app, public"),
        vec![set("search_path", "app, public")]
    );
    assert_eq!(
        effects("SET TimeZone = 'UTC'"),
        vec![set("timezone", "'UTC'")]
    );
    assert_eq!(
        effects("SET TIME ZONE 'Europe/Paris'"),
        vec![set("timezone", "'Europe/Paris'")]
    );
    assert_eq!(
        effects("SET statement_timeout TO DEFAULT"),
        vec![SessionEffect::Reset {
            name: "statement_timeout".into()
        }]
    );
    assert_eq!(
        effects("SET ROLE reporting"),
        vec![set("role", "reporting")]
    );
    assert_eq!(
        effects("SET NAMES 'LATIN1'"),
        vec![set("client_encoding", "'LATIN1'")]
    );
    assert!(effects("SET LOCAL search_path TO x").is_empty());
    assert!(effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
    assert_eq!(
        effects("RESET search_path"),
        vec![SessionEffect::Reset {
            name: "search_path".into()
        }]
    );
    assert_eq!(effects("RESET ALL"), vec![SessionEffect::ResetAll]);
    assert_eq!(effects("DISCARD ALL"), vec![SessionEffect::DiscardAll]);
    assert_eq!(
        effects("DEALLOCATE ALL"),
        vec![SessionEffect::Deallocate { name: None }]
    );
    assert_eq!(
        effects("DEALLOCATE s1"),
        vec![SessionEffect::Deallocate {
            name: Some("s1".into())
        }]
    );
    assert!(effects("SELECT 1").is_empty());
    assert_eq!(
        effects(r#"SET "TimeZone" = 'UTC'"#),
        vec![set("timezone", "'UTC'")]
    );
}

#[test]
fn transaction_control_is_reported_in_order() {
    use crate::analyze::TransactionControl as T;
    let control = |c| SessionEffect::Transaction(c);
    assert_eq!(
        effects(
            "BEGIN; SET search_path TO x; SAVEPOINT Sp; ROLLBACK TO SAVEPOINT sp; RELEASE \"Q\"; COMMIT"
        ),
        vec![
            control(T::Begin),
            set("search_path", "x"),
            control(T::Savepoint("sp".into())),
            control(T::RollbackTo("sp".into())),
            control(T::Release("Q".into())),
            control(T::Commit),
        ]
    );
    assert_eq!(
        effects("START TRANSACTION READ ONLY"),
        vec![control(T::Begin)]
    );
    assert_eq!(
        effects("COMMIT AND CHAIN"),
        vec![control(T::CommitAndChain)]
    );
    assert_eq!(effects("COMMIT AND NO CHAIN"), vec![control(T::Commit)]);
    assert_eq!(
        effects("ROLLBACK AND CHAIN"),
        vec![control(T::RollbackAndChain)]
    );
    assert_eq!(effects("ABORT"), vec![control(T::Rollback)]);
    assert_eq!(effects("END"), vec![control(T::Commit)]);
}

#[test]
fn texts_not_read_are_scanned_for_session_state() {
    let analyzer = Analyzer::with_builtin_rules(AnalyzerOptions {
        max_query_bytes: 64,
    });
    let long = |sql: &str| format!("{sql} /* {} */", "x".repeat(100));
    let oversized = analyzer.analyze(Dialect::Postgres, &long("SELECT PG_ADVISORY_LOCK(1)"));
    assert_eq!(oversized.status, Status::OversizedQuery);
    assert_eq!(
        flat(&oversized),
        vec![pinned("session-level advisory locks")]
    );
    let set = analyzer.analyze(
        Dialect::Postgres,
        &format!("-- note\n{}", long("SET x = 1")),
    );
    assert_eq!(
        flat(&set),
        vec![pinned("a session statement warpdrive could not read")]
    );
    let insert = analyzer.analyze(Dialect::Postgres, &long("INSERT INTO t VALUES (1)"));
    assert!(flat(&insert).is_empty(), "{:?}", flat(&insert));
    let not_utf8 = analyzer.analyze_bytes(
        Dialect::Postgres,
        b"SELECT set_config('a', '\xff', false)",
        StringLiterals::Standard,
    );
    assert_eq!(flat(&not_utf8), vec![pinned("set_config()")]);
}

#[test]
fn database_ddl_names_the_database_it_needs_unused() {
    let needs = |name: &str| {
        vec![SessionEffect::NeedsDatabaseUnused {
            database: name.to_owned(),
        }]
    };
    assert_eq!(effects("DROP DATABASE shop"), needs("shop"));
    assert_eq!(
        effects("DROP DATABASE IF EXISTS Shop WITH (FORCE)"),
        needs("shop")
    );
    assert_eq!(
        effects("ALTER DATABASE shop RENAME TO store"),
        needs("shop")
    );
    assert_eq!(
        effects("CREATE DATABASE copy WITH TEMPLATE = shop OWNER app"),
        needs("shop")
    );
    assert!(effects("CREATE DATABASE fresh").is_empty());
}

#[test]
fn unparsed_session_statements_pin_the_client() {
    // Text sqlparser refuses: what it does to the session is guessed from its words.
    let unparsed = pg("SET search_path = app,, public");
    assert_eq!(unparsed.status, Status::NotAQuery);
    assert_eq!(
        flat(&unparsed),
        vec![pinned("a session statement warpdrive could not parse")]
    );
    let lock = pg("SELECT pg_advisory_lock(1) FROM t WHERE a::text COLLATE \"C\" = 'x' ,");
    assert_eq!(lock.status, Status::ParseError);
    assert_eq!(flat(&lock), vec![pinned("session-level advisory locks")]);
    assert!(flat(&pg("SELECT a FROM t WHERE ,")).is_empty());
}

#[test]
fn state_that_cannot_move_pins_the_client() {
    assert_eq!(effects("LISTEN jobs"), vec![pinned("LISTEN")]);
    assert_eq!(
        effects("SELECT pg_advisory_lock(42)"),
        vec![pinned("session-level advisory locks")]
    );
    assert!(effects("SELECT pg_advisory_xact_lock(42)").is_empty());
    assert_eq!(
        effects("SELECT set_config('app.tenant', '7', false)"),
        vec![pinned("set_config()")]
    );
    assert_eq!(
        effects("PREPARE q AS SELECT 1"),
        vec![pinned("SQL-level PREPARE")]
    );
    assert_eq!(
        effects("CREATE TEMP TABLE scratch (a int)"),
        vec![pinned("temporary tables")]
    );
    assert_eq!(
        effects("SELECT * INTO TEMP snapshot FROM t"),
        vec![pinned("temporary tables")]
    );
    assert_eq!(
        effects("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
        vec![pinned("WITH HOLD cursors")]
    );
    assert!(effects("DECLARE c CURSOR FOR SELECT 1").is_empty());
    assert_eq!(
        flat(&my("SET @total = 0")),
        vec![pinned("MySQL user variables")]
    );
}

#[test]
fn code_only_the_catalog_can_judge_is_reported() {
    let block = pg("DO $$BEGIN PERFORM set_tenant('8'); END$$");
    assert_eq!(
        block.user_code.blocks,
        vec![crate::analyze::CodeBlock {
            language: "plpgsql".into(),
            body: Some("BEGIN PERFORM set_tenant('8'); END".into()),
        }]
    );
    let quoted = pg("DO LANGUAGE plpython3u 'plpy.notice(''hi'')'");
    assert_eq!(quoted.user_code.blocks[0].language, "plpython3u");
    assert_eq!(
        quoted.user_code.blocks[0].body.as_deref(),
        Some("plpy.notice('hi')")
    );
    assert_eq!(pg("CALL app.refresh(1)").functions, vec!["app.refresh"]);
    let unparsed = pg("SELECT \"SetTenant\"(x)::text COLLATE \"C\" FROM t ,");
    assert_eq!(unparsed.status, Status::ParseError);
    assert!(unparsed.user_code.names.contains(&"SetTenant".to_owned()));
    assert!(unparsed.user_code.names.contains(&"t".to_owned()));
    assert!(pg("SELECT 1").user_code == crate::analyze::UserCode::default());
    let not_utf8 = analyzer().analyze_bytes(
        Dialect::Postgres,
        b"SELECT f('\xff')",
        StringLiterals::Standard,
    );
    assert!(not_utf8.user_code.unread);
}

#[test]
fn objects_in_pg_temp_are_temporary() {
    for sql in [
        "CREATE TABLE pg_temp.scratch (a int)",
        "CREATE VIEW pg_temp.v AS SELECT 1",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TYPE pg_temp.mood AS ENUM ('sad', 'ok')",
        "CREATE DOMAIN pg_temp.d AS int",
        "SET search_path = pg_temp, public",
        "SET search_path TO 'pg_temp'",
    ] {
        let effects = effects(sql);
        assert!(
            matches!(effects.as_slice(), [SessionEffect::Pin { feature }] if feature.starts_with("temporary")),
            "{sql}: {effects:?}"
        );
    }
}

#[test]
fn setting_values_with_backslashes_in_plain_strings_pin() {
    // Replayed on a connection with the other standard_conforming_strings, the value
    // would read differently; an escape string reads the same everywhere.
    assert_eq!(
        effects(r"SET app.pattern = '\d+'"),
        vec![pinned("a setting value with a backslash in a plain string")]
    );
    assert_eq!(
        effects(r"SET app.pattern = E'\\d+'"),
        vec![set("app.pattern", r"E'\\d+'")]
    );
}

#[test]
fn moving_date_and_time_literals_are_stable() {
    for sql in [
        "SELECT 'now'::timestamptz",
        "SELECT 'today'::date",
        "SELECT CAST('tomorrow' AS date)",
        "SELECT timestamp 'now'",
        "SELECT * FROM t WHERE d > 'yesterday'",
        "SELECT * FROM t WHERE d > 'yesterday 13:00'",
        "SELECT 'NOW'::timestamp",
    ] {
        let analysis = pg(sql);
        assert_eq!(analysis.status, Status::Cacheable, "{sql}");
        assert!(!analysis.stable_functions.is_empty(), "{sql}");
        assert_eq!(
            analysis.status_under(StableFunctions::Bypass),
            Status::Volatile,
            "{sql}"
        );
    }
    for sql in [
        "SELECT 'epoch'::timestamptz",
        "SELECT 'allballs'::time",
        "SELECT 'knowhow'",
    ] {
        let analysis = pg(sql);
        assert_eq!(
            analysis.status_under(StableFunctions::Bypass),
            Status::Cacheable,
            "{sql}"
        );
    }
}
