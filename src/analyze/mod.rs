//! The SQL analyzer: classify a query and decide whether its result may be cached.
//!
//! [`Analyzer::analyze`] takes the dialect and the SQL text a client sent and returns an
//! [`Analysis`]: how many statements, what kind of statement, which tables it reads and
//! writes, which functions it calls, and a [`Status`] named after Cloudflare Hyperdrive's
//! cache statuses. It is a default-deny classifier: a statement is cacheable only when it
//! is a plain read that the walk fully understood; anything the analyzer cannot classify
//! is refused.
//!
//! Pipeline: size check → [`lex`] (tokens, dialect fix-ups, nesting guard) → sqlparser →
//! [`statement`] (what kind of statement) → [`walk`] (every expression, relation and
//! function in it) → verdict. When sqlparser refuses the text, [`statement`] still
//! classifies it by its leading keyword, so `VACUUM (ANALYZE) t` is `uncacheable` rather
//! than a parse error; a would-be read that does not parse is `parseerror`.
//!
//! The analyzer never touches a socket, a clock or global state, and never panics on any
//! input; [`memo::AnalysisMemo`] puts a bounded memo in front of it for the hot path.
//! What it deliberately does not know: transaction state (the session knows), the
//! current database or search_path (part of the cache key, not of the verdict), and
//! per-deployment policy, which is applied by [`Analysis::status_under`].

pub mod catalog;
pub mod code;
pub mod effects;
pub mod hint;
mod lex;
pub mod memo;
pub mod rules;
mod statement;
mod walk;
pub mod writes;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use sqlparser::parser::{Parser, ParserOptions};

pub use effects::{SessionEffect, TransactionControl};
pub use hint::CacheHint;
pub use memo::AnalysisMemo;
pub use rules::{Rules, RulesError, SessionRule, SessionSafety, Volatility};
pub use writes::Writes;

/// The SQL dialect of a deployment's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// PostgreSQL (protocol 3.0 origins).
    Postgres,
    /// MySQL 8 and MariaDB.
    Mysql,
}

impl Dialect {
    /// The name used in configuration, rules files and output.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the client's server reads a backslash in a plain string literal (`'…'`):
/// PostgreSQL's `standard_conforming_strings`. The same text can be other statements
/// under the other reading (`'x\' ; SET …'`), so it is analysed as the server will read
/// it. MySQL strings always take backslash escapes here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StringLiterals {
    /// `standard_conforming_strings = on`, PostgreSQL's default: a backslash is itself.
    #[default]
    Standard,
    /// `standard_conforming_strings = off`: a backslash escapes, as in `E'…'`.
    BackslashEscapes,
    /// Not known (a request in flight may change it): a text whose reading depends on it
    /// is refused as `parseerror`, and the session's state after it is unknown.
    Unknown,
}

impl StringLiterals {
    /// The mode's name, for the memo's key.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StringLiterals::Standard => "standard",
            StringLiterals::BackslashEscapes => "backslash-escapes",
            StringLiterals::Unknown => "unknown",
        }
    }
}

/// The analyzer's decision, spelled as Hyperdrive's cache statuses.
///
/// `Cacheable` is the analyzer's "yes"; the cache later reports it as `hit` or `miss`.
/// The statuses that need runtime state (`disabled`, `transaction`, `oversizedresult`)
/// are decided by the session and the cache, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A plain read of deterministic data: its result may be cached.
    Cacheable,
    /// A write, DDL, locking read, or any statement that is not a plain read.
    Uncacheable,
    /// More than one statement in one query string.
    MultipleStatements,
    /// Session, transaction-control and informational statements (SET, BEGIN, SHOW, …).
    NotAQuery,
    /// The text could not be parsed as a statement the analyzer knows.
    ParseError,
    /// A read whose answer can change without a write: volatile functions, volatile
    /// relations, variables, random sampling, unknown functions.
    Volatile,
    /// The text is longer than the configured limit; it was not parsed.
    OversizedQuery,
}

impl Status {
    /// Every status the analyzer gives.
    pub const ALL: [Status; 7] = [
        Status::Cacheable,
        Status::Uncacheable,
        Status::MultipleStatements,
        Status::NotAQuery,
        Status::ParseError,
        Status::Volatile,
        Status::OversizedQuery,
    ];

