//! Where an index's vectors are: slot `i`'s is `dims` floats at row `i`.
//!
//! A persisted index keeps them in a file of this process's own — unnamed, in the index's
//! directory — written with positional writes and read through a memory map. They then live in
//! the kernel's page cache, not in the process's heap: writing a million records (stage 6) adds
//! no resident memory for their vectors, and a search maps in the pages it reads, which the
//! kernel may drop and read again under memory pressure. The file is a cache of the segments
//! (replay fills it on every open), so it is never synced. An in-memory index, or one whose
//! directory takes no file (read-only), keeps its vectors on the heap.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Rows of room the vector file starts with (it doubles from there).
const FIRST_ROWS: usize = 4_096;
/// Bytes copied per write when rows move down.
const COPY_BLOCK: usize = 1 << 20;

/// The vectors of one index, row by row.
pub(super) struct Vectors {
    dims: usize,
    /// Rows written.
    rows: usize,
    store: Store,
}

enum Store {
    Heap(Vec<f32>),
    Mapped(Mapped),
}

/// An unnamed file holding `capacity` rows, mapped whole once it has any.
struct Mapped {
    /// The index directory the file is in (for errors).
    dir: PathBuf,
    file: File,
    map: Option<Mmap>,
    capacity: usize,
}

impl std::fmt::Debug for Vectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vectors")
            .field("dims", &self.dims)
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

impl Vectors {
    /// Vectors on the heap.
    pub(super) fn heap(dims: usize) -> Self {
        Self {
            dims,
            rows: 0,
            store: Store::Heap(Vec::new()),
        }
    }

    /// Vectors in an unnamed file in `dir`, or on the heap where no file can be made there
    /// (or positional writes are not available).
    pub(super) fn in_dir(dir: &Path, dims: usize) -> Self {
        if !cfg!(unix) || dims == 0 {
            return Self::heap(dims);
        }
        match tempfile::tempfile_in(dir) {
            Ok(file) => Self {
                dims,
                rows: 0,
                store: Store::Mapped(Mapped {
                    dir: dir.to_path_buf(),
                    file,
                    map: None,
                    capacity: 0,
                }),
            },
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "no vector file; vectors kept in memory");
                Self::heap(dims)
            }
        }
    }

    /// Row `i`'s vector.
    pub(super) fn get(&self, i: usize) -> &[f32] {
        let d = self.dims;
        match &self.store {
            Store::Heap(v) => &v[i * d..(i + 1) * d],
            Store::Mapped(m) => {
                let bytes = m.map.as_deref().unwrap_or_default();
                // The map starts on a page and rows are whole floats apart: always aligned.
                bytemuck::cast_slice(&bytes[i * d * 4..(i + 1) * d * 4])
            }
        }
    }

    /// Appends `vectors` (each `dims` long) as the next rows. Nothing is appended when it
    /// fails (a full disk: [`Error`] naming the file's directory).
    pub(super) fn append(&mut self, vectors: &[&[f32]]) -> Result<()> {
        let d = self.dims;
        match &mut self.store {
            Store::Heap(v) => {
                for x in vectors {
                    v.extend_from_slice(x);
                }
            }
            Store::Mapped(m) => {
                let rows = self.rows + vectors.len();
                m.reserve(rows, d)?;
                let mut bytes = Vec::with_capacity(vectors.len() * d * 4);
                for x in vectors {
                    bytes.extend_from_slice(bytemuck::cast_slice(x));
                }
                m.write_at(&bytes, self.rows * d * 4)?;
            }
        }
        self.rows += vectors.len();
        Ok(())
    }

    /// Renumbers the rows `live` (ascending) as `0..live.len()`, moving them down in place,
    /// and drops the rest.
    pub(super) fn renumber(&mut self, live: &[usize]) -> Result<()> {
        let d = self.dims;
        match &mut self.store {
            Store::Heap(v) => {
                for (new, &old) in live.iter().enumerate() {
                    if new != old {
                        v.copy_within(old * d..(old + 1) * d, new * d);
                    }
                }
                v.truncate(live.len() * d);
            }
            Store::Mapped(m) => {
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
                        let (from, to, len) = (old * d * 4, new * d * 4, (end - k) * d * 4);
                        let mut done = 0;
                        while done < len {
                            let n = (len - done).min(COPY_BLOCK);
                            let bytes = m.map.as_deref().unwrap_or_default();
                            let block = bytes[from + done..from + done + n].to_vec();
                            m.write_at(&block, to + done)?;
                            done += n;
                        }
                    }
                    k = end;
                }
            }
        }
        self.rows = live.len();
        Ok(())
    }
}

