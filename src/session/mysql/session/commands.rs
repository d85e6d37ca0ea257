//! What each client command does.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{InFlight, Session, unknown_statement};
use crate::analyze::Status;
use crate::cache::{CacheStatus, Entry};
use crate::proxy::{Consulted, Flight};
use crate::session::SessionError;
use crate::session::driver::Flow;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::mysql::caching::Request;
use crate::session::mysql::handshake::{Proof, authenticate, new_scramble};
use crate::session::mysql::lexical::{self, Kill};
use crate::session::mysql::recorder::Recorder;
use crate::session::mysql::sessions::FIRST_ID;
use crate::session::mysql::state;
use crate::wire::mysql::command::{
    self, CURSOR_TYPE_READ_ONLY, ChangeUser, Execute, code, execute_binding, with_statement_id,
};
use crate::wire::mysql::reply::{EOF, EofPacket, OkPacket};
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::{Packet, caps, status, write_packet};

fn killed() -> ClientError {
    ClientError::fatal(ErrorKind::QueryCanceled, "Connection was killed")
}

impl Session {
    /// One command of the client.
    pub(super) async fn command(&mut self, packet: Packet) -> Result<Flow, SessionError> {
        let seq = packet.next_seq();
        if self.registration.handle.killed() {
            let error = killed();
            self.reply_error(seq, &error).await?;
            return Err(SessionError::Refused(error));
        }
        let Some(command) = packet.first() else {
            let error = ClientError::protocol_violation("an empty command packet");
            self.reply_error(seq, &error).await?;
            return Err(SessionError::Refused(error));
        };
        tracing::trace!(command, len = packet.payload.len(), "client command");
        match command {
            code::QUIT => return Ok(Flow::Stop),
            code::PING => self.reply_ok(seq).await?,
            code::QUERY => return self.query(packet).await,
            code::INIT_DB => self.init_db(packet).await?,
            code::STMT_PREPARE => self.prepare(packet).await?,
            code::STMT_EXECUTE => self.execute(packet).await?,
            code::STMT_FETCH => self.fetch(packet).await?,
            code::STMT_SEND_LONG_DATA => self.long_data(packet).await?,
            code::STMT_CLOSE => self.close(&packet),
            code::STMT_RESET => self.reset_statement(packet).await?,
            code::SET_OPTION => self.set_option(&packet).await?,
            code::RESET_CONNECTION => {
                self.forget_session();
                self.reply_ok(seq).await?;
            }
            code::CHANGE_USER => return self.change_user(packet).await,
            code::FIELD_LIST => self.forward(packet, Expect::Rows, |_| {}).await?,
            code::STATISTICS => self.forward(packet, Expect::Text, |_| {}).await?,
            code::PROCESS_KILL => {
                let mut id = packet.payload.slice(1..);
                if id.len() < 4 {
                    let error = ClientError::protocol_violation("COM_PROCESS_KILL without an id");
                    self.reply_error(seq, &error).await?;
                    return Err(SessionError::Refused(error));
                }
                let kill = Kill {
                    query_only: false,
                    id: id.get_u32_le().into(),
                };
                return self.kill(packet, kill).await;
            }
            other => {
                let error = ClientError::error(
                    ErrorKind::NotSupported,
                    format!("warpdrive does not relay command 0x{other:02x}"),
                )
                .hint("replication and administrative commands go to the origin directly");
                self.reply_error(seq, &error).await?;
            }
        }
        self.maybe_release();
        Ok(Flow::Continue)
    }

    /// Sends `packet` as is on a connection in the client's state; `setup` describes
    /// the reply.
    async fn forward(
        &mut self,
        packet: Packet,
        expect: Expect,
        setup: impl FnOnce(&mut InFlight),
    ) -> Result<(), SessionError> {
        if let Err(error) = self.ready().await {
            return self.reply_error(packet.next_seq(), &error).await;
        }
        let mut in_flight = InFlight::new(self.relay(expect, packet.seq));
        setup(&mut in_flight);
        self.send(&packet.payload, in_flight).await
    }

