//! The differential workload against the real PostgreSQL: writers and readers at
//! random, through warpdrive (one instance, or two sharing Redis) or around it, and
//! every read checked against the history of writes.

mod common;

use std::time::Duration;

use common::{Proxy, TestDatabase};
use warpdrive::cache::tier::{Consistency, TierSettings};

#[derive(Clone, Copy, Debug)]
struct Write {
    started: std::time::Instant,
    ended: std::time::Instant,
    /// Which warpdrive instance it went through.
    instance: usize,
}

#[derive(Debug)]
struct Read {
    key: i32,
    version: i32,
    instance: usize,
    started: std::time::Instant,
    ended: std::time::Instant,
}

/// Where the differential workload's writes go, and whether reads are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Differential {
    /// Caching off: every read is current.
    CacheOff,
    /// Writes through warpdrive, which invalidates: every read that starts after a write
    /// completed reflects it.
    WritesThrough,
    /// Writes straight to the origin, behind warpdrive's back: reads are within
    /// max_age + swr.
    WritesAround,
    /// Two instances sharing Redis, writes and reads through both: a read on the
    /// instance a write went through reflects it at once; on the other within
    /// [`PROPAGATION_BOUND`] in fast consistency, at once in strict.
    TwoInstances(Consistency),
}

/// How long another instance may serve a read older than a write, in fast
/// consistency, in this test (measured on loopback: about a millisecond; see
/// BENCHMARKS.md), with room for a loaded CI machine.
const PROPAGATION_BOUND: Duration = Duration::from_millis(100);

