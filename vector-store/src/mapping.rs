//! Index mappings: how an [`IndexSchema`] is written for each engine.
//!
//! - Elasticsearch 8: `dense_vector` with `similarity` and HNSW `index_options`
//!   (<https://www.elastic.co/guide/en/elasticsearch/reference/8.15/dense-vector.html>).
//! - OpenSearch 2: `knn_vector` with an HNSW `method` on the lucene engine, and `index.knn`
//!   enabled (<https://opensearch.org/docs/2.15/search-plugins/knn/knn-index/>).

use rag_core::{FieldKind, IndexSchema, Metric};
use serde_json::{Map, Value, json};

/// The vector field's name (the seed's `embedding`).
pub const EMBEDDING_FIELD: &str = "embedding";
/// The full-text field's name (the seed's `text`).
pub const TEXT_FIELD: &str = "text";

/// Which engine a mapping is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Elasticsearch 8.x (Alibaba Cloud Elasticsearch).
    Elasticsearch8,
    /// OpenSearch 2.x (Alibaba Cloud OpenSearch).
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
    mapping_with(schema, engine, HnswParams::default())
}

/// The create-index body for `schema` on `engine`.
pub fn mapping_with(schema: &IndexSchema, engine: Engine, hnsw: HnswParams) -> Value {
    let mut props = Map::new();
    props.insert(EMBEDDING_FIELD.into(), vector_field(schema, engine, hnsw));
    props.insert(TEXT_FIELD.into(), json!({ "type": "text" }));
    for f in &schema.metadata_fields {
        let ty = match f.kind {
            FieldKind::Keyword => "keyword",
            FieldKind::Integer => "long",
            FieldKind::Float => "double",
            FieldKind::Bool => "boolean",
        };
        props.insert(f.name.clone(), json!({ "type": ty }));
    }
    match engine {
        Engine::Elasticsearch8 => json!({ "mappings": { "properties": props } }),
        Engine::OpenSearch2 => json!({
            "settings": { "index": { "knn": true } },
            "mappings": { "properties": props }
        }),
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
            json!({"mappings": {"properties": {
                "embedding": {"type": "dense_vector", "dims": 768, "index": true, "similarity": "cosine",
                              "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100}},
                "text": {"type": "text"},
                "doc_id": {"type": "keyword"},
                "start": {"type": "long"}
            }}})
        );
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
}
