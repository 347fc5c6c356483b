//! Persistence: `schema.json` and append-only binary segments (one per write, atomic),
//! replayed on open and merged after many.
//!
//! Merging keeps the work per record logarithmic: once there are more than [`COMPACT_AFTER`]
//! segments, the newest half is merged into one, together with each older segment the merged
//! bytes outgrow (so sizes fall off geometrically from the oldest). Segments are merged by
//! copying their records as they are — replaying the merged segment applies exactly the same
//! operations, in the same order, so no slot, graph key or text-index entry changes. Only when
//! the merge reaches the oldest segment (the newer ones hold as many bytes as it does), or
//! dead records outnumber live ones, is everything rewritten from the live records
//! ([`IndexData::compact`]); both stream to disk, a record at a time.
//!
//! A segment is `RLSEG02\n`, then records (a `u32` length, a JSON [`SegmentHeader`], and for an
//! upsert the vector's `dims` little-endian f32s), then the CRC-32 of everything before it.
//! A segment that fails the CRC, or holds a vector no writer produces (NaN, infinite), is
//! [`Error::Corrupt`] naming the file; nothing of it is applied. `RLSEG01` segments (written
//! before the checksum) are read without it.

use std::borrow::Cow;

use super::data::{SegmentFile, Text};
use super::*;
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RLSEG02\n";
/// The format before the checksum trailer.
pub(super) const SEGMENT_MAGIC_V1: &[u8; 8] = b"RLSEG01\n";
/// Segments after which the next write compacts an index into one.
pub(super) const COMPACT_AFTER: usize = 64;

/// A record's JSON header; borrowed when written, owned when read.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum SegmentHeader<'a> {
    Upsert {
        id: Cow<'a, str>,
        text: Cow<'a, str>,
        metadata: Cow<'a, Metadata>,
    },
    Delete {
        id: Cow<'a, str>,
    },
}

/// A segment just written, opened for reading, and where each upsert's header (its JSON:
/// offset and length) lies in it.
pub(super) type Written = (Arc<SegmentFile>, Vec<(u64, u32)>);

/// One decoded record of a segment (an upsert with its header's offset and length).
enum Op {
    Upsert(IndexRecord, u64, u32),
    Delete(String),
}

/// The indexes under `dir` (those with a `schema.json`) and their segment files, in order.
pub(super) fn disk_state(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(e, format!("listing {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(e, format!("listing {}", dir.display())))?
            .path();
        if !path.join("schema.json").is_file() {
            continue;
        }
        let seg_dir = path.join("segments");
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&seg_dir)
            .map_err(|e| Error::corrupt(seg_dir.display().to_string(), damaged(&path, e)))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.push((name, segs));
    }
    out.sort();
    Ok(out)
}

/// Loads every index under `dir`. A writer compacting meanwhile removes segments this listed:
/// the load then starts again from a fresh listing (a compaction leaves one whole segment).
/// `writer` says whether this process holds the directory's lock.
pub(super) fn load_all(
    dir: &Path,
    options: &LocalIndexOptions,
    writer: bool,
) -> Result<Vec<IndexData>> {
    let mut attempt = 0;
    loop {
        match load_once(dir, options, writer) {
            Err(e) if e.is_not_found() && attempt < 20 => {
                attempt += 1;
                tracing::debug!(error = %e, "a segment vanished while loading; loading again");
                std::thread::sleep(std::time::Duration::from_millis(5 * attempt));
            }
            other => return other,
        }
    }
}

fn load_once(dir: &Path, options: &LocalIndexOptions, writer: bool) -> Result<Vec<IndexData>> {
    let mut out = Vec::new();
    for (name, segs) in disk_state(dir)? {
        let path = dir.join(name);
        let schema_path = path.join("schema.json");
        let schema: IndexSchema = serde_json::from_slice(
            &std::fs::read(&schema_path)
                .map_err(|e| Error::io(e, format!("reading {}", schema_path.display())))?,
        )
        .map_err(|e| Error::corrupt(schema_path.display().to_string(), damaged(&path, e)))?;
        let mut data = IndexData::new(schema, Some(path.clone()), options.text.is_some());
        data.writer = writer;
        for seg in &segs {
            data.replay(seg)?;
        }
        data.segments = segs;
        if let Some(factory) = &options.ann {
            data.attach_ann(factory.clone())?;
        }
        if let Some(factory) = &options.text {
            data.attach_text(factory.clone())?;
        }
        out.push(data);
    }
    Ok(out)
}

