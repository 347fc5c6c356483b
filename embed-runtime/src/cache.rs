//! [`PooledCache`]: the encoder's pooled vectors on disk, keyed by (encoder, token ids), so
//! that text already encoded is never encoded again — by a rerun, by the base model and a
//! linear adapter trained on it (same encoder, different head: the adapter's vectors are its
//! head over the cached pooled vectors), or by N embedding workers on one machine.
//!
//! One directory per encoder (its weights hash, sequence limit and pooling). Each writer
//! appends to a file of its own (`<pid>-<nanos>.vec`), so concurrent processes never share
//! a file; opening reads them all. A file is `RLPOOL1\n`, the dimension (u32 LE), then records
//! of a 16-byte key, `dims` f32 LE and an FNV-1a checksum of both (u32 LE). A record cut short
//! by a crash or one whose checksum fails is skipped (and re-encoded), never trusted.
//!
//! Beside them, *links* from a text to its token key (`<pid>-<nanos>.lnk`: `RLPLNK1\n`, then
//! records of the [`text_key`], the token [`key`] and their checksum), so a text seen before
//! finds its vector without being tokenised again — tokenising was most of the time of a pass
//! whose vectors all come from the cache (stage 5 after stage 2's pass). A link is written
//! after its vector; a text without one is tokenised and looked up by its token ids.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rag_core::{Error, Result};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"RLPOOL1\n";
const LINK_MAGIC: &[u8; 8] = b"RLPLNK1\n";
/// Bytes of one link record: text key, token key, checksum.
const LINK_RECORD: usize = 16 + 16 + 4;

/// A cache key: the first 16 bytes of SHA-256 over the token ids (u32 LE).
pub type Key = [u8; 16];

/// The key of one tokenised sequence.
pub fn key(ids: &[u32]) -> Key {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.finalize()[..16]);
    k
}

/// The key of a text as a tokenizer reads it: the first 16 bytes of SHA-256 over `tokenizer`
/// (what identifies the tokenizer and its sequence limit), the prefix and the text, each
/// length-delimited.
pub fn text_key(tokenizer: &Key, prefix: &str, text: &str) -> Key {
    let mut h = Sha256::new();
    h.update(tokenizer);
    for part in [prefix, text] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.finalize()[..16]);
    k
}

fn checksum(key: &Key, bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.iter().chain(bytes) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Pooled vectors of one encoder, in memory and appended to disk.
pub struct PooledCache {
    dir: PathBuf,
    dims: usize,
    vectors: RwLock<HashMap<Key, Box<[f32]>>>,
    /// Text key → token key.
    links: RwLock<HashMap<Key, Key>>,
    writer: Mutex<Option<BufWriter<std::fs::File>>>,
    link_writer: Mutex<Option<BufWriter<std::fs::File>>>,
    /// Records skipped on open (cut short or failing their checksum).
    pub skipped: usize,
}

impl std::fmt::Debug for PooledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledCache")
            .field("dir", &self.dir)
            .field("dims", &self.dims)
            .field("len", &self.len())
            .finish()
    }
}

fn io(what: String, e: std::io::Error) -> Error {
    Error::backend("embed-runtime", what, e)
}

