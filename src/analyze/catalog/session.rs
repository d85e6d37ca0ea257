//! Whether code a statement runs may change the session that runs it.
//!
//! - A function is *unsafe* when the rules say so, or when its body ([`read_code`])
//!   changes the session, runs dynamic SQL, is in a language warpdrive cannot read, or
//!   calls an unsafe function or writes an unsafe relation; the rules can also declare it
//!   safe, which ends the reading.
//! - A relation is unsafe when a write to it runs an unsafe function (a trigger, a column
//!   default, a CHECK or domain constraint), rewrite rules act on writes to it, or a write
//!   to it also writes an unsafe relation (partitions and inheritance children, tables
//!   whose foreign keys cascade from it).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::super::code::read_code;
use super::super::effects::session_state_feature;
use super::super::rules::SessionSafety;
use super::super::{Analysis, Kind};
use super::{Catalog, CatalogFacts, FIRST_USER_OID, describe};

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

/// The verdicts on every function and relation.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    verdicts: HashMap<Node, Verdict>,
    event_triggers: Verdict,
    /// Unsafe functions and relations by lower-case bare name, for text that was not read.
    unsafe_names: HashMap<String, String>,
}

impl Verdicts {
    /// Judges every function and relation of `facts`; `catalog` has the name maps.
    pub(super) fn new(catalog: &Catalog, facts: &CatalogFacts) -> Verdicts {
        let mut names: HashMap<Node, (String, String)> = HashMap::new();
        for function in &facts.functions {
            names.insert(
                Node::Function(function.oid),
                (
                    format!("{}()", describe(&function.schema, &function.name)),
                    function.name.to_lowercase(),
                ),
            );
        }
        for relation in &facts.relations {
            names.insert(
                Node::Relation(relation.oid),
                (
                    format!("table {}", describe(&relation.schema, &relation.name)),
                    relation.name.to_lowercase(),
                ),
            );
        }
        let who = |node: &Node| names.get(node).map_or("", |(shown, _)| shown.as_str());
        // Edges from a node to what it runs, with the verb that says how.
        let mut runs: HashMap<Node, Vec<(Node, &'static str)>> = HashMap::new();
        let mut roots: Vec<(Node, String)> = Vec::new();
        let mut declared_safe: HashSet<Node> = HashSet::new();
        for function in &facts.functions {
            let node = Node::Function(function.oid);
            match catalog.rules.session(&function.schema, &function.name) {
                Some(rule) if rule.safety == SessionSafety::Safe => {
                    declared_safe.insert(node);
                    continue;
                }
                Some(rule) => {
                    let why = rule.reason.as_deref().unwrap_or("the rules say so");
                    roots.push((
                        node,
                        format!("{} may change session state: {why}", who(&node)),
                    ));
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
                roots.push((node, format!("{} {reason}", who(&node))));
            }
            for call in &reading.calls {
                for oid in catalog.functions_named(call) {
                    edges.push((Node::Function(*oid), "calls"));
                }
            }
            for mention in &reading.mentions {
                for oid in catalog.relations_named(mention) {
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
                roots.push((
                    node,
                    format!(
                        "{} has rewrite rules on writes, which warpdrive does not read",
                        who(&node)
                    ),
                ));
            }
        }
        let verdicts = propagate(&runs, roots, &declared_safe, &who);
        let unsafe_names = verdicts
            .iter()
            .filter_map(|(node, verdict)| match (verdict, names.get(node)) {
                (Verdict::Unsafe(reason), Some((_, bare))) => Some((bare.clone(), reason.clone())),
                _ => None,
            })
            .collect();
        let event_triggers = facts
            .event_trigger_functions
            .iter()
            .find_map(|oid| match verdicts.get(&Node::Function(*oid)) {
                Some(Verdict::Unsafe(reason)) => Some(Verdict::Unsafe(format!(
                    "an event trigger runs on DDL; {reason}"
                ))),
                _ => None,
            })
            .unwrap_or(Verdict::Safe);
        Verdicts {
            verdicts,
            event_triggers,
            unsafe_names,
        }
    }

    fn get(&self, node: Node) -> &Verdict {
        self.verdicts.get(&node).unwrap_or(&Verdict::Safe)
    }
}

/// Marks unsafe every node that runs an unsafe one, breadth first from the roots, so that
/// each reason names the shortest chain. Nodes the rules declare safe stay safe.
fn propagate<'a>(
    runs: &HashMap<Node, Vec<(Node, &'static str)>>,
    roots: Vec<(Node, String)>,
    declared_safe: &HashSet<Node>,
    who: &impl Fn(&Node) -> &'a str,
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
        for (runner, verb) in run_by.get(&node).into_iter().flatten() {
            if declared_safe.contains(runner) || verdicts.contains_key(runner) {
                continue;
            }
            let reason = format!("{} {verb} {}; {root}", who(runner), who(&node));
            verdicts.insert(*runner, Verdict::Unsafe(reason));
            queue.push_back((*runner, root.clone()));
        }
    }
    for node in runs.keys() {
        verdicts.entry(*node).or_insert(Verdict::Safe);
    }
    verdicts
}

fn is_keyword(name: &str) -> bool {
    sqlparser::keywords::ALL_KEYWORDS
        .binary_search(&name.to_ascii_uppercase().as_str())
        .is_ok()
}

/// The session-safety verdicts, as one catalog looks them up.
pub(super) struct Judge<'a> {
    pub(super) catalog: &'a Catalog,
}

impl Judge<'_> {
    /// The verdict on every user function a name may call; `None` when no user function
    /// has that name.
    fn function_verdict(&self, name: &str) -> Option<Verdict> {
        let oids = self.catalog.functions_named(name);
        if oids.is_empty() {
            return None;
        }
        Some(
            oids.iter()
                .map(|oid| self.catalog.session.get(Node::Function(*oid)))
                .find(|verdict| matches!(verdict, Verdict::Unsafe(_)))
                .cloned()
                .unwrap_or(Verdict::Safe),
        )
    }

