//! [`VectorIndex`]: stores chunk vectors and text, and searches them (seed steps 6 and 7).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::text::Analyzer;

/// The largest vector dimension an index, a model ragloop trains, or a configuration accepts
/// (real embedding models use 256–4,096; Elasticsearch's `dense_vector` allows 4,096).
pub const MAX_DIMS: usize = 16_384;

/// The most hits one search may ask for.
pub const MAX_K: usize = 10_000;

/// How vectors are compared. Scores are always "higher is closer".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Cosine similarity, in `[-1, 1]`.
    Cosine,
    /// Inner product.
    Dot,
    /// Euclidean distance; the score is its negation.
    L2,
}

impl Metric {
    /// The score of `b` against query `a` under this metric.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::Cosine => crate::embedding::cosine(a, b),
            Self::Dot => crate::embedding::dot(a, b),
            Self::L2 => -a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
        }
    }
}

/// The type of a filterable metadata field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Exact-match string (ES `keyword`).
    Keyword,
    /// 64-bit integer.
    Integer,
    /// 64-bit float.
    Float,
    /// Boolean.
    Bool,
}

/// A metadata field of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// Field name.
    pub name: String,
    /// Its type.
    pub kind: FieldKind,
}

/// What an index holds: vector dimension and metric, a full-text field, metadata fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSchema {
    /// Index name (`rag-index`).
    pub name: String,
    /// Vector dimension.
    pub dims: usize,
    /// Vector metric.
    pub metric: Metric,
    /// Metadata fields that filters may use.
    pub metadata_fields: Vec<FieldSpec>,
    /// How the full-text field is cut into terms, for documents and queries alike. Schemas
    /// written before it existed read as [`Analyzer::Standard`], which they used.
    #[serde(default)]
    pub analyzer: Analyzer,
}

impl IndexSchema {
    /// A schema with no metadata fields.
    pub fn new(name: impl Into<String>, dims: usize, metric: Metric) -> Self {
        Self {
            name: name.into(),
            dims,
            metric,
            metadata_fields: Vec::new(),
            analyzer: Analyzer::default(),
        }
    }

    /// Sets the full-text field's analyzer.
    pub fn with_analyzer(mut self, analyzer: Analyzer) -> Self {
        self.analyzer = analyzer;
        self
    }

    /// Adds a metadata field.
    pub fn with_field(mut self, name: impl Into<String>, kind: FieldKind) -> Self {
        self.metadata_fields.push(FieldSpec {
            name: name.into(),
            kind,
        });
        self
    }

    /// Checks the schema itself.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 255
            && self.name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
            && !self.name.starts_with(['-', '_', '.']);
        if !name_ok {
            return Err(Error::invalid(format!(
                "index name {:?} must be lower-case letters, digits, '-', '_' or '.', not starting with a symbol",
                self.name
            )));
        }
        if self.dims == 0 || self.dims > MAX_DIMS {
            return Err(Error::invalid(format!(
                "dims {} is outside 1..={MAX_DIMS}",
                self.dims
            )));
        }
        Ok(())
    }

    /// Whether `other` describes the same stored data (name aside): dims, metric and fields.
    pub fn is_compatible(&self, other: &IndexSchema) -> Result<()> {
        if self.dims != other.dims {
            return Err(Error::DimensionMismatch {
                expected: self.dims,
                actual: other.dims,
            });
        }
        if self.metric != other.metric || self.metadata_fields != other.metadata_fields {
            return Err(Error::AlreadyExists {
                what: format!(
                    "index {:?} with another metric or metadata fields",
                    self.name
                ),
            });
        }
        if self.analyzer != other.analyzer {
            return Err(Error::AlreadyExists {
                what: format!(
                    "index {:?} with the {} analyzer ({} was asked for)",
                    self.name, self.analyzer, other.analyzer
                ),
            });
        }
        Ok(())
    }
}

/// Metadata of a record: field name → JSON scalar.
pub type Metadata = BTreeMap<String, Value>;

