//! A PostgreSQL client session: startup, then every message until the client leaves.
//!
//! Transaction mode: the session holds an origin connection from the first message that
//! needs one until the origin reports ReadyForQuery 'I' with nothing in flight, then gives
//! it back (the hold, the deadline and the wait are [`crate::session::driver`]'s).
//! Extended-protocol messages are buffered until Sync (or Flush) and translated for
//! whichever connection serves them: statements are prepared on the origin under
//! content-derived names ([`crate::pool::pg::statements`]) and replayed where missing; the
//! client's settings are replayed where they differ. [`relay::Relay`] matches the
//! origin's replies to what the client sent; [`reply`] handles them, [`loss`] what
//! happens when the origin connection goes.
//!
//! What does not survive multiplexing (LISTEN, session advisory locks, SQL-level
//! PREPARE, temporary objects, WITH HOLD cursors) pins the client to its connection for
//! the rest of the session; that connection is closed, not reused, when the client
//! leaves.

mod caching;
mod catalog;
mod extended;
mod inflight;
pub mod internal;
mod loss;
pub mod recorder;
mod relay;
mod reply;
pub mod request;
pub mod sqlstate;
mod startup;
mod statement;
mod translate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::driver::{Driver, Wake};
use super::error::{ClientError, ErrorKind};
use super::settings::{STANDARD_CONFORMING_STRINGS, Settings};
use super::{SessionContext, SessionError};
use crate::analyze::{Analysis, Dialect, SessionEffect, StringLiterals};
use crate::auth::scram::ScramSecret;
use crate::cache::CacheStatus;
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::Deployment;
use crate::conn::{Conn, ConnError, FLUSH_THRESHOLD};
use crate::pool::pg::PgOrigin;
use crate::protocol::TxnStatus;
use crate::wire::pg::backend::{BackendMessage, TransactionStatus};
use crate::wire::pg::frontend::FrontendMessage;
use crate::wire::pg::{Frame, PgFraming, WireError, encode};
use extended::BatchEnd;
use internal::apply_settings;
use relay::{Expect, Relay};
use request::Request;
use sqlstate::{ErrorResponse, from_pool};
use statement::ClientStatement;

/// What PostgreSQL's sessions of one deployment share.
pub(super) struct Shared {
    /// SCRAM secrets per user.
    secrets: HashMap<String, ScramSecret>,
    /// The key unknown users' SCRAM salts are derived from (random per process, as
    /// PostgreSQL's mock authentication nonce).
    mock_secret: [u8; 32],
    /// What the origin said of each startup setting tried.
    tried: internal::TriedSettings,
}

impl Shared {
    pub(super) fn new(deployment: &Deployment) -> Shared {
        let secrets = deployment
            .users
            .iter()
            .map(|user| (user.name.clone(), ScramSecret::new(&user.password)))
            .collect();
        let mut mock_secret = [0u8; 32];
        rand::RngExt::fill(&mut rand::rng(), &mut mock_secret[..]);
        Shared {
            secrets,
            mock_secret,
            tried: internal::TriedSettings::default(),
        }
    }
}

impl From<TransactionStatus> for TxnStatus {
    fn from(status: TransactionStatus) -> TxnStatus {
        match status {
            TransactionStatus::Idle => TxnStatus::Idle,
            TransactionStatus::InTransaction => TxnStatus::InTransaction,
            TransactionStatus::Failed => TxnStatus::Failed,
        }
    }
}

/// Admits the client, then serves it until it leaves.
pub(super) async fn run(client: Conn, ctx: &Arc<SessionContext>) -> Result<(), SessionError> {
    let Some(admitted) = startup::admit(client, ctx).await? else {
        return Ok(());
    };
    let cancel = ctx.cancels.register();
    let mut client = admitted.client;
    startup::finish_greeting(&mut client.out, cancel.process_id, &cancel.secret_key);
    client.flush().await?;
    tracing::debug!(user = %admitted.user, database = %admitted.database, "client admitted");
    let mut session = Session {
        ctx: Arc::clone(ctx),
        io: Driver::new(client, admitted.pool, ctx.shutdown.clone()),
        database: admitted.database,
        settings: Settings::new(admitted.settings),
        standard_conforming_strings: admitted.standard_conforming_strings,
        requests: inflight::Requests::default(),
        statements: HashMap::new(),
        unnamed: None,
        portals: HashMap::new(),
        relay: Relay::default(),
        batch: Vec::new(),
        batch_bytes: 0,
        status: TransactionStatus::Idle,
        catalog_changing: false,
        cancel,
    };
    session.main_loop().await
}