    async fn query(&mut self, packet: Packet) -> Result<Flow, SessionError> {
        let started = Instant::now();
        let sql = packet.payload.slice(1..);
        let effects = lexical::effects(&sql);
        if let Some(kill) = effects.kill
            && (kill.id >= u64::from(FIRST_ID))
        {
            return self.kill(packet, kill).await;
        }
        let analysis = self.analysis_of(&sql);
        let query_bytes = packet.payload.len();
        let flight = match self
            .consulting()
            .consult(&analysis, Request::Text { sql }, query_bytes, started)
            .await
        {
            Consulted::Hit(entry) => {
                self.serve_hit(packet.seq, &entry, query_bytes, started)
                    .await?;
                return Ok(Flow::Continue);
            }
            Consulted::Forward(flight) => flight,
        };
        self.forward(packet, Expect::Results, |in_flight| {
            in_flight.statement = true;
            in_flight.explained = effects.only_settings;
            in_flight.pins = effects.pins.map(str::to_owned);
            in_flight.unlocks = effects.unlocks;
            in_flight.keeps_for_next = effects.keeps_for_next;
            in_flight.analysis = Some(analysis);
            in_flight.flight = Some(flight);
        })
        .await?;
        Ok(Flow::Continue)
    }

    async fn init_db(&mut self, packet: Packet) -> Result<(), SessionError> {
        let database = String::from_utf8_lossy(&packet.payload[1..]).into_owned();
        if !self.ctx.deployment.allows_database(&database) {
            let error = ClientError::error(
                ErrorKind::UnknownDatabase,
                format!("Access denied to database '{database}'"),
            )
            .hint("this deployment's databases setting does not list it");
            return self.reply_error(packet.next_seq(), &error).await;
        }
        self.forward(packet, Expect::Ok, |in_flight| {
            in_flight.explained = true;
            in_flight.init_db = Some(database);
        })
        .await
    }

    async fn prepare(&mut self, packet: Packet) -> Result<(), SessionError> {
        let sql = packet.payload.slice(1..);
        let key = state::statement_key(&sql, &self.state, &self.baseline);
        let analysis = self.analysis_of(&sql);
        let id = self
            .statements
            .add(sql, analysis, key, Arc::new(self.state.clone()));
        self.forward(packet, Expect::Prepare, |in_flight| {
            in_flight.prepares = Some(id);
            in_flight.relay.set_statement_id(id);
        })
        .await
    }

    async fn execute(&mut self, packet: Packet) -> Result<(), SessionError> {
        let started = Instant::now();
        let seq = packet.next_seq();
        let Some(id) = self.known_statement(&packet, "mysqld_stmt_execute").await? else {
            return Ok(());
        };
        let Some(statement) = self.statements.get_mut(id) else {
            return Ok(());
        };
        let execute = match Execute::decode(&packet.payload, statement.params) {
            Ok(execute) => execute,
            Err(error) => return self.malformed(seq, error).await,
        };
        if let Some(types) = &execute.param_types {
            statement.param_types = Some(types.clone());
        }
        statement.cursor_open = false;
        let (params, bound) = (statement.params, statement.param_types.clone());
        let mut payload = packet.payload.clone();
        if execute.param_types.is_none()
            && params > 0
            && let Some(types) = bound
        {
            match execute_binding(&payload, params, &types) {
                Ok(rebound) => payload = rebound.freeze(),
                Err(error) => return self.malformed(seq, error).await,
            }
        }
        let cursor = execute.flags & CURSOR_TYPE_READ_ONLY != 0;
        let flight = match self.consult_execute(id, cursor, &payload, started).await {
            Ok(flight) => flight,
            Err(entry) => {
                let query_bytes = packet.payload.len();
                return self
                    .serve_hit(packet.seq, &entry, query_bytes, started)
                    .await;
            }
        };
        if let Err(error) = self.ready().await {
            return self.reply_error(seq, &error).await;
        }
        let origin = match self.prepared(id).await {
            Ok(origin) => origin,
            Err(Ok(refusal)) => return self.send_to_client(seq, &refusal).await,
            Err(Err(error)) => return self.reply_error(seq, &error).await,
        };
        let payload = with_statement_id(&payload, origin.id);
        let (analysis, names_in) = match self.statements.get_mut(id) {
            Some(statement) => {
                statement.long_data = false;
                let names_in = statement.context.database.clone();
                (Some(Arc::clone(&statement.analysis)), names_in)
            }
            None => (None, None),
        };
        let mut in_flight = InFlight::new(self.relay(Expect::Results, packet.seq));
        // A plain read changes nothing in the session: what the origin reports after it
        // is MariaDB switching to the statement's database and back.
        in_flight.explained = analysis
            .as_ref()
            .is_some_and(|analysis| analysis.status == Status::Cacheable);
        in_flight.statement = true;
        in_flight.executes = Some((id, cursor));
        in_flight.analysis = analysis;
        in_flight.flight = Some(flight);
        in_flight.names_in = names_in;
        self.send(&payload, in_flight).await
    }