/// One chunk to index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Unique id; upserting an existing id replaces the record.
    pub id: String,
    /// The chunk's vector.
    pub vector: Vec<f32>,
    /// The chunk's text (full-text searchable).
    pub text: String,
    /// Filterable metadata.
    pub metadata: Metadata,
}

/// Why one record of an upsert failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The record's id.
    pub id: String,
    /// The backend's reason.
    pub reason: String,
    /// Whether sending the same record again may succeed (e.g. ES `429` per item).
    pub retryable: bool,
}

/// Per-item outcome of [`VectorIndex::upsert`]: nothing is dropped silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// Ids written.
    pub written: Vec<String>,
    /// Records that were not written, and why.
    pub failed: Vec<ItemError>,
}

impl UpsertReport {
    /// Whether every record was written.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A metadata filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Field equals value.
    Eq(String, Value),
    /// Field equals one of the values.
    In(String, Vec<Value>),
    /// Numeric field within the bounds (inclusive; `None` = open).
    Range {
        /// Field name.
        field: String,
        /// Lower bound.
        gte: Option<f64>,
        /// Upper bound.
        lte: Option<f64>,
    },
    /// All of the filters.
    And(Vec<Filter>),
    /// Any of the filters.
    Or(Vec<Filter>),
    /// Not the filter.
    Not(Box<Filter>),
}

impl Filter {
    /// Whether `meta` passes this filter. A missing field never matches `Eq`, `In` or `Range`.
    pub fn matches(&self, meta: &Metadata) -> bool {
        self.matches_by(&|field| meta.get(field).map(FieldValue::Json))
    }

    /// Whether the record whose field values `get` looks up passes this filter (for stores
    /// that keep metadata otherwise than as a [`Metadata`] map: a value is borrowed from
    /// where it is kept, or read from a compact form, without making a [`Value`]).
    pub fn matches_by<'a>(&self, get: &dyn Fn(&str) -> Option<FieldValue<'a>>) -> bool {
        match self {
            Self::Eq(f, v) => get(f).is_some_and(|x| x.equals(v)),
            Self::In(f, vs) => get(f).is_some_and(|x| vs.iter().any(|v| x.equals(v))),
            Self::Range { field, gte, lte } => get(field)
                .and_then(|x| x.as_f64())
                .is_some_and(|x| gte.is_none_or(|g| x >= g) && lte.is_none_or(|l| x <= l)),
            Self::And(fs) => fs.iter().all(|f| f.matches_by(get)),
            Self::Or(fs) => fs.iter().any(|f| f.matches_by(get)),
            Self::Not(f) => !f.matches_by(get),
        }
    }

    /// The field names this filter reads.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Self::Eq(f, _) | Self::In(f, _) => vec![f.as_str()],
            Self::Range { field, .. } => vec![field.as_str()],
            Self::And(fs) | Self::Or(fs) => fs.iter().flat_map(Filter::fields).collect(),
            Self::Not(f) => f.fields(),
        }
    }
}

/// A metadata value as [`Filter::matches_by`] reads it: a JSON value where one is kept, or a
/// string, number or boolean read from a compact form. Compared as the JSON value it stands
/// for: numbers as `f64`, anything else by JSON equality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// A JSON value.
    Json(&'a Value),
    /// A string.
    Str(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

impl FieldValue<'_> {
    /// Whether this is the value `v` (numbers compared as `f64`).
    pub fn equals(&self, v: &Value) -> bool {
        match *self {
            Self::Json(x) => json_eq(x, v),
            Self::Str(s) => v.as_str() == Some(s),
            Self::Number(x) => v.as_f64() == Some(x),
            Self::Bool(b) => v.as_bool() == Some(b),
        }
    }

    /// The number this is, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Json(x) => x.as_f64(),
            Self::Number(x) => Some(x),
            Self::Str(_) | Self::Bool(_) => None,
        }
    }

    /// The JSON value this stands for (a number as the `f64` it is compared as).
    pub fn to_value(&self) -> Value {
        match *self {
            Self::Json(x) => x.clone(),
            Self::Str(s) => Value::from(s),
            Self::Number(x) => Value::from(x),
            Self::Bool(b) => Value::Bool(b),
        }
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// What to search with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// k-nearest neighbours of a vector.
    Vector(Vec<f32>),
    /// BM25 full-text search.
    Text(String),
    /// Both, fused as [`SearchRequest::fusion`] says (reciprocal rank fusion by default).
    Hybrid {
        /// The query vector.
        vector: Vec<f32>,
        /// The query text.
        text: String,
    },
}