    /// The status name as Hyperdrive and warpdrive's metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Cacheable => "cacheable",
            Status::Uncacheable => "uncacheable",
            Status::MultipleStatements => "multiplestatements",
            Status::NotAQuery => "notaquery",
            Status::ParseError => "parseerror",
            Status::Volatile => "volatile",
            Status::OversizedQuery => "oversizedquery",
        }
    }

    /// Parses a status name as [`Status::name`] spells it.
    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.name() == name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of statement the text is. For several statements, the weightiest kind
/// (in declaration order, `Ddl` first) describes the whole text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// CREATE, ALTER, DROP, GRANT, COMMENT, …
    Ddl,
    /// INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM, CALL, DO, SELECT INTO, …
    Write,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, …
    Transaction,
    /// SET, RESET, DISCARD, USE, PREPARE/EXECUTE/DEALLOCATE, LISTEN/UNLISTEN.
    Session,
    /// SHOW, EXPLAIN, VACUUM, ANALYZE, LOCK, cursors, NOTIFY, COPY TO, …
    Utility,
    /// SELECT, VALUES, TABLE.
    Read,
    /// Nothing but whitespace, comments and semicolons.
    Empty,
    /// Text the analyzer could not classify at all.
    Unknown,
}

impl Kind {
    /// The kind's name in output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ddl => "ddl",
            Kind::Write => "write",
            Kind::Transaction => "transaction",
            Kind::Session => "session",
            Kind::Utility => "utility",
            Kind::Read => "read",
            Kind::Empty => "empty",
            Kind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a deployment treats STABLE functions (now(), current_date, current_user, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StableFunctions {
    /// Cache them, as Hyperdrive's documentation describes: the answer is fixed for the
    /// entry's max_age.
    #[default]
    Cache,
    /// Refuse them (status `volatile`), as Pgpool-II and ReadySet do.
    Bypass,
}

/// One reason behind a verdict, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    fn new(text: impl Into<String>) -> Reason {
        Reason(text.into())
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Code a text runs that only the origin's catalog can judge, beyond the functions it
/// names and the tables it writes, which [`Analysis`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserCode {
    /// Anonymous code blocks (`DO`), in order.
    pub blocks: Vec<CodeBlock>,
    /// For text the parser refused: every name in it, any of which may be a function it
    /// calls or a table it writes (sorted, no duplicates).
    pub names: Vec<String>,
    /// The text was not read at all (too long, not UTF-8, not tokenizable): whoever
    /// judges it must look at the text itself.
    pub unread: bool,
}

/// What only the origin's catalog can tell about a PostgreSQL read: names whose meaning
/// depends on the database (sorted, no duplicates).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CatalogNames {
    /// Functions the rules do not know (user-defined, or an extension's): volatile unless
    /// the catalog declares them immutable or stable.
    pub unknown_functions: Vec<String>,
    /// Operators applied (`+`, `###`, `schema.###`): a user-defined one runs its function.
    pub operators: Vec<String>,
    /// Types converted to (casts, typed literals) by a name of their own: a user type
    /// runs its input function, its casts and its domain checks.
    pub types: Vec<String>,
    /// SQL types converted to (`integer`, `text`, …), as `pg_type` names them: only a
    /// user-defined cast to one runs a function of the user's.
    pub sql_types: Vec<String>,
    /// The last part of `x.name` references: a column, or a call `name(x)` of a
    /// function with one argument (attribute notation).
    pub attributes: Vec<String>,
    /// Whether the text alone makes the read volatile (a volatile function or relation,
    /// sampling, …), whatever the catalog says.
    pub volatile_anyway: bool,
}

/// A `DO` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeBlock {
    /// Its language (`plpgsql` unless it says otherwise).
    pub language: String,
    /// Its code; `None` when warpdrive could not be sure how PostgreSQL reads the string
    /// (escapes in a quoted body).
    pub body: Option<String>,
}

