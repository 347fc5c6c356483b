//! The seam for full-text search in [`LocalVectorIndex`]: the index keeps records, vectors,
//! filters and persistence; a [`TextIndex`] (tantivy in `vector-store`) answers its BM25
//! queries instead of the in-memory [`Bm25`](super::Bm25). Like the ANN seam
//! ([`super::ann`]) it keeps rag-core free of a search engine, and like a graph the text index
//! is an accelerator, never the source of truth: it is kept beside the segments with the
//! segment state it covers (its *stamp*), and rebuilt from the records when that is stale.
//!
//! [`LocalVectorIndex`]: super::LocalVectorIndex

use std::fmt::Debug;
use std::path::Path;

use crate::error::Result;
use crate::index::{Filter, IndexSchema, Metadata};

/// One record as the text index sees it.
#[derive(Debug, Clone, Copy)]
pub struct TextDoc<'a> {
    /// The record's id (unique in the index).
    pub id: &'a str,
    /// The full-text field.
    pub text: &'a str,
    /// Its metadata; the schema's metadata fields are what filters read.
    pub metadata: &'a Metadata,
}

/// A full-text (BM25) index of one [`LocalVectorIndex`](super::LocalVectorIndex) index, keyed by
/// record id. Writes are called under the index's write lock, each with the stamp the segment
/// state has once it is applied; they need not be visible or durable until
/// [`commit`](Self::commit), except that a search sees every write made before it.
pub trait TextIndex: Send + Sync {
    /// Adds documents, replacing any with the same id.
    fn upsert(&self, docs: &[TextDoc<'_>], stamp: &str) -> Result<()>;
    /// Removes documents by id (absent ids are ignored).
    fn delete(&self, ids: &[&str], stamp: &str) -> Result<()>;
    /// Records a new stamp with no change of content (the segments were compacted).
    fn restamp(&self, stamp: &str) -> Result<()>;
    /// Up to `n` `(id, BM25 score)` pairs for `query`, best first, among the documents that
    /// pass `filter` (the [`Filter::matches`] semantics over the schema's metadata fields). The
    /// query is cut into terms by the schema's analyzer; a document matches when it holds any.
    fn search(&self, query: &str, n: usize, filter: Option<&Filter>) -> Result<Vec<(String, f32)>>;
    /// Number of documents, counting every write made so far.
    fn len(&self) -> Result<usize>;
    /// Whether there are no documents.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Makes every write durable together with the stamp of the last one.
    fn commit(&self) -> Result<()>;
    /// The stamp of the last durable commit (`None` for a new index).
    fn stamp(&self) -> Option<String>;
}

/// Opens the text indexes of a [`LocalVectorIndex`](super::LocalVectorIndex).
pub trait TextFactory: Send + Sync + Debug {
    /// The text index of `schema` kept under `dir` (opened as it is when it exists, created
    /// empty otherwise), or kept in memory when `dir` is `None`. The caller writes to a
    /// directory only while it holds the index directory's [`DirLock`](super::DirLock).
    fn open(&self, schema: &IndexSchema, dir: Option<&Path>) -> Result<Box<dyn TextIndex>>;
}
