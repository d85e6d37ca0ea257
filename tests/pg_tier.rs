//! The upstream tier against the real PostgreSQL and the Redis on 127.0.0.1:6379 (and
//! Redis servers the tests start themselves): instances sharing Redis share results,
//! learn of each other's writes, and keep working, correct, while Redis is away. Each
//! test uses its own database and key prefix, and removes its keys.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, TestDatabase};
use tokio_postgres::{Client, SimpleQueryMessage};
use warpdrive::cache::tier::{Consistency, TierSettings};
use warpdrive::config::Deployment;

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// The first column of the first row.
async fn read(client: &Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.expect("read");
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    })?
}

/// A key prefix of one test.
struct Prefix(String);

impl Prefix {
    fn new(tag: &str) -> Prefix {
        Prefix(format!("wdtest-{tag}-{:016x}", rand::random::<u64>()))
    }

    fn tier(&self, url: &str, consistency: Consistency) -> TierSettings {
        TierSettings {
            url: url.to_owned(),
            prefix: self.0.clone(),
            timeout: Duration::from_millis(20),
            consistency,
            ca_file: None,
        }
    }

    /// Keys of entries stored under the prefix.
    async fn entries(&self) -> Vec<String> {
        let mut redis = redis_connection(REDIS).await;
        redis::cmd("KEYS")
            .arg(format!("{{{}:*:e:*", self.0))
            .query_async(&mut redis)
            .await
            .expect("KEYS")
    }

    async fn remove(self) {
        common::remove_redis_keys(&self.0).await;
    }
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis is running on 127.0.0.1:6379")
}

fn tiered(db: &TestDatabase, tier: TierSettings) -> Deployment {
    let mut deployment = common::cached_deployment(&db.name, 3);
    deployment.cache.upstream = Some(tier);
    deployment
}

async fn table(tag: &str) -> TestDatabase {
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

fn l2(proxy: &Proxy) -> warpdrive::metrics::TierSnapshot {
    proxy.snapshot().l2.expect("the deployment has a tier")
}

async fn until_up(proxy: &Proxy) {
    common::eventually("the tier to connect", || l2(proxy).up).await;
}

/// An instance of `deployment`, its tier connected.
async fn instance(deployment: Deployment) -> Proxy {
    let proxy = Proxy::start(deployment).await;
    until_up(&proxy).await;
    proxy
}

/// Stops the instances, then removes the test's keys and database.
async fn finish(instances: Vec<Proxy>, prefix: Prefix, db: TestDatabase) {
    for instance in instances {
        instance.stop().await;
    }
    prefix.remove().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_instance_is_an_l2_hit_on_another_that_keeps_its_age() {
    let db = table("tierhit").await;
    let prefix = Prefix::new("hit");
    let mut deployment = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    deployment.cache.max_age = Duration::from_secs(3);
    deployment.cache.stale_while_revalidate = Duration::from_secs(30);
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let on_a = a.connect(&db.name).await;
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("one"));
    let started = Instant::now();
    for _ in 0..100 {
        if !prefix.entries().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        prefix.entries().await.len(),
        1,
        "A stored its result in Redis"
    );
    // Changed behind warpdrive's back: only a cached answer is still "one".
    db.direct()
        .await
        .batch_execute("UPDATE t SET v = 'behind' WHERE id = 1")
        .await
        .expect("update");
    let on_b = b.connect(&db.name).await;
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!((b.count("hit"), b.count("miss")), (1, 0));
    assert_eq!(l2(&b).hits, 1);
    // B keeps A's age: stale at A's max_age, not three seconds after B's read.
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(started.elapsed()) + Duration::from_millis(300),
    )
    .await;
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!(b.snapshot().stale_served, 1, "served stale at A's max_age");
    assert_eq!((l2(&b).connects, l2(&b).invalidations_resubscribe), (1, 0));
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}

