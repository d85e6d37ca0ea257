//! The MySQL side of the harness: a database of the test's own on the MariaDB at
//! 127.0.0.1:3306 (root, no password), deployments in front of it, and mysql_async
//! clients through warpdrive.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use warpdrive::config::{ClientUser, Deployment, OriginUrl, PoolSettings};

use super::{PASSWORD, Proxy};

/// The origin's user, as the machine provides it.
pub const MYSQL_USER: &str = "root";

/// Options for a direct connection to the origin.
pub fn direct_opts(database: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some(MYSQL_USER))
        .db_name(database)
        .prefer_socket(false)
        .into()
}

/// A database created for one test, dropped at its end (or, when the test panics, on
/// drop, with the mariadb client).
pub struct MysqlDatabase {
    pub name: String,
    dropped: bool,
}

impl MysqlDatabase {
    pub async fn create(tag: &str) -> MysqlDatabase {
        let name = format!(
            "wd_{tag}_{}_{}",
            std::process::id(),
            super::COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut admin = Conn::new(direct_opts(None))
            .await
            .expect("the local MariaDB on 127.0.0.1:3306 is reachable");
        admin
            .query_drop(format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.disconnect().await;
        MysqlDatabase {
            name,
            dropped: false,
        }
    }

    /// A direct connection to the database.
    pub async fn direct(&self) -> Conn {
        Conn::new(direct_opts(Some(&self.name)))
            .await
            .expect("direct connection")
    }

    /// Runs `sql` on the origin directly, not through warpdrive.
    pub async fn run(&self, sql: &str) {
        let mut direct = self.direct().await;
        direct.query_drop(sql).await.expect("SQL on the origin");
        direct.disconnect().await.expect("disconnect");
    }

    pub async fn drop_now(mut self) {
        let mut admin = Conn::new(direct_opts(None))
            .await
            .expect("admin connection");
        admin
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.name))
            .await
            .expect("drop test database");
        let _ = admin.disconnect().await;
        self.dropped = true;
    }
}

impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let _ = std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", "3306", "-u", MYSQL_USER, "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A deployment in front of the origin's `database`; clients log in as root with
/// PASSWORD (caching_sha2_password unless told otherwise).
pub fn mysql_deployment(database: &str, pool: PoolSettings) -> Deployment {
    let origin = OriginUrl::parse(&format!(
        "mysql://{MYSQL_USER}@127.0.0.1:3306/{database}?ssl-mode=DISABLED"
    ))
    .expect("origin URL");
    let mut deployment = Deployment::from_origin("127.0.0.1:0".parse().expect("addr"), origin);
    deployment.pool = pool;
    deployment.cache.enabled = false;
    deployment.users = vec![ClientUser {
        name: MYSQL_USER.to_owned(),
        password: PASSWORD.to_owned(),
    }];
    deployment
}

/// A deployment in front of `db` with the cache on.
pub fn cached_mysql_deployment(db: &MysqlDatabase, max_size: usize) -> Deployment {
    let mut deployment = mysql_deployment(&db.name, super::small_pool(max_size));
    deployment.cache.enabled = true;
    deployment
}

impl Proxy {
    /// Options for a client of the (first) deployment, as root with PASSWORD.
    pub fn mysql_opts(&self, database: Option<&str>) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.addr.port())
            .user(Some(MYSQL_USER))
            .pass(Some(PASSWORD))
            .db_name(database)
            .prefer_socket(false)
    }

    /// A mysql_async connection through warpdrive.
    pub async fn mysql(&self, database: &str) -> Conn {
        Conn::new(self.mysql_opts(Some(database)))
            .await
            .expect("connect through warpdrive")
    }
}

/// A MySQL client that speaks packet by packet, for what drivers never send.
pub struct RawMysql<S = tokio::net::TcpStream> {
    pub stream: S,
    pub buffer: bytes::BytesMut,
    /// The capabilities it asked for.
    pub capabilities: u32,
}

