//! Tokens before parsing: dialect fix-ups, the nesting guard, statement boundaries.
//!
//! warpdrive tokenizes the text itself (with sqlparser's tokenizer) and hands the tokens
//! to the parser, so that it can, in one pass and without parsing twice:
//!
//! - run MariaDB's executable comments (`/*M!100100 … */`): MariaDB executes their
//!   content, sqlparser treats them as plain comments. MySQL's `/*! … */` sqlparser
//!   already expands;
//! - rewrite the few constructs sqlparser 0.63 cannot parse but whose meaning is plain,
//!   into an equivalent it can: PostgreSQL `FOR NO KEY UPDATE` / `FOR KEY SHARE` (still a
//!   locking clause), MySQL `LOCK IN SHARE MODE` (`FOR SHARE`), MariaDB
//!   `NEXT VALUE FOR s` / `PREVIOUS VALUE FOR s` (`nextval(s)` / `lastval(s)`), a
//!   statement-leading PostgreSQL `TABLE t` (`SELECT * FROM t`), and PostgreSQL's
//!   `ONLY t` (the table without its inheritance children: `t`, which sqlparser would
//!   read as a table named `only`);
//! - refuse text whose expressions chain deeper than [`MAX_EXPRESSION_DEPTH`] operators:
//!   sqlparser builds `1+1+…+1` as a left-deep tree without a recursion check, and
//!   walking or dropping a tree a million levels deep would overflow the stack;
//! - find the statement boundaries and each statement's leading words, which classify a
//!   statement sqlparser cannot parse.

use std::any::TypeId;

use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace, Word};

use super::{Analysis, CodeBlock, Dialect, Kind, Reason, Status, StringLiterals};

/// Longest chain of operators (summed over enclosing parentheses) the analyzer accepts.
/// Release builds walk chains ten times deeper on a 2 MiB stack; debug builds about
/// three times; real queries stay far below.
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 1500;

static POSTGRES: PostgreSqlDialect = PostgreSqlDialect {};
static MYSQL: MySqlDialect = MySqlDialect {};

/// The sqlparser dialect for a warpdrive dialect.
pub(crate) fn sqlparser_dialect(dialect: Dialect) -> &'static dyn SqlDialect {
    match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Mysql => &MYSQL,
    }
}

/// PostgreSQL as it reads text with `standard_conforming_strings = off`: a backslash in a
/// plain string literal escapes the next character, as in `E'…'`. For the tokenizer only;
/// everything else is PostgreSQL's, including the type the tokenizer asks about.
#[derive(Debug)]
struct PostgresBackslashEscapes;

impl SqlDialect for PostgresBackslashEscapes {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }
    fn supports_string_literal_backslash_escape(&self) -> bool {
        true
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        POSTGRES.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        POSTGRES.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        POSTGRES.is_delimited_identifier_start(ch)
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        POSTGRES.identifier_quote_style(identifier)
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        POSTGRES.is_custom_operator_part(ch)
    }
    fn supports_unicode_string_literal(&self) -> bool {
        POSTGRES.supports_unicode_string_literal()
    }
    fn supports_nested_comments(&self) -> bool {
        POSTGRES.supports_nested_comments()
    }
    fn supports_string_escape_constant(&self) -> bool {
        POSTGRES.supports_string_escape_constant()
    }
    fn supports_numeric_literal_underscores(&self) -> bool {
        POSTGRES.supports_numeric_literal_underscores()
    }
    fn supports_geometric_types(&self) -> bool {
        POSTGRES.supports_geometric_types()
    }
    fn ignores_wildcard_escapes(&self) -> bool {
        POSTGRES.ignores_wildcard_escapes()
    }
    fn requires_single_line_comment_whitespace(&self) -> bool {
        POSTGRES.requires_single_line_comment_whitespace()
    }
    fn supports_dollar_as_money_prefix(&self) -> bool {
        POSTGRES.supports_dollar_as_money_prefix()
    }
    fn supports_dollar_placeholder(&self) -> bool {
        POSTGRES.supports_dollar_placeholder()
    }
    fn supports_multiline_comment_hints(&self) -> bool {
        POSTGRES.supports_multiline_comment_hints()
    }
    fn supports_numeric_prefix(&self) -> bool {
        POSTGRES.supports_numeric_prefix()
    }
    fn supports_pipe_operator(&self) -> bool {
        POSTGRES.supports_pipe_operator()
    }
    fn supports_quote_delimited_string(&self) -> bool {
        POSTGRES.supports_quote_delimited_string()
    }
    fn supports_triple_quoted_string(&self) -> bool {
        POSTGRES.supports_triple_quoted_string()
    }
}

