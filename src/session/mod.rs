//! One client session: startup, then every message until the client leaves.
//!
//! Transaction mode: the session holds an origin connection from the first message that
//! needs one until the origin reports ReadyForQuery 'I' with nothing in flight, then gives
//! it back. Extended-protocol messages are buffered until Sync (or Flush) and translated
//! for whichever connection serves them: statements are prepared on the origin under
//! content-derived names ([`crate::pool::pg::statements`]) and replayed where missing; the
//! client's settings are replayed where they differ. [`relay::Relay`] matches the
//! origin's replies to what the client sent.
//!
//! What does not survive multiplexing (LISTEN, session advisory locks, SQL-level
//! PREPARE, temporary objects, WITH HOLD cursors) pins the client to its connection for
//! the rest of the session; that connection is closed, not reused, when the client
//! leaves. Internal errors become ErrorResponses in [`error`], the only place that does so.

mod caching;
mod catalog;
mod driver;
pub mod error;
mod extended;
pub mod pg;
mod relay;
pub mod settings;
mod startup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use crate::analyze::{Analysis, AnalysisMemo, Dialect, SessionEffect, StringLiterals};
use crate::auth::scram::ScramSecret;
use crate::cache::{CacheStatus, Store};
use crate::cancel::{CancelHandle, CancelRegistry, CancelTarget};
use crate::catalog::Catalogs;
use crate::config::Deployment;
use crate::conn::{Conn, ConnError, FLUSH_THRESHOLD, Stream};
use crate::metrics::DeploymentMetrics;
use crate::pool::pg::{
    PgOrigin, PgPool as Pool, PgPoolSet as PoolSet, PgPooledConn as PooledConn, read_until_ready,
};
use crate::wire::pg::backend::{
    BackendMessage, ErrorFields, TransactionStatus, tag as backend_tag,
};
use crate::wire::pg::frontend::FrontendMessage;
use crate::wire::pg::{Frame, PgFraming, WireError, encode};
use driver::{Driver, Overdue, Wake};
use error::{ClientError, sqlstate};
use extended::{BatchEnd, ClientStatement};
use pg::request::Request;
use relay::{Delivery, Event, Expect, OnError, Relay};
use settings::{STANDARD_CONFORMING_STRINGS, SettingMap, Settings};

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's socket failed.
    #[error("client connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client went away mid-exchange.
    #[error("the client closed the connection")]
    ClientGone,
    /// warpdrive refused the session with this error (already sent to the client).
    #[error("{}", .0.message)]
    Refused(ClientError),
}

impl From<ConnError> for SessionError {
    fn from(error: ConnError) -> Self {
        match error {
            ConnError::Io(error) => SessionError::Io(error),
            ConnError::Wire(error) => SessionError::Protocol(error.to_string()),
            ConnError::TruncatedFrame => SessionError::ClientGone,
        }
    }
}

/// What every session of one deployment shares.
pub struct SessionContext {
    /// The deployment's configuration.
    pub deployment: Deployment,
    /// Its pools.
    pub pools: PoolSet,
    /// TLS towards clients.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// SCRAM secrets per user.
    pub secrets: HashMap<String, ScramSecret>,
    /// The key unknown users' SCRAM salts are derived from (random per process, as
    /// PostgreSQL's mock authentication nonce).
    mock_secret: [u8; 32],
    /// The analyzer (with its memo).
    pub analyzer: Arc<AnalysisMemo>,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
    /// The origin's catalog, per database, for judging code statements run.
    pub catalogs: Arc<Catalogs>,
    /// The deployment's result cache.
    pub cache: Arc<Store>,
    /// The deployment's counters.
    pub metrics: Arc<DeploymentMetrics>,
    /// Becomes true when the server starts shutting down.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// ParameterStatus the origin reported for each (database, setting, value) tried.
    validated: Mutex<HashMap<(String, String, String), Arc<TriedSetting>>>,
}

