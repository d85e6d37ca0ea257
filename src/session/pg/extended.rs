//! The extended query protocol for one session: Parse, Bind, Describe, Execute and Close
//! are buffered until Sync (or Flush), then translated for whichever origin connection
//! serves the batch.
//!
//! Named statements live on the origin under content-derived names
//! ([`crate::pool::pg::statements`]), so a statement the connection already has is answered
//! with a synthetic ParseComplete, and one it lacks gets the client's Parse replayed
//! first. The client's names, Close of statements, and the errors PostgreSQL raises for
//! unknown or duplicate names are handled here, for this client alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Session;
use super::caching::{Consulted, InFlight};
use super::relay::{Expect, OnError};
use super::request::result_settings;
use super::request::{Described, Request};
use super::sqlstate::ErrorResponse;
use crate::analyze::{Analysis, Dialect, SessionEffect, StringLiterals};
use crate::cache::{CacheStatus, Entry};
use crate::pool::pg::statements::{origin_statement_name, statement_identity};
use crate::session::SessionError;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::STANDARD_CONFORMING_STRINGS;
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, Close, Describe, FrontendMessage, Parse, Target};

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

/// Extended-protocol messages already sent to the origin without their Sync (after a
/// Flush, or beyond the batch bound): they belong to the request the next Sync ends.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    /// Whether any were sent.
    pub(super) sent: bool,
    /// Their size.
    pub(super) query_bytes: usize,
    /// The status of what they executed, when they executed something.
    pub(super) status: Option<CacheStatus>,
    /// Session effects of what they executed, one list per Execute, in order.
    pub(super) effects: Vec<Vec<SessionEffect>>,
    /// Executes that completed.
    pub(super) completed: usize,
    /// Why code they ran may have changed the session.
    pub(super) pins: Vec<String>,
    /// Whether the origin (or warpdrive) reported an error for them.
    pub(super) failed: bool,
}

/// How warpdrive sends the extended-protocol messages it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BatchEnd {
    /// The client's Sync: the batch is decided (and may be served from the cache).
    Sync,
    /// The client's Flush: sent on with a Flush.
    Flush,
    /// Sent on as they are, without a Sync or Flush of the client's: the client's input
    /// ran dry (it may wait for replies before sending more), or the batch reached its
    /// size bound. Never cached.
    AsTheyAre,
}

