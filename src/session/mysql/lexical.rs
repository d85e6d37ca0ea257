//! What a COM_QUERY text does to the session, read from its words: the state that must
//! stay on the client's origin connection (ProxySQL's list: user variables, SQL
//! PREPARE, temporary tables, GET_LOCK, LOCK TABLES, HANDLER), what only the next
//! statement needs (FOUND_ROWS after SQL_CALC_FOUND_ROWS, SET TRANSACTION), whether the
//! session state the origin reports changing is explained by the text alone (a plain
//! `SET` of system variables, `USE`), and KILL.
//!
//! Works on bytes, so it reads any ASCII-compatible client character set: quoted
//! strings and identifiers, and comments, are skipped; MySQL's executable comments
//! (`/*! … */`, MariaDB's `/*M! … */`) are read as the code they are.

/// The session effects of one query text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// State that stays on the connection: pin, for this reason.
    pub pins: Option<&'static str>,
    /// `UNLOCK TABLES`: what LOCK TABLES or FLUSH … WITH READ LOCK held is let go.
    pub unlocks: bool,
    /// The next statement must run on the same connection.
    pub keeps_for_next: bool,
    /// Every statement is a `SET` of system variables (no user variable, no call) or
    /// `USE`: the changes the origin reports are the whole story.
    pub only_settings: bool,
    /// `KILL [QUERY | CONNECTION] id`.
    pub kill: Option<Kill>,
}

/// A KILL statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kill {
    /// KILL QUERY (true) or KILL [CONNECTION] (false).
    pub query_only: bool,
    /// The connection id.
    pub id: u64,
}

/// A word as written; it compares with keywords ignoring case, so that reading a query
/// allocates nothing per word.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Word<'a>(&'a [u8]);

