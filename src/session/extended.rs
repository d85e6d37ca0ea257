//! The extended query protocol for one session: Parse, Bind, Describe, Execute and Close
//! are buffered until Sync (or Flush), then translated for whichever origin connection
//! serves the batch.
//!
//! Named statements live on the origin under content-derived names
//! ([`crate::pool::statements`]), so a statement the connection already has is answered
//! with a synthetic ParseComplete, and one it lacks gets the client's Parse replayed
//! first. The client's names, Close of statements, and the errors PostgreSQL raises for
//! unknown or duplicate names are handled here, for this client alone.

use bytes::{Bytes, BytesMut};

use super::error::{ClientError, sqlstate};
use super::relay::{Expect, OnError};
use super::{Session, SessionError};
use crate::analyze::{Dialect, SessionEffect};
use crate::pool::statements::{origin_statement_name, statement_identity};
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, Close, Describe, FrontendMessage, Parse, Target};

/// A statement the client prepared, as warpdrive knows it.
#[derive(Clone, Debug)]
pub(super) struct ClientStatement {
    /// The name on origin connections.
    pub(super) origin_name: Bytes,
    /// Identity (text + parameter types), for the unnamed statement.
    pub(super) identity: [u8; 32],
    /// The SQL text.
    pub(super) sql: Bytes,
    /// Parameter type OIDs as sent.
    pub(super) parameter_types: Bytes,
    /// What executing it does to the session.
    pub(super) effects: Vec<SessionEffect>,
}

impl Session {
    /// Closes on the origin the statements that went stale on this connection.
    pub(super) fn send_pending_closes(&mut self) {
        let Some(checkout) = self.checkout.as_mut() else {
            return;
        };
        let stale = std::mem::take(&mut checkout.conn().stale_statements);
        for name in stale {
            let mut buf = BytesMut::new();
            encode::close(&mut buf, Target::Statement, &name);
            self.send_to_origin(&buf);
            self.relay.push(Expect::Reply {
                count: 1,
                to_client: false,
                on_error: OnError::Nothing,
            });
        }
    }

    /// Sends the buffered extended-protocol messages, ending with Sync or Flush.
    pub(super) async fn send_batch(&mut self, sync: bool) -> Result<(), SessionError> {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() && !sync {
            self.client.flush().await?;
            return Ok(());
        }
        if let Err(error) = self.connect().await {
            // The error takes the place of the batch's replies, as an origin error would.
            error.encode(&mut self.client.out);
            if sync {
                encode::ready_for_query(&mut self.client.out, self.status);
            }
            self.client.flush().await?;
            return Ok(());
        }
        self.send_pending_closes();
        for message in batch {
            if !self.translate(message) {
                // warpdrive raised an error for this message: the origin would skip the
                // rest up to Sync, so it is not sent.
                break;
            }
        }
        let mut buf = BytesMut::new();
        if sync {
            encode::sync(&mut buf);
            self.relay.push(Expect::Sync);
        } else {
            encode::flush(&mut buf);
        }
        self.send_to_origin(&buf);
        self.flush_origin().await;
        if self.relay.drain_synthetic(&mut self.client.out) {
            self.batch_failed = true;
        }
        self.client.flush().await?;
        self.arm_deadline();
        Ok(())
    }

    fn statement_error(&mut self, code: &'static str, message: String) -> bool {
        let mut buf = BytesMut::new();
        ClientError::error(code, message).encode(&mut buf);
        self.relay.push(Expect::SyntheticError(buf.freeze()));
        false
    }

    /// Translates one extended-protocol message for the checked-out connection. False
    /// when warpdrive answered it with an error.
    fn translate(&mut self, message: FrontendMessage) -> bool {
        match message {
            FrontendMessage::Parse(parse) => self.translate_parse(parse),
            FrontendMessage::Bind(bind) => self.translate_bind(bind),
            FrontendMessage::Describe(describe) => self.translate_describe(describe),
            FrontendMessage::Execute(execute) => {
                if let Some(effects) = self.portals.get(&execute.portal) {
                    self.effects.extend(effects.iter().cloned());
                }
                self.send_to_origin(execute.frame.raw());
                self.relay.push(Expect::Execute);
                true
            }
            FrontendMessage::Close(close) => self.translate_close(close),
            _ => true,
        }
    }

