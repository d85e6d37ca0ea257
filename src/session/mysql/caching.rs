//! The cache in a MySQL session: what a request's key is made of, how a hit is written,
//! and how a stale entry's request runs again in the background. Statuses, lookups,
//! single flight, lifetimes and storing are the composer's ([`crate::proxy`]), as for
//! PostgreSQL.
//!
//! The key's parts, after the scope (deployment, origin database, origin user):
//! 1. the request: a COM_QUERY's text, or a COM_STMT_EXECUTE's statement (its text with
//!    the database and parse settings it was prepared under, see
//!    [`super::state::statement_key`]) and its parameters (types, unsigned flags, null
//!    bitmap and values), never the statement id: two clients' ids for one statement
//!    share entries;
//! 2. the current database;
//! 3. every session variable the client holds that differs from a fresh connection's
//!    (sql_mode, time_zone, the character sets and collation, …);
//! 4. the capabilities that shape the packets: CLIENT_PROTOCOL_41, CLIENT_DEPRECATE_EOF
//!    and CLIENT_SESSION_TRACK.
//!
//! An entry holds the packet payloads the client was sent (see [`super::recorder`]). A
//! hit numbers them from the client's command on, in one write, with the status flags
//! of the client's session at that moment in its EOF and OK packets.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::Shared;
use super::recorder::{Recorder, columns_eof_at, unstorable};
use super::relay::Relay;
use super::setup::{self, StepFailed};
use super::state;
use crate::cache::{
    CacheKey, Entry, Generations, KeyBuilder, KeyScope, Recorded, Refetch, RefetchFuture,
};
use crate::conn::ConnError;
use crate::pool::mysql::{Baseline, ExchangeError, MysqlConn, MysqlPool, SessionState, txn_status};
use crate::proxy::{Composer, Record};
use crate::session::SessionContext;
use crate::wire::mysql::command::{code, with_statement_id};
use crate::wire::mysql::reply::status_offset;
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::{caps, status, write_packet};

/// The name of the write clock (and of the tier's generations) of MySQL origins: their
/// tables are named with their database, so one clock covers a server.
pub(super) const CLOCK: &str = "mysql";

/// The capabilities that change a result's packets.
const SHAPING_CAPS: u32 = caps::PROTOCOL_41 | caps::DEPRECATE_EOF | caps::SESSION_TRACK;

/// Status flags that describe the session rather than the result: on a hit they are
/// the client's own.
const SESSION_FLAGS: u16 = status::IN_TRANS | status::AUTOCOMMIT | status::IN_TRANS_READONLY;

mod tag {
    pub const TEXT: u8 = 1;
    pub const STATEMENT: u8 = 2;
    pub const PARAMETERS: u8 = 3;
    pub const DATABASE: u8 = 4;
    pub const VARIABLE: u8 = 5;
    pub const CAPABILITIES: u8 = 6;
}

/// A cacheable request.
#[derive(Clone)]
pub(super) enum Request {
    /// COM_QUERY.
    Text {
        /// Its text.
        sql: Bytes,
    },
    /// COM_STMT_EXECUTE.
    Binary {
        /// The statement's text.
        sql: Bytes,
        /// What it is on a connection ([`state::statement_key`]).
        statement: Bytes,
        /// The state it was prepared under.
        context: Arc<SessionState>,
        /// The execute, parameter types bound (its statement id is the client's: not part
        /// of the key, and replaced wherever it is sent).
        execute: Bytes,
    },
}

/// Query parameters never reach a log: only the request's shape is shown.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Text { sql } => f.debug_struct("Text").field("bytes", &sql.len()).finish(),
            Request::Binary { sql, execute, .. } => f
                .debug_struct("Binary")
                .field("bytes", &sql.len())
                .field("execute_bytes", &execute.len())
                .finish(),
        }
    }
}

