//! The extended query protocol's batches: Parse, Bind, Describe, Execute and Close are
//! held until Sync (or Flush), then planned (what the batch executes, and whether it has
//! the one shape the cache serves) and answered from an entry on a hit.
//!
//! Named statements live on the origin under content-derived names
//! ([`crate::pool::pg::statements`]); [`super::translate`] writes a batch for the
//! connection that serves it. Nothing here reads or writes a socket.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::inflight::Unsynced;
use super::request::{Described, Request};
use super::statement::{ClientStatement, ClientStatements};
use super::translate::StatementReader;
use crate::analyze::{Analysis, Dialect, StringLiterals};
use crate::cache::{CacheStatus, Entry};
use crate::protocol::TxnStatus;
use crate::proxy::Composer;
use crate::session::settings::STANDARD_CONFORMING_STRINGS;
use crate::wire::pg::encode;
use crate::wire::pg::frontend::{Bind, FrontendMessage, Target};

/// Extended-protocol messages buffered before Sync beyond this many bytes are sent on
/// (as with Flush), so that a client cannot make warpdrive hold unbounded input.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Held messages this large go to the origin as soon as nothing more is buffered, without
/// waiting for the input to run dry: a pipeline of large Bind/Execute pairs (a bulk load)
/// then runs as it arrives, and an early error reaches the client as early as it would
/// directly.
const DRY_AT_ONCE_BYTES: usize = 64 << 10;

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

/// The extended-protocol messages held until Sync or Flush.
#[derive(Default)]
pub(super) struct Batch {
    messages: Vec<FrontendMessage>,
    /// Their size in bytes.
    bytes: usize,
}

impl Batch {
    /// Holds a message; true when the batch outgrew its bound and must go on now
    /// (bounded memory: a client that never sends Sync has its messages forwarded as they
    /// come, not cacheable).
    pub(super) fn hold(&mut self, message: FrontendMessage) -> bool {
        self.bytes += message.frame().len();
        self.messages.push(message);
        self.bytes > MAX_BATCH_BYTES
    }

    /// Whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether what is held should go on as soon as the client's input holds nothing
    /// more, without waiting for it to run dry.
    pub(super) fn is_large(&self) -> bool {
        self.bytes >= DRY_AT_ONCE_BYTES
    }

    /// The messages held, which are no longer.
    pub(super) fn take(&mut self) -> Vec<FrontendMessage> {
        self.bytes = 0;
        std::mem::take(&mut self.messages)
    }
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

/// What the cache makes of a batch ending with Sync.
pub(super) enum Decision {
    /// Look the request up: it executes `statement`, in the shape the cache serves.
    Consult {
        statement: Box<ClientStatement>,
        request: Request,
    },
    /// Forward it with this status.
    Forward(CacheStatus),
}

/// Reads a batch against the client's statements.
pub(super) struct Planner<'a> {
    pub(super) statements: &'a ClientStatements,
    pub(super) reader: StatementReader<'a>,
    /// How the origin reads string literals in the batch's first Parse.
    pub(super) literals: StringLiterals,
    /// The deployment's cache.
    pub(super) composer: Composer<'a>,
    /// The client's transaction status.
    pub(super) txn: TxnStatus,
}

impl Planner<'_> {
    /// What a batch ending with Sync asks of the cache: a lookup only for a whole request
    /// (nothing of it sent before a Flush, `unsynced`) of the one shape the cache serves.
    pub(super) fn decide(&self, batch: &[FrontendMessage], unsynced: &Unsynced) -> Decision {
        let status = match self.plan(batch) {
            BatchPlan::NoExecute => unsynced.status.unwrap_or(CacheStatus::NotAQuery),
            BatchPlan::Unresolved => CacheStatus::Uncacheable,
            BatchPlan::Executes {
                statement,
                cacheable: Some(request),
            } if !unsynced.sent => return Decision::Consult { statement, request },
            BatchPlan::Executes { statement, .. } => self.forwarded_status(&statement.analysis),
        };
        Decision::Forward(status)
    }

    /// The status of a batch part sent on a Flush, when it executes something.
    pub(super) fn flushed_status(&self, batch: &[FrontendMessage]) -> Option<CacheStatus> {
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
        self.composer.forwarded_status(analysis, self.txn)
    }

    /// The statements a batch executes, in order, with their text when warpdrive has it
    /// (not for a portal bound by an earlier batch). A Parse after an Execute that may
    /// change standard_conforming_strings is read without knowing it, as the origin
    /// parses each message after the ones before it ran.
    pub(super) fn executed_statements(
        &self,
        batch: &[FrontendMessage],
    ) -> Vec<(Arc<Analysis>, Option<Bytes>)> {
        let mut parsed: HashMap<&Bytes, (Arc<Analysis>, &Bytes)> = HashMap::new();
        let mut bound: HashMap<&Bytes, (Arc<Analysis>, Option<Bytes>)> = HashMap::new();
        let mut executed: Vec<(Arc<Analysis>, Option<Bytes>)> = Vec::new();
        let mut literals = self.literals;
        for message in batch {
            match message {
                FrontendMessage::Parse(parse) => {
                    let analysis =
                        self.reader
                            .analyzer
                            .analyze_bytes(Dialect::Postgres, &parse.sql, literals);
                    parsed.insert(&parse.name, (analysis, &parse.sql));
                }
                FrontendMessage::Bind(bind) => {
                    let statement = match parsed.get(&bind.statement) {
                        Some((analysis, sql)) => Some((Arc::clone(analysis), (*sql).clone())),
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
                        self.statements
                            .portal(&execute.portal)
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
            Some(parse) => self.reader.read(parse, self.literals),
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
                    let duplicate = self.statements.is_duplicate(&parse.name);
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
}

/// Writes the replies to a batch answered from `entry` (those the client's own messages
/// call for) to `out`, and keeps what the batch prepared, bound and closed.
pub(super) fn answer_hit(
    batch: Vec<FrontendMessage>,
    entry: &Entry,
    statement: ClientStatement,
    statements: &mut ClientStatements,
    out: &mut BytesMut,
) {
    let mut segments = entry.segments.iter();
    for message in batch {
        match message {
            FrontendMessage::Parse(parse) => {
                // The batch's only Parse is the executed statement's (cacheable shape).
                statements.keep(parse.name.clone(), statement.clone());
                encode::parse_complete(out);
            }
            FrontendMessage::Bind(bind) => {
                statements.bind(bind.portal.clone(), Arc::clone(&statement.analysis));
                encode::bind_complete(out);
            }
            FrontendMessage::Describe(_) | FrontendMessage::Execute(_) => {
                if let Some(segment) = segments.next() {
                    out.extend_from_slice(segment);
                }
            }
            FrontendMessage::Close(close) => {
                match close.target {
                    Target::Statement => {
                        statements.forget(&close.name);
                    }
                    Target::Portal => statements.close_portal(&close.name),
                }
                encode::close_complete(out);
            }
            _ => {}
        }
    }
    // The unnamed portal ends with the implicit transaction, as on the origin.
    statements.close_portal(&Bytes::new());
}