/// The reason of a damaged index file: what failed and what to do.
fn damaged(index_dir: &Path, why: impl std::fmt::Display) -> String {
    format!(
        "{why}; the index cannot be read. Remove {} and index again (stage 6 rebuilds it from \
         the vector shards)",
        index_dir.display()
    )
}

impl IndexData {
    /// Applies one segment's records, after checking all of it: a damaged segment applies none.
    pub(super) fn replay(&mut self, path: &Path) -> Result<()> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(e, format!("reading {}", path.display())))?;
        let index_dir = path.parent().and_then(Path::parent).unwrap_or(path);
        let bad = |why: &str| Error::corrupt(path.display().to_string(), damaged(index_dir, why));
        let crc_len = if bytes.starts_with(SEGMENT_MAGIC) {
            4
        } else {
            0
        };
        let body = if let Some(rest) = bytes.strip_prefix(SEGMENT_MAGIC.as_slice()) {
            let split = rest.len().checked_sub(4).ok_or_else(|| bad("truncated"))?;
            let (body, crc) = rest.split_at(split);
            let mut h = crc32fast::Hasher::new();
            h.update(SEGMENT_MAGIC);
            h.update(body);
            if h.finalize().to_le_bytes() != crc {
                return Err(bad("checksum mismatch"));
            }
            body
        } else {
            bytes
                .strip_prefix(SEGMENT_MAGIC_V1.as_slice())
                .ok_or_else(|| bad("not a segment (bad magic)"))?
        };
        let mut records = Vec::new();
        let mut cur = body;
        while !cur.is_empty() {
            let mut len = [0u8; 4];
            cur.read_exact(&mut len).map_err(|_| bad("truncated"))?;
            let len = u32::from_le_bytes(len) as usize;
            if cur.len() < len {
                return Err(bad("truncated header"));
            }
            let offset = (bytes.len() - cur.len() - crc_len) as u64;
            let (head, rest) = cur.split_at(len);
            cur = rest;
            match serde_json::from_slice(head).map_err(|e| bad(&e.to_string()))? {
                SegmentHeader::Upsert { id, text, metadata } => {
                    let n = self.schema.dims * 4;
                    if cur.len() < n {
                        return Err(bad("truncated vector"));
                    }
                    let (v, rest) = cur.split_at(n);
                    cur = rest;
                    let vector: Vec<f32> = v
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    if !vector.iter().all(|x| x.is_finite()) {
                        return Err(bad(&format!("record {id:?} has a non-finite vector")));
                    }
                    records.push(Op::Upsert(
                        IndexRecord {
                            id: id.into_owned(),
                            vector,
                            text: text.into_owned(),
                            metadata: metadata.into_owned(),
                        },
                        offset,
                        len as u32,
                    ));
                }
                SegmentHeader::Delete { id } => records.push(Op::Delete(id.into_owned())),
            }
        }
        let file = SegmentFile::open(path)?;
        let vectors: Vec<&[f32]> = records
            .iter()
            .filter_map(|op| match op {
                Op::Upsert(r, ..) => Some(r.vector.as_slice()),
                Op::Delete(_) => None,
            })
            .collect();
        self.append_vectors(&vectors)?;
        for op in records {
            match op {
                Op::Upsert(record, offset, len) => {
                    self.apply_upsert(record, file.as_ref().map(|f| (f, offset, len)));
                }
                Op::Delete(id) => {
                    self.apply_delete(&id);
                }
            }
        }
        Ok(())
    }

    /// Writes a segment of upserts and deletes atomically; returns the segment, opened for
    /// reading, and where each upsert's header lies in it (`None` for an in-memory index, or
    /// where segments cannot be read in place).
    pub(super) fn persist(
        &mut self,
        upserts: &[&IndexRecord],
        deletes: &[String],
    ) -> Result<Option<Written>> {
        if self.dir.is_none() {
            return Ok(None);
        }
        let path = self.next_segment()?;
        let mut w = SegmentWriter::create(&path)?;
        let places = upserts
            .iter()
            .map(|r| w.upsert(&r.id, &r.vector, &r.text, &r.metadata))
            .collect::<Result<Vec<_>>>()?;
        for id in deletes {
            w.delete(id)?;
        }
        w.finish()?;
        let file = SegmentFile::open(&path)?;
        self.segments.push(path);
        Ok(file.map(|f| (f, places)))
    }

    /// The path of the segment after the newest one.
    fn next_segment(&self) -> Result<PathBuf> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| Error::invalid("an in-memory index has no segments"))?;
        let next = self
            .segments
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        Ok(dir.join("segments").join(format!("{next:012}.seg")))
    }

    /// Merges segments once they pile up (see the module's doc); call after applying a
    /// persisted change.
    pub(super) fn maybe_compact(&mut self) -> Result<()> {
        if self.segments.len() <= COMPACT_AFTER {
            return Ok(());
        }
        let sizes: Vec<u64> = self
            .segments
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let from = merge_from(&sizes);
        let dead = self.slot_count() - self.live_len();
        if from == 0 || dead > self.live_len() {
            self.compact()
        } else {
            self.merge_tail(from)
        }
    }

    /// Merges the segments from index `from` on into one by copying their records (checked
    /// against each segment's CRC on the way), then removes them. A crash between the two
    /// steps is harmless: replaying the old segments and then the merged one gives the same
    /// records. The graph and the text index cover the same state under a new stamp.
    pub(super) fn merge_tail(&mut self, from: usize) -> Result<()> {
        let merged = self.segments[from..].to_vec();
        let path = self.next_segment()?;
        let mut w = SegmentWriter::create(&path)?;
        // Where each merged segment's records start in the new one, less where they started.
        let mut shift: HashMap<PathBuf, i64> = HashMap::new();
        for seg in &merged {
            shift.insert(seg.clone(), w.pos as i64 - SEGMENT_MAGIC.len() as i64);
            copy_records(seg, &mut w)?;
        }
        w.finish()?;
        if let Some(file) = SegmentFile::open(&path)? {
            self.move_bodies(&shift, &file)?;
        }
        for p in &merged {
            let _ = std::fs::remove_file(p);
        }
        self.segments.truncate(from);
        self.segments.push(path);
        let stamp = self.stamp_text();
        if let Text::External { index, .. } = &self.text {
            index.restamp(&stamp)?;
            index.commit()?;
        }
        self.restamp_ann()
    }

    /// Rewrites all live records as one segment, then removes the older ones. A crash between
    /// the two steps is harmless: replaying old segments and then the compacted one gives the
    /// same records.
    pub(super) fn compact(&mut self) -> Result<()> {
        let path = self.next_segment()?;
        let mut w = SegmentWriter::create(&path)?;
        let mut places = Vec::with_capacity(self.live_len());
        for (i, s) in self.live() {
            let (text, metadata) = s.body()?;
            places.push(w.upsert(&s.id.to_string(), self.vector(i), &text, &metadata)?);
        }
        w.finish()?;
        let file = SegmentFile::open(&path)?;
        for p in &std::mem::take(&mut self.segments) {
            let _ = std::fs::remove_file(p);
        }
        self.segments = vec![path];
        // Renumber the live slots in place, in order, so graph keys only move down (slot i of
        // the new numbering was the i-th live slot); their bodies now lie in the new segment.
        let old_slots: Vec<usize> = self.live_slots().collect();
        self.renumber(&old_slots)?;
        if let Some(file) = &file {
            self.place_all(file, &places)?;
        }
        // The in-memory BM25 is keyed by slot; a text index keyed by id is kept as it is:
        // compaction changes no record.
        if let Text::Builtin(_) = &self.text {
            let mut bm = Bm25::new(self.schema.analyzer);
            for (i, s) in self.live() {
                bm.add(i, &s.body()?.0);
            }
            self.text = Text::Builtin(bm);
        }
        let ann = self.ann.take();
        if let Text::External { index, .. } = &self.text {
            index.restamp(&self.stamp_text())?;
            index.commit()?;
        }
        if let Some(mut ann) = ann {
            let moves: Vec<(usize, usize)> = old_slots
                .iter()
                .enumerate()
                .filter(|(new, old)| *new != **old)
                .map(|(new, &old)| (new, old))
                .collect();
            if moves.is_empty() {
                // No dead slots: the graph's keys hold; a saved graph only needs the new stamp.
                self.ann = Some(ann);
                return self.restamp_ann();
            }
            let moved = moves
                .iter()
                .try_for_each(|&(new, old)| ann.graph.rename(old as u64, new as u64));
            match moved {
                Ok(()) => {
                    ann.dirty = true;
                    self.ann = Some(ann);
                    self.save_ann()?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ANN graph rename failed; rebuilding it");
                    self.attach_ann(ann.factory)?;
                }
            }
        }
        Ok(())
    }
}