/// A search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query.
    pub query: Query,
    /// How many hits to return (≥ 1).
    pub k: usize,
    /// Only records whose metadata passes this filter.
    pub filter: Option<Filter>,
    /// Candidates taken from each list before fusion (hybrid only); at least `k`.
    pub num_candidates: usize,
    /// RRF rank constant (hybrid only): a hit at rank `r` scores `1 / (rrf_k + r)`.
    pub rrf_k: u32,
    /// How a hybrid search fuses its two lists (hybrid only; RRF by default).
    #[serde(default)]
    pub fusion: Fusion,
}

/// How a hybrid search fuses the vector and the text list (each `num_candidates` long).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fusion {
    /// Reciprocal rank fusion with [`SearchRequest::rrf_k`]: needs no scale and no tuning.
    #[default]
    Rrf,
    /// A convex combination of min-max normalised scores, `w·vector + (1 − w)·text`: each
    /// list's scores are mapped onto [0, 1] over its own candidates, and a hit missing from a
    /// list scores 0 there. With a weight chosen on labelled queries it beats RRF (Bruch et
    /// al., "An Analysis of Fusion Functions for Hybrid Retrieval", 2023); it is what
    /// OpenSearch's min-max / arithmetic-mean normalisation computes.
    Convex {
        /// `w`, the vector list's weight, in [0, 1].
        vector_weight: f32,
    },
}

impl std::fmt::Display for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rrf => f.write_str("RRF"),
            Self::Convex { vector_weight } => write!(f, "convex w={vector_weight:.2}"),
        }
    }
}

impl SearchRequest {
    /// A search for `k` hits with defaults: no filter, 100 candidates, RRF constant 60.
    pub fn new(query: Query, k: usize) -> Self {
        Self {
            query,
            k,
            filter: None,
            num_candidates: 100,
            rrf_k: 60,
            fusion: Fusion::Rrf,
        }
    }

    /// Sets how a hybrid search fuses its lists.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Checks what every backend needs: `k ≥ 1`, a non-empty text, a non-empty vector of
    /// `dims` values.
    pub fn validate(&self, dims: usize) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::invalid(format!(
                "k {} is outside 1..={MAX_K}",
                self.k
            )));
        }
        if let Fusion::Convex { vector_weight } = self.fusion
            && !(0.0..=1.0).contains(&vector_weight)
        {
            return Err(Error::invalid(format!(
                "fusion weight {vector_weight} is outside [0, 1]"
            )));
        }
        let check_vec = |v: &Vec<f32>| {
            if v.len() != dims {
                return Err(Error::DimensionMismatch {
                    expected: dims,
                    actual: v.len(),
                });
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid("query vector holds NaN or infinity"));
            }
            Ok(())
        };
        let check_text = |t: &String| {
            if t.trim().is_empty() {
                Err(Error::invalid("query text is empty"))
            } else {
                Ok(())
            }
        };
        match &self.query {
            Query::Vector(v) => check_vec(v),
            Query::Text(t) => check_text(t),
            Query::Hybrid { vector, text } => check_vec(vector).and_then(|_| check_text(text)),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// Record id.
    pub id: String,
    /// Score, higher is better (metric similarity, BM25 score or RRF score).
    pub score: f32,
    /// The record's text.
    pub text: String,
    /// The record's metadata.
    pub metadata: Metadata,
}

