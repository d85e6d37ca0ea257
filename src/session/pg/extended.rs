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
use super::inflight::{Consulted, InFlight, Unsynced};
use super::relay::Expect;
use super::request::{Described, Request};
use super::sqlstate::ErrorResponse;
use super::statement::ClientStatement;
use crate::analyze::{Analysis, Dialect, StringLiterals};
use crate::cache::{CacheStatus, Entry};
use crate::session::SessionError;
use crate::session::settings::STANDARD_CONFORMING_STRINGS;
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, FrontendMessage, Target};

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
            let unsynced = &mut self.requests.unsynced;
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
                    None => self.requests.unsynced.pins.push(pin),
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
                self.requests.unsynced = Unsynced::default();
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
            if let Some(in_flight) = in_flight {
                self.requests.push(in_flight);
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
        let split = self.requests.unsynced.sent;
        let status = match self.plan(batch) {
            BatchPlan::NoExecute => self
                .requests
                .unsynced
                .status
                .unwrap_or(CacheStatus::NotAQuery),
            BatchPlan::Unresolved => CacheStatus::Uncacheable,
            BatchPlan::Executes {
                statement,
                cacheable: Some(request),
            } if !split => {
                let query_bytes = query_bytes + self.requests.unsynced.query_bytes;
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
        let query_bytes = query_bytes + self.requests.unsynced.query_bytes;
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
