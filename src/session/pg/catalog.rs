//! What the origin's catalog says about a request, beyond its text ([`crate::catalog`]
//! reads it; [`crate::analyze::catalog`] judges it):
//!
//! - code it runs that may change the session: user-defined functions and procedures,
//!   what runs when it writes a table (triggers, defaults, constraints), DO blocks,
//!   functions called by OID (FunctionCall). If it may, the client's session state is
//!   unknown from then on: the client is pinned at the request's end (its connection is
//!   closed, never reused, when it leaves), nothing of its session is served from or
//!   stored in the cache, and the request's own result is not stored;
//! - what a read really reads, for the cache: views, user functions' declared volatility,
//!   operators, casts, domains, attribute notation, row-level-security policies.
//!
//! A name the catalog does not list makes warpdrive read it again (bounded); one still
//! missing afterwards did not exist when the request arrived, unless DDL in this
//! transaction may have created it.

use std::sync::Arc;
use std::time::Instant;

use crate::analyze::catalog::{Catalog, Judgement, Refinement};
use crate::analyze::{Analysis, Kind, Status, Writes};
use crate::catalog::{CatalogError, Catalogs, Reader};
use crate::proxy::writes::WriteSet;

/// What a session asks the catalog with.
pub(super) struct CatalogView<'a> {
    /// The deployment's catalogs.
    pub(super) catalogs: &'a Arc<Catalogs>,
    /// The client's database.
    pub(super) database: &'a str,
    /// Where a read runs.
    pub(super) reader: Reader<'a>,
    /// DDL (or a DO block) went to the origin in the current transaction: a name the
    /// catalog does not list may have been created by it.
    pub(super) catalog_changing: bool,
}

/// Whether a statement may change the catalog (DDL, or a DO block that may run some):
/// it is read again once the transaction ends.
pub(super) fn changes_catalog(analysis: &Analysis) -> bool {
    analysis.kind == Kind::Ddl || !analysis.user_code.blocks.is_empty()
}

/// Whether judging an analysis needs the catalog: it calls functions, writes tables, runs
/// DDL (event triggers) or DO blocks, or could not be read.
fn needs_catalog(analysis: &Analysis) -> bool {
    !analysis.functions.is_empty()
        || !analysis.tables_written.is_empty()
        || analysis.kind == Kind::Ddl
        || !analysis.user_code.blocks.is_empty()
        || !analysis.user_code.names.is_empty()
        || analysis.user_code.unread
}

/// Whether the catalog may change what the cache makes of a read.
fn refinable(analysis: &Analysis) -> bool {
    analysis.kind == Kind::Read
        && match analysis.status {
            Status::Cacheable => true,
            Status::Volatile => !analysis.catalog_names.volatile_anyway,
            _ => false,
        }
}

/// The pin's description for code that may change the session.
fn unknown_state(reason: &str) -> String {
    format!("code that may change session state: {reason}")
}

/// A catalog's answer, or the names it does not list.
type Answer<T> = Result<T, Vec<String>>;