impl SearchHit {
    /// The document the hit belongs to: its `doc_id` metadata, else its own id (how
    /// evaluation maps chunk hits to documents).
    pub fn doc_id(&self) -> &str {
        self.metadata
            .get("doc_id")
            .and_then(|v| v.as_str())
            .unwrap_or(&self.id)
    }
}

/// A searchable store of chunk vectors and text: the local index here, Elasticsearch and
/// OpenSearch in `vector-store`.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Creates an index. Creating one that exists with the same schema succeeds (idempotent); with
    /// another dimension it is [`Error::DimensionMismatch`], with another metric or fields
    /// [`Error::AlreadyExists`].
    async fn create_index(&self, schema: &IndexSchema) -> Result<()>;

    /// The schema of an existing index, or [`Error::NotFound`].
    async fn schema(&self, index: &str) -> Result<IndexSchema>;

    /// Inserts or replaces records. Records that cannot be written (wrong dimension, non-finite
    /// values, empty id) are reported one by one in the [`UpsertReport`]; the others are written.
    async fn upsert(&self, index: &str, records: Vec<IndexRecord>) -> Result<UpsertReport>;

    /// Deletes records by id; returns how many existed.
    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize>;

    /// Searches; hits are sorted by descending score, at most `k`.
    async fn search(&self, index: &str, request: &SearchRequest) -> Result<Vec<SearchHit>>;

    /// Number of records.
    async fn count(&self, index: &str) -> Result<usize>;

    /// Deletes the index and everything in it. Dropping a missing index is [`Error::NotFound`].
    async fn drop_index(&self, index: &str) -> Result<()>;
}

/// Reciprocal rank fusion of several ranked lists of hits: each hit scores the sum over lists of
/// `1 / (rrf_k + rank)` (rank from 1). Used by backends without native hybrid search.
pub fn rrf_fuse(lists: &[Vec<SearchHit>], rrf_k: u32, k: usize) -> Vec<SearchHit> {
    let mut fused: HashMap<&str, (f32, &SearchHit)> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            let add = 1.0 / (rrf_k as f32 + rank as f32 + 1.0);
            fused.entry(hit.id.as_str()).or_insert((0.0, hit)).0 += add;
        }
    }
    best_fused(fused, k)
}

/// The `k` best fused scores, ties by id (both fusions end here).
fn best_fused(fused: HashMap<&str, (f32, &SearchHit)>, k: usize) -> Vec<SearchHit> {
    let mut out: Vec<SearchHit> = fused
        .into_values()
        .map(|(score, hit)| SearchHit {
            score,
            ..hit.clone()
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    out.truncate(k);
    out
}

/// The convex fusion of a vector and a text list ([`Fusion::Convex`]): each list's scores
/// min-max normalised over that list, then `w·vector + (1 − w)·text`; the best `k`, ties by id.
pub fn convex_fuse(
    vector: &[SearchHit],
    text: &[SearchHit],
    vector_weight: f32,
    k: usize,
) -> Vec<SearchHit> {
    let mut fused: HashMap<&str, (f32, &SearchHit)> = HashMap::new();
    for (list, weight) in [(vector, vector_weight), (text, 1.0 - vector_weight)] {
        let (lo, hi) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), h| {
                (lo.min(h.score), hi.max(h.score))
            });
        let span = hi - lo;
        for hit in list {
            // One score (or equal ones) carries no scale: each counts fully.
            let norm = if span > 0.0 {
                (hit.score - lo) / span
            } else {
                1.0
            };
            fused.entry(hit.id.as_str()).or_insert((0.0, hit)).0 += weight * norm;
        }
    }
    best_fused(fused, k)
}

