//! Unit tests of the lexer: tokens, string dialects, fix-ups, the nesting guard.

use super::*;

fn lex_std(dialect: Dialect, sql: &str) -> Result<Lexed, Refusal> {
    lex(dialect, sql, StringLiterals::Standard)
}

fn significant_text(dialect: Dialect, sql: &str) -> String {
    let lexed = lex_std(dialect, sql).expect("lexes");
    lexed
        .into_tokens()
        .iter()
        .map(|t| t.token.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn postgres_locking_variants_become_parseable() {
    assert_eq!(
        significant_text(Dialect::Postgres, "SELECT 1 FROM t FOR NO KEY UPDATE"),
        "SELECT 1 FROM t FOR UPDATE"
    );
    assert_eq!(
        significant_text(Dialect::Postgres, "select 1 from t for key share nowait"),
        "select 1 from t FOR SHARE nowait"
    );
}

#[test]
fn only_before_a_table_is_dropped() {
    assert_eq!(
        significant_text(
            Dialect::Postgres,
            "SELECT x FROM ONLY secret, ONLY b JOIN ONLY c ON true"
        ),
        "SELECT x FROM secret , b JOIN c ON true"
    );
    assert_eq!(
        significant_text(Dialect::Postgres, "UPDATE ONLY t SET a = 1"),
        "UPDATE t SET a = 1"
    );
    assert_eq!(
        significant_text(Dialect::Postgres, "SELECT a FROM t FETCH FIRST 1 ROWS ONLY"),
        "SELECT a FROM t FETCH FIRST 1 ROWS ONLY"
    );
}

#[test]
fn table_statement_becomes_select_star() {
    assert_eq!(
        significant_text(Dialect::Postgres, "TABLE public.users"),
        "SELECT * FROM public . users"
    );
    assert_eq!(
        significant_text(Dialect::Postgres, "SELECT 1; TABLE t"),
        "SELECT 1 ; SELECT * FROM t"
    );
    assert_eq!(
        significant_text(Dialect::Postgres, "LOCK TABLE t"),
        "LOCK TABLE t"
    );
}

#[test]
fn mysql_share_lock_and_sequences_become_parseable() {
    assert_eq!(
        significant_text(Dialect::Mysql, "SELECT a FROM t LOCK IN SHARE MODE"),
        "SELECT a FROM t FOR SHARE"
    );
    assert_eq!(
        significant_text(
            Dialect::Mysql,
            "SELECT NEXT VALUE FOR db.s, previous value for s"
        ),
        "SELECT nextval ( db . s ) , lastval ( s )"
    );
}

#[test]
fn mariadb_executable_comments_are_expanded() {
    assert_eq!(
        significant_text(Dialect::Mysql, "SELECT 1 /*M!100100 , RAND() */"),
        "SELECT 1 , RAND ( )"
    );
    assert_eq!(
        significant_text(Dialect::Mysql, "SELECT 1 /* M! not executable */"),
        "SELECT 1"
    );
}

#[test]
fn rewrites_ignore_strings_and_quoted_words() {
    assert_eq!(
        significant_text(Dialect::Postgres, "SELECT 'FOR KEY SHARE' FROM \"table\""),
        "SELECT 'FOR KEY SHARE' FROM \"table\""
    );
}

#[test]
fn statements_are_counted_at_top_level_only() {
    let lexed = lex_std(Dialect::Postgres, " ; SELECT ';' ; ; select (1;2) ;").expect("lexes");
    let leads = lexed.statement_leads();
    assert_eq!(leads.len(), 2);
    assert_eq!(leads[0].first, "SELECT");
    assert_eq!(leads[1].first, "SELECT");
    assert_eq!(
        lex_std(Dialect::Postgres, "/* only */ -- comments\n")
            .expect("lexes")
            .statement_count(),
        0
    );
}

#[test]
fn leads_hold_two_words() {
    let lexed = lex_std(Dialect::Postgres, "prepare transaction 'x'").expect("lexes");
    assert_eq!(
        lexed.statement_leads(),
        vec![Lead {
            first: "PREPARE".into(),
            second: "TRANSACTION".into()
        }]
    );
}

#[test]
fn long_operator_chains_are_refused_before_parsing() {
    let ok = format!("SELECT 1{}", "+1".repeat(MAX_EXPRESSION_DEPTH - 1));
    assert!(lex_std(Dialect::Postgres, &ok).is_ok());
    let deep = format!("SELECT 1{}", "+1".repeat(MAX_EXPRESSION_DEPTH + 1));
    assert!(matches!(
        lex_std(Dialect::Postgres, &deep),
        Err(Refusal::TooDeep)
    ));
    let parenthesised = format!("SELECT 1{}", "+(1)".repeat(MAX_EXPRESSION_DEPTH + 1));
    assert!(matches!(
        lex_std(Dialect::Postgres, &parenthesised),
        Err(Refusal::TooDeep)
    ));
}

#[test]
fn long_lists_are_not_chains() {
    let list = (0..20_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT * FROM t WHERE id IN ({list})");
    assert!(lex_std(Dialect::Postgres, &sql).is_ok());
}

#[test]
fn fingerprints_fold_values_but_not_shape() {
    let print = |sql: &str| lex_std(Dialect::Postgres, sql).expect("lexes").fingerprint;
    assert_eq!(
        print("SELECT * FROM t WHERE id = 1"),
        print("select *  from T where id = 42 /* x */")
    );
    assert_eq!(
        print("SELECT * FROM t WHERE name = 'a'"),
        print("SELECT * FROM t WHERE name = $1")
    );
    assert_ne!(
        print("SELECT * FROM t WHERE id = 1"),
        print("SELECT * FROM u WHERE id = 1")
    );
    assert_ne!(print("SELECT * FROM \"T\""), print("SELECT * FROM t"));
    assert_eq!(print("SELECT 1").len(), 16);
}

#[test]
fn the_leading_comment_is_kept() {
    let lexed = lex_std(
        Dialect::Postgres,
        "  /* warpdrive: no-cache */ SELECT 1 /* later */",
    )
    .expect("lexes");
    assert_eq!(
        lexed.leading_comment.as_deref(),
        Some(" warpdrive: no-cache ")
    );
    let later = lex_std(Dialect::Postgres, "SELECT /* warpdrive: no-cache */ 1").expect("lexes");
    assert_eq!(later.leading_comment, None);
}

#[test]
fn backslashes_in_strings_read_as_the_session_reads_them() {
    let text = r"SELECT 'x\' AS a, '; SET search_path = s2; SELECT 1 --'";
    // standard_conforming_strings on: one SELECT of two strings.
    let standard = lex_std(Dialect::Postgres, text).expect("lexes");
    assert_eq!(standard.statement_count(), 1);
    // Off: `\'` is a quote inside the first string, and a SET follows.
    let escaped = lex(Dialect::Postgres, text, StringLiterals::BackslashEscapes).expect("lexes");
    assert_eq!(escaped.statement_count(), 3);
    assert!(matches!(
        lex(Dialect::Postgres, text, StringLiterals::Unknown),
        Err(Refusal::AmbiguousBackslash)
    ));
    // Escape strings read the same either way, so no doubt arises.
    let e_string = r"SELECT E'x\' AS a'";
    for literals in [StringLiterals::Standard, StringLiterals::Unknown] {
        assert_eq!(
            lex(Dialect::Postgres, e_string, literals)
                .expect("lexes")
                .statement_count(),
            1
        );
    }
    // Dollar quotes and identifiers keep their meaning under backslash escapes.
    let other = lex(
        Dialect::Postgres,
        r#"SELECT $$a\$$, "b\" FROM t"#,
        StringLiterals::BackslashEscapes,
    )
    .expect("lexes");
    assert_eq!(other.statement_count(), 1);
}

#[test]
fn unterminated_strings_are_refused() {
    assert!(matches!(
        lex_std(Dialect::Postgres, "SELECT 'open"),
        Err(Refusal::Tokenizer(_))
    ));
}
