//! BM25 on tantivy for the embedded index: [`TantivyText`] is a
//! [`TextFactory`], so a
//! [`LocalVectorIndex`](rag_core::local::LocalVectorIndex) answers text queries from a tantivy
//! index kept under each index's `text/` directory instead of its in-memory BM25 (at a million
//! chunks: 19× the queries per second in a ninth of the memory, `benches/bm25.rs`).
//!
//! - Terms come from the schema's [`Analyzer`] (a tantivy tokenizer over
//!   [`Analyzer::terms`]), so documents and queries are cut exactly as every other BM25 of the
//!   project cuts them; a query is the union of its distinct terms (BM25 summed over those a
//!   document holds), scored by tantivy's BM25 (k1 1.2, b 0.75, lengths kept in a byte each).
//! - Each declared metadata field is indexed by kind (keyword → raw term, numbers → `f64`,
//!   booleans), and a [`Filter`] becomes a non-scoring tantivy query with the exact meaning of
//!   [`Filter::matches`] — a missing field matches no `Eq`/`In`/`Range`, an explicit `null`
//!   only `Eq(null)`, `Not` whatever its operand does not — so filters narrow the search
//!   inside the engine rather than after it.
//! - Writes wait in tantivy's writer (one thread, 64 MiB) and are committed with their stamp
//!   on [`commit`](TextIndex::commit) or, for read-your-writes, before the next search.

use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use rag_core::local::fulltext::{TextDoc, TextFactory, TextIndex};
use rag_core::{Analyzer, Error, FieldKind, Filter, IndexSchema, Result};
use serde_json::Value;
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, EmptyQuery, Occur, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// The tokenizer name every text field uses.
const TOKENIZER: &str = "ragloop";
/// The writer's indexing memory (one thread).
const WRITER_BYTES: usize = 64 << 20;
/// Documents added after which a write commits by itself (bounds what waits in memory).
const COMMIT_EVERY: usize = 100_000;
/// Bumped when the tantivy schema built here changes: an index of another version is rebuilt.
const FORMAT: u32 = 1;

/// Makes tantivy text indexes for a [`LocalVectorIndex`](rag_core::local::LocalVectorIndex).
#[derive(Debug, Clone, Copy, Default)]
pub struct TantivyText;

impl TextFactory for TantivyText {
    fn open(&self, schema: &IndexSchema, dir: Option<&Path>) -> Result<Box<dyn TextIndex>> {
        Ok(Box::new(TantivyIndex::open(schema, dir)?))
    }
}

/// The fields of one tantivy index.
struct Fields {
    id: Field,
    text: Field,
    /// Names of the metadata fields whose value is an explicit `null`.
    nulls: Field,
    /// One per declared metadata field, in the schema's order.
    metadata: Vec<(String, FieldKind, Field)>,
}

