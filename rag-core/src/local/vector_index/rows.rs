//! Where an index's per-record columns are: row `i` of a [`Rows`] is slot `i`'s `width`
//! values (its vector: `dims` floats; its norm, or one filter field's value: one).
//!
//! A persisted index keeps each column in a file of this process's own — unnamed, in the
//! index's directory — written with positional writes and read through a memory map. They then
//! live in the kernel's page cache, not in the process's heap: writing a million records
//! (stage 6) adds no resident memory for them, a search maps in the pages it reads, and the
//! kernel may drop those and read them again under memory pressure. Rows are appended to a
//! small tail in memory first and written out at the next [`flush`](Rows::flush) — the
//! index flushes at the start of every write, so a failed write (a full disk) fails before
//! the write changes anything and loses nothing. The files are a cache of the segments (replay
//! fills them on every open), so they are never synced. An in-memory index, or one whose
//! directory takes no file (read-only), keeps its columns on the heap.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// Bytes of room a column file starts with (it doubles from there).
const FIRST_BYTES: usize = 64 << 10;
/// Bytes copied per write when rows move down.
const COPY_BLOCK: usize = 1 << 20;

/// One column of an index: `width` values of `T` per row.
pub(super) struct Rows<T: Pod> {
    width: usize,
    /// Rows held (written out or in the tail).
    rows: usize,
    store: Store<T>,
}

enum Store<T> {
    Heap(Vec<T>),
    Mapped(Mapped<T>),
}

/// Rows in an unnamed file (made at the first flush), mapped whole once it has any, and the
/// rows not written out yet.
struct Mapped<T> {
    /// The index directory the file is in.
    dir: PathBuf,
    /// What the column holds (for errors).
    what: &'static str,
    file: Option<File>,
    map: Option<Mmap>,
    /// Rows of room in the file.
    capacity: usize,
    /// Rows in the file.
    written: usize,
    /// Rows `written..` not written out yet.
    tail: Vec<T>,
}

impl<T: Pod> std::fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("width", &self.width)
            .field("rows", &self.rows)
            .field(
                "store",
                &match self.store {
                    Store::Heap(_) => "heap",
                    Store::Mapped(_) => "mapped file",
                },
            )
            .finish()
    }
}

impl<T: Pod> Rows<T> {
    /// Rows on the heap.
    pub(super) fn heap(width: usize) -> Self {
        Self {
            width,
            rows: 0,
            store: Store::Heap(Vec::new()),
        }
    }

    /// Rows in an unnamed file in `dir` (`what` names them in errors), or on the heap where
    /// positional writes are not available, or where no file can be made there.
    pub(super) fn in_dir(dir: &Path, width: usize, what: &'static str) -> Self {
        if !cfg!(unix) || width == 0 {
            return Self::heap(width);
        }
        Self {
            width,
            rows: 0,
            store: Store::Mapped(Mapped {
                dir: dir.to_path_buf(),
                what,
                file: None,
                map: None,
                capacity: 0,
                written: 0,
                tail: Vec::new(),
            }),
        }
    }

    /// How many rows there are.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Row `i`.
    pub(super) fn get(&self, i: usize) -> &[T] {
        let w = self.width;
        match &self.store {
            Store::Heap(v) => &v[i * w..(i + 1) * w],
            Store::Mapped(m) if i >= m.written => {
                let j = i - m.written;
                &m.tail[j * w..(j + 1) * w]
            }
            Store::Mapped(m) => {
                let size = std::mem::size_of::<T>();
                let bytes = m.map.as_deref().unwrap_or_default();
                // The map starts on a page and rows are whole values apart: always aligned.
                bytemuck::cast_slice(&bytes[i * w * size..(i + 1) * w * size])
            }
        }
    }

    /// Rows `start..end` of a one-wide column, as one slice: a run of rows pushed between two
    /// flushes (a value of several rows, such as a keyword's bytes), which lies whole in the
    /// file or whole in the tail.
    pub(super) fn range(&self, start: usize, end: usize) -> &[T] {
        debug_assert_eq!(self.width, 1);
        match &self.store {
            Store::Heap(v) => &v[start..end],
            Store::Mapped(m) if start >= m.written => &m.tail[start - m.written..end - m.written],
            Store::Mapped(m) => {
                debug_assert!(end <= m.written, "a run of rows split by a flush");
                let size = std::mem::size_of::<T>();
                let bytes = m.map.as_deref().unwrap_or_default();
                bytemuck::cast_slice(&bytes[start * size..end * size])
            }
        }
    }

    /// Appends the one-wide rows `values` (a run [`range`](Self::range) reads back whole).
    pub(super) fn extend(&mut self, values: &[T]) {
        debug_assert_eq!(self.width, 1);
        match &mut self.store {
            Store::Heap(v) => v.extend_from_slice(values),
            Store::Mapped(m) => m.tail.extend_from_slice(values),
        }
        self.rows += values.len();
    }

    /// Row `i`'s first value (the value of a one-wide column).
    pub(super) fn one(&self, i: usize) -> T {
        self.get(i)[0]
    }

