//! Persistence: `schema.json` and append-only binary segments (one per write, atomic),
//! replayed on open and compacted after many.

use super::*;
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RLSEG01\n";
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

pub(super) fn load_all(dir: &Path, ann: Option<Arc<dyn AnnFactory>>) -> Result<Vec<IndexData>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let schema_path = path.join("schema.json");
        if !schema_path.is_file() {
            continue;
        }
        let schema: IndexSchema = serde_json::from_slice(&std::fs::read(&schema_path)?)
            .map_err(|e| Error::invalid(format!("{}: {e}", schema_path.display())))?;
        let mut data = IndexData::new(schema, Some(path.clone()));
        let mut segs: Vec<PathBuf> = std::fs::read_dir(path.join("segments"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        for seg in &segs {
            data.replay(seg)?;
        }
        data.segments = segs;
        if let Some(factory) = &ann {
            data.attach_ann(factory.clone())?;
        }
        out.push(data);
    }
    Ok(out)
}

impl IndexData {
    pub(super) fn replay(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)?;
        let bad = |why: &str| Error::invalid(format!("segment {}: {why}", path.display()));
        let mut cur = bytes
            .strip_prefix(SEGMENT_MAGIC.as_slice())
            .ok_or_else(|| bad("bad magic"))?;
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
                    let vector = v
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    self.apply_upsert(IndexRecord {
                        id,
                        vector,
                        text,
                        metadata,
                    });
                }
                SegmentHeader::Delete { id } => {
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
        *self = IndexData::new(schema, self.dir.clone());
        self.segments = segments;
        for r in live {
            self.apply_upsert(r);
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
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
