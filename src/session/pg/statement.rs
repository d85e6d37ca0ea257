//! The statements and portals a client has, as warpdrive knows them: each statement's
//! origin-side name and identity, its text and parameter types, and the analyzer's
//! verdict; each portal's statement verdict. What happens to them when the origin refuses
//! or skips a message, or when DISCARD ALL or DEALLOCATE ALL runs, is decided here.
//!
//! It does not send anything: [`super::translate`] writes the messages for the origin.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::relay::OnError;
use crate::analyze::{Analysis, SessionEffect};
use crate::pool::pg::PgPooledConn;
use crate::session::settings::Settings;
use crate::wire::pg::backend::TransactionStatus;

/// A statement the client prepared, as warpdrive knows it.
#[derive(Clone, Debug)]
pub(super) struct ClientStatement {
    /// The name on origin connections.
    pub(super) origin_name: Bytes,
    /// Identity (text, parameter types, settings), for the unnamed statement.
    pub(super) identity: [u8; 32],
    /// The SQL text.
    pub(super) sql: Bytes,
    /// Parameter type OIDs as sent.
    pub(super) parameter_types: Bytes,
    /// The analyzer's verdict on its text.
    pub(super) analysis: Arc<Analysis>,
}

impl PartialEq for ClientStatement {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for ClientStatement {}

/// Statements forgotten by a local Close or DEALLOCATE, by client name, kept so that
/// they come back if the origin skips the message.
pub(super) type Forgotten = Vec<(Bytes, ClientStatement)>;

/// The client's statements and portals.
#[derive(Default)]
pub(super) struct ClientStatements {
    /// Named statements by client name.
    named: HashMap<Bytes, ClientStatement>,
    /// The unnamed statement.
    unnamed: Option<ClientStatement>,
    /// The analysis of the statement each open portal was bound to.
    portals: HashMap<Bytes, Arc<Analysis>>,
}

impl ClientStatements {
    /// The statement `name` (empty: the unnamed one).
    pub(super) fn get(&self, name: &[u8]) -> Option<&ClientStatement> {
        match name.is_empty() {
            true => self.unnamed.as_ref(),
            false => self.named.get(name),
        }
    }

    /// Whether a Parse of `name` would be refused as a duplicate.
    pub(super) fn is_duplicate(&self, name: &[u8]) -> bool {
        !name.is_empty() && self.named.contains_key(name)
    }

    /// Keeps `statement` under `name` (empty: as the unnamed statement), returning the
    /// one it replaces.
    pub(super) fn keep(
        &mut self,
        name: Bytes,
        statement: ClientStatement,
    ) -> Option<ClientStatement> {
        match name.is_empty() {
            true => self.unnamed.replace(statement),
            false => self.named.insert(name, statement),
        }
    }

    /// Origin statements are shared: closing one is the client forgetting its name.
    /// Returns the statement forgotten.
    pub(super) fn forget(&mut self, name: &[u8]) -> Option<ClientStatement> {
        match name.is_empty() {
            true => self.unnamed.take(),
            false => self.named.remove(name),
        }
    }

    /// The analysis of the statement portal `name` was bound to.
    pub(super) fn portal(&self, name: &[u8]) -> Option<&Arc<Analysis>> {
        self.portals.get(name)
    }

    /// Portal `name` is bound to a statement with this analysis.
    pub(super) fn bind(&mut self, name: Bytes, analysis: Arc<Analysis>) {
        self.portals.insert(name, analysis);
    }

    /// Portal `name` is closed.
    pub(super) fn close_portal(&mut self, name: &[u8]) {
        self.portals.remove(name);
    }

    /// The transaction ended: no portal survives it.
    pub(super) fn close_portals(&mut self) {
        self.portals.clear();
    }

    /// DISCARD ALL answered by warpdrive: the client has no statement any more.
    fn discard_all(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }

    /// Whether a statement may be answered by warpdrive itself (see
    /// [`ClientStatements::answer_locally`]).
    pub(super) fn may_answer_locally(effect: Option<&SessionEffect>) -> bool {
        matches!(
            effect,
            Some(SessionEffect::DiscardAll | SessionEffect::Deallocate { .. })
        )
    }

