//! One MySQL client's commands: answered locally where the origin is not needed (PING,
//! SET_OPTION, statement closes, KILL of warpdrive's own connection ids), otherwise sent
//! on the client's origin connection once its state is the client's, with the reply
//! relayed and its session-state reports taken in.

mod cache;
mod commands;
mod replies;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::Shared;
use super::caching;
use super::errno::err_packet;
use super::handshake::{Admitted, refuse};
use super::recorder::Recorder;
use super::relay::Relay;
use super::sessions::Registration;
use super::setup::{self, StepFailed};
use super::state::{self, Step};
use super::statements::ClientStatements;
use crate::analyze::Analysis;
use crate::cache::Generations;
use crate::conn::ConnError;
use crate::pool::mysql::{Baseline, ExchangeError, MysqlOrigin, OriginStatement, SessionState};
use crate::proxy::Flight;
use crate::proxy::writes::PendingWrites;
use crate::session::driver::{Driver, drive};
use crate::session::error::{ClientError, ErrorKind};
use crate::session::{SessionContext, SessionError};
use crate::wire::mysql::reply::OkPacket;
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::{MysqlFraming, Packet, caps, status, write_packet};

/// What the reply in flight is for.
pub(super) struct InFlight {
    relay: Relay,
    /// A statement (COM_QUERY, COM_STMT_EXECUTE): counts for stay_after_write.
    statement: bool,
    /// The command's own text explains the state changes the origin reports.
    explained: bool,
    /// State the text says stays on the connection.
    pins: Option<String>,
    /// UNLOCK TABLES.
    unlocks: bool,
    /// The next statement must run here.
    keeps_for_next: bool,
    /// The reply reported an AUTO_INCREMENT id or changed rows.
    wrote: bool,
    /// A prepare's statement, by the client's id.
    prepares: Option<u32>,
    /// An execute's statement and whether it asked for a cursor.
    executes: Option<(u32, bool)>,
    /// A fetch's statement.
    fetches: Option<u32>,
    /// COM_INIT_DB's database.
    init_db: Option<String>,
    /// The next sequence id towards the origin (the client's file).
    origin_seq: u8,
    /// The statement's analysis (COM_QUERY, COM_STMT_EXECUTE), for its writes.
    analysis: Option<Arc<Analysis>>,
    /// Statements of it that completed.
    completed: usize,
    /// The database a statement's unqualified names resolve in (the one it was
    /// prepared in); for a text, the current one.
    names_in: Option<String>,
    /// Its cache status and recording.
    flight: Option<Box<Flight<Recorder>>>,
}

impl InFlight {
    fn new(relay: Relay) -> InFlight {
        InFlight {
            relay,
            statement: false,
            explained: false,
            pins: None,
            unlocks: false,
            keeps_for_next: false,
            wrote: false,
            prepares: None,
            executes: None,
            fetches: None,
            init_db: None,
            origin_seq: 1,
            analysis: None,
            completed: 0,
            names_in: None,
            flight: None,
        }
    }
}

pub(super) struct Session {
    ctx: Arc<SessionContext<Shared>>,
    io: Driver<MysqlOrigin, MysqlFraming>,
    capabilities: u32,
    baseline: Arc<Baseline>,
    /// The client's session state.
    state: SessionState,
    /// Its state at login, for COM_RESET_CONNECTION.
    initial: SessionState,
    /// The collation it logged in with.
    collation: u8,
    statements: ClientStatements,
    in_flight: Option<InFlight>,
    /// Commands that arrived while a reply was in flight.
    queued: VecDeque<Packet>,
    /// Status flags as the client last saw them.
    status: u16,
    /// Statements the client still runs on its connection after a write.
    stay: usize,
    registration: Registration,
    /// The write clock of the origin.
    generations: Arc<Generations>,
    /// The client's writes on their way to it.
    writes: PendingWrites,
    /// Its reads as the catalog judged them.
    judgements: std::sync::Mutex<cache::Judgements>,
}

