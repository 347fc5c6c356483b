//! Persistence: `schema.json` and append-only binary segments (one per write, atomic),
//! replayed on open and compacted after many.
//!
//! A segment is `RLSEG02\n`, then records (a `u32` length, a JSON [`SegmentHeader`], and for an
//! upsert the vector's `dims` little-endian f32s), then the CRC-32 of everything before it.
//! A segment that fails the CRC, or holds a vector no writer produces (NaN, infinite), is
//! [`Error::Corrupt`] naming the file; nothing of it is applied. `RLSEG01` segments (written
//! before the checksum) are read without it.

use super::data::Text;
use super::*;
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RLSEG02\n";
/// The format before the checksum trailer.
pub(super) const SEGMENT_MAGIC_V1: &[u8; 8] = b"RLSEG01\n";
/// Segments after which the next write compacts an index into one.
pub(super) const COMPACT_AFTER: usize = 64;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum SegmentHeader {
    Upsert {
        id: String,
        text: String,
        metadata: Metadata,
    },
    Delete {
        id: String,
    },
}

/// One decoded record of a segment.
enum Op {
    Upsert(IndexRecord),
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
                    records.push(Op::Upsert(IndexRecord {
                        id,
                        vector,
                        text,
                        metadata,
                    }));
                }
                SegmentHeader::Delete { id } => records.push(Op::Delete(id)),
            }
        }
        for op in records {
            match op {
                Op::Upsert(record) => {
                    self.apply_upsert(record);
                }
                Op::Delete(id) => {
                    self.apply_delete(&id);
                }
            }
        }
        Ok(())
    }

    /// Writes a segment of upserts and deletes atomically; compacts when segments pile up.
    pub(super) fn persist(&mut self, upserts: &[&IndexRecord], deletes: &[String]) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let mut buf = SEGMENT_MAGIC.to_vec();
        let encode = |buf: &mut Vec<u8>, h: &SegmentHeader| -> Result<()> {
            let json =
                serde_json::to_vec(h).map_err(|e| Error::backend("local-index", "encode", e))?;
            buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
            buf.extend_from_slice(&json);
            Ok(())
        };
        for r in upserts {
            encode(
                &mut buf,
                &SegmentHeader::Upsert {
                    id: r.id.clone(),
                    text: r.text.clone(),
                    metadata: r.metadata.clone(),
                },
            )?;
            r.vector
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        }
        for id in deletes {
            encode(&mut buf, &SegmentHeader::Delete { id: id.clone() })?;
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let seg_dir = dir.join("segments");
        let next = self
            .segments
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        let path = seg_dir.join(format!("{next:012}.seg"));
        write_atomic(&path, &buf)?;
        self.segments.push(path);
        Ok(())
    }

    /// Compacts once segments pile up; call after applying a persisted change.
    pub(super) fn maybe_compact(&mut self) -> Result<()> {
        if self.segments.len() > COMPACT_AFTER {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites all live records as one segment, then removes the older ones. A crash between
    /// the two steps is harmless: replaying old segments and then the compacted one gives the
    /// same records.
    pub(super) fn compact(&mut self) -> Result<()> {
        let old = std::mem::take(&mut self.segments);
        let live: Vec<IndexRecord> = self.live().map(|(_, s)| s.record.clone()).collect();
        self.segments = old.last().cloned().into_iter().collect();
        self.persist(&live.iter().collect::<Vec<_>>(), &[])?;
        for p in &old {
            let _ = std::fs::remove_file(p);
        }
        self.segments.retain(|p| p.exists());
        // Rebuild the in-memory structures without dead slots; live slots keep their order, so
        // graph keys only move down (slot i of the new numbering was the i-th live slot).
        let old_slots: Vec<usize> = self.live().map(|(i, _)| i).collect();
        let schema = self.schema.clone();
        let segments = std::mem::take(&mut self.segments);
        let ann = self.ann.take();
        // A text index keyed by id is kept as it is: compaction changes no record.
        let text = std::mem::replace(&mut self.text, Text::Pending);
        let external = matches!(text, Text::External { .. });
        let writer = self.writer;
        *self = IndexData::new(schema, self.dir.clone(), external);
        self.writer = writer;
        self.segments = segments;
        if external {
            self.text = text;
        }
        for r in live {
            self.apply_upsert(r);
        }
        if let Text::External { index, .. } = &self.text {
            index.restamp(&self.stamp_text())?;
            index.commit()?;
        }
        if let Some(mut ann) = ann {
            let moved = old_slots
                .iter()
                .enumerate()
                .filter(|(new, old)| *new != **old)
                .try_for_each(|(new, &old)| ann.graph.rename(old as u64, new as u64));
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

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid("segment path has no parent"))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(e, format!("creating {}", dir.display())))?;
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