/// Reads `sql` on `client` until it answers `want` (at most 2 s); the time it took.
async fn until_reads(client: &Client, sql: &str, want: &str) -> Duration {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_reaches_the_other_at_once() {
    let db = table("tierwrite").await;
    let prefix = Prefix::new("write");
    let deployment = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    for value in ["two", "three", "four"] {
        assert_ne!(read(&on_b, sql).await.as_deref(), Some(value));
        assert!(read(&on_b, sql).await.is_some());
        on_a.batch_execute(&format!("UPDATE t SET v = '{value}' WHERE id = 1"))
            .await
            .expect("update");
        let took = until_reads(&on_b, sql, value).await;
        assert!(
            took < Duration::from_millis(200),
            "B read the write after {took:?}"
        );
    }
    assert!(
        b.count("hit") >= 3,
        "B served its reads from its cache in between"
    );
    assert!(l2(&b).invalidations_remote >= 3);
    assert_eq!(
        l2(&b).invalidations_resubscribe,
        0,
        "B heard the writes, not a reconnect"
    );
    assert!(l2(&b).propagation_count >= 3);
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}

/// A write whose notice B never hears (the generation moved in Redis by hand) still
/// reaches B's reads in strict consistency, never in fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_consistency_checks_redis_on_every_hit() {
    let db = table("tierstrict").await;
    let prefix = Prefix::new("strict");
    let strict = instance(tiered(&db, prefix.tier(REDIS, Consistency::Strict))).await;
    let fast = instance(tiered(&db, prefix.tier(REDIS, Consistency::Fast))).await;
    let (on_strict, on_fast) = (strict.connect(&db.name).await, fast.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_strict, sql).await.as_deref(), Some("one"));
    assert_eq!(read(&on_fast, sql).await.as_deref(), Some("one"));
    assert_eq!(read(&on_strict, sql).await.as_deref(), Some("one"));
    assert_eq!(read(&on_fast, sql).await.as_deref(), Some("one"));
    let hits = (strict.count("hit"), fast.count("hit"));
    assert!(hits.0 >= 1 && hits.1 >= 1, "{hits:?}");
    db.direct()
        .await
        .batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update");
    let mut redis = redis_connection(REDIS).await;
    let _: i64 = redis::cmd("INCR")
        .arg(format!("{{{}:{}}}:1:g:t", prefix.0, db.name))
        .query_async(&mut redis)
        .await
        .expect("INCR");
    assert_eq!(read(&on_strict, sql).await.as_deref(), Some("two"));
    assert_eq!(read(&on_fast, sql).await.as_deref(), Some("one"));
    drop((on_strict, on_fast));
    finish(vec![strict, fast], prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_costs_a_query_at_most_its_timeout() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let db = table("tiersilent").await;
    let prefix = Prefix::new("silent");
    let proxy = Proxy::start(tiered(
        &db,
        prefix.tier(&format!("redis://127.0.0.1:{port}/0"), Consistency::Fast),
    ))
    .await;
    let client = proxy.connect(&db.name).await;
    for round in 0..20 {
        let started = Instant::now();
        assert_eq!(
            read(
                &client,
                &format!("SELECT v || '{round}' FROM t WHERE id = 1")
            )
            .await
            .as_deref(),
            Some(format!("one{round}").as_str())
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "round {round} took {:?}",
            started.elapsed()
        );
        // The local cache still serves.
        let started = Instant::now();
        read(
            &client,
            &format!("SELECT v || '{round}' FROM t WHERE id = 1"),
        )
        .await;
        assert!(started.elapsed() < Duration::from_millis(200));
    }
    assert_eq!(proxy.count("hit"), 20);
    let tier = l2(&proxy);
    assert!(!tier.up);
    assert!(tier.skipped + tier.timeouts >= 20, "{tier:?}");
    // Writes still invalidate on this instance.
    client
        .batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update");
    assert_eq!(
        read(&client, "SELECT v || '0' FROM t WHERE id = 1")
            .await
            .as_deref(),
        Some("two0")
    );
    drop(client);
    proxy.stop().await;
    held.abort();
    db.drop_now().await;
}

/// A Redis server of the test's own, on a free port, that it can stop and start.
struct OwnRedis {
    port: u16,
    /// Further arguments of redis-server (TLS).
    extra: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        OwnRedis::start_with(|_| Vec::new())
    }

    /// With the arguments `extra` gives for the port.
    fn start_with(extra: impl FnOnce(u16) -> Vec<String>) -> OwnRedis {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn resume(&mut self) {
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

    fn stop(&mut self) {
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

/// Redis goes away and comes back (empty: it keeps nothing on disk) while two instances
/// read and write: queries go on, and no read afterwards is older than a write made
/// while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_redis_was_away_are_not_served_stale_after_it_returns() {
    let mut redis = OwnRedis::start();
    let db = table("tierback").await;
    let prefix = Prefix::new("back");
    let deployment = tiered(&db, prefix.tier(&redis.url(), Consistency::Fast));
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    redis.stop();
    common::eventually("both instances to see Redis gone", || {
        !l2(&a).up && !l2(&b).up
    })
    .await;
    assert!(l2(&b).invalidations_resubscribe >= 1);
    on_a.batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update while away");
    // B dropped what it held when it lost Redis, so it reads the write.
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("two"));
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("two"));
    redis.resume();
    common::eventually("both instances to reconnect", || l2(&a).up && l2(&b).up).await;
    on_a.batch_execute("UPDATE t SET v = 'three' WHERE id = 1")
        .await
        .expect("update after");
    until_reads(&on_b, sql, "three").await;
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("three"));
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

