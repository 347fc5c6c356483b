//! ragloop's own HNSW graph (Malkov & Yashunin, 2016), the [`AnnGraph`] behind the embedded
//! index: each node's level-0 links and vector in one block (one region to fetch), vectors
//! kept as bfloat16 (half the bytes to fetch per scored node; the index scores the final
//! candidates again from its f32 records), the neighbour-selection heuristic, deletions as
//! tombstones (they keep routing), filters applied to results while the walk goes on, and the
//! distance loops compiled once per search for the CPU's widest vectors (pulp: AVX-512 where
//! present) with the vectors of the next few unvisited neighbours prefetched while the current
//! one is scored, so their fetches from memory overlap — the things that decide HNSW speed
//! once vectors outgrow the caches. Inserts run on every core, chunk by chunk
//! (`Inner::insert_all`), and give the same graph on any number of them.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use rag_core::local::ann::{AnnGraph, KeyFilter};
use rag_core::{Error, Metric, Result};

/// File format 4: vectors as bfloat16 pairs, a CRC-32 trailer (a file of another version is
/// rebuilt).
const MAGIC: &[u8; 8] = b"RLHNSW4\n";
/// The highest level `insert` draws.
const MAX_LEVEL: usize = 16;
/// The largest `m` a saved graph may declare (real ones use 8–64).
const MAX_M: usize = 4096;

/// Reads through a CRC-32 of everything read.
struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes through a CRC-32 of everything written.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A distance, lower is closer.
#[derive(Clone, Copy, PartialEq)]
struct Dist(f32);
impl Eq for Dist {}
impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Rounds `x` to bfloat16 (nearest, ties to even): the upper 16 bits of an f32 with the same
/// exponent range, so any finite vector fits (f16 would overflow past 65504).
#[inline(always)]
fn to_bf16(x: f32) -> u32 {
    let b = x.to_bits();
    b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16
}

/// The element in the low half of a stored word, as f32 (exact).
#[inline(always)]
fn low(w: u32) -> f32 {
    f32::from_bits(w << 16)
}

/// The element in the high half of a stored word, as f32 (exact).
#[inline(always)]
fn high(w: u32) -> f32 {
    f32::from_bits(w & 0xFFFF_0000)
}

/// Appends `v` as bfloat16 pairs: word `i` holds element `2i` in its low half and `2i + 1` in
/// its high half (zero past an odd end). Stored this way a vector is half the bytes to fetch,
/// and decoding is a shift or a mask per element, which vectorises everywhere.
fn pack(v: &[f32], out: &mut Vec<u32>) {
    for pair in v.chunks(2) {
        let hi = pair.get(1).map_or(0, |&x| to_bf16(x));
        out.push(to_bf16(pair[0]) | (hi << 16));
    }
}

/// A query laid out as the stored words are: its even elements and its odd ones (zero-padded
/// to the words' length), kept in f32.
struct Probe {
    even: Vec<f32>,
    odd: Vec<f32>,
}

impl Probe {
    fn new(v: &[f32]) -> Self {
        let words = v.len().div_ceil(2);
        let mut even = Vec::with_capacity(words);
        let mut odd = Vec::with_capacity(words);
        for pair in v.chunks(2) {
            even.push(pair[0]);
            odd.push(pair.get(1).copied().unwrap_or(0.0));
        }
        Self { even, odd }
    }

    /// A stored vector as a probe (decoding is exact).
    fn of_words(words: &[u32]) -> Self {
        Self {
            even: words.iter().map(|&w| low(w)).collect(),
            odd: words.iter().map(|&w| high(w)).collect(),
        }
    }
}