static POSTGRES_BACKSLASH_ESCAPES: PostgresBackslashEscapes = PostgresBackslashEscapes;

/// The dialect the tokenizer reads a text with. MySQL's strings always take backslash
/// escapes here; PostgreSQL's as the session's `standard_conforming_strings` says
/// (standard when not known: [`lex`] then refuses text where the two readings differ).
fn tokenizer_dialect(dialect: Dialect, literals: StringLiterals) -> &'static dyn SqlDialect {
    match (dialect, literals) {
        (Dialect::Postgres, StringLiterals::BackslashEscapes) => &POSTGRES_BACKSLASH_ESCAPES,
        _ => sqlparser_dialect(dialect),
    }
}

/// Why the text was refused before parsing.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The tokenizer refused it (unterminated string or comment, bad escape, …).
    Tokenizer(String),
    /// Expressions nest deeper than [`MAX_EXPRESSION_DEPTH`].
    TooDeep,
    /// A plain string literal holds a backslash and the session's
    /// `standard_conforming_strings` is not known: PostgreSQL may read the text as other
    /// statements than warpdrive would.
    AmbiguousBackslash,
}

impl Refusal {
    pub(crate) fn into_analysis(self) -> Analysis {
        let reason = match self {
            Refusal::Tokenizer(message) => format!("could not tokenize the query: {message}"),
            Refusal::TooDeep => format!(
                "expressions nest more than {MAX_EXPRESSION_DEPTH} operators deep; not parsed"
            ),
            Refusal::AmbiguousBackslash => "a string literal holds a backslash while a request in flight may change standard_conforming_strings, so how PostgreSQL reads the text is not known; not parsed".to_owned(),
        };
        Analysis::verdict(Status::ParseError, Kind::Unknown, 1, Reason::new(reason))
    }
}

/// The first two words of a statement, upper case ("" when absent), used to classify a
/// statement that sqlparser could not parse. A leading parenthesis reads as "(".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lead {
    pub first: String,
    pub second: String,
}

/// The query's tokens, ready for the parser, with its statement boundaries.
pub(crate) struct Lexed {
    tokens: Vec<TokenWithSpan>,
    leads: Vec<Lead>,
    /// The body of a `/* … */` comment before the first token, if any.
    pub leading_comment: Option<String>,
    /// Hex fingerprint of the query's shape (literals and placeholders folded).
    pub fingerprint: String,
    /// The `DO` blocks among its statements.
    pub blocks: Vec<CodeBlock>,
}

impl Lexed {
    /// Number of non-empty statements, by top-level semicolons.
    pub(crate) fn statement_count(&self) -> usize {
        self.leads.len()
    }

    /// The leading words of each non-empty statement.
    pub(crate) fn statement_leads(&self) -> Vec<Lead> {
        self.leads.clone()
    }

    pub(crate) fn into_tokens(self) -> Vec<TokenWithSpan> {
        self.tokens
    }
}

