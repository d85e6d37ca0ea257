//! What reading a relation, or evaluating an expression, involves beyond the query's
//! text: views (their definitions, recursively), sequences, row-level-security
//! policies, the declared volatility of user-defined functions, the functions behind
//! operators, casts, a type's input and a domain's checks, and attribute notation
//! (`t.f` calls `f(t)` when there is such a function).
//!
//! [`Reads::new`] judges every view, policy and user type once; [`Catalog::refine`] then
//! turns one query's analysis into what PostgreSQL will run. What cannot be resolved (a
//! name the catalog does not list: an operator, a type, a relation, a function) is
//! reported, so that the catalog can be read again; still unresolved, it is refused.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::super::memo::AnalysisMemo;
use super::super::{Analysis, Dialect, Kind, Reason, Status, Volatility};
use super::{Catalog, CatalogFacts, FunctionRef, RelationFacts, RelationKind, TypeFacts, describe};

/// Views may be defined over views this deep at most (PostgreSQL has no bound; a longer
/// chain is refused rather than followed without end).
const MAX_VIEW_DEPTH: usize = 32;

/// What reading something involves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ReadFacts {
    /// Why it is volatile, if it is.
    volatile: Option<String>,
    /// STABLE functions it calls.
    stable: BTreeSet<String>,
    /// Tables it reads underneath (the base tables of views).
    tables: BTreeSet<String>,
    /// Names the catalog does not list.
    unknown: BTreeSet<String>,
    /// Whether it runs user code (a function behind a call, an operator, a cast, a type
    /// or a policy), whose own reads warpdrive does not know.
    user_code: bool,
}

impl ReadFacts {
    fn volatile(reason: String) -> ReadFacts {
        ReadFacts {
            volatile: Some(reason),
            ..ReadFacts::default()
        }
    }

    fn merge(&mut self, other: ReadFacts) {
        if self.volatile.is_none() {
            self.volatile = other.volatile;
        }
        self.stable.extend(other.stable);
        self.tables.extend(other.tables);
        self.unknown.extend(other.unknown);
        self.user_code |= other.user_code;
    }

    /// Counts a call of `name` of this class; `why` says how a volatile one is reached.
    fn call(&mut self, class: Volatility, name: &str, why: impl FnOnce() -> String) {
        self.user_code = true;
        match class {
            Volatility::Volatile => {
                self.volatile.get_or_insert_with(why);
            }
            Volatility::Stable => {
                self.stable.insert(name.to_owned());
            }
            Volatility::Immutable => {}
        }
    }
}

/// The judged reads of a catalog.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Relations whose reading involves more than their rows (views, sequences,
    /// policies), by OID.
    relations: HashMap<u32, ReadFacts>,
    /// User types by bare and qualified name.
    types: HashMap<String, ReadFacts>,
    /// User operators' functions by symbol and by `schema.symbol`.
    operators: HashMap<String, Vec<FunctionRef>>,
    /// User casts' functions by target type name and `schema.name`.
    casts: HashMap<String, Vec<FunctionRef>>,
    builtin_operators: HashSet<String>,
    builtin_types: HashSet<String>,
}

/// What the catalog makes of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refinement {
    /// Nothing to add: the text's analysis stands.
    Unchanged,
    /// What PostgreSQL will run differs from what the text shows: this analysis instead.
    Refined(Box<Analysis>),
    /// Names the catalog does not list (created since it was read?).
    Unknown(Vec<String>),
}

/// Looks up what a relation or a type involves.
trait Lookup {
    fn catalog(&self) -> &Catalog;
    fn reads(&self) -> &Reads;
    fn relation(&mut self, oid: u32) -> ReadFacts;
    fn user_type(&mut self, name: &str) -> Option<ReadFacts>;
}

