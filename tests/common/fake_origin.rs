//! A scripted PostgreSQL origin on loopback, for session and proxy tests without a
//! database: it speaks startup, simple queries and the extended protocol as PostgreSQL
//! does (skipping to Sync after an error, tracking the transaction status), answers
//! every read with one row, and does what the test's script says for the rest: fail,
//! hang until cancelled, or drop the connection. It logs what it saw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use warpdrive::wire::pg::backend::TransactionStatus;
use warpdrive::wire::pg::frontend::FrontendMessage;
use warpdrive::wire::pg::startup::{StartupPacket, split_startup};
use warpdrive::wire::pg::{encode, split_frame};

/// What the origin does with a statement.
#[derive(Clone, Debug)]
pub enum Act {
    /// One row with this value, then CommandComplete.
    Row(String),
    /// The same, once the test says so.
    RowWhen(Arc<Notify>, String),
    /// An ERROR with this SQLSTATE.
    Fail(&'static str),
    /// Nothing, until a CancelRequest for the connection arrives: then 57014.
    Hang,
    /// The connection drops without a word.
    Drop,
}

/// What the origin saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A connection opened (its number).
    Connected(usize),
    /// A simple query's text, on a connection.
    Query(usize, String),
    /// An Execute of a statement's text, on a connection.
    Execute(usize, String),
    /// A CancelRequest for a connection.
    Cancel(usize),
}

type Script = Arc<dyn Fn(&str) -> Act + Send + Sync>;

/// The running origin.
pub struct FakeOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Cancels(Mutex<HashMap<usize, Arc<Notify>>>);

impl Cancels {
    fn of(&self, connection: usize) -> Arc<Notify> {
        let mut cancels = self.0.lock().expect("cancels");
        Arc::clone(cancels.entry(connection).or_default())
    }
}

impl FakeOrigin {
    /// Starts an origin whose statements do what `script` says of their text.
    pub async fn start(script: impl Fn(&str) -> Act + Send + Sync + 'static) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let cancels = Arc::new(Cancels::default());
                for number in 0.. {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let connection = Connection {
                        number,
                        stream,
                        buf: BytesMut::new(),
                        out: BytesMut::new(),
                        status: TransactionStatus::Idle,
                        statements: HashMap::new(),
                        portals: HashMap::new(),
                        script: Arc::clone(&script),
                        seen: Arc::clone(&seen),
                        cancels: Arc::clone(&cancels),
                    };
                    tokio::spawn(connection.serve());
                }
            }
        });
        FakeOrigin { addr, seen, task }
    }

    /// An origin that answers every statement with one row.
    pub async fn answering() -> FakeOrigin {
        FakeOrigin::start(|_| Act::Row("1".to_owned())).await
    }

    /// What it saw so far, without warpdrive's own queries (settings, catalog reads).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    /// The texts of the queries and executes it saw, in order.
    pub fn statements(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Query(_, text) | Seen::Execute(_, text) => Some(text),
                _ => None,
            })
            .collect()
    }

    /// A deployment in front of it: trust authentication, no cache, `max_size`
    /// connections.
    pub fn deployment(&self, max_size: usize) -> warpdrive::config::Deployment {
        let origin = warpdrive::config::OriginUrl::parse(&format!(
            "postgres://postgres:fake@127.0.0.1:{}/fake?sslmode=disable",
            self.addr.port()
        ))
        .expect("origin URL");
        let mut deployment = warpdrive::config::Deployment::from_origin(
            "127.0.0.1:0".parse().expect("addr"),
            origin,
        );
        deployment.client_auth = warpdrive::config::ClientAuth::Trust;
        deployment.pool = super::small_pool(max_size);
        deployment.cache.enabled = false;
        deployment
    }
}

struct Connection {
    number: usize,
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    status: TransactionStatus,
    statements: HashMap<Vec<u8>, String>,
    portals: HashMap<Vec<u8>, String>,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    cancels: Arc<Cancels>,
}

