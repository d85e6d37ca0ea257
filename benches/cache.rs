//! The cache's hit path without I/O: building the key of a request and looking it up.
//!
//! `cargo bench --bench cache`. Goal: key + lookup under 2 µs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use warpdrive::cache::{
    Entry, Generations, KeyScope, Lookup, Refetch, RefetchFuture, Store, Validity,
};
use warpdrive::clock::Clock;
use warpdrive::session::pg::request::Request;

/// Entries are only read here: nothing ever refreshes them.
#[derive(Debug)]
struct NeverRefetched;

impl Refetch for NeverRefetched {
    fn weight(&self) -> usize {
        0
    }

    fn fetch(&self) -> RefetchFuture<'_> {
        Box::pin(async { Err("not refreshed in this benchmark".into()) })
    }
}

fn bench_cache(c: &mut Criterion) {
    let store = Store::new(256 << 20, 50 << 20, Clock::system());
    let mut settings = BTreeMap::new();
    settings.insert(
        "application_name".to_owned(),
        "SELECT pg_catalog.set_config('application_name', 'pgbench', false)".to_owned(),
    );
    settings.insert(
        "timezone".to_owned(),
        "SET \"timezone\" TO 'UTC'".to_owned(),
    );
    let request = Request::Extended {
        sql: Bytes::from_static(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"),
        parameter_types: Bytes::from_static(&[0, 0]),
        arguments: Bytes::from_static(b"\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00"),
        describes: Vec::new(),
    };
    let scope = KeyScope {
        deployment: "bench",
        database: "wd_bench",
        role: "postgres",
    };
    let key = |request: &Request| request.key(scope, &settings);
    let Lookup::Miss(guard) = store.lookup(key(&request)) else {
        panic!("empty store")
    };
    guard.fill(Entry {
        segments: vec![Bytes::from(vec![b'D'; 64])],
        stored_at: store.clock().now(),
        max_age: Duration::from_secs(3600),
        stale_while_revalidate: Duration::from_secs(15),
        tables: Arc::from(vec!["pgbench_accounts".to_owned()]),
        // Checked on every hit, as in a deployment that invalidates on writes.
        tables_unknown: false,
        validity: Some(Validity::starting(&Arc::new(Generations::default()))),
        tier_stamp: None,
        refetch: Arc::new(NeverRefetched),
    });
    // Other entries, so that the lookup is not into an empty map.
    for i in 0..10_000u32 {
        let other = Request::Simple {
            sql: Bytes::from(format!("SELECT {i}")),
        };
        if let Lookup::Miss(guard) = store.lookup(key(&other)) {
            drop(guard);
        }
    }
    let mut group = c.benchmark_group("cache");
    group.bench_function("key", |b| b.iter(|| black_box(key(black_box(&request)))));
    group.bench_function("key_and_lookup_hit", |b| {
        b.iter(|| match store.lookup(key(black_box(&request))) {
            Lookup::Fresh(entry) => black_box(entry),
            _ => panic!("the entry is fresh"),
        })
    });
    group.finish();
}

criterion_group!(benches, bench_cache);
criterion_main!(benches);