/// What evaluating an analysed read involves: its unknown functions, relations,
/// operators, types and attribute references, as the catalog resolves them.
fn facts_of(lookup: &mut impl Lookup, analysis: &Analysis) -> ReadFacts {
    let mut facts = ReadFacts::default();
    if analysis.kind != Kind::Read
        || !matches!(analysis.status, Status::Cacheable | Status::Volatile)
    {
        let why = analysis
            .reasons
            .first()
            .map_or_else(|| analysis.status.to_string(), ToString::to_string);
        return ReadFacts::volatile(format!("is not a plain read warpdrive understands ({why})"));
    }
    let names = &analysis.catalog_names;
    if names.volatile_anyway {
        let why = analysis.reasons.first().map(ToString::to_string);
        return ReadFacts::volatile(why.unwrap_or_else(|| "is volatile".to_owned()));
    }
    let catalog = lookup.catalog();
    // Every call, not only those the rules do not know: a user function may carry a
    // built-in's name (an overload the search path picks).
    for function in &analysis.functions {
        let oids = catalog.functions_named(function);
        if oids.is_empty() && names.unknown_functions.contains(function) {
            facts.unknown.insert(function.clone());
        }
        for oid in oids {
            if let Some((class, _)) = catalog.function_facts.get(oid) {
                facts.call(*class, function, || {
                    format!("calls {function}(), which the origin's catalog declares volatile")
                });
            }
        }
    }
    let mut attribute_calls = Vec::new();
    for attribute in &names.attributes {
        for oid in catalog.functions_named(attribute) {
            if let Some((class, 1)) = catalog.function_facts.get(oid) {
                attribute_calls.push((*class, attribute.clone()));
            }
        }
    }
    for (class, attribute) in attribute_calls {
        facts.call(class, &attribute, || {
            format!("x.{attribute} may call {attribute}(x), which the origin's catalog declares volatile")
        });
    }
    for operator in &names.operators {
        let functions = lookup.reads().operators.get(operator).cloned();
        let bare = operator.rsplit('.').next().unwrap_or(operator);
        match functions {
            Some(functions) => {
                for function in functions {
                    let class = lookup.catalog().class_of(&function);
                    facts.call(class, &function.name, || {
                        format!(
                            "applies operator {operator}, which runs volatile function {}()",
                            describe(&function.schema, &function.name)
                        )
                    });
                }
            }
            None if lookup.reads().builtin_operators.contains(bare) => {}
            None => {
                facts.unknown.insert(format!("operator {operator}"));
            }
        }
    }
    for name in &names.types {
        facts.merge(type_facts(lookup, name));
    }
    for name in &names.sql_types {
        facts.merge(casts_to(lookup, name));
    }
    for table in &analysis.tables_read {
        let count = lookup.catalog().relations_named(table).len();
        if count == 0 {
            facts.unknown.insert(table.clone());
        }
        for at in 0..count {
            let oid = lookup.catalog().relations_named(table)[at];
            let read = lookup.relation(oid);
            facts.merge(read);
        }
    }
    facts
}

/// What converting to a type named in the text involves: a user type's facts, the user
/// casts to a built-in type; a type the catalog does not know is unknown.
fn type_facts(lookup: &mut impl Lookup, name: &str) -> ReadFacts {
    if let Some(facts) = lookup.user_type(name) {
        return facts;
    }
    let bare = name.rsplit('.').next().unwrap_or(name);
    if !lookup.reads().builtin_types.contains(bare) {
        let mut facts = ReadFacts::default();
        facts.unknown.insert(format!("type {name}"));
        return facts;
    }
    casts_to(lookup, name)
}

/// What converting to a built-in type involves: the user casts to it.
fn casts_to(lookup: &mut impl Lookup, name: &str) -> ReadFacts {
    let mut facts = ReadFacts::default();
    for function in lookup.reads().casts.get(name).cloned().unwrap_or_default() {
        let class = lookup.catalog().class_of(&function);
        facts.call(class, &function.name, || {
            format!(
                "converts to {name} with a cast that runs volatile function {}()",
                describe(&function.schema, &function.name)
            )
        });
    }
    facts
}