/// What serving one message led to.
enum Next {
    Go,
    /// An error: skip to Sync.
    Skip,
    Stop,
}

impl Connection {
    async fn serve(mut self) {
        let Some(packet) = self.startup().await else {
            return;
        };
        match packet {
            StartupPacket::Cancel(cancel) => {
                let target = (cancel.process_id - 1000) as usize;
                self.note(Seen::Cancel(target));
                self.cancels.of(target).notify_one();
                return;
            }
            StartupPacket::Startup(_) => {}
            _ => return,
        }
        self.note(Seen::Connected(self.number));
        encode::authentication_ok(&mut self.out);
        for (name, value) in [
            ("server_version", "15.0 (fake)"),
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "on"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
        ] {
            encode::parameter_status(&mut self.out, name, value);
        }
        encode::backend_key_data(&mut self.out, 1000 + self.number as i32, &[0, 0, 0, 7]);
        encode::ready_for_query(&mut self.out, TransactionStatus::Idle);
        let mut skipping = false;
        loop {
            if self.flush().await.is_err() {
                return;
            }
            let Some(message) = self.next_message().await else {
                return;
            };
            let next = match message {
                FrontendMessage::Sync(_) => {
                    skipping = false;
                    encode::ready_for_query(&mut self.out, self.status);
                    Next::Go
                }
                _ if skipping => Next::Go,
                FrontendMessage::Query(query) => {
                    // As PostgreSQL: a simple query destroys the unnamed statement and
                    // portal.
                    self.statements.remove(&b""[..]);
                    self.portals.remove(&b""[..]);
                    let sql = String::from_utf8_lossy(&query.sql).into_owned();
                    // A simple query ends with ReadyForQuery, error or not.
                    match self
                        .run(&sql, Seen::Query(self.number, sql.clone()), true)
                        .await
                    {
                        Next::Stop => Next::Stop,
                        _ => {
                            encode::ready_for_query(&mut self.out, self.status);
                            Next::Go
                        }
                    }
                }
                FrontendMessage::Parse(parse) => {
                    let sql = String::from_utf8_lossy(&parse.sql).into_owned();
                    self.statements.insert(parse.name.to_vec(), sql);
                    encode::parse_complete(&mut self.out);
                    Next::Go
                }
                FrontendMessage::Bind(bind) => match self.statements.get(&bind.statement[..]) {
                    Some(sql) => {
                        self.portals.insert(bind.portal.to_vec(), sql.clone());
                        encode::bind_complete(&mut self.out);
                        Next::Go
                    }
                    None => {
                        self.error("26000", "prepared statement does not exist");
                        Next::Skip
                    }
                },
                FrontendMessage::Describe(_) => {
                    self.row_description();
                    Next::Go
                }
                FrontendMessage::Execute(execute) => {
                    let sql = self
                        .portals
                        .get(&execute.portal[..])
                        .cloned()
                        .unwrap_or_default();
                    self.run(&sql, Seen::Execute(self.number, sql.clone()), false)
                        .await
                }
                FrontendMessage::Close(_) => {
                    encode::close_complete(&mut self.out);
                    Next::Go
                }
                FrontendMessage::Terminate(_) => Next::Stop,
                _ => Next::Go,
            };
            match next {
                Next::Go => {}
                Next::Skip => skipping = true,
                Next::Stop => return,
            }
        }
    }

    fn note(&self, seen: Seen) {
        self.seen.lock().expect("log").push(seen);
    }