/// Tokenizes `sql` as a server reading string literals that way would, applies the
/// fix-ups and checks the nesting bound.
pub(crate) fn lex(dialect: Dialect, sql: &str, literals: StringLiterals) -> Result<Lexed, Refusal> {
    let raw = Tokenizer::new(tokenizer_dialect(dialect, literals), sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|error| Refusal::Tokenizer(error.to_string()))?;
    if dialect == Dialect::Postgres
        && literals == StringLiterals::Unknown
        && raw
            .iter()
            .any(|token| is_plain_string_with_backslash(&token.token))
    {
        return Err(Refusal::AmbiguousBackslash);
    }
    let leading_comment = raw.iter().find_map(|token| match &token.token {
        Token::Whitespace(Whitespace::MultiLineComment(body)) => Some(Some(body.clone())),
        Token::Whitespace(_) => None,
        _ => Some(None),
    });
    let raw = match dialect {
        Dialect::Mysql => expand_mariadb_comments(raw)?,
        Dialect::Postgres => raw,
    };
    let tokens = rewrite(dialect, raw);
    let leads = scan(&tokens)?;
    let fingerprint = fingerprint(&tokens);
    let blocks = match dialect {
        Dialect::Postgres => anonymous_blocks(&tokens, literals),
        Dialect::Mysql => Vec::new(),
    };
    Ok(Lexed {
        tokens,
        leads,
        leading_comment: leading_comment.flatten(),
        fingerprint,
        blocks,
    })
}

/// The `DO [LANGUAGE l] code` statements among significant tokens.
fn anonymous_blocks(tokens: &[TokenWithSpan], literals: StringLiterals) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let statements = tokens.split(|token| token.token == Token::SemiColon);
    for statement in statements {
        let Some((first, rest)) = statement.split_first() else {
            continue;
        };
        if keyword(first) != Some(Keyword::DO) {
            continue;
        }
        let mut language = "plpgsql".to_owned();
        let mut body = None;
        let mut rest = rest.iter();
        while let Some(token) = rest.next() {
            if keyword(token) == Some(Keyword::LANGUAGE) {
                if let Some(name) = rest.next() {
                    language = match &name.token {
                        Token::Word(word) if word.quote_style.is_none() => {
                            word.value.to_lowercase()
                        }
                        Token::Word(word) => word.value.clone(),
                        other => string_body(other, literals).unwrap_or_default(),
                    };
                }
            } else {
                body = string_body(&token.token, literals);
            }
        }
        blocks.push(CodeBlock { language, body });
    }
    blocks
}

/// The text of a string token as PostgreSQL reads it; `None` where escapes would have
/// to be interpreted.
fn string_body(token: &Token, literals: StringLiterals) -> Option<String> {
    match token {
        Token::DollarQuotedString(quoted) => Some(quoted.value.clone()),
        Token::SingleQuotedString(raw)
            if literals == StringLiterals::Standard || !raw.contains('\\') =>
        {
            Some(raw.replace("''", "'"))
        }
        Token::EscapedStringLiteral(raw) if !raw.contains('\\') => Some(raw.replace("''", "'")),
        _ => None,
    }
}

/// The significant tokens of PostgreSQL text, read with both settings of
/// `standard_conforming_strings` when they differ (code stored in the catalog, whose
/// strings PostgreSQL reads under the setting in force when it runs). `None` when the
/// text does not tokenize.
pub(crate) fn postgres_readings(text: &str) -> Option<Vec<Vec<Token>>> {
    let read = |literals| {
        Tokenizer::new(tokenizer_dialect(Dialect::Postgres, literals), text)
            .tokenize()
            .ok()
            .map(|tokens| {
                tokens
                    .into_iter()
                    .filter(|token| !matches!(token, Token::Whitespace(_)))
                    .collect::<Vec<_>>()
            })
    };
    let standard = read(StringLiterals::Standard)?;
    if !standard.iter().any(is_plain_string_with_backslash) {
        return Some(vec![standard]);
    }
    Some(vec![standard, read(StringLiterals::BackslashEscapes)?])
}

/// Whether a token is a string literal whose reading `standard_conforming_strings`
/// changes: a plain or national one holding a backslash.
fn is_plain_string_with_backslash(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(text) | Token::NationalStringLiteral(text) if text.contains('\\')
    )
}

