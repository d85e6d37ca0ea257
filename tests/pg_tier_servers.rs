//! The upstream tier on Redis servers the tests start themselves: one that goes away
//! and comes back, one that never answers, one over TLS, and a three-node cluster.

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use common::tier::*;
use warpdrive::cache::tier::Consistency;

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

/// A write whose announcement Redis refused (here: out of memory, so it takes no write
/// but still answers reads) keeps its instance off the entries Redis holds for that
/// database until the announcement is made: the writer never reads what another
/// instance stored before the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_redis_did_not_hear_of_keeps_the_writer_off_older_entries() {
    let redis = OwnRedis::start();
    let db = table("tierunheard").await;
    let prefix = Prefix::new("unheard");
    let deployment = tiered(&db, prefix.tier(&redis.url(), Consistency::Fast));
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    let mut connection = redis_connection(&redis.url()).await;
    let pattern = format!("{{{}:*:e:*", prefix.0);
    for _ in 0..250 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let memory = |limit: &'static str| {
        let mut connection = connection.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(limit)
                .query_async(&mut connection)
                .await
                .expect("CONFIG SET maxmemory");
        }
    };
    memory("1").await;
    on_a.batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update");
    assert_eq!(
        read(&on_a, sql).await.as_deref(),
        Some("two"),
        "the writer read an entry from before its write"
    );
    memory("0").await;
    on_a.batch_execute("UPDATE t SET v = 'three' WHERE id = 1")
        .await
        .expect("update");
    assert_eq!(read(&on_a, sql).await.as_deref(), Some("three"));
    until_reads(&on_b, sql, "three").await;
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
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
    on_origin(&db, "UPDATE t SET v = 'four' WHERE id = 1").await;
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