/// Where a merge of segments of `sizes` bytes (oldest first; more than [`COMPACT_AFTER`] of
/// them) starts: the newest half, extended to each older segment the merged bytes reach.
pub(super) fn merge_from(sizes: &[u64]) -> usize {
    let mut from = sizes.len().saturating_sub(COMPACT_AFTER / 2);
    let mut merged: u64 = sizes[from..].iter().sum();
    while from > 0 && merged >= sizes[from - 1] {
        from -= 1;
        merged += sizes[from];
    }
    from
}

/// A segment written as a stream under a temporary name — magic, records, CRC-32 — and
/// renamed into place by [`finish`](Self::finish); dropped unfinished, it leaves nothing.
struct SegmentWriter {
    out: std::io::BufWriter<std::fs::File>,
    crc: crc32fast::Hasher,
    /// Bytes written so far.
    pos: u64,
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl SegmentWriter {
    fn create(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let tmp = temp_path(path);
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(e, format!("writing {}", path.display())))?;
        let mut w = Self {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            pos: 0,
            tmp,
            path: path.to_path_buf(),
            done: false,
        };
        w.write(SEGMENT_MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.pos += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(e, format!("writing {}", self.path.display())))
    }

    /// Writes a header; returns where its JSON lies and its length.
    fn header(&mut self, h: &SegmentHeader<'_>) -> Result<(u64, u32)> {
        let json = serde_json::to_vec(h).map_err(|e| Error::backend("local-index", "encode", e))?;
        let len = u32::try_from(json.len())
            .map_err(|_| Error::invalid("a record of 4 GiB or more cannot be stored"))?;
        self.write(&len.to_le_bytes())?;
        let at = self.pos;
        self.write(&json)?;
        Ok((at, len))
    }

