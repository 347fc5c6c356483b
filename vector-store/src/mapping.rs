//! Index mappings: how an [`IndexSchema`] is written for each engine.
//!
//! - Elasticsearch 8: `dense_vector` with `similarity` and HNSW `index_options`
//!   (<https://www.elastic.co/guide/en/elasticsearch/reference/8.15/dense-vector.html>).
//! - OpenSearch 2: `knn_vector` with an HNSW `method` on the lucene engine, and `index.knn`
//!   enabled (<https://opensearch.org/docs/2.15/search-plugins/knn/knn-index/>).

use rag_core::{Analyzer, FieldKind, IndexSchema, Metric};
use serde_json::{Map, Value, json};

/// The vector field's name (the seed's `embedding`).
pub const EMBEDDING_FIELD: &str = "embedding";
/// The full-text field's name (the seed's `text`).
pub const TEXT_FIELD: &str = "text";

/// Which engine a mapping is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Elasticsearch 8.x (as Alibaba Cloud Elasticsearch runs it).
    Elasticsearch8,
    /// OpenSearch 2.x, the open-source engine (self-hosted, or Amazon OpenSearch Service).
    /// Not "Alibaba Cloud OpenSearch", which is a different product with its own API.
    OpenSearch2,
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours per node.
    pub m: u32,
    /// Candidate list size while building.
    pub ef_construction: u32,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
        }
    }
}

/// The create-index body for `schema` on `engine`, with default HNSW parameters.
pub fn mapping(schema: &IndexSchema, engine: Engine) -> Value {
    mapping_with(schema, engine, HnswParams::default(), None)
}

/// The create-index body for `schema` on `engine`; `text_analyzer` names a cluster analyzer
/// for the full-text field instead of the schema's (see
/// [`SearchConfig::text_analyzer`](crate::SearchConfig::text_analyzer)).
pub fn mapping_with(
    schema: &IndexSchema,
    engine: Engine,
    hnsw: HnswParams,
    text_analyzer: Option<&str>,
) -> Value {
    let mut props = Map::new();
    props.insert(EMBEDDING_FIELD.into(), vector_field(schema, engine, hnsw));
    let text = match text_analyzer {
        Some(name) => json!({ "type": "text", "analyzer": name }),
        None => text_field(schema.analyzer),
    };
    props.insert(TEXT_FIELD.into(), text);
    for f in &schema.metadata_fields {
        let ty = match f.kind {
            FieldKind::Keyword => "keyword",
            FieldKind::Integer => "long",
            FieldKind::Float => "double",
            FieldKind::Bool => "boolean",
        };
        props.insert(f.name.clone(), json!({ "type": ty }));
    }
    // `_meta` keeps the schema as ragloop wrote it, so reading it back is exact.
    let mappings = json!({ "_meta": { META_KEY: schema }, "properties": props });
    match engine {
        Engine::Elasticsearch8 => json!({ "mappings": mappings }),
        Engine::OpenSearch2 => json!({
            "settings": { "index": { "knn": true } },
            "mappings": mappings
        }),
    }
}

/// The key under `mappings._meta` that holds the ragloop [`IndexSchema`].
pub const META_KEY: &str = "ragloop_schema";

/// Reads the schema of index `name` from its mapping (the `mappings` object of
/// `GET /{index}/_mapping`): the `_meta` ragloop wrote, or else what the vector field and the
/// metadata fields say (an index created by other tools).
pub fn schema_from_mapping(name: &str, mappings: &Value) -> rag_core::Result<IndexSchema> {
    if let Some(meta) = mappings["_meta"].get(META_KEY) {
        let mut schema: IndexSchema = serde_json::from_value(meta.clone()).map_err(|e| {
            rag_core::Error::invalid(format!("index {name:?}: unreadable _meta.{META_KEY}: {e}"))
        })?;
        schema.name = name.to_string();
        return Ok(schema);
    }
    let props = &mappings["properties"];
    let vector = &props[EMBEDDING_FIELD];
    let dims = vector["dims"]
        .as_u64()
        .or_else(|| vector["dimension"].as_u64())
        .ok_or_else(|| {
            rag_core::Error::invalid(format!(
                "index {name:?} has no vector field {EMBEDDING_FIELD:?} with a dimension"
            ))
        })? as usize;
    let space = vector["similarity"]
        .as_str()
        .or_else(|| vector["method"]["space_type"].as_str())
        .or_else(|| vector["space_type"].as_str())
        .unwrap_or("cosine");
    let metric = match space {
        "cosine" | "cosinesimil" => Metric::Cosine,
        "dot_product" | "max_inner_product" | "innerproduct" => Metric::Dot,
        "l2_norm" | "l2" => Metric::L2,
        other => {
            return Err(rag_core::Error::invalid(format!(
                "index {name:?}: vector similarity {other:?} is not supported"
            )));
        }
    };
    let analyzer = match props[TEXT_FIELD]["analyzer"].as_str() {
        Some("english") => Analyzer::English,
        _ => Analyzer::Standard,
    };
    let mut schema = IndexSchema::new(name, dims, metric).with_analyzer(analyzer);
    if let Some(obj) = props.as_object() {
        for (field, def) in obj {
            if field == EMBEDDING_FIELD || field == TEXT_FIELD {
                continue;
            }
            let kind = match def["type"].as_str() {
                Some("keyword") => FieldKind::Keyword,
                Some("long" | "integer" | "short" | "byte") => FieldKind::Integer,
                Some("double" | "float" | "half_float" | "scaled_float") => FieldKind::Float,
                Some("boolean") => FieldKind::Bool,
                _ => continue,
            };
            schema = schema.with_field(field.clone(), kind);
        }
    }
    Ok(schema)
}