/// The lookup while the catalog is judged: relations and types are judged on first use,
/// views recursively.
struct Judging<'a> {
    catalog: &'a Catalog,
    reads: Reads,
    analyzer: &'a AnalysisMemo,
    relations: HashMap<u32, &'a RelationFacts>,
    types: HashMap<String, &'a TypeFacts>,
    types_by_oid: HashMap<u32, &'a TypeFacts>,
    relation_done: HashMap<u32, ReadFacts>,
    type_done: HashMap<u32, ReadFacts>,
    /// Views (and domains) being judged, to stop at a cycle.
    visiting: Vec<u32>,
}

impl Lookup for Judging<'_> {
    fn catalog(&self) -> &Catalog {
        self.catalog
    }

    fn reads(&self) -> &Reads {
        &self.reads
    }

    fn relation(&mut self, oid: u32) -> ReadFacts {
        if let Some(done) = self.relation_done.get(&oid) {
            return done.clone();
        }
        let Some(relation) = self.relations.get(&oid).copied() else {
            return ReadFacts::default();
        };
        if self.visiting.contains(&oid) || self.visiting.len() >= MAX_VIEW_DEPTH {
            return ReadFacts::volatile(format!(
                "reads view {}, whose definition nests too deep to follow",
                describe(&relation.schema, &relation.name)
            ));
        }
        self.visiting.push(oid);
        let facts = self.judge_relation(relation);
        self.visiting.pop();
        self.relation_done.insert(oid, facts.clone());
        facts
    }

    fn user_type(&mut self, name: &str) -> Option<ReadFacts> {
        let facts = *self.types.get(name)?;
        Some(self.judge_type(facts))
    }
}

impl Judging<'_> {
    /// The facts of a read a definition holds (a view's, a policy's, a check's), with
    /// the STABLE functions its own text calls.
    fn definition(&mut self, text: &str) -> (ReadFacts, std::sync::Arc<Analysis>) {
        let analysis = self.analyzer.analyze(Dialect::Postgres, text);
        let mut facts = facts_of(self, &analysis);
        facts
            .stable
            .extend(analysis.stable_functions.iter().cloned());
        (facts, analysis)
    }

    /// The facts of an expression as a read: `SELECT expression`.
    /// The facts of an expression (a policy's, a check's), with the tables its
    /// subqueries read.
    fn expression(&mut self, expression: &str) -> ReadFacts {
        let (mut facts, analysis) = self.definition(&format!("SELECT {expression}"));
        facts.tables.extend(analysis.tables_read.iter().cloned());
        facts
    }

    fn judge_relation(&mut self, relation: &RelationFacts) -> ReadFacts {
        let name = describe(&relation.schema, &relation.name);
        let mut facts = match (relation.kind, &relation.definition) {
            (RelationKind::Sequence, _) => ReadFacts::volatile(format!(
                "reads sequence {name}, whose values change with every nextval()"
            )),
            (RelationKind::View, Some(definition)) => {
                let (mut facts, analysis) = self.definition(definition);
                facts.tables.extend(analysis.tables_read.iter().cloned());
                if let Some(why) = facts.volatile.take() {
                    facts.volatile = Some(format!("reads view {name}, which {why}"));
                }
                facts
            }
            _ => ReadFacts::default(),
        };
        for policy in &relation.policies {
            let mut policy_facts = self.expression(policy);
            if let Some(why) = policy_facts.volatile.take() {
                policy_facts.volatile = Some(format!(
                    "reads {name}, whose row-level-security policy {why}"
                ));
            }
            facts.merge(policy_facts);
        }
        facts
    }

    fn judge_type(&mut self, user_type: &TypeFacts) -> ReadFacts {
        if let Some(done) = self.type_done.get(&user_type.oid) {
            return done.clone();
        }
        let name = describe(&user_type.schema, &user_type.name);
        if self.visiting.contains(&user_type.oid) {
            return ReadFacts::volatile(format!("converts to {name}, a domain over itself"));
        }
        self.visiting.push(user_type.oid);
        let mut facts = ReadFacts::default();
        let input = &user_type.input;
        let class = self.catalog.class_of(input);
        facts.call(class, &input.name, || {
            format!(
                "converts to {name}, whose input function {}() is volatile",
                describe(&input.schema, &input.name)
            )
        });
        let casts = self.reads.casts.get(&name).cloned().unwrap_or_default();
        for function in casts {
            let class = self.catalog.class_of(&function);
            facts.call(class, &function.name, || {
                format!(
                    "converts to {name} with a cast that runs volatile function {}()",
                    describe(&function.schema, &function.name)
                )
            });
        }
        for check in &user_type.checks {
            let mut check_facts = self.expression(check);
            if let Some(why) = check_facts.volatile.take() {
                check_facts.volatile =
                    Some(format!("converts to domain {name}, whose check {why}"));
            }
            facts.merge(check_facts);
        }
        if let Some(base) = self.types_by_oid.get(&user_type.base).copied() {
            let base = self.judge_type(base);
            facts.merge(base);
        }
        self.visiting.pop();
        self.type_done.insert(user_type.oid, facts.clone());
        facts
    }
}