    /// Appends `row` (`width` values) as the next row.
    pub(super) fn push(&mut self, row: &[T]) {
        debug_assert_eq!(row.len(), self.width);
        match &mut self.store {
            Store::Heap(v) => v.extend_from_slice(row),
            Store::Mapped(m) => m.tail.extend_from_slice(row),
        }
        self.rows += 1;
    }

    /// Writes the rows held in memory out to the file. On an error (a full disk:
    /// [`Error`] naming the directory) they stay in memory, readable as before.
    pub(super) fn flush(&mut self) -> Result<()> {
        let Store::Mapped(m) = &mut self.store else {
            return Ok(());
        };
        if m.tail.is_empty() {
            return Ok(());
        }
        if m.file.is_none() {
            match tempfile::tempfile_in(&m.dir) {
                Ok(file) => m.file = Some(file),
                Err(e) => {
                    tracing::debug!(dir = %m.dir.display(), error = %e, column = m.what, "no column file; kept in memory");
                    self.store = Store::Heap(std::mem::take(&mut m.tail));
                    return Ok(());
                }
            }
        }
        let w = self.width;
        m.reserve(self.rows * w)?;
        m.write_at(bytemuck::cast_slice(&m.tail), m.written * w)?;
        m.written = self.rows;
        m.tail = Vec::new();
        Ok(())
    }

    /// Calls `f` on every row, in order, with its number; rows for which it returns `true`
    /// (it changed them) are written back — in blocks, so a mapped file is never read whole
    /// into memory.
    pub(super) fn update(&mut self, mut f: impl FnMut(usize, &mut [T]) -> bool) -> Result<()> {
        self.flush()?;
        let w = self.width;
        match &mut self.store {
            Store::Heap(v) => {
                for (i, row) in v.chunks_exact_mut(w).enumerate() {
                    f(i, row);
                }
            }
            Store::Mapped(m) => {
                let size = std::mem::size_of::<T>();
                let per_block = (COPY_BLOCK / (w * size)).max(1);
                let mut start = 0;
                while start < m.written {
                    let end = (start + per_block).min(m.written);
                    let bytes = m.map.as_deref().unwrap_or_default();
                    let mut block: Vec<T> =
                        bytemuck::cast_slice(&bytes[start * w * size..end * w * size]).to_vec();
                    let mut changed = false;
                    for (k, row) in block.chunks_exact_mut(w).enumerate() {
                        changed |= f(start + k, row);
                    }
                    if changed {
                        m.write_at(bytemuck::cast_slice(&block), start * w)?;
                    }
                    start = end;
                }
            }
        }
        Ok(())
    }

    /// Renumbers the rows `live` (ascending) as `0..live.len()`, moving them down in place,
    /// and drops the rest.
    pub(super) fn renumber(&mut self, live: &[usize]) -> Result<()> {
        self.flush()?;
        let w = self.width;
        match &mut self.store {
            Store::Heap(v) => {
                for (new, &old) in live.iter().enumerate() {
                    if new != old {
                        v.copy_within(old * w..(old + 1) * w, new * w);
                    }
                }
                v.truncate(live.len() * w);
            }
            Store::Mapped(m) => {
                let size = std::mem::size_of::<T>();
                // Runs of rows that move by the same distance go in one write each.
                let mut k = 0;
                while k < live.len() {
                    let (new, old) = (k, live[k]);
                    let mut end = k + 1;
                    while end < live.len() && live[end] == old + (end - k) {
                        end += 1;
                    }
                    if new != old {
                        // Front to back, a block at a time: the rows only move down.
                        let (from, to, len) =
                            (old * w * size, new * w * size, (end - k) * w * size);
                        let mut done = 0;
                        while done < len {
                            let n = (len - done).min(COPY_BLOCK);
                            let bytes = m.map.as_deref().unwrap_or_default();
                            let block = bytes[from + done..from + done + n].to_vec();
                            m.write_bytes_at(&block, to + done)?;
                            done += n;
                        }
                    }
                    k = end;
                }
                m.written = live.len();
            }
        }
        self.rows = live.len();
        Ok(())
    }
}

impl<T: Pod> Mapped<T> {
    fn what(&self, doing: &str) -> String {
        format!("{doing} the {} file in {}", self.what, self.dir.display())
    }

