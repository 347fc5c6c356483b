//! The in-memory state of one index: its records by slot, the id map, the text index and the
//! graph.

use super::*;

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

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) record: IndexRecord,
    pub(super) norm: f32,
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

    /// Applies an upsert; returns the slot it replaced, if any, and its own slot.
    pub(super) fn apply_upsert(&mut self, record: IndexRecord) -> (Option<usize>, usize) {
        let replaced = self.by_id.get(&record.id).copied();
        self.apply_delete(&record.id);
        let slot = self.slots.len();
        if let Text::Builtin(bm) = &mut self.text {
            bm.add(slot, &record.text);
        }
        self.by_id.insert(record.id.clone(), slot);
        let norm = crate::embedding::dot(&record.vector, &record.vector).sqrt();
        self.slots.push(Some(Slot { record, norm }));
        (replaced, slot)
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
