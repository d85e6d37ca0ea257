//! Shared harness for integration tests: a warpdrive server in the test process, in
//! front of the PostgreSQL on 127.0.0.1:5432, and a database of the test's own.
#![allow(dead_code)]

pub mod fake_origin;
pub mod mysql;
pub mod tier;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};
use warpdrive::config::{Config, Deployment, OriginUrl, PoolSettings};
use warpdrive::server::Server;

/// The origin's superuser, as the machine provides it (trust authentication).
pub const ORIGIN_USER: &str = "postgres";
/// The password clients use towards warpdrive in tests.
pub const PASSWORD: &str = "warpdrive-test";

/// Waits, polling, until `check` holds (at most 5 s); panics naming `what` otherwise.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A database created for one test, dropped (with FORCE) at the end: by
/// [`TestDatabase::drop_now`], or, when a test panics before that, on drop.
pub struct TestDatabase {
    pub name: String,
    dropped: bool,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // No runtime to await on here (a panic may be unwinding): psql, synchronously.
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                ORIGIN_USER,
                "-d",
                "postgres",
                "-qc",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .env("PGSSLMODE", "disable")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn admin() -> Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user={ORIGIN_USER} dbname=postgres"),
        NoTls,
    )
    .await
    .expect("the local PostgreSQL on 127.0.0.1:5432 is reachable");
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    pub async fn create(tag: &str) -> TestDatabase {
        let name = format!(
            "wd_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin().await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop leftover test database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDatabase {
            name,
            dropped: false,
        }
    }

    /// A direct connection to the origin database, bypassing warpdrive.
    pub async fn direct(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port=5432 user={ORIGIN_USER} dbname={}",
                self.name
            ),
            NoTls,
        )
        .await
        .expect("direct connection");
        tokio::spawn(connection);
        client
    }

    pub async fn drop_now(mut self) {
        admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop test database");
        self.dropped = true;
    }
}

/// A warpdrive server running inside the test.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener's address, when started with one.
    pub admin: Option<SocketAddr>,
    /// Every deployment's address, in configuration order.
    pub addrs: Vec<SocketAddr>,
    pub registry: warpdrive::metrics::Registry,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn deployment(database: &str, pool: PoolSettings) -> Deployment {
    deployment_as(database, ORIGIN_USER, pool)
}

/// A deployment whose origin user (and client user) is `user` (trust authentication at
/// the origin, PASSWORD towards warpdrive).
pub fn deployment_as(database: &str, user: &str, pool: PoolSettings) -> Deployment {
    let origin = OriginUrl::parse(&format!(
        "postgres://{user}:{PASSWORD}@127.0.0.1:5432/{database}?sslmode=disable"
    ))
    .expect("origin URL");
    let mut deployment = Deployment::from_origin("127.0.0.1:0".parse().expect("addr"), origin);
    deployment.pool = pool;
    // The proxy tests check what the origin holds right now; the cache tests turn it on.
    deployment.cache.enabled = false;
    deployment
}

/// Clients log in to `deployment` as the origin user with `password`.
pub fn client_password(deployment: &mut Deployment, password: &str) {
    deployment.users = vec![warpdrive::config::ClientUser {
        name: ORIGIN_USER.to_owned(),
        password: password.to_owned(),
    }];
}

/// Pool settings small enough for many tests in parallel on one origin.
pub fn small_pool(max_size: usize) -> PoolSettings {
    PoolSettings {
        min_idle: 0,
        max_size,
        acquire_timeout: Duration::from_secs(10),
        ..PoolSettings::default()
    }
}

impl Proxy {
    pub async fn start(deployment: Deployment) -> Proxy {
        Proxy::start_with_clock(deployment, warpdrive::clock::Clock::system()).await
    }

    pub async fn start_with_clock(deployment: Deployment, clock: warpdrive::clock::Clock) -> Proxy {
        Proxy::start_config(
            Config {
                deployments: vec![deployment],
                admin: None,
                rules: None,
            },
            clock,
        )
        .await
    }

    /// With a rules file of the test's own merged over the built-in rules.
    pub async fn start_with_rules(deployment: Deployment, rules: std::path::PathBuf) -> Proxy {
        Proxy::start_config(
            Config {
                deployments: vec![deployment],
                admin: None,
                rules: Some(rules),
            },
            warpdrive::clock::Clock::system(),
        )
        .await
    }