/// Serves an admitted client until it leaves.
pub(super) async fn serve(
    admitted: Admitted,
    ctx: &Arc<SessionContext<Shared>>,
    registration: Registration,
) -> Result<(), SessionError> {
    let Admitted {
        client,
        capabilities,
        database,
        collation,
        greeting,
        seq,
        ..
    } = admitted;
    let home = Some(ctx.deployment.origin.database.clone()).filter(|db| !db.is_empty());
    let named = database.is_some() && database != home;
    let multi_statements = capabilities & caps::MULTI_STATEMENTS != 0;
    let state = state::initial(
        &greeting.baseline,
        collation,
        database.or(home),
        multi_statements,
    );
    let mut session = Session {
        io: Driver::new(
            client,
            ctx.protocol.pool_for(capabilities),
            ctx.shutdown.clone(),
        ),
        ctx: Arc::clone(ctx),
        capabilities,
        baseline: Arc::clone(&greeting.baseline),
        initial: state.clone(),
        collation,
        state,
        statements: ClientStatements::default(),
        in_flight: None,
        queued: VecDeque::new(),
        status: greeting.status,
        stay: 0,
        registration,
        generations: ctx.generations(caching::CLOCK),
        writes: match ctx.tier {
            Some(_) => PendingWrites::published(),
            None => PendingWrites::default(),
        },
        judgements: Default::default(),
    };
    // A database the client named is checked now, as a server does at login.
    if named && let Err(error) = session.ready().await {
        let error = ClientError {
            severity: crate::session::error::Severity::Fatal,
            ..error
        };
        return refuse(&mut session.io.client, seq, error).await.map(|_| ());
    }
    session.maybe_release();
    let ok = OkPacket {
        status: session.status,
        ..OkPacket::default()
    };
    write_packet(&mut session.io.client.out, seq, &ok.encode(capabilities));
    session.io.client.flush().await?;
    let served = drive(&mut session).await;
    // Writes in flight may commit without anyone seeing their end.
    if let Some(mut in_flight) = session.in_flight.take() {
        session.request_lost(&mut in_flight).await;
    }
    served
}

pub(super) fn unknown_statement(id: u32, command: &str) -> ClientError {
    ClientError::error(
        ErrorKind::UnknownStatement,
        format!("Unknown prepared statement handler ({id}) given to {command}"),
    )
}

impl Session {
    fn conn(&mut self) -> &mut crate::pool::mysql::MysqlPooledConn {
        self.io.origin().expect("the client holds a connection")
    }

    async fn send_to_client(&mut self, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
        write_packet(&mut self.io.client.out, seq, payload);
        self.io.client.flush().await?;
        Ok(())
    }

    async fn reply_error(&mut self, seq: u8, error: &ClientError) -> Result<(), SessionError> {
        self.send_to_client(seq, &err_packet(error).encode()).await
    }

    async fn reply_ok(&mut self, seq: u8) -> Result<(), SessionError> {
        let ok = OkPacket {
            status: self.status,
            ..OkPacket::default()
        };
        let payload = ok.encode(self.capabilities);
        self.send_to_client(seq, &payload).await
    }

    /// Gives the connection back once nothing keeps the client on it.
    fn maybe_release(&mut self) {
        let idle = self.status & status::IN_TRANS == 0 && self.status & status::AUTOCOMMIT != 0;
        if self.io.holds()
            && self.in_flight.is_none()
            && idle
            && self.stay == 0
            && !self.statements.keep_connection()
            && self.io.pinned().is_none()
        {
            self.io.release();
            self.registration.handle.set_origin_thread(None);
        }
    }

    /// Makes sure the client holds a connection whose session state is the client's.
    async fn ready(&mut self) -> Result<(), ClientError> {
        // Each connection that cannot serve the client is closed: at worst every idle
        // one, then a fresh one opens.
        for _ in 0..=self.io.pool.settings().max_size {
            let fresh = self
                .io
                .hold(false)
                .await
                .map_err(|error| ClientError::from_pool(&error, ClientError::from_origin))?;
            if fresh {
                let thread = self.conn().thread_id();
                self.registration.handle.set_origin_thread(Some(thread));
            }
            // The common case: the connection is in the client's state already.
            let conn = self.io.origin().expect("the client holds a connection");
            if conn.session == self.state {
                return Ok(());
            }
            let want = self.state.clone();
            match self.bring_to(&want).await? {
                true => return Ok(()),
                // A setting of another client that cannot be put back: not this one.
                false => {
                    self.lose_connection();
                }
            }
        }
        Err(ClientError::error(
            ErrorKind::Unavailable,
            "warpdrive could not find an origin connection it can bring to this session's settings",
        ))
    }