impl SessionContext {
    /// The shared state of a deployment's sessions.
    pub fn new(
        deployment: Deployment,
        pools: PoolSet,
        tls: Option<tokio_rustls::TlsAcceptor>,
        analyzer: Arc<AnalysisMemo>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        cache: Arc<Store>,
        metrics: Arc<DeploymentMetrics>,
    ) -> SessionContext {
        let secrets = deployment
            .users
            .iter()
            .map(|user| (user.name.clone(), ScramSecret::new(&user.password)))
            .collect();
        let catalogs = Arc::new(Catalogs::new(Arc::clone(&analyzer), Arc::clone(&metrics)));
        let mut mock_secret = [0u8; 32];
        rand::RngExt::fill(&mut rand::rng(), &mut mock_secret[..]);
        SessionContext {
            catalogs,
            mock_secret,
            deployment,
            pools,
            tls,
            secrets,
            analyzer,
            cancels: Arc::new(CancelRegistry::default()),
            cache,
            metrics,
            shutdown,
            validated: Mutex::new(HashMap::new()),
        }
    }

    /// Tries a startup setting (its replay statement) on an origin connection, once per
    /// distinct value, and returns what the origin said of it.
    async fn validate_setting(
        &self,
        pool: &Pool,
        database: &str,
        name: &str,
        value: &str,
    ) -> Result<Arc<TriedSetting>, ClientError> {
        let key = (database.to_owned(), name.to_owned(), value.to_owned());
        if let Some(known) = self
            .validated
            .lock()
            .ok()
            .and_then(|v| v.get(&key).cloned())
        {
            return Ok(known);
        }
        let mut checkout = pool
            .checkout()
            .await
            .map_err(|error| ClientError::from_pool(&error))?;
        let conn = checkout.conn();
        let outcome = run_internal(conn, value).await;
        match outcome {
            Ok(Ok(reply)) => {
                conn.settings.insert(name.to_owned(), value.to_owned());
                let tried = Arc::new(TriedSetting {
                    reports: reply.reports,
                    value: reply.values.into_iter().next_back(),
                    notices: reply.notices,
                });
                if let Ok(mut validated) = self.validated.lock() {
                    validated.insert(key, Arc::clone(&tried));
                }
                Ok(tried)
            }
            Ok(Err(fields)) => {
                // The origin's reason when it is about the setting; else "not supported".
                let code = [
                    sqlstate::UNDEFINED_OBJECT,
                    sqlstate::INVALID_PARAMETER_VALUE,
                    sqlstate::CANT_CHANGE_RUNTIME_PARAM,
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                ]
                .into_iter()
                .find(|code| fields.code() == code.as_bytes())
                .unwrap_or(sqlstate::FEATURE_NOT_SUPPORTED);
                Err(ClientError::fatal(
                    code,
                    format!("startup parameter {name:?}: {}", fields.message()),
                ))
            }
            Err(error) => {
                checkout.discard();
                Err(ClientError::origin_lost(&error))
            }
        }
    }
}

/// What trying a startup setting on the origin told.
#[derive(Debug)]
struct TriedSetting {
    /// The ParameterStatus values the origin reported.
    reports: Vec<(Bytes, Bytes)>,
    /// The value in force afterwards, as `set_config()` returned it (the origin's own
    /// spelling: `EUC_JP` for `eucjp`). The origin reports only what changed, and a
    /// connection may already hold the value.
    value: Option<Bytes>,
    /// The notices the origin sent about it (a value it truncated, …), as frames: a
    /// client setting it gets them as PostgreSQL would send them at startup.
    notices: Vec<Bytes>,
}

/// What the origin answered a query of warpdrive's own.
struct InternalReply {
    /// ParameterStatus values reported.
    reports: Vec<(Bytes, Bytes)>,
    /// The first column of every row returned.
    values: Vec<Bytes>,
    /// NoticeResponse frames.
    notices: Vec<Bytes>,
}