struct Session {
    ctx: Arc<SessionContext>,
    /// The client, its hold on an origin connection, its deadline and timers.
    io: Driver<PgOrigin, PgFraming>,
    /// The origin database the client asked for.
    database: String,
    settings: Settings,
    /// `standard_conforming_strings` as the origin last reported it to this client.
    standard_conforming_strings: bool,
    /// Requests at the origin, one per ReadyForQuery owed, for metrics and recording.
    requests: inflight::Requests,
    /// Named statements by client name.
    statements: HashMap<Bytes, ClientStatement>,
    /// The client's unnamed statement.
    unnamed: Option<ClientStatement>,
    /// The analysis of the statement each open portal was bound to.
    portals: HashMap<Bytes, Arc<Analysis>>,
    relay: Relay,
    /// Extended-protocol messages waiting for Sync or Flush.
    batch: Vec<FrontendMessage>,
    /// Their size in bytes.
    batch_bytes: usize,
    /// Transaction status as the client last saw it.
    status: TransactionStatus,
    /// DDL (or a DO block, which may run some) went to the origin in the current
    /// transaction: the catalog is read again once it ends.
    catalog_changing: bool,
    /// The client's cancel key, routed to the origin connection it holds.
    cancel: CancelHandle,
}

/// Whether a statement may be answered by warpdrive itself (see `answer_locally`).
fn is_answered_locally(effect: Option<&SessionEffect>) -> bool {
    matches!(
        effect,
        Some(SessionEffect::DiscardAll | SessionEffect::Deallocate { .. })
    )
}

/// Extended-protocol messages buffered before Sync beyond this many bytes are sent on
/// (as with Flush), so that a client cannot make warpdrive hold unbounded input.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// How long extended-protocol messages wait without their Sync once the client has sent
/// nothing more for this long: a client may wait for the replies (an early error, a libpq pipeline
/// without Sync) before it sends the rest, as PostgreSQL runs messages as they arrive.
/// A batch written at once arrives whole well within this, and is decided at its Sync.
const INPUT_DRY: Duration = Duration::from_millis(2);

/// Held messages this large go to the origin as soon as nothing more is buffered, without
/// waiting [`INPUT_DRY`]: a pipeline of large Bind/Execute pairs (a bulk load) then runs
/// as it arrives, and an early error reaches the client as early as it would directly.
const DRY_AT_ONCE_BYTES: usize = 64 << 10;

impl Session {
    async fn main_loop(&mut self) -> Result<(), SessionError> {
        loop {
            if self.io.draining() && self.between_transactions() {
                ClientError::fatal(
                    ErrorKind::ShuttingDown,
                    "terminating connection: warpdrive is shutting down",
                )
                .hint("reconnect; another warpdrive instance or the restarted one will answer")
                .encode(&mut self.io.client.out);
                self.io.client.flush().await?;
                return Ok(());
            }
            let wake = self.io.wake().await;
            match wake {
                Wake::Client(Ok(Some(frame))) => {
                    if !self.on_client(frame).await? {
                        return Ok(());
                    }
                    self.io.set_timer(None);
                    if !self.batch.is_empty() {
                        if self.batch_bytes >= DRY_AT_ONCE_BYTES
                            && !self.io.client.has_buffered_frame()
                        {
                            self.send_batch(BatchEnd::AsTheyAre).await?;
                        } else {
                            // Held without their Sync: they go to the origin as they
                            // are if the client sends nothing more meanwhile.
                            self.io.set_timer(Some(Instant::now() + INPUT_DRY));
                        }
                    }
                }
                Wake::Timer => {
                    if !self.batch.is_empty() {
                        self.send_batch(BatchEnd::AsTheyAre).await?;
                    }
                }
                Wake::Client(Ok(None)) => return Ok(()),
                Wake::Client(Err(ConnError::Wire(error))) => {
                    return self.protocol_violation(error).await;
                }
                Wake::Client(Err(error)) => return Err(error.into()),
                Wake::Origin(result) => self.on_origin(result).await?,
                Wake::Deadline => self.on_deadline().await?,
                // The server itself is gone: nothing can be served any more.
                Wake::Shutdown { server_gone: true } => return Ok(()),
                Wake::Shutdown { server_gone: false } => {}
            }
        }
    }