    fn client_statement(&self, parse: &Parse) -> ClientStatement {
        let effects = std::str::from_utf8(&parse.sql)
            .ok()
            .map(|sql| {
                self.ctx
                    .analyzer
                    .analyze(Dialect::Postgres, sql)
                    .effects
                    .clone()
            })
            .unwrap_or_default();
        ClientStatement {
            origin_name: origin_statement_name(&parse.sql, &parse.parameter_types),
            identity: statement_identity(&parse.sql, &parse.parameter_types),
            sql: parse.sql.clone(),
            parameter_types: parse.parameter_types.clone(),
            effects,
        }
    }

    fn translate_parse(&mut self, parse: Parse) -> bool {
        let statement = self.client_statement(&parse);
        if parse.name.is_empty() {
            if let Some(checkout) = self.checkout.as_mut() {
                checkout.conn().unnamed_statement = Some(statement.identity);
            }
            self.unnamed = Some(statement);
            self.send_to_origin(parse.frame.raw());
            self.relay.push(Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::Nothing,
            });
            return true;
        }
        if self.statements.contains_key(&parse.name) {
            let name = String::from_utf8_lossy(&parse.name).into_owned();
            return self.statement_error(
                sqlstate::DUPLICATE_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" already exists"),
            );
        }
        let origin_name = statement.origin_name.clone();
        self.statements.insert(parse.name.clone(), statement);
        let prepared = self
            .checkout
            .as_mut()
            .is_some_and(|c| c.conn().statements.touch(&origin_name));
        if prepared {
            let mut buf = BytesMut::new();
            encode::parse_complete(&mut buf);
            self.relay.push(Expect::Synthetic(buf.freeze()));
        } else {
            self.prepare_on_origin(
                &origin_name,
                &parse.sql,
                &parse.parameter_types,
                Some(parse.name.clone()),
            );
        }
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
            .checkout
            .as_mut()
            .and_then(|c| c.conn().statements.insert(origin_name.clone()));
        let mut buf = BytesMut::new();
        if let Some(evicted) = evicted {
            encode::close(&mut buf, Target::Statement, &evicted);
            self.send_to_origin(&buf);
            buf.clear();
            self.relay.push(Expect::Reply {
                count: 1,
                to_client: false,
                on_error: OnError::Nothing,
            });
        }
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
                    sqlstate::INVALID_SQL_STATEMENT_NAME,
                    "unnamed prepared statement does not exist".to_owned(),
                );
                return None;
            };
            let present = self
                .checkout
                .as_mut()
                .is_some_and(|c| c.conn().unnamed_statement == Some(statement.identity));
            if !present {
                let mut buf = BytesMut::new();
                encode::parse_raw(&mut buf, b"", &statement.sql, &statement.parameter_types);
                self.send_to_origin(&buf);
                self.relay.push(Expect::Reply {
                    count: 1,
                    to_client: false,
                    on_error: OnError::Nothing,
                });
                if let Some(checkout) = self.checkout.as_mut() {
                    checkout.conn().unnamed_statement = Some(statement.identity);
                }
            }
            return Some(statement);
        }
        let Some(statement) = self.statements.get(name).cloned() else {
            let name = String::from_utf8_lossy(name).into_owned();
            self.statement_error(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            );
            return None;
        };
        let present = self
            .checkout
            .as_mut()
            .is_some_and(|c| c.conn().statements.touch(&statement.origin_name));
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
            .insert(bind.portal.clone(), statement.effects.clone());
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
                // Origin statements are shared; closing is the client forgetting its name.
                if close.name.is_empty() {
                    self.unnamed = None;
                } else {
                    self.statements.remove(&close.name);
                }
                let mut buf = BytesMut::new();
                encode::close_complete(&mut buf);
                self.relay.push(Expect::Synthetic(buf.freeze()));
            }
        }
        true
    }
}
