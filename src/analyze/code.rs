//! Reading procedural code (function and procedure bodies, trigger functions, DO blocks)
//! for what it may leave on the session that runs it.
//!
//! A pooler must know when code it cannot see changes the session: `set_config()` in a
//! function that sets the tenant for row-level security, `SET ROLE` in a procedure, a
//! session lock in a trigger. warpdrive reads SQL and PL/pgSQL bodies token by token
//! (strings, dollar quotes and comments are only text) and reports what it finds; code it
//! cannot read (other languages, dynamic `EXECUTE`) is reported as such. The reading is
//! conservative: a false alarm costs pooling for one client, a miss leaks state to others.
//!
//! What it looks for:
//! - statements that change the session: `SET` (but `SET LOCAL`, `SET TRANSACTION`, `SET
//!   CONSTRAINTS`), `RESET`, `LISTEN`, `PREPARE`, `DEALLOCATE`, `DISCARD`, `LOAD`;
//! - temporary objects (`TEMP`, `TEMPORARY`, `pg_temp`) and `WITH HOLD` cursors;
//! - dynamic SQL (`EXECUTE`), which it cannot read;
//! - calls of the built-in functions that change session state (set_config(), session
//!   advisory locks, …);
//! - every other name followed by `(`: a call, judged by whoever knows the functions;
//! - whether it writes data, and then every name it mentions: the triggers of a table it
//!   writes run too.

use sqlparser::tokenizer::Token;

use super::NameSet;
use super::effects::session_state_feature;
use super::lex::{folded, postgres_readings};

/// What a body may do, as far as its text shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeReading {
    /// Why it may change the session's state (empty: as far as its text shows, it cannot).
    pub unsafe_reasons: Vec<String>,
    /// Names it calls (`f` or `schema.f`; unquoted names in lower case).
    pub calls: NameSet,
    /// When it writes data: every name it mentions, any of which may be a table written.
    pub mentions: NameSet,
}

/// Reads a body written in `language`.
pub fn read_code(language: &str, body: &str) -> CodeReading {
    match language {
        "sql" | "plpgsql" => read_sql(body),
        other => CodeReading {
            unsafe_reasons: vec![format!(
                "is written in {other}, which warpdrive cannot read"
            )],
            ..CodeReading::default()
        },
    }
}

/// Reads SQL or PL/pgSQL; where backslashes make its strings read differently with
/// `standard_conforming_strings` off, both readings count.
fn read_sql(body: &str) -> CodeReading {
    let Some(readings) = postgres_readings(body) else {
        return CodeReading {
            unsafe_reasons: vec!["has a body warpdrive could not read".to_owned()],
            ..CodeReading::default()
        };
    };
    let mut merged = CodeReading::default();
    for tokens in readings {
        let reading = read_tokens(&tokens);
        for reason in reading.unsafe_reasons {
            if !merged.unsafe_reasons.contains(&reason) {
                merged.unsafe_reasons.push(reason);
            }
        }
        merged.calls.extend(reading.calls);
        merged.mentions.extend(reading.mentions);
    }
    merged
}

fn read_tokens(tokens: &[Token]) -> CodeReading {
    let mut reading = CodeReading::default();
    let mut writes = false;
    let mut mentions = NameSet::new();
    let mut found = |reason: &str| {
        if !reading.unsafe_reasons.iter().any(|known| known == reason) {
            reading.unsafe_reasons.push(reason.to_owned());
        }
    };
    for (at, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else {
            continue;
        };
        mentions.insert(folded(word));
        if word.quote_style.is_some() {
            if tokens.get(at + 1) == Some(&Token::LParen) {
                reading.calls.insert(called_name(tokens, at));
            }
            continue;
        }
        let starts_statement = at == 0 || tokens.get(at - 1).is_some_and(ends_statement);
        let next = tokens.get(at + 1).map(upper).unwrap_or_default();
        let previous = at
            .checked_sub(1)
            .map(|i| upper(&tokens[i]))
            .unwrap_or_default();
        match word.value.to_ascii_uppercase().as_str() {
            "SET"
                if starts_statement
                    && !matches!(next.as_str(), "LOCAL" | "TRANSACTION" | "CONSTRAINTS") =>
            {
                found("runs SET");
            }
            verb @ ("RESET" | "LISTEN" | "PREPARE" | "DEALLOCATE" | "DISCARD" | "LOAD")
                if starts_statement =>
            {
                found(&format!("runs {verb}"));
            }
            "TEMP" | "TEMPORARY" | "PG_TEMP" => found("creates temporary objects"),
            "HOLD" if previous == "WITH" => found("declares WITH HOLD cursors"),
            "EXECUTE" => found("runs dynamic SQL (EXECUTE), which warpdrive cannot read"),
            "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "COPY" => writes = true,
            _ => {}
        }
        if tokens.get(at + 1) == Some(&Token::LParen) {
            let name = called_name(tokens, at);
            match session_state_feature(&name) {
                Some(feature) => found(&format!("uses {feature}")),
                None => {
                    reading.calls.insert(name);
                }
            }
        }
    }
    if writes {
        reading.mentions = mentions;
    }
    reading
}

