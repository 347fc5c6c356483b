//! The pooled-vector cache at scale: `--vectors N` (default 1,000,000) synthetic 384-d
//! vectors written through [`PooledCache::insert`] in batches, then the cache opened again
//! (as the next run's stage 2 or 5 opens it) and every vector looked up: time, and the
//! resident memory each step adds (the peak is reset before each through
//! `/proc/self/clear_refs`).
//!
//! `cargo bench -p embed-runtime --bench cache -- --vectors 1000000`

use std::time::Instant;

use embed_runtime::cache::{PooledCache, key};

const DIMS: usize = 384;

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak resident set size to the current one; returns it in MiB.
fn reset_peak() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_mib("VmHWM:")
}

fn vector(i: u32) -> Vec<f32> {
    (0..DIMS)
        .map(|j| ((i as usize * 31 + j) % 97) as f32 / 97.0)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .iter()
        .position(|a| a == "--vectors")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "| step ({n} vectors of {DIMS} dims) | seconds | RSS at the start MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|");
    {
        let start = reset_peak();
        let t = Instant::now();
        let cache = PooledCache::open(dir.path(), DIMS).expect("open");
        for batch in (0..n).collect::<Vec<_>>().chunks(256) {
            let vectors: Vec<Vec<f32>> = batch.iter().map(|&i| vector(i)).collect();
            let items: Vec<_> = batch
                .iter()
                .zip(&vectors)
                .map(|(&i, v)| (key(&[i]), v.as_slice()))
                .collect();
            cache.insert(&items).expect("insert");
        }
        println!(
            "| insert in batches of 256 | {:.1} | {start:.0} | {:.0} |",
            t.elapsed().as_secs_f64(),
            status_mib("VmHWM:")
        );
    }
    let start = reset_peak();
    let t = Instant::now();
    let cache = PooledCache::open(dir.path(), DIMS).expect("open");
    assert_eq!(cache.len(), n as usize);
    println!(
        "| open again | {:.1} | {start:.0} | {:.0} |",
        t.elapsed().as_secs_f64(),
        status_mib("VmHWM:")
    );
    let start = reset_peak();
    let t = Instant::now();
    let mut sum = 0f64;
    for i in 0..n {
        let v = cache.get(&key(&[i])).expect("cached");
        sum += f64::from(v[0]);
    }
    println!(
        "| look every vector up ({:.0} per second) | {:.1} | {start:.0} | {:.0} |",
        f64::from(n) / t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64(),
        status_mib("VmHWM:")
    );
    assert!(sum > 0.0);
}