impl Request {
    /// Its key, for a client in `state` with `capabilities`.
    pub(super) fn key(
        &self,
        scope: KeyScope<'_>,
        state: &SessionState,
        capabilities: u32,
    ) -> CacheKey {
        let mut key = KeyBuilder::new(scope);
        match self {
            Request::Text { sql } => key.part(tag::TEXT, sql),
            Request::Binary {
                statement, execute, ..
            } => key
                .part(tag::STATEMENT, statement)
                .part(tag::PARAMETERS, execute.get(5..).unwrap_or_default()),
        };
        // No database is "" (MySQL has no database of that name).
        let database = state.database.as_deref().unwrap_or_default();
        key.part(tag::DATABASE, database.as_bytes());
        for (name, value) in &state.variables {
            key.part(tag::VARIABLE, name.as_bytes())
                .part(tag::VARIABLE, value.as_bytes());
        }
        key.part(
            tag::CAPABILITIES,
            &(capabilities & SHAPING_CAPS).to_le_bytes(),
        );
        key.finish()
    }

    /// The database its unqualified names resolve in: the current one for a text, the
    /// one it was prepared in for a statement.
    pub(super) fn names_in<'a>(&'a self, state: &'a SessionState) -> Option<&'a str> {
        match self {
            Request::Text { .. } => state.database.as_deref(),
            Request::Binary { context, .. } => context.database.as_deref(),
        }
    }

    fn weight(&self) -> usize {
        match self {
            Request::Text { sql } => sql.len(),
            Request::Binary {
                statement, execute, ..
            } => statement.len() + execute.len(),
        }
    }
}

/// The deployment's cache, as a MySQL session sees it.
pub(super) fn composer<'a>(
    ctx: &'a SessionContext<Shared>,
    pool: &'a MysqlPool,
    generations: &'a Arc<Generations>,
) -> Composer<'a> {
    ctx.composer(CLOCK, generations, pool.settings().max_query_duration)
}

/// The flags a hit's EOF and OK packets carry: the stored result's, with the client's
/// session in place of the one the result was fetched in.
fn hit_status(stored: u16, session: u16) -> u16 {
    (stored & !SESSION_FLAGS) | (session & SESSION_FLAGS)
}

/// Writes the reply to the client's command `seq` answered from `entry`: its payloads
/// numbered from `seq + 1`, the status flags in its EOF and OK packets `session`'s.
pub(super) fn write_hit(
    out: &mut BytesMut,
    seq: u8,
    entry: &Entry,
    client_caps: u32,
    session: u16,
) -> usize {
    let starts = out.len();
    let columns_eof = columns_eof_at(&entry.segments, client_caps);
    let last = entry.segments.len().saturating_sub(1);
    let deprecates_eof = client_caps & caps::DEPRECATE_EOF != 0;
    let mut seq = seq.wrapping_add(1);
    for (index, segment) in entry.segments.iter().enumerate() {
        let status_at = if index == last {
            status_offset(segment, deprecates_eof)
        } else if Some(index) == columns_eof {
            status_offset(segment, false)
        } else {
            None
        };
        let payload_starts = out.len() + 4;
        seq = write_packet(out, seq, segment);
        if let Some(at) = status_at {
            let at = payload_starts + at;
            let stored = u16::from_le_bytes([out[at], out[at + 1]]);
            out[at..at + 2].copy_from_slice(&hit_status(stored, session).to_le_bytes());
        }
    }
    out.len() - starts
}

/// How to run an entry's request again, on a pooled connection in the state of the
/// client that stored it.
pub(super) struct MysqlRefetch {
    pub(super) pool: MysqlPool,
    pub(super) baseline: Arc<Baseline>,
    pub(super) state: SessionState,
    pub(super) client_caps: u32,
    pub(super) request: Request,
    pub(super) limit: usize,
}

impl fmt::Debug for MysqlRefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlRefetch")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// Why a background fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("no origin connection: {0}")]
    Pool(crate::pool::mysql::MysqlPoolError),
    #[error("the connection could not take the session's state")]
    State,
    #[error("{0}")]
    Origin(#[from] ExchangeError),
}

impl From<StepFailed> for FetchError {
    fn from(failed: StepFailed) -> FetchError {
        FetchError::Origin(failed.error)
    }
}