async fn purge(proxy: &Proxy, query: &str) -> warpdrive::admin::Purged {
    let admin = proxy.admin.expect("an admin listener").to_string();
    let body = warpdrive::admin::post(&admin, &format!("/purge?{query}"))
        .await
        .expect("POST /purge");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A purge through one instance drops the entries of the other too, and those in
/// Redis: by table, then everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_reaches_every_instance_and_redis() {
    let db = table("tierpurge").await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE u (v text); INSERT INTO u VALUES ('u1')")
        .await
        .expect("schema");
    let prefix = Prefix::new("purge");
    let deployment = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    let a = Proxy::start_with_admin(deployment.clone()).await;
    let b = Proxy::start(deployment).await;
    until_up(&a).await;
    until_up(&b).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let (of_t, of_u) = ("SELECT v FROM t WHERE id = 1", "SELECT v FROM u");
    for client in [&on_a, &on_b] {
        assert_eq!(read(client, of_t).await.as_deref(), Some("one"));
        assert_eq!(read(client, of_u).await.as_deref(), Some("u1"));
    }
    db.direct()
        .await
        .batch_execute("UPDATE t SET v = 'two'; UPDATE u SET v = 'u2'")
        .await
        .expect("behind warpdrive's back");
    assert_eq!(read(&on_b, of_t).await.as_deref(), Some("one"), "cached");
    let purged = purge(&a, "table=t").await;
    assert_eq!(purged.dropped, 1, "{purged:?}");
    assert_eq!(purged.deployments[0].shared, Some(true));
    common::eventually("B to hear the purge", || l2(&b).invalidations_purge >= 1).await;
    for client in [&on_a, &on_b] {
        assert_eq!(read(client, of_t).await.as_deref(), Some("two"));
        assert_eq!(
            read(client, of_u).await.as_deref(),
            Some("u1"),
            "u was not purged"
        );
    }
    // A third instance, which held nothing, finds nothing old in Redis either.
    let c = instance(tiered(&db, prefix.tier(REDIS, Consistency::Fast))).await;
    let on_c = c.connect(&db.name).await;
    assert_eq!(read(&on_c, of_t).await.as_deref(), Some("two"));
    let purged = purge(&a, "all=true").await;
    assert_eq!(purged.deployments[0].shared, Some(true));
    common::eventually("B and C to hear it", || {
        l2(&b).invalidations_purge >= 2 && l2(&c).invalidations_purge >= 1
    })
    .await;
    for client in [&on_a, &on_b, &on_c] {
        assert_eq!(read(client, of_u).await.as_deref(), Some("u2"));
    }
    drop((on_a, on_b, on_c));
    finish(vec![a, b, c], prefix, db).await;
}

/// `rediss://` with the server's CA given by `upstream_ca`: the tier connects over TLS
/// and instances share entries through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_speaks_tls_with_its_own_ca() {
    let dir = std::env::temp_dir().join(format!("warpdrive-rediss-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let tls = {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        OwnRedis::start_with(move |port| {
            vec![
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port.to_string(),
                "--tls-cert-file".to_owned(),
                cert.clone(),
                "--tls-key-file".to_owned(),
                key,
                "--tls-ca-cert-file".to_owned(),
                cert,
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ]
        })
    };
    let db = table("tiertls").await;
    let prefix = Prefix::new("tls");
    let mut tier = prefix.tier(
        &format!("rediss://127.0.0.1:{}/0", tls.port),
        Consistency::Fast,
    );
    tier.ca_file = Some(cert.clone());
    let a = instance(tiered(&db, tier.clone())).await;
    let b = instance(tiered(&db, tier)).await;
    let sql = "SELECT v FROM t WHERE id = 1";
    let on_a = a.connect(&db.name).await;
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("one"));
    common::eventually("A to store its result in Redis", || {
        l2(&a).bytes_written > 0
    })
    .await;
    let on_b = b.connect(&db.name).await;
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!((l2(&b).hits, b.count("miss")), (1, 0));
    // Without the CA, the server's certificate is refused: the tier stays down.
    let untrusted = Proxy::start(tiered(
        &db,
        prefix.tier(
            &format!("rediss://127.0.0.1:{}/0", tls.port),
            Consistency::Fast,
        ),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!l2(&untrusted).up);
    let on_untrusted = untrusted.connect(&db.name).await;
    assert_eq!(
        read(&on_untrusted, sql).await.as_deref(),
        Some("one"),
        "queries go on without it"
    );
    drop((on_a, on_b, on_untrusted));
    a.stop().await;
    b.stop().await;
    untrusted.stop().await;
    drop(tls);
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_now().await;
}