/// The lookup of a judged catalog, for one query.
struct Judged<'a> {
    catalog: &'a Catalog,
}

impl Lookup for Judged<'_> {
    fn catalog(&self) -> &Catalog {
        self.catalog
    }

    fn reads(&self) -> &Reads {
        &self.catalog.reads
    }

    fn relation(&mut self, oid: u32) -> ReadFacts {
        self.catalog
            .reads
            .relations
            .get(&oid)
            .cloned()
            .unwrap_or_default()
    }

    fn user_type(&mut self, name: &str) -> Option<ReadFacts> {
        self.catalog.reads.types.get(name).cloned()
    }
}

fn by_keys<T: Clone>(
    entries: impl IntoIterator<Item = (String, String, T)>,
) -> HashMap<String, Vec<T>> {
    let mut map: HashMap<String, Vec<T>> = HashMap::new();
    for (schema, name, value) in entries {
        for key in super::keys(&schema, &name) {
            map.entry(key).or_default().push(value.clone());
        }
    }
    map
}

impl Reads {
    /// The functions of the user operators `operator` may stand for.
    pub(super) fn operator_functions(&self, operator: &str) -> &[FunctionRef] {
        self.operators.get(operator).map_or(&[], Vec::as_slice)
    }

    /// Judges every view, policy table, sequence and user type of `facts`; `catalog` has
    /// the name maps and function facts.
    pub(super) fn new(catalog: &Catalog, facts: &CatalogFacts, analyzer: &AnalysisMemo) -> Reads {
        let reads = Reads {
            relations: HashMap::new(),
            types: HashMap::new(),
            operators: by_keys(facts.operators.iter().map(|operator| {
                (
                    operator.schema.clone(),
                    operator.name.clone(),
                    operator.function.clone(),
                )
            })),
            casts: by_keys(facts.casts.iter().map(|cast| {
                (
                    cast.target_schema.clone(),
                    cast.target.clone(),
                    cast.function.clone(),
                )
            })),
            builtin_operators: facts.builtin_operators.iter().cloned().collect(),
            builtin_types: facts.builtin_types.iter().cloned().collect(),
        };
        let mut types = HashMap::new();
        for user_type in &facts.types {
            for key in super::keys(&user_type.schema, &user_type.name) {
                types.insert(key, user_type);
            }
        }
        let mut judging = Judging {
            catalog,
            reads,
            analyzer,
            relations: facts.relations.iter().map(|r| (r.oid, r)).collect(),
            types,
            types_by_oid: facts.types.iter().map(|t| (t.oid, t)).collect(),
            relation_done: HashMap::new(),
            type_done: HashMap::new(),
            visiting: Vec::new(),
        };
        for relation in &facts.relations {
            let involved = matches!(relation.kind, RelationKind::Sequence | RelationKind::View)
                || !relation.policies.is_empty();
            if involved {
                judging.relation(relation.oid);
            }
        }
        for user_type in &facts.types {
            let judged = judging.judge_type(user_type);
            for key in super::keys(&user_type.schema, &user_type.name) {
                judging.reads.types.insert(key, judged.clone());
            }
        }
        let mut reads = judging.reads;
        reads.relations = judging
            .relation_done
            .into_iter()
            .filter(|(_, facts)| *facts != ReadFacts::default())
            .collect();
        reads
    }
}