/// Everything the analyzer found out about one query string.
///
/// Names are normalised the way the dialect resolves them: PostgreSQL folds unquoted
/// identifiers to lower case and keeps quoted ones; MySQL names are compared lower case.
/// Lists are sorted and free of duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// The decision under the default policy (`stable_functions = "cache"`).
    pub status: Status,
    /// What kind of statement this is.
    pub kind: Kind,
    /// Number of non-empty statements (0 for the empty query; not counted when oversized).
    pub statements: usize,
    /// Relations read (CTE names excluded).
    pub tables_read: Vec<String>,
    /// Relations written, created, altered or dropped.
    pub tables_written: Vec<String>,
    /// Every function called.
    pub functions: Vec<String>,
    /// It runs code whose reads warpdrive does not know (a function that is not the
    /// database's own, or through the catalog a user operator, cast, type or view): the
    /// relations it reads are not all in `tables_read`, so any write may change it.
    pub reads_unknown_tables: bool,
    /// Functions called that make the result volatile (including unknown ones).
    pub volatile_functions: Vec<String>,
    /// STABLE functions called: cacheable by default, refused under
    /// [`StableFunctions::Bypass`].
    pub stable_functions: Vec<String>,
    /// Why the status is what it is; empty for a plain cacheable read.
    pub reasons: Vec<Reason>,
    /// What the text does to the client's session (settings, pins), one list per
    /// statement in order (for text that was not parsed, everything guessed is in the
    /// first).
    pub statement_effects: Vec<Vec<SessionEffect>>,
    /// What each statement may write, in order (for text that was not parsed, one entry
    /// per statement's leading words, or one that may write anything).
    pub statement_writes: Vec<Writes>,
    /// The query's shape, for cache rules: 16 hex digits, equal for texts that differ
    /// only in literal values (empty when the text was not tokenized).
    pub fingerprint: String,
    /// A `/* warpdrive: … */` hint in a leading comment.
    pub hint: Option<CacheHint>,
    /// Code it runs that only the origin's catalog can judge.
    pub user_code: UserCode,
    /// What only the origin's catalog can resolve for a read.
    pub catalog_names: CatalogNames,
}

impl Analysis {
    /// Every session effect of the text, in statement order.
    pub fn effects(&self) -> impl Iterator<Item = &SessionEffect> {
        self.statement_effects.iter().flatten()
    }

    /// What the whole text may write.
    pub fn writes(&self) -> Writes {
        let mut writes = Writes::default();
        for statement in &self.statement_writes {
            writes.absorb(statement);
        }
        writes
    }

    /// This analysis with another status and that one reason (what the session learns
    /// beyond the text, such as the origin's catalog being unreadable).
    pub fn refused(&self, status: Status, reason: impl Into<String>) -> Analysis {
        let mut refused = self.clone();
        refused.status = status;
        refused.reasons = vec![Reason::new(reason)];
        refused
    }

    /// The effect of a text that is one statement with exactly one effect.
    pub fn sole_effect(&self) -> Option<&SessionEffect> {
        match self.statement_effects.as_slice() {
            [only] if self.statements == 1 => match only.as_slice() {
                [effect] => Some(effect),
                _ => None,
            },
            _ => None,
        }
    }

    /// The status under a deployment's policy for STABLE functions.
    pub fn status_under(&self, policy: StableFunctions) -> Status {
        match policy {
            StableFunctions::Bypass
                if self.status == Status::Cacheable && !self.stable_functions.is_empty() =>
            {
                Status::Volatile
            }
            _ => self.status,
        }
    }

    /// The reasons under a deployment's policy: those of [`Analysis::reasons`], plus one
    /// naming the STABLE functions when the policy refuses them.
    pub fn reasons_under(&self, policy: StableFunctions) -> Vec<Reason> {
        let mut reasons = self.reasons.clone();
        if self.status_under(policy) != self.status {
            reasons.push(Reason::new(format!(
                "calls STABLE function(s) {} and stable_functions = \"bypass\"",
                self.stable_functions.join(", ")
            )));
        }
        reasons
    }

    fn verdict(status: Status, kind: Kind, statements: usize, reason: Reason) -> Analysis {
        Analysis {
            status,
            kind,
            statements,
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            functions: Vec::new(),
            reads_unknown_tables: true,
            volatile_functions: Vec::new(),
            stable_functions: Vec::new(),
            reasons: vec![reason],
            statement_effects: Vec::new(),
            statement_writes: match kind {
                Kind::Empty => Vec::new(),
                _ => vec![Writes::anything()],
            },
            fingerprint: String::new(),
            hint: None,
            user_code: UserCode::default(),
            catalog_names: CatalogNames::default(),
        }
    }

    /// A verdict on text that was not read: its effects guessed from its bytes.
    fn unread(mut self, sql: &[u8]) -> Analysis {
        self.statement_effects = vec![effects::unread_effects(sql)];
        self.user_code.unread = true;
        self
    }
}