    /// Whether the client is idle outside a transaction, with nothing in flight.
    fn between_transactions(&self) -> bool {
        self.status == TransactionStatus::Idle
            && !self.relay.awaits_origin()
            && self.batch.is_empty()
    }

    async fn protocol_violation(&mut self, error: WireError) -> Result<(), SessionError> {
        ClientError::fatal(
            ErrorKind::ProtocolViolation,
            format!("invalid message from client: {error}"),
        )
        .encode(&mut self.io.client.out);
        self.io.client.flush().await?;
        Err(SessionError::Protocol(error.to_string()))
    }

    /// Handles one client message; false when the session should end.
    async fn on_client(&mut self, frame: Frame) -> Result<bool, SessionError> {
        let message = match FrontendMessage::decode(frame) {
            Ok(message) => message,
            Err(error) => {
                self.protocol_violation(error).await?;
                return Ok(false);
            }
        };
        match message {
            FrontendMessage::Query(query) => self.on_query(query.frame, &query.sql).await?,
            message @ (FrontendMessage::Parse(_)
            | FrontendMessage::Bind(_)
            | FrontendMessage::Describe(_)
            | FrontendMessage::Execute(_)
            | FrontendMessage::Close(_)) => {
                self.batch_bytes += message.frame().len();
                self.batch.push(message);
                if self.batch_bytes > MAX_BATCH_BYTES {
                    // Bounded memory: a client that never sends Sync has its messages
                    // forwarded as they come (not cacheable).
                    self.send_batch(BatchEnd::AsTheyAre).await?;
                }
            }
            FrontendMessage::Sync(_) => self.send_batch(BatchEnd::Sync).await?,
            FrontendMessage::Flush(_) => self.send_batch(BatchEnd::Flush).await?,
            FrontendMessage::Terminate(_) => return Ok(false),
            FrontendMessage::CopyData(frame)
            | FrontendMessage::CopyDone(frame)
            | FrontendMessage::CopyFail(frame) => {
                if frame.tag() != b'd' {
                    self.relay.push(Expect::CopyEnd);
                }
                if let Some(checkout) = self.io.checkout() {
                    checkout
                        .conn()
                        .origin
                        .conn
                        .out
                        .extend_from_slice(frame.raw());
                    if checkout.conn().origin.conn.out.len() >= FLUSH_THRESHOLD
                        || frame.tag() != b'd'
                    {
                        self.flush_origin().await?;
                    }
                }
            }
            FrontendMessage::FunctionCall(call) => {
                let received = std::time::Instant::now();
                let pin = match self.io.pinned() {
                    Some(_) => None,
                    None => {
                        self.catalog()
                            .function_call_pin(call.function, received)
                            .await
                    }
                };
                match self.connect().await {
                    Ok(()) => {
                        self.send_to_origin(call.frame.raw());
                        self.relay.push(Expect::UntilReady);
                        let mut in_flight = inflight::InFlight::forwarded(
                            CacheStatus::Uncacheable,
                            call.frame.len(),
                            received,
                        );
                        if let Some(pin) = pin {
                            in_flight.changes_session(pin);
                        }
                        self.requests.push(in_flight);
                        self.flush_origin().await?;
                        self.arm_deadline();
                    }
                    Err(error) => self.answer_error(error).await?,
                }
            }
            FrontendMessage::Password(_) => {
                self.protocol_violation(WireError::UnexpectedTag { tag: b'p' })
                    .await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn send_to_origin(&mut self, bytes: &[u8]) {
        if let Some(checkout) = self.io.checkout() {
            checkout.conn().origin.conn.out.extend_from_slice(bytes);
            checkout.conn().set_busy();
        }
    }

    /// Flushes warpdrive's writes to the origin, relaying the origin's replies that
    /// arrive meanwhile (a long pipeline fills both directions). A write failure is
    /// handled when the session next reads from the origin, which then fails too.
    async fn flush_origin(&mut self) -> Result<(), SessionError> {
        while let Some(checkout) = self.io.checkout() {
            match checkout.conn().origin.conn.flush_or_read().await {
                Ok(None) => break,
                Ok(Some(frame)) => self.on_origin(Ok(Some(frame))).await?,
                Err(ConnError::Io(error)) => {
                    tracing::debug!(%error, "writing to the origin failed");
                    break;
                }
                Err(error) => self.on_origin(Err(error)).await?,
            }
        }
        Ok(())
    }

    fn arm_deadline(&mut self) {
        self.io.arm_deadline();
    }

    /// Answers with an error and, outside the extended protocol's error skipping, a
    /// ReadyForQuery, without involving the origin.
    async fn answer_error(&mut self, error: ClientError) -> Result<(), SessionError> {
        error.encode(&mut self.io.client.out);
        encode::ready_for_query(&mut self.io.client.out, self.status);
        self.io.client.flush().await?;
        Ok(())
    }

    /// Makes sure an origin connection is checked out and carries the client's settings.
    /// The inner error is for the client; the caller decides how to answer with it.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let in_flight = self.relay.awaits_origin();
        let fresh = self.io.hold(in_flight).await.map_err(|error| {
            tracing::warn!(%error, "no origin connection for the client");
            from_pool(&error)
        })?;
        let Some(checkout) = self.io.checkout() else {
            return Err(ClientError::error(
                ErrorKind::Unavailable,
                "no origin connection",
            ));
        };
        if fresh {
            let origin = Arc::clone(&checkout.target().target);
            let conn = checkout.conn();
            self.cancel.set_target(Some(CancelTarget {
                origin,
                process_id: conn.origin.process_id,
                secret_key: conn.origin.secret_key.clone(),
            }));
        }
        if let Err(error) = apply_settings(checkout.conn(), self.settings.current()).await {
            checkout.discard();
            self.release();
            return Err(error);
        }
        Ok(())
    }

    /// The origin's catalog as this session asks it: read on a pooled connection, waited
    /// for only when the session holds none (else it might wait for its own).
    fn catalog(&self) -> catalog::CatalogView<'_> {
        catalog::CatalogView {
            catalogs: &self.ctx.catalogs,
            database: &self.database,
            reader: crate::catalog::Reader {
                pool: &self.io.pool,
                wait: !self.io.holds(),
            },
            catalog_changing: self.catalog_changing,
        }
    }

    /// Why the code a statement runs may change this session, if it may (see
    /// [`catalog`]); a pinned session's state is unknown already.
    async fn user_code_pin(
        &mut self,
        analysis: &Analysis,
        text: Option<&[u8]>,
        received: std::time::Instant,
    ) -> Option<String> {
        self.catalog_changing |= catalog::changes_catalog(analysis);
        match self.io.pinned() {
            Some(_) => None,
            None => self.catalog().user_code_pin(analysis, text, received).await,
        }
    }

    /// Gives the connection back (or closes it, per its state). After warpdrive's own
    /// cancel, only once the cancel can no longer hit the next client's query.
    fn release(&mut self) {
        self.io.release();
        self.cancel.set_target(None);
    }

    async fn on_query(&mut self, frame: Frame, sql: &Bytes) -> Result<(), SessionError> {
        let started = std::time::Instant::now();
        if !self.batch.is_empty() {
            self.send_batch(BatchEnd::AsTheyAre).await?;
        }
        let analysis =
            self.ctx
                .analyzer
                .analyze_bytes(Dialect::Postgres, sql, self.string_literals());
        if is_answered_locally(analysis.sole_effect()) {
            // Answered in turn: the replies to requests still in flight come first, and
            // they say whether a transaction is open or failed.
            self.settle_in_flight().await?;
            if self.answer_locally(analysis.sole_effect()) {
                self.ctx.metrics.record(
                    CacheStatus::NotAQuery,
                    frame.len(),
                    0,
                    started.elapsed(),
                    false,
                );
                self.io.client.flush().await?;
                return Ok(());
            }
        }
        let request = Request::Simple { sql: sql.clone() };
        let mut in_flight = match self.consult(&analysis, request, frame.len(), started).await {
            inflight::Consulted::Hit(entry, ()) => {
                return self.answer_simple_hit(&entry, frame.len(), started).await;
            }
            inflight::Consulted::Forward(in_flight) => *in_flight,
        };
        if let Some(pin) = self.user_code_pin(&analysis, Some(sql), started).await {
            in_flight.changes_session(pin);
        }
        if let Err(error) = self.connect().await {
            self.ctx
                .metrics
                .record(in_flight.status(), frame.len(), 0, started.elapsed(), true);
            return self.answer_error(error).await;
        }
        self.send_pending_closes();
        self.let_go_of_databases(&analysis);
        self.send_to_origin(frame.raw());
        if let Some(checkout) = self.io.checkout() {
            // A simple query destroys the unnamed statement.
            checkout.conn().unnamed_statement = None;
        }
        self.relay.push(Expect::UntilReady);
        in_flight.runs(&analysis.statement_effects);
        self.requests.push(in_flight);
        self.flush_origin().await?;
        self.arm_deadline();
        Ok(())
    }

    /// How the origin will read string literals in the next text this client sends: as
    /// it last reported, unless a request in flight may change that.
    fn string_literals(&self) -> StringLiterals {
        let pending = self
            .requests
            .may_change_setting(STANDARD_CONFORMING_STRINGS);
        match (pending, self.standard_conforming_strings) {
            (true, _) => StringLiterals::Unknown,
            (false, true) => StringLiterals::Standard,
            (false, false) => StringLiterals::BackslashEscapes,
        }
    }

    /// Follows the origin's reports of `standard_conforming_strings`.
    fn note_parameter_status(&mut self, frame: &Frame) {
        if let Ok(BackendMessage::ParameterStatus { name, value }) = BackendMessage::decode(frame)
            && &name[..] == STANDARD_CONFORMING_STRINGS.as_bytes()
        {
            self.standard_conforming_strings = &value[..] == b"on";
        }
    }

    /// DROP DATABASE and its kin fail while any session is connected to the database:
    /// warpdrive's own idle connections to it close first.
    fn let_go_of_databases(&self, analysis: &Analysis) {
        for effect in analysis.effects() {
            if let SessionEffect::NeedsDatabaseUnused { database } = effect {
                self.ctx.pools.close_idle(database);
            }
        }
    }

    /// Reads the origin's replies until nothing of this client is in flight (bounded by
    /// max_query_duration and the cancel grace period).
    async fn settle_in_flight(&mut self) -> Result<(), SessionError> {
        let bound =
            self.io.pool.settings().max_query_duration + crate::session::driver::CANCEL_GRACE;
        while self.relay.awaits_origin() {
            let Some(checkout) = self.io.checkout() else {
                break;
            };
            let origin = &mut checkout.conn().origin.conn;
            let result = match tokio::time::timeout(bound, origin.read_frame()).await {
                Ok(result) => result,
                Err(_) => Err(ConnError::Io(std::io::Error::other(
                    "the origin did not answer within max_query_duration",
                ))),
            };
            self.on_origin(result).await?;
        }
        Ok(())
    }

    /// DISCARD ALL and DEALLOCATE of protocol-level statements concern only this client:
    /// answered here, without touching the shared origin connection. True if answered.
    /// In a failed transaction they go to the origin, which refuses them as PostgreSQL
    /// does.
    fn answer_locally(&mut self, effect: Option<&SessionEffect>) -> bool {
        if self.status == TransactionStatus::Failed {
            return false;
        }
        let tag = match effect {
            Some(SessionEffect::DiscardAll)
                if self.io.pinned().is_none() && self.status == TransactionStatus::Idle =>
            {
                self.settings.discard_all();
                self.statements.clear();
                self.unnamed = None;
                "DISCARD ALL"
            }
            _ => match self.deallocate_locally(effect) {
                Some((tag, _)) => tag,
                None => return false,
            },
        };
        encode::command_complete(&mut self.io.client.out, tag);
        encode::ready_for_query(&mut self.io.client.out, self.status);
        true
    }
}
