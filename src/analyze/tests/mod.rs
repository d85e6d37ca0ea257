//! Unit tests of the whole analyzer: verdicts, kinds, names, reasons, robustness. The
//! large table of expected statuses is the corpus in `fixtures/analyzer/`.

use proptest::prelude::*;

use super::*;

mod effects;

/// Parsing the built-in rules takes a while in debug builds; the tests share one analyzer.
fn analyzer() -> &'static Analyzer {
    static ANALYZER: std::sync::LazyLock<Analyzer> =
        std::sync::LazyLock::new(|| Analyzer::with_builtin_rules(AnalyzerOptions::default()));
    &ANALYZER
}

fn pg(sql: &str) -> Analysis {
    analyzer().analyze(Dialect::Postgres, sql)
}

fn my(sql: &str) -> Analysis {
    analyzer().analyze(Dialect::Mysql, sql)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

#[test]
fn hyperdrive_documented_examples() {
    let cacheable = pg(
        "SELECT * FROM articles WHERE DATE(published_time) = CURRENT_DATE() ORDER BY published_time DESC LIMIT 50",
    );
    assert_eq!(cacheable.status, Status::Cacheable, "{cacheable:?}");
    // date(timestamptz) depends on the TimeZone setting: stable in the catalog.
    assert_eq!(cacheable.stable_functions, names(&["current_date", "date"]));
    assert_eq!(
        cacheable.status_under(StableFunctions::Bypass),
        Status::Volatile
    );

    let volatile = pg("SELECT LASTVAL(), * FROM articles LIMIT 50");
    assert_eq!(volatile.status, Status::Volatile);
    assert_eq!(volatile.volatile_functions, names(&["lastval"]));
    assert_eq!(volatile.tables_read, names(&["articles"]));
}

#[test]
fn a_plain_read_reports_its_tables_and_functions() {
    let analysis = pg(
        "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
         SELECT c.name, count(*) FROM recent JOIN public.customers c ON c.id = recent.customer_id \
         GROUP BY c.name",
    );
    assert_eq!(analysis.status, Status::Cacheable);
    assert_eq!(analysis.kind, Kind::Read);
    assert_eq!(analysis.statements, 1);
    assert_eq!(analysis.tables_read, names(&["orders", "public.customers"]));
    assert!(analysis.tables_written.is_empty());
    assert_eq!(analysis.functions, names(&["count", "now"]));
    assert_eq!(analysis.stable_functions, names(&["now"]));
    assert!(analysis.volatile_functions.is_empty());
    assert!(analysis.reasons.is_empty());
}

#[test]
fn writes_report_their_targets() {
    let insert = pg("INSERT INTO audit (who) SELECT name FROM users WHERE id = $1");
    assert_eq!(
        (insert.status, insert.kind),
        (Status::Uncacheable, Kind::Write)
    );
    assert_eq!(insert.tables_written, names(&["audit"]));
    assert_eq!(insert.tables_read, names(&["users"]));

    let update = pg("UPDATE accounts SET balance = balance - $1 WHERE id = $2");
    assert_eq!(update.tables_written, names(&["accounts"]));
    let delete = my("DELETE FROM `Sessions` WHERE expires < NOW()");
    assert_eq!(delete.tables_written, names(&["sessions"]));
    let ddl = pg("ALTER TABLE \"Users\" ADD COLUMN age int");
    assert_eq!((ddl.status, ddl.kind), (Status::Uncacheable, Kind::Ddl));
    assert_eq!(ddl.tables_written, names(&["Users"]));
    let truncate = pg("TRUNCATE a, b");
    assert_eq!(truncate.tables_written, names(&["a", "b"]));
}

#[test]
fn data_modifying_ctes_and_select_into_are_writes() {
    let cte =
        pg("WITH gone AS (DELETE FROM jobs WHERE done RETURNING id) SELECT count(*) FROM gone");
    assert_eq!((cte.status, cte.kind), (Status::Uncacheable, Kind::Write));
    assert_eq!(cte.tables_written, names(&["jobs"]));
    assert!(
        cte.reasons[0].as_str().contains("data-modifying"),
        "{:?}",
        cte.reasons
    );

    let into = pg("SELECT * INTO TEMP snapshot FROM accounts");
    assert_eq!((into.status, into.kind), (Status::Uncacheable, Kind::Write));
    assert_eq!(into.tables_written, names(&["snapshot"]));
}

#[test]
fn locking_outranks_volatility() {
    let analysis = pg("SELECT random() FROM t FOR UPDATE");
    assert_eq!(analysis.status, Status::Uncacheable);
    assert_eq!(analysis.kind, Kind::Read);
    let nested = pg("SELECT * FROM (SELECT * FROM t FOR KEY SHARE) s");
    assert_eq!(nested.status, Status::Uncacheable);
}

#[test]
fn volatile_calls_are_found_everywhere() {
    for sql in [
        "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c > random())",
        "WITH x AS (SELECT gen_random_uuid() AS id) SELECT * FROM x",
        "SELECT * FROM t ORDER BY random()",
        "SELECT * FROM t, LATERAL (SELECT nextval('s')) n",
        "SELECT row_number() OVER (ORDER BY clock_timestamp()) FROM t",
        "SELECT lower(random()::text)",
        "SELECT CASE WHEN a THEN pg_sleep(1) END FROM t",
        "SELECT a FROM t GROUP BY a HAVING count(*) > random()",
        "VALUES (1, random())",
        "SELECT * FROM t JOIN u ON u.id = t.id AND random() < 0.5",
        "SELECT 1 UNION ALL SELECT txid_current()",
        "SELECT sum(a) OVER w FROM t WINDOW w AS (PARTITION BY random())",
        "SELECT pg_catalog.random()",
        "SELECT * FROM t TABLESAMPLE BERNOULLI (10)",
    ] {
        assert_eq!(pg(sql).status, Status::Volatile, "{sql}");
    }
    assert_eq!(
        pg("SELECT * FROM t TABLESAMPLE SYSTEM (1) REPEATABLE (7)").status,
        Status::Cacheable
    );
}

#[test]
fn strings_comments_and_quoted_names_never_match() {
    for sql in [
        "SELECT \"random\" FROM t",
        "SELECT \"Random\" FROM t",
        "SELECT 'random()' AS x",
        "SELECT 1 /* random() */ -- nextval('s')",
        "SELECT E'random()\\' nextval(\\'s\\')'",
        "SELECT $$ random() $$, $tag$ pg_sleep(1) $tag$",
    ] {
        assert_eq!(pg(sql).status, Status::Cacheable, "{sql}");
    }
    assert_eq!(my("SELECT `rand` FROM t").status, Status::Cacheable);
    assert_eq!(
        my("SELECT 'RAND()' FROM t /* UUID() */").status,
        Status::Cacheable
    );
}

#[test]
fn postgres_quoted_function_names_keep_their_case() {
    assert_eq!(pg("SELECT \"lower\"(a) FROM t").status, Status::Cacheable);
    let quoted = pg("SELECT \"Lower\"(a) FROM t");
    assert_eq!(quoted.status, Status::Volatile);
    assert_eq!(quoted.volatile_functions, names(&["Lower"]));
}

#[test]
fn unknown_functions_are_volatile_with_advice() {
    let analysis = pg("SELECT public.calculate(total) FROM orders");
    assert_eq!(analysis.status, Status::Volatile);
    assert_eq!(analysis.volatile_functions, names(&["public.calculate"]));
    assert!(
        analysis.reasons[0].as_str().contains("rules file"),
        "{:?}",
        analysis.reasons
    );
}

#[test]
fn declared_user_functions_are_cacheable() {
    let rules = Rules::parse(
        Dialect::Postgres,
        "[functions]\n\"public.calculate\" = \"immutable\"\n",
        "test rules",
    )
    .expect("rules parse");
    let mut merged = Rules::builtin(Dialect::Postgres);
    let dir = std::env::temp_dir().join(format!("warpdrive-analyzer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("user.toml");
    std::fs::write(&path, "[functions]\n\"public.calculate\" = \"immutable\"\n").expect("write");
    merged = merged.with_overrides_from(&path).expect("merge");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(
        rules.function("public.calculate").map(|r| r.class),
        Some(Volatility::Immutable)
    );
    let analyzer = Analyzer::new(
        merged,
        Rules::builtin(Dialect::Mysql),
        AnalyzerOptions::default(),
    );
    let analysis = analyzer.analyze(
        Dialect::Postgres,
        "SELECT public.calculate(total) FROM orders",
    );
    assert_eq!(analysis.status, Status::Cacheable);
}

#[test]
fn volatile_relations() {
    for sql in [
        "SELECT * FROM pg_stat_activity",
        "SELECT * FROM pg_catalog.pg_locks",
        "SELECT count(*) FROM pg_statio_user_tables",
    ] {
        assert_eq!(pg(sql).status, Status::Volatile, "{sql}");
    }
    assert_eq!(
        pg("SELECT typname FROM pg_catalog.pg_type WHERE oid = $1").status,
        Status::Cacheable
    );
    for sql in [
        "SELECT * FROM performance_schema.threads",
        "SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST",
    ] {
        assert_eq!(my(sql).status, Status::Volatile, "{sql}");
    }
    assert_eq!(
        my("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?").status,
        Status::Cacheable
    );
}

#[test]
fn cte_names_are_not_tables() {
    let analysis = pg("WITH pg_locks AS (SELECT 1 AS x) SELECT * FROM pg_locks");
    assert_eq!(analysis.status, Status::Cacheable);
    assert!(analysis.tables_read.is_empty());
    let outer = pg("SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) s, c");
    assert_eq!(outer.tables_read, names(&["c"]));
}

#[test]
fn table_functions_are_functions() {
    let analysis = pg("SELECT * FROM generate_series(1, 10) g");
    assert_eq!(analysis.status, Status::Cacheable);
    assert!(analysis.tables_read.is_empty());
    assert_eq!(analysis.functions, names(&["generate_series"]));
    assert_eq!(
        pg("SELECT * FROM my_set_returning(1)").status,
        Status::Volatile
    );
}

#[test]
fn mysql_variables_and_session_modifiers() {
    for sql in [
        "SELECT @x",
        "SELECT @@session.sql_mode",
        "SELECT @@version_comment LIMIT 1",
        "SELECT * FROM t WHERE id = @id",
        "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10",
    ] {
        assert_eq!(my(sql).status, Status::Volatile, "{sql}");
    }
}

#[test]
fn mysql_specific_volatility_and_locks() {
    assert_eq!(my("SELECT NEXT VALUE FOR seq").status, Status::Volatile);
    assert_eq!(my("SELECT 1 /*! , RAND() */").status, Status::Volatile);
    assert_eq!(
        my("SELECT 1 /*M!100100 , UUID() */").status,
        Status::Volatile
    );
    assert_eq!(
        my("SELECT a FROM t LOCK IN SHARE MODE").status,
        Status::Uncacheable
    );
    assert_eq!(
        my("SELECT NOW(), CURDATE(), UNIX_TIMESTAMP()").status,
        Status::Cacheable
    );
    assert_eq!(my("SELECT a INTO @v FROM t").status, Status::Uncacheable);
}

#[test]
fn session_and_transaction_statements_are_not_queries() {
    let cases = [
        ("SET search_path TO app", Kind::Session),
        ("RESET ALL", Kind::Session),
        ("DISCARD ALL", Kind::Session),
        ("BEGIN", Kind::Transaction),
        ("COMMIT", Kind::Transaction),
        ("SAVEPOINT a", Kind::Transaction),
        ("SHOW TimeZone", Kind::Utility),
        ("LISTEN jobs", Kind::Session),
        ("NOTIFY jobs", Kind::Utility),
        ("PREPARE q AS SELECT 1", Kind::Session),
        ("EXECUTE q", Kind::Session),
        ("DEALLOCATE ALL", Kind::Session),
        ("PREPARE TRANSACTION 'x'", Kind::Transaction),
    ];
    for (sql, kind) in cases {
        let analysis = pg(sql);
        assert_eq!(
            (analysis.status, analysis.kind),
            (Status::NotAQuery, kind),
            "{sql}"
        );
    }
    assert_eq!(my("USE app").status, Status::NotAQuery);
}

#[test]
fn empty_queries() {
    for sql in ["", ";", "  ;; ", "/* nothing */", "-- nothing\n"] {
        let analysis = pg(sql);
        assert_eq!(
            (analysis.status, analysis.kind, analysis.statements),
            (Status::NotAQuery, Kind::Empty, 0),
            "{sql:?}"
        );
    }
}

#[test]
fn several_statements() {
    let analysis = pg("SELECT 1; SELECT 2");
    assert_eq!(
        (analysis.status, analysis.statements),
        (Status::MultipleStatements, 2)
    );
    assert_eq!(pg("SELECT 1;").statements, 1);
    let mixed = pg("SELECT 1; UPDATE t SET a = 1");
    assert_eq!(
        (mixed.status, mixed.kind),
        (Status::MultipleStatements, Kind::Write)
    );
    assert_eq!(mixed.tables_written, names(&["t"]));
    let unparsable = pg("VACUUM (ANALYZE) t; SELECT 1");
    assert_eq!(
        (unparsable.status, unparsable.statements),
        (Status::MultipleStatements, 2)
    );
}

#[test]
fn unparsable_statements_are_classified_by_their_leading_words() {
    assert_eq!(
        pg("DO $$BEGIN PERFORM 1; END$$").status,
        Status::Uncacheable
    );
    assert_eq!(
        pg("REFRESH MATERIALIZED VIEW CONCURRENTLY v").status,
        Status::Uncacheable
    );
    assert_eq!(pg("VACUUM (ANALYZE) t").status, Status::Uncacheable);
    let broken = pg("SELECT FROM WHERE (");
    assert_eq!(
        (broken.status, broken.kind),
        (Status::ParseError, Kind::Read)
    );
    assert!(broken.reasons[0].as_str().starts_with("could not parse"));
}

#[test]
fn table_statement_reads_its_table() {
    let analysis = pg("TABLE accounts");
    assert_eq!(analysis.status, Status::Cacheable);
    assert_eq!(analysis.tables_read, names(&["accounts"]));
}

#[test]
fn oversized_text_is_not_parsed() {
    let analyzer = Analyzer::with_builtin_rules(AnalyzerOptions {
        max_query_bytes: 32,
    });
    let analysis = analyzer.analyze(Dialect::Postgres, "SELECT * FROM t WHERE a = 'long enough'");
    assert_eq!(
        (analysis.status, analysis.statements),
        (Status::OversizedQuery, 0)
    );
    assert_eq!(
        analyzer.analyze(Dialect::Postgres, "SELECT 1").status,
        Status::Cacheable
    );
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_crash() {
    let parens = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    assert_eq!(pg(&parens).status, Status::ParseError);
    let subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(500), ")".repeat(500));
    assert_eq!(pg(&subqueries).status, Status::ParseError);
    let chain = format!("SELECT 1{}", "+1".repeat(200_000));
    assert_eq!(pg(&chain).status, Status::ParseError);
    let nots = format!("SELECT {}true", "NOT ".repeat(10_000));
    assert_eq!(pg(&nots).status, Status::ParseError);
}

#[test]
fn the_longest_accepted_chain_is_walked_on_a_small_stack() {
    let chain = format!("SELECT 1{}", "+1".repeat(lex::MAX_EXPRESSION_DEPTH - 1));
    let inner = format!("1{}", "+1".repeat(lex::MAX_EXPRESSION_DEPTH - 60));
    let nested = format!("SELECT {}{inner}{}", "(".repeat(40), ")".repeat(40));
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || (pg(&chain).status, pg(&nested).status))
        .expect("spawn");
    assert_eq!(
        worker.join().expect("no stack overflow"),
        (Status::Cacheable, Status::Cacheable)
    );
}

#[test]
fn bypass_policy_turns_stable_into_volatile_with_a_reason() {
    let analysis = pg("SELECT * FROM events WHERE at > now() - interval '1 hour'");
    assert_eq!(
        analysis.status_under(StableFunctions::Cache),
        Status::Cacheable
    );
    assert_eq!(
        analysis.status_under(StableFunctions::Bypass),
        Status::Volatile
    );
    let reasons = analysis.reasons_under(StableFunctions::Bypass);
    assert!(reasons[0].as_str().contains("now"), "{reasons:?}");
    let immutable = pg("SELECT lower(name) FROM users");
    assert_eq!(
        immutable.status_under(StableFunctions::Bypass),
        Status::Cacheable
    );
}

#[test]
fn status_names_round_trip() {
    for status in Status::ALL {
        assert_eq!(Status::from_name(status.name()), Some(status));
        assert_eq!(
            serde_json::to_value(status).expect("serializes"),
            serde_json::Value::String(status.name().to_owned())
        );
    }
}

fn sql_fragment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "SELECT",
        "FROM",
        "WHERE",
        "(",
        ")",
        ",",
        ";",
        "'",
        "\"",
        "`",
        "$$",
        "$1",
        "?",
        "@x",
        "@@y",
        "/*",
        "*/",
        "/*!",
        "/*M!",
        "--",
        "\n",
        "random()",
        "now()",
        "t",
        "a.b",
        "+",
        "-",
        "NOT",
        "AND",
        "FOR",
        "UPDATE",
        "KEY",
        "SHARE",
        "NO",
        "LOCK",
        "IN",
        "MODE",
        "NEXT",
        "VALUE",
        "TABLE",
        "WITH",
        "AS",
        "INSERT",
        "INTO",
        "VALUES",
        "E'",
        "\\",
        "::",
        "[",
        "]",
        "ARRAY",
        "LATERAL",
        "OVER",
        "TABLESAMPLE",
        "é",
        "\u{0}",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the input, the analyzer answers and never panics.
    #[test]
    fn never_panics_on_token_soup(fragments in prop::collection::vec(sql_fragment(), 0..40)) {
        let sql = fragments.join(" ");
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            let analysis = analyzer().analyze(dialect, &sql);
            prop_assert!(analysis.statements <= sql.len());
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(sql in "\\PC{0,200}") {
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            analyzer().analyze(dialect, &sql);
        }
    }
}