    /// Runs one statement: warpdrive's own first, then what the script says. Rows are
    /// described first for a simple query (`simple`), not for an Execute.
    async fn run(&mut self, sql: &str, seen: Seen, simple: bool) -> Next {
        if let Some(value) = set_config_value(sql) {
            self.row_description();
            self.data_row(&value);
            encode::command_complete(&mut self.out, "SELECT 1");
            return Next::Go;
        }
        if sql.starts_with("SET LOCAL statement_timeout = 0;") {
            // warpdrive reading the catalog: this origin has one plain table, `public.t`,
            // and no other user object.
            encode::command_complete(&mut self.out, "SET");
            encode::command_complete(&mut self.out, "SELECT 0");
            self.row(&[
                Some("16400"),
                Some("public"),
                Some("t"),
                Some("r"),
                None,
                None,
                Some("f"),
                None,
                None,
            ]);
            encode::command_complete(&mut self.out, "SELECT 1");
            return Next::Go;
        }
        let words = sql.trim().to_ascii_uppercase();
        if words.starts_with("SET ") || words.starts_with("RESET ") || words == ";" {
            encode::command_complete(&mut self.out, "SET");
            return Next::Go;
        }
        if words.starts_with("ROLLBACK") {
            self.note(seen);
            self.status = TransactionStatus::Idle;
            encode::command_complete(&mut self.out, "ROLLBACK");
            return Next::Go;
        }
        self.note(seen);
        if words.starts_with("BEGIN") {
            self.status = TransactionStatus::InTransaction;
            encode::command_complete(&mut self.out, "BEGIN");
            return Next::Go;
        }
        if words.starts_with("COMMIT") {
            self.status = TransactionStatus::Idle;
            encode::command_complete(&mut self.out, "COMMIT");
            return Next::Go;
        }
        match (self.script)(sql) {
            Act::Row(value) => {
                if simple {
                    self.row_description();
                }
                self.data_row(&value);
                encode::command_complete(&mut self.out, "SELECT 1");
                Next::Go
            }
            Act::RowWhen(go, value) => {
                let _ = self.flush().await;
                go.notified().await;
                if simple {
                    self.row_description();
                }
                self.data_row(&value);
                encode::command_complete(&mut self.out, "SELECT 1");
                Next::Go
            }
            Act::Fail(code) => {
                self.error(code, "the script says this fails");
                Next::Skip
            }
            Act::Hang => {
                let _ = self.flush().await;
                self.cancels.of(self.number).notified().await;
                self.error("57014", "canceling statement due to user request");
                Next::Skip
            }
            Act::Drop => Next::Stop,
        }
    }

    fn error(&mut self, code: &str, message: &str) {
        encode::error_response(&mut self.out, "ERROR", code, message, None);
        if self.status == TransactionStatus::InTransaction {
            self.status = TransactionStatus::Failed;
        }
    }

    fn row_description(&mut self) {
        encode::message(&mut self.out, b'T', |body| {
            body.put_i16(1);
            body.put_slice(b"value\0");
            body.put_i32(0);
            body.put_i16(0);
            body.put_u32(25);
            body.put_i16(-1);
            body.put_i32(-1);
            body.put_i16(0);
        });
    }

    /// A DataRow of these columns (`None`: NULL).
    fn row(&mut self, columns: &[Option<&str>]) {
        encode::message(&mut self.out, b'D', |body| {
            body.put_i16(columns.len() as i16);
            for column in columns {
                match column {
                    Some(value) => {
                        body.put_i32(value.len() as i32);
                        body.put_slice(value.as_bytes());
                    }
                    None => body.put_i32(-1),
                }
            }
        });
    }

    fn data_row(&mut self, value: &str) {
        encode::message(&mut self.out, b'D', |body| {
            body.put_i16(1);
            body.put_i32(value.len() as i32);
            body.put_slice(value.as_bytes());
        });
    }

    async fn startup(&mut self) -> Option<StartupPacket> {
        loop {
            if let Some(packet) = split_startup(&mut self.buf).ok()? {
                return Some(packet);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn next_message(&mut self) -> Option<FrontendMessage> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf, 1 << 30).ok()? {
                return FrontendMessage::decode(frame).ok();
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }
}

/// The value `SELECT pg_catalog.set_config('name', 'value', false)` sets.
fn set_config_value(sql: &str) -> Option<String> {
    if !sql.contains("set_config(") {
        return None;
    }
    sql.split('\'').nth(3).map(str::to_owned)
}
