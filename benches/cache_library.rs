//! quick_cache (what the store uses) against moka (what the design named), configured
//! alike: weighted by bytes, the same budget. Measured in one run: a hit, a fill, and a
//! skewed workload under capacity pressure, whose hit ratio is printed.
//!
//! `cargo bench --bench cache_library`. Results in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

type Key = [u8; 32];
type Value = Arc<Vec<u8>>;

/// The two caches behind one face.
trait Library: Sync {
    fn name(&self) -> &'static str;
    fn get(&self, key: &Key) -> Option<Value>;
    fn insert(&self, key: Key, value: Value);
}

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<Key, Value> for ByLength {
    fn weight(&self, _: &Key, value: &Value) -> u64 {
        value.len() as u64 + 64
    }
}

struct Quick(quick_cache::sync::Cache<Key, Value, ByLength>);

impl Library for Quick {
    fn name(&self) -> &'static str {
        "quick_cache"
    }
    fn get(&self, key: &Key) -> Option<Value> {
        self.0.get(key)
    }
    fn insert(&self, key: Key, value: Value) {
        self.0.insert(key, value);
    }
}

struct Moka(moka::sync::Cache<Key, Value>);

impl Library for Moka {
    fn name(&self) -> &'static str {
        "moka"
    }
    fn get(&self, key: &Key) -> Option<Value> {
        self.0.get(key)
    }
    fn insert(&self, key: Key, value: Value) {
        self.0.insert(key, value);
    }
}

fn libraries(capacity_bytes: u64) -> Vec<Box<dyn Library>> {
    let quick = quick_cache::sync::Cache::with_weighter(
        (capacity_bytes / 256) as usize,
        capacity_bytes,
        ByLength,
    );
    let moka = moka::sync::Cache::builder()
        .max_capacity(capacity_bytes)
        .weigher(|_: &Key, value: &Value| (value.len() + 64) as u32)
        .build();
    vec![Box::new(Quick(quick)), Box::new(Moka(moka))]
}

fn key(n: u64) -> Key {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// A Zipf-like stream of key numbers over `keys` keys (s = 1), from a fixed seed: a few
/// queries are very hot, most are rare, as on a read-heavy application.
fn skewed(keys: u64, length: usize) -> Vec<u64> {
    let weights: Vec<f64> = (1..=keys).map(|rank| 1.0 / rank as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut sum = 0.0;
    for weight in weights {
        sum += weight / total;
        cumulative.push(sum);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let draw = (state >> 11) as f64 / (1u64 << 53) as f64;
            cumulative.partition_point(|&c| c < draw) as u64
        })
        .collect()
}

/// Runs the stream, filling on every miss; the share of hits.
fn hit_ratio(library: &dyn Library, stream: &[u64], value: &Value) -> f64 {
    let mut hits = 0usize;
    for &n in stream {
        let key = key(n);
        match library.get(&key) {
            Some(_) => hits += 1,
            None => library.insert(key, Arc::clone(value)),
        }
    }
    hits as f64 / stream.len() as f64
}

fn bench_libraries(c: &mut Criterion) {
    let value: Value = Arc::new(vec![b'D'; 1024]);
    let mut group = c.benchmark_group("cache_library");
    // Hit path and fill, with room for everything.
    for library in libraries(256 << 20) {
        for n in 0..10_000 {
            library.insert(key(n), Arc::clone(&value));
        }
        let hot = key(42);
        group.bench_function(format!("{}/hit", library.name()), |b| {
            b.iter(|| black_box(library.get(black_box(&hot))))
        });
        let mut next = 1_000_000u64;
        group.bench_function(format!("{}/fill", library.name()), |b| {
            b.iter(|| {
                next += 1;
                library.insert(key(next), Arc::clone(&value));
            })
        });
    }
    // A skewed workload over 100 000 results, with room for 5 000 of them.
    let stream = skewed(100_000, 400_000);
    let pressure = 5_000 * (1024 + 64);
    for library in libraries(pressure) {
        let ratio = hit_ratio(library.as_ref(), &stream, &value);
        println!(
            "{}: hit ratio {:.1}% (skewed, 5% of the results fit)",
            library.name(),
            ratio * 100.0
        );
        let mut position = 0usize;
        group.bench_function(format!("{}/skewed_under_pressure", library.name()), |b| {
            b.iter(|| {
                let n = stream[position % stream.len()];
                position += 1;
                let key = key(n);
                if library.get(&key).is_none() {
                    library.insert(key, Arc::clone(&value));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_libraries);
criterion_main!(benches);