/// A PostgreSQL name as written: unquoted names fold to lower case, quoted ones stay.
pub(crate) fn folded(word: &Word) -> String {
    match word.quote_style {
        Some(_) => word.value.clone(),
        None => word.value.to_lowercase(),
    }
}

/// The word tokens of a text, in order (none if it does not tokenize).
fn word_tokens(dialect: Dialect, sql: &str, literals: StringLiterals) -> Vec<Word> {
    Tokenizer::new(tokenizer_dialect(dialect, literals), sql)
        .tokenize()
        .map(|tokens| {
            tokens
                .into_iter()
                .filter_map(|token| match token {
                    Token::Word(word) => Some(word),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The unquoted words of a text, lower case, in order. For statements the parser
/// refused, whose effects can only be guessed from their words.
pub(crate) fn words(dialect: Dialect, sql: &str, literals: StringLiterals) -> Vec<String> {
    word_tokens(dialect, sql, literals)
        .into_iter()
        .filter(|word| word.quote_style.is_none())
        .map(|word| word.value.to_lowercase())
        .collect()
}

/// Every name in a text, lower case unless quoted, sorted and without duplicates. For
/// statements the parser refused, whose calls and targets can only be guessed.
pub(crate) fn names(dialect: Dialect, sql: &str, literals: StringLiterals) -> Vec<String> {
    let names: std::collections::BTreeSet<String> = word_tokens(dialect, sql, literals)
        .into_iter()
        .map(|word| folded(&word))
        .collect();
    names.into_iter().collect()
}

/// A query's shape: its tokens with literals and placeholders replaced by `?`, unquoted
/// words folded to lower case, comments and whitespace dropped; 64 bits of blake3 over
/// that, in hex. Queries that differ only in their values share a fingerprint.
fn fingerprint(tokens: &[TokenWithSpan]) -> String {
    let mut hasher = blake3::Hasher::new();
    for token in tokens {
        let shape = match &token.token {
            Token::Word(word) if word.quote_style.is_none() => word.value.to_lowercase(),
            Token::Placeholder(_) | Token::Number(..) => "?".to_owned(),
            token if is_literal(token) => "?".to_owned(),
            token => token.to_string(),
        };
        hasher.update(shape.as_bytes());
        hasher.update(b" ");
    }
    hasher.finalize().as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splices the content of MariaDB's `/*M!NNNNNN … */` comments into the token stream.
fn expand_mariadb_comments(raw: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, Refusal> {
    let mut out = Vec::with_capacity(raw.len());
    for token in raw {
        match &token.token {
            Token::Whitespace(Whitespace::MultiLineComment(body)) if body.starts_with("M!") => {
                let content = body["M!".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
                let inner = Tokenizer::new(&MYSQL, content)
                    .with_unescape(false)
                    .tokenize_with_location()
                    .map_err(|error| Refusal::Tokenizer(error.to_string()))?;
                out.extend(inner.into_iter().map(|mut inner_token| {
                    inner_token.span = token.span;
                    inner_token
                }));
            }
            _ => out.push(token),
        }
    }
    Ok(out)
}

fn is_significant(token: &TokenWithSpan) -> bool {
    !matches!(token.token, Token::Whitespace(_))
}

fn keyword(token: &TokenWithSpan) -> Option<Keyword> {
    match &token.token {
        Token::Word(Word {
            keyword,
            quote_style: None,
            ..
        }) => Some(*keyword),
        _ => None,
    }
}

/// A cursor over the significant tokens of a token vector.
struct Significant<'a> {
    tokens: &'a [TokenWithSpan],
    indices: Vec<usize>,
}

impl<'a> Significant<'a> {
    fn new(tokens: &'a [TokenWithSpan]) -> Significant<'a> {
        let indices = (0..tokens.len())
            .filter(|&i| is_significant(&tokens[i]))
            .collect();
        Significant { tokens, indices }
    }

    fn get(&self, position: usize) -> Option<&'a TokenWithSpan> {
        self.indices.get(position).map(|&i| &self.tokens[i])
    }

    /// Whether the significant tokens from `position` are exactly these keywords.
    fn keywords_at(&self, position: usize, expected: &[Keyword]) -> bool {
        expected
            .iter()
            .enumerate()
            .all(|(offset, want)| self.get(position + offset).and_then(keyword) == Some(*want))
    }

    /// Whether `position` starts a statement (first token, or right after a `;`).
    fn starts_statement(&self, position: usize) -> bool {
        position == 0
            || self
                .get(position - 1)
                .is_some_and(|t| t.token == Token::SemiColon)
    }

    /// Whether the `ONLY` at `position` is the inheritance keyword before a table name
    /// (after FROM, JOIN, a comma in a FROM list, UPDATE, TABLE, INTO, TRUNCATE, ON), not the `ONLY` of
    /// `FETCH FIRST n ROWS ONLY`.
    fn names_a_table_after_only(&self, position: usize) -> bool {
        use Keyword::*;
        let after_table_keyword = position
            .checked_sub(1)
            .and_then(|p| self.get(p))
            .is_some_and(|previous| {
                previous.token == Token::Comma
                    || matches!(
                        keyword(previous),
                        Some(FROM | JOIN | UPDATE | TABLE | INTO | TRUNCATE | ON)
                    )
            });
        after_table_keyword
            && matches!(
                self.get(position + 1).map(|t| &t.token),
                Some(Token::Word(_))
            )
    }

    /// End (exclusive position) of a dotted name starting at `position`.
    fn dotted_name_end(&self, position: usize) -> Option<usize> {
        let mut end = position;
        loop {
            match self.get(end).map(|t| &t.token) {
                Some(Token::Word(_)) => end += 1,
                _ => return None,
            }
            match self.get(end).map(|t| &t.token) {
                Some(Token::Period) => end += 1,
                _ => return Some(end),
            }
        }
    }
}

/// A rewrite found at a significant position: replace `consumed` significant tokens with
/// `replacement`, then copy `keep` significant tokens and close with `suffix`.
struct Rewrite {
    consumed: usize,
    replacement: Vec<Token>,
    keep: usize,
    suffix: Vec<Token>,
}

fn find_rewrite(dialect: Dialect, sig: &Significant<'_>, position: usize) -> Option<Rewrite> {
    use Keyword::*;
    let simple = |consumed: usize, replacement: Vec<Token>| Rewrite {
        consumed,
        replacement,
        keep: 0,
        suffix: Vec::new(),
    };
    match dialect {
        Dialect::Postgres => {
            if sig.keywords_at(position, &[FOR, NO, KEY, UPDATE]) {
                return Some(simple(4, vec![word("FOR"), word("UPDATE")]));
            }
            if sig.keywords_at(position, &[FOR, KEY, SHARE]) {
                return Some(simple(3, vec![word("FOR"), word("SHARE")]));
            }
            if sig.keywords_at(position, &[TABLE]) && sig.starts_statement(position) {
                let end = sig.dotted_name_end(position + 1)?;
                return Some(Rewrite {
                    consumed: 1,
                    replacement: vec![word("SELECT"), Token::Mul, word("FROM")],
                    keep: end - position - 1,
                    suffix: Vec::new(),
                });
            }
            if sig.keywords_at(position, &[ONLY]) && sig.names_a_table_after_only(position) {
                // `FROM ONLY t`: the same table without its inheritance children, which
                // sqlparser would read as a table named `only`.
                return Some(simple(1, Vec::new()));
            }
            None
        }
        Dialect::Mysql => {
            if sig.keywords_at(position, &[LOCK, IN, SHARE, MODE]) {
                return Some(simple(4, vec![word("FOR"), word("SHARE")]));
            }
            let sequence_function = if sig.keywords_at(position, &[NEXT, VALUE, FOR]) {
                "nextval"
            } else if sig.get(position).is_some_and(|t| is_word(t, "PREVIOUS"))
                && sig.keywords_at(position + 1, &[VALUE, FOR])
            {
                "lastval"
            } else {
                return None;
            };
            let end = sig.dotted_name_end(position + 3)?;
            Some(Rewrite {
                consumed: 3,
                replacement: vec![word(sequence_function), Token::LParen],
                keep: end - position - 3,
                suffix: vec![Token::RParen],
            })
        }
    }
}

fn is_word(token: &TokenWithSpan, upper: &str) -> bool {
    matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(upper))
}

fn word(text: &str) -> Token {
    Token::make_word(text, None)
}

/// Applies the dialect fix-ups; whitespace tokens are dropped, which the parser ignores.
fn rewrite(dialect: Dialect, raw: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let sig = Significant::new(&raw);
    let mut out = Vec::with_capacity(sig.indices.len());
    let mut position = 0;
    while let Some(token) = sig.get(position) {
        let Some(rewrite) = find_rewrite(dialect, &sig, position) else {
            out.push(token.clone());
            position += 1;
            continue;
        };
        let span = token.span;
        let synthesised = |token: Token| TokenWithSpan { token, span };
        out.extend(rewrite.replacement.into_iter().map(synthesised));
        position += rewrite.consumed;
        for _ in 0..rewrite.keep {
            if let Some(kept) = sig.get(position) {
                out.push(kept.clone());
            }
            position += 1;
        }
        out.extend(rewrite.suffix.into_iter().map(synthesised));
    }
    out
}

/// Whether a token continues an operator chain that sqlparser builds left-deep.
fn is_chain_operator(token: &Token) -> bool {
    use Keyword::*;
    match token {
        Token::Word(word) => {
            word.quote_style.is_none()
                && matches!(
                    word.keyword,
                    AND | OR
                        | XOR
                        | NOT
                        | IS
                        | LIKE
                        | ILIKE
                        | BETWEEN
                        | COLLATE
                        | DIV
                        | MOD
                        | REGEXP
                        | RLIKE
                        | SIMILAR
                        | IN
                        | AT
                )
        }
        Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Period
        | Token::Placeholder(_)
        | Token::Number(..)
        | Token::EOF
        | Token::Whitespace(_) => false,
        token => !is_literal(token),
    }
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Char(_)
    )
}

/// Finds statement boundaries and leading words, and enforces [`MAX_EXPRESSION_DEPTH`]:
/// the bound is the number of chain operators at each parenthesis level, summed over the
/// enclosing levels, reset by commas.
fn scan(tokens: &[TokenWithSpan]) -> Result<Vec<Lead>, Refusal> {
    let mut leads = Vec::new();
    let mut current: Option<Lead> = None;
    let mut paren_depth = 0usize;
    let mut enclosing: Vec<usize> = Vec::new();
    let mut chain = 0usize;
    let mut enclosing_sum = 0usize;
    for token in tokens {
        match &token.token {
            Token::SemiColon if paren_depth == 0 => {
                leads.extend(current.take());
                chain = 0;
                continue;
            }
            Token::LParen => {
                paren_depth += 1;
                enclosing.push(chain);
                enclosing_sum += chain;
                chain = 0;
            }
            Token::RParen => {
                paren_depth = paren_depth.saturating_sub(1);
                chain = enclosing.pop().unwrap_or(0);
                enclosing_sum = enclosing_sum.saturating_sub(chain);
            }
            Token::Comma => chain = 0,
            other if is_chain_operator(other) => {
                chain += 1;
                if chain + enclosing_sum > MAX_EXPRESSION_DEPTH {
                    return Err(Refusal::TooDeep);
                }
            }
            _ => {}
        }
        let lead = current.get_or_insert_with(Lead::default);
        if lead.second.is_empty() {
            let text = match &token.token {
                Token::Word(word) => word.value.to_ascii_uppercase(),
                Token::LParen => "(".to_owned(),
                other => other.to_string(),
            };
            if lead.first.is_empty() {
                lead.first = text;
            } else {
                lead.second = text;
            }
        }
    }
    leads.extend(current);
    Ok(leads)
}

#[cfg(test)]
mod tests;
