//! The client's extended-protocol messages translated for the origin connection that
//! serves them: statements prepared under content-derived names, replayed where the
//! connection lacks them, closed on the origin when they went stale; the client's names,
//! Close, DEALLOCATE, and the errors PostgreSQL raises for unknown or duplicate names,
//! for this client alone.
//!
//! A [`Translator`] lives for one batch: it borrows the client's statements, the
//! connection, the relay and the requests, and writes to the connection's buffer only
//! (the session flushes).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::inflight::Requests;
use super::relay::{Expect, OnError, Relay};
use super::request::result_settings;
use super::sqlstate::ErrorResponse;
use super::statement::{ClientStatement, ClientStatements};
use crate::analyze::{Analysis, AnalysisMemo, Dialect, SessionEffect, StringLiterals, Writes};
use crate::pool::pg::statements::{origin_statement_name, statement_identity};
use crate::pool::pg::{PgPoolSet, PgPooledConn};
use crate::proxy::writes::WriteSet;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::SettingMap;
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, Close, Describe, FrontendMessage, Parse, Target};

/// Reads a client's Parse into the statement warpdrive keeps for it.
pub(super) struct StatementReader<'a> {
    /// The analyzer.
    pub(super) analyzer: &'a AnalysisMemo,
    /// The client's settings, some of which name the statement on the origin.
    pub(super) settings: &'a SettingMap,
}

impl StatementReader<'_> {
    /// The statement `parse` prepares, its string literals read as `literals`.
    pub(super) fn read(&self, parse: &Parse, literals: StringLiterals) -> ClientStatement {
        let identity = statement_identity(
            &parse.sql,
            &parse.parameter_types,
            result_settings(self.settings),
        );
        ClientStatement {
            origin_name: origin_statement_name(&identity),
            identity,
            sql: parse.sql.clone(),
            parameter_types: parse.parameter_types.clone(),
            analysis: self
                .analyzer
                .analyze_bytes(Dialect::Postgres, &parse.sql, literals),
        }
    }
}

/// DROP DATABASE and its kin fail while any session is connected to the database:
/// warpdrive's own idle connections to it close first.
pub(super) fn let_go_of_databases(pools: &PgPoolSet, analysis: &Analysis) {
    for effect in analysis.effects() {
        if let SessionEffect::NeedsDatabaseUnused { database } = effect {
            pools.close_idle(database);
        }
    }
}

/// Writes one batch of a client's messages for the connection that serves it.
pub(super) struct Translator<'a> {
    pub(super) statements: &'a mut ClientStatements,
    pub(super) conn: &'a mut PgPooledConn,
    pub(super) relay: &'a mut Relay,
    pub(super) requests: &'a mut Requests,
    pub(super) reader: StatementReader<'a>,
    /// `standard_conforming_strings` as the origin last reported it to the client.
    pub(super) standard_conforming_strings: bool,
    pub(super) pinned: bool,
    pub(super) pools: &'a PgPoolSet,
    /// What the batch's statements write, as the catalog resolved it before the batch
    /// was translated; a write not in it reaches the whole database.
    pub(super) writes: &'a [(Writes, WriteSet)],
}