/// Limits that keep analysis cheap and bounded whatever the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnalyzerOptions {
    /// Texts longer than this many bytes are `oversizedquery` without being parsed.
    pub max_query_bytes: usize,
}

impl AnalyzerOptions {
    /// Default for [`AnalyzerOptions::max_query_bytes`]: 1 MiB.
    pub const DEFAULT_MAX_QUERY_BYTES: usize = 1024 * 1024;
}

impl Default for AnalyzerOptions {
    fn default() -> Self {
        AnalyzerOptions {
            max_query_bytes: Self::DEFAULT_MAX_QUERY_BYTES,
        }
    }
}

/// How deeply sqlparser may recurse into nested subqueries and parenthesised
/// expressions; deeper text is a parse error rather than a stack overflow.
const PARSER_RECURSION_LIMIT: usize = 50;

/// The analyzer: volatility rules for both dialects plus limits. Cheap to share
/// (`Arc` inside); analysis takes `&self`.
#[derive(Clone, Debug)]
pub struct Analyzer {
    postgres: Arc<Rules>,
    mysql: Arc<Rules>,
    options: AnalyzerOptions,
}

impl Analyzer {
    /// An analyzer with the given rules for each dialect.
    pub fn new(postgres: Rules, mysql: Rules, options: AnalyzerOptions) -> Analyzer {
        Analyzer {
            postgres: Arc::new(postgres),
            mysql: Arc::new(mysql),
            options,
        }
    }

    /// An analyzer with the rules compiled into warpdrive (`rules/*.toml`).
    pub fn with_builtin_rules(options: AnalyzerOptions) -> Analyzer {
        Analyzer::new(
            Rules::builtin(Dialect::Postgres),
            Rules::builtin(Dialect::Mysql),
            options,
        )
    }

    /// The rules in force for a dialect, shared.
    pub fn shared_rules(&self, dialect: Dialect) -> Arc<Rules> {
        match dialect {
            Dialect::Postgres => Arc::clone(&self.postgres),
            Dialect::Mysql => Arc::clone(&self.mysql),
        }
    }

