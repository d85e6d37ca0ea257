//! The client's extended-protocol messages translated for the origin connection that
//! serves them: statements prepared under content-derived names, replayed where the
//! connection lacks them, closed on the origin when they went stale; the client's names,
//! Close, DEALLOCATE, and the errors PostgreSQL raises for unknown or duplicate names,
//! for this client alone.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Session;
use super::relay::{Expect, OnError};
use super::request::result_settings;
use super::sqlstate::ErrorResponse;
use super::statement::ClientStatement;
use crate::analyze::{Dialect, SessionEffect};
use crate::pool::pg::statements::{origin_statement_name, statement_identity};
use crate::session::error::{ClientError, ErrorKind};
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, Close, Describe, FrontendMessage, Parse, Target};

impl Session {
    /// Closes on the origin the statements that went stale on this connection.
    pub(super) fn send_pending_closes(&mut self) {
        let Some(checkout) = self.io.checkout() else {
            return;
        };
        let stale = std::mem::take(&mut checkout.conn().stale_statements);
        for name in stale {
            self.close_on_origin(name);
        }
    }

    /// Closes a statement on the origin; its reply is warpdrive's own.
    fn close_on_origin(&mut self, origin_name: Bytes) {
        let mut buf = BytesMut::new();
        encode::close(&mut buf, Target::Statement, &origin_name);
        self.send_to_origin(&buf);
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

    /// Translates one extended-protocol message for the checked-out connection. False
    /// when warpdrive answered it with an error.
    pub(super) fn translate(&mut self, message: FrontendMessage) -> bool {
        match message {
            FrontendMessage::Parse(parse) => self.translate_parse(parse),
            FrontendMessage::Bind(bind) => self.translate_bind(bind),
            FrontendMessage::Describe(describe) => self.translate_describe(describe),
            FrontendMessage::Execute(execute) => {
                let analysis = self.portals.get(&execute.portal).cloned();
                let mut effects = Vec::new();
                if let Some(analysis) = &analysis {
                    if let Some(tag) = self.deallocate_locally(analysis.sole_effect()) {
                        let mut reply = BytesMut::new();
                        encode::command_complete(&mut reply, tag.0);
                        self.relay
                            .push(Expect::Synthetic(reply.freeze(), OnError::Restore(tag.1)));
                        return true;
                    }
                    self.let_go_of_databases(analysis);
                    effects.extend(analysis.effects().cloned());
                }
                // One list per Execute sent, so that completions count statements.
                self.requests.unsynced.effects.push(effects);
                self.send_to_origin(execute.frame.raw());
                self.relay.push(Expect::Execute);
                true
            }
            FrontendMessage::Close(close) => self.translate_close(close),
            _ => true,
        }
    }

    pub(super) fn client_statement(&self, parse: &Parse) -> ClientStatement {
        let identity = statement_identity(
            &parse.sql,
            &parse.parameter_types,
            result_settings(self.settings.current()),
        );
        ClientStatement {
            origin_name: origin_statement_name(&identity),
            identity,
            sql: parse.sql.clone(),
            parameter_types: parse.parameter_types.clone(),
            analysis: self.ctx.analyzer.analyze_bytes(
                Dialect::Postgres,
                &parse.sql,
                self.string_literals(),
            ),
        }
    }

    fn translate_parse(&mut self, parse: Parse) -> bool {
        let statement = self.client_statement(&parse);
        if parse.name.is_empty() {
            if let Some(checkout) = self.io.checkout() {
                checkout.conn().unnamed_statement = Some(statement.identity);
            }
            let previous = self.unnamed.replace(statement);
            self.send_to_origin(parse.frame.raw());
            self.relay.push(Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::UnnamedParse { previous },
            });
            return true;
        }
        if self.statements.contains_key(&parse.name) {
            let name = String::from_utf8_lossy(&parse.name).into_owned();
            return self.statement_error(
                ErrorKind::DuplicateStatement,
                format!("prepared statement \"{name}\" already exists"),
            );
        }
        let origin_name = statement.origin_name.clone();
        self.statements.insert(parse.name.clone(), statement);
        // The client's own Parse always reaches the origin, as it would without warpdrive:
        // a statement prepared there earlier may have gone stale since (DDL), and a fresh
        // Parse must never fail for that. Replays for other connections are warpdrive's.
        let prepared = self
            .io
            .origin()
            .is_some_and(|c| c.statements.touch(&origin_name));
        if prepared {
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
        let evicted = self
            .io
            .origin()
            .and_then(|c| c.statements.insert(origin_name.clone()));
        if let Some(evicted) = evicted {
            self.close_on_origin(evicted);
        }
        let mut buf = BytesMut::new();
        encode::parse_raw(&mut buf, origin_name, sql, parameter_types);
        self.send_to_origin(&buf);
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
        if name.is_empty() {
            let Some(statement) = self.unnamed.clone() else {
                self.statement_error(
                    ErrorKind::UnknownStatement,
                    "unnamed prepared statement does not exist".to_owned(),
                );
                return None;
            };
            let present = self
                .io
                .origin()
                .is_some_and(|c| c.unnamed_statement == Some(statement.identity));
            if !present {
                let mut buf = BytesMut::new();
                encode::parse_raw(&mut buf, b"", &statement.sql, &statement.parameter_types);
                self.send_to_origin(&buf);
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: false,
                    on_error: OnError::UnnamedReplay,
                });
                if let Some(checkout) = self.io.checkout() {
                    checkout.conn().unnamed_statement = Some(statement.identity);
                }
            }
            return Some(statement);
        }
        let Some(statement) = self.statements.get(name).cloned() else {
            let name = String::from_utf8_lossy(name).into_owned();
            self.statement_error(
                ErrorKind::UnknownStatement,
                format!("prepared statement \"{name}\" does not exist"),
            );
            return None;
        };
        let present = self
            .io
            .origin()
            .is_some_and(|c| c.statements.touch(&statement.origin_name));
        if !present {
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
        self.portals
            .insert(bind.portal.clone(), Arc::clone(&statement.analysis));
        self.send_to_origin(bind.with_statement(&origin_name).raw());
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
                self.send_to_origin(describe.frame.raw());
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
                self.send_to_origin(describe.renamed(&origin_name).raw());
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
                self.portals.remove(&close.name);
                self.send_to_origin(close.frame.raw());
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: true,
                    on_error: OnError::Nothing,
                });
            }
            Target::Statement => {
                let forgotten = self.forget_statement(&close.name);
                let mut buf = BytesMut::new();
                encode::close_complete(&mut buf);
                let undo = match forgotten {
                    Some(statement) => OnError::Restore(vec![(close.name, statement)]),
                    None => OnError::Nothing,
                };
                self.relay.push(Expect::Synthetic(buf.freeze(), undo));
            }
        }
        true
    }

    /// Origin statements are shared: closing one is the client forgetting its name.
    /// Returns the statement forgotten.
    pub(super) fn forget_statement(&mut self, name: &Bytes) -> Option<ClientStatement> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.statements.remove(name)
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
    ) -> Option<(&'static str, Vec<(Bytes, ClientStatement)>)> {
        match effect? {
            SessionEffect::Deallocate { name: None } if self.io.pinned().is_none() => {
                Some(("DEALLOCATE ALL", self.statements.drain().collect()))
            }
            SessionEffect::Deallocate { name: Some(name) } => {
                let name = Bytes::copy_from_slice(name.as_bytes());
                let statement = self.statements.remove(&name)?;
                Some(("DEALLOCATE", vec![(name, statement)]))
            }
            _ => None,
        }
    }
}