/// Sum of `p[i] * v[i]` against a stored vector, in 16 lanes (vectorises under the dispatched
/// target features).
#[inline(always)]
fn dot(p: &Probe, v: &[u32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ce, co, cv) = (
        p.even.chunks_exact(16),
        p.odd.chunks_exact(16),
        v.chunks_exact(16),
    );
    let mut tail = 0.0f32;
    for ((e, o), w) in ce
        .remainder()
        .iter()
        .zip(co.remainder())
        .zip(cv.remainder())
    {
        tail += e * low(*w) + o * high(*w);
    }
    for ((e, o), w) in ce.zip(co).zip(cv) {
        for i in 0..16 {
            acc[i] += e[i] * low(w[i]) + o[i] * high(w[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum of `(p[i] - v[i])²` against a stored vector, in 16 lanes.
#[inline(always)]
fn l2sq(p: &Probe, v: &[u32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ce, co, cv) = (
        p.even.chunks_exact(16),
        p.odd.chunks_exact(16),
        v.chunks_exact(16),
    );
    let mut tail = 0.0f32;
    for ((e, o), w) in ce
        .remainder()
        .iter()
        .zip(co.remainder())
        .zip(cv.remainder())
    {
        let (a, b) = (e - low(*w), o - high(*w));
        tail += a * a + b * b;
    }
    for ((e, o), w) in ce.zip(co).zip(cv) {
        for i in 0..16 {
            let (a, b) = (e[i] - low(w[i]), o[i] - high(w[i]));
            acc[i] += a * a + b * b;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`dot`] of two stored vectors.
#[inline(always)]
fn dot_stored(a: &[u32], b: &[u32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += low(*x) * low(*y) + high(*x) * high(*y);
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += low(x[i]) * low(y[i]) + high(x[i]) * high(y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`l2sq`] of two stored vectors.
#[inline(always)]
fn l2sq_stored(a: &[u32], b: &[u32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let (d, e) = (low(*x) - low(*y), high(*x) - high(*y));
        tail += d * d + e * e;
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            let (d, e) = (low(x[i]) - low(y[i]), high(x[i]) - high(y[i]));
            acc[i] += d * d + e * e;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Hints the CPU to fetch every cache line of `v` (a node's block: links and vector). Never
/// faults, whatever the address.
///
/// The whole block, not its first lines: the walk's time is spent waiting for nodes' memory
/// (perf: half of a search's samples sat on the first load of a vector), and asking for two
/// lines left the other ten of a 384-dim vector and the links to the L2 streamer, too late.
/// Whole blocks, six neighbours ahead, took single-thread QPS at 100k × 384 real-structure
/// vectors from 16–17k to ~27k at ef 16 and the build from 15–17 s to 12 s (BENCHMARKS.md).
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch(v: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(v);
        // SAFETY: prefetching is a hint; it reads nothing architecturally and cannot fault.
        // Every line from the first byte's to the last byte's is requested.
        unsafe {
            for offset in (0..bytes).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset));
            }
            if bytes > 0 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(bytes - 1));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Node blocks with room for `words` words, their memory advised for transparent huge pages
/// before it is touched.
///
/// A walk lands on a different node, so a different 4 KiB page, at nearly every step: at a
/// million 384-d nodes the 2.4 GB of blocks span 600,000 pages, far past what the TLB maps,
/// so each neighbour costs a page walk besides its cache misses. Backed by 2 MiB pages the
/// same blocks take ~1,200 TLB entries. Linux backs memory with huge pages by itself only where
/// `transparent_hugepage/enabled` is `always`; the common default is `madvise`, which is what
/// this asks for. Where the advice is refused or THP is off, nothing changes but the speed.
fn block_storage(words: usize) -> Vec<u32> {
    let v = Vec::with_capacity(words);
    advise_huge_pages(&v);
    v
}

/// Asks the kernel to back the whole 2 MiB-aligned pages inside `v`'s allocation with huge pages.
#[allow(unsafe_code)]
fn advise_huge_pages(v: &Vec<u32>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<u32>();
        let (first, last) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if last > first {
            // SAFETY: the range lies inside `v`'s allocation and is page-aligned; MADV_HUGEPAGE
            // changes how pages are backed, never their contents, and an error (THP off, an
            // old kernel) is harmless, so the result is ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// The instruction set the graph code is compiled for: the widest this CPU runs, or the one
/// `RAGLOOP_HNSW_SIMD` names (`avx512`, `avx2`, `scalar`; a set the CPU lacks falls back to
/// the widest), so each path can be measured and tested on one machine. The distances add
/// in 16 fixed lanes whatever the register width, so every path builds the same graph.
fn simd_arch() -> pulp::Arch {
    let best = pulp::Arch::new();
    match std::env::var("RAGLOOP_HNSW_SIMD").as_deref() {
        Ok("scalar") => pulp::Arch::Scalar,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Ok("avx2") => pulp::x86::V3::try_new().map_or(best, pulp::Arch::V3),
        _ => best,
    }
}

/// Words in a node's block: the level-0 link count, `2m` links, the packed vector.
fn stride(m: usize, dims: usize) -> usize {
    1 + 2 * m + dims.div_ceil(2)
}

/// How many neighbours ahead of the one being scored a search requests vectors for.
const AHEAD: usize = 6;

/// Graph parameters and state.
struct Inner {
    dims: usize,
    l2: bool,
    m: usize,
    ef_construction: usize,
    /// One block per node, `1 + 2m + ⌈dims/2⌉` words: the level-0 link count, up to `2m`
    /// level-0 links, then the vector as bfloat16 pairs ([`pack`]; unit length for cosine).
    /// Links and vector share cache lines and one block is one memory region to fetch when a
    /// node is expanded and scored.
    blocks: Vec<u32>,
    keys: Vec<u64>,
    ids: HashMap<u64, u32>,
    deleted: Vec<bool>,
    levels: Vec<u8>,
    /// Links of levels ≥ 1, per node: `level × (1 + m)` (empty for level-0 nodes).
    upper: Vec<Vec<u32>>,
    entry: Option<u32>,
    max_level: usize,
    rng: u64,
}

impl Inner {
    #[inline(always)]
    fn stride(&self) -> usize {
        stride(self.m, self.dims)
    }

    /// Node `id`'s block: level-0 link count, links, vector.
    #[inline(always)]
    fn block(&self, id: u32) -> &[u32] {
        let i = id as usize * self.stride();
        &self.blocks[i..i + self.stride()]
    }

    #[inline(always)]
    fn vector(&self, id: u32) -> &[u32] {
        let i = id as usize * self.stride() + 1 + 2 * self.m;
        &self.blocks[i..i + self.dims.div_ceil(2)]
    }

    #[inline(always)]
    fn dist(&self, q: &Probe, id: u32) -> Dist {
        let v = self.vector(id);
        Dist(if self.l2 { l2sq(q, v) } else { 1.0 - dot(q, v) })
    }

    /// The distance between two stored nodes.
    #[inline(always)]
    fn dist_nodes(&self, a: u32, b: u32) -> Dist {
        let (x, y) = (self.vector(a), self.vector(b));
        Dist(if self.l2 {
            l2sq_stored(x, y)
        } else {
            1.0 - dot_stored(x, y)
        })
    }

    #[inline(always)]
    fn cap(&self, level: usize) -> usize {
        if level == 0 { 2 * self.m } else { self.m }
    }

    #[inline(always)]
    fn links(&self, id: u32, level: usize) -> &[u32] {
        let (list, cap) = if level == 0 {
            let i = id as usize * self.stride();
            (&self.blocks[i..i + 1 + 2 * self.m], 2 * self.m)
        } else {
            let w = 1 + self.m;
            (&self.upper[id as usize][(level - 1) * w..level * w], self.m)
        };
        let n = (list[0] as usize).min(cap);
        &list[1..1 + n]
    }

    fn set_links(&mut self, id: u32, level: usize, to: &[u32]) {
        let list = if level == 0 {
            let i = id as usize * self.stride();
            &mut self.blocks[i..i + 1 + 2 * self.m]
        } else {
            let w = 1 + self.m;
            &mut self.upper[id as usize][(level - 1) * w..level * w]
        };
        list[0] = to.len() as u32;
        list[1..1 + to.len()].copy_from_slice(to);
    }

    /// Best-first search of one layer from `entry`; returns up to `ef` (distance, id) sorted
    /// closest first. Only ids `accept` takes enter the results; all of them route.
    #[inline(always)]
    fn search_layer<F: Fn(u32) -> bool>(
        &self,
        q: &Probe,
        entry: &[(Dist, u32)],
        ef: usize,
        level: usize,
        visited: &mut Visited,
        accept: F,
    ) -> Vec<(Dist, u32)> {
        visited.clear(self.keys.len());
        let mut candidates = std::mem::take(&mut visited.candidates);
        candidates.clear();
        let mut fresh = std::mem::take(&mut visited.fresh);
        let mut results: BinaryHeap<(Dist, u32)> = BinaryHeap::with_capacity(ef + 1);
        for &(d, id) in entry {
            visited.insert(id);
            candidates.push(Reverse((d, id)));
            if accept(id) {
                results.push((d, id));
            }
        }
        while let Some(Reverse((d, c))) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| d > w.0) {
                break;
            }
            // The unvisited neighbours first, then their blocks requested `AHEAD` at a time
            // ahead of the one being scored, so several fetches from memory overlap.
            fresh.clear();
            for &n in self.links(c, level) {
                if visited.insert(n) {
                    fresh.push(n);
                }
            }
            for &n in fresh.iter().take(AHEAD) {
                prefetch(self.block(n));
            }
            for (j, &n) in fresh.iter().enumerate() {
                if let Some(&next) = fresh.get(j + AHEAD) {
                    prefetch(self.block(next));
                }
                let dn = self.dist(q, n);
                if results.len() < ef || results.peek().is_some_and(|w| dn < w.0) {
                    candidates.push(Reverse((dn, n)));
                    if accept(n) {
                        results.push((dn, n));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        visited.candidates = candidates;
        visited.fresh = fresh;
        let mut out = results.into_vec();
        out.sort_unstable();
        out
    }

    /// Greedy descent through the upper layers down to `stop` (exclusive).
    #[inline(always)]
    fn descend(&self, q: &Probe, stop: usize) -> Option<(Dist, u32)> {
        let entry = self.entry?;
        let mut best = (self.dist(q, entry), entry);
        for level in (stop + 1..=self.max_level).rev() {
            let mut changed = true;
            while changed {
                changed = false;
                let links = self.links(best.1, level);
                for &n in links.iter().take(AHEAD) {
                    prefetch(self.block(n));
                }
                for (j, &n) in links.iter().enumerate() {
                    if let Some(&next) = links.get(j + AHEAD) {
                        prefetch(self.block(next));
                    }
                    let d = self.dist(q, n);
                    if d < best.0 {
                        best = (d, n);
                        changed = true;
                    }
                }
            }
        }
        Some(best)
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is closer to the base
    /// than to every neighbour kept so far (spreads links across directions).
    #[inline(always)]
    fn select(&self, sorted: &[(Dist, u32)], m: usize) -> Vec<u32> {
        // Plain loops, no iterator adapters: a closure that is not inlined would be compiled
        // without the dispatched target features (its distance scalar) — it was a third of
        // the build time.
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for &(d, c) in sorted {
            if kept.len() >= m {
                break;
            }
            let mut diverse = true;
            for &k in &kept {
                if self.dist_nodes(c, k) <= d {
                    diverse = false;
                    break;
                }
            }
            if diverse {
                kept.push(c);
            }
        }
        kept
    }

    /// Room for `nodes` more blocks, grown by half at least so that many small batches still
    /// copy the blocks a logarithmic number of times; new storage gets huge pages
    /// ([`block_storage`]).
    fn reserve(&mut self, nodes: usize) {
        let need = self.blocks.len() + nodes * self.stride();
        if need > self.blocks.capacity() {
            let mut grown = block_storage(need.max(self.blocks.capacity() * 3 / 2));
            grown.extend_from_slice(&self.blocks);
            self.blocks = grown;
        }
    }

    /// Appends a node with no links yet (its level drawn from the graph's seeded generator).
    fn append(&mut self, key: u64, v: &[f32]) {
        if let Some(old) = self.ids.remove(&key) {
            self.deleted[old as usize] = true;
        }
        let id = self.keys.len() as u32;
        // Level ~ floor(-ln(U) / ln(M)).
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((self.rng >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let level = ((-u.ln()) / (self.m as f64).ln()).floor().min(16.0) as usize;
        self.blocks.extend(std::iter::repeat_n(0, 1 + 2 * self.m));
        pack(v, &mut self.blocks);
        self.keys.push(key);
        self.ids.insert(key, id);
        self.deleted.push(false);
        self.levels.push(level as u8);
        self.upper.push(vec![0; level * (1 + self.m)]);
    }

    /// The links node `id` of a chunk starting at `first` takes on each of its levels: the
    /// neighbours the graph as it was before the chunk offers (nothing links to the chunk's
    /// nodes yet, so no search reaches them) together with the chunk's earlier nodes, scored
    /// directly, through the selection heuristic. Reads only, so nodes plan in parallel.
    #[inline(always)]
    fn plan(&self, id: u32, first: u32, visited: &mut Visited) -> Vec<Vec<u32>> {
        let level = self.levels[id as usize] as usize;
        let q = &Probe::of_words(self.vector(id));
        let mut ep = self.descend(q, level);
        let all = |_: u32| true;
        let mut out = vec![Vec::new(); level + 1];
        for lc in (0..=level).rev() {
            let mut found = match ep {
                Some(e) if lc <= self.max_level => {
                    self.search_layer(q, &[e], self.ef_construction, lc, visited, all)
                }
                _ => Vec::new(),
            };
            if let Some(&best) = found.first() {
                ep = Some(best);
            }
            for j in first..id {
                if self.levels[j as usize] as usize >= lc {
                    found.push((self.dist(q, j), j));
                }
            }
            found.sort_unstable();
            // The new node keeps M links on every level; level 0 lists may grow to 2M as
            // later nodes link back.
            out[lc] = self.select(&found, self.m);
        }
        out
    }

    /// Node `n`'s links on `level` once `incoming` link to it: all of them while the list has
    /// room, else the heuristic's choice among the old and the new.
    #[inline(always)]
    fn relink(&self, n: u32, level: usize, incoming: &[u32]) -> Vec<u32> {
        let mut list: Vec<u32> = self.links(n, level).to_vec();
        for &i in incoming {
            if !list.contains(&i) {
                list.push(i);
            }
        }
        if list.len() <= self.cap(level) {
            return list;
        }
        let mut scored: Vec<(Dist, u32)> = Vec::with_capacity(list.len());
        for &x in &list {
            scored.push((self.dist_nodes(n, x), x));
        }
        scored.sort_unstable();
        self.select(&scored, self.cap(level))
    }

    #[inline(always)]
    fn knn(&self, q: &Probe, n: usize, ef: usize, keep: Option<KeyFilter<'_>>) -> Vec<(u64, f32)> {
        let Some(ep) = self.descend(q, 0) else {
            return Vec::new();
        };
        let mut visited = Visited::default();
        let accept =
            |id: u32| !self.deleted[id as usize] && keep.is_none_or(|k| k(self.keys[id as usize]));
        self.search_layer(q, &[ep], ef.max(n), 0, &mut visited, accept)
            .into_iter()
            .take(n)
            .map(|(d, id)| {
                let sim = if self.l2 {
                    -d.0.max(0.0).sqrt()
                } else {
                    1.0 - d.0
                };
                (self.keys[id as usize], sim)
            })
            .collect()
    }
}

/// A visited set (one bit per node), and the candidate heap a search reuses.
#[derive(Default)]
struct Visited {
    bits: Vec<u64>,
    candidates: BinaryHeap<Reverse<(Dist, u32)>>,
    /// The unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Visited {
    fn clear(&mut self, n: usize) {
        self.bits.clear();
        self.bits.resize(n.div_ceil(64), 0);
    }

    #[inline(always)]
    fn insert(&mut self, id: u32) -> bool {
        let (w, b) = ((id / 64) as usize, id % 64);
        let fresh = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        fresh
    }
}

// The graph operations as `WithSimd` types (not closures, which would not be inlined): pulp
// compiles each for the CPU's widest vectors, and the `#[inline(always)]` search, insert and
// distance code is compiled into it.

struct KnnOp<'a> {
    inner: &'a Inner,
    q: &'a Probe,
    n: usize,
    ef: usize,
    keep: Option<KeyFilter<'a>>,
}

impl pulp::WithSimd for KnnOp<'_> {
    type Output = Vec<(u64, f32)>;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        self.inner.knn(self.q, self.n, self.ef, self.keep)
    }
}

/// Nodes planned together (see [`Inner::plan`]): large enough that threads share work, small
/// enough that scoring a chunk's earlier nodes directly costs little beside the graph search.
const CHUNK: usize = 256;

/// Plans the chunk's nodes `first + i` for every `i` a shared counter hands this worker.
struct PlanOp<'a> {
    inner: &'a Inner,
    first: u32,
    len: usize,
    next: &'a AtomicUsize,
}

impl pulp::WithSimd for PlanOp<'_> {
    type Output = Vec<(usize, Vec<Vec<u32>>)>;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let mut visited = Visited::default();
        let mut out = Vec::new();
        loop {
            let i = self.next.fetch_add(1, AtomicOrdering::Relaxed);
            if i >= self.len {
                return out;
            }
            out.push((
                i,
                self.inner
                    .plan(self.first + i as u32, self.first, &mut visited),
            ));
        }
    }
}

/// Re-links the targets `targets[i]` for every `i` a shared counter hands this worker.
struct RelinkOp<'a> {
    inner: &'a Inner,
    targets: &'a [((u32, u8), Vec<u32>)],
    next: &'a AtomicUsize,
}

impl pulp::WithSimd for RelinkOp<'_> {
    type Output = Vec<(usize, Vec<u32>)>;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let mut out = Vec::new();
        loop {
            let i = self.next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(((n, level), incoming)) = self.targets.get(i) else {
                return out;
            };
            out.push((i, self.inner.relink(*n, usize::from(*level), incoming)));
        }
    }
}

/// Runs `work` on `threads` threads (the calling one among them) and puts each worker's
/// `(index, result)` pairs in index order: which thread did what never shows in the result.
fn parallel<T: Send>(
    threads: usize,
    len: usize,
    work: impl Fn() -> Vec<(usize, T)> + Sync,
) -> Vec<T> {
    let threads = threads.clamp(1, len.max(1));
    let mut parts: Vec<(usize, T)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|_| s.spawn(&work)).collect();
            let mut all = work();
            for h in others {
                // A worker that panicked re-raises here, as the single-threaded path would.
                all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            all
        })
    };
    parts.sort_unstable_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, t)| t).collect()
}

impl Inner {
    /// Inserts `items` chunk by chunk: append the chunk's nodes, plan their links in parallel
    /// against the graph before the chunk, write them, then re-link every node they chose, in
    /// parallel per (node, level). Deterministic: the same items give the same graph whatever
    /// the thread count.
    fn insert_all(&mut self, items: &[(u64, Vec<f32>)], arch: pulp::Arch, threads: usize) {
        self.reserve(items.len());
        for chunk in items.chunks(CHUNK) {
            let first = self.keys.len() as u32;
            for (key, v) in chunk {
                self.append(*key, v);
            }
            let next = AtomicUsize::new(0);
            let this = &*self;
            let plans = parallel(threads, chunk.len(), || {
                arch.dispatch(PlanOp {
                    inner: this,
                    first,
                    len: chunk.len(),
                    next: &next,
                })
            });
            let mut incoming: BTreeMap<(u32, u8), Vec<u32>> = BTreeMap::new();
            for (i, levels) in plans.iter().enumerate() {
                let id = first + i as u32;
                for (lc, links) in levels.iter().enumerate() {
                    self.set_links(id, lc, links);
                    for &n in links {
                        incoming.entry((n, lc as u8)).or_default().push(id);
                    }
                }
            }
            let targets: Vec<((u32, u8), Vec<u32>)> = incoming.into_iter().collect();
            let next = AtomicUsize::new(0);
            let this = &*self;
            let lists = parallel(threads, targets.len(), || {
                arch.dispatch(RelinkOp {
                    inner: this,
                    targets: &targets,
                    next: &next,
                })
            });
            for (((n, lc), _), list) in targets.iter().zip(lists) {
                self.set_links(*n, usize::from(*lc), &list);
            }
            for id in first..self.keys.len() as u32 {
                let level = self.levels[id as usize] as usize;
                if self.entry.is_none() || level > self.max_level {
                    self.entry = Some(id);
                    self.max_level = level;
                }
            }
        }
    }
}

/// An HNSW graph (see the module docs).
pub(crate) struct Hnsw {
    inner: RwLock<Inner>,
    metric: Metric,
    arch: pulp::Arch,
    /// Threads an insert uses.
    threads: usize,
}

fn poisoned() -> Error {
    Error::backend_msg("hnsw", "graph lock poisoned by a panic")
}

impl Hnsw {
    pub(crate) fn new(dims: usize, metric: Metric, m: usize, ef_construction: usize) -> Self {
        Self {
            inner: RwLock::new(Inner {
                dims,
                l2: metric == Metric::L2,
                m: m.max(2),
                ef_construction: ef_construction.max(1),
                blocks: Vec::new(),
                keys: Vec::new(),
                ids: HashMap::new(),
                deleted: Vec::new(),
                levels: Vec::new(),
                upper: Vec::new(),
                entry: None,
                max_level: 0,
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
            metric,
            arch: simd_arch(),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Inserts on `threads` threads (0: one per core).
    pub(crate) fn with_threads(mut self, threads: usize) -> Self {
        if threads > 0 {
            self.threads = threads;
        }
        self
    }

    fn prepare(&self, v: &[f32]) -> Vec<f32> {
        if self.metric == Metric::Cosine {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                return v.iter().map(|x| x / norm).collect();
            }
        }
        v.to_vec()
    }

    /// Loads a graph [`save`](AnnGraph::save)d before. Every field is checked before it is
    /// used or sized: the CRC, the header against the file's length, each level, link and the
    /// entry point; a file that fails any check is an error (the index rebuilds the graph).
    pub(crate) fn load(path: &Path, dims: usize, metric: Metric) -> Result<Self> {
        let bad = |why: &str| Error::corrupt(format!("graph {}", path.display()), why.to_string());
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
        let file_len = file.metadata()?.len();
        let mut r = CrcReader {
            inner: BufReader::new(file),
            crc: crc32fast::Hasher::new(),
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
        if &magic != MAGIC {
            return Err(bad("not a graph of this version (bad magic)"));
        }
        fn words<const W: usize>(r: &mut impl Read, count: usize) -> Option<Vec<[u8; W]>> {
            let mut b = vec![0u8; count.checked_mul(W)?];
            r.read_exact(&mut b).ok()?;
            Some(
                b.chunks_exact(W)
                    .map(|c| c.try_into().unwrap_or([0; W]))
                    .collect(),
            )
        }
        let u64s = |r: &mut CrcReader<_>, n| {
            words::<8>(r, n)
                .map(|w| w.into_iter().map(u64::from_le_bytes).collect::<Vec<_>>())
                .ok_or_else(|| bad("truncated"))
        };
        let u32s = |r: &mut CrcReader<_>, n| {
            words::<4>(r, n)
                .map(|w| w.into_iter().map(u32::from_le_bytes).collect::<Vec<_>>())
                .ok_or_else(|| bad("truncated"))
        };
        let head = u64s(&mut r, 8)?;
        let [d, l2, m, efc, n, entry, max_level, rng] = head[..] else {
            return Err(bad("bad header"));
        };
        if d != dims as u64 || (l2 == 1) != (metric == Metric::L2) {
            return Err(Error::DimensionMismatch {
                expected: dims,
                actual: d as usize,
            });
        }
        if !(1..=MAX_M as u64).contains(&m) || l2 > 1 || max_level > MAX_LEVEL as u64 {
            return Err(bad("header out of range (m, metric or top level)"));
        }
        if n > u64::from(u32::MAX) || (n == 0) != (entry == u64::MAX) || (n > 0 && entry >= n) {
            return Err(bad("header out of range (node count or entry point)"));
        }
        let (n, m) = (n as usize, m as usize);
        let stride = stride(m, dims);
        // The fixed part alone must fit in the file before anything is allocated for it.
        let fixed = (n as u64)
            .checked_mul(stride as u64 * 4 + 12)
            .and_then(|x| x.checked_add(8 + 64 + 4))
            .filter(|&x| x <= file_len)
            .ok_or_else(|| bad("header describes more nodes than the file holds"))?;
        // Straight into huge-page storage (the file was sized against `fixed` above).
        let blocks = {
            let mut bytes = vec![0u8; n * stride * 4];
            r.read_exact(&mut bytes).map_err(|_| bad("truncated"))?;
            let mut blocks = block_storage(n * stride);
            blocks.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            blocks
        };
        let keys = u64s(&mut r, n)?;
        let flags = u32s(&mut r, n)?;
        let levels: Vec<usize> = flags.iter().map(|f| (f >> 1) as usize).collect();
        if levels.iter().any(|&l| l > max_level as usize) {
            return Err(bad("a node's level is above the graph's top level"));
        }
        let upper_words: u64 = levels.iter().map(|&l| (l * (1 + m)) as u64).sum();
        if fixed + upper_words * 4 != file_len {
            return Err(bad("file length does not match its header"));
        }
        let mut upper = Vec::with_capacity(n);
        for &level in &levels {
            upper.push(u32s(&mut r, level * (1 + m))?);
        }
        let expected = r.crc.clone().finalize();
        let mut trailer = [0u8; 4];
        r.inner
            .read_exact(&mut trailer)
            .map_err(|_| bad("truncated"))?;
        if u32::from_le_bytes(trailer) != expected {
            return Err(bad("checksum mismatch"));
        }
        let links_ok = |list: &[u32], cap: usize| {
            list.first().is_some_and(|&c| c as usize <= cap)
                && list[1..1 + list[0] as usize]
                    .iter()
                    .all(|&x| (x as usize) < n)
        };
        let level0_ok =
            (0..n).all(|i| links_ok(&blocks[i * stride..i * stride + 1 + 2 * m], 2 * m));
        let upper_ok = upper
            .iter()
            .all(|u| u.chunks_exact(1 + m).all(|l| links_ok(l, m)));
        if !level0_ok || !upper_ok {
            return Err(bad("a link points past the last node"));
        }
        if n > 0 && levels[entry as usize] != max_level as usize {
            return Err(bad("the entry point is not on the top level"));
        }
        let deleted: Vec<bool> = flags.iter().map(|f| f & 1 == 1).collect();
        let ids = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !deleted[*i])
            .map(|(i, k)| (*k, i as u32))
            .collect();
        let graph = Self::new(dims, metric, m, efc as usize);
        {
            let mut g = graph.inner.write().map_err(|_| poisoned())?;
            g.blocks = blocks;
            g.keys = keys;
            g.ids = ids;
            g.levels = levels.iter().map(|&l| l as u8).collect();
            g.deleted = deleted;
            g.upper = upper;
            g.entry = (entry != u64::MAX).then_some(entry as u32);
            g.max_level = max_level as usize;
            g.rng = rng;
        }
        Ok(graph)
    }
}

impl AnnGraph for Hnsw {
    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()> {
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        if let Some((_, v)) = items.iter().find(|(_, v)| v.len() != g.dims) {
            return Err(Error::DimensionMismatch {
                expected: g.dims,
                actual: v.len(),
            });
        }
        let prepared: Vec<(u64, Vec<f32>)> =
            items.iter().map(|(k, v)| (*k, self.prepare(v))).collect();
        g.insert_all(&prepared, self.arch, self.threads);
        Ok(())
    }

    fn remove(&self, key: u64) -> Result<()> {
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        if let Some(id) = g.ids.remove(&key) {
            g.deleted[id as usize] = true;
        }
        Ok(())
    }

    fn rename(&self, from: u64, to: u64) -> Result<()> {
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        if let Some(id) = g.ids.remove(&from) {
            g.ids.insert(to, id);
            g.keys[id as usize] = to;
        }
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        n: usize,
        ef: usize,
        keep: Option<KeyFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        let g = self.inner.read().map_err(|_| poisoned())?;
        if query.len() != g.dims {
            return Err(Error::DimensionMismatch {
                expected: g.dims,
                actual: query.len(),
            });
        }
        let q = Probe::new(&self.prepare(query));
        Ok(self.arch.dispatch(KnnOp {
            inner: &g,
            q: &q,
            n,
            ef,
            keep,
        }))
    }

    fn len(&self) -> usize {
        self.inner.read().map(|g| g.ids.len()).unwrap_or(0)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let g = self.inner.read().map_err(|_| poisoned())?;
        let mut w = CrcWriter {
            inner: BufWriter::new(
                std::fs::File::create(path)
                    .map_err(|e| Error::io(e, format!("creating {}", path.display())))?,
            ),
            crc: crc32fast::Hasher::new(),
        };
        w.write_all(MAGIC)?;
        let head = [
            g.dims as u64,
            u64::from(g.l2),
            g.m as u64,
            g.ef_construction as u64,
            g.keys.len() as u64,
            g.entry.map_or(u64::MAX, u64::from),
            g.max_level as u64,
            g.rng,
        ];
        for x in head {
            w.write_all(&x.to_le_bytes())?;
        }
        for x in &g.blocks {
            w.write_all(&x.to_le_bytes())?;
        }
        for k in &g.keys {
            w.write_all(&k.to_le_bytes())?;
        }
        for (i, l) in g.levels.iter().enumerate() {
            let flags = (u32::from(*l) << 1) | u32::from(g.deleted[i]);
            w.write_all(&flags.to_le_bytes())?;
        }
        for node in &g.upper {
            for x in node {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        let crc = w.crc.finalize();
        let mut w = w.inner;
        w.write_all(&crc.to_le_bytes())?;
        w.into_inner()
            .map_err(|e| Error::io(e.into_error(), format!("writing {}", path.display())))?
            .sync_data()
            .map_err(|e| Error::io(e, format!("writing {}", path.display())))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn points(n: usize, dims: usize) -> Vec<Vec<f32>> {
        let mut state = 7u64;
        (0..n)
            .map(|_| {
                (0..dims)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % 1000) as f32 / 500.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn built(threads: usize, items: &[(u64, &[f32])], dir: &Path) -> Vec<u8> {
        let mut g = Hnsw::new(24, Metric::Cosine, 8, 64);
        g.threads = threads;
        // Two batches, the second replacing some keys of the first.
        let (a, b) = items.split_at(700);
        g.add_batch(a).unwrap();
        g.add_batch(b).unwrap();
        let path = dir.join(format!("g{threads}"));
        g.save(&path).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn the_same_items_give_the_same_graph_on_one_thread_or_three() {
        let vs = points(1_300, 24);
        let items: Vec<(u64, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| ((i % 1_100) as u64, v.as_slice()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(built(1, &items, dir.path()), built(3, &items, dir.path()));
    }

    #[test]
    fn vectors_are_stored_as_rounded_bfloat16_pairs() {
        // Ties go to even: 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), to_bf16(1.0));
        assert_eq!(low(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(high(to_bf16(-2.5) << 16), -2.5);
        // Any finite f32 keeps its range (f16 would overflow).
        assert!((low(to_bf16(1e30)) / 1e30 - 1.0).abs() < 1.0 / 128.0);
        for dims in [1, 7, 24, 33, 384] {
            let v = &points(1, dims)[0];
            let mut words = Vec::new();
            pack(v, &mut words);
            assert_eq!(words.len(), dims.div_ceil(2));
            let p = Probe::of_words(&words);
            let back: Vec<f32> = p
                .even
                .iter()
                .zip(&p.odd)
                .flat_map(|(e, o)| [*e, *o])
                .collect();
            for (x, y) in v.iter().zip(&back) {
                assert!((x - y).abs() <= x.abs() / 256.0, "{x} stored as {y}");
            }
            // Past an odd end the padding is zero, so it adds nothing to a distance.
            assert!(back[dims..].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn stored_distances_track_f32_and_agree_between_probe_and_node() {
        for dims in [5, 32, 100, 384] {
            let vs = points(2, dims);
            let (a, b) = (&vs[0], &vs[1]);
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            pack(a, &mut wa);
            pack(b, &mut wb);
            let exact_dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let exact_l2: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            let scale: f32 = a.iter().chain(b).map(|x| x * x).sum();
            assert!((dot(&Probe::new(a), &wb) - exact_dot).abs() < scale / 100.0);
            assert!((l2sq(&Probe::new(a), &wb) - exact_l2).abs() < scale / 100.0);
            // A stored node as a probe measures exactly as the node-to-node distance does:
            // insertion mixes the two.
            let pa = Probe::of_words(&wa);
            assert_eq!(dot(&pa, &wb).to_bits(), dot_stored(&wa, &wb).to_bits());
            assert_eq!(l2sq(&pa, &wb).to_bits(), l2sq_stored(&wa, &wb).to_bits());
        }
    }

    #[test]
    fn every_instruction_set_builds_the_same_graph() {
        let vs = points(1_300, 24);
        let items: Vec<(u64, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut archs = vec![("scalar", pulp::Arch::Scalar)];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if let Some(v3) = pulp::x86::V3::try_new() {
            archs.push(("avx2", pulp::Arch::V3(v3)));
        }
        archs.push(("widest", pulp::Arch::new()));
        let files: Vec<Vec<u8>> = archs
            .iter()
            .map(|(name, arch)| {
                let mut g = Hnsw::new(24, Metric::Cosine, 8, 64);
                g.arch = *arch;
                g.add_batch(&items).unwrap();
                let path = dir.path().join(name);
                g.save(&path).unwrap();
                std::fs::read(path).unwrap()
            })
            .collect();
        for (f, (name, _)) in files.iter().zip(&archs) {
            assert!(f == &files[0], "{name} built another graph than scalar");
        }
    }

    #[test]
    fn a_batch_finds_its_own_members_exactly() {
        // One chunk on an empty graph: every node is planned against the chunk's earlier
        // nodes only, and each query finds itself first.
        let vs = points(200, 24);
        let g = Hnsw::new(24, Metric::Cosine, 8, 64);
        let items: Vec<(u64, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        g.add_batch(&items).unwrap();
        for (i, v) in vs.iter().enumerate() {
            assert_eq!(g.search(v, 1, 32, None).unwrap()[0].0, i as u64);
        }
    }
}