/// The name of the function called at `at`, with its schema when one precedes it
/// (`pg_catalog.f` is the built-in `f`).
fn called_name(tokens: &[Token], at: usize) -> String {
    let Some(Token::Word(function)) = tokens.get(at) else {
        return String::new();
    };
    let function = folded(function);
    let schema =
        at.checked_sub(2)
            .and_then(|before| match (&tokens[before], &tokens[before + 1]) {
                (Token::Word(schema), Token::Period) => Some(folded(schema)),
                _ => None,
            });
    match schema {
        Some(schema) if schema != "pg_catalog" => format!("{schema}.{function}"),
        _ => function,
    }
}

/// Whether a token ends one statement of a body, so that the next begins one: `;`, or
/// the PL/pgSQL keywords after which a statement follows.
fn ends_statement(token: &Token) -> bool {
    *token == Token::SemiColon
        || matches!(
            upper(token).as_str(),
            "BEGIN" | "THEN" | "ELSE" | "LOOP" | "DECLARE"
        )
}

/// An unquoted word in upper case; "" for anything else.
fn upper(token: &Token) -> String {
    match token {
        Token::Word(word) if word.quote_style.is_none() => word.value.to_ascii_uppercase(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plpgsql(body: &str) -> CodeReading {
        read_code("plpgsql", body)
    }

    #[test]
    fn setting_state_is_found_wherever_the_statement_is() {
        for body in [
            "BEGIN PERFORM set_config('app.tenant', t, false); END",
            "BEGIN PERFORM pg_catalog.set_config('app.tenant', t, false); END",
            "SELECT set_config('app.tenant', $1, false)",
            "BEGIN IF t IS NULL THEN RETURN; END IF; SET search_path = s2; END",
            "BEGIN LOOP SET ROLE admin; EXIT; END LOOP; END",
            "BEGIN RESET ALL; END",
            "BEGIN PERFORM pg_advisory_lock(1); END",
            "BEGIN CREATE TEMP TABLE x (a int); END",
            "BEGIN CREATE TABLE pg_temp.x (a int); END",
            "BEGIN EXECUTE 'SET search_path = ' || quote_ident(s); END",
            "BEGIN LISTEN jobs; END",
            "BEGIN DEALLOCATE ALL; END",
        ] {
            assert!(!plpgsql(body).unsafe_reasons.is_empty(), "{body}");
        }
    }

    #[test]
    fn harmless_bodies_are_harmless() {
        for body in [
            "BEGIN UPDATE t SET a = 1 WHERE b = 2; RETURN NEW; END",
            "BEGIN INSERT INTO log VALUES (now(), 'SET search_path = x; set_config(1)'); END",
            "BEGIN SET LOCAL search_path = s2; PERFORM 1; END",
            "BEGIN /* set_config('a', 'b', false) */ RETURN $$SET x$$; END",
            "SELECT a + b",
            "BEGIN INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2; END",
        ] {
            let reading = plpgsql(body);
            assert!(reading.unsafe_reasons.is_empty(), "{body}: {reading:?}");
        }
    }

    #[test]
    fn calls_and_written_names_are_collected() {
        let reading = plpgsql(
            r#"BEGIN PERFORM audit.note(x); INSERT INTO "Log" VALUES (helper(1), lower('A')); END"#,
        );
        assert!(reading.calls.contains("audit.note"));
        assert!(reading.calls.contains("helper"));
        assert!(reading.calls.contains("lower"));
        assert!(reading.mentions.contains("Log"));
        let reads_only = plpgsql("BEGIN RETURN (SELECT count(*) FROM t); END");
        assert!(reads_only.mentions.is_empty());
        assert!(reads_only.calls.contains("count"));
    }

    #[test]
    fn strings_are_read_both_ways_when_backslashes_make_a_difference() {
        // With standard_conforming_strings off, the SET is a statement.
        let reading =
            plpgsql("BEGIN PERFORM 'x\\' AS a, '; SET search_path = s2; PERFORM 1 --';\nEND");
        assert_eq!(reading.unsafe_reasons, vec!["runs SET"]);
        assert!(
            plpgsql(r"BEGIN RETURN 'C:\dir'; END")
                .unsafe_reasons
                .is_empty()
        );
    }

    #[test]
    fn other_languages_cannot_be_read() {
        let reading = read_code("plpython3u", "plpy.execute('SET x = 1')");
        assert_eq!(
            reading.unsafe_reasons,
            vec!["is written in plpython3u, which warpdrive cannot read"]
        );
        assert!(!read_code("c", "my_symbol").unsafe_reasons.is_empty());
    }
}