impl Fields {
    fn schema(schema: &IndexSchema) -> (Schema, Self) {
        let mut b = Schema::builder();
        let id = b.add_text_field("id", STRING | FAST);
        let text = b.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        let nulls = b.add_text_field("nulls", STRING);
        let metadata = schema
            .metadata_fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let name = format!("m{i}");
                let field = match f.kind {
                    FieldKind::Keyword => b.add_text_field(&name, STRING),
                    FieldKind::Integer | FieldKind::Float => b.add_f64_field(&name, INDEXED),
                    FieldKind::Bool => b.add_bool_field(&name, INDEXED),
                };
                (f.name.clone(), f.kind, field)
            })
            .collect();
        (
            b.build(),
            Self {
                id,
                text,
                nulls,
                metadata,
            },
        )
    }

    fn document(&self, d: &TextDoc<'_>) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.id, d.id);
        doc.add_text(self.text, d.text);
        for (name, kind, field) in &self.metadata {
            match (kind, d.metadata.get(name)) {
                (_, Some(Value::Null)) => doc.add_text(self.nulls, name),
                (FieldKind::Keyword, Some(Value::String(s))) => doc.add_text(*field, s),
                (FieldKind::Integer | FieldKind::Float, Some(v)) if v.is_number() => {
                    doc.add_f64(*field, number(v));
                }
                (FieldKind::Bool, Some(Value::Bool(b))) => doc.add_bool(*field, *b),
                _ => {}
            }
        }
        doc
    }

    /// `filter` as a tantivy query matching exactly the documents [`Filter::matches`] passes.
    fn filter(&self, filter: &Filter) -> Box<dyn Query> {
        match filter {
            Filter::Eq(name, v) => self.eq(name, v),
            Filter::In(name, vs) => any(vs.iter().map(|v| self.eq(name, v)).collect()),
            Filter::Range { field, gte, lte } => match self.field(field) {
                Some((FieldKind::Integer | FieldKind::Float, f)) => {
                    let term = |x: f64| Term::from_field_f64(f, if x == 0.0 { 0.0 } else { x });
                    Box::new(RangeQuery::new(
                        Bound::Included(term(gte.unwrap_or(f64::NEG_INFINITY))),
                        Bound::Included(term(lte.unwrap_or(f64::INFINITY))),
                    ))
                }
                _ => Box::new(EmptyQuery),
            },
            Filter::And(fs) if fs.is_empty() => Box::new(AllQuery),
            Filter::And(fs) => Box::new(BooleanQuery::new(
                fs.iter().map(|f| (Occur::Must, self.filter(f))).collect(),
            )),
            Filter::Or(fs) => any(fs.iter().map(|f| self.filter(f)).collect()),
            Filter::Not(f) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.filter(f)),
            ])),
        }
    }

    fn eq(&self, name: &str, v: &Value) -> Box<dyn Query> {
        let Some((kind, field)) = self.field(name) else {
            return Box::new(EmptyQuery);
        };
        let term = match (kind, v) {
            (_, Value::Null) => Term::from_field_text(self.nulls, name),
            (FieldKind::Keyword, Value::String(s)) => Term::from_field_text(field, s),
            (FieldKind::Integer | FieldKind::Float, v) if v.is_number() => {
                Term::from_field_f64(field, number(v))
            }
            (FieldKind::Bool, Value::Bool(b)) => Term::from_field_bool(field, *b),
            _ => return Box::new(EmptyQuery),
        };
        Box::new(TermQuery::new(term, IndexRecordOption::Basic))
    }

    fn field(&self, name: &str) -> Option<(FieldKind, Field)> {
        self.metadata
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, k, f)| (*k, *f))
    }
}

/// A JSON number as the `f64` [`Filter::matches`] compares (`-0` is `0`).
fn number(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or(0.0);
    if x == 0.0 { 0.0 } else { x }
}

fn any(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if queries.is_empty() {
        return Box::new(EmptyQuery);
    }
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// Writes not yet committed, and the stamp they bring.
struct Pending {
    writer: Option<IndexWriter>,
    stamp: Option<String>,
    dirty: bool,
    /// Ids added since the last commit.
    added: HashSet<String>,
}

/// One tantivy index (see the module docs).
pub struct TantivyIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: Analyzer,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for TantivyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyIndex")
            .field("docs", &self.reader.searcher().num_docs())
            .finish()
    }
}

fn engine(e: tantivy::TantivyError) -> Error {
    Error::backend("tantivy", "text index", e)
}

/// The stamp a commit carries: the format version, then the caller's stamp.
fn payload(stamp: &str) -> String {
    format!("{FORMAT}\n{stamp}")
}