/// The longest warpdrive waits for the origin to answer a statement of its own (a
/// settings replay, a startup parameter check): a connection that stays silent this long
/// is dropped rather than leaving the client hanging.
const INTERNAL_QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a query of warpdrive's own on an idle origin connection, swallowing its replies.
/// Returns the ParameterStatus values reported and the rows' first columns, or the
/// origin's error. The connection
/// counts as busy until the origin's ReadyForQuery, so that it is closed, not reused,
/// if this is abandoned half-way.
async fn run_internal(
    conn: &mut PooledConn,
    sql: &str,
) -> Result<Result<InternalReply, crate::wire::pg::backend::ErrorFields>, ConnError> {
    conn.set_busy();
    // A simple query destroys the unnamed statement.
    conn.unnamed_statement = None;
    let origin = &mut conn.origin.conn;
    encode::query(&mut origin.out, sql);
    let mut reply = InternalReply {
        reports: Vec::new(),
        values: Vec::new(),
        notices: Vec::new(),
    };
    let mut failure = None;
    let exchange = read_until_ready(origin, |frame| {
        match frame.tag() {
            backend_tag::DATA_ROW => {
                let row = crate::wire::pg::backend::decode_data_row(&frame)?;
                reply.values.extend(row.into_iter().next().flatten());
            }
            backend_tag::NOTICE_RESPONSE => reply.notices.push(frame.into_raw()),
            _ => match BackendMessage::decode(&frame)? {
                BackendMessage::ParameterStatus { name, value } => {
                    reply.reports.push((name, value))
                }
                BackendMessage::ErrorResponse(fields) => failure = Some(fields),
                _ => {}
            },
        }
        Ok(())
    });
    let status = tokio::time::timeout(INTERNAL_QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the origin did not answer warpdrive's own query within {}s",
                    INTERNAL_QUERY_TIMEOUT.as_secs()
                ),
            ))
        })??;
    conn.set_ready(status.into());
    Ok(match failure {
        Some(fields) => Err(fields),
        None => Ok(reply),
    })
}

/// Makes an origin connection's settings match `desired` (one round trip, only when
/// they differ). On failure the connection's settings are unknown: discard it.
async fn apply_settings(conn: &mut PooledConn, desired: &SettingMap) -> Result<(), ClientError> {
    let Some(sql) = settings::sync_sql(desired, &conn.settings) else {
        return Ok(());
    };
    match run_internal(conn, &sql).await {
        Ok(Ok(_)) => {
            conn.settings = desired.clone();
            Ok(())
        }
        Ok(Err(fields)) => Err(ClientError::error(
            sqlstate::SYSTEM_ERROR,
            format!(
                "warpdrive could not restore this session's settings on an origin connection: {}",
                fields.message()
            ),
        )
        .hint("a setting made earlier in this session is no longer valid on the origin; RESET it or reconnect")),
        Err(error) => Err(ClientError::origin_lost(&error)),
    }
}

/// Serves one client connection to its end.
pub async fn serve(tcp: TcpStream, ctx: Arc<SessionContext>) {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let span = tracing::info_span!("client", deployment = %ctx.deployment.name, %peer);
    async move {
        let _ = tcp.set_nodelay(true);
        let client: Conn = Conn::new(Stream::Plain(tcp), ctx.deployment.max_message_bytes);
        match run(client, &ctx).await {
            Ok(()) => tracing::debug!("client left"),
            Err(SessionError::ClientGone) => tracing::debug!("client disconnected"),
            Err(error) => tracing::info!(%error, "session ended"),
        }
    }
    .instrument(span)
    .await
}

