//! What the origin's catalog says about code a statement runs: the user-defined functions
//! and procedures it calls (and what they call in turn), the triggers and rewrite rules
//! of the tables it writes, the event triggers that run on DDL.
//!
//! The facts are read from the origin elsewhere and handed here as data
//! ([`CatalogFacts`]); this module is pure. [`Catalog::new`] judges every user function
//! and every relation once:
//!
//! - a function is *unsafe* (it may change the state of the session that calls it) when
//!   the rules say so, or when its body ([`read_code`]) changes the session, runs dynamic
//!   SQL, is in a language warpdrive cannot read, or calls an unsafe function or writes an
//!   unsafe relation; the rules can also declare it safe, which ends the reading;
//! - a relation is unsafe when a write to it runs an unsafe function (a trigger, a column
//!   default, a CHECK or domain constraint), rewrite rules act on writes to it, or a write
//!   to it also writes an unsafe relation (partitions and inheritance children, tables
//!   whose foreign keys cascade from it).
//!
//! [`Catalog::judge`] then looks up what one statement names. Names are matched the
//! conservative way: a bare name stands for that name in every schema (search_path can
//! pick any of them, and a user function can even shadow a built-in one).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::code::read_code;
use super::rules::SessionSafety;
use super::{Analysis, Kind, Rules};

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
}

/// A relation whose writes run code: its triggers, its rules, what else it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationFacts {
    /// Its OID.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name, as stored.
    pub name: String,
    /// The user functions that run when it is written: its enabled triggers', its column
    /// defaults', its CHECK constraints', its columns' domain constraints'.
    pub write_functions: Vec<u32>,
    /// Whether rewrite rules act on INSERT, UPDATE or DELETE on it.
    pub has_write_rules: bool,
    /// Relations a write to it may also write: partitions, inheritance children, tables
    /// whose foreign keys cascade (or set null or default) from it.
    pub also_writes: Vec<u32>,
}

/// Everything read from one origin database's catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogFacts {
    /// User functions (every schema but `pg_catalog` and `information_schema`).
    pub functions: Vec<FunctionFacts>,
    /// Relations with triggers, write rules or cascading writes.
    pub relations: Vec<RelationFacts>,
    /// The functions of enabled event triggers (they run on DDL).
    pub event_trigger_functions: Vec<u32>,
    /// Built-in functions (`pg_catalog`, `information_schema.f`): OID and name.
    pub builtins: Vec<(u32, String)>,
}

/// Whether code may change the session that runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// It cannot.
    #[default]
    Safe,
    /// It may, and why.
    Unsafe(String),
}

/// What one statement may do to the session, as far as the catalog tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing it runs changes the session.
    Harmless,
    /// Code it runs may change the session: the client must keep its connection.
    ChangesSession(String),
    /// It calls functions the catalog does not list (created since it was read?).
    Unknown(Vec<String>),
}

/// A node of the graph of who runs what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    Function(u32),
    Relation(u32),
}