impl Mapped {
    fn what(&self, doing: &str) -> String {
        format!("{doing} the vector file in {}", self.dir.display())
    }

    /// Grows the file (doubling) and its map to hold `rows` rows.
    fn reserve(&mut self, rows: usize, dims: usize) -> Result<()> {
        if rows <= self.capacity {
            return Ok(());
        }
        let capacity = rows.max(2 * self.capacity).max(FIRST_ROWS);
        self.file
            .set_len((capacity * dims * 4) as u64)
            .map_err(|e| Error::io(e, self.what("growing")))?;
        // SAFETY: the file is this process's own unnamed temporary file: no other process can
        // open it, and this one only writes to it through `write_at`, under `&mut self` of the
        // `Vectors` that owns it, so no slice borrowed from the map (`get` takes `&self`) is
        // alive while its bytes change; the file is never made shorter than the map.
        #[allow(unsafe_code)]
        let map =
            unsafe { Mmap::map(&self.file) }.map_err(|e| Error::io(e, self.what("mapping")))?;
        self.map = Some(map);
        self.capacity = capacity;
        Ok(())
    }

    #[cfg(unix)]
    fn write_at(&self, bytes: &[u8], offset: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(|e| Error::io(e, self.what("writing")))
    }

    #[cfg(not(unix))]
    fn write_at(&self, _bytes: &[u8], _offset: usize) -> Result<()> {
        Err(Error::invalid("positional writes need a unix system"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    /// Rows of `v`, each as its vector.
    fn rows(v: &Vectors) -> Vec<Vec<f32>> {
        (0..v.rows).map(|i| v.get(i).to_vec()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// The mapped file holds exactly what the heap holds through appends (past its first
        /// capacity and doublings) and renumberings (runs longer than a copy block included).
        #[test]
        fn a_mapped_file_holds_what_the_heap_holds(
            dims in prop::sample::select(vec![1usize, 3, 384, 700]),
            steps in prop::collection::vec((1usize..3_000, prop::collection::vec(any::<bool>(), 0..64)), 1..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut heap = Vectors::heap(dims);
            let mut mapped = Vectors::in_dir(dir.path(), dims);
            prop_assert!(matches!(mapped.store, Store::Mapped(_)));
            let mut next = 0f32;
            for (append, keep) in steps {
                let batch: Vec<Vec<f32>> = (0..append)
                    .map(|_| {
                        next += 1.0;
                        (0..dims).map(|j| next + j as f32 / 1024.0).collect()
                    })
                    .collect();
                let refs: Vec<&[f32]> = batch.iter().map(Vec::as_slice).collect();
                heap.append(&refs).unwrap();
                mapped.append(&refs).unwrap();
                // Drop some of the first rows: all later ones move down as one long run.
                let live: Vec<usize> = (0..heap.rows)
                    .filter(|&i| i >= keep.len() || keep[i])
                    .collect();
                heap.renumber(&live).unwrap();
                mapped.renumber(&live).unwrap();
                prop_assert_eq!(rows(&heap), rows(&mapped));
            }
        }
    }

    #[test]
    fn a_directory_that_takes_no_file_keeps_the_vectors_in_memory() {
        let v = Vectors::in_dir(Path::new("/nonexistent/ragloop-index"), 4);
        assert!(matches!(v.store, Store::Heap(_)));
    }
}