    /// The cache's word on an execute of the client's statement `id` with `payload`
    /// (its parameter types bound): an entry to answer with, or how it is forwarded.
    /// One that opens a cursor or sent long data is forwarded, not cached.
    async fn consult_execute(
        &mut self,
        id: u32,
        cursor: bool,
        payload: &Bytes,
        started: Instant,
    ) -> Result<Box<Flight<Recorder>>, Arc<Entry>> {
        let Some(statement) = self.statements.get_mut(id).map(|s| s.clone()) else {
            return Ok(Box::new(Flight::forwarded(
                CacheStatus::Uncacheable,
                payload.len(),
                started,
            )));
        };
        if cursor || statement.long_data {
            return Ok(self.forwarded(&statement.analysis, payload.len(), started));
        }
        let request = Request::Binary {
            sql: statement.sql,
            statement: statement.key,
            context: statement.context,
            execute: payload.clone(),
        };
        match self
            .consulting()
            .consult(&statement.analysis, request, payload.len(), started)
            .await
        {
            Consulted::Hit(entry) => Err(entry),
            Consulted::Forward(flight) => Ok(flight),
        }
    }

    async fn fetch(&mut self, packet: Packet) -> Result<(), SessionError> {
        let seq = packet.next_seq();
        let id = match command::statement_id(&packet.payload) {
            Ok(id) => id,
            Err(error) => return self.malformed(seq, error).await,
        };
        let Some(key) = self
            .statements
            .get_mut(id)
            .filter(|statement| statement.cursor_open)
            .map(|statement| statement.key.clone())
        else {
            return self
                .reply_error(seq, &unknown_statement(id, "mysqld_stmt_fetch"))
                .await;
        };
        let Some(origin) = self.io.origin().and_then(|conn| conn.statements.get(&key)) else {
            return self
                .reply_error(seq, &unknown_statement(id, "mysqld_stmt_fetch"))
                .await;
        };
        let payload = with_statement_id(&packet.payload, origin.id);
        let mut in_flight = InFlight::new(self.relay(Expect::Rows, packet.seq));
        in_flight.fetches = Some(id);
        self.send(&payload, in_flight).await
    }

    /// COM_STMT_SEND_LONG_DATA has no reply: an error shows at the execute.
    async fn long_data(&mut self, packet: Packet) -> Result<(), SessionError> {
        let Ok(id) = command::statement_id(&packet.payload) else {
            return Ok(());
        };
        if self.statements.get_mut(id).is_none() || self.ready().await.is_err() {
            return Ok(());
        }
        let Ok(origin) = self.prepared(id).await else {
            return Ok(());
        };
        if let Some(statement) = self.statements.get_mut(id) {
            statement.long_data = true;
        }
        let conn = self.conn();
        write_packet(
            &mut conn.link.conn.out,
            0,
            &with_statement_id(&packet.payload, origin.id),
        );
        if let Err(error) = conn.link.conn.flush().await {
            self.lose_connection();
            tracing::info!(%error, "the origin connection failed during long data");
        }
        Ok(())
    }

