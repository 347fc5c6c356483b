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
//! Memory holds where each record is (its file and offset, ~40 bytes a vector), not the
//! vectors: a lookup reads its record from the file (a positional read, checked again), so
//! a million cached 384-d vectors cost ~40 MB of memory rather than 1.5 GB, and opening the
//! cache streams its files.
//!
//! Beside them, *links* from a text to its token key (`<pid>-<nanos>.lnk`: `RLPLNK1\n`, then
//! records of the [`text_key`], the token [`key`] and their checksum), so a text seen before
//! finds its vector without being tokenised again — tokenising was most of the time of a pass
//! whose vectors all come from the cache (stage 5 after stage 2's pass). A link is written
//! after its vector; a text without one is tokenised and looked up by its token ids.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
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

/// Where a vector's record is: a file of [`PooledCache::files`] and the record's offset.
#[derive(Debug, Clone, Copy)]
struct Place {
    file: u32,
    offset: u64,
}

/// This process's vector file: where its records go, and where the next one starts.
struct VecWriter {
    out: BufWriter<File>,
    file: u32,
    pos: u64,
}

/// Pooled vectors of one encoder on disk, found through an index held in memory.
pub struct PooledCache {
    dir: PathBuf,
    dims: usize,
    /// Key → where its record is.
    places: RwLock<HashMap<Key, Place>>,
    /// The vector files, open for positional reads (this writer's own included).
    files: RwLock<Vec<(PathBuf, File)>>,
    /// Text key → token key.
    links: RwLock<HashMap<Key, Key>>,
    writer: Mutex<Option<VecWriter>>,
    link_writer: Mutex<Option<BufWriter<File>>>,
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
        let mut places = HashMap::new();
        let mut files = Vec::new();
        let mut links = HashMap::new();
        let mut skipped = 0;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| io(format!("reading the cache {}", dir.display()), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| io(format!("reading the cache {}", dir.display()), e))?
                .path();
            if path.extension().is_some_and(|x| x == "vec") {
                let file = u32::try_from(files.len())
                    .map_err(|_| Error::invalid("too many cache files"))?;
                let (handle, bad) = read_file(&path, dims, file, &mut places)?;
                skipped += bad;
                files.extend(handle.map(|h| (path.clone(), h)));
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
            places: RwLock::new(places),
            files: RwLock::new(files),
            links: RwLock::new(links),
            writer: Mutex::new(None),
            link_writer: Mutex::new(None),
            skipped,
        })
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.places.read().map_or(0, |v| v.len())
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vector of `key`, if cached (read from its file; a record that no longer reads
    /// back whole and checked is treated as not cached, so it is encoded again).
    pub fn get(&self, key: &Key) -> Option<Vec<f32>> {
        let place = *self.places.read().ok()?.get(key)?;
        let files = self.files.read().ok()?;
        let (path, file) = files.get(place.file as usize)?;
        let mut record = vec![0u8; record_len(self.dims)];
        if let Err(e) = read_at(file, &mut record, place.offset) {
            tracing::warn!(file = %path.display(), error = %e, "a cached vector could not be read; encoding it again");
            return None;
        }
        let vector = decode(&record, key, self.dims);
        if vector.is_none() {
            tracing::warn!(file = %path.display(), "a cached vector changed on disk; encoding it again");
        }
        vector
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
            *guard = Some(self.new_file("lnk", LINK_MAGIC)?.0);
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
            let (out, path) = self.new_file("vec", &header)?;
            let reader =
                File::open(&path).map_err(|e| io(format!("opening {}", path.display()), e))?;
            let mut files = self
                .files
                .write()
                .map_err(|_| Error::backend_msg("embed-runtime", "cache poisoned"))?;
            let file =
                u32::try_from(files.len()).map_err(|_| Error::invalid("too many cache files"))?;
            files.push((path, reader));
            *guard = Some(VecWriter {
                out,
                file,
                pos: header.len() as u64,
            });
        }
        let w = guard
            .as_mut()
            .ok_or_else(|| Error::backend_msg("embed-runtime", "no writer"))?;
        let what = || format!("writing the cache {}", self.dir.display());
        let mut placed = Vec::with_capacity(items.len());
        for (k, v) in items {
            if v.len() != self.dims {
                return Err(Error::DimensionMismatch {
                    expected: self.dims,
                    actual: v.len(),
                });
            }
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.out.write_all(k).map_err(|e| io(what(), e))?;
            w.out.write_all(&bytes).map_err(|e| io(what(), e))?;
            w.out
                .write_all(&checksum(k, &bytes).to_le_bytes())
                .map_err(|e| io(what(), e))?;
            placed.push((
                *k,
                Place {
                    file: w.file,
                    offset: w.pos,
                },
            ));
            w.pos += record_len(self.dims) as u64;
        }
        w.out.flush().map_err(|e| io(what(), e))?;
        let mut map = self
            .places
            .write()
            .map_err(|_| Error::backend_msg("embed-runtime", "cache poisoned"))?;
        map.extend(placed);
        Ok(())
    }

    /// A new file of this writer's, `<pid>-<nanos>.<ext>`, starting with `header`, and its path.
    fn new_file(&self, ext: &str, header: &[u8]) -> Result<(BufWriter<File>, PathBuf)> {
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
            .and_then(|()| w.flush())
            .map_err(|e| io(format!("writing {}", path.display()), e))?;
        Ok((w, path))
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

/// Bytes of one vector record of `dims`: key, vector, checksum.
fn record_len(dims: usize) -> usize {
    16 + 4 * dims + 4
}

/// The vector of a record read back, if it is `key`'s, its checksum holds and its values are
/// finite.
fn decode(record: &[u8], key: &Key, dims: usize) -> Option<Vec<f32>> {
    let (k, rest) = record.split_first_chunk::<16>()?;
    let (vec_bytes, sum) = rest.split_at(4 * dims);
    let sum = u32::from_le_bytes(sum.try_into().ok()?);
    if k != key || sum != checksum(k, vec_bytes) {
        return None;
    }
    let v: Vec<f32> = vec_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// Reads `buf.len()` bytes of `file` at `offset`.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads `buf.len()` bytes of `file` at `offset`.
#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    let mut buf = buf;
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Reads `buf.len()` bytes of `file` at `offset`.
#[cfg(not(any(unix, windows)))]
fn read_at(_file: &File, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Streams one vector file, putting each sound record's place (as file number `file`) into
/// `out`; returns the file opened for reading (`None` for a file of another dimension or
/// format, skipped whole) and how many records were skipped (such a file counts as one).
fn read_file(
    path: &Path,
    dims: usize,
    file: u32,
    out: &mut HashMap<Key, Place>,
) -> Result<(Option<File>, usize)> {
    let what = || format!("reading {}", path.display());
    let handle = File::open(path).map_err(|e| io(what(), e))?;
    let mut r = BufReader::with_capacity(1 << 20, &handle);
    let mut header = [0u8; MAGIC.len() + 4];
    if r.read_exact(&mut header).is_err() || &header[..MAGIC.len()] != MAGIC {
        tracing::warn!(file = %path.display(), "not a pooled-vector cache file; ignored");
        return Ok((None, 1));
    }
    let file_dims = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if file_dims != dims {
        tracing::warn!(file = %path.display(), file_dims, dims, "cache file of another dimension; ignored");
        return Ok((None, 1));
    }
    let mut record = vec![0u8; record_len(dims)];
    let mut offset = header.len() as u64;
    let mut skipped = 0;
    loop {
        let mut got = 0;
        while got < record.len() {
            match r.read(&mut record[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(what(), e)),
            }
        }
        if got < record.len() {
            // The end, or a record cut short by a crash.
            skipped += usize::from(got > 0);
            break;
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(&record[..16]);
        if decode(&record, &k, dims).is_some() {
            out.insert(k, Place { file, offset });
        } else {
            skipped += 1;
        }
        offset += record.len() as u64;
    }
    Ok((Some(handle), skipped))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The one file in `dir`.
    fn only_file(dir: &Path) -> PathBuf {
        let mut files = std::fs::read_dir(dir).unwrap();
        let file = files.next().unwrap().unwrap().path();
        assert!(files.next().is_none(), "one file in {}", dir.display());
        file
    }

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
        let file = only_file(dir.path());
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
    fn vectors_are_read_from_disk_and_a_record_changed_after_opening_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let c = PooledCache::open(dir.path(), 2).unwrap();
        let keys: Vec<Key> = (0..100u32).map(|i| key(&[i])).collect();
        let vectors: Vec<[f32; 2]> = (0..100).map(|i| [i as f32, -(i as f32)]).collect();
        let items: Vec<(Key, &[f32])> = keys
            .iter()
            .zip(&vectors)
            .map(|(k, v)| (*k, &v[..]))
            .collect();
        c.insert(&items[..60]).unwrap();
        c.insert(&items[60..]).unwrap();
        let again = PooledCache::open(dir.path(), 2).unwrap();
        for (k, v) in keys.iter().zip(&vectors) {
            assert_eq!(c.get(k).unwrap(), v);
            assert_eq!(again.get(k).unwrap(), v);
        }
        // Record 7's vector changes on disk behind both: neither returns it.
        let file = only_file(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[12 + 7 * record_len(2) + 16] ^= 0x40;
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(c.get(&keys[7]), None);
        assert_eq!(again.get(&keys[7]), None);
        assert_eq!(again.get(&keys[8]).unwrap(), vectors[8]);
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
