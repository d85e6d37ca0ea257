//! The walk over one parsed statement: every relation, function call and variable.
//!
//! sqlparser's `Visitor` reaches every expression, subquery, CTE, join, LATERAL item,
//! window, set operation, VALUES list and function argument; the walk records what it
//! finds and the reasons a read cannot be cached:
//!
//! - writes hidden in a read: data-modifying CTEs (a nested INSERT/UPDATE/DELETE/MERGE),
//!   `SELECT … INTO`, locking clauses at any depth;
//! - volatility: volatile or unknown functions, volatile relations, MySQL variables,
//!   `SQL_CALC_FOUND_ROWS`, `TABLESAMPLE` without `REPEATABLE`;
//! - clock-dependent literals (`'now'`, `'today'`, …), which count as STABLE functions.
//!
//! Names are resolved the way the dialect does: PostgreSQL folds unquoted identifiers to
//! lower case and keeps quoted ones as written (so `"Lower"(x)` is not `lower(x)`), and
//! `pg_catalog.f` is the built-in `f`; MySQL compares names case-insensitively.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor,
    TableObject, Value, ValueWithSpan, Visit, Visitor,
};

use super::rules::Volatility;
use super::statement::Class;
use super::{Analysis, CatalogNames, Dialect, Kind, NameSet, Reason, Rules, Status};

/// The `pg_type` name of a built-in SQL type as sqlparser shows it (`INTEGER` → `int4`,
/// `TIMESTAMP WITH TIME ZONE` → `timestamptz`); other names in lower case, without
/// modifiers.
fn builtin_type_name(data_type: &sqlparser::ast::DataType) -> String {
    let shown = data_type.to_string().to_lowercase();
    let bare = shown.split('(').next().unwrap_or_default().trim();
    let name = match bare {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "boolean" | "bool" => "bool",
        "real" | "float4" => "float4",
        "double precision" | "float" | "float8" => "float8",
        "decimal" | "numeric" | "dec" => "numeric",
        "character varying" | "varchar" => "varchar",
        "character" | "char" | "bpchar" => "bpchar",
        "time" | "time without time zone" => "time",
        "time with time zone" | "timetz" => "timetz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "bit varying" | "varbit" => "varbit",
        other if other.starts_with("interval") => "interval",
        other => other,
    };
    name.to_owned()
}

/// The special date/time input values PostgreSQL evaluates when the statement runs.
const MOVING_TIME_WORDS: [&str; 4] = ["now", "today", "tomorrow", "yesterday"];

/// What a walk found, merged over all statements of a text.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    read: NameSet,
    written: NameSet,
    functions: NameSet,
    volatile_functions: NameSet,
    stable_functions: NameSet,
    /// Reasons the read writes or locks: make it `uncacheable`.
    writes: Vec<Reason>,
    /// Whether a read hides a data change (so its kind is a write).
    changes_data: bool,
    /// Reasons the read is `volatile` whatever the origin's catalog says.
    volatility: Vec<Reason>,
    /// Functions the rules do not know: volatile unless the catalog says otherwise.
    unknown_functions: NameSet,
    /// Operators used: user-defined ones run their function.
    operators: NameSet,
    /// Types converted to by name: user types run input functions, casts, domain checks.
    types: NameSet,
    /// SQL types converted to (by `pg_type` name): user casts to them run functions.
    sql_types: NameSet,
    /// The last part of `x.name` references: a column, or a call of `name(x)`.
    attributes: NameSet,
}

impl Facts {
    /// Merges the facts of another statement.
    pub(crate) fn absorb(&mut self, other: Facts) {
        self.read.extend(other.read);
        self.written.extend(other.written);
        self.functions.extend(other.functions);
        self.volatile_functions.extend(other.volatile_functions);
        self.stable_functions.extend(other.stable_functions);
        self.writes.extend(other.writes);
        self.changes_data |= other.changes_data;
        self.volatility.extend(other.volatility);
        self.unknown_functions.extend(other.unknown_functions);
        self.operators.extend(other.operators);
        self.types.extend(other.types);
        self.sql_types.extend(other.sql_types);
        self.attributes.extend(other.attributes);
    }