    async fn start_config(config: Config, clock: warpdrive::clock::Clock) -> Proxy {
        let server = Server::bind_with_clock(config, clock)
            .await
            .expect("warpdrive binds")
            .with_drain_timeout(Duration::from_secs(2));
        let addrs = server.local_addrs();
        let addr = addrs[0];
        let admin = server.admin_addr();
        let registry = server.registry();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin,
            addrs,
            registry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// With an admin listener on a free loopback port.
    pub async fn start_with_admin(deployment: Deployment) -> Proxy {
        Proxy::start_config(
            Config {
                deployments: vec![deployment],
                admin: "127.0.0.1:0".parse().ok(),
                rules: None,
            },
            warpdrive::clock::Clock::system(),
        )
        .await
    }

    /// Several deployments in one process.
    pub async fn start_deployments(deployments: Vec<Deployment>) -> Proxy {
        Proxy::start_config(
            Config {
                deployments,
                admin: None,
                rules: None,
            },
            warpdrive::clock::Clock::system(),
        )
        .await
    }

    pub async fn for_database(database: &TestDatabase, max_size: usize) -> Proxy {
        Proxy::start(deployment(&database.name, small_pool(max_size))).await
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={ORIGIN_USER} password={PASSWORD} dbname={database}",
            self.addr.port()
        )
    }

    pub async fn connect(&self, database: &str) -> Client {
        self.connect_as(database, ORIGIN_USER).await
    }

    /// A client of the deployment at `index` (see [`Proxy::start_deployments`]).
    pub async fn connect_at(&self, index: usize, database: &str) -> Client {
        let url = self.url(database).replace(
            &format!("port={}", self.addr.port()),
            &format!("port={}", self.addrs[index].port()),
        );
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect through warpdrive");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub async fn connect_as(&self, database: &str, user: &str) -> Client {
        let url = format!(
            "host=127.0.0.1 port={} user={user} password={PASSWORD} dbname={database}",
            self.addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect through warpdrive");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub async fn connect_checked(&self, database: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url(database), NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Queries counted with `status` so far.
    pub fn count(&self, status: &str) -> u64 {
        let snapshot = &self.registry.snapshots()[0];
        snapshot
            .statuses
            .iter()
            .find(|s| s.status.name() == status)
            .map(|s| s.queries)
            .unwrap_or(0)
    }

    pub fn snapshot(&self) -> warpdrive::metrics::DeploymentSnapshot {
        self.registry.snapshots().remove(0)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }
}

/// Number of client backends connected to `database`.
pub async fn origin_connections(database: &str) -> i64 {
    admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            &[&database],
        )
        .await
        .expect("count backends")
        .get(0)
}

/// Waits until a query whose text matches `pattern` (LIKE) is running in `database`
/// (at most 5 s).
pub async fn until_running(database: &str, pattern: &str) {
    let admin = admin().await;
    for _ in 0..250 {
        let running: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE $2",
                &[&database, &pattern],
            )
            .await
            .expect("count running queries")
            .get(0);
        if running > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no query like {pattern:?} started in {database}");
}

/// Waits until `database` has `count` client backends (at most 5 s).
pub async fn until_backends(database: &str, count: i64) {
    for _ in 0..250 {
        if origin_connections(database).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{database} never had {count} backends");
}

/// A bare protocol client for tests that need exact messages (trust authentication).
pub struct RawClient {
    pub stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl RawClient {
    /// Connects and completes startup (the deployment must use trust authentication).
    pub async fn connect(addr: SocketAddr, database: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut client = RawClient {
            stream,
            buf: bytes::BytesMut::new(),
        };
        let mut startup = bytes::BytesMut::new();
        warpdrive::wire::pg::encode::startup_message(
            &mut startup,
            &[("user", ORIGIN_USER), ("database", database)],
        );
        client
            .stream
            .write_all(&startup)
            .await
            .expect("send startup");
        let greeting = client.until_ready().await;
        assert_eq!(
            greeting.first().map(|(tag, _)| *tag),
            Some(b'R'),
            "{greeting:?}"
        );
        client
    }

    /// Wraps a connected stream without doing startup.
    pub fn from_stream(stream: tokio::net::TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: bytes::BytesMut::new(),
        }
    }

    pub async fn send(&mut self, write: impl FnOnce(&mut bytes::BytesMut)) {
        use tokio::io::AsyncWriteExt;
        let mut buf = bytes::BytesMut::new();
        write(&mut buf);
        self.stream.write_all(&buf).await.expect("send");
    }

    /// The next message (tag, body).
    pub async fn read_message(&mut self) -> (u8, bytes::Bytes) {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) =
                warpdrive::wire::pg::split_frame(&mut self.buf, 1 << 30).expect("valid frame")
            {
                return (frame.tag(), frame.body());
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("reply within 10s")
                    .expect("read");
            assert!(n > 0, "connection closed");
        }
    }

    /// Messages (tag, body) up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<(u8, bytes::Bytes)> {
        let mut messages = Vec::new();
        loop {
            let message = self.read_message().await;
            let ready = message.0 == b'Z';
            messages.push(message);
            if ready {
                return messages;
            }
        }
    }