/// The catalog of one origin database, judged.
#[derive(Debug)]
pub struct Catalog {
    /// User function OIDs by bare and by schema-qualified name.
    functions: HashMap<String, Vec<u32>>,
    /// Relation OIDs by bare and by schema-qualified name.
    relations: HashMap<String, Vec<u32>>,
    verdicts: HashMap<Node, Verdict>,
    event_triggers: Verdict,
    builtin_names: HashSet<String>,
    builtin_oids: HashMap<u32, String>,
    /// The rules, for the names of built-in functions and SQL syntax that reads like a
    /// call (`coalesce(…)`), which the origin's `pg_proc` does not list.
    rules: Arc<Rules>,
    /// Unsafe functions and relations by lower-case bare name, for text that was not read.
    unsafe_names: HashMap<String, String>,
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
fn relation_key(written: &str) -> String {
    let parts: Vec<&str> = written.split('.').collect();
    match parts.as_slice() {
        [.., schema, name] => format!("{schema}.{name}"),
        _ => written.to_owned(),
    }
}

fn is_keyword(name: &str) -> bool {
    sqlparser::keywords::ALL_KEYWORDS
        .binary_search(&name.to_ascii_uppercase().as_str())
        .is_ok()
}

impl Catalog {
    /// Judges every function and relation of `facts`, with the rules' session entries.
    pub fn new(facts: CatalogFacts, rules: Arc<Rules>) -> Catalog {
        let mut catalog = Catalog {
            builtin_names: facts
                .builtins
                .iter()
                .map(|(_, name)| name.clone())
                .collect(),
            builtin_oids: facts.builtins.into_iter().collect(),
            rules: Arc::clone(&rules),
            functions: HashMap::new(),
            relations: HashMap::new(),
            verdicts: HashMap::new(),
            event_triggers: Verdict::Safe,
            unsafe_names: HashMap::new(),
        };
        let mut names: HashMap<Node, String> = HashMap::new();
        for function in &facts.functions {
            for key in keys(&function.schema, &function.name) {
                catalog.functions.entry(key).or_default().push(function.oid);
            }
            names.insert(
                Node::Function(function.oid),
                format!("{}()", describe(&function.schema, &function.name)),
            );
        }
        for relation in &facts.relations {
            for key in keys(&relation.schema, &relation.name) {
                catalog.relations.entry(key).or_default().push(relation.oid);
            }
            names.insert(
                Node::Relation(relation.oid),
                format!("table {}", describe(&relation.schema, &relation.name)),
            );
        }
        // Edges from a node to what it runs, with the verb that says how.
        let mut runs: HashMap<Node, Vec<(Node, &'static str)>> = HashMap::new();
        let mut unsafe_roots: Vec<(Node, String)> = Vec::new();
        let mut declared_safe: HashSet<Node> = HashSet::new();
        for function in &facts.functions {
            let node = Node::Function(function.oid);
            let who = names.get(&node).map_or("", String::as_str);
            match rules.session(&function.schema, &function.name) {
                Some(rule) if rule.safety == SessionSafety::Safe => {
                    declared_safe.insert(node);
                    continue;
                }
                Some(rule) => {
                    let why = rule.reason.as_deref().unwrap_or("the rules say so");
                    unsafe_roots.push((node, format!("{who} may change session state: {why}")));
                    continue;
                }
                None => {}
            }
            let edges = runs.entry(node).or_default();
            for support in &function.support {
                edges.push((Node::Function(*support), "calls"));
            }
            if !function.support.is_empty() {
                continue;
            }
            let reading = read_code(&function.language, &function.body);
            if let Some(reason) = reading.unsafe_reasons.first() {
                unsafe_roots.push((node, format!("{who} {reason}")));
            }
            for call in &reading.calls {
                for oid in catalog.functions.get(call).into_iter().flatten() {
                    edges.push((Node::Function(*oid), "calls"));
                }
            }
            for mention in &reading.mentions {
                for oid in catalog.relations.get(mention).into_iter().flatten() {
                    edges.push((Node::Relation(*oid), "writes"));
                }
            }
        }
        for relation in &facts.relations {
            let node = Node::Relation(relation.oid);
            let edges = runs.entry(node).or_default();
            for function in &relation.write_functions {
                edges.push((Node::Function(*function), "runs on writes"));
            }
            for other in &relation.also_writes {
                edges.push((Node::Relation(*other), "also writes"));
            }
            if relation.has_write_rules {
                let who = names.get(&node).map_or("", String::as_str);
                unsafe_roots.push((
                    node,
                    format!("{who} has rewrite rules on writes, which warpdrive does not read"),
                ));
            }
        }
        catalog.verdicts = propagate(&runs, unsafe_roots, &declared_safe, &names);
        for (node, verdict) in &catalog.verdicts {
            if let (Verdict::Unsafe(reason), Some(name)) = (verdict, names.get(node)) {
                let bare = name
                    .trim_start_matches("table ")
                    .trim_end_matches("()")
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_lowercase();
                catalog.unsafe_names.insert(bare, reason.clone());
            }
        }
        catalog.event_triggers = facts
            .event_trigger_functions
            .iter()
            .find_map(|oid| match catalog.verdict(Node::Function(*oid)) {
                Verdict::Unsafe(reason) => Some(Verdict::Unsafe(format!(
                    "an event trigger runs on DDL; {reason}"
                ))),
                Verdict::Safe => None,
            })
            .unwrap_or(Verdict::Safe);
        catalog
    }

    fn verdict(&self, node: Node) -> &Verdict {
        self.verdicts.get(&node).unwrap_or(&Verdict::Safe)
    }

    /// The verdict on every user function a name may call; `None` when no user function
    /// has that name.
    fn function_by_name(&self, name: &str) -> Option<Verdict> {
        let oids = self.functions.get(name)?;
        Some(
            oids.iter()
                .map(|oid| self.verdict(Node::Function(*oid)))
                .find(|verdict| matches!(verdict, Verdict::Unsafe(_)))
                .cloned()
                .unwrap_or(Verdict::Safe),
        )
    }

    fn relation_by_name(&self, name: &str) -> Verdict {
        self.relations
            .get(&relation_key(name))
            .into_iter()
            .flatten()
            .map(|oid| self.verdict(Node::Relation(*oid)))
            .find(|verdict| matches!(verdict, Verdict::Unsafe(_)))
            .cloned()
            .unwrap_or(Verdict::Safe)
    }

    fn is_builtin(&self, name: &str) -> bool {
        self.builtin_names.contains(name) || self.rules.is_builtin_function(name)
    }

    /// What `analysis` may do to the session. `text` is the statement as sent, looked at
    /// when the analyzer did not read it.
    pub fn judge(&self, analysis: &Analysis, text: &[u8]) -> Judgement {
        let mut unknown = Vec::new();
        for name in &analysis.functions {
            match self.function_by_name(name) {
                Some(Verdict::Unsafe(reason)) => return Judgement::ChangesSession(reason),
                Some(Verdict::Safe) => {}
                None if self.is_builtin(name) => {}
                None => unknown.push(name.clone()),
            }
        }
        for table in &analysis.tables_written {
            if let Verdict::Unsafe(reason) = self.relation_by_name(table) {
                return Judgement::ChangesSession(reason);
            }
        }
        if analysis.kind == Kind::Ddl
            && let Verdict::Unsafe(reason) = &self.event_triggers
        {
            return Judgement::ChangesSession(reason.clone());
        }
        for block in &analysis.user_code.blocks {
            let Some(body) = &block.body else {
                return Judgement::ChangesSession(
                    "a DO block whose quoted body warpdrive cannot read with certainty".to_owned(),
                );
            };
            let reading = read_code(&block.language, body);
            if let Some(reason) = reading.unsafe_reasons.first() {
                return Judgement::ChangesSession(format!("a DO block {reason}"));
            }
            for call in &reading.calls {
                match self.function_by_name(call) {
                    Some(Verdict::Unsafe(reason)) => return Judgement::ChangesSession(reason),
                    Some(Verdict::Safe) => {}
                    None if self.is_builtin(call) || is_keyword(call) => {}
                    None => unknown.push(call.clone()),
                }
            }
            for mention in &reading.mentions {
                if let Verdict::Unsafe(reason) = self.relation_by_name(mention) {
                    return Judgement::ChangesSession(reason);
                }
            }
        }
        let writes = analysis.kind != Kind::Read;
        for name in &analysis.user_code.names {
            if let Some(Verdict::Unsafe(reason)) = self.function_by_name(name) {
                return Judgement::ChangesSession(reason);
            }
            if writes && let Verdict::Unsafe(reason) = self.relation_by_name(name) {
                return Judgement::ChangesSession(reason);
            }
        }
        if analysis.user_code.unread
            && let Some(reason) = self.unsafe_name_in(text)
        {
            return Judgement::ChangesSession(reason);
        }
        if unknown.is_empty() {
            Judgement::Harmless
        } else {
            Judgement::Unknown(unknown)
        }
    }

    /// What calling the function with this OID (the protocol's FunctionCall) may do.
    pub fn judge_function(&self, oid: u32) -> Judgement {
        if let Some(name) = self.builtin_oids.get(&oid) {
            return match super::effects::session_state_feature(name) {
                Some(feature) => Judgement::ChangesSession(format!("{feature} (FunctionCall)")),
                None => Judgement::Harmless,
            };
        }
        if oid < FIRST_USER_OID {
            return Judgement::Harmless;
        }
        match self.verdicts.get(&Node::Function(oid)) {
            Some(Verdict::Unsafe(reason)) => Judgement::ChangesSession(reason.clone()),
            Some(Verdict::Safe) => Judgement::Harmless,
            None if self.is_function(oid) => Judgement::Harmless,
            None => Judgement::Unknown(vec![format!("the function with OID {oid}")]),
        }
    }

    fn is_function(&self, oid: u32) -> bool {
        self.functions.values().flatten().any(|known| *known == oid)
    }

    /// The first unsafe function or relation whose name appears in a text as a word.
    fn unsafe_name_in(&self, text: &[u8]) -> Option<String> {
        if self.unsafe_names.is_empty() {
            return None;
        }
        let lowered = String::from_utf8_lossy(text).to_lowercase();
        let words: BTreeSet<&str> = lowered
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .collect();
        words
            .into_iter()
            .find_map(|word| self.unsafe_names.get(word).cloned())
    }
}

/// Marks unsafe every node that runs an unsafe one, breadth first from the roots, so that
/// each reason names the shortest chain. Nodes the rules declare safe stay safe.
fn propagate(
    runs: &HashMap<Node, Vec<(Node, &'static str)>>,
    roots: Vec<(Node, String)>,
    declared_safe: &HashSet<Node>,
    names: &HashMap<Node, String>,
) -> HashMap<Node, Verdict> {
    let mut run_by: HashMap<Node, Vec<(Node, &'static str)>> = HashMap::new();
    for (runner, edges) in runs {
        for (ran, verb) in edges {
            run_by.entry(*ran).or_default().push((*runner, verb));
        }
    }
    let mut verdicts: HashMap<Node, Verdict> = HashMap::new();
    let mut queue = VecDeque::new();
    for (node, reason) in roots {
        if let std::collections::hash_map::Entry::Vacant(entry) = verdicts.entry(node) {
            entry.insert(Verdict::Unsafe(reason.clone()));
            queue.push_back((node, reason));
        }
    }
    while let Some((node, root)) = queue.pop_front() {
        let ran = names.get(&node).map_or("a function", String::as_str);
        for (runner, verb) in run_by.get(&node).into_iter().flatten() {
            if declared_safe.contains(runner) || verdicts.contains_key(runner) {
                continue;
            }
            let who = names.get(runner).map_or("a function", String::as_str);
            let reason = format!("{who} {verb} {ran}; {root}");
            verdicts.insert(*runner, Verdict::Unsafe(reason));
            queue.push_back((*runner, root.clone()));
        }
    }
    for node in runs.keys() {
        verdicts.entry(*node).or_insert(Verdict::Safe);
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions, Dialect};

    fn function(oid: u32, name: &str, language: &str, body: &str) -> FunctionFacts {
        FunctionFacts {
            oid,
            schema: "public".into(),
            name: name.into(),
            language: language.into(),
            body: body.into(),
            support: Vec::new(),
        }
    }

    fn relation(oid: u32, name: &str, triggers: &[u32], also_writes: &[u32]) -> RelationFacts {
        RelationFacts {
            oid,
            schema: "public".into(),
            name: name.into(),
            write_functions: triggers.to_vec(),
            has_write_rules: false,
            also_writes: also_writes.to_vec(),
        }
    }

    fn facts() -> CatalogFacts {
        CatalogFacts {
            functions: vec![
                function(
                    20000,
                    "set_tenant",
                    "sql",
                    "SELECT set_config('app.tenant', $1, false)",
                ),
                function(
                    20001,
                    "outer_tenant",
                    "plpgsql",
                    "BEGIN PERFORM set_tenant(x); END",
                ),
                function(20002, "add", "sql", "SELECT $1 + $2"),
                function(
                    20003,
                    "audit",
                    "plpgsql",
                    "BEGIN INSERT INTO audit_log VALUES (NEW.id); RETURN NEW; END",
                ),
                function(20004, "py", "plpython3u", "return 1"),
                function(
                    20005,
                    "tenant_trigger",
                    "plpgsql",
                    "BEGIN PERFORM set_tenant('1'); RETURN NEW; END",
                ),
                function(20006, "recursive", "sql", "SELECT recursive($1 - 1)"),
            ],
            relations: vec![
                relation(30000, "orders", &[20003], &[]),
                relation(30001, "audit_log", &[], &[]),
                relation(30002, "tenants", &[20005], &[]),
                relation(30003, "customers", &[], &[30002]),
            ],
            event_trigger_functions: Vec::new(),
            builtins: vec![(2078, "set_config".into()), (1, "lower".into())],
        }
    }

    fn judge(catalog: &Catalog, sql: &str) -> Judgement {
        let analysis = Analyzer::with_builtin_rules(AnalyzerOptions::default())
            .analyze(Dialect::Postgres, sql);
        catalog.judge(&analysis, sql.as_bytes())
    }

    fn changes(judgement: &Judgement) -> bool {
        matches!(judgement, Judgement::ChangesSession(_))
    }

    #[test]
    fn functions_are_judged_through_what_they_call() {
        let catalog = Catalog::new(facts(), Arc::new(Rules::builtin(Dialect::Postgres)));
        let direct = judge(&catalog, "SELECT set_tenant('8')");
        assert_eq!(
            direct,
            Judgement::ChangesSession("public.set_tenant() uses set_config()".into())
        );
        let nested = judge(&catalog, "SELECT public.outer_tenant('8')");
        assert_eq!(
            nested,
            Judgement::ChangesSession(
                "public.outer_tenant() calls public.set_tenant(); public.set_tenant() uses set_config()"
                    .into()
            )
        );
        assert!(changes(&judge(&catalog, "SELECT py()")));
        assert_eq!(
            judge(
                &catalog,
                "SELECT add(1, lower('a')::int), coalesce(NULL, 1), now()"
            ),
            Judgement::Harmless
        );
        assert_eq!(judge(&catalog, "SELECT recursive(3)"), Judgement::Harmless);
        assert_eq!(
            judge(&catalog, "SELECT missing(1)"),
            Judgement::Unknown(vec!["missing".into()])
        );
    }

    #[test]
    fn writes_are_judged_by_their_triggers_and_what_they_also_write() {
        let catalog = Catalog::new(facts(), Arc::new(Rules::builtin(Dialect::Postgres)));
        assert_eq!(
            judge(&catalog, "INSERT INTO orders VALUES (1)"),
            Judgement::Harmless
        );
        assert!(changes(&judge(&catalog, "UPDATE tenants SET a = 1")));
        assert!(changes(&judge(&catalog, "DELETE FROM public.customers")));
        assert_eq!(
            judge(&catalog, "SELECT * FROM tenants"),
            Judgement::Harmless
        );
        // Text the analyzer did not read is looked at for the names of unsafe code.
        let long = format!(
            "INSERT INTO tenants VALUES (1) /* {} */",
            "x".repeat(2 << 20)
        );
        assert!(changes(&judge(&catalog, &long)));
    }

    #[test]
    fn do_blocks_and_rules_overrides() {
        let rules = Rules::parse(
            Dialect::Postgres,
            "[session]\nset_tenant = \"safe\"\n\"public.add\" = { safety = \"unsafe\", reason = \"tests\" }\n",
            "test",
        )
        .expect("rules");
        let catalog = Catalog::new(facts(), Arc::new(rules));
        assert_eq!(
            judge(&catalog, "SELECT set_tenant('8')"),
            Judgement::Harmless
        );
        assert_eq!(
            judge(&catalog, "SELECT add(1, 2)"),
            Judgement::ChangesSession("public.add() may change session state: tests".into())
        );
        let builtin = Catalog::new(facts(), Arc::new(Rules::builtin(Dialect::Postgres)));
        assert!(changes(&judge(
            &builtin,
            "DO $$BEGIN PERFORM set_config('role', 'x', false); END$$"
        )));
        assert!(changes(&judge(
            &builtin,
            "DO $$BEGIN PERFORM outer_tenant('1'); END$$"
        )));
        assert_eq!(
            judge(&builtin, "DO $$BEGIN INSERT INTO orders VALUES (1); END$$"),
            Judgement::Harmless
        );
        assert!(changes(&judge(&builtin, "DO LANGUAGE plperl $$ 1 $$")));
    }

    #[test]
    fn function_calls_by_oid() {
        let catalog = Catalog::new(facts(), Arc::new(Rules::builtin(Dialect::Postgres)));
        assert!(changes(&catalog.judge_function(2078)));
        assert_eq!(catalog.judge_function(1), Judgement::Harmless);
        assert_eq!(catalog.judge_function(42), Judgement::Harmless);
        assert!(changes(&catalog.judge_function(20000)));
        assert_eq!(catalog.judge_function(20002), Judgement::Harmless);
        assert!(matches!(
            catalog.judge_function(99999),
            Judgement::Unknown(_)
        ));
    }
}