    /// The functions called.
    pub(crate) fn functions(&self) -> &NameSet {
        &self.functions
    }

    /// The relations written.
    pub(crate) fn written(&self) -> &NameSet {
        &self.written
    }

    /// The operators applied.
    pub(crate) fn operators(&self) -> &NameSet {
        &self.operators
    }

    /// The last parts of `x.name` references.
    pub(crate) fn attributes(&self) -> &NameSet {
        &self.attributes
    }

    /// Whether the statement changes data although it is written as a read.
    pub(crate) fn changes_data(&self) -> bool {
        self.changes_data
    }

    /// The status of a single statement of the given class, with its reasons. A write or
    /// lock outranks volatility.
    pub(crate) fn verdict(&self, class: Class) -> (Status, Vec<Reason>) {
        if let Some((status, reason)) = class.refusal {
            return (status, vec![reason]);
        }
        if !self.writes.is_empty() {
            return (Status::Uncacheable, self.writes.clone());
        }
        if !self.volatility.is_empty() || !self.unknown_functions.is_empty() {
            let unknown = self.unknown_functions.iter().map(|name| {
                Reason::new(format!(
                    "calls unknown function {name}(): functions not in the rules are treated as volatile unless the origin's catalog declares them immutable or stable; declare it in a rules file to decide yourself"
                ))
            });
            return (
                Status::Volatile,
                self.volatility.iter().cloned().chain(unknown).collect(),
            );
        }
        (Status::Cacheable, Vec::new())
    }

    pub(crate) fn into_analysis(
        self,
        status: Status,
        kind: Kind,
        statements: usize,
        reasons: Vec<Reason>,
    ) -> Analysis {
        let tables_read = self.read.difference(&self.written).cloned().collect();
        let catalog_names = CatalogNames {
            unknown_functions: self.unknown_functions.into_iter().collect(),
            operators: self.operators.into_iter().collect(),
            types: self.types.into_iter().collect(),
            sql_types: self.sql_types.into_iter().collect(),
            attributes: self.attributes.into_iter().collect(),
            volatile_anyway: !self.volatility.is_empty(),
        };
        Analysis {
            status,
            kind,
            statements,
            tables_read,
            tables_written: self.written.into_iter().collect(),
            functions: self.functions.into_iter().collect(),
            reads_unknown_tables: false,
            volatile_functions: self.volatile_functions.into_iter().collect(),
            stable_functions: self.stable_functions.into_iter().collect(),
            reasons,
            statement_effects: Vec::new(),
            statement_writes: Vec::new(),
            fingerprint: String::new(),
            hint: None,
            user_code: super::UserCode::default(),
            catalog_names,
        }
    }
}

/// Walks one statement.
pub(crate) fn walk(dialect: Dialect, rules: &Rules, statement: &Statement) -> Facts {
    let mut walker = Walker {
        dialect,
        rules,
        facts: Facts::default(),
        cte_scopes: Vec::new(),
        statement_depth: 0,
        table_function_pending: false,
    };
    // The walker never breaks: it collects everything.
    let _ = statement.visit(&mut walker);
    walker.facts
}

struct Walker<'r> {
    dialect: Dialect,
    rules: &'r Rules,
    facts: Facts,
    /// CTE names visible at the current point, innermost query last.
    cte_scopes: Vec<Vec<String>>,
    statement_depth: usize,
    /// Set when a FROM item is a function call (`FROM generate_series(1, 3)`): the
    /// relation visit that follows is that function's name, not a table.
    table_function_pending: bool,
}

