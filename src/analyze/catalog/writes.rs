//! What a write reaches, for the cache's invalidation: the relations it names, and
//! through the catalog the partitions, inheritance children and foreign-key cascades it
//! also writes, and the parents whose reads see its rows. Anything the catalog cannot
//! follow (a view written through, a trigger, a rewrite rule, a relation or function it
//! does not list, a volatile user function) reaches the whole database.

use std::collections::{BTreeSet, HashMap};

use super::{Catalog, CatalogFacts, RelationKind, describe};
use crate::analyze::{Volatility, Writes};

/// What a write reaches, as far as cached reads are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Nothing a read can see.
    Nothing,
    /// These relations, schema-qualified.
    Tables(BTreeSet<String>),
    /// Anything in the database, for this reason.
    Everything(String),
}

/// A relation as a write reaches it.
#[derive(Debug)]
struct Reached {
    /// `schema.name`.
    name: String,
    /// Why a write to it reaches what the catalog cannot follow, if it does.
    opaque: Option<&'static str>,
    /// Relations a write to it also writes, and parents whose reads see it.
    next: Vec<u32>,
}

/// The relations of a catalog, by OID, as writes reach them.
#[derive(Debug, Default)]
pub(super) struct Reaches {
    relations: HashMap<u32, Reached>,
}

impl Reaches {
    pub(super) fn new(facts: &CatalogFacts) -> Reaches {
        let relations = facts
            .relations
            .iter()
            .map(|relation| {
                let opaque = if relation.kind == RelationKind::View {
                    Some("is a view, written through to relations warpdrive does not follow")
                } else if !relation.write_functions.is_empty() {
                    Some("runs user functions (triggers, defaults, checks) on writes")
                } else if relation.has_write_rules {
                    Some("has rewrite rules on writes")
                } else {
                    None
                };
                let next = relation
                    .also_writes
                    .iter()
                    .chain(&relation.parents)
                    .copied()
                    .collect();
                let reached = Reached {
                    name: describe(&relation.schema, &relation.name),
                    opaque,
                    next,
                };
                (relation.oid, reached)
            })
            .collect();
        Reaches { relations }
    }
}

/// What `writes` reach in `catalog`.
pub(super) fn reach(catalog: &Catalog, writes: &Writes) -> Reach {
    if writes.anything {
        return Reach::Everything("the statement may write what warpdrive cannot name".into());
    }
    let read_only = |oid: &u32| {
        catalog
            .function_facts
            .get(oid)
            .is_some_and(|(class, _)| *class != Volatility::Volatile)
    };
    for call in &writes.calls {
        let oids = catalog.functions_named(call);
        let known = catalog.is_builtin(call) || catalog.rules.function(call).is_some();
        if (oids.is_empty() && !known) || !oids.iter().all(read_only) {
            return Reach::Everything(format!(
                "calls {call}(), which the origin's catalog does not declare immutable or stable"
            ));
        }
    }
    for attribute in &writes.attributes {
        let calls_volatile = catalog.functions_named(attribute).iter().any(|oid| {
            catalog
                .function_facts
                .get(oid)
                .is_some_and(|(class, arguments)| *arguments == 1 && *class == Volatility::Volatile)
        });
        if calls_volatile {
            return Reach::Everything(format!(
                "x.{attribute} may call {attribute}(x), which the origin's catalog declares volatile"
            ));
        }
    }
    for operator in &writes.operators {
        let functions = catalog.reads.operator_functions(operator);
        if functions
            .iter()
            .any(|function| catalog.class_of(function) == Volatility::Volatile)
        {
            return Reach::Everything(format!(
                "applies operator {operator}, whose function may write"
            ));
        }
    }
    let mut pending: Vec<u32> = Vec::new();
    for table in &writes.tables {
        let oids = catalog.relations_named(table);
        if oids.is_empty() {
            return Reach::Everything(format!(
                "writes {table}, which the origin's catalog did not list when warpdrive last read it"
            ));
        }
        pending.extend_from_slice(oids);
    }
    let mut tables = BTreeSet::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(oid) = pending.pop() {
        if !seen.insert(oid) {
            continue;
        }
        let Some(reached) = catalog.reaches.relations.get(&oid) else {
            return Reach::Everything(format!(
                "writes relation {oid}, which the catalog does not list"
            ));
        };
        if let Some(why) = reached.opaque {
            return Reach::Everything(format!("writes {}, which {why}", reached.name));
        }
        tables.insert(reached.name.clone());
        pending.extend_from_slice(&reached.next);
    }
    match tables.is_empty() {
        true => Reach::Nothing,
        false => Reach::Tables(tables),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::catalog::tests::{function, memo, relation};
    use crate::analyze::{Dialect, Rules};

    fn facts() -> CatalogFacts {
        let mut orders = relation(1, "orders", RelationKind::Table);
        orders.also_writes = vec![2];
        let mut partition = relation(2, "orders_2026", RelationKind::Table);
        partition.parents = vec![1];
        let mut lines = relation(3, "lines", RelationKind::Table);
        lines.parents = vec![];
        let mut customers = relation(4, "customers", RelationKind::Table);
        customers.also_writes = vec![3];
        let mut audited = relation(5, "audited", RelationKind::Table);
        audited.write_functions = vec![100];
        let view = relation(6, "totals", RelationKind::View);
        let mut stable = function(101, "price_of", "sql", "SELECT 1");
        stable.volatility = Volatility::Stable;
        let volatile = function(102, "bump", "sql", "UPDATE orders SET n = n + 1");
        let shadowing = function(103, "length", "sql", "INSERT INTO orders VALUES (1)");
        CatalogFacts {
            relations: vec![orders, partition, lines, customers, audited, view],
            functions: vec![stable, volatile, shadowing],
            ..CatalogFacts::default()
        }
    }

    fn reach_of(sql: &str) -> Reach {
        let memo = memo(Rules::builtin(Dialect::Postgres));
        let catalog = Catalog::new(facts(), &memo);
        catalog.reach(
            &memo
                .analyze_bytes(Dialect::Postgres, sql.as_bytes(), Default::default())
                .writes(),
        )
    }

    fn tables(names: &[&str]) -> Reach {
        Reach::Tables(names.iter().map(|name| format!("public.{name}")).collect())
    }

    #[test]
    fn partitions_parents_and_cascades_are_reached() {
        assert_eq!(reach_of("SELECT o.id, now() FROM orders o"), Reach::Nothing);
        assert_eq!(
            reach_of("INSERT INTO orders_2026 VALUES (1)"),
            tables(&["orders", "orders_2026"])
        );
        assert_eq!(
            reach_of("DELETE FROM orders"),
            tables(&["orders", "orders_2026"])
        );
        assert_eq!(
            reach_of("DELETE FROM public.customers"),
            tables(&["customers", "lines"])
        );
        assert_eq!(reach_of("SELECT price_of(1)"), Reach::Nothing);
    }

    #[test]
    fn what_the_catalog_cannot_follow_reaches_everything() {
        for sql in [
            "UPDATE audited SET x = 1",
            "INSERT INTO totals VALUES (1)",
            "INSERT INTO unlisted VALUES (1)",
            "SELECT bump()",
            "SELECT length(42)",
            "SELECT o.bump FROM orders o",
            "SELECT unknown_function()",
            "CREATE TABLE t (x int)",
        ] {
            assert!(
                matches!(reach_of(sql), Reach::Everything(_)),
                "{sql}: {:?}",
                reach_of(sql)
            );
        }
    }
}