    /// Grows the file (doubling) and its map to hold `values` values.
    fn reserve(&mut self, values: usize) -> Result<()> {
        if values <= self.capacity {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let size = std::mem::size_of::<T>();
        let capacity = values
            .max(2 * self.capacity)
            .max(FIRST_BYTES.div_ceil(size));
        file.set_len((capacity * size) as u64)
            .map_err(|e| Error::io(e, self.what("growing")))?;
        // SAFETY: the file is this process's own unnamed temporary file: no other process can
        // open it, and this one only writes to it through `write_bytes_at`, under `&mut self`
        // of the `Rows` that owns it, so no slice borrowed from the map (`get` takes `&self`)
        // is alive while its bytes change; the file is never made shorter than the map.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(e, self.what("mapping")))?;
        self.map = Some(map);
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `values` at value `at`.
    fn write_at(&self, values: &[u8], at: usize) -> Result<()> {
        self.write_bytes_at(values, at * std::mem::size_of::<T>())
    }

    #[cfg(unix)]
    fn write_bytes_at(&self, bytes: &[u8], offset: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return Err(Error::invalid("no column file to write to"));
        };
        file.write_all_at(bytes, offset as u64)
            .map_err(|e| Error::io(e, self.what("writing")))
    }

    #[cfg(not(unix))]
    fn write_bytes_at(&self, _bytes: &[u8], _offset: usize) -> Result<()> {
        Err(Error::invalid("positional writes need a unix system"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    /// Every row of `v`.
    fn rows<T: Pod>(v: &Rows<T>) -> Vec<Vec<T>> {
        (0..v.len()).map(|i| v.get(i).to_vec()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// The mapped file holds exactly what the heap holds through appends (past its first
        /// capacity and doublings, read before and after flushes) and renumberings (runs
        /// longer than a copy block included).
        #[test]
        fn a_mapped_file_holds_what_the_heap_holds(
            width in prop::sample::select(vec![1usize, 3, 384, 700]),
            steps in prop::collection::vec(
                (1usize..3_000, any::<bool>(), prop::collection::vec(any::<bool>(), 0..64)),
                1..4,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut heap = Rows::<f32>::heap(width);
            let mut mapped = Rows::<f32>::in_dir(dir.path(), width, "test");
            let mut next = 0f32;
            for (append, flush, keep) in steps {
                for _ in 0..append {
                    next += 1.0;
                    let row: Vec<f32> = (0..width).map(|j| next + j as f32 / 1024.0).collect();
                    heap.push(&row);
                    mapped.push(&row);
                }
                if flush {
                    mapped.flush().unwrap();
                    prop_assert!(matches!(mapped.store, Store::Mapped(_)));
                }
                // Rewrite every third row in place (across blocks of a mapped file).
                let change = |i: usize, row: &mut [f32]| {
                    if !i.is_multiple_of(3) {
                        return false;
                    }
                    row[0] = -(i as f32);
                    true
                };
                heap.update(change).unwrap();
                mapped.update(change).unwrap();
                prop_assert_eq!(rows(&heap), rows(&mapped));
                // Drop some of the first rows: all later ones move down as one long run.
                let live: Vec<usize> = (0..heap.len())
                    .filter(|&i| i >= keep.len() || keep[i])
                    .collect();
                heap.renumber(&live).unwrap();
                mapped.renumber(&live).unwrap();
                prop_assert_eq!(rows(&heap), rows(&mapped));
            }
        }
    }

    #[test]
    fn columns_of_other_types_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut codes = Rows::<u32>::in_dir(dir.path(), 1, "test");
        let mut flags = Rows::<u8>::in_dir(dir.path(), 1, "test");
        for i in 0..100_000u32 {
            codes.push(&[i * 7]);
            flags.push(&[(i % 3) as u8]);
            if i % 30_000 == 0 {
                codes.flush().unwrap();
                flags.flush().unwrap();
            }
        }
        codes.flush().unwrap();
        flags.flush().unwrap();
        assert!(matches!(codes.store, Store::Mapped(_)));
        assert!((0..100_000u32).all(|i| codes.one(i as usize) == i * 7));
        assert!((0..100_000u32).all(|i| flags.one(i as usize) == (i % 3) as u8));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Runs of bytes (keyword values) read back whole, written out or not, in a file as
        /// on the heap.
        #[test]
        fn runs_read_back_whole_across_flushes(
            runs in prop::collection::vec((".{0,40}", any::<bool>()), 1..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut heap = Rows::<u8>::heap(1);
            let mut mapped = Rows::<u8>::in_dir(dir.path(), 1, "test");
            let mut spans = Vec::new();
            for (run, flush) in &runs {
                spans.push((mapped.len(), mapped.len() + run.len()));
                heap.extend(run.as_bytes());
                mapped.extend(run.as_bytes());
                if *flush {
                    mapped.flush().unwrap();
                }
                for (i, (run, _)) in runs.iter().enumerate().take(spans.len()) {
                    let (start, end) = spans[i];
                    prop_assert_eq!(mapped.range(start, end), run.as_bytes());
                    prop_assert_eq!(heap.range(start, end), run.as_bytes());
                }
            }
        }
    }

    #[test]
    fn a_directory_that_takes_no_file_keeps_the_rows_in_memory() {
        let mut v = Rows::<f32>::in_dir(Path::new("/nonexistent/ragloop-index"), 4, "test");
        v.push(&[1.0, 2.0, 3.0, 4.0]);
        v.flush().unwrap();
        assert!(matches!(v.store, Store::Heap(_)));
        assert_eq!(v.get(0), &[1.0, 2.0, 3.0, 4.0]);
        v.push(&[5.0; 4]);
        v.flush().unwrap();
        assert_eq!(v.get(1), &[5.0; 4]);
    }
}
