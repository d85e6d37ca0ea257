//! What the origin's catalog says about the code and the data a statement reaches
//! without naming them: the user-defined functions it calls (and what they call in
//! turn), what runs when it writes a table, the event triggers that run on DDL
//! ([`session`]); the views it reads, the functions behind its operators, casts and
//! attribute notation, the row-level-security policies of what it reads ([`reads`]).
//!
//! The facts are read from the origin elsewhere and handed here as data
//! ([`CatalogFacts`]); this module is pure. [`Catalog::new`] judges every function,
//! relation and type once; [`Catalog::judge`] and [`Catalog::refine`] then look up what
//! one statement names. Names are matched the conservative way: a bare name stands for
//! that name in every schema (search_path can pick any of them, and a user function can
//! even shadow a built-in one).

mod reads;
mod session;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::memo::AnalysisMemo;
use super::{Analysis, Dialect, Rules, Volatility};
pub use reads::Refinement;
pub use session::{Judgement, Verdict};
pub use writes::Reach;

/// PostgreSQL's `FirstNormalObjectId`: objects with a lower OID were made by initdb.
pub const FIRST_USER_OID: u32 = 16384;

/// A user-defined function, procedure or aggregate, as `pg_proc` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionFacts {
    /// Its OID.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name, as stored.
    pub name: String,
    /// Its language (`sql`, `plpgsql`, `c`, …).
    pub language: String,
    /// Its body (`prosrc`, or the text of a SQL-standard body).
    pub body: String,
    /// For an aggregate: its support functions (transition, final, …).
    pub support: Vec<u32>,
    /// The volatility its owner declared (`provolatile`).
    pub volatility: Volatility,
    /// How many arguments it takes.
    pub arguments: usize,
}

/// What a relation is (`pg_class.relkind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationKind {
    /// A table, partitioned or not.
    Table,
    /// A view: its definition is read instead.
    View,
    /// A materialized view: read as a table (it changes only on REFRESH).
    MaterializedView,
    /// A foreign table: read as a table (its data changes behind the origin's back, like
    /// any write that bypasses warpdrive).
    ForeignTable,
    /// A sequence: its values change with every nextval().
    Sequence,
    /// Anything else (an index, a composite type).
    Other,
}

impl RelationKind {
    /// The kind of a `relkind` letter.
    pub fn from_relkind(relkind: &str) -> RelationKind {
        match relkind {
            "r" | "p" => RelationKind::Table,
            "v" => RelationKind::View,
            "m" => RelationKind::MaterializedView,
            "f" => RelationKind::ForeignTable,
            "S" => RelationKind::Sequence,
            _ => RelationKind::Other,
        }
    }
}

/// A relation: what reading it involves and what writing it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationFacts {
    /// Its OID.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name, as stored.
    pub name: String,
    /// What it is.
    pub kind: RelationKind,
    /// For a view in a user schema: its definition (`pg_get_viewdef`).
    pub definition: Option<String>,
    /// The USING expressions of its row-level-security policies.
    pub policies: Vec<String>,
    /// The user functions that run when it is written: its enabled triggers', its column
    /// defaults', its CHECK constraints', its columns' domain constraints'.
    pub write_functions: Vec<u32>,
    /// Whether rewrite rules act on INSERT, UPDATE or DELETE on it.
    pub has_write_rules: bool,
    /// Relations a write to it may also write: partitions, inheritance children, tables
    /// whose foreign keys cascade (or set null or default) from it.
    pub also_writes: Vec<u32>,
    /// Its inheritance parents (a partition's partitioned table): their reads see the
    /// rows written to it.
    pub parents: Vec<u32>,
}

/// A function by name, with the volatility `pg_proc` gives it (behind an operator, a
/// cast, a type's input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRef {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its declared volatility.
    pub volatility: Volatility,
}