impl Refetch for MysqlRefetch {
    fn weight(&self) -> usize {
        self.request.weight()
    }

    fn fetch(&self) -> RefetchFuture<'_> {
        Box::pin(async move { Ok(self.run().await?) })
    }
}

impl MysqlRefetch {
    async fn run(&self) -> Result<Recorded, FetchError> {
        let mut checkout = self.pool.checkout().await.map_err(FetchError::Pool)?;
        let conn = checkout.conn();
        let command = match &self.request {
            Request::Text { sql } => {
                let mut command = BytesMut::with_capacity(1 + sql.len());
                command.put_u8(code::QUERY);
                command.put_slice(sql);
                command
            }
            Request::Binary {
                sql,
                statement,
                context,
                execute,
            } => {
                let id = self.prepared(conn, sql, statement, context).await?;
                with_statement_id(execute, id)
            }
        };
        if !setup::bring(conn, &self.state, &self.baseline).await? {
            return Err(FetchError::State);
        }
        conn.set_busy();
        write_packet(&mut conn.link.conn.out, 0, &command);
        conn.link
            .conn
            .flush()
            .await
            .map_err(|error| ExchangeError::Conn(error.into()))?;
        let recorded = self.record(conn).await?;
        conn.set_ready(txn_status(conn.link.status));
        Ok(recorded)
    }

    /// The statement's id on `conn`, prepared there under its context if missing.
    async fn prepared(
        &self,
        conn: &mut MysqlConn,
        sql: &[u8],
        statement: &Bytes,
        context: &SessionState,
    ) -> Result<u32, FetchError> {
        if let Some(known) = conn.statements.get(statement) {
            return Ok(known.id);
        }
        let context = state::with_parse_context(&self.state, context);
        if !setup::bring(conn, &context, &self.baseline).await? {
            return Err(FetchError::State);
        }
        let prepared = setup::prepare(conn, sql).await?;
        setup::remember(conn, statement.clone(), prepared);
        Ok(prepared.id)
    }