/// A read as PostgreSQL will run it: the volatility its views, user functions,
/// operators, casts, attribute references and policies add (or, for functions the
/// rules do not know, take away), and the base tables of its views. Only reads that
/// the text alone leaves cacheable, or volatile for unknown functions only, are
/// refined.
pub(super) fn refine(catalog: &Catalog, analysis: &Analysis) -> Refinement {
    let refinable = analysis.kind == Kind::Read
        && match analysis.status {
            Status::Cacheable => true,
            Status::Volatile => !analysis.catalog_names.volatile_anyway,
            _ => false,
        };
    if !refinable {
        return Refinement::Unchanged;
    }
    let facts = facts_of(&mut Judged { catalog }, analysis);
    if !facts.unknown.is_empty() {
        return Refinement::Unknown(facts.unknown.into_iter().collect());
    }
    let unknown = &analysis.catalog_names.unknown_functions;
    if facts == ReadFacts::default() && unknown.is_empty() {
        return Refinement::Unchanged;
    }
    let status = if facts.volatile.is_some() {
        Status::Volatile
    } else {
        Status::Cacheable
    };
    let stable: BTreeSet<String> = analysis
        .stable_functions
        .iter()
        .chain(&facts.stable)
        .cloned()
        .collect();
    let tables: BTreeSet<String> = analysis
        .tables_read
        .iter()
        .chain(&facts.tables)
        .cloned()
        .collect();
    let unchanged = status == analysis.status
        && unknown.is_empty()
        && stable.len() == analysis.stable_functions.len()
        && tables.len() == analysis.tables_read.len();
    if unchanged {
        return Refinement::Unchanged;
    }
    let mut refined = analysis.clone();
    refined.status = status;
    refined.reasons = facts.volatile.into_iter().map(Reason::new).collect();
    refined
        .volatile_functions
        .retain(|name| !unknown.contains(name));
    refined.stable_functions = stable.into_iter().collect();
    refined.tables_read = tables.into_iter().collect();
    refined.catalog_names.unknown_functions.clear();
    Refinement::Refined(Box::new(refined))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{builtin, function, memo, relation};
    use super::super::{CastFacts, OperatorFacts};
    use super::*;
    use crate::analyze::{Rules, StableFunctions};

    fn view(oid: u32, name: &str, definition: &str) -> RelationFacts {
        let mut view = relation(oid, name, RelationKind::View);
        view.definition = Some(definition.to_owned());
        view
    }

    fn facts() -> CatalogFacts {
        let mut immutable = function(20001, "pure", "sql", "SELECT $1 * 2");
        immutable.volatility = Volatility::Immutable;
        let mut stable = function(20002, "rates", "sql", "SELECT 1");
        stable.volatility = Volatility::Stable;
        let mut attribute = function(20003, "label", "plpgsql", "BEGIN RETURN 'x'; END");
        attribute.volatility = Volatility::Volatile;
        let mut secured = relation(30004, "secret", RelationKind::Table);
        secured.policies = vec!["(owner = random())".to_owned()];
        CatalogFacts {
            functions: vec![
                function(20000, "logit", "plpgsql", "BEGIN RETURN 1; END"),
                immutable,
                stable,
                attribute,
            ],
            relations: vec![
                relation(30000, "items", RelationKind::Table),
                view(30001, "v_seq", " SELECT nextval('s'::regclass) AS nextval;"),
                view(30002, "v_items", " SELECT items.a FROM items;"),
                view(30003, "v_v", " SELECT v_items.a FROM v_items;"),
                secured,
                relation(30005, "s", RelationKind::Sequence),
                relation(30006, "pg_class", RelationKind::Table),
            ],
            operators: vec![OperatorFacts {
                schema: "public".into(),
                name: "###".into(),
                function: FunctionRef {
                    schema: "public".into(),
                    name: "logit".into(),
                    volatility: Volatility::Volatile,
                },
            }],
            builtin_operators: vec!["+".into(), "=".into(), "*".into(), ">".into()],
            types: vec![
                TypeFacts {
                    oid: 40000,
                    schema: "public".into(),
                    name: "logdom".into(),
                    input: builtin("domain_in", Volatility::Immutable),
                    base: 23,
                    checks: vec!["(logit(VALUE) > 0)".to_owned()],
                },
                TypeFacts {
                    oid: 40001,
                    schema: "public".into(),
                    name: "pair".into(),
                    input: builtin("record_in", Volatility::Immutable),
                    base: 0,
                    checks: Vec::new(),
                },
            ],
            builtin_types: vec!["int4".into(), "text".into(), "regclass".into()],
            casts: vec![CastFacts {
                target_schema: "public".into(),
                target: "pair".into(),
                function: FunctionRef {
                    schema: "public".into(),
                    name: "logit".into(),
                    volatility: Volatility::Volatile,
                },
            }],
            ..CatalogFacts::default()
        }
    }

    fn refine(sql: &str) -> Refinement {
        let memo = memo(Rules::builtin(Dialect::Postgres));
        let catalog = Catalog::new(facts(), &memo);
        catalog.refine(&memo.analyze(Dialect::Postgres, sql))
    }

    fn refined(sql: &str) -> Analysis {
        match refine(sql) {
            Refinement::Refined(analysis) => *analysis,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn views_are_read_through_to_their_definitions() {
        let sequence = refined("SELECT * FROM v_seq");
        assert_eq!(sequence.status, Status::Volatile);
        assert!(
            sequence.reasons[0]
                .as_str()
                .starts_with("reads view public.v_seq")
        );
        let nested = refined("SELECT a FROM v_v WHERE a > 1");
        assert_eq!(nested.status, Status::Cacheable);
        assert_eq!(nested.tables_read, vec!["items", "v_items", "v_v"]);
        assert_eq!(refine("SELECT a FROM items"), Refinement::Unchanged);
        assert_eq!(refined("SELECT last_value FROM s").status, Status::Volatile);
        assert_eq!(refined("SELECT * FROM secret").status, Status::Volatile);
        assert_eq!(
            refine("SELECT * FROM nowhere"),
            Refinement::Unknown(vec!["nowhere".into()])
        );
    }

    #[test]
    fn user_functions_are_judged_by_their_declared_volatility() {
        let pure = refined("SELECT pure(2)");
        assert_eq!(pure.status, Status::Cacheable);
        assert!(pure.reasons.is_empty());
        let stable = refined("SELECT rates()");
        assert_eq!(stable.status, Status::Cacheable);
        assert_eq!(
            stable.status_under(StableFunctions::Bypass),
            Status::Volatile
        );
        assert_eq!(refined("SELECT logit(1)").status, Status::Volatile);
    }

    #[test]
    fn operators_casts_domains_and_attributes_reach_functions() {
        assert_eq!(refined("SELECT 1 ### 2").status, Status::Volatile);
        assert_eq!(refine("SELECT 1 + 2"), Refinement::Unchanged);
        assert_eq!(refined("SELECT 5::logdom").status, Status::Volatile);
        assert_eq!(refined("SELECT 7::pair").status, Status::Volatile);
        assert_eq!(
            refined("SELECT i.label FROM items i").status,
            Status::Volatile
        );
        assert_eq!(refine("SELECT i.a FROM items i"), Refinement::Unchanged);
        assert_eq!(
            refine("SELECT 1 #### 2"),
            Refinement::Unknown(vec!["operator ####".into()])
        );
        assert_eq!(
            refine("SELECT 'x'::mystery"),
            Refinement::Unknown(vec!["type mystery".into()])
        );
        assert_eq!(
            refine("SELECT 'x'::text, relname FROM pg_class"),
            Refinement::Unchanged
        );
    }
}
