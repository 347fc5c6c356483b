//! Request bodies of the query DSL, the same for both engines except where noted, and the
//! conversion of engine scores back to the metric's similarity.
//!
//! References: Elasticsearch 8 kNN search and `retriever.rrf`
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/8.15/knn-search.html>,
//! <https://www.elastic.co/guide/en/elasticsearch/reference/8.15/rrf.html>), OpenSearch k-NN
//! query with filters and the `hybrid` query
//! (<https://opensearch.org/docs/2.15/search-plugins/knn/filter-search-knn/>,
//! <https://opensearch.org/docs/2.15/query-dsl/compound/hybrid/>).

use rag_core::{Filter, Metadata, Metric, SearchHit};
use serde_json::{Value, json};

use crate::mapping::{EMBEDDING_FIELD, Engine, TEXT_FIELD};

/// A [`Filter`] as a query-DSL clause usable in a `filter` context.
pub fn filter_clause(filter: &Filter) -> Value {
    match filter {
        Filter::Eq(f, v) => json!({ "term": { f: v } }),
        Filter::In(f, vs) => json!({ "terms": { f: vs } }),
        Filter::Range { field, gte, lte } => {
            let mut bounds = serde_json::Map::new();
            if let Some(g) = gte {
                bounds.insert("gte".into(), json!(g));
            }
            if let Some(l) = lte {
                bounds.insert("lte".into(), json!(l));
            }
            json!({ "range": { field: bounds } })
        }
        Filter::And(fs) => {
            json!({ "bool": { "filter": fs.iter().map(filter_clause).collect::<Vec<_>>() } })
        }
        Filter::Or(fs) => json!({ "bool": {
            "should": fs.iter().map(filter_clause).collect::<Vec<_>>(),
            "minimum_should_match": 1
        } }),
        Filter::Not(f) => json!({ "bool": { "must_not": [filter_clause(f)] } }),
    }
}

/// `_source` filtering: hits carry text and metadata, never the (large) vector.
fn source() -> Value {
    json!({ "excludes": [EMBEDDING_FIELD] })
}

/// BM25 on the text field, restricted by `filter`.
pub fn text_query(text: &str, filter: Option<&Filter>) -> Value {
    let mut b = json!({ "must": [{ "match": { TEXT_FIELD: { "query": text } } }] });
    if let Some(f) = filter {
        b["filter"] = json!([filter_clause(f)]);
    }
    json!({ "bool": b })
}

/// A full-text search body.
pub fn text_search(text: &str, k: usize, filter: Option<&Filter>) -> Value {
    json!({ "size": k, "query": text_query(text, filter), "_source": source() })
}

/// The most candidates an Elasticsearch kNN search takes per shard (`num_candidates` above
/// it is refused with a 400; the kNN search reference: "cannot exceed 10,000"); `k` must
/// not exceed `num_candidates` either.
pub const ES_MAX_NUM_CANDIDATES: usize = 10_000;

/// The kNN clause: ES top-level `knn` object, OpenSearch `knn` query.
fn knn_clause(
    engine: Engine,
    vector: &[f32],
    k: usize,
    candidates: usize,
    filter: Option<&Filter>,
) -> Value {
    match engine {
        Engine::Elasticsearch8 => {
            let candidates = candidates.max(k).min(ES_MAX_NUM_CANDIDATES);
            let mut knn = json!({
                "field": EMBEDDING_FIELD,
                "query_vector": vector,
                "k": k.min(candidates),
                "num_candidates": candidates,
            });
            if let Some(f) = filter {
                knn["filter"] = filter_clause(f);
            }
            knn
        }
        Engine::OpenSearch2 => {
            // The lucene engine filters during the graph search ("efficient filtering").
            let mut inner = json!({ "vector": vector, "k": k });
            if let Some(f) = filter {
                inner["filter"] = filter_clause(f);
            }
            json!({ "knn": { EMBEDDING_FIELD: inner } })
        }
    }
}

/// A kNN search body.
pub fn knn_search(
    engine: Engine,
    vector: &[f32],
    k: usize,
    candidates: usize,
    filter: Option<&Filter>,
) -> Value {
    let knn = knn_clause(engine, vector, k, candidates, filter);
    match engine {
        Engine::Elasticsearch8 => json!({ "size": k, "knn": knn, "_source": source() }),
        Engine::OpenSearch2 => json!({ "size": k, "query": knn, "_source": source() }),
    }
}

/// A native hybrid search body: ES `retriever.rrf` over a BM25 and a kNN retriever;
/// OpenSearch a `hybrid` query (sent with `?search_pipeline=…`).
#[allow(clippy::too_many_arguments)]
pub fn hybrid_search(
    engine: Engine,
    vector: &[f32],
    text: &str,
    k: usize,
    candidates: usize,
    rrf_k: u32,
    filter: Option<&Filter>,
) -> Value {
    let n = candidates.max(k);
    match engine {
        Engine::Elasticsearch8 => json!({
            "size": k,
            "retriever": { "rrf": {
                "retrievers": [
                    { "standard": { "query": text_query(text, filter) } },
                    { "knn": knn_clause(engine, vector, n, n, filter) }
                ],
                "rank_window_size": n,
                "rank_constant": rrf_k
            } },
            "_source": source()
        }),
        Engine::OpenSearch2 => json!({
            "size": k,
            "query": { "hybrid": { "queries": [
                text_query(text, filter),
                knn_clause(engine, vector, n, n, filter)
            ] } },
            "_source": source()
        }),
    }
}