async fn run(client: Conn, ctx: &Arc<SessionContext>) -> Result<(), SessionError> {
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
        requests: std::collections::VecDeque::new(),
        statements: HashMap::new(),
        unnamed: None,
        portals: HashMap::new(),
        relay: Relay::default(),
        batch: Vec::new(),
        batch_bytes: 0,
        status: TransactionStatus::Idle,
        catalog_changing: false,
        unsynced: extended::Unsynced::default(),
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
    requests: std::collections::VecDeque<caching::InFlight>,
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
    /// Extended-protocol messages sent without their Sync yet.
    unsynced: extended::Unsynced,
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
                    sqlstate::ADMIN_SHUTDOWN,
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
            sqlstate::PROTOCOL_VIOLATION,
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
                let pin = self.function_call_pin(call.function, received).await;
                match self.connect().await {
                    Ok(()) => {
                        self.send_to_origin(call.frame.raw());
                        self.relay.push(Expect::UntilReady);
                        let mut in_flight = caching::InFlight::forwarded(
                            CacheStatus::Uncacheable,
                            call.frame.len(),
                            received,
                        );
                        if let Some(pin) = pin {
                            in_flight.changes_session(pin);
                        }
                        self.requests.push_back(in_flight);
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
            ClientError::from_pool(&error)
        })?;
        let Some(checkout) = self.io.checkout() else {
            return Err(ClientError::error(
                sqlstate::SYSTEM_ERROR,
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
            caching::Consulted::Hit(entry, ()) => {
                return self.answer_simple_hit(&entry, frame.len(), started).await;
            }
            caching::Consulted::Forward(in_flight) => *in_flight,
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
        in_flight.absorb(std::mem::take(&mut self.unsynced));
        in_flight.runs(&analysis.statement_effects);
        self.requests.push_back(in_flight);
        self.flush_origin().await?;
        self.arm_deadline();
        Ok(())
    }

    /// How the origin will read string literals in the next text this client sends: as
    /// it last reported, unless a request in flight may change that.
    fn string_literals(&self) -> StringLiterals {
        let pending = self
            .requests
            .iter()
            .any(|request| request.may_change_setting(STANDARD_CONFORMING_STRINGS))
            || !self.unsynced.pins.is_empty()
            || self
                .unsynced
                .effects
                .iter()
                .flatten()
                .any(|effect| effect.may_change_setting(STANDARD_CONFORMING_STRINGS));
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
        let bound = self.io.pool.settings().max_query_duration + driver::CANCEL_GRACE;
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

    /// Handles what the origin sent (or its failure).
    async fn on_origin(
        &mut self,
        result: Result<Option<Frame>, ConnError>,
    ) -> Result<(), SessionError> {
        let mut next = match result {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => return self.origin_lost(ConnError::TruncatedFrame).await,
            Err(error) => return self.origin_lost(error).await,
        };
        while let Some(frame) = next {
            if frame.tag() == backend_tag::ERROR_RESPONSE
                && let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&frame)
                && (fields.is_fatal() || !self.relay.awaits_origin())
            {
                // The origin is closing this connection (terminated backend, shutdown):
                // end the requests in flight now rather than send more to a dead peer.
                return self.origin_closing(fields).await;
            }
            let frame = self.rewrite_cancel_error(frame);
            let mut events = Vec::new();
            if self.relay.on_origin(&frame, &mut events) == Delivery::Forward {
                self.io.client.out.extend_from_slice(frame.raw());
                self.note_result(&frame);
            }
            if frame.tag() == backend_tag::PARAMETER_STATUS {
                self.note_parameter_status(&frame);
            }
            // The events of this reply first: a synthetic reply drained next belongs to
            // the request after it.
            for event in events.drain(..) {
                self.on_event(event);
            }
            self.relay
                .drain_synthetic(&mut self.io.client.out, &mut events);
            for event in events {
                self.on_event(event);
            }
            if self.io.client.out.len() >= FLUSH_THRESHOLD {
                self.io.client.flush().await?;
            }
            if !self.io.holds() {
                break;
            }
            next = match self.io.origin().map(|c| c.origin.conn.buffered_frame()) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return self.origin_lost(error).await,
                None => None,
            };
        }
        self.io.client.flush().await?;
        Ok(())
    }

    /// When warpdrive cancelled a query for running too long, the origin's "canceling
    /// statement due to user request" is replaced by a message that says why.
    fn rewrite_cancel_error(&self, frame: Frame) -> Frame {
        if !self.io.cancelled_overdue() || frame.tag() != backend_tag::ERROR_RESPONSE {
            return frame;
        }
        match BackendMessage::decode(&frame) {
            Ok(BackendMessage::ErrorResponse(fields))
                if fields.code() == sqlstate::QUERY_CANCELED.as_bytes() =>
            {
                let mut buf = BytesMut::new();
                ClientError::error(
                    sqlstate::QUERY_CANCELED,
                    format!(
                        "canceling statement: it ran longer than max_query_duration ({}s), so warpdrive cancelled it at the origin",
                        self.io.pool.settings().max_query_duration.as_secs()
                    ),
                )
                .hint("optimise the query, or raise pool.max_query_duration")
                .encode(&mut buf);
                crate::wire::pg::split_frame(&mut buf, usize::MAX)
                    .ok()
                    .flatten()
                    .unwrap_or(frame)
            }
            _ => frame,
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Failed => self.note_failure(),
            Event::Completed => self.note_completed(),
            Event::Undo { undo, skipped } => self.undo(undo, skipped),
            Event::Stale { origin_name } => {
                if let Some(checkout) = self.io.checkout() {
                    let conn = checkout.conn();
                    conn.statements.remove(&origin_name);
                    conn.stale_statements.push(origin_name);
                }
            }
            Event::Ready(status) => {
                let finished = self.finish_request(status);
                self.on_ready(status, finished);
            }
        }
    }

    /// Takes back what sending a message did, when the origin rejected or skipped it.
    fn undo(&mut self, undo: OnError, skipped: bool) {
        let conn = self.io.origin();
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
                        .statements
                        .get(&name)
                        .is_some_and(|s| s.origin_name == origin_name)
                {
                    self.statements.remove(&name);
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
                    if name.is_empty() {
                        self.unnamed = Some(statement);
                    } else {
                        self.statements.insert(name, statement);
                    }
                }
            }
        }
    }

    /// ReadyForQuery: settle the request's effects, and give the connection back when the
    /// client is idle.
    fn on_ready(&mut self, status: TransactionStatus, finished: caching::Finished) {
        self.status = status;
        let Some(checkout) = self.io.checkout() else {
            return;
        };
        let conn = checkout.conn();
        match self.relay.awaits_origin() {
            true => conn.set_busy(),
            false => conn.set_ready(status.into()),
        }
        let failed = finished.outcome.failed;
        let mut pins: Vec<&str> = Vec::new();
        let mut discarded = false;
        for effect in finished.effects.iter().flatten() {
            match effect {
                // Whatever the outcome: a failed request may still have taken a session
                // lock before its error, and the lock outlives the transaction.
                SessionEffect::Pin { feature } => pins.push(feature),
                SessionEffect::DiscardAll | SessionEffect::Deallocate { name: None } if !failed => {
                    // Ran on the origin (a pinned client, or the extended protocol): the
                    // connection's statements are gone, and so are the client's.
                    conn.statements.clear();
                    conn.unnamed_statement = None;
                    self.statements.clear();
                    if matches!(effect, SessionEffect::DiscardAll) {
                        self.unnamed = None;
                        discarded = true;
                    }
                }
                _ => {}
            }
        }
        let untracked = self
            .settings
            .settle(&finished.effects, finished.outcome, &mut conn.settings)
            .err()
            .map(|untracked| untracked.to_string());
        let pins: Vec<String> = pins
            .into_iter()
            .map(str::to_owned)
            .chain(finished.pins)
            .chain(untracked)
            .collect();
        if discarded && pins.is_empty() && status == TransactionStatus::Idle {
            self.unpin();
        }
        for feature in &pins {
            self.pin(feature);
        }
        if status == TransactionStatus::Idle && std::mem::take(&mut self.catalog_changing) {
            self.ctx.catalogs.note_changed(&self.database);
        }
        if self.relay.awaits_origin() {
            self.io.restart_deadline();
        } else if status == TransactionStatus::Idle
            && self.io.pinned().is_none()
            && self.batch.is_empty()
            && !self.unsynced.sent
        {
            self.portals.clear();
            self.release();
        } else {
            self.io.settle_deadline();
        }
    }

    /// Keeps the client on its origin connection for the rest of its session; the
    /// connection is closed, not reused, when the client leaves.
    fn pin(&mut self, feature: &str) {
        if self.io.pin(feature) {
            tracing::info!(%feature, "client pinned to its origin connection");
            self.ctx
                .metrics
                .pinned_sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// DISCARD ALL ran on the pinned connection: the session's state is known again
    /// (PostgreSQL's defaults and the startup settings), so the client is pooled again.
    /// The connection itself stays unusable for others and is closed when released: a
    /// reset connection can still differ from a new one (custom settings a function
    /// created read as empty rather than missing).
    fn unpin(&mut self) {
        if let Some(feature) = self.io.unpin() {
            tracing::info!(%feature, "DISCARD ALL ended the pin; the client is pooled again");
        }
    }

    /// The origin connection failed or closed. Every request in flight gets an error and
    /// its ReadyForQuery; a client whose transaction or pinned state died with the
    /// connection is disconnected, as PostgreSQL itself would.
    async fn origin_lost(&mut self, error: ConnError) -> Result<(), SessionError> {
        tracing::warn!(%error, pending = self.relay.pending_ready(), "origin connection lost");
        self.end_requests_in_flight(None, &error.to_string()).await
    }

    /// The origin sent a FATAL error (or an error out of turn) and is closing the
    /// connection. The first request in flight gets the origin's own error (as an ERROR,
    /// since the client's session goes on); the rest get warpdrive's.
    async fn origin_closing(&mut self, fields: ErrorFields) -> Result<(), SessionError> {
        let reason = fields.message();
        tracing::warn!(%reason, pending = self.relay.pending_ready(), "origin is closing its connection");
        self.end_requests_in_flight(Some(fields), &reason).await
    }

    /// Ends what was in flight on a connection that is gone. With the origin's own error
    /// (`origin_error`), a client whose transaction or pinned state died gets it as it
    /// was sent, SQLSTATE and all (25P03 for an idle-in-transaction timeout, 57P01 for an
    /// administrator's shutdown), and is closed; otherwise the first request in flight
    /// gets it as an ERROR, since the client's session goes on.
    async fn end_requests_in_flight(
        &mut self,
        origin_error: Option<ErrorFields>,
        reason: &str,
    ) -> Result<(), SessionError> {
        let pending_ready = self.relay.pending_ready();
        if let Some(checkout) = self.io.checkout() {
            checkout.discard();
        }
        let awaited_replies = self.relay.awaits_origin();
        self.release();
        self.relay = Relay::default();
        self.abandon_requests();
        self.unsynced = extended::Unsynced::default();
        if self.status != TransactionStatus::Idle || self.io.pinned().is_some() {
            let fatal = ClientError::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("the origin connection was lost ({reason}); the open transaction or pinned session state is gone"),
            )
            .hint("reconnect and retry the transaction");
            match &origin_error {
                Some(fields) => {
                    encode::error_response_with_severity(&mut self.io.client.out, fields, "FATAL");
                }
                None => fatal.encode(&mut self.io.client.out),
            }
            self.io.client.flush().await?;
            return Err(SessionError::Refused(fatal));
        }
        let first_reply = origin_error.map(|fields| {
            let mut first = BytesMut::new();
            encode::error_response_with_severity(&mut first, &fields, "ERROR");
            first.freeze()
        });
        for index in 0..pending_ready {
            match (&first_reply, index) {
                (Some(first), 0) => self.io.client.out.extend_from_slice(first),
                _ => ClientError::origin_lost(reason).encode(&mut self.io.client.out),
            }
            encode::ready_for_query(&mut self.io.client.out, TransactionStatus::Idle);
        }
        if pending_ready == 0 && awaited_replies {
            // Messages sent on a Flush wait for replies that will not come: the error
            // answers them; the client's Sync then gets its ReadyForQuery from a new
            // connection.
            match first_reply {
                Some(first) => self.io.client.out.extend_from_slice(&first),
                None => ClientError::origin_lost(reason).encode(&mut self.io.client.out),
            }
        }
        self.io.client.flush().await?;
        Ok(())
    }

    /// max_query_duration passed: cancel at the origin; if the origin does not answer
    /// within a grace period, drop the connection.
    async fn on_deadline(&mut self) -> Result<(), SessionError> {
        match self.io.overdue(self.relay.awaits_origin()) {
            Overdue::Nothing => Ok(()),
            Overdue::Cancelling => {
                tracing::warn!("query exceeded max_query_duration; cancelling it at the origin");
                Ok(())
            }
            Overdue::GiveUp => {
                self.origin_lost(ConnError::Io(std::io::Error::other(
                    "the query was cancelled for exceeding max_query_duration but the origin did not answer",
                )))
                .await
            }
        }
    }
}