/// The analyzer the full-text field of a mapping (the `mappings` object) names, or
/// `standard`, the engines' default.
pub fn text_analyzer_of(mappings: &Value) -> &str {
    mappings["properties"][TEXT_FIELD]["analyzer"]
        .as_str()
        .unwrap_or("standard")
}

/// The plugin that provides the cluster analyzer `name`, for the names Chinese, Japanese and
/// Korean corpora use (the engines' own plugins, and the IK plugin).
pub fn analyzer_plugin(name: &str) -> Option<&'static str> {
    Some(match name {
        "smartcn" => "analysis-smartcn",
        "ik_smart" | "ik_max_word" => "analysis-ik",
        "kuromoji" => "analysis-kuromoji",
        "nori" => "analysis-nori",
        "icu_analyzer" => "analysis-icu",
        "pinyin" => "analysis-pinyin",
        _ => return None,
    })
}

/// The full-text field. `english` is the built-in language analyzer of both engines
/// (Elasticsearch: <https://www.elastic.co/guide/en/elasticsearch/reference/8.15/analysis-lang-analyzer.html#english-analyzer>;
/// OpenSearch: <https://opensearch.org/docs/2.13/analyzers/language-analyzers/>): stop words
/// and Porter stems, where the local index keeps stop words (BM25's IDF weighs them down) and
/// uses Snowball's English stems — the same kind of matching, not the same terms. The
/// standard analyzer is the engines' default, so its field stays as the seed wrote it.
fn text_field(analyzer: Analyzer) -> Value {
    match analyzer {
        Analyzer::Standard => json!({ "type": "text" }),
        Analyzer::English => json!({ "type": "text", "analyzer": "english" }),
    }
}

fn vector_field(schema: &IndexSchema, engine: Engine, hnsw: HnswParams) -> Value {
    match engine {
        Engine::Elasticsearch8 => json!({
            "type": "dense_vector",
            "dims": schema.dims,
            "index": true,
            "similarity": match schema.metric {
                Metric::Cosine => "cosine",
                Metric::Dot => "dot_product",
                Metric::L2 => "l2_norm",
            },
            "index_options": { "type": "hnsw", "m": hnsw.m, "ef_construction": hnsw.ef_construction }
        }),
        Engine::OpenSearch2 => json!({
            "type": "knn_vector",
            "dimension": schema.dims,
            "method": {
                "name": "hnsw",
                "engine": "lucene",
                "space_type": match schema.metric {
                    Metric::Cosine => "cosinesimil",
                    Metric::Dot => "innerproduct",
                    Metric::L2 => "l2",
                },
                "parameters": { "m": hnsw.m, "ef_construction": hnsw.ef_construction }
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> IndexSchema {
        IndexSchema::new("rag-index", 768, Metric::Cosine)
            .with_field("doc_id", FieldKind::Keyword)
            .with_field("start", FieldKind::Integer)
    }

    #[test]
    fn elasticsearch_mapping_matches_the_seed_shape() {
        let body = mapping(&schema(), Engine::Elasticsearch8);
        assert_eq!(
            body,
            json!({"mappings": {"_meta": {"ragloop_schema": {
                "name": "rag-index", "dims": 768, "metric": "cosine", "metadata_fields": [
                    {"name": "doc_id", "kind": "keyword"}, {"name": "start", "kind": "integer"}],
                "analyzer": "standard"}},
                "properties": {
                "embedding": {"type": "dense_vector", "dims": 768, "index": true, "similarity": "cosine",
                              "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100}},
                "text": {"type": "text"},
                "doc_id": {"type": "keyword"},
                "start": {"type": "long"}
            }}})
        );
    }

    #[test]
    fn an_english_index_asks_both_engines_for_their_english_analyzer() {
        let s = schema().with_analyzer(Analyzer::English);
        for engine in [Engine::Elasticsearch8, Engine::OpenSearch2] {
            let body = mapping(&s, engine);
            assert_eq!(
                body["mappings"]["properties"]["text"],
                json!({"type": "text", "analyzer": "english"})
            );
            assert_eq!(
                schema_from_mapping("rag-index", &body["mappings"]).unwrap(),
                s
            );
            let mut foreign = body["mappings"].clone();
            foreign.as_object_mut().unwrap().remove("_meta");
            let back = schema_from_mapping("rag-index", &foreign).unwrap();
            assert_eq!(back.analyzer, Analyzer::English);
        }
    }

    #[test]
    fn opensearch_mapping_enables_knn_and_names_the_space() {
        let mut s = schema();
        s.metric = Metric::Dot;
        let body = mapping(&s, Engine::OpenSearch2);
        assert_eq!(body["settings"]["index"]["knn"], true);
        let v = &body["mappings"]["properties"]["embedding"];
        assert_eq!(v["type"], "knn_vector");
        assert_eq!(v["dimension"], 768);
        assert_eq!(v["method"]["space_type"], "innerproduct");
        assert_eq!(v["method"]["engine"], "lucene");
    }

    #[test]
    fn schemas_read_back_from_meta_or_from_the_fields() {
        let s = schema();
        for engine in [Engine::Elasticsearch8, Engine::OpenSearch2] {
            let body = mapping(&s, engine);
            assert_eq!(
                schema_from_mapping("rag-index", &body["mappings"]).unwrap(),
                s
            );
            let mut foreign = body["mappings"].clone();
            foreign.as_object_mut().unwrap().remove("_meta");
            let back = schema_from_mapping("rag-index", &foreign).unwrap();
            assert_eq!((back.dims, back.metric), (768, Metric::Cosine));
            let mut fields = back.metadata_fields.clone();
            fields.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(fields, s.metadata_fields);
        }
    }
}