    /// The rules in force for a dialect.
    pub fn rules(&self, dialect: Dialect) -> &Rules {
        match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Mysql => &self.mysql,
        }
    }

    /// Analyzes query text as received; text that is not UTF-8 is a parse error (the
    /// analyzer reads UTF-8 only).
    pub fn analyze_bytes(
        &self,
        dialect: Dialect,
        sql: &[u8],
        literals: StringLiterals,
    ) -> Analysis {
        match std::str::from_utf8(sql) {
            Ok(sql) => self.analyze_as(dialect, sql, literals),
            Err(_) => Analysis::verdict(
                Status::ParseError,
                Kind::Unknown,
                1,
                Reason::new(
                    "query text is not valid UTF-8; warpdrive analyses UTF-8 text only (client_encoding UTF8)",
                ),
            )
            .unread(sql),
        }
    }

    /// Analyzes one query string as a client sent it, with standard string literals.
    pub fn analyze(&self, dialect: Dialect, sql: &str) -> Analysis {
        self.analyze_as(dialect, sql, StringLiterals::Standard)
    }

    /// Analyzes one query string as a server reading string literals that way would.
    pub fn analyze_as(&self, dialect: Dialect, sql: &str, literals: StringLiterals) -> Analysis {
        if sql.len() > self.options.max_query_bytes {
            return Analysis::verdict(
                Status::OversizedQuery,
                Kind::Unknown,
                0,
                Reason::new(format!(
                    "query text is {} bytes, above the {}-byte limit (max_query_bytes); it was not parsed",
                    sql.len(),
                    self.options.max_query_bytes
                )),
            )
            .unread(sql.as_bytes());
        }
        let lexed = match lex::lex(dialect, sql, literals) {
            Ok(lexed) => lexed,
            Err(lex::Refusal::AmbiguousBackslash) => {
                let mut analysis = lex::Refusal::AmbiguousBackslash
                    .into_analysis()
                    .unread(sql.as_bytes());
                analysis.statement_effects = vec![vec![effects::pin(
                    "a text read while standard_conforming_strings was not known",
                )]];
                return analysis;
            }
            Err(refusal) => return refusal.into_analysis().unread(sql.as_bytes()),
        };
        let fingerprint = lexed.fingerprint.clone();
        let hint = lexed.leading_comment.as_deref().and_then(hint::parse);
        let mut analysis = self.classify(dialect, sql, lexed, literals);
        analysis.fingerprint = fingerprint;
        match hint {
            Some(Ok(hint)) => analysis.hint = Some(hint),
            Some(Err(problem)) => analysis.reasons.push(Reason::new(format!(
                "ignored the warpdrive hint: {problem}"
            ))),
            None => {}
        }
        analysis
    }

    fn classify(
        &self,
        dialect: Dialect,
        sql: &str,
        lexed: lex::Lexed,
        literals: StringLiterals,
    ) -> Analysis {
        if lexed.statement_count() == 0 {
            return Analysis::verdict(
                Status::NotAQuery,
                Kind::Empty,
                0,
                Reason::new("empty query"),
            );
        }
        let leading = lexed.statement_leads();
        let blocks = lexed.blocks.clone();
        let options = ParserOptions::new().with_trailing_commas(false);
        let parsed = Parser::new(lex::sqlparser_dialect(dialect))
            .with_options(options)
            .with_recursion_limit(PARSER_RECURSION_LIMIT)
            .with_tokens_with_locations(lexed.into_tokens())
            .parse_statements();
        let mut analysis = match parsed {
            Ok(statements) => self.classify_parsed(dialect, &statements),
            Err(error) => {
                let mut analysis = statement::classify_unparsed(&leading, &error.to_string());
                analysis.statement_writes = leading.iter().map(writes::of_unparsed).collect();
                analysis.statement_effects = vec![effects::unparsed_effects(
                    &leading,
                    &lex::words(dialect, sql, literals),
                )];
                analysis.user_code.names = lex::names(dialect, sql, literals);
                analysis
            }
        };
        analysis.user_code.blocks = blocks;
        if leading.len() == 1 && effects::is_database_ddl(&leading[0]) {
            // Rare statements: their words are read again rather than slowing every other.
            let needs = effects::database_ddl_effects(&lex::words(dialect, sql, literals));
            match analysis.statement_effects.first_mut() {
                Some(first) => first.extend(needs),
                None => analysis.statement_effects.push(needs),
            }
        }
        analysis
    }

    fn classify_parsed(
        &self,
        dialect: Dialect,
        statements: &[sqlparser::ast::Statement],
    ) -> Analysis {
        let rules = self.rules(dialect);
        let mut facts = walk::Facts::default();
        let mut kind = Kind::Empty;
        let mut classes = Vec::with_capacity(statements.len());
        let mut effects = Vec::new();
        let mut writes = Vec::with_capacity(statements.len());
        for parsed in statements {
            let class = statement::classify(parsed);
            let found = walk::walk(dialect, rules, parsed);
            effects.push(effects::effects(dialect, parsed, found.functions()));
            let statement_kind = if found.changes_data() {
                class.kind.min(Kind::Write)
            } else {
                class.kind
            };
            writes.push(writes::of(parsed, &class, &found, rules));
            kind = kind.min(statement_kind);
            facts.absorb(found);
            classes.push(class);
        }
        let count = statements.len();
        let (status, mut reasons) = if count > 1 {
            (
                Status::MultipleStatements,
                vec![Reason::new(format!(
                    "{count} statements in one query string; each is forwarded, none is cached"
                ))],
            )
        } else {
            let class = classes.pop().unwrap_or_else(statement::Class::empty);
            facts.verdict(class)
        };
        reasons.dedup();
        if dialect == Dialect::Postgres {
            effects::pin_ambiguous_values(&mut effects);
        }
        let mut analysis = facts.into_analysis(status, kind, count, reasons);
        analysis.statement_effects = effects;
        analysis.statement_writes = writes;
        analysis.reads_unknown_tables = analysis
            .functions
            .iter()
            .any(|name| !rules.is_builtin_function(name) || reads_by_argument(name));
        analysis
    }
}

/// Whether a built-in function reads relations its arguments name (`table_to_xml`,
/// `schema_to_xml`, …), which the text alone does not show as read.
fn reads_by_argument(function: &str) -> bool {
    let name = function.rsplit('.').next().unwrap_or(function);
    name.ends_with("_to_xml")
        || name.ends_with("_to_xmlschema")
        || name.ends_with("_to_xml_and_xmlschema")
}

/// Sorted, de-duplicated names collected during a walk.
pub(crate) type NameSet = BTreeSet<String>;

#[cfg(test)]
mod tests;