impl Translator<'_> {
    /// Closes on the origin the statements that went stale on this connection.
    pub(super) fn send_pending_closes(&mut self) {
        for name in std::mem::take(&mut self.conn.stale_statements) {
            self.close_on_origin(name);
        }
    }

    /// Translates one extended-protocol message. False when warpdrive answered it with
    /// an error.
    pub(super) fn translate(&mut self, message: FrontendMessage) -> bool {
        match message {
            FrontendMessage::Parse(parse) => self.translate_parse(parse),
            FrontendMessage::Bind(bind) => self.translate_bind(bind),
            FrontendMessage::Describe(describe) => self.translate_describe(describe),
            FrontendMessage::Execute(execute) => {
                let analysis = self.statements.portal(&execute.portal).cloned();
                let mut effects = Vec::new();
                let mut written = WriteSet::Nothing;
                if let Some(analysis) = &analysis {
                    if let Some((tag, forgotten)) = self
                        .statements
                        .deallocate_locally(analysis.sole_effect(), self.pinned)
                    {
                        let mut reply = BytesMut::new();
                        encode::command_complete(&mut reply, tag);
                        self.relay.push(Expect::Synthetic(
                            reply.freeze(),
                            OnError::Restore(forgotten),
                        ));
                        return true;
                    }
                    let_go_of_databases(self.pools, analysis);
                    effects.extend(analysis.effects().cloned());
                    written = self.written_by(analysis);
                }
                // One list per Execute sent, so that completions count statements.
                self.requests.unsynced.effects.push(effects);
                self.requests.unsynced.writes.push(written);
                self.send(execute.frame.raw());
                self.relay.push(Expect::Execute);
                true
            }
            FrontendMessage::Close(close) => self.translate_close(close),
            _ => true,
        }
    }

    /// What a statement executed writes.
    fn written_by(&self, analysis: &Analysis) -> WriteSet {
        let writes = analysis.writes();
        if writes.is_nothing() {
            return WriteSet::Nothing;
        }
        self.writes
            .iter()
            .find(|(known, _)| *known == writes)
            .map_or(WriteSet::Everything, |(_, set)| set.clone())
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.origin.conn.out.extend_from_slice(bytes);
        self.conn.set_busy();
    }

    /// Closes a statement on the origin; its reply is warpdrive's own.
    fn close_on_origin(&mut self, origin_name: Bytes) {
        let mut buf = BytesMut::new();
        encode::close(&mut buf, Target::Statement, &origin_name);
        self.send(&buf);
        self.relay.push(Expect::Reply {
            count: 1,
            to_client: false,
            on_error: OnError::OriginClose { origin_name },
        });
    }

    fn statement_error(&mut self, kind: ErrorKind, message: String) -> bool {
        let mut buf = BytesMut::new();
        ClientError::error(kind, message).encode(&mut buf);
        self.relay.push(Expect::SyntheticError(buf.freeze()));
        false
    }

    fn translate_parse(&mut self, parse: Parse) -> bool {
        // Read after the Executes before it in the batch, as the origin parses it.
        let literals = self
            .requests
            .string_literals(self.standard_conforming_strings);
        let statement = self.reader.read(&parse, literals);
        if parse.name.is_empty() {
            self.conn.unnamed_statement = Some(statement.identity);
            let previous = self.statements.keep(Bytes::new(), statement);
            self.send(parse.frame.raw());
            self.relay.push(Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::UnnamedParse { previous },
            });
            return true;
        }
        if self.statements.is_duplicate(&parse.name) {
            let name = String::from_utf8_lossy(&parse.name).into_owned();
            return self.statement_error(
                ErrorKind::DuplicateStatement,
                format!("prepared statement \"{name}\" already exists"),
            );
        }
        let origin_name = statement.origin_name.clone();
        self.statements.keep(parse.name.clone(), statement);
        // The client's own Parse always reaches the origin, as it would without warpdrive:
        // a statement prepared there earlier may have gone stale since (DDL), and a fresh
        // Parse must never fail for that. Replays for other connections are warpdrive's.
        if self.conn.statements.touch(&origin_name) {
            self.close_on_origin(origin_name.clone());
        }
        self.prepare_on_origin(
            &origin_name,
            &parse.sql,
            &parse.parameter_types,
            Some(parse.name.clone()),
        );
        true
    }

    /// Sends a Parse for a named statement the connection lacks (evicting the least
    /// recently used one if the connection's cache is full).
    fn prepare_on_origin(
        &mut self,
        origin_name: &Bytes,
        sql: &[u8],
        parameter_types: &[u8],
        client_name: Option<Bytes>,
    ) {
        if let Some(evicted) = self.conn.statements.insert(origin_name.clone()) {
            self.close_on_origin(evicted);
        }
        let mut buf = BytesMut::new();
        encode::parse_raw(&mut buf, origin_name, sql, parameter_types);
        self.send(&buf);
        self.relay.push(Expect::Reply {
            count: 1,
            to_client: client_name.is_some(),
            on_error: OnError::ParseFailed {
                origin_name: origin_name.clone(),
                client_name,
            },
        });
    }

    /// The client's statement `name`, prepared on the connection (replaying its Parse
    /// if needed). `None` (after raising the error) if the client has no such statement.
    fn resolve_statement(&mut self, name: &Bytes) -> Option<ClientStatement> {
        let Some(statement) = self.statements.get(name).cloned() else {
            let message = match name.is_empty() {
                true => "unnamed prepared statement does not exist".to_owned(),
                false => format!(
                    "prepared statement \"{}\" does not exist",
                    String::from_utf8_lossy(name)
                ),
            };
            self.statement_error(ErrorKind::UnknownStatement, message);
            return None;
        };
        if name.is_empty() {
            if self.conn.unnamed_statement != Some(statement.identity) {
                let mut buf = BytesMut::new();
                encode::parse_raw(&mut buf, b"", &statement.sql, &statement.parameter_types);
                self.send(&buf);
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: false,
                    on_error: OnError::UnnamedReplay,
                });
                self.conn.unnamed_statement = Some(statement.identity);
            }
        } else if !self.conn.statements.touch(&statement.origin_name) {
            self.prepare_on_origin(
                &statement.origin_name,
                &statement.sql,
                &statement.parameter_types,
                None,
            );
        }
        Some(statement)
    }

    fn origin_name_for(name: &Bytes, statement: &ClientStatement) -> Bytes {
        if name.is_empty() {
            Bytes::new()
        } else {
            statement.origin_name.clone()
        }
    }

    fn translate_bind(&mut self, bind: Bind) -> bool {
        let Some(statement) = self.resolve_statement(&bind.statement) else {
            return false;
        };
        let origin_name = Self::origin_name_for(&bind.statement, &statement);
        self.statements
            .bind(bind.portal.clone(), Arc::clone(&statement.analysis));
        self.send(bind.with_statement(&origin_name).raw());
        self.relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::MaybeStale { origin_name },
        });
        true
    }

    fn translate_describe(&mut self, describe: Describe) -> bool {
        match describe.target {
            Target::Portal => {
                self.send(describe.frame.raw());
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: true,
                    on_error: OnError::Nothing,
                });
            }
            Target::Statement => {
                let Some(statement) = self.resolve_statement(&describe.name) else {
                    return false;
                };
                let origin_name = Self::origin_name_for(&describe.name, &statement);
                self.send(describe.renamed(&origin_name).raw());
                self.relay.push(Expect::Reply {
                    count: 2,
                    to_client: true,
                    on_error: OnError::MaybeStale { origin_name },
                });
            }
        }
        true
    }

    fn translate_close(&mut self, close: Close) -> bool {
        match close.target {
            Target::Portal => {
                self.statements.close_portal(&close.name);
                self.send(close.frame.raw());
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: true,
                    on_error: OnError::Nothing,
                });
            }
            Target::Statement => {
                let undo = match self.statements.forget(&close.name) {
                    Some(statement) => OnError::Restore(vec![(close.name, statement)]),
                    None => OnError::Nothing,
                };
                let mut buf = BytesMut::new();
                encode::close_complete(&mut buf);
                self.relay.push(Expect::Synthetic(buf.freeze(), undo));
            }
        }
        true
    }
}