    /// Brings the connection the client holds to `want`; false when it cannot be (a
    /// setting another client left that cannot be put back).
    async fn bring_to(&mut self, want: &SessionState) -> Result<bool, ClientError> {
        let baseline = Arc::clone(&self.baseline);
        let conn = self.io.origin().expect("the client holds a connection");
        match setup::bring(conn, want, &baseline).await {
            Ok(brought) => Ok(brought),
            Err(StepFailed {
                step: Step::UseDatabase(database),
                error: ExchangeError::Refused { error, .. },
            }) if error.code == 1049 => {
                // The database went: as on a server, the session has none now.
                self.state.database = None;
                Err(ClientError::error(
                    ErrorKind::UnknownDatabase,
                    format!("Unknown database '{database}'"),
                ))
            }
            Err(StepFailed {
                error: ExchangeError::Refused { error, .. },
                ..
            }) => {
                self.lose_connection();
                Err(ClientError::error(
                    ErrorKind::Unavailable,
                    format!(
                        "warpdrive could not put this session's settings on an origin connection: {} (error {})",
                        String::from_utf8_lossy(&error.message),
                        error.code
                    ),
                ))
            }
            Err(StepFailed { error, .. }) => {
                self.lose_connection();
                Err(ClientError::origin_lost(error))
            }
        }
    }

    /// Gives up the connection (broken, or in a state this client cannot use).
    fn lose_connection(&mut self) -> bool {
        let pinned = self.io.lose_origin();
        self.registration.handle.set_origin_thread(None);
        self.statements.lose_connection();
        self.stay = 0;
        self.status = match self.state.variables.get("autocommit").map(String::as_str) {
            Some("OFF") => 0,
            _ => status::AUTOCOMMIT,
        };
        pinned
    }

    /// The client's statement `id` on its connection, prepared there if missing: under
    /// the database and parse settings the client prepared it with, which the connection
    /// takes on for the prepare when the client's differ now.
    pub(super) async fn prepared(
        &mut self,
        id: u32,
    ) -> Result<OriginStatement, Result<Bytes, ClientError>> {
        let Some(key) = self.statements.get_mut(id).map(|s| s.key.clone()) else {
            return Err(Err(unknown_statement(id, "mysqld_stmt_execute")));
        };
        if let Some(known) = self.conn().statements.get(&key) {
            return Ok(known);
        }
        // Not on this connection: only now the statement's text and context are needed.
        let Some(statement) = self.statements.get_mut(id).map(|s| s.clone()) else {
            return Err(Err(unknown_statement(id, "mysqld_stmt_execute")));
        };
        let context = state::with_parse_context(&self.state, &statement.context);
        let elsewhere = context != self.state;
        if elsewhere && !self.bring_to(&context).await.map_err(Err)? {
            return Err(Err(ClientError::error(
                ErrorKind::Unavailable,
                "warpdrive could not prepare the statement again under the settings it was prepared with",
            )));
        }
        let prepared = self.prepare_here(&statement.sql).await;
        if elsewhere {
            let own = self.state.clone();
            self.bring_to(&own).await.map_err(Err)?;
        }
        let origin = prepared?;
        self.remember(key, origin);
        Ok(origin)
    }

    /// Prepares `sql` on the connection as it stands.
    async fn prepare_here(
        &mut self,
        sql: &[u8],
    ) -> Result<OriginStatement, Result<Bytes, ClientError>> {
        match setup::prepare(self.conn(), sql).await {
            Ok(statement) => Ok(statement),
            Err(ExchangeError::Refused { error, .. }) => Err(Ok(error.encode().freeze())),
            Err(error) => {
                self.lose_connection();
                Err(Err(ClientError::origin_lost(error)))
            }
        }
    }

    /// Records a statement prepared on the connection.
    fn remember(&mut self, key: Bytes, statement: OriginStatement) {
        setup::remember(self.conn(), key, statement);
    }

    /// Sends a command on the connection the client holds (in its state) and waits for
    /// the reply.
    async fn send(&mut self, payload: &[u8], in_flight: InFlight) -> Result<(), SessionError> {
        let conn = self.conn();
        conn.set_busy();
        write_packet(&mut conn.link.conn.out, 0, payload);
        if let Err(error) = conn.link.conn.flush().await {
            self.in_flight = Some(in_flight);
            return self.origin_lost(ConnError::Io(error)).await;
        }
        self.io.arm_deadline();
        self.in_flight = Some(in_flight);
        Ok(())
    }

    /// The relay of a reply on the connection the client holds, to its command `seq`.
    fn relay(&mut self, expect: Expect, seq: u8) -> Relay {
        let origin_caps = self.conn().link.capabilities;
        Relay::new(expect, self.capabilities, origin_caps, seq, self.status)
    }
}
