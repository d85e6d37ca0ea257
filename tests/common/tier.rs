//! The upstream tier's test harness: key prefixes of one test, tiered deployments,
//! instances waited for until their tier is up, and Redis servers (one, TLS, a
//! cluster) a test starts and stops itself.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};
use warpdrive::cache::tier::{Consistency, TierSettings};
use warpdrive::config::Deployment;

use super::{Proxy, TestDatabase};

pub const REDIS: &str = "redis://127.0.0.1:6379/0";

/// The first column of the first row.
pub async fn read(client: &Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.expect("read");
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    })?
}

/// A key prefix of one test.
pub struct Prefix(pub String);

impl Prefix {
    pub fn new(tag: &str) -> Prefix {
        Prefix(format!("wdtest-{tag}-{:016x}", rand::random::<u64>()))
    }

    pub fn tier(&self, url: &str, consistency: Consistency) -> TierSettings {
        TierSettings {
            url: url.to_owned(),
            prefix: self.0.clone(),
            timeout: Duration::from_millis(20),
            consistency,
            single_flight: false,
            ca_file: None,
        }
    }

    /// Keys of entries stored under the prefix.
    pub async fn entries(&self) -> Vec<String> {
        let mut redis = redis_connection(REDIS).await;
        redis::cmd("KEYS")
            .arg(format!("{{{}:*:e:*", self.0))
            .query_async(&mut redis)
            .await
            .expect("KEYS")
    }

    pub async fn remove(self) {
        super::remove_redis_keys(&self.0).await;
    }
}

pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis is running on 127.0.0.1:6379")
}

pub fn tiered(db: &TestDatabase, tier: TierSettings) -> Deployment {
    let mut deployment = super::cached_deployment(&db.name, 3);
    deployment.cache.upstream = Some(tier);
    deployment
}

pub async fn table(tag: &str) -> TestDatabase {
    let db = TestDatabase::create(tag).await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')",
        )
        .await
        .expect("schema");
    db
}

pub fn l2(proxy: &Proxy) -> warpdrive::metrics::TierSnapshot {
    proxy.snapshot().l2.expect("the deployment has a tier")
}

pub async fn until_up(proxy: &Proxy) {
    super::eventually("the tier to connect", || l2(proxy).up).await;
}

/// An instance of `deployment`, its tier connected.
pub async fn instance(deployment: Deployment) -> Proxy {
    let proxy = Proxy::start(deployment).await;
    until_up(&proxy).await;
    proxy
}

/// Runs `sql` on the origin directly, not through warpdrive.
pub async fn on_origin(db: &TestDatabase, sql: &str) {
    db.direct()
        .await
        .batch_execute(sql)
        .await
        .expect("SQL on the origin");
}

/// Stops the instances, then removes the test's keys and database.
pub async fn finish(instances: Vec<Proxy>, prefix: Prefix, db: TestDatabase) {
    for instance in instances {
        instance.stop().await;
    }
    prefix.remove().await;
    db.drop_now().await;
}

/// Reads `sql` on `client` until it answers `want` (at most 2 s); the time it took.
pub async fn until_reads(client: &Client, sql: &str, want: &str) -> Duration {
    let started = Instant::now();
    while read(client, sql).await.as_deref() != Some(want) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{sql} never read {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

pub async fn purge(proxy: &Proxy, query: &str) -> warpdrive::admin::Purged {
    let admin = proxy.admin.expect("an admin listener").to_string();
    let body = warpdrive::admin::post(&admin, &format!("/purge?{query}"))
        .await
        .expect("POST /purge");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A Redis server of the test's own, on a free port, that it can stop and start.
pub struct OwnRedis {
    pub port: u16,
    /// Further arguments of redis-server (TLS).
    extra: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(|_| Vec::new())
    }

    /// With the arguments `extra` gives for the port.
    pub fn start_with(extra: impl FnOnce(u16) -> Vec<String>) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = OwnRedis {
            port,
            extra: extra(port),
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn resume(&mut self) {
        let port = self.port.to_string();
        let own_port = !self.extra.iter().any(|arg| arg == "--port");
        let child = std::process::Command::new("redis-server")
            .args(if own_port {
                vec!["--port", &port]
            } else {
                Vec::new()
            })
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is required on the PATH");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three primaries on loopback ports, made by the test.
pub struct OwnCluster {
    nodes: Vec<OwnRedis>,
    dir: std::path::PathBuf,
}

impl OwnCluster {
    pub async fn start() -> OwnCluster {
        let dir =
            std::env::temp_dir().join(format!("warpdrive-cluster-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let nodes: Vec<OwnRedis> = (0..3)
            .map(|_| {
                let dir = dir.display().to_string();
                OwnRedis::start_with(move |port| {
                    vec![
                        "--cluster-enabled".to_owned(),
                        "yes".to_owned(),
                        "--cluster-config-file".to_owned(),
                        format!("{dir}/nodes-{port}.conf"),
                        "--dir".to_owned(),
                        dir,
                    ]
                })
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is required on the PATH");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = OwnCluster { nodes, dir };
        for _ in 0..100 {
            let info = std::process::Command::new("redis-cli")
                .args(["-p", &cluster.nodes[0].port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the cluster did not become ready");
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