    /// COM_STMT_CLOSE has no reply; the origin's statement stays for the next client,
    /// unless a cursor or long data is open on it.
    fn close(&mut self, packet: &Packet) {
        let Ok(id) = command::statement_id(&packet.payload) else {
            return;
        };
        let Some(statement) = self.statements.remove(id) else {
            return;
        };
        if (statement.cursor_open || statement.long_data)
            && let Some(conn) = self.io.origin()
            && let Some(origin) = conn.statements.get(&statement.key)
        {
            conn.statements.remove(&statement.key);
            write_packet(
                &mut conn.link.conn.out,
                0,
                &with_statement_id(&packet.payload, origin.id),
            );
        }
    }

    async fn reset_statement(&mut self, packet: Packet) -> Result<(), SessionError> {
        let seq = packet.next_seq();
        let Some(id) = self.known_statement(&packet, "mysqld_stmt_reset").await? else {
            return Ok(());
        };
        let Some(statement) = self.statements.get_mut(id) else {
            return Ok(());
        };
        let pending = statement.cursor_open || statement.long_data;
        statement.cursor_open = false;
        statement.long_data = false;
        let key = statement.key.clone();
        // Nothing of it lives on a connection: there is nothing to reset.
        let origin = self.io.origin().and_then(|conn| conn.statements.get(&key));
        match origin {
            Some(origin) if pending => {
                let payload = with_statement_id(&packet.payload, origin.id);
                let in_flight = InFlight::new(self.relay(Expect::Ok, packet.seq));
                self.send(&payload, in_flight).await
            }
            _ => self.reply_ok(seq).await,
        }
    }

    async fn set_option(&mut self, packet: &Packet) -> Result<(), SessionError> {
        let seq = packet.next_seq();
        let on = match packet.payload.get(1..3) {
            Some([0, 0]) => true,
            Some([1, 0]) => false,
            _ => {
                let error = ClientError::error(
                    ErrorKind::NotSupported,
                    "COM_SET_OPTION with an unknown option",
                );
                return self.reply_error(seq, &error).await;
            }
        };
        self.state.multi_statements = on;
        // As a server answers it: EOF, or the OK that replaces it.
        if self.capabilities & caps::DEPRECATE_EOF != 0 {
            let ok = OkPacket {
                header: EOF,
                status: self.status,
                ..OkPacket::default()
            };
            let payload = ok.encode(self.capabilities);
            self.send_to_client(seq, &payload).await
        } else {
            let eof = EofPacket {
                warnings: 0,
                status: self.status,
            };
            self.send_to_client(seq, &eof.encode()).await
        }
    }

    /// The client's session is new again: its statements and settings go, its
    /// connection (which may hold more) is not reused.
    fn forget_session(&mut self) {
        if self.io.holds() {
            if let Some(conn) = self.io.origin() {
                conn.keep_from_others();
            }
            self.io.unpin();
            if self.status & status::IN_TRANS != 0 {
                // Its transaction ends with it, as on a server.
                let _ = self.lose_connection();
            }
        }
        self.io.release();
        self.registration.handle.set_origin_thread(None);
        self.statements.clear();
        self.state = self.initial.clone();
        self.stay = 0;
        self.status = status::AUTOCOMMIT;
    }