    /// The tags of the messages up to ReadyForQuery, as a string.
    pub async fn tags(&mut self) -> String {
        self.until_ready()
            .await
            .iter()
            .map(|(tag, _)| char::from(*tag))
            .collect()
    }
}

/// Bind of `statement` to the unnamed portal, then its Execute without a row limit.
pub fn bind_execute(m: &mut bytes::BytesMut, statement: &[u8]) {
    warpdrive::wire::pg::encode::bind(m, b"", statement, &[], &[], &[]);
    warpdrive::wire::pg::encode::execute(m, b"", 0);
}

/// Parse of `sql` as `statement`, then [`bind_execute`] of it.
pub fn parse_bind_execute(m: &mut bytes::BytesMut, statement: &[u8], sql: &[u8]) {
    warpdrive::wire::pg::encode::parse(m, statement, sql, &[]);
    bind_execute(m, statement);
}

/// A deployment with the cache on.
pub fn cached_deployment(database: &str, max_size: usize) -> Deployment {
    let mut deployment = deployment(database, small_pool(max_size));
    deployment.cache.enabled = true;
    deployment
}

/// A deployment with trust authentication, for raw protocol tests.
pub fn trust_deployment(database: &str, max_size: usize) -> Deployment {
    let mut deployment = deployment(database, small_pool(max_size));
    deployment.client_auth = warpdrive::config::ClientAuth::Trust;
    deployment
}

/// Runs a program; whether it succeeded, and its stdout and stderr together.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} is required on the PATH: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs psql with `-c` commands against warpdrive on `port`.
pub async fn psql(port: u16, database: &str, commands: &[&str], sslmode: &str) -> (bool, String) {
    let port = port.to_string();
    let mut args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        database,
        "-X",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for command in commands {
        args.push("-c".to_owned());
        args.push(command.to_string());
    }
    let sslmode = sslmode.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(
            "psql",
            &args,
            &[("PGPASSWORD", PASSWORD), ("PGSSLMODE", &sslmode)],
        )
    })
    .await
    .expect("psql runs")
}

/// The first column of every row a simple query returns, as text (None for NULL).
pub async fn first_column(client: &Client, sql: &str) -> Vec<Option<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}

/// The first column of the last row a simple query returns.
pub async fn last_value(client: &Client, sql: &str) -> Option<String> {
    first_column(client, sql)
        .await
        .pop()
        .unwrap_or_else(|| panic!("{sql} returned no row"))
}

/// A table `t2` in `public` and in schema `s2`, each holding the name of its schema.
pub const TWO_SCHEMAS: &str = "CREATE SCHEMA s2;
    CREATE TABLE public.t2 (v text); INSERT INTO public.t2 VALUES ('public');
    CREATE TABLE s2.t2 (v text); INSERT INTO s2.t2 VALUES ('s2');";

/// A login role and a role it may become, for one test; dropped by [`Roles::drop_now`].
pub struct Roles {
    pub app: String,
    pub other: String,
}

impl Roles {
    pub async fn create(db: &TestDatabase) -> Roles {
        let roles = Roles {
            app: format!("{}_app", db.name),
            other: format!("{}_other", db.name),
        };
        let admin = admin().await;
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {app}; DROP ROLE IF EXISTS {other};
                 CREATE ROLE {app} LOGIN; CREATE ROLE {other}; GRANT {other} TO {app};",
                app = roles.app,
                other = roles.other
            ))
            .await
            .expect("roles");
        roles
    }

    pub async fn drop_now(self) {
        admin()
            .await
            .batch_execute(&format!("DROP ROLE {}; DROP ROLE {}", self.app, self.other))
            .await
            .expect("drop roles");
    }
}

/// A cache rule that turns caching off for queries reading `table`.
pub fn caching_off_for(table: &str) -> warpdrive::config::CacheRule {
    warpdrive::config::CacheRule {
        tables: vec![table.to_owned()],
        fingerprint: None,
        enabled: Some(false),
        max_age: None,
        stale_while_revalidate: None,
    }
}

/// Removes every key of the Redis on 127.0.0.1:6379 under the tier prefix `prefix`.
pub async fn remove_redis_keys(prefix: &str) {
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis is running on 127.0.0.1:6379");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut redis)
            .await
            .expect("DEL");
    }
}

/// The first column of the first row of a simple query's answer.
pub fn row_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}