impl TantivyIndex {
    /// Opens (or creates) the text index of `schema` under `dir`, or in memory.
    pub fn open(schema: &IndexSchema, dir: Option<&Path>) -> Result<Self> {
        let (tantivy_schema, fields) = Fields::schema(schema);
        let index = match dir {
            None => Index::create_in_ram(tantivy_schema),
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(e, format!("creating {}", dir.display())))?;
                let directory = MmapDirectory::open(dir).map_err(|e| {
                    Error::backend("tantivy", format!("opening {}", dir.display()), e)
                })?;
                Index::open_or_create(directory, tantivy_schema).map_err(engine)?
            }
        };
        index.tokenizers().register(
            TOKENIZER,
            TextAnalyzer::from(AnalyzerTokenizer {
                analyzer: schema.analyzer,
            }),
        );
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(engine)?;
        Ok(Self {
            index,
            reader,
            fields,
            analyzer: schema.analyzer,
            pending: Mutex::new(Pending {
                writer: None,
                stamp: None,
                dirty: false,
                added: HashSet::new(),
            }),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer, made at the first write.
    fn writer<'a>(&self, p: &'a mut Pending) -> Result<&'a mut IndexWriter> {
        match &mut p.writer {
            Some(w) => Ok(w),
            none => Ok(none.insert(
                self.index
                    .writer_with_num_threads(1, WRITER_BYTES)
                    .map_err(engine)?,
            )),
        }
    }

    /// Whether the last commit holds `id` (possibly deleted since: a delete too many is harmless).
    fn committed(&self, id: &str) -> Result<bool> {
        let term = Term::from_field_text(self.fields.id, id);
        Ok(self.reader.searcher().doc_freq(&term).map_err(engine)? > 0)
    }

    fn commit_locked(&self, p: &mut Pending) -> Result<()> {
        if !p.dirty {
            return Ok(());
        }
        let stamp = p.stamp.clone().unwrap_or_default();
        let writer = self.writer(p)?;
        let mut prepared = writer.prepare_commit().map_err(engine)?;
        prepared.set_payload(&payload(&stamp));
        prepared.commit().map_err(engine)?;
        self.reader.reload().map_err(engine)?;
        p.dirty = false;
        p.added.clear();
        Ok(())
    }

    /// Queues the deletion of the documents of `ids` (added before it), as one operation:
    /// tantivy keeps every queued deletion until the commit has applied it to every segment,
    /// and one per id (`delete_term`, a scoring weight each, ~600 bytes) was 179 MB for
    /// 300,000 ids re-upserted; a set of ids is one small automaton.
    fn delete_ids<'a>(
        &self,
        writer: &IndexWriter,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<()> {
        let terms: Vec<Term> = ids
            .map(|id| Term::from_field_text(self.fields.id, id))
            .collect();
        if !terms.is_empty() {
            writer
                .delete_query(Box::new(TermSetQuery::new(terms)))
                .map_err(engine)?;
        }
        Ok(())
    }

    fn terms(&self, query: &str) -> Vec<String> {
        let mut terms: Vec<String> = self.analyzer.terms(query).collect();
        terms.sort();
        terms.dedup();
        terms
    }
}