    /// Writes an upsert; returns where its header's JSON lies and its length.
    fn upsert(
        &mut self,
        id: &str,
        vector: &[f32],
        text: &str,
        metadata: &Metadata,
    ) -> Result<(u64, u32)> {
        let place = self.header(&SegmentHeader::Upsert {
            id: Cow::Borrowed(id),
            text: Cow::Borrowed(text),
            metadata: Cow::Borrowed(metadata),
        })?;
        let vector: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.write(&vector)?;
        Ok(place)
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.header(&SegmentHeader::Delete {
            id: Cow::Borrowed(id),
        })
        .map(drop)
    }

    /// Appends the CRC, syncs and renames the segment into place.
    fn finish(mut self) -> Result<()> {
        let crc = self.crc.clone().finalize().to_le_bytes();
        self.out
            .write_all(&crc)
            .and_then(|()| self.out.flush())
            .and_then(|()| self.out.get_ref().sync_data())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path))
            .map_err(|e| Error::io(e, format!("writing {}", self.path.display())))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Copies the records of the segment at `path` into `w`, checking the segment's CRC as they
/// stream by (a mismatch is [`Error::Corrupt`] and `w` is abandoned).
fn copy_records(path: &Path, w: &mut SegmentWriter) -> Result<()> {
    use std::io::BufRead;
    let index_dir = path.parent().and_then(Path::parent).unwrap_or(path);
    let bad = |why: &str| Error::corrupt(path.display().to_string(), damaged(index_dir, why));
    let io = |e: std::io::Error| Error::io(e, format!("reading {}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
    let checked = match &magic {
        m if m == SEGMENT_MAGIC => true,
        m if m == SEGMENT_MAGIC_V1 => false,
        _ => return Err(bad("not a segment (bad magic)")),
    };
    let mut body = len - 8;
    if checked {
        body = body.checked_sub(4).ok_or_else(|| bad("truncated"))?;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(SEGMENT_MAGIC);
    while body > 0 {
        let buf = r.fill_buf().map_err(io)?;
        if buf.is_empty() {
            return Err(bad("truncated"));
        }
        let n = buf.len().min(body as usize);
        crc.update(&buf[..n]);
        w.write(&buf[..n])?;
        r.consume(n);
        body -= n as u64;
    }
    if checked {
        let mut stored = [0u8; 4];
        r.read_exact(&mut stored).map_err(|_| bad("truncated"))?;
        if crc.finalize().to_le_bytes() != stored {
            return Err(bad("checksum mismatch"));
        }
    }
    Ok(())
}

/// Creates the directory `path` will be written in.
fn create_parent(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid("segment path has no parent"))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(e, format!("creating {}", dir.display())))
}

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    create_parent(path)?;
    let tmp = temp_path(path);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_data()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| Error::io(e, format!("writing {}", path.display())))
}

/// A temporary name beside `path` that no other writer uses: `<name>.<pid>-<n>.tmp`.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()))
}