impl Walker<'_> {
    /// An identifier as the dialect resolves it.
    fn ident(&self, ident: &Ident) -> String {
        match (self.dialect, ident.quote_style) {
            (Dialect::Postgres, Some(_)) => ident.value.clone(),
            _ => ident.value.to_lowercase(),
        }
    }

    fn parts(&self, name: &ObjectName) -> Vec<String> {
        name.0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => self.ident(ident),
                other => other.to_string().to_lowercase(),
            })
            .collect()
    }

    /// A function's name as the rules key it: `pg_catalog.` is dropped in PostgreSQL.
    fn function_name(&self, name: &ObjectName) -> String {
        let mut parts = self.parts(name);
        if self.dialect == Dialect::Postgres && parts.len() == 2 && parts[0] == "pg_catalog" {
            parts.remove(0);
        }
        parts.join(".")
    }

    fn record_function(&mut self, name: &ObjectName) {
        let resolved = self.function_name(name);
        self.facts.functions.insert(resolved.clone());
        match self.rules.function(&resolved) {
            Some(rule) if rule.class == Volatility::Volatile => {
                let why = rule.reason.clone().unwrap_or_else(|| match self.dialect {
                    Dialect::Postgres => "PostgreSQL's catalog marks it volatile".to_owned(),
                    Dialect::Mysql => "non-deterministic built-in".to_owned(),
                });
                self.facts.volatility.push(Reason::new(format!(
                    "calls volatile function {resolved}(): {why}"
                )));
                self.facts.volatile_functions.insert(resolved);
            }
            Some(rule) if rule.class == Volatility::Stable => {
                self.facts.stable_functions.insert(resolved);
            }
            Some(_) => {}
            None => {
                self.facts.unknown_functions.insert(resolved.clone());
                self.facts.volatile_functions.insert(resolved);
            }
        }
    }

    fn record_relation(&mut self, name: &ObjectName) {
        let parts = self.parts(name);
        let full = parts.join(".");
        let is_cte = parts.len() == 1 && self.cte_scopes.iter().any(|scope| scope.contains(&full));
        if is_cte {
            return;
        }
        let rule = self.rules.relation(&full).or_else(|| match self.dialect {
            // PostgreSQL system views resolve through the search path whatever the schema
            // prefix, so the bare name decides.
            Dialect::Postgres if parts.len() > 1 => {
                parts.last().and_then(|n| self.rules.relation(n))
            }
            _ => None,
        });
        if let Some(rule) = rule.filter(|rule| rule.class == Volatility::Volatile) {
            let why = rule
                .reason
                .as_deref()
                .unwrap_or("listed as volatile in the rules");
            self.facts.volatility.push(Reason::new(format!(
                "reads volatile relation {full}: {why}"
            )));
        }
        self.facts.read.insert(full);
    }

    fn record_written(&mut self, name: &ObjectName) {
        let full = self.parts(name).join(".");
        self.facts.written.insert(full);
    }

    fn record_write(&mut self, why: &str) {
        self.facts.writes.push(Reason::new(why));
    }

    /// `TABLE t` inside a set operation (sqlparser's `SetExpr::Table`) names a relation
    /// that the visitor does not report.
    fn record_table_bodies(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(table) => {
                if let Some(name) = &table.table_name {
                    let mut parts: Vec<Ident> = Vec::new();
                    if let Some(schema) = &table.schema_name {
                        parts.push(Ident::new(schema.clone()));
                    }
                    parts.push(Ident::new(name.clone()));
                    self.record_relation(&ObjectName::from(parts));
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.record_table_bodies(left);
                self.record_table_bodies(right);
            }
            _ => {}
        }
    }

    /// Records the relations a write or DDL statement changes.
    fn record_targets(&mut self, statement: &Statement) {
        match statement {
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.record_written(name);
                }
            }
            Statement::Update(update) => {
                self.record_factor_targets(&update.table.relation);
                for join in &update.table.joins {
                    self.record_factor_targets(&join.relation);
                }
            }
            Statement::Delete(delete) => {
                delete
                    .tables
                    .iter()
                    .for_each(|name| self.record_written(name));
                if delete.tables.is_empty() {
                    let from = match &delete.from {
                        sqlparser::ast::FromTable::WithFromKeyword(from)
                        | sqlparser::ast::FromTable::WithoutKeyword(from) => from,
                    };
                    for table in from {
                        self.record_factor_targets(&table.relation);
                    }
                }
            }
            Statement::Merge(merge) => self.record_factor_targets(&merge.table),
            Statement::Truncate(truncate) => {
                for target in &truncate.table_names {
                    self.record_written(&target.name);
                }
            }
            Statement::Copy {
                source: sqlparser::ast::CopySource::Table { table_name, .. },
                to: false,
                ..
            }
            | Statement::LoadData { table_name, .. } => self.record_written(table_name),
            Statement::Drop { names, .. } => {
                names.iter().for_each(|name| self.record_written(name))
            }
            Statement::CreateTable(create) => self.record_written(&create.name),
            Statement::CreateView(view) => self.record_written(&view.name),
            Statement::CreateIndex(index) => self.record_written(&index.table_name),
            Statement::AlterTable(alter) => self.record_written(&alter.name),
            Statement::RenameTable(renames) => {
                for rename in renames {
                    self.record_written(&rename.old_name);
                    self.record_written(&rename.new_name);
                }
            }
            _ => {}
        }
    }

    fn record_factor_targets(&mut self, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            self.record_written(name);
        }
    }

    fn check_select(&mut self, select: &Select) {
        if let Some(into) = &select.into {
            self.facts.changes_data = true;
            self.record_write("SELECT … INTO writes its result (a new table or variables)");
            for target in &into.targets {
                if let Expr::Identifier(ident) = target {
                    let name = ObjectName::from(vec![ident.clone()]);
                    self.record_written(&name);
                }
                if let Expr::CompoundIdentifier(parts) = target {
                    self.record_written(&ObjectName::from(parts.clone()));
                }
            }
        }
        if select
            .select_modifiers
            .as_ref()
            .is_some_and(|modifiers| modifiers.sql_calc_found_rows)
        {
            self.facts.volatility.push(Reason::new(
                "SQL_CALC_FOUND_ROWS sets session state that FOUND_ROWS() reads on the origin connection",
            ));
        }
    }

    /// PostgreSQL reads `'now'`, `'today'`, `'tomorrow'` and `'yesterday'` as the clock
    /// at execution, wherever a string becomes a date or time (a typed literal, a cast, a
    /// comparison with a timestamp column, which the text does not show): such a literal
    /// moves with the clock like `now()`, a STABLE function. (`'epoch'` and `'allballs'`
    /// are constants.)
    fn check_moving_time(&mut self, value: &Value) {
        let text = match value {
            Value::SingleQuotedString(text)
            | Value::EscapedStringLiteral(text)
            | Value::NationalStringLiteral(text)
            | Value::UnicodeStringLiteral(text) => text,
            Value::DollarQuotedString(quoted) => &quoted.value,
            _ => return,
        };
        let moving = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .map(str::to_ascii_lowercase)
            .find(|word| MOVING_TIME_WORDS.contains(&word.as_str()));
        if let Some(word) = moving {
            self.facts.stable_functions.insert(format!("'{word}'"));
        }
    }

    /// Records what the origin's catalog must resolve in a PostgreSQL expression: the
    /// operators it applies, the types it converts to, the `x.name` it references.
    fn record_catalog_names(&mut self, expr: &Expr) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        match expr {
            Expr::BinaryOp { op, .. }
            | Expr::AnyOp { compare_op: op, .. }
            | Expr::AllOp { compare_op: op, .. } => self.record_operator(&op.to_string()),
            Expr::UnaryOp { op, .. } => self.record_operator(&op.to_string()),
            Expr::Cast { data_type, .. } => self.record_type(data_type),
            Expr::TypedString(typed) => self.record_type(&typed.data_type),
            Expr::CompoundIdentifier(parts) if parts.len() > 1 => {
                if let Some(last) = parts.last() {
                    let attribute = self.ident(last);
                    self.facts.attributes.insert(attribute);
                }
            }
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain {
                    if let sqlparser::ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                        let attribute = self.ident(field);
                        self.facts.attributes.insert(attribute);
                    }
                }
            }
            _ => {}
        }
    }

    /// An operator by its symbol (`+`, `###`), or `schema.symbol` for `OPERATOR(s.#)`;
    /// keyword operators (AND, OR, …) are not in the catalog.
    fn record_operator(&mut self, shown: &str) {
        let name = match shown
            .strip_prefix("OPERATOR(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            Some(qualified) => qualified.replace(' ', ""),
            None if shown.chars().any(|c| c.is_ascii_alphabetic()) => return,
            None => shown.to_owned(),
        };
        self.facts.operators.insert(name);
    }

    /// A type converted to, by the name the catalog knows it under.
    fn record_type(&mut self, data_type: &sqlparser::ast::DataType) {
        use sqlparser::ast::{ArrayElemTypeDef, DataType};
        match data_type {
            DataType::Custom(name, _) => {
                let name = self.parts(name).join(".");
                self.facts.types.insert(name);
            }
            DataType::Array(
                ArrayElemTypeDef::SquareBracket(element, _)
                | ArrayElemTypeDef::AngleBracket(element)
                | ArrayElemTypeDef::Parenthesis(element)
                | ArrayElemTypeDef::Qualified(element, _),
            ) => self.record_type(element),
            other => {
                self.facts.sql_types.insert(builtin_type_name(other));
            }
        }
    }

    fn check_variable(&mut self, first_part: &Ident) {
        if self.dialect == Dialect::Mysql
            && first_part.quote_style.is_none()
            && first_part.value.starts_with('@')
        {
            self.facts.volatility.push(Reason::new(format!(
                "reads variable {}: user and system variables belong to the origin connection's session",
                first_part.value
            )));
        }
    }
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.statement_depth += 1;
        self.record_targets(statement);
        if let Statement::Call(procedure) = statement {
            self.record_function(&procedure.name);
        }
        if self.statement_depth > 1 && !matches!(statement, Statement::Query(_)) {
            self.facts.changes_data = true;
            self.record_write(
                "data-modifying statement inside a query (WITH … INSERT/UPDATE/DELETE/MERGE)",
            );
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.statement_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let names = query
            .with
            .iter()
            .flat_map(|with| &with.cte_tables)
            .map(|cte| self.ident(&cte.alias.name))
            .collect();
        self.cte_scopes.push(names);
        if !query.locks.is_empty() {
            self.record_write("locking clause (FOR UPDATE / FOR SHARE …) takes row locks");
        }
        self.record_table_bodies(&query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.cte_scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.check_select(select);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name, args, sample, ..
            } => {
                if args.is_some() {
                    self.record_function(name);
                    self.table_function_pending = true;
                }
                let unseeded = sample.as_ref().is_some_and(|sample| {
                    let (sqlparser::ast::TableSampleKind::BeforeTableAlias(sample)
                    | sqlparser::ast::TableSampleKind::AfterTableAlias(sample)) = sample;
                    sample.seed.is_none()
                });
                if unseeded {
                    self.facts.volatility.push(Reason::new(
                        "TABLESAMPLE without REPEATABLE returns a random sample",
                    ));
                }
            }
            TableFactor::Function { name, .. } => self.record_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.table_function_pending) {
            return ControlFlow::Continue(());
        }
        self.record_relation(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<()> {
        if self.dialect == Dialect::Postgres {
            self.check_moving_time(&value.value);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        self.record_catalog_names(expr);
        match expr {
            Expr::Function(function) => self.record_function(&function.name),
            Expr::Identifier(ident) => self.check_variable(ident),
            Expr::CompoundIdentifier(parts) => {
                if let Some(first) = parts.first() {
                    self.check_variable(first);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