/// A Redis Cluster of three primaries on loopback ports, made by the test.
struct OwnCluster {
    nodes: Vec<OwnRedis>,
    dir: std::path::PathBuf,
}

impl OwnCluster {
    async fn start() -> OwnCluster {
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

    fn url(&self) -> String {
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

/// On a three-node Redis Cluster: an L2 hit on the second instance, a write on one seen
/// by the other, strict hits checked, and a purge that reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_and_its_invalidations_work_on_a_redis_cluster() {
    let cluster = OwnCluster::start().await;
    let db = table("tiercluster").await;
    let prefix = Prefix::new("cluster");
    let a =
        Proxy::start_with_admin(tiered(&db, prefix.tier(&cluster.url(), Consistency::Fast))).await;
    let b = Proxy::start(tiered(
        &db,
        prefix.tier(&cluster.url(), Consistency::Strict),
    ))
    .await;
    until_up(&a).await;
    until_up(&b).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("one"));
    common::eventually("A to store its result in Redis", || {
        l2(&a).bytes_written > 0
    })
    .await;
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!((l2(&b).hits, b.count("miss")), (1, 0), "{:?}", l2(&b));
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("one"));
    on_b.batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update");
    until_reads(&on_a, sql, "two").await;
    assert!(l2(&a).invalidations_remote >= 1);
    // Strict B: a hit after a write through A is fresh at once.
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("two"));
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("two"));
    on_a.batch_execute("UPDATE t SET v = 'three' WHERE id = 1")
        .await
        .expect("update");
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("three"));
    // A purge through A, of a change behind warpdrive's back, reaches B.
    db.direct()
        .await
        .batch_execute("UPDATE t SET v = 'four' WHERE id = 1")
        .await
        .expect("behind");
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("three"), "cached");
    let purged = purge(&a, "table=t").await;
    assert_eq!(purged.deployments[0].shared, Some(true), "{purged:?}");
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("four"));
    assert_eq!((l2(&a).errors, l2(&b).errors), (0, 0));
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
    drop(cluster);
    db.drop_now().await;
}

/// A result of several megabytes (more than a lookup reads in its first round trip, and
/// more than moves in the 20 ms read timeout) is shared too, and costs the link nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_is_shared_through_redis() {
    let db = table("tierlarge").await;
    let prefix = Prefix::new("large");
    let deployment = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT repeat(v, 1000000) FROM t WHERE id = 1";
    let expected = "one".repeat(1_000_000);
    for round in 0..3 {
        assert_eq!(read(&on_a, sql).await.as_deref(), Some(expected.as_str()));
        if round == 0 {
            common::eventually("A to store its result in Redis", || {
                l2(&a).bytes_written > 3_000_000
            })
            .await;
        }
    }
    assert_eq!(read(&on_b, sql).await.as_deref(), Some(expected.as_str()));
    let tier = l2(&b);
    assert_eq!((tier.hits, b.count("miss")), (1, 0), "{tier:?}");
    assert!(tier.bytes_read > 3_000_000, "{tier:?}");
    assert_eq!((tier.timeouts, tier.errors), (0, 0), "{tier:?}");
    assert!(tier.up && l2(&a).up);
    assert_eq!((l2(&a).timeouts, l2(&a).errors), (0, 0), "{:?}", l2(&a));
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}

/// A value in Redis that is not an entry of this format is a counted miss: the read
/// goes to the origin and is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_in_redis_is_a_counted_miss() {
    let db = table("tiercorrupt").await;
    let prefix = Prefix::new("corrupt");
    let deployment = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("one"));
    common::eventually("A to store its result in Redis", || {
        l2(&a).bytes_written > 0
    })
    .await;
    let entries = prefix.entries().await;
    assert_eq!(entries.len(), 1);
    let mut redis = redis_connection(REDIS).await;
    let _: () = redis::cmd("SET")
        .arg(&entries[0])
        .arg(b"\x93not an entry".as_slice())
        .query_async(&mut redis)
        .await
        .expect("SET");
    db.direct()
        .await
        .batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("behind warpdrive's back");
    assert_eq!(
        read(&on_b, sql).await.as_deref(),
        Some("two"),
        "from the origin"
    );
    let tier = l2(&b);
    assert_eq!(
        (tier.refused_values, tier.misses, tier.hits),
        (1, 1, 0),
        "{tier:?}"
    );
    assert_eq!(b.count("miss"), 1);
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}