/// A user-defined operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorFacts {
    /// Its schema.
    pub schema: String,
    /// Its symbol.
    pub name: String,
    /// The function it runs.
    pub function: FunctionRef,
}

/// A user-defined type (base, domain, enum, range, composite).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeFacts {
    /// Its OID.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its input function (text to value).
    pub input: FunctionRef,
    /// For a domain: the type it is based on (0 for none).
    pub base: u32,
    /// For a domain: the expressions of its CHECK constraints.
    pub checks: Vec<String>,
}

/// A user-defined cast with a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CastFacts {
    /// The schema of the type it casts to.
    pub target_schema: String,
    /// The type it casts to.
    pub target: String,
    /// The function it runs.
    pub function: FunctionRef,
}

/// Everything read from one origin database's catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogFacts {
    /// User functions (every schema but `pg_catalog` and `information_schema`).
    pub functions: Vec<FunctionFacts>,
    /// Every relation (those of `pg_catalog` and `information_schema` by name only).
    pub relations: Vec<RelationFacts>,
    /// The functions of enabled event triggers (they run on DDL).
    pub event_trigger_functions: Vec<u32>,
    /// Built-in functions (`pg_catalog`, `information_schema.f`): OID and name.
    pub builtins: Vec<(u32, String)>,
    /// User-defined operators.
    pub operators: Vec<OperatorFacts>,
    /// The symbols of the built-in operators.
    pub builtin_operators: Vec<String>,
    /// User-defined types.
    pub types: Vec<TypeFacts>,
    /// The names of the built-in types (`pg_catalog`, `information_schema`).
    pub builtin_types: Vec<String>,
    /// User-defined casts with a function.
    pub casts: Vec<CastFacts>,
}

/// The catalog of one origin database, judged.
#[derive(Debug)]
pub struct Catalog {
    /// User function OIDs by bare and by schema-qualified name.
    functions: HashMap<String, Vec<u32>>,
    /// Volatility and argument count of each user function.
    function_facts: HashMap<u32, (Volatility, usize)>,
    /// Relation OIDs by bare and by schema-qualified name.
    relations: HashMap<String, Vec<u32>>,
    session: session::Verdicts,
    reads: reads::Reads,
    reaches: writes::Reaches,
    builtin_names: HashSet<String>,
    builtin_oids: HashMap<u32, String>,
    /// The rules: the names of built-in functions and SQL syntax that reads like a call
    /// (`coalesce(…)`), which `pg_proc` does not list; the user's volatility and session
    /// entries.
    rules: Arc<Rules>,
}

