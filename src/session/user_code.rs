//! Code a request runs that its text does not show: user-defined functions and
//! procedures, what runs when it writes a table (triggers, defaults, constraints), DO
//! blocks, functions called by OID (FunctionCall). Before the request is sent, the origin's catalog
//! ([`crate::catalog`]) judges whether that code may change the session (a setting, the
//! role, a lock, …). If it may, the client's session state is unknown from then on: the
//! client is pinned at the request's end (its connection is closed, never reused, when it
//! leaves), nothing of its session is served from or stored in the cache, and the
//! request's own result is not stored.

use std::sync::Arc;
use std::time::Instant;

use super::Session;
use crate::analyze::catalog::{Catalog, Judgement};
use crate::analyze::{Analysis, Kind};
use crate::catalog::{CatalogError, Reader, Snapshot};

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

/// The pin's description for code that may change the session.
fn unknown_state(reason: &str) -> String {
    format!("code that may change session state: {reason}")
}

impl Session {
    /// Why the code a statement runs may change this session, if it may. `text` is the
    /// statement as sent, when warpdrive has it; `received` is when the request arrived.
    pub(super) async fn user_code_pin(
        &mut self,
        analysis: &Analysis,
        text: Option<&[u8]>,
        received: Instant,
    ) -> Option<String> {
        if analysis.kind == Kind::Ddl || !analysis.user_code.blocks.is_empty() {
            self.catalog_changing = true;
        }
        if self.pinned.is_some() || !needs_catalog(analysis) {
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

    /// Why the function a FunctionCall runs (by OID) may change this session, if it may.
    pub(super) async fn function_call_pin(
        &mut self,
        oid: u32,
        received: Instant,
    ) -> Option<String> {
        if self.pinned.is_some() {
            return None;
        }
        self.judge_with_catalog(received, |catalog| catalog.judge_function(oid))
            .await
    }

    /// Judges with the current catalog; a function it does not list makes warpdrive read
    /// the catalog again (bounded), and one still missing afterwards does not exist, so
    /// its call fails at the origin, unless DDL in this transaction may have created it
    /// or the catalog could not be read that recently.
    async fn judge_with_catalog(
        &mut self,
        received: Instant,
        judge: impl Fn(&Catalog) -> Judgement,
    ) -> Option<String> {
        let catalogs = Arc::clone(&self.ctx.catalogs);
        let database = self.database.clone();
        let verdict = |snapshot: Result<Snapshot, CatalogError>| match snapshot {
            Ok(snapshot) => Ok((judge(&snapshot.catalog), snapshot.read_at)),
            Err(error) => Err(unknown_state(&format!(
                "warpdrive could not read the origin's catalog to judge it ({error})"
            ))),
        };
        let current = catalogs.current(&database, self.catalog_reader()).await;
        let missing = match verdict(current) {
            Ok((Judgement::Harmless, _)) => return None,
            Ok((Judgement::ChangesSession(reason), _)) => return Some(unknown_state(&reason)),
            Ok((Judgement::Unknown(names), _)) => names,
            Err(pin) => return Some(pin),
        };
        if self.catalog_changing {
            return Some(unknown_state(&format!(
                "calls {}, which DDL in this transaction may have created",
                missing.join(", ")
            )));
        }
        let again = catalogs
            .read_since(&database, received, self.catalog_reader())
            .await;
        match verdict(again) {
            Ok((Judgement::Harmless, _)) => None,
            Ok((Judgement::ChangesSession(reason), _)) => Some(unknown_state(&reason)),
            Ok((Judgement::Unknown(_), read_at)) if read_at >= received => None,
            Ok((Judgement::Unknown(names), _)) => Some(unknown_state(&format!(
                "calls {}, which the origin's catalog did not list when warpdrive last read it",
                names.join(", ")
            ))),
            Err(pin) => Some(pin),
        }
    }

    /// Where a catalog read for this session runs: a pooled connection, waited for only
    /// when the session holds none (else it might wait for its own).
    fn catalog_reader(&self) -> Reader<'_> {
        Reader {
            pool: &self.pool,
            wait: self.checkout.is_none(),
        }
    }
}
