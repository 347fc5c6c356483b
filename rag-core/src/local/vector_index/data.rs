//! The in-memory state of one index: its records by slot, the id map, the text index and the
//! graph.

use super::*;
use serde_json::Value;

/// The graph of one index and whether it changed since it was saved.
pub(super) struct Ann {
    pub(super) factory: Arc<dyn AnnFactory>,
    pub(super) graph: Box<dyn AnnGraph>,
    pub(super) dirty: bool,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("len", &self.graph.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}

/// Which segment state a saved graph or text index describes.
#[derive(Serialize, Deserialize, PartialEq)]
pub(super) struct Stamp {
    pub(super) last_segment: String,
    pub(super) len: usize,
}

/// How the index answers text queries.
pub(super) enum Text {
    /// The in-memory BM25, keyed by slot.
    Builtin(Bm25),
    /// A factory's text index is attached once the segments are loaded (until then, records
    /// are not indexed for text at all: the attached index has them or is rebuilt).
    Pending,
    /// A factory's text index, keyed by record id.
    External {
        factory: Arc<dyn TextFactory>,
        index: Box<dyn TextIndex>,
    },
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(bm) => f.debug_tuple("Builtin").field(bm).finish(),
            Self::Pending => f.write_str("Pending"),
            Self::External { factory, .. } => f.debug_tuple("External").field(factory).finish(),
        }
    }
}

/// One live record as a search needs it: id, vector and the declared metadata fields in
/// memory; its text and full metadata in memory only for an in-memory index, else read from
/// its segment when a hit, an export or a rebuild asks ([`Body`]).
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: String,
    pub(super) vector: Vec<f32>,
    pub(super) norm: f32,
    /// The values of the schema's metadata fields, in the schema's order (what filters read;
    /// `None` where the record has none): no keys per record.
    pub(super) filters: Box<[Option<Value>]>,
    pub(super) body: Body,
}

/// Where a record's text and metadata are.
#[derive(Debug)]
pub(super) enum Body {
    /// In memory.
    Here { text: String, metadata: Metadata },
    /// In a segment file: the record's JSON header, `len` bytes at `offset`.
    Segment {
        file: Arc<SegmentFile>,
        offset: u64,
        len: u32,
    },
}

/// A segment file held open for reading records' bodies. The handle outlives the name: a
/// merge removes the file after re-pointing its records, and a reader process keeps reading
/// what it loaded.
#[derive(Debug)]
pub(super) struct SegmentFile {
    pub(super) path: PathBuf,
    file: std::fs::File,
}

impl SegmentFile {
    /// Opens `path` for reading bodies (`None` where positional reads are not available).
    pub(super) fn open(path: &Path) -> Result<Option<Arc<Self>>> {
        if !cfg!(unix) {
            return Ok(None);
        }
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
        Ok(Some(Arc::new(Self {
            path: path.to_path_buf(),
            file,
        })))
    }

    #[cfg(unix)]
    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(e, format!("reading {}", self.path.display())))?;
        Ok(buf)
    }

    #[cfg(not(unix))]
    fn read(&self, _offset: u64, _len: u32) -> Result<Vec<u8>> {
        Err(Error::invalid("positional reads need a unix system"))
    }
}

impl Slot {
    /// The record's text and full metadata.
    pub(super) fn body(&self) -> Result<(String, Metadata)> {
        match &self.body {
            Body::Here { text, metadata } => Ok((text.clone(), metadata.clone())),
            Body::Segment { file, offset, len } => {
                let bytes = file.read(*offset, *len)?;
                match serde_json::from_slice(&bytes) {
                    Ok(super::segments::SegmentHeader::Upsert { text, metadata, .. }) => {
                        Ok((text.into_owned(), metadata.into_owned()))
                    }
                    _ => Err(Error::corrupt(
                        file.path.display().to_string(),
                        format!("no record at byte {offset} (the segment changed on disk)"),
                    )),
                }
            }
        }
    }

    /// The whole record.
    pub(super) fn record(&self) -> Result<IndexRecord> {
        let (text, metadata) = self.body()?;
        Ok(IndexRecord {
            id: self.id.clone(),
            vector: self.vector.clone(),
            text,
            metadata,
        })
    }
}

#[derive(Debug)]
pub(super) struct IndexData {
    pub(super) schema: IndexSchema,
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) by_id: HashMap<String, usize>,
    pub(super) text: Text,
    pub(super) dir: Option<PathBuf>,
    pub(super) segments: Vec<PathBuf>,
    pub(super) ann: Option<Ann>,
    /// Whether this process holds the directory's writer lock ([`DirLock`](crate::local::DirLock)).
    pub(super) writer: bool,
}