fn describe(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

/// The keys a schema-qualified object is found under.
fn keys(schema: &str, name: &str) -> [String; 2] {
    [name.to_owned(), describe(schema, name)]
}

/// The name a statement uses for a relation, as the catalog keys it: `schema.name` or
/// `name` (a database prefix is dropped).
fn relation_key(written: &str) -> &str {
    match written.match_indices('.').nth_back(1) {
        Some((dot, _)) => &written[dot + 1..],
        None => written,
    }
}

impl Catalog {
    /// Judges every function, relation and type of `facts`, with the analyzer's
    /// PostgreSQL rules (and it reads view definitions, policies and domain checks).
    pub fn new(facts: CatalogFacts, analyzer: &AnalysisMemo) -> Catalog {
        let rules = analyzer.analyzer().shared_rules(Dialect::Postgres);
        let mut catalog = Catalog {
            functions: HashMap::new(),
            function_facts: HashMap::new(),
            relations: HashMap::new(),
            session: session::Verdicts::default(),
            reads: reads::Reads::default(),
            reaches: writes::Reaches::new(&facts),
            builtin_names: facts
                .builtins
                .iter()
                .map(|(_, name)| name.clone())
                .collect(),
            builtin_oids: facts.builtins.iter().cloned().collect(),
            rules,
        };
        for function in &facts.functions {
            for key in keys(&function.schema, &function.name) {
                catalog.functions.entry(key).or_default().push(function.oid);
            }
            catalog
                .function_facts
                .insert(function.oid, (function.volatility, function.arguments));
        }
        for relation in &facts.relations {
            for key in keys(&relation.schema, &relation.name) {
                catalog.relations.entry(key).or_default().push(relation.oid);
            }
        }
        catalog.session = session::Verdicts::new(&catalog, &facts);
        catalog.reads = reads::Reads::new(&catalog, &facts, analyzer);
        catalog
    }

    /// What `analysis` may do to the session. `text` is the statement as sent, looked at
    /// when the analyzer did not read it.
    pub fn judge(&self, analysis: &Analysis, text: &[u8]) -> Judgement {
        session::Judge { catalog: self }.judge(analysis, text)
    }

    /// What calling function `oid` (the protocol's FunctionCall) may do to the session.
    pub fn judge_function(&self, oid: u32) -> Judgement {
        session::Judge { catalog: self }.judge_function(oid)
    }

    /// A read as PostgreSQL will run it (see [`reads`]): what its views, user functions,
    /// operators, casts and policies add to its volatility and tables.
    pub fn refine(&self, analysis: &Analysis) -> Refinement {
        reads::refine(self, analysis)
    }

    /// What a statement's writes reach (see [`writes`]).
    pub fn reach(&self, writes: &super::Writes) -> Reach {
        writes::reach(self, writes)
    }

    fn is_builtin(&self, name: &str) -> bool {
        self.builtin_names.contains(name) || self.rules.is_builtin_function(name)
    }

    /// The OIDs of the relations a name may stand for.
    fn relations_named(&self, name: &str) -> &[u32] {
        self.relations
            .get(relation_key(name))
            .map_or(&[], Vec::as_slice)
    }

    /// The OIDs of the user functions a name may call.
    fn functions_named(&self, name: &str) -> &[u32] {
        self.functions.get(name).map_or(&[], Vec::as_slice)
    }

    /// How volatile calling a function is: as the rules say where they name it (for the
    /// built-ins, the generated and curated classes), else as `pg_proc` declares.
    fn class_of(&self, function: &FunctionRef) -> Volatility {
        let rule = match function.schema.as_str() {
            "pg_catalog" => self.rules.function(&function.name),
            schema => self
                .rules
                .function(&describe(schema, &function.name))
                .or_else(|| self.rules.function(&function.name)),
        };
        rule.map_or(function.volatility, |rule| rule.class)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions};

    #[test]
    fn relation_keys_drop_the_database() {
        assert_eq!(relation_key("t"), "t");
        assert_eq!(relation_key("s.t"), "s.t");
        assert_eq!(relation_key("db.s.t"), "s.t");
    }

    pub(crate) fn memo(rules: Rules) -> AnalysisMemo {
        AnalysisMemo::new(
            Analyzer::new(
                rules,
                Rules::builtin(Dialect::Mysql),
                AnalyzerOptions::default(),
            ),
            64,
        )
    }

    pub(crate) fn function(oid: u32, name: &str, language: &str, body: &str) -> FunctionFacts {
        FunctionFacts {
            oid,
            schema: "public".into(),
            name: name.into(),
            language: language.into(),
            body: body.into(),
            support: Vec::new(),
            volatility: Volatility::Volatile,
            arguments: 1,
        }
    }

    pub(crate) fn relation(oid: u32, name: &str, kind: RelationKind) -> RelationFacts {
        RelationFacts {
            oid,
            schema: "public".into(),
            name: name.into(),
            kind,
            definition: None,
            policies: Vec::new(),
            write_functions: Vec::new(),
            has_write_rules: false,
            also_writes: Vec::new(),
            parents: Vec::new(),
        }
    }

    pub(crate) fn builtin(name: &str, volatility: Volatility) -> FunctionRef {
        FunctionRef {
            schema: "pg_catalog".into(),
            name: name.into(),
            volatility,
        }
    }
}