    fn relation_verdict(&self, name: &str) -> Verdict {
        self.catalog
            .relations_named(name)
            .iter()
            .map(|oid| self.catalog.session.get(Node::Relation(*oid)))
            .find(|verdict| matches!(verdict, Verdict::Unsafe(_)))
            .cloned()
            .unwrap_or(Verdict::Safe)
    }

    /// What `analysis` may do to the session. `text` is the statement as sent, looked at
    /// when the analyzer did not read it.
    pub(super) fn judge(&self, analysis: &Analysis, text: &[u8]) -> Judgement {
        let mut unknown = Vec::new();
        for name in &analysis.functions {
            match self.function_verdict(name) {
                Some(Verdict::Unsafe(reason)) => return Judgement::ChangesSession(reason),
                Some(Verdict::Safe) => {}
                None if self.catalog.is_builtin(name) => {}
                None => unknown.push(name.clone()),
            }
        }
        for table in &analysis.tables_written {
            if let Verdict::Unsafe(reason) = self.relation_verdict(table) {
                return Judgement::ChangesSession(reason);
            }
        }
        if analysis.kind == Kind::Ddl
            && let Verdict::Unsafe(reason) = &self.catalog.session.event_triggers
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
                match self.function_verdict(call) {
                    Some(Verdict::Unsafe(reason)) => return Judgement::ChangesSession(reason),
                    Some(Verdict::Safe) => {}
                    None if self.catalog.is_builtin(call) || is_keyword(call) => {}
                    None => unknown.push(call.clone()),
                }
            }
            for mention in &reading.mentions {
                if let Verdict::Unsafe(reason) = self.relation_verdict(mention) {
                    return Judgement::ChangesSession(reason);
                }
            }
        }
        let writes = analysis.kind != Kind::Read;
        for name in &analysis.user_code.names {
            if let Some(Verdict::Unsafe(reason)) = self.function_verdict(name) {
                return Judgement::ChangesSession(reason);
            }
            if writes && let Verdict::Unsafe(reason) = self.relation_verdict(name) {
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
    pub(super) fn judge_function(&self, oid: u32) -> Judgement {
        if let Some(name) = self.catalog.builtin_oids.get(&oid) {
            return match session_state_feature(name) {
                Some(feature) => Judgement::ChangesSession(format!("{feature} (FunctionCall)")),
                None => Judgement::Harmless,
            };
        }
        if oid < FIRST_USER_OID {
            return Judgement::Harmless;
        }
        match self.catalog.session.verdicts.get(&Node::Function(oid)) {
            Some(Verdict::Unsafe(reason)) => Judgement::ChangesSession(reason.clone()),
            Some(Verdict::Safe) => Judgement::Harmless,
            None if self.catalog.function_facts.contains_key(&oid) => Judgement::Harmless,
            None => Judgement::Unknown(vec![format!("the function with OID {oid}")]),
        }
    }

    /// The first unsafe function or relation whose name appears in a text as a word.
    fn unsafe_name_in(&self, text: &[u8]) -> Option<String> {
        if self.catalog.session.unsafe_names.is_empty() {
            return None;
        }
        let lowered = String::from_utf8_lossy(text).to_lowercase();
        let words: BTreeSet<&str> = lowered
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .collect();
        words
            .into_iter()
            .find_map(|word| self.catalog.session.unsafe_names.get(word).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{function, memo, relation};
    use super::super::{CatalogFacts, RelationKind};
    use super::*;
    use crate::analyze::{AnalysisMemo, Dialect, Rules};

    fn writing(
        oid: u32,
        name: &str,
        triggers: &[u32],
        also_writes: &[u32],
    ) -> super::super::RelationFacts {
        let mut relation = relation(oid, name, RelationKind::Table);
        relation.write_functions = triggers.to_vec();
        relation.also_writes = also_writes.to_vec();
        relation
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
                writing(30000, "orders", &[20003], &[]),
                writing(30001, "audit_log", &[], &[]),
                writing(30002, "tenants", &[20005], &[]),
                writing(30003, "customers", &[], &[30002]),
            ],
            builtins: vec![(2078, "set_config".into()), (1, "lower".into())],
            ..CatalogFacts::default()
        }
    }

    fn catalog(rules: Rules) -> (Catalog, AnalysisMemo) {
        let memo = memo(rules);
        (Catalog::new(facts(), &memo), memo)
    }

    fn judge(catalog: &(Catalog, AnalysisMemo), sql: &str) -> Judgement {
        let analysis = catalog.1.analyze(Dialect::Postgres, sql);
        catalog.0.judge(&analysis, sql.as_bytes())
    }

    fn changes(judgement: &Judgement) -> bool {
        matches!(judgement, Judgement::ChangesSession(_))
    }

    #[test]
    fn functions_are_judged_through_what_they_call() {
        let catalog = catalog(Rules::builtin(Dialect::Postgres));
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
        let catalog = catalog(Rules::builtin(Dialect::Postgres));
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
        let overridden = catalog(rules);
        assert_eq!(
            judge(&overridden, "SELECT set_tenant('8')"),
            Judgement::Harmless
        );
        assert_eq!(
            judge(&overridden, "SELECT add(1, 2)"),
            Judgement::ChangesSession("public.add() may change session state: tests".into())
        );
        let builtin = catalog(Rules::builtin(Dialect::Postgres));
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
        let (catalog, _) = catalog(Rules::builtin(Dialect::Postgres));
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