impl PooledCache {
    /// Opens (or creates) the cache in `dir` for vectors of `dims`, reading every file there.
    pub fn open(dir: &Path, dims: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(format!("creating the cache {}", dir.display()), e))?;
        let mut vectors = HashMap::new();
        let mut links = HashMap::new();
        let mut skipped = 0;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| io(format!("reading the cache {}", dir.display()), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| io(format!("reading the cache {}", dir.display()), e))?
                .path();
            if path.extension().is_some_and(|x| x == "vec") {
                skipped += read_file(&path, dims, &mut vectors)?;
            } else if path.extension().is_some_and(|x| x == "lnk") {
                skipped += read_links(&path, &mut links)?;
            }
        }
        if skipped > 0 {
            tracing::warn!(cache = %dir.display(), skipped, "damaged cache records skipped (they are encoded again)");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            dims,
            vectors: RwLock::new(vectors),
            links: RwLock::new(links),
            writer: Mutex::new(None),
            link_writer: Mutex::new(None),
            skipped,
        })
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.vectors.read().map_or(0, |v| v.len())
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vector of `key`, if cached.
    pub fn get(&self, key: &Key) -> Option<Vec<f32>> {
        self.vectors.read().ok()?.get(key).map(|v| v.to_vec())
    }

    /// The vector of the text whose [`text_key`] is `text`, if the cache links it to one.
    pub fn get_text(&self, text: &Key) -> Option<Vec<f32>> {
        let token = *self.links.read().ok()?.get(text)?;
        self.get(&token)
    }

    /// Links texts to the token keys of their (cached) vectors and appends the links to this
    /// writer's link file, flushed before returning.
    pub fn link(&self, items: &[(Key, Key)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut guard = self
            .link_writer
            .lock()
            .map_err(|_| Error::backend_msg("embed-runtime", "cache writer poisoned"))?;
        if guard.is_none() {
            *guard = Some(self.new_file("lnk", LINK_MAGIC)?);
        }
        let w = guard
            .as_mut()
            .ok_or_else(|| Error::backend_msg("embed-runtime", "no writer"))?;
        let what = || format!("writing the cache {}", self.dir.display());
        for (text, token) in items {
            w.write_all(text)
                .and_then(|()| w.write_all(token))
                .and_then(|()| w.write_all(&checksum(text, token).to_le_bytes()))
                .map_err(|e| io(what(), e))?;
        }
        w.flush().map_err(|e| io(what(), e))?;
        let mut map = self
            .links
            .write()
            .map_err(|_| Error::backend_msg("embed-runtime", "cache poisoned"))?;
        map.extend(items.iter().copied());
        Ok(())
    }

    /// Adds vectors (each of `dims`) and appends them to this writer's file, flushed before
    /// returning.
    pub fn insert(&self, items: &[(Key, &[f32])]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::backend_msg("embed-runtime", "cache writer poisoned"))?;
        if guard.is_none() {
            let dims =
                u32::try_from(self.dims).map_err(|_| Error::invalid("dimension too large"))?;
            let mut header = MAGIC.to_vec();
            header.extend(dims.to_le_bytes());
            *guard = Some(self.new_file("vec", &header)?);
        }
        let w = guard
            .as_mut()
            .ok_or_else(|| Error::backend_msg("embed-runtime", "no writer"))?;
        let what = || format!("writing the cache {}", self.dir.display());
        for (k, v) in items {
            if v.len() != self.dims {
                return Err(Error::DimensionMismatch {
                    expected: self.dims,
                    actual: v.len(),
                });
            }
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write_all(k).map_err(|e| io(what(), e))?;
            w.write_all(&bytes).map_err(|e| io(what(), e))?;
            w.write_all(&checksum(k, &bytes).to_le_bytes())
                .map_err(|e| io(what(), e))?;
        }
        w.flush().map_err(|e| io(what(), e))?;
        let mut map = self
            .vectors
            .write()
            .map_err(|_| Error::backend_msg("embed-runtime", "cache poisoned"))?;
        for (k, v) in items {
            map.insert(*k, v.to_vec().into_boxed_slice());
        }
        Ok(())
    }

    /// A new file of this writer's, `<pid>-<nanos>.<ext>`, starting with `header`.
    fn new_file(&self, ext: &str, header: &[u8]) -> Result<BufWriter<std::fs::File>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self
            .dir
            .join(format!("{}-{nanos}.{ext}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("creating {}", path.display()), e))?;
        let mut w = BufWriter::new(file);
        w.write_all(header)
            .map_err(|e| io(format!("writing {}", path.display()), e))?;
        Ok(w)
    }
}

/// Reads one link file into `out`; returns how many records were skipped (a file of another
/// format counts as one).
fn read_links(path: &Path, out: &mut HashMap<Key, Key>) -> Result<usize> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(format!("reading {}", path.display()), e))?;
    let Some(body) = bytes.strip_prefix(LINK_MAGIC.as_slice()) else {
        tracing::warn!(file = %path.display(), "not a pooled-vector cache link file; ignored");
        return Ok(1);
    };
    let mut skipped = usize::from(body.len() % LINK_RECORD != 0);
    for r in body.chunks_exact(LINK_RECORD) {
        let (mut text, mut token) = ([0u8; 16], [0u8; 16]);
        text.copy_from_slice(&r[..16]);
        token.copy_from_slice(&r[16..32]);
        if u32::from_le_bytes([r[32], r[33], r[34], r[35]]) == checksum(&text, &token) {
            out.insert(text, token);
        } else {
            skipped += 1;
        }
    }
    Ok(skipped)
}