impl CatalogView<'_> {
    /// Why the code a statement runs may change the session, if it may. `text` is the
    /// statement as sent, when warpdrive has it; `received` is when the request arrived.
    pub(super) async fn user_code_pin(
        &self,
        analysis: &Analysis,
        text: Option<&[u8]>,
        received: Instant,
    ) -> Option<String> {
        if !needs_catalog(analysis) {
            return None;
        }
        let Some(text) = text.or((!analysis.user_code.unread).then_some(&[][..])) else {
            return Some(unknown_state(
                "a statement too long for warpdrive to read, executed through an earlier Bind",
            ));
        };
        self.judge_with_catalog(received, |catalog| catalog.judge(analysis, text))
            .await
    }

    /// Why the function a FunctionCall runs (by OID) may change the session, if it may.
    pub(super) async fn function_call_pin(&self, oid: u32, received: Instant) -> Option<String> {
        self.judge_with_catalog(received, |catalog| catalog.judge_function(oid))
            .await
    }

    async fn judge_with_catalog(
        &self,
        received: Instant,
        judge: impl Fn(&Catalog) -> Judgement,
    ) -> Option<String> {
        let answer = |catalog: &Catalog| match judge(catalog) {
            Judgement::Harmless => Ok(None),
            Judgement::ChangesSession(reason) => Ok(Some(unknown_state(&reason))),
            Judgement::Unknown(names) => Err(names),
        };
        let (answer, read_at) = match self.ask_catalog(received, answer).await {
            Ok(asked) => asked,
            Err(error) => {
                return Some(unknown_state(&format!(
                    "warpdrive could not read the origin's catalog to judge it ({error})"
                )));
            }
        };
        match answer {
            Ok(pin) => pin,
            Err(names) if self.catalog_changing => Some(unknown_state(&format!(
                "calls {}, which DDL in this transaction may have created",
                names.join(", ")
            ))),
            Err(_) if read_at >= received => None,
            Err(names) => Some(unknown_state(&format!(
                "calls {}, which the origin's catalog did not list when warpdrive last read it",
                names.join(", ")
            ))),
        }
    }

    /// The analysis the cache goes by: the text's, unless the catalog says the read runs
    /// more (a view, a user function, an operator, a cast, a policy) or less (a user
    /// function declared immutable or stable). `None`: the text's stands.
    pub(super) async fn refine_for_cache(
        &self,
        analysis: &Analysis,
        received: Instant,
    ) -> Option<Analysis> {
        if !refinable(analysis) {
            return None;
        }
        let answer = |catalog: &Catalog| match catalog.refine(analysis) {
            Refinement::Unchanged => Ok(None),
            Refinement::Refined(refined) => Ok(Some(*refined)),
            Refinement::Unknown(names) => Err(names),
        };
        match self.ask_catalog(received, answer).await {
            Ok((Ok(refined), _)) => refined,
            Ok((Err(names), _)) => Some(analysis.refused(
                Status::Volatile,
                format!(
                    "reads or applies {}, which the origin's catalog does not list; not cached",
                    names.join(", ")
                ),
            )),
            Err(error) => Some(analysis.refused(
                Status::Uncacheable,
                format!(
                    "warpdrive could not read the origin's catalog to know what this read runs ({error}); not cached"
                ),
            )),
        }
    }

    /// What each statement of `analysis` writes, as far as cached reads are concerned
    /// (see [`crate::analyze::catalog::Reach`]).
    pub(super) fn write_sets(&self, analysis: &Analysis) -> Vec<WriteSet> {
        analysis
            .statement_writes
            .iter()
            .map(|writes| self.write_set(writes))
            .collect()
    }

    /// What `writes` reach, by the catalog as last read (see [`Catalogs::latest`]: a
    /// write never waits for a read); the whole database when there is none.
    pub(super) fn write_set(&self, writes: &Writes) -> WriteSet {
        if writes.is_nothing() {
            return WriteSet::Nothing;
        }
        if writes.anything {
            return WriteSet::Everything;
        }
        match self.catalogs.latest(self.reader.pool) {
            Some(snapshot) => snapshot.catalog.reach(writes).into(),
            None => WriteSet::Everything,
        }
    }

    /// Asks the current catalog; when it does not list a name, reads it again (unless
    /// DDL in this transaction explains the name, or it was read a moment ago) and asks
    /// once more. Returns the answer and when the catalog that gave it was read.
    async fn ask_catalog<T>(
        &self,
        received: Instant,
        ask: impl Fn(&Catalog) -> Answer<T>,
    ) -> Result<(Answer<T>, Instant), CatalogError> {
        let current = self.catalogs.current(self.database, self.reader).await?;
        let answer = ask(&current.catalog);
        if answer.is_ok() || self.catalog_changing {
            return Ok((answer, current.read_at));
        }
        let again = self
            .catalogs
            .read_since(self.database, received, self.reader)
            .await?;
        Ok((ask(&again.catalog), again.read_at))
    }
}