impl TextIndex for TantivyIndex {
    fn upsert(&self, docs: &[TextDoc<'_>], stamp: &str) -> Result<()> {
        let mut p = self.pending();
        // A delete is queued only for an id that is there: tantivy keeps every queued delete
        // (a term weight) until the commit, 1.4 KB each, which was 1.4 GB at a million.
        let present: Vec<bool> = docs
            .iter()
            .map(|d| Ok(p.added.contains(d.id) || self.committed(d.id)?))
            .collect::<Result<_>>()?;
        let writer = self.writer(&mut p)?;
        let gone = docs
            .iter()
            .zip(present)
            .filter(|(_, present)| *present)
            .map(|(d, _)| d.id);
        self.delete_ids(writer, gone)?;
        // An id twice in one write: its last document stands (the deletions above come before
        // every add of the write, so they cannot remove the earlier one).
        let last: std::collections::HashMap<&str, usize> =
            docs.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        for (i, d) in docs.iter().enumerate() {
            if last.get(d.id) != Some(&i) {
                continue;
            }
            writer
                .add_document(self.fields.document(d))
                .map_err(engine)?;
        }
        p.added.extend(docs.iter().map(|d| d.id.to_string()));
        p.stamp = Some(stamp.to_string());
        p.dirty = true;
        if p.added.len() >= COMMIT_EVERY {
            self.commit_locked(&mut p)?;
        }
        Ok(())
    }

    fn delete(&self, ids: &[&str], stamp: &str) -> Result<()> {
        let mut p = self.pending();
        let present: Vec<bool> = ids
            .iter()
            .map(|id| Ok(p.added.contains(*id) || self.committed(id)?))
            .collect::<Result<_>>()?;
        let writer = self.writer(&mut p)?;
        let gone = ids
            .iter()
            .zip(present)
            .filter(|(_, present)| *present)
            .map(|(id, _)| *id);
        self.delete_ids(writer, gone)?;
        p.stamp = Some(stamp.to_string());
        p.dirty = true;
        Ok(())
    }

    fn restamp(&self, stamp: &str) -> Result<()> {
        let mut p = self.pending();
        p.stamp = Some(stamp.to_string());
        p.dirty = true;
        Ok(())
    }

    fn search(&self, query: &str, n: usize, filter: Option<&Filter>) -> Result<Vec<(String, f32)>> {
        {
            let mut p = self.pending();
            if p.dirty {
                self.commit_locked(&mut p)?;
            }
        }
        let terms = self.terms(query);
        if terms.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let text: Box<dyn Query> = Box::new(BooleanQuery::new(
            terms
                .iter()
                .map(|t| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(self.fields.text, t),
                        IndexRecordOption::WithFreqs,
                    ));
                    (Occur::Should, q)
                })
                .collect(),
        ));
        let query: Box<dyn Query> = match filter {
            None => text,
            Some(f) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text),
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(self.fields.filter(f), 0.0)),
                ),
            ])),
        };
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(n).order_by_score())
            .map_err(engine)?;
        let mut out = Vec::with_capacity(top.len());
        let mut columns = std::collections::HashMap::new();
        let mut id = String::new();
        for (score, addr) in top {
            let column = match columns.entry(addr.segment_ord) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .str("id")
                        .map_err(engine)?
                        .ok_or_else(|| Error::corrupt("text index", "no id column"))?,
                ),
            };
            let ord = column
                .term_ords(addr.doc_id)
                .next()
                .ok_or_else(|| Error::corrupt("text index", "a document without an id"))?;
            id.clear();
            column
                .ord_to_str(ord, &mut id)
                .map_err(|e| Error::io(e, "reading the text index"))?;
            out.push((id.clone(), score));
        }
        Ok(out)
    }

    fn len(&self) -> Result<usize> {
        let mut p = self.pending();
        self.commit_locked(&mut p)?;
        Ok(usize::try_from(self.reader.searcher().num_docs()).unwrap_or(usize::MAX))
    }

    fn commit(&self) -> Result<()> {
        let mut p = self.pending();
        self.commit_locked(&mut p)
    }

    fn stamp(&self) -> Option<String> {
        let payload = self.index.load_metas().ok()?.payload?;
        let (format, stamp) = payload.split_once('\n')?;
        (format == FORMAT.to_string()).then(|| stamp.to_string())
    }
}

impl Drop for TantivyIndex {
    fn drop(&mut self) {
        let p = self.pending.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(writer) = p.writer.take() {
            // Uncommitted writes are dropped (the stamp then says the index is stale); merges
            // under way finish, so no half-merged files are left behind.
            if let Err(e) = writer.wait_merging_threads() {
                tracing::warn!(error = %e, "tantivy merge failed");
            }
        }
    }
}

/// A tantivy tokenizer that yields [`Analyzer::terms`].
#[derive(Clone)]
struct AnalyzerTokenizer {
    analyzer: Analyzer,
}

struct Terms {
    terms: std::vec::IntoIter<String>,
    token: Token,
}

impl Tokenizer for AnalyzerTokenizer {
    type TokenStream<'a> = Terms;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Terms {
        Terms {
            terms: self.analyzer.terms(text).collect::<Vec<_>>().into_iter(),
            token: Token {
                position: usize::MAX,
                ..Token::default()
            },
        }
    }
}

impl TokenStream for Terms {
    fn advance(&mut self) -> bool {
        match self.terms.next() {
            Some(t) => {
                self.token.text = t;
                self.token.position = self.token.position.wrapping_add(1);
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}