    /// COM_CHANGE_USER: the client proves it is the other user (over a fresh
    /// scramble), then starts over as it, in the database it names.
    async fn change_user(&mut self, packet: Packet) -> Result<Flow, SessionError> {
        let change = match ChangeUser::decode(packet.payload.clone(), self.capabilities) {
            Ok(change) => change,
            Err(error) => {
                self.malformed(packet.next_seq(), error).await?;
                return Ok(Flow::Stop);
            }
        };
        let user = String::from_utf8_lossy(&change.user).into_owned();
        let scramble = new_scramble();
        let proof = Proof {
            user: &user,
            plugin: None,
            answer: change.auth_response.clone(),
            scramble: &scramble,
        };
        let ctx = std::sync::Arc::clone(&self.ctx);
        let seq = match authenticate(&mut self.io.client, &ctx, packet.next_seq(), proof).await? {
            Ok(seq) => seq,
            Err((seq, error)) => {
                // As on a server, a failed change of user ends the connection.
                self.reply_error(seq, &error).await?;
                return Err(SessionError::Refused(error));
            }
        };
        self.forget_session();
        let database = change
            .database
            .map(|db| String::from_utf8_lossy(&db).into_owned())
            .or_else(|| {
                Some(self.ctx.deployment.origin.database.clone()).filter(|db| !db.is_empty())
            });
        let collation = change.collation.map_or(self.collation, |c| c as u8);
        let multi_statements = self.initial.multi_statements;
        self.state = state::initial(
            &self.baseline,
            collation,
            database.clone(),
            multi_statements,
        );
        self.initial = self.state.clone();
        if let Some(database) = &database
            && (!self.ctx.deployment.allows_database(database) || self.ready().await.is_err())
        {
            let error = ClientError::fatal(
                ErrorKind::UnknownDatabase,
                format!("Unknown database '{database}'"),
            );
            self.reply_error(seq, &error).await?;
            return Err(SessionError::Refused(error));
        }
        self.maybe_release();
        tracing::debug!(%user, "client changed user");
        self.reply_ok(seq).await?;
        Ok(Flow::Continue)
    }

    /// KILL of one of warpdrive's connection ids: reaches the origin thread serving it.
    async fn kill(&mut self, packet: Packet, kill: Kill) -> Result<Flow, SessionError> {
        let seq = packet.next_seq();
        if kill.id == u64::from(self.registration.id) {
            if kill.query_only {
                self.reply_ok(seq).await?;
                return Ok(Flow::Continue);
            }
            let error = killed();
            self.reply_error(seq, &error).await?;
            return Err(SessionError::Refused(error));
        }
        let Some(handle) = self.ctx.protocol.sessions.get(kill.id) else {
            if kill.id < u64::from(FIRST_ID) {
                // An origin thread, from SHOW PROCESSLIST: the origin decides.
                self.forward(packet, Expect::Results, |in_flight| {
                    in_flight.statement = true
                })
                .await?;
                return Ok(Flow::Continue);
            }
            let error = ClientError::error(
                ErrorKind::UnknownConnection,
                format!("Unknown thread id: {}", kill.id),
            );
            self.reply_error(seq, &error).await?;
            return Ok(Flow::Continue);
        };
        if !kill.query_only {
            handle.kill();
        }
        if let Some(thread) = handle.origin_thread() {
            let target = std::sync::Arc::clone(&self.io.pool.target().target);
            if let Err(error) = crate::pool::mysql::kill(&target, thread, kill.query_only).await {
                tracing::warn!(%error, "KILL at the origin failed");
            }
        }
        self.reply_ok(seq).await?;
        Ok(Flow::Continue)
    }

    /// The client's statement a COM_STMT_* packet names; `None` once the client was
    /// told it names none.
    async fn known_statement(
        &mut self,
        packet: &Packet,
        command: &str,
    ) -> Result<Option<u32>, SessionError> {
        let seq = packet.next_seq();
        let id = match command::statement_id(&packet.payload) {
            Ok(id) => id,
            Err(error) => {
                self.malformed(seq, error).await?;
                return Ok(None);
            }
        };
        if self.statements.get_mut(id).is_none() {
            self.reply_error(seq, &unknown_statement(id, command))
                .await?;
            return Ok(None);
        }
        Ok(Some(id))
    }

    async fn malformed(
        &mut self,
        seq: u8,
        error: crate::wire::mysql::WireError,
    ) -> Result<(), SessionError> {
        let error = ClientError::protocol_violation(error);
        self.reply_error(seq, &error).await?;
        Err(SessionError::Refused(error))
    }
}