    /// Reads the reply as the client that stored the entry would get it.
    async fn record(&self, conn: &mut MysqlConn) -> Result<Recorded, ExchangeError> {
        let link = &mut conn.link;
        let mut relay = Relay::new(
            Expect::Results,
            self.client_caps,
            link.capabilities,
            0,
            link.status,
        );
        let mut recorder = Recorder::new(self.limit, self.client_caps);
        let mut written = BytesMut::new();
        let mut usable = true;
        while !relay.is_done() {
            let packet = link
                .conn
                .read_frame()
                .await?
                .ok_or(ConnError::TruncatedFrame)?;
            let part = relay.relay(&packet, &mut written)?;
            usable &= unstorable(&part).is_none();
            recorder.accept(&written);
            written.clear();
            if relay.awaits_infile() {
                write_packet(&mut link.conn.out, packet.next_seq(), &[]);
                link.conn.flush().await.map_err(ConnError::from)?;
            }
        }
        link.status = relay.status;
        let idle = txn_status(relay.status).is_idle();
        Ok(match usable && idle {
            true => recorder.finish(),
            false => Recorded::Unusable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::split_packet;

    fn entry(segments: &[&'static [u8]]) -> Entry {
        Entry {
            segments: segments.iter().map(|s| Bytes::from_static(s)).collect(),
            stored_at: Default::default(),
            max_age: Default::default(),
            stale_while_revalidate: Default::default(),
            tables: Arc::from([]),
            tables_unknown: false,
            validity: None,
            tier_stamp: None,
            refetch: Arc::new(NoRefetch),
        }
    }

    #[derive(Debug)]
    struct NoRefetch;

    impl Refetch for NoRefetch {
        fn weight(&self) -> usize {
            0
        }
        fn fetch(&self) -> RefetchFuture<'_> {
            Box::pin(async { Ok(Recorded::Unusable) })
        }
    }

    fn packets(mut out: BytesMut) -> Vec<(u8, Vec<u8>)> {
        let mut packets = Vec::new();
        while let Some(packet) = split_packet(&mut out, 1 << 20).expect("valid") {
            packets.push((packet.seq, packet.payload.to_vec()));
        }
        packets
    }

    #[test]
    fn a_hit_is_numbered_from_the_command_with_the_sessions_flags() {
        // Stored inside autocommit, with "no index used" (0x20) from the origin.
        let stored = entry(&[
            b"\x01",
            b"col",
            b"\xfe\0\0\x22\0",
            b"\x01a",
            b"\xfe\0\0\x22\0",
        ]);
        let mut out = BytesMut::new();
        write_hit(
            &mut out,
            3,
            &stored,
            caps::PROTOCOL_41,
            status::AUTOCOMMIT | status::IN_TRANS,
        );
        let sent = packets(out);
        let seqs: Vec<u8> = sent.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![4, 5, 6, 7, 8]);
        assert_eq!(sent[2].1, b"\xfe\0\0\x23\0");
        assert_eq!(sent[3].1, b"\x01a");
        assert_eq!(sent[4].1, b"\xfe\0\0\x23\0");
    }

    #[test]
    fn a_deprecate_eof_hit_patches_its_ok() {
        let stored = entry(&[b"\x01", b"col", b"\xfe\x00\x00\x02\x00\x00\x00"]);
        let mut out = BytesMut::new();
        write_hit(&mut out, 0, &stored, caps::DEPRECATE_EOF, 0);
        let sent = packets(out);
        assert_eq!(sent[2].1, b"\xfe\x00\x00\x00\x00\x00\x00");
    }

    #[test]
    fn the_key_holds_the_database_settings_caps_and_request() {
        let scope = KeyScope {
            deployment: "d",
            database: "",
            role: "app",
        };
        let text = |sql: &'static [u8]| Request::Text {
            sql: Bytes::from_static(sql),
        };
        let state = SessionState {
            database: Some("shop".into()),
            ..SessionState::default()
        };
        let base = text(b"SELECT 1").key(scope, &state, caps::DEPRECATE_EOF);
        assert_eq!(
            base,
            text(b"SELECT 1").key(scope, &state, caps::DEPRECATE_EOF | caps::SSL)
        );
        assert_ne!(
            base,
            text(b"SELECT 2").key(scope, &state, caps::DEPRECATE_EOF)
        );
        assert_ne!(base, text(b"SELECT 1").key(scope, &state, 0));
        let mut other = state.clone();
        other.database = None;
        assert_ne!(
            base,
            text(b"SELECT 1").key(scope, &other, caps::DEPRECATE_EOF)
        );
        let mut zoned = state.clone();
        zoned.variables.insert("time_zone".into(), "+01:00".into());
        assert_ne!(
            base,
            text(b"SELECT 1").key(scope, &zoned, caps::DEPRECATE_EOF)
        );
        let binary = |execute: &'static [u8]| Request::Binary {
            sql: Bytes::from_static(b"SELECT ?"),
            statement: Bytes::from_static(b"shop\0SELECT ?"),
            context: Arc::new(state.clone()),
            execute: Bytes::from_static(execute),
        };
        // The statement id (bytes 1..5) is not part of the key; the parameters are.
        let one = binary(b"\x17\0\0\0\0\0\x01\0\0\0\0\x01\x03\0\x01\0\0\0");
        assert_eq!(
            one.key(scope, &state, 0),
            binary(b"\x17\0\0\0\0\0\x01\0\0\0\0\x01\x03\0\x01\0\0\0").key(scope, &state, 0)
        );
        assert_ne!(
            one.key(scope, &state, 0),
            binary(b"\x17\0\0\0\0\0\x01\0\0\0\0\x01\x03\0\x02\0\0\0").key(scope, &state, 0)
        );
        assert_ne!(
            one.key(scope, &state, 0),
            binary(b"\x17\0\0\0\0\0\x01\0\0\0\0\x01\x03\x80\x01\0\0\0").key(scope, &state, 0)
        );
    }
}