/// What a batch up to Sync executes, as far as the cache is concerned.
enum BatchPlan {
    /// No Execute: preparing or describing only.
    NoExecute,
    /// An Execute whose statement the client does not have (it will get an error).
    Unresolved,
    /// Executes this statement; `cacheable` when the batch has the one shape the cache
    /// serves: at most one Parse, one Bind, Describes, one Execute without a row limit,
    /// Closes after it.
    Executes {
        statement: Box<ClientStatement>,
        cacheable: Option<Request>,
    },
}

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

    /// Sends the buffered extended-protocol messages, ended as `end` says.
    pub(super) async fn send_batch(&mut self, end: BatchEnd) -> Result<(), SessionError> {
        let sync = end == BatchEnd::Sync;
        let started = Instant::now();
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() && !sync {
            self.io.client.flush().await?;
            return Ok(());
        }
        let query_bytes: usize = batch.iter().map(|message| message.frame().len()).sum();
        let mut in_flight = if sync {
            match self.decide_batch(&batch, query_bytes, started).await {
                Consulted::Hit(entry, statement) => {
                    return self
                        .answer_batch_hit(batch, &entry, *statement, query_bytes, started)
                        .await;
                }
                Consulted::Forward(in_flight) => Some(*in_flight),
            }
        } else {
            // A Flush: the request goes on until the next Sync, which decides its status.
            let status = self.forwarded_plan_status(&batch);
            let unsynced = &mut self.unsynced;
            unsynced.sent = true;
            unsynced.query_bytes += query_bytes;
            if unsynced.status.is_none() {
                unsynced.status = status;
            }
            None
        };
        for (analysis, text) in self.executed_statements(&batch) {
            if let Some(pin) = self
                .user_code_pin(&analysis, text.as_deref(), started)
                .await
            {
                match in_flight.as_mut() {
                    Some(in_flight) => in_flight.changes_session(pin),
                    None => self.unsynced.pins.push(pin),
                }
            }
        }
        if let Err(error) = self.connect().await {
            if let Some(in_flight) = in_flight {
                self.ctx.metrics.record(
                    in_flight.status(),
                    query_bytes,
                    0,
                    started.elapsed(),
                    true,
                );
            }
            // The error takes the place of the batch's replies, as an origin error would.
            error.encode(&mut self.io.client.out);
            if sync {
                self.unsynced = Unsynced::default();
                encode::ready_for_query(&mut self.io.client.out, self.status);
            }
            self.io.client.flush().await?;
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
            if let Some(mut in_flight) = in_flight {
                in_flight.absorb(std::mem::take(&mut self.unsynced));
                self.requests.push_back(in_flight);
            }
        } else if end == BatchEnd::Flush {
            encode::flush(&mut buf);
        }
        self.send_to_origin(&buf);
        self.flush_origin().await?;
        let mut events = Vec::new();
        self.relay
            .drain_synthetic(&mut self.io.client.out, &mut events);
        for event in events {
            self.on_event(event);
        }
        self.io.client.flush().await?;
        self.arm_deadline();
        Ok(())
    }

    /// The status of a batch ending with Sync, looked up in the cache when it may be
    /// served from there: only a whole request (nothing of it sent before a Flush) of the
    /// one shape the cache serves.
    async fn decide_batch(
        &mut self,
        batch: &[FrontendMessage],
        query_bytes: usize,
        started: Instant,
    ) -> Consulted<Box<ClientStatement>> {
        let split = self.unsynced.sent;
        let status = match self.plan(batch) {
            BatchPlan::NoExecute => self.unsynced.status.unwrap_or(CacheStatus::NotAQuery),
            BatchPlan::Unresolved => CacheStatus::Uncacheable,
            BatchPlan::Executes {
                statement,
                cacheable: Some(request),
            } if !split => {
                let query_bytes = query_bytes + self.unsynced.query_bytes;
                return match self
                    .consult(&statement.analysis, request, query_bytes, started)
                    .await
                {
                    Consulted::Hit(entry, ()) => Consulted::Hit(entry, statement),
                    Consulted::Forward(in_flight) => Consulted::Forward(in_flight),
                };
            }
            BatchPlan::Executes { statement, .. } => self.forwarded_status(&statement.analysis),
        };
        let query_bytes = query_bytes + self.unsynced.query_bytes;
        Consulted::Forward(Box::new(InFlight::forwarded(status, query_bytes, started)))
    }

    /// The statements a batch executes, in order, with their text when warpdrive has it
    /// (not for a portal bound by an earlier batch). A Parse after an Execute that may
    /// change standard_conforming_strings is read without knowing it, as the origin
    /// parses each message after the ones before it ran.
    fn executed_statements(
        &self,
        batch: &[FrontendMessage],
    ) -> Vec<(Arc<Analysis>, Option<Bytes>)> {
        let mut parsed: HashMap<&Bytes, (Arc<Analysis>, &Bytes)> = HashMap::new();
        let mut bound: HashMap<&Bytes, (Arc<Analysis>, Option<Bytes>)> = HashMap::new();
        let mut executed: Vec<(Arc<Analysis>, Option<Bytes>)> = Vec::new();
        let mut literals = self.string_literals();
        for message in batch {
            match message {
                FrontendMessage::Parse(parse) => {
                    let analysis =
                        self.ctx
                            .analyzer
                            .analyze_bytes(Dialect::Postgres, &parse.sql, literals);
                    parsed.insert(&parse.name, (analysis, &parse.sql));
                }
                FrontendMessage::Bind(bind) => {
                    let statement = match parsed.get(&bind.statement) {
                        Some((analysis, sql)) => Some((Arc::clone(analysis), (*sql).clone())),
                        None if bind.statement.is_empty() => self
                            .unnamed
                            .as_ref()
                            .map(|s| (Arc::clone(&s.analysis), s.sql.clone())),
                        None => self
                            .statements
                            .get(&bind.statement)
                            .map(|s| (Arc::clone(&s.analysis), s.sql.clone())),
                    };
                    if let Some((analysis, sql)) = statement {
                        bound.insert(&bind.portal, (analysis, Some(sql)));
                    }
                }
                FrontendMessage::Execute(execute) => {
                    let statement = bound.get(&execute.portal).cloned().or_else(|| {
                        self.portals
                            .get(&execute.portal)
                            .map(|analysis| (Arc::clone(analysis), None))
                    });
                    if let Some((analysis, _)) = &statement
                        && analysis
                            .effects()
                            .any(|effect| effect.may_change_setting(STANDARD_CONFORMING_STRINGS))
                    {
                        literals = StringLiterals::Unknown;
                    }
                    executed.extend(statement);
                }
                _ => {}
            }
        }
        executed
    }

    /// The status of a batch part sent on a Flush, when it executes something.
    fn forwarded_plan_status(&self, batch: &[FrontendMessage]) -> Option<CacheStatus> {
        match self.plan(batch) {
            BatchPlan::NoExecute => None,
            BatchPlan::Unresolved => Some(CacheStatus::Uncacheable),
            BatchPlan::Executes { statement, .. } => {
                Some(self.forwarded_status(&statement.analysis))
            }
        }
    }

    /// The status of a statement forwarded without consulting the cache: the policy's
    /// refusal, or `uncacheable` for cacheable text in a batch the cache does not serve.
    fn forwarded_status(&self, analysis: &Analysis) -> CacheStatus {
        self.composer()
            .forwarded_status(analysis, self.status.into())
    }

    fn statement_error(&mut self, kind: ErrorKind, message: String) -> bool {
        let mut buf = BytesMut::new();
        ClientError::error(kind, message).encode(&mut buf);
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
                self.unsynced.effects.push(effects);
                self.send_to_origin(execute.frame.raw());
                self.relay.push(Expect::Execute);
                true
            }
            FrontendMessage::Close(close) => self.translate_close(close),
            _ => true,
        }
    }

    fn client_statement(&self, parse: &Parse) -> ClientStatement {
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
    fn forget_statement(&mut self, name: &Bytes) -> Option<ClientStatement> {
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

    /// The statement a batch executes and whether the batch has the cacheable shape.
    fn plan(&self, batch: &[FrontendMessage]) -> BatchPlan {
        let executes: Vec<_> = batch
            .iter()
            .enumerate()
            .filter_map(|(at, m)| match m {
                FrontendMessage::Execute(execute) => Some((at, execute)),
                _ => None,
            })
            .collect();
        let Some(&(execute_at, execute)) = executes.first() else {
            return BatchPlan::NoExecute;
        };
        let bound = batch[..execute_at].iter().rev().find_map(|m| match m {
            FrontendMessage::Bind(bind) if bind.portal == execute.portal => Some(bind),
            _ => None,
        });
        let Some(bind) = bound else {
            return BatchPlan::Unresolved;
        };
        let parsed = batch.iter().find_map(|m| match m {
            FrontendMessage::Parse(parse) if parse.name == bind.statement => Some(parse),
            _ => None,
        });
        let statement = match parsed {
            Some(parse) => self.client_statement(parse),
            None if bind.statement.is_empty() => match &self.unnamed {
                Some(statement) => statement.clone(),
                None => return BatchPlan::Unresolved,
            },
            None => match self.statements.get(&bind.statement) {
                Some(statement) => statement.clone(),
                None => return BatchPlan::Unresolved,
            },
        };
        let shape = self.cacheable_shape(batch, execute_at, executes.len(), bind, parsed.is_some());
        BatchPlan::Executes {
            cacheable: shape.map(|describes| Request::Extended {
                sql: statement.sql.clone(),
                parameter_types: statement.parameter_types.clone(),
                arguments: bind.arguments.clone(),
                describes,
            }),
            statement: Box::new(statement),
        }
    }

    /// The Describes of a batch of the shape the cache serves, in order; `None` for any
    /// other shape.
    fn cacheable_shape(
        &self,
        batch: &[FrontendMessage],
        execute_at: usize,
        executes: usize,
        bind: &Bind,
        parsed_here: bool,
    ) -> Option<Vec<Described>> {
        let FrontendMessage::Execute(execute) = &batch[execute_at] else {
            return None;
        };
        if executes != 1 || execute.max_rows != 0 {
            return None;
        }
        let mut describes = Vec::new();
        let (mut parses, mut binds) = (0, 0);
        for (at, message) in batch.iter().enumerate() {
            let before_execute = at < execute_at;
            match message {
                FrontendMessage::Parse(parse) => {
                    parses += 1;
                    // A Parse of a name the client already has is an error to relay.
                    let duplicate =
                        !parse.name.is_empty() && self.statements.contains_key(&parse.name);
                    if !before_execute || parse.name != bind.statement || duplicate || binds > 0 {
                        return None;
                    }
                }
                FrontendMessage::Bind(_) => {
                    binds += 1;
                    if !before_execute {
                        return None;
                    }
                }
                FrontendMessage::Describe(describe) => {
                    let described = match describe.target {
                        // Of the statement executed: after its Parse, when the batch has
                        // one (before it, the Describe answers for an older statement).
                        Target::Statement
                            if describe.name == bind.statement && (parses == 1) == parsed_here =>
                        {
                            Described::Statement
                        }
                        Target::Portal if describe.name == bind.portal && binds == 1 => {
                            Described::Portal
                        }
                        _ => return None,
                    };
                    if !before_execute {
                        return None;
                    }
                    describes.push(described);
                }
                FrontendMessage::Execute(_) => {}
                FrontendMessage::Close(_) if !before_execute => {}
                _ => return None,
            }
        }
        (parses <= 1 && binds == 1 && (parses == 1) == parsed_here).then_some(describes)
    }

    /// Answers a batch from an entry: the replies the client's own messages call for.
    async fn answer_batch_hit(
        &mut self,
        batch: Vec<FrontendMessage>,
        entry: &Entry,
        statement: ClientStatement,
        query_bytes: usize,
        started: Instant,
    ) -> Result<(), SessionError> {
        let before = self.io.client.out.len();
        let mut segments = entry.segments.iter();
        for message in batch {
            match message {
                FrontendMessage::Parse(parse) => {
                    // The batch's only Parse is the executed statement's (cacheable shape).
                    if parse.name.is_empty() {
                        self.unnamed = Some(statement.clone());
                    } else {
                        self.statements
                            .insert(parse.name.clone(), statement.clone());
                    }
                    encode::parse_complete(&mut self.io.client.out);
                }
                FrontendMessage::Bind(bind) => {
                    self.portals
                        .insert(bind.portal.clone(), Arc::clone(&statement.analysis));
                    encode::bind_complete(&mut self.io.client.out);
                }
                FrontendMessage::Describe(_) | FrontendMessage::Execute(_) => {
                    if let Some(segment) = segments.next() {
                        self.io.client.out.extend_from_slice(segment);
                    }
                }
                FrontendMessage::Close(close) => {
                    match close.target {
                        Target::Statement => {
                            self.forget_statement(&close.name);
                        }
                        Target::Portal => {
                            self.portals.remove(&close.name);
                        }
                    }
                    encode::close_complete(&mut self.io.client.out);
                }
                _ => {}
            }
        }
        // The unnamed portal ends with the implicit transaction, as on the origin.
        self.portals.remove(&Bytes::new());
        self.finish_hit(before, query_bytes, started).await
    }
}