/// Reads one file's records into `out`; returns how many were skipped. A file of another
/// dimension or format is skipped whole.
fn read_file(path: &Path, dims: usize, out: &mut HashMap<Key, Box<[f32]>>) -> Result<usize> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(format!("reading {}", path.display()), e))?;
    let header = MAGIC.len() + 4;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        tracing::warn!(file = %path.display(), "not a pooled-vector cache file; ignored");
        return Ok(1);
    }
    let file_dims = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if file_dims != dims {
        tracing::warn!(file = %path.display(), file_dims, dims, "cache file of another dimension; ignored");
        return Ok(1);
    }
    let record = 16 + 4 * dims + 4;
    let body = &bytes[header..];
    let mut skipped = usize::from(body.len() % record != 0);
    for r in body.chunks_exact(record) {
        let mut k = [0u8; 16];
        k.copy_from_slice(&r[..16]);
        let vec_bytes = &r[16..16 + 4 * dims];
        let sum = u32::from_le_bytes([r[record - 4], r[record - 3], r[record - 2], r[record - 1]]);
        if sum != checksum(&k, vec_bytes) {
            skipped += 1;
            continue;
        }
        let v: Box<[f32]> = vec_bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if v.iter().all(|x| x.is_finite()) {
            out.insert(k, v);
        } else {
            skipped += 1;
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn vectors_survive_a_reopen_and_damage_is_skipped_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let c = PooledCache::open(dir.path(), 3).unwrap();
        let (a, b) = (key(&[101, 7, 102]), key(&[101, 8, 102]));
        c.insert(&[(a, &[1.0, 2.0, 3.0][..]), (b, &[4.0, 5.0, 6.0][..])])
            .unwrap();
        assert_eq!(c.get(&a).unwrap(), [1.0, 2.0, 3.0]);
        assert!(matches!(
            c.insert(&[(a, &[1.0][..])]),
            Err(Error::DimensionMismatch { .. })
        ));
        drop(c);

        let again = PooledCache::open(dir.path(), 3).unwrap();
        assert_eq!((again.len(), again.skipped), (2, 0));
        assert_eq!(again.get(&b).unwrap(), [4.0, 5.0, 6.0]);
        drop(again);

        // Flip a byte of the first vector and cut the second record short.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[12 + 16] ^= 0x40;
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&file, bytes).unwrap();
        let damaged = PooledCache::open(dir.path(), 3).unwrap();
        assert_eq!((damaged.len(), damaged.skipped), (0, 2));

        // Another dimension is another cache.
        assert_eq!(PooledCache::open(dir.path(), 4).unwrap().len(), 0);
    }

    #[test]
    fn texts_find_their_vectors_through_links_that_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tok = key(&[1]);
        let (t1, t2) = (text_key(&tok, "", "one"), text_key(&tok, "", "two"));
        let c = PooledCache::open(dir.path(), 2).unwrap();
        let k = key(&[101, 5, 102]);
        c.insert(&[(k, &[0.5, 1.5][..])]).unwrap();
        c.link(&[(t1, k)]).unwrap();
        assert_eq!(c.get_text(&t1).unwrap(), [0.5, 1.5]);
        assert_eq!(c.get_text(&t2), None);
        // A link to a vector the cache does not hold finds nothing.
        c.link(&[(t2, key(&[9]))]).unwrap();
        assert_eq!(c.get_text(&t2), None);
        drop(c);
        let again = PooledCache::open(dir.path(), 2).unwrap();
        assert_eq!(again.get_text(&t1).unwrap(), [0.5, 1.5]);
        drop(again);
        // A damaged link is skipped, never followed.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "lnk") {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[LINK_MAGIC.len() + 20] ^= 1;
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let damaged = PooledCache::open(dir.path(), 2).unwrap();
        assert_eq!(damaged.get_text(&t1), None);
        assert_eq!(damaged.skipped, 1);
    }

    #[test]
    fn text_keys_separate_tokenizers_prefixes_and_texts() {
        let (a, b) = (key(&[1]), key(&[2]));
        assert_eq!(text_key(&a, "q: ", "x"), text_key(&a, "q: ", "x"));
        assert_ne!(text_key(&a, "q: ", "x"), text_key(&b, "q: ", "x"));
        assert_ne!(text_key(&a, "q: ", "x"), text_key(&a, "", "q: x"));
        assert_ne!(text_key(&a, "", "x"), text_key(&a, "", "y"));
    }

    #[test]
    fn keys_follow_the_token_ids() {
        assert_eq!(key(&[1, 2, 3]), key(&[1, 2, 3]));
        assert_ne!(key(&[1, 2, 3]), key(&[1, 2, 4]));
        assert_ne!(key(&[1, 2]), key(&[2, 1]));
    }
}