impl PartialEq<[u8]> for Word<'_> {
    fn eq(&self, keyword: &[u8]) -> bool {
        self.0.eq_ignore_ascii_case(keyword)
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Word<'_> {
    fn eq(&self, keyword: &[u8; N]) -> bool {
        self.0.eq_ignore_ascii_case(keyword)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(Word<'a>),
    Number(u64),
    UserVariable,
    Open,
    Semicolon,
    Other,
}

fn tokens(text: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < text.len() && text[i] != c {
                    i += if text[i] == b'\\' && c != b'`' { 2 } else { 1 };
                }
                i += 1;
                out.push(Token::Other);
            }
            b'#' => i = skip_line(text, i),
            b'-' if text.get(i + 1) == Some(&b'-')
                && text.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(text, i)
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                let executable = matches!(text.get(i + 2), Some(b'!'))
                    || (text.get(i + 2) == Some(&b'M') && text.get(i + 3) == Some(&b'!'));
                if executable {
                    // Read on as code; its closing `*/` is skipped as Other.
                    i += if text[i + 2] == b'M' { 4 } else { 3 };
                    while i < text.len() && text[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i += 2;
                    while i + 1 < text.len() && !(text[i] == b'*' && text[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                }
            }
            b'@' if text.get(i + 1) == Some(&b'@') => {
                i += 2;
                while i < text.len()
                    && (text[i].is_ascii_alphanumeric() || b"_.$".contains(&text[i]))
                {
                    i += 1;
                }
                out.push(Token::Other);
            }
            b'@' => {
                i += 1;
                out.push(Token::UserVariable);
            }
            b';' => {
                i += 1;
                out.push(Token::Semicolon);
            }
            b'(' => {
                i += 1;
                out.push(Token::Open);
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < text.len() && text[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push(
                    std::str::from_utf8(&text[start..i])
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .map_or(Token::Other, Token::Number),
                );
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < text.len()
                    && (text[i].is_ascii_alphanumeric()
                        || text[i] == b'_'
                        || text[i] == b'$'
                        || text[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token::Word(Word(&text[start..i])));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                i += 1;
                out.push(Token::Other);
            }
        }
    }
    out
}

fn skip_line(text: &[u8], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(text.len(), |end| from + end + 1)
}

fn word(token: Option<&Token>, expected: &[u8]) -> bool {
    matches!(token, Some(Token::Word(w)) if *w == *expected)
}

/// Reads a query text.
pub fn effects(text: &[u8]) -> Effects {
    let all = tokens(text);
    let mut effects = Effects {
        only_settings: true,
        ..Effects::default()
    };
    for statement in all
        .split(|t| *t == Token::Semicolon)
        .filter(|s| !s.is_empty())
    {
        read_statement(statement, &mut effects);
    }
    effects
}

fn read_statement(statement: &[Token], effects: &mut Effects) {
    let first = statement.first();
    let second = statement.get(1);
    let mut pin = |why| {
        effects.pins.get_or_insert(why);
    };
    if statement.contains(&Token::UserVariable) {
        pin("user variables");
    }
    let any = |name: &[u8]| statement.iter().any(|t| word(Some(t), name));
    if any(b"GET_LOCK") {
        pin("GET_LOCK");
    }
    match (first, second) {
        (Some(Token::Word(w)), _) if w == b"PREPARE" || w == b"EXECUTE" || w == b"DEALLOCATE" => {
            pin("SQL PREPARE")
        }
        (Some(Token::Word(w)), Some(Token::Word(v))) if w == b"DROP" && v == b"PREPARE" => {
            pin("SQL PREPARE")
        }
        (Some(Token::Word(w)), Some(Token::Word(v))) if w == b"CREATE" && v == b"TEMPORARY" => {
            pin("temporary tables")
        }
        (Some(Token::Word(w)), Some(Token::Word(v)))
            if w == b"LOCK" && (v == b"TABLES" || v == b"TABLE") =>
        {
            pin("LOCK TABLES")
        }
        (Some(Token::Word(w)), Some(Token::Word(v)))
            if w == b"FLUSH" && v == b"TABLES" && any(b"LOCK") =>
        {
            pin("FLUSH TABLES WITH READ LOCK")
        }
        (Some(Token::Word(w)), _) if w == b"HANDLER" => pin("HANDLER"),
        // The active role changes what the session may read, and no report says so.
        (Some(Token::Word(w)), Some(Token::Word(v))) if w == b"SET" && v == b"ROLE" => {
            pin("SET ROLE")
        }
        // An XA transaction can outlive the connection's view of it (XA END, PREPARE).
        (Some(Token::Word(w)), _) if w == b"XA" => pin("XA transactions"),
        (Some(Token::Word(w)), Some(Token::Word(v)))
            if w == b"UNLOCK" && (v == b"TABLES" || v == b"TABLE") =>
        {
            effects.unlocks = true
        }
        _ => {}
    }
    if any(b"SQL_CALC_FOUND_ROWS") {
        effects.keeps_for_next = true;
    }
    let is_set = word(first, b"SET");
    if is_set && word(second, b"TRANSACTION") {
        effects.keeps_for_next = true;
    }
    let plain_set =
        is_set && !statement.contains(&Token::UserVariable) && !statement.contains(&Token::Open);
    let plain_use = word(first, b"USE");
    effects.only_settings &= plain_set || plain_use;
    if word(first, b"KILL") {
        let (query_only, id) = match (second, statement.get(2)) {
            (Some(Token::Number(id)), _) => (false, Some(*id)),
            (Some(Token::Word(w)), Some(Token::Number(id))) if w == b"QUERY" => (true, Some(*id)),
            (Some(Token::Word(w)), Some(Token::Number(id))) if w == b"CONNECTION" => {
                (false, Some(*id))
            }
            _ => (false, None),
        };
        if let Some(id) = id
            && statement.len() <= 3
        {
            effects.kill = Some(Kill { query_only, id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(text: &str) -> Option<&'static str> {
        effects(text.as_bytes()).pins
    }

    #[test]
    fn proxysqls_list_pins() {
        assert_eq!(pins("SET @x = 1"), Some("user variables"));
        assert_eq!(pins("SELECT @x"), Some("user variables"));
        assert_eq!(pins("SELECT a INTO @x FROM t"), Some("user variables"));
        assert_eq!(pins("PREPARE s FROM 'SELECT 1'"), Some("SQL PREPARE"));
        assert_eq!(
            pins("create temporary table t (a int)"),
            Some("temporary tables")
        );
        assert_eq!(pins("SELECT GET_LOCK('a', 1)"), Some("GET_LOCK"));
        assert_eq!(pins("LOCK TABLES t READ"), Some("LOCK TABLES"));
        assert_eq!(
            pins("FLUSH TABLES WITH READ LOCK"),
            Some("FLUSH TABLES WITH READ LOCK")
        );
        assert_eq!(pins("SELECT 1; SET @y = 2"), Some("user variables"));
        assert_eq!(pins("XA START 'x'"), Some("XA transactions"));
        assert_eq!(pins("SET ROLE reporting"), Some("SET ROLE"));
        assert_eq!(pins("set role NONE"), Some("SET ROLE"));
        assert_eq!(pins("SET DEFAULT ROLE r FOR u"), None);
        assert_eq!(
            pins("/*!40101 SET @saved = @@sql_mode */"),
            Some("user variables")
        );
    }

    #[test]
    fn quoted_and_commented_text_does_not_pin() {
        assert_eq!(pins("SELECT '@x', \"GET_LOCK\", `@y` FROM t"), None);
        assert_eq!(pins("SELECT 1 /* @x GET_LOCK */ -- @z\n# @w\n"), None);
        assert_eq!(pins("SELECT @@session.sql_mode, @@time_zone"), None);
        assert_eq!(pins("SELECT 'it\\'s @x'"), None);
        assert_eq!(
            pins("SELECT email FROM users WHERE email LIKE '%@example.com'"),
            None
        );
    }

    #[test]
    fn settings_alone_explain_reported_changes() {
        assert!(effects(b"SET sql_mode = 'ANSI', time_zone = '+00:00'").only_settings);
        assert!(effects(b"SET NAMES latin1; USE shop").only_settings);
        assert!(!effects(b"SET sql_mode = f()").only_settings);
        assert!(!effects(b"CALL p()").only_settings);
        assert!(!effects(b"SET @x = 1").only_settings);
        assert!(effects(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").keeps_for_next);
        assert!(!effects(b"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE").keeps_for_next);
        assert!(effects(b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").keeps_for_next);
        assert!(effects(b"unlock tables").unlocks);
    }

    #[test]
    fn kill_names_its_target() {
        assert_eq!(
            effects(b"KILL QUERY 17").kill,
            Some(Kill {
                query_only: true,
                id: 17
            })
        );
        assert_eq!(
            effects(b"kill 5").kill,
            Some(Kill {
                query_only: false,
                id: 5
            })
        );
        assert_eq!(effects(b"KILL CONNECTION 5").kill.map(|k| k.id), Some(5));
        assert_eq!(effects(b"KILL QUERY ID 5").kill, None);
    }
}