impl IndexData {
    /// An empty index; with `external_text` its text index comes from a factory later
    /// ([`attach_text`](Self::attach_text)), else it keeps the in-memory BM25.
    pub(super) fn new(schema: IndexSchema, dir: Option<PathBuf>, external_text: bool) -> Self {
        Self {
            text: if external_text {
                Text::Pending
            } else {
                Text::Builtin(Bm25::new(schema.analyzer))
            },
            schema,
            slots: Vec::new(),
            by_id: HashMap::new(),
            dir,
            segments: Vec::new(),
            ann: None,
            writer: false,
        }
    }

    /// Applies an upsert whose record lies in a segment at `at` (its body is then read from
    /// there, not kept), or in memory only with `None`; returns the slot it replaced, if any,
    /// and its own slot.
    pub(super) fn apply_upsert(
        &mut self,
        record: IndexRecord,
        at: Option<(&Arc<SegmentFile>, u64, u32)>,
    ) -> (Option<usize>, usize) {
        let IndexRecord {
            id,
            vector,
            text,
            metadata,
        } = record;
        if let Text::Builtin(bm) = &mut self.text {
            bm.add(self.slots.len(), &text);
        }
        let body = match at {
            Some((file, offset, len)) => Body::Segment {
                file: file.clone(),
                offset,
                len,
            },
            None => Body::Here {
                text,
                metadata: metadata.clone(),
            },
        };
        let filters = self.filter_fields(&metadata);
        self.insert(Slot {
            id,
            norm: crate::embedding::dot(&vector, &vector).sqrt(),
            vector,
            filters,
            body,
        })
    }

    /// Puts `slot` in the next slot number, replacing a live record of its id.
    pub(super) fn insert(&mut self, slot: Slot) -> (Option<usize>, usize) {
        let replaced = self.by_id.get(&slot.id).copied();
        self.apply_delete(&slot.id);
        let at = self.slots.len();
        self.by_id.insert(slot.id.clone(), at);
        self.slots.push(Some(slot));
        (replaced, at)
    }

    /// The values of the schema's metadata fields in `metadata`, in the schema's order.
    fn filter_fields(&self, metadata: &Metadata) -> Box<[Option<Value>]> {
        self.schema
            .metadata_fields
            .iter()
            .map(|f| metadata.get(&f.name).cloned())
            .collect()
    }

    /// Whether `slot` passes `filter`, reading its filter fields.
    pub(super) fn passes(&self, filter: &crate::index::Filter, slot: &Slot) -> bool {
        let fields = &self.schema.metadata_fields;
        filter.matches_by(&|name| {
            let i = fields.iter().position(|f| f.name == name)?;
            slot.filters[i].as_ref()
        })
    }

    pub(super) fn apply_delete(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(slot) => {
                self.slots[slot] = None;
                if let Text::Builtin(bm) = &mut self.text {
                    bm.remove(slot);
                }
                true
            }
            None => false,
        }
    }

    pub(super) fn live(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Checks one record against the schema.
    pub(super) fn check(&self, r: &IndexRecord) -> std::result::Result<(), String> {
        if r.id.is_empty() {
            return Err("empty id".into());
        }
        if r.vector.len() != self.schema.dims {
            return Err(format!(
                "dimension mismatch: expected {}, got {}",
                self.schema.dims,
                r.vector.len()
            ));
        }
        if r.vector.iter().any(|x| !x.is_finite()) {
            return Err("vector holds NaN or infinity".into());
        }
        for f in &self.schema.metadata_fields {
            if let Some(v) = r.metadata.get(&f.name) {
                let ok = match f.kind {
                    FieldKind::Keyword => v.is_string(),
                    FieldKind::Integer => v.is_i64() || v.is_u64(),
                    FieldKind::Float => v.is_number(),
                    FieldKind::Bool => v.is_boolean(),
                };
                if !ok && !v.is_null() {
                    return Err(format!(
                        "metadata field {:?} is not {:?}: {v}",
                        f.name, f.kind
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for IndexData {
    fn drop(&mut self) {
        // Best effort: a graph or text index not saved here is rebuilt on the next open.
        if self.dir.as_ref().is_some_and(|d| d.exists()) {
            if let Err(e) = self.save_ann() {
                tracing::warn!(error = %e, index = %self.schema.name, "saving the ANN graph failed");
            }
            if let Err(e) = self.commit_text() {
                tracing::warn!(error = %e, index = %self.schema.name, "saving the text index failed");
            }
        }
    }
}
