//! The upstream tier against the real PostgreSQL and the Redis on 127.0.0.1:6379:
//! instances sharing Redis share results, learn of each other's writes and purges, and
//! refuse what is not theirs. Each test uses its own database and key prefix, and
//! removes its keys.

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use common::tier::*;
use warpdrive::cache::tier::Consistency;

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
    on_origin(&db, "UPDATE t SET v = 'behind' WHERE id = 1").await;
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
    on_origin(&db, "UPDATE t SET v = 'two' WHERE id = 1").await;
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

/// A purge through one instance drops the entries of the other too, and those in
/// Redis: by table, then everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_reaches_every_instance_and_redis() {
    let db = table("tierpurge").await;
    on_origin(&db, "CREATE TABLE u (v text); INSERT INTO u VALUES ('u1')").await;
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
    on_origin(&db, "UPDATE t SET v = 'two'; UPDATE u SET v = 'u2'").await;
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
    // One deployment, everything in it.
    let purged = purge(&a, "all=true&deployment=default").await;
    assert_eq!(purged.deployments[0].shared, Some(true));
    common::eventually("B and C to hear it", || {
        l2(&b).invalidations_purge >= 2 && l2(&c).invalidations_purge >= 1
    })
    .await;
    for client in [&on_a, &on_b, &on_c] {
        assert_eq!(read(client, of_u).await.as_deref(), Some("u2"));
    }
    // Everything.
    on_origin(&db, "UPDATE u SET v = 'u3'").await;
    assert_eq!(read(&on_c, of_u).await.as_deref(), Some("u2"), "cached");
    let purged = purge(&a, "all=true").await;
    assert_eq!(purged.deployments[0].shared, Some(true));
    common::eventually("B and C to hear it", || {
        l2(&b).invalidations_purge >= 3 && l2(&c).invalidations_purge >= 2
    })
    .await;
    for client in [&on_a, &on_b, &on_c] {
        assert_eq!(read(client, of_u).await.as_deref(), Some("u3"));
    }
    drop((on_a, on_b, on_c));
    finish(vec![a, b, c], prefix, db).await;
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
    on_origin(&db, "UPDATE t SET v = 'two' WHERE id = 1").await;
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

/// Writes through an instance whose deployment caches nothing, but names the upstream,
/// still reach the other instances' cached reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_an_uncached_deployment_still_reach_the_others() {
    let db = table("tierwriter").await;
    let prefix = Prefix::new("writer");
    let mut writer = tiered(&db, prefix.tier(REDIS, Consistency::Fast));
    writer.cache.enabled = false;
    let a = instance(writer).await;
    let b = instance(tiered(&db, prefix.tier(REDIS, Consistency::Fast))).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let sql = "SELECT v FROM t WHERE id = 1";
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!(read(&on_b, sql).await.as_deref(), Some("one"));
    assert_eq!(b.count("hit"), 1);
    on_a.batch_execute("UPDATE t SET v = 'two' WHERE id = 1")
        .await
        .expect("update");
    until_reads(&on_b, sql, "two").await;
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}

/// With single flight, two instances missing one slow query together send it to the
/// origin once: the second waits for the first's entry in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_missing_together_send_one_origin_query() {
    let db = table("tierflight").await;
    let prefix = Prefix::new("flight");
    let mut tier = prefix.tier(REDIS, Consistency::Fast);
    tier.single_flight = true;
    let a = instance(tiered(&db, tier.clone())).await;
    let b = instance(tiered(&db, tier)).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let slow = "SELECT count(*) FROM generate_series(1, 3000000)";
    let (from_a, from_b) = tokio::join!(read(&on_a, slow), read(&on_b, slow));
    assert_eq!(
        (from_a.as_deref(), from_b.as_deref()),
        (Some("3000000"), Some("3000000"))
    );
    let misses = a.count("miss") + b.count("miss");
    let hits = a.count("hit") + b.count("hit");
    assert_eq!((misses, hits), (1, 1), "A {:?} B {:?}", l2(&a), l2(&b));
    assert_eq!(l2(&a).flight_waits + l2(&b).flight_waits, 1);
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}

/// When the instance holding the lock stores nothing (its result is too large), the
/// one waiting is let go as soon as the lock is released, not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_stores_nothing_lets_the_other_instances_go_at_once() {
    let db = table("tierflightlarge").await;
    let prefix = Prefix::new("flightlarge");
    let mut tier = prefix.tier(REDIS, Consistency::Fast);
    tier.single_flight = true;
    let mut deployment = tiered(&db, tier);
    deployment.cache.max_result_bytes = 1024;
    let a = instance(deployment.clone()).await;
    let b = instance(deployment).await;
    let (on_a, on_b) = (a.connect(&db.name).await, b.connect(&db.name).await);
    let slow = "SELECT count(*) || repeat('x', 4000) FROM generate_series(1, 3000000)";
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(read(&on_a, slow), read(&on_b, slow));
    let took = started.elapsed();
    assert_eq!(from_a, from_b);
    assert!(from_a.is_some_and(|v| v.starts_with("3000000x")));
    assert_eq!(a.count("oversizedresult") + b.count("oversizedresult"), 2);
    assert!(
        took < Duration::from_secs(3),
        "the waiter waited out its bound: {took:?}"
    );
    drop((on_a, on_b));
    finish(vec![a, b], prefix, db).await;
}