/// The search pipeline OpenSearch hybrid queries run through: scores of each sub-query are
/// min-max normalised, then averaged.
pub fn hybrid_pipeline() -> Value {
    json!({
        "description": "ragloop hybrid search: min-max normalised BM25 and kNN scores, averaged",
        "phase_results_processors": [{
            "normalization-processor": {
                "normalization": { "technique": "min_max" },
                "combination": { "technique": "arithmetic_mean", "parameters": { "weights": [0.5, 0.5] } }
            }
        }]
    })
}

/// Converts an engine's kNN `_score` back to the metric's similarity (the local index's
/// scale): ES/lucene score cosine as `(1 + cos) / 2`, L2 as `1 / (1 + d²)`, and dot product
/// as `(1 + dot) / 2` (ES) or `1 + dot` / `1 / (1 - dot)` (OpenSearch lucene).
pub fn knn_similarity(engine: Engine, metric: Metric, score: f64) -> f32 {
    let s = match metric {
        Metric::Cosine => 2.0 * score - 1.0,
        Metric::L2 => {
            if score <= 0.0 {
                f64::NEG_INFINITY
            } else {
                -(1.0 / score - 1.0).max(0.0).sqrt()
            }
        }
        Metric::Dot => match engine {
            Engine::Elasticsearch8 => 2.0 * score - 1.0,
            Engine::OpenSearch2 if score >= 1.0 => score - 1.0,
            Engine::OpenSearch2 => 1.0 - 1.0 / score,
        },
    };
    s as f32
}

/// Reads `hits.hits` of a search response; `score` maps each `_score`. An answer without a
/// `hits.hits` array, or a hit without an `_id`, is an error (a proxy's page or a cut answer
/// must not read as "no results").
pub fn hits(body: &Value, score: impl Fn(f64) -> f32) -> rag_core::Result<Vec<SearchHit>> {
    let unexpected = |what: &str| {
        let shown: String = body.to_string().chars().take(200).collect();
        rag_core::Error::backend_msg("search", format!("the search answer {what}: {shown}"))
    };
    let Some(hits) = body["hits"]["hits"].as_array() else {
        return Err(unexpected("has no hits.hits array"));
    };
    hits.iter()
        .map(|h| {
            let Some(id) = h["_id"].as_str() else {
                return Err(unexpected("has a hit without an _id"));
            };
            let mut metadata: Metadata = h["_source"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let text = match metadata.remove(TEXT_FIELD) {
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            metadata.remove(EMBEDDING_FIELD);
            Ok(SearchHit {
                id: id.to_string(),
                score: score(h["_score"].as_f64().unwrap_or(0.0)),
                text,
                metadata,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es_num_candidates_stays_within_the_engines_limit() {
        let v = [0.5_f32, 0.5];
        let body = knn_search(Engine::Elasticsearch8, &v, 10, 50_000, None);
        assert_eq!(body["knn"]["num_candidates"], 10_000);
        assert_eq!(body["knn"]["k"], 10);
        let body = knn_search(Engine::Elasticsearch8, &v, 10, 100, None);
        assert_eq!(body["knn"]["num_candidates"], 100);
        // k is never above num_candidates (and the request's k is at most 10,000).
        let body = knn_search(Engine::Elasticsearch8, &v, 10_000, 20_000, None);
        assert_eq!(body["knn"]["num_candidates"], 10_000);
        assert_eq!(body["knn"]["k"], 10_000);
    }

    #[test]
    fn filters_become_bool_clauses() {
        let f = Filter::And(vec![
            Filter::Eq("lang".into(), json!("en")),
            Filter::Or(vec![
                Filter::In("year".into(), vec![json!(2001), json!(2002)]),
                Filter::Not(Box::new(Filter::Range {
                    field: "year".into(),
                    gte: Some(2010.0),
                    lte: None,
                })),
            ]),
        ]);
        assert_eq!(
            filter_clause(&f),
            json!({"bool": {"filter": [
                {"term": {"lang": "en"}},
                {"bool": {"should": [
                    {"terms": {"year": [2001, 2002]}},
                    {"bool": {"must_not": [{"range": {"year": {"gte": 2010.0}}}]}}
                ], "minimum_should_match": 1}}
            ]}})
        );
    }

    #[test]
    fn scores_convert_back_to_similarities() {
        let es = Engine::Elasticsearch8;
        assert!((knn_similarity(es, Metric::Cosine, 0.75) - 0.5).abs() < 1e-6);
        assert!((knn_similarity(es, Metric::L2, 0.2) + 2.0).abs() < 1e-6);
        let os = Engine::OpenSearch2;
        assert!((knn_similarity(os, Metric::Dot, 1.5) - 0.5).abs() < 1e-6);
        assert!((knn_similarity(os, Metric::Dot, 0.5) + 1.0).abs() < 1e-6);
    }
}