/// Writers and readers at random; every read must return a version the origin held at
/// some moment of [start − window, end]: the window is max_age + swr for writes behind
/// warpdrive's back, zero for writes through it or with caching off.
async fn differential_run(mode: Differential) {
    use std::sync::{Arc, Mutex};
    const KEYS: i32 = 4;
    let max_age = Duration::from_millis(300);
    let swr = Duration::from_millis(300);
    let cache_on = mode != Differential::CacheOff;
    let db = TestDatabase::create(match mode {
        Differential::CacheOff => "diff_off",
        Differential::WritesThrough => "diff_through",
        Differential::WritesAround => "diff_around",
        Differential::TwoInstances(Consistency::Fast) => "diff_fast",
        Differential::TwoInstances(Consistency::Strict) => "diff_strict",
    })
    .await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL); INSERT INTO kv SELECT g, 0 FROM generate_series(1, 4) g")
        .await
        .expect("differential workload");
    let mut deployment = common::cached_deployment(&db.name, 4);
    deployment.cache.enabled = cache_on;
    deployment.cache.max_age = max_age;
    deployment.cache.stale_while_revalidate = swr;
    let prefix = format!("wdtest-diff-{:016x}", rand::random::<u64>());
    if let Differential::TwoInstances(consistency) = mode {
        deployment.cache.upstream = Some(TierSettings {
            prefix: prefix.clone(),
            consistency,
            ..warpdrive::config::cache::upstream("redis://127.0.0.1:6379/0")
        });
    }
    let proxy = Proxy::start(deployment.clone()).await;
    let second = match mode {
        Differential::TwoInstances(_) => Some(Proxy::start(deployment).await),
        _ => None,
    };
    let instances: Vec<&Proxy> = std::iter::once(&proxy).chain(&second).collect();
    for instance in &instances {
        if let Some(tier) = instance.snapshot().l2 {
            let mut up = tier.up;
            for _ in 0..250 {
                if up {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                up = instance.snapshot().l2.is_some_and(|tier| tier.up);
            }
            assert!(up, "the tier connects");
        }
    }
    let epoch = std::time::Instant::now();
    let history: Arc<Mutex<Vec<Vec<Write>>>> = Arc::new(Mutex::new(
        (0..KEYS)
            .map(|_| {
                vec![Write {
                    started: epoch,
                    ended: epoch,
                    instance: 0,
                }]
            })
            .collect(),
    ));
    let reads: Arc<Mutex<Vec<Read>>> = Arc::new(Mutex::new(Vec::new()));
    let run_for = Duration::from_secs(3);
    let writer = {
        let mut clients = Vec::new();
        for instance in &instances {
            clients.push(match mode {
                Differential::WritesAround => db.direct().await,
                _ => instance.connect(&db.name).await,
            });
        }
        let history = Arc::clone(&history);
        tokio::spawn(async move {
            let mut seed = 7u32;
            while epoch.elapsed() < run_for {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (seed >> 16) as i32 % KEYS + 1;
                let instance = (seed >> 4) as usize % clients.len();
                let version =
                    history.lock().expect("differential workload")[key as usize - 1].len() as i32;
                let started = std::time::Instant::now();
                clients[instance]
                    .execute("UPDATE kv SET v = $1 WHERE k = $2", &[&version, &key])
                    .await
                    .expect("differential workload");
                let ended = std::time::Instant::now();
                history.lock().expect("differential workload")[key as usize - 1].push(Write {
                    started,
                    ended,
                    instance,
                });
                tokio::time::sleep(Duration::from_millis(((seed >> 8) % 40) as u64)).await;
            }
        })
    };
    let mut readers = Vec::new();
    for reader in 0..3u32 {
        let instance = reader as usize % instances.len();
        let reads = Arc::clone(&reads);
        let client = instances[instance].connect(&db.name).await;
        readers.push(tokio::spawn(async move {
            let mut seed = 31 + reader;
            while epoch.elapsed() < run_for {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (seed >> 16) as i32 % KEYS + 1;
                let started = std::time::Instant::now();
                let version: i32 = if seed % 2 == 0 {
                    client
                        .query_one("SELECT v FROM kv WHERE k = $1", &[&key])
                        .await
                        .expect("differential workload")
                        .get(0)
                } else {
                    common::row_value(
                        &client
                            .simple_query(&format!("SELECT v FROM kv WHERE k = {key}"))
                            .await
                            .expect("differential workload"),
                    )
                    .parse()
                    .expect("differential workload")
                };
                let ended = std::time::Instant::now();
                reads.lock().expect("differential workload").push(Read {
                    key,
                    version,
                    instance,
                    started,
                    ended,
                });
                tokio::time::sleep(Duration::from_millis(((seed >> 8) % 10) as u64)).await;
            }
        }));
    }
    writer.await.expect("differential workload");
    for reader in readers {
        reader.await.expect("differential workload");
    }
    let (history, reads) = (
        std::mem::take(&mut *history.lock().expect("history")),
        std::mem::take(&mut *reads.lock().expect("reads")),
    );
    // Exact: an entry's lifetime counts from when its request was sent, before the origin
    // read the data.
    let window = |read: &Read, next: &Write| match mode {
        Differential::WritesAround => max_age + swr,
        Differential::TwoInstances(Consistency::Fast) if next.instance != read.instance => {
            PROPAGATION_BOUND
        }
        _ => Duration::ZERO,
    };
    let mut older_than_the_read = 0;
    for read in reads.iter() {
        let versions = &history[read.key as usize - 1];
        let this = versions
            .get(read.version as usize)
            .unwrap_or_else(|| panic!("{read:?} returned a version never written"));
        assert!(
            this.started <= read.ended,
            "{read:?} saw a version written after it ended"
        );
        if let Some(next) = versions.get(read.version as usize + 1) {
            if next.ended < read.started {
                older_than_the_read += 1;
            }
            let window = window(read, next);
            let earliest = read.started.checked_sub(window).unwrap_or(epoch);
            assert!(
                next.ended >= earliest,
                "{read:?} returned version {} that was replaced {:?} before the read (window {window:?})",
                read.version,
                read.started.duration_since(next.ended)
            );
        }
    }
    assert!(reads.len() > 50, "only {} reads", reads.len());
    match mode {
        Differential::WritesAround => {
            assert!(proxy.count("hit") > 0, "the workload produced no hits");
            assert!(
                older_than_the_read > 0,
                "no read was served an older version: the check proved nothing"
            );
        }
        Differential::WritesThrough | Differential::TwoInstances(Consistency::Strict) => {
            assert!(proxy.count("hit") > 0, "the workload produced no hits");
            assert_eq!(older_than_the_read, 0);
        }
        Differential::TwoInstances(Consistency::Fast) => {
            assert!(proxy.count("hit") > 0, "the workload produced no hits");
        }
        Differential::CacheOff => assert_eq!(proxy.count("hit"), 0),
    }
    if let Some(second) = second {
        assert!(
            second.count("hit") > 0,
            "the second instance produced no hits"
        );
        let tier = second.snapshot().l2.expect("a tier");
        assert!(tier.invalidations_remote > 0, "{tier:?}");
        second.stop().await;
    }
    proxy.stop().await;
    common::remove_redis_keys(&prefix).await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_reads_on_two_instances_follow_writes_within_the_propagation_bound() {
    differential_run(Differential::TwoInstances(Consistency::Fast)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_reads_on_two_instances_never_precede_writes_in_strict_consistency() {
    differential_run(Differential::TwoInstances(Consistency::Strict)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_reads_stay_within_max_age_and_swr_of_writes_around_warpdrive() {
    differential_run(Differential::WritesAround).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_reads_never_precede_writes_through_warpdrive() {
    differential_run(Differential::WritesThrough).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_reads_are_current_with_caching_disabled() {
    differential_run(Differential::CacheOff).await;
}