    /// DISCARD ALL and DEALLOCATE of protocol-level statements concern only this client:
    /// answered by warpdrive, without touching the shared origin connection. Returns the
    /// command tag when answered. In a failed transaction (`txn`) they go to the origin,
    /// which refuses them as PostgreSQL does; so does a pinned client's DISCARD ALL, and
    /// one inside a transaction.
    pub(super) fn answer_locally(
        &mut self,
        effect: Option<&SessionEffect>,
        txn: TransactionStatus,
        pinned: bool,
        settings: &mut Settings,
    ) -> Option<&'static str> {
        match effect {
            _ if txn == TransactionStatus::Failed => None,
            Some(SessionEffect::DiscardAll) if !pinned && txn == TransactionStatus::Idle => {
                settings.discard_all();
                self.discard_all();
                Some("DISCARD ALL")
            }
            _ => self.deallocate_locally(effect, pinned).map(|(tag, _)| tag),
        }
    }

    /// SQL `DEALLOCATE` of the client's protocol-level statements concerns this client
    /// alone: answered by warpdrive (psycopg sends it to evict its statement cache, in the
    /// simple or the extended protocol). Returns the command tag and the statements
    /// forgotten, or `None` when the origin must run it (a pinned client's DEALLOCATE ALL
    /// also removes its SQL-level PREPAREs; an unknown name is the origin's to refuse).
    pub(super) fn deallocate_locally(
        &mut self,
        effect: Option<&SessionEffect>,
        pinned: bool,
    ) -> Option<(&'static str, Forgotten)> {
        match effect? {
            SessionEffect::Deallocate { name: None } if !pinned => {
                Some(("DEALLOCATE ALL", self.named.drain().collect()))
            }
            SessionEffect::Deallocate { name: Some(name) } => {
                let name = Bytes::copy_from_slice(name.as_bytes());
                let statement = self.named.remove(&name)?;
                Some(("DEALLOCATE", vec![(name, statement)]))
            }
            _ => None,
        }
    }

    /// DISCARD ALL or DEALLOCATE ALL ran on the origin connection (a pinned client, or
    /// the extended protocol): the connection's statements are gone, and so are the
    /// client's (the unnamed one too after DISCARD ALL).
    pub(super) fn dropped_on_origin(&mut self, discard_all: bool, conn: &mut PgPooledConn) {
        conn.statements.clear();
        conn.unnamed_statement = None;
        self.named.clear();
        if discard_all {
            self.unnamed = None;
        }
    }

    /// Takes back what sending a message did, when the origin rejected it (or skipped
    /// it, `skipped`), on the client's side and on the connection's (`conn`).
    pub(super) fn undo(&mut self, undo: OnError, skipped: bool, conn: Option<&mut PgPooledConn>) {
        match undo {
            OnError::Nothing | OnError::MaybeStale { .. } => {}
            OnError::ParseFailed {
                origin_name,
                client_name,
            } => {
                if let Some(conn) = conn {
                    conn.statements.remove(&origin_name);
                }
                if let Some(name) = client_name
                    && self
                        .named
                        .get(&name)
                        .is_some_and(|s| s.origin_name == origin_name)
                {
                    self.named.remove(&name);
                }
            }
            OnError::UnnamedParse { previous } => {
                if let Some(conn) = conn {
                    conn.unnamed_statement = None;
                }
                // A failed Parse leaves no unnamed statement; a skipped one the old one.
                self.unnamed = if skipped { previous } else { None };
            }
            OnError::UnnamedReplay => {
                if let Some(conn) = conn {
                    conn.unnamed_statement = None;
                }
            }
            OnError::OriginClose { origin_name } => {
                if let Some(conn) = conn {
                    conn.stale_statements.push(origin_name);
                }
            }
            OnError::Restore(statements) => {
                for (name, statement) in statements {
                    self.keep(name, statement);
                }
            }
        }
    }
}