/// Fuses a hybrid search's vector and text lists as `request.fusion` says: the one function
/// backends without native hybrid search call.
pub fn fuse(
    request: &SearchRequest,
    vector: Vec<SearchHit>,
    text: Vec<SearchHit>,
) -> Vec<SearchHit> {
    match request.fusion {
        Fusion::Rrf => rrf_fuse(&[vector, text], request.rrf_k, request.k),
        Fusion::Convex { vector_weight } => convex_fuse(&vector, &text, vector_weight, request.k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hit(id: &str) -> SearchHit {
        SearchHit {
            id: id.into(),
            score: 0.0,
            text: String::new(),
            metadata: Metadata::new(),
        }
    }

    fn scored(id: &str, score: f32) -> SearchHit {
        SearchHit { score, ..hit(id) }
    }

    #[test]
    fn convex_fusion_weighs_normalised_scores() {
        // Vector scores span 0.9..0.5, text 12..2: only their places in each span count.
        let v = vec![scored("a", 0.9), scored("b", 0.7), scored("c", 0.5)];
        let t = vec![scored("c", 12.0), scored("d", 7.0), scored("a", 2.0)];
        let ids = |w: f32| -> Vec<String> {
            convex_fuse(&v, &t, w, 4)
                .into_iter()
                .map(|h| h.id)
                .collect()
        };
        // w = 1: the vector order; hits only in the text list (d) and the vector list's
        // lowest (c, normalised to 0) tie at 0, broken by id.
        assert_eq!(ids(1.0), ["a", "b", "c", "d"]);
        assert_eq!(ids(0.0), ["c", "d", "a", "b"]);
        // w = 0.5: a = 0.5·1 + 0.5·0 = 0.5, b = 0.25, c = 0.5, d = 0.25.
        let fused = convex_fuse(&v, &t, 0.5, 4);
        let got: Vec<(&str, f32)> = fused.iter().map(|h| (h.id.as_str(), h.score)).collect();
        assert_eq!(got, [("a", 0.5), ("c", 0.5), ("b", 0.25), ("d", 0.25)]);
        // A list of one score (no span) counts fully; empty lists fuse to nothing.
        assert_eq!(convex_fuse(&[scored("x", 3.0)], &[], 0.7, 5)[0].score, 0.7);
        assert!(convex_fuse(&[], &[], 0.5, 5).is_empty());
    }

    #[test]
    fn fusion_weight_outside_the_unit_interval_is_refused() {
        let q = Query::Hybrid {
            vector: vec![1.0],
            text: "x".into(),
        };
        let ok =
            SearchRequest::new(q.clone(), 3).with_fusion(Fusion::Convex { vector_weight: 0.7 });
        assert!(ok.validate(1).is_ok());
        for w in [-0.1, 1.5, f32::NAN] {
            let bad =
                SearchRequest::new(q.clone(), 3).with_fusion(Fusion::Convex { vector_weight: w });
            assert!(
                matches!(bad.validate(1), Err(Error::InvalidInput { .. })),
                "{w}"
            );
        }
        // Requests serialised before `fusion` existed read as RRF.
        let old = serde_json::json!({"query": {"text": "x"}, "k": 3, "filter": null, "num_candidates": 100, "rrf_k": 60});
        let r: SearchRequest = serde_json::from_value(old).unwrap();
        assert_eq!(r.fusion, Fusion::Rrf);
    }

    #[test]
    fn rrf_prefers_hits_ranked_well_in_both_lists() {
        let a = vec![hit("x"), hit("y"), hit("z")];
        let b = vec![hit("y"), hit("w"), hit("x")];
        let fused = rrf_fuse(&[a, b], 60, 3);
        let ids: Vec<_> = fused.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["y", "x", "w"]);
        assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    }

    #[test]
    fn filters_compare_numbers_across_int_and_float() {
        let meta: Metadata = [
            ("year".to_string(), json!(2020)),
            ("lang".into(), json!("en")),
        ]
        .into_iter()
        .collect();
        assert!(Filter::Eq("year".into(), json!(2020.0)).matches(&meta));
        let f = Filter::And(vec![
            Filter::Range {
                field: "year".into(),
                gte: Some(2019.0),
                lte: None,
            },
            Filter::Not(Box::new(Filter::In("lang".into(), vec![json!("de")]))),
        ]);
        assert!(f.matches(&meta));
        assert!(!Filter::Eq("missing".into(), json!(1)).matches(&meta));
    }
}