impl<'a> RawMysql<&'a mut tokio::net::TcpStream> {
    /// A raw client over a stream of the test's own, before any packet.
    pub fn from_stream(stream: &'a mut tokio::net::TcpStream) -> Self {
        RawMysql {
            stream,
            buffer: bytes::BytesMut::new(),
            capabilities: 0,
        }
    }
}

impl RawMysql {
    /// Connects and logs in as root with mysql_native_password and PASSWORD (or any
    /// password, under trust), asking for `capabilities` besides the basics.
    pub async fn login(
        addr: std::net::SocketAddr,
        database: Option<&str>,
        capabilities: u32,
    ) -> RawMysql {
        use warpdrive::wire::mysql::caps;
        use warpdrive::wire::mysql::handshake::{Greeting, HandshakeResponse};
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = RawMysql {
            stream,
            buffer: bytes::BytesMut::new(),
            capabilities: 0,
        };
        let greeting = Greeting::decode(raw.read().await.payload).expect("greeting");
        let mut wanted =
            caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH | capabilities;
        if database.is_some() {
            wanted |= caps::CONNECT_WITH_DB;
        }
        raw.capabilities = wanted;
        let response = HandshakeResponse {
            capabilities: wanted,
            max_packet: 1 << 24,
            collation: 45,
            user: bytes::Bytes::from_static(MYSQL_USER.as_bytes()),
            auth_response: warpdrive::auth::mysql::native_response(
                PASSWORD.as_bytes(),
                &greeting.scramble,
            )
            .into(),
            database: database.map(|db| bytes::Bytes::from(db.to_owned())),
            auth_plugin: Some(bytes::Bytes::from_static(warpdrive::auth::mysql::NATIVE)),
            attributes: None,
        };
        raw.write(1, &response.encode()).await;
        loop {
            let packet = raw.read().await;
            match packet.first() {
                Some(0x00) => return raw,
                Some(0xFE) => {
                    let switch =
                        warpdrive::wire::mysql::handshake::AuthSwitch::decode(packet.payload)
                            .expect("auth switch");
                    let answer = warpdrive::auth::mysql::response(
                        &switch.plugin,
                        PASSWORD.as_bytes(),
                        &switch.data,
                    )
                    .expect("a plugin warpdrive speaks");
                    raw.write(packet.seq + 1, &answer).await;
                }
                Some(0x01) => {}
                _ => panic!("login refused: {:?}", packet.payload),
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawMysql<S> {
    /// Writes one packet.
    pub async fn write(&mut self, seq: u8, payload: &[u8]) {
        let mut out = bytes::BytesMut::new();
        warpdrive::wire::mysql::write_packet(&mut out, seq, payload);
        self.write_raw(&out).await;
    }

    /// Writes bytes as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one packet (panics at the end of the stream).
    pub async fn read(&mut self) -> warpdrive::wire::mysql::Packet {
        self.try_read().await.expect("a packet")
    }

    /// Reads one packet; `None` once the server closed the connection.
    pub async fn try_read(&mut self) -> Option<warpdrive::wire::mysql::Packet> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(packet) = warpdrive::wire::mysql::split_packet(&mut self.buffer, 1 << 30)
                .expect("valid packet")
            {
                return Some(packet);
            }
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read_buf(&mut self.buffer),
            )
            .await
            .expect("the server answers");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Sends a command and reads its whole reply.
    pub async fn reply(
        &mut self,
        payload: &[u8],
        expect: warpdrive::wire::mysql::response::Expect,
    ) -> Vec<warpdrive::wire::mysql::Packet> {
        self.write(0, payload).await;
        let mut response =
            warpdrive::wire::mysql::response::Response::new(expect, self.capabilities);
        let mut packets = Vec::new();
        while !response.is_done() {
            let packet = self.read().await;
            response.feed(&packet).expect("a valid reply");
            packets.push(packet);
        }
        packets
    }

    /// Sends a command and reads the reply's first packet.
    pub async fn command(&mut self, payload: &[u8]) -> warpdrive::wire::mysql::Packet {
        self.write(0, payload).await;
        self.read().await
    }
}
