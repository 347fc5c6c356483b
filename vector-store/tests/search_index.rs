//! `SearchIndex` against fake Elasticsearch 8 and OpenSearch 2 clusters that speak the wire
//! format (see `support/fake_cluster.rs`): the VectorIndex conformance suite, the exact JSON
//! sent, partial bulk failures, dimension checks before writes, alias swaps, hybrid fallbacks,
//! retries and time-outs.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rag_core::conformance::vector_index;
use rag_core::{
    Error, FieldKind, Filter, IndexRecord, IndexSchema, Metadata, Metric, Query, SearchRequest,
    Secret, VectorIndex,
};
use serde_json::{Value, json};
use support::fake_cluster::{ItemFault, Running};
use vector_store::{Auth, Engine, HybridMode, SearchConfig, SearchIndex};

fn config(cluster: &Running, engine: Engine) -> SearchConfig {
    SearchConfig::new(cluster.uri(), engine).with_retries(
        3,
        Duration::from_millis(5),
        Duration::from_millis(50),
    )
}

fn client(cluster: &Running, engine: Engine) -> SearchIndex {
    SearchIndex::new(config(cluster, engine)).unwrap()
}

fn rec(id: &str, vector: Vec<f32>, text: &str) -> IndexRecord {
    let metadata: Metadata = [("lang".to_string(), json!("en"))].into_iter().collect();
    IndexRecord {
        id: id.into(),
        vector,
        text: text.into(),
        metadata,
    }
}

fn schema(name: &str, dims: usize) -> IndexSchema {
    IndexSchema::new(name, dims, Metric::Cosine).with_field("lang", FieldKind::Keyword)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn conformance_elasticsearch8_native_and_client_hybrid() {
    for mode in [HybridMode::Native, HybridMode::Client] {
        let cluster = Running::start(Engine::Elasticsearch8).await;
        let index =
            SearchIndex::new(config(&cluster, Engine::Elasticsearch8).with_hybrid(mode)).unwrap();
        vector_index::run_all(&index, "es").await;
        let synced =
            SearchIndex::new(config(&cluster, Engine::Elasticsearch8).with_hybrid(mode)).unwrap();
        rag_core::conformance::sync::check(std::sync::Arc::new(synced), "es").await;
        let native_used = cluster
            .requests()
            .await
            .iter()
            .any(|(_, _, b)| String::from_utf8_lossy(b).contains("\"retriever\""));
        assert_eq!(native_used, mode == HybridMode::Native);
    }
}

#[tokio::test]
async fn conformance_opensearch2_native_and_client_hybrid() {
    for mode in [HybridMode::Native, HybridMode::Client] {
        let cluster = Running::start(Engine::OpenSearch2).await;
        let index =
            SearchIndex::new(config(&cluster, Engine::OpenSearch2).with_hybrid(mode)).unwrap();
        vector_index::run_all(&index, "os").await;
        let synced =
            SearchIndex::new(config(&cluster, Engine::OpenSearch2).with_hybrid(mode)).unwrap();
        rag_core::conformance::sync::check(std::sync::Arc::new(synced), "os").await;
        let reqs = cluster.requests().await;
        let native_used = reqs
            .iter()
            .any(|(_, p, _)| p.contains("search_pipeline=ragloop-hybrid"));
        assert_eq!(native_used, mode == HybridMode::Native);
    }
}

#[tokio::test]
async fn create_sends_the_documented_mapping_for_each_engine() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    client(&cluster, Engine::Elasticsearch8)
        .create_index(&schema("rag-index", 768))
        .await
        .unwrap();
    let reqs = cluster.requests().await;
    let put = reqs
        .iter()
        .find(|(m, p, _)| m == "PUT" && p == "/rag-index")
        .unwrap();
    assert_eq!(
        json_of(&put.2),
        json!({"mappings": {
        "_meta": {"ragloop_schema": {"name": "rag-index", "dims": 768, "metric": "cosine",
                  "metadata_fields": [{"name": "lang", "kind": "keyword"}],
                  "analyzer": "standard"}},
        "properties": {
            "embedding": {"type": "dense_vector", "dims": 768, "index": true, "similarity": "cosine",
                          "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100}},
            "text": {"type": "text"},
            "lang": {"type": "keyword"}
        }}})
    );

    let cluster = Running::start(Engine::OpenSearch2).await;
    client(&cluster, Engine::OpenSearch2)
        .create_index(&schema("rag-index", 768))
        .await
        .unwrap();
    let reqs = cluster.requests().await;
    let pipeline = reqs
        .iter()
        .find(|(m, p, _)| m == "PUT" && p == "/_search/pipeline/ragloop-hybrid")
        .unwrap();
    assert_eq!(
        json_of(&pipeline.2)["phase_results_processors"][0]["normalization-processor"]["normalization"]
            ["technique"],
        "min_max"
    );
    let put = reqs
        .iter()
        .find(|(m, p, _)| m == "PUT" && p == "/rag-index")
        .unwrap();
    let body = json_of(&put.2);
    assert_eq!(body["settings"], json!({"index": {"knn": true}}));
    assert_eq!(
        body["mappings"]["properties"]["embedding"],
        json!({"type": "knn_vector", "dimension": 768, "method": {"name": "hnsw", "engine": "lucene",
               "space_type": "cosinesimil", "parameters": {"m": 16, "ef_construction": 100}}})
    );
}

#[tokio::test]
async fn bulk_and_search_bodies_are_exact() {
    for engine in [Engine::Elasticsearch8, Engine::OpenSearch2] {
        let cluster = Running::start(engine).await;
        let index =
            SearchIndex::new(config(&cluster, engine).with_hybrid(HybridMode::Native)).unwrap();
        index.create_index(&schema("rag-index", 2)).await.unwrap();
        index
            .upsert(
                "rag-index",
                vec![
                    rec("a", vec![1.0, 0.0], "open a file"),
                    rec("b", vec![0.0, 1.0], "close it"),
                ],
            )
            .await
            .unwrap();
        let filter = Filter::Eq("lang".into(), json!("en"));
        let knn = SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 1).with_filter(filter.clone());
        let hits = index.search("rag-index", &knn).await.unwrap();
        assert_eq!(hits[0].id, "a");
        assert!(
            (hits[0].score - 1.0).abs() < 1e-5,
            "cosine similarity, not the engine's (1+cos)/2: {}",
            hits[0].score
        );
        let mut hybrid = SearchRequest::new(
            Query::Hybrid {
                vector: vec![1.0, 0.0],
                text: "file".into(),
            },
            2,
        );
        hybrid.num_candidates = 10;
        let hits = index.search("rag-index", &hybrid).await.unwrap();
        assert_eq!(hits[0].id, "a");

        let reqs = cluster.requests().await;
        let bulk = reqs
            .iter()
            .find(|(_, p, _)| p.starts_with("/_bulk"))
            .unwrap();
        assert_eq!(bulk.1, "/_bulk?refresh=wait_for");
        assert_eq!(
            String::from_utf8(bulk.2.clone()).unwrap(),
            concat!(
                r#"{"index":{"_id":"a","_index":"rag-index"}}"#,
                "\n",
                r#"{"embedding":[1.0,0.0],"lang":"en","text":"open a file"}"#,
                "\n",
                r#"{"index":{"_id":"b","_index":"rag-index"}}"#,
                "\n",
                r#"{"embedding":[0.0,1.0],"lang":"en","text":"close it"}"#,
                "\n",
            )
        );
        let searches: Vec<_> = reqs
            .iter()
            .filter(|(_, p, _)| p.starts_with("/rag-index/_search"))
            .collect();
        let knn_body = json_of(&searches[0].2);
        let text_clause = json!({"bool": {"must": [{"match": {"text": {"query": "file"}}}]}});
        match engine {
            Engine::Elasticsearch8 => {
                assert_eq!(
                    knn_body,
                    json!({"size": 1, "_source": {"excludes": ["embedding"]},
                    "knn": {"field": "embedding", "query_vector": [1.0, 0.0], "k": 1, "num_candidates": 100,
                            "filter": {"term": {"lang": "en"}}}})
                );
                assert_eq!(searches[1].1, "/rag-index/_search");
                assert_eq!(
                    json_of(&searches[1].2),
                    json!({"size": 2, "_source": {"excludes": ["embedding"]},
                    "retriever": {"rrf": {"retrievers": [
                        {"standard": {"query": text_clause}},
                        {"knn": {"field": "embedding", "query_vector": [1.0, 0.0], "k": 10, "num_candidates": 10}}
                    ], "rank_window_size": 10, "rank_constant": 60}}})
                );
            }
            Engine::OpenSearch2 => {
                assert_eq!(
                    knn_body,
                    json!({"size": 1, "_source": {"excludes": ["embedding"]},
                    "query": {"knn": {"embedding": {"vector": [1.0, 0.0], "k": 1, "filter": {"term": {"lang": "en"}}}}}})
                );
                assert_eq!(
                    searches[1].1,
                    "/rag-index/_search?search_pipeline=ragloop-hybrid"
                );
                assert_eq!(
                    json_of(&searches[1].2),
                    json!({"size": 2, "_source": {"excludes": ["embedding"]},
                    "query": {"hybrid": {"queries": [
                        text_clause,
                        {"knn": {"embedding": {"vector": [1.0, 0.0], "k": 10}}}
                    ]}}})
                );
            }
        }
    }
}

#[tokio::test]
async fn partial_bulk_failures_are_retried_or_reported_never_dropped() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    let index = client(&cluster, Engine::Elasticsearch8);
    index.create_index(&schema("rag-index", 2)).await.unwrap();
    cluster.fail_item(
        "busy",
        ItemFault {
            status: 429,
            error_type: "es_rejected_execution_exception",
            times: 2,
        },
    );
    cluster.fail_item(
        "bad",
        ItemFault {
            status: 400,
            error_type: "document_parsing_exception",
            times: usize::MAX,
        },
    );
    cluster.fail_item(
        "always-busy",
        ItemFault {
            status: 429,
            error_type: "es_rejected_execution_exception",
            times: usize::MAX,
        },
    );
    let report = index
        .upsert(
            "rag-index",
            vec![
                rec("ok", vec![1.0, 0.0], "fine"),
                rec("busy", vec![0.5, 0.5], "rejected twice, then written"),
                rec("bad", vec![0.0, 1.0], "mapping refuses it"),
                rec("always-busy", vec![0.3, 0.1], "never accepted"),
                rec("short", vec![1.0], "wrong dimension, never sent"),
            ],
        )
        .await
        .unwrap();
    let mut written = report.written.clone();
    written.sort();
    assert_eq!(written, ["busy", "ok"]);
    let failed: Vec<(&str, bool)> = report
        .failed
        .iter()
        .map(|f| (f.id.as_str(), f.retryable))
        .collect();
    assert_eq!(
        failed,
        [("short", false), ("bad", false), ("always-busy", true)]
    );
    assert!(
        report.failed[1]
            .reason
            .contains("document_parsing_exception"),
        "{:?}",
        report.failed[1]
    );
    assert!(report.failed[0].reason.contains("dimension"));
    assert_eq!(index.count("rag-index").await.unwrap(), 2);
    let bulks: Vec<_> = cluster
        .requests()
        .await
        .into_iter()
        .filter(|(_, p, _)| p.starts_with("/_bulk"))
        .collect();
    // First request: 4 valid records; then only the rejected ones are resent (max_retries 3).
    let docs_per_request: Vec<usize> = bulks
        .iter()
        .map(|(_, _, b)| b.iter().filter(|c| **c == b'\n').count() / 2)
        .collect();
    assert_eq!(docs_per_request, [4, 2, 2, 1]);
    assert!(!String::from_utf8_lossy(&bulks[0].2).contains("\"short\""));
}

#[tokio::test]
async fn bulk_requests_are_cut_by_count_and_bytes() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    let index = SearchIndex::new(config(&cluster, Engine::Elasticsearch8).with_bulk_limits(3, 400))
        .unwrap();
    index.create_index(&schema("rag-index", 2)).await.unwrap();
    let mut records: Vec<IndexRecord> = (0..7)
        .map(|i| rec(&format!("r{i}"), vec![1.0, i as f32], "short"))
        .collect();
    records.push(rec("big", vec![0.0, 1.0], &"x".repeat(1000)));
    let report = index.upsert("rag-index", records).await.unwrap();
    assert!(report.is_complete());
    assert_eq!(index.count("rag-index").await.unwrap(), 8);
    let sizes: Vec<usize> = cluster
        .requests()
        .await
        .into_iter()
        .filter(|(_, p, _)| p.starts_with("/_bulk"))
        .map(|(_, _, b)| {
            assert!(
                b.len() <= 400 || b.iter().filter(|c| **c == b'\n').count() == 2,
                "only a lone huge doc may exceed the byte limit"
            );
            b.iter().filter(|c| **c == b'\n').count() / 2
        })
        .collect();
    assert_eq!(sizes, [3, 3, 1, 1]);
}

#[tokio::test]
async fn dimension_mismatch_is_typed_and_nothing_is_written() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    // An index another tool created with 768 dims (no ragloop _meta).
    cluster.put_mapping(
        "rag-index",
        json!({"mappings": {"properties": {"embedding": {"type": "dense_vector", "dims": 768, "similarity": "cosine"},
                                            "text": {"type": "text"}}}}),
    );
    let index = client(&cluster, Engine::Elasticsearch8);
    let err = index
        .create_index(&schema("rag-index", 384))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                expected: 768,
                actual: 384
            }
        ),
        "{err:?}"
    );
    let report = index
        .upsert("rag-index", vec![rec("a", vec![0.1; 384], "x")])
        .await
        .unwrap();
    assert!(report.written.is_empty());
    assert!(report.failed[0].reason.contains("expected 768, got 384"));
    let reqs = cluster.requests().await;
    assert!(
        reqs.iter()
            .all(|(m, p, _)| m == "GET" && p.ends_with("/_mapping")),
        "only mapping reads, no write: {reqs:?}"
    );
    // Same dims, other metric.
    let mut dot = IndexSchema::new("rag-index", 768, Metric::Dot);
    dot.metadata_fields.clear();
    assert!(matches!(
        index.create_index(&dot).await,
        Err(Error::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn alias_swap_reindexes_without_downtime() {
    let cluster = Running::start(Engine::OpenSearch2).await;
    let index = client(&cluster, Engine::OpenSearch2);
    for (name, text) in [("rag-v1", "old text"), ("rag-v2", "new text")] {
        index.create_index(&schema(name, 2)).await.unwrap();
        index
            .upsert(name, vec![rec(name, vec![1.0, 0.0], text)])
            .await
            .unwrap();
    }
    assert!(index.alias_targets("rag").await.unwrap().is_empty());
    assert!(index.swap_alias("rag", "rag-v1").await.unwrap().is_empty());
    let q = SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 1);
    assert_eq!(index.search("rag", &q).await.unwrap()[0].text, "old text");
    assert_eq!(
        index.schema("rag").await.unwrap().dims,
        2,
        "an alias reads its index's schema"
    );
    assert_eq!(index.swap_alias("rag", "rag-v2").await.unwrap(), ["rag-v1"]);
    assert_eq!(index.search("rag", &q).await.unwrap()[0].text, "new text");
    let reqs = cluster.requests().await;
    let swap = reqs
        .iter()
        .rev()
        .find(|(_, p, _)| p == "/_aliases")
        .unwrap();
    assert_eq!(
        json_of(&swap.2),
        json!({"actions": [{"remove": {"index": "rag-v1", "alias": "rag"}}, {"add": {"index": "rag-v2", "alias": "rag"}}]}),
        "one atomic request"
    );
    index.drop_index("rag-v1").await.unwrap();
    assert!(matches!(
        index.swap_alias("rag", "missing").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        index.search("rag", &q).await.unwrap()[0].text,
        "new text",
        "a failed swap changes nothing"
    );
}

#[tokio::test]
async fn refused_native_hybrid_falls_back_to_client_rrf() {
    for engine in [Engine::Elasticsearch8, Engine::OpenSearch2] {
        let cluster = Running::start(engine).await;
        let index = client(&cluster, engine);
        index.create_index(&schema("rag-index", 2)).await.unwrap();
        index
            .upsert(
                "rag-index",
                vec![
                    rec("a", vec![1.0, 0.0], "open a file"),
                    rec("b", vec![0.0, 1.0], "close it"),
                ],
            )
            .await
            .unwrap();
        cluster.refuse_native_hybrid();
        let q = SearchRequest::new(
            Query::Hybrid {
                vector: vec![0.0, 1.0],
                text: "close".into(),
            },
            2,
        );
        for _ in 0..2 {
            let hits = index.search("rag-index", &q).await.unwrap();
            assert_eq!(hits[0].id, "b");
        }
        let searches = cluster
            .requests()
            .await
            .into_iter()
            .filter(|(_, p, _)| p.contains("_search?") || p.ends_with("_search"))
            .count();
        assert_eq!(
            searches,
            1 + 2 + 2,
            "one refused native try, then two searches per hybrid query"
        );
    }
}

#[tokio::test]
async fn throttling_and_outages_are_retried_then_typed() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    let index = client(&cluster, Engine::Elasticsearch8);
    index.create_index(&schema("rag-index", 2)).await.unwrap();
    let busy = json!({"error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}, "status": 429});
    cluster.fail_next_request(429, busy.clone(), Some(0));
    cluster.fail_next_request(503, json!({"error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}, "status": 503}), None);
    assert_eq!(
        index.count("rag-index").await.unwrap(),
        0,
        "two failures, then success"
    );
    for _ in 0..4 {
        cluster.fail_next_request(503, json!({"error": {"type": "cluster_block_exception", "reason": "blocked"}, "status": 503}), None);
    }
    let err = index.count("rag-index").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("cluster_block_exception"), "{err}");
    cluster.fail_next_request(401, json!({"error": {"type": "security_exception", "reason": "unable to authenticate user [elastic]"}, "status": 401}), None);
    assert!(matches!(
        index.count("rag-index").await,
        Err(Error::Auth { .. })
    ));
}

#[tokio::test]
async fn slow_clusters_time_out() {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(5))
                .set_body_json(json!({"count": 1})),
        )
        .mount(&server)
        .await;
    let cfg = SearchConfig::new(server.uri(), Engine::Elasticsearch8)
        .with_timeout(Duration::from_millis(200))
        .with_retries(1, Duration::from_millis(1), Duration::from_millis(1));
    let started = std::time::Instant::now();
    let err = SearchIndex::new(cfg).unwrap().count("x").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn credentials_go_in_headers_and_nowhere_else() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    // base64("elastic:s3cret-pw")
    Mock::given(method("GET"))
        .and(path("/rag-index/_count"))
        .and(header("authorization", "Basic ZWxhc3RpYzpzM2NyZXQtcHc="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 7})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rag-index/_count"))
        .and(header(
            "authorization",
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 9})))
        .mount(&server)
        .await;
    let basic = SearchIndex::new(
        SearchConfig::new(server.uri(), Engine::Elasticsearch8).with_auth(Auth::Basic {
            user: "elastic".into(),
            password: Secret::new("s3cret-pw"),
        }),
    )
    .unwrap();
    assert_eq!(basic.count("rag-index").await.unwrap(), 7);
    assert!(!format!("{basic:?}").contains("s3cret"));
    let key = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";
    let api = SearchIndex::new(
        SearchConfig::new(server.uri(), Engine::Elasticsearch8)
            .with_auth(Auth::ApiKey(Secret::new(key))),
    )
    .unwrap();
    assert_eq!(api.count("rag-index").await.unwrap(), 9);
    assert!(!format!("{api:?}").contains(key));
    // A refused credential: the error names the failure, not the secret.
    let wrong = SearchIndex::new(
        SearchConfig::new(server.uri(), Engine::Elasticsearch8).with_auth(Auth::Basic {
            user: "elastic".into(),
            password: Secret::new("wrong-pw"),
        }),
    )
    .unwrap();
    let err = wrong.count("rag-index").await.unwrap_err();
    assert!(!err.to_string().contains("wrong-pw"));
}

/// Answers that are not what the API documents — a proxy's HTML page, JSON cut short, JSON of
/// another shape — are typed errors for every call, never a panic and never a bulk taken as
/// written.
#[tokio::test]
async fn malformed_answers_are_typed_errors_never_panics_or_silent_writes() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let mapping = json!({"rag-index": {"mappings": {
        "_meta": {"ragloop_schema": {"name": "rag-index", "dims": 2, "metric": "cosine",
                  "metadata_fields": [{"name": "lang", "kind": "keyword"}],
                  "analyzer": "standard"}},
        "properties": {
            "embedding": {"type": "dense_vector", "dims": 2, "index": true, "similarity": "cosine"},
            "text": {"type": "text"}, "lang": {"type": "keyword"}}}}});
    let bodies = [
        (
            "text/html",
            "<html><body>502 Bad Gateway</body></html>".to_string(),
        ),
        (
            "application/json",
            r#"{"took": 3, "errors": false, "items": [{"index": {"_id": "a", "status": 201"#.into(),
        ),
        (
            "application/json",
            r#"{"acknowledged": true, "items": "none", "count": "many", "hits": 7}"#.into(),
        ),
    ];
    for (content_type, body) in bodies {
        let server = MockServer::start().await;
        // The mapping is good, so upserts get as far as the bulk call.
        Mock::given(method("GET"))
            .and(path("/rag-index/_mapping"))
            .respond_with(ResponseTemplate::new(200).set_body_json(mapping.clone()))
            .mount(&server)
            .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), content_type))
            .mount(&server)
            .await;
        let cfg = SearchConfig::new(server.uri(), Engine::Elasticsearch8).with_retries(
            1,
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        let index = SearchIndex::new(cfg).unwrap();
        let what = format!("answer {body:?}");
        let upsert = index
            .upsert("rag-index", vec![rec("a", vec![1.0, 0.0], "alpha")])
            .await;
        assert!(upsert.is_err(), "{what}: upsert gave {upsert:?}");
        let count = index.count("rag-index").await;
        assert!(count.is_err(), "{what}: count gave {count:?}");
        let search = index
            .search(
                "rag-index",
                &SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 3),
            )
            .await;
        assert!(search.is_err(), "{what}: search gave {search:?}");
        for err in [upsert.unwrap_err(), count.unwrap_err(), search.unwrap_err()] {
            assert!(
                matches!(err, Error::Backend { .. } | Error::Unavailable { .. }),
                "{what}: {err:?}"
            );
        }
    }
}

/// A cluster that stalls mid-answer (part of the body, then silence) does not hang a call: the
/// request time-out ends each attempt, then it is a typed error.
#[tokio::test]
async fn a_cluster_that_stalls_mid_answer_does_not_hang() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    let server = FaultServer::start(|_req, _n| Reply::Stall {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        declared: 200,
        sent: br#"{"count": 1"#.to_vec(),
    })
    .await;
    let cfg = SearchConfig::new(server.uri(), Engine::Elasticsearch8)
        .with_timeout(Duration::from_millis(300))
        .with_retries(2, Duration::from_millis(1), Duration::from_millis(1));
    let index = SearchIndex::new(cfg).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), index.count("rag-index")).await;
    let err = got.expect("the call hung").unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Unavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_opensearch_too_old_for_innerproduct_is_told_before_the_create() {
    let cluster = Running::start(Engine::OpenSearch2).await;
    cluster.set_version("2.11.1");
    let index = client(&cluster, Engine::OpenSearch2);
    let dot = IndexSchema::new("rag-dot", 4, Metric::Dot);
    let err = index.create_index(&dot).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("2.13"), "{err}");
    let reqs = cluster.requests().await;
    assert!(
        !reqs.iter().any(|(m, p, _)| m == "PUT" && p == "/rag-dot"),
        "no create was sent: {reqs:?}"
    );
    // Cosine needs no check; a 2.13 cluster takes innerproduct.
    index
        .create_index(&IndexSchema::new("rag-cos", 4, Metric::Cosine))
        .await
        .unwrap();
    cluster.set_version("2.13.0");
    index.create_index(&dot).await.unwrap();
    assert_eq!(index.schema("rag-dot").await.unwrap().metric, Metric::Dot);
}

#[tokio::test]
async fn a_cluster_analyzer_is_checked_named_when_missing_and_kept_per_index() {
    for engine in [Engine::Elasticsearch8, Engine::OpenSearch2] {
        let cluster = Running::start(engine).await;
        let ik = SearchIndex::new(config(&cluster, engine).with_text_analyzer("ik_smart")).unwrap();
        // No plugin: the error names it and how to install it, and nothing is created.
        let err = ik.create_index(&schema("zh", 2)).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        let tool = match engine {
            Engine::Elasticsearch8 => "elasticsearch-plugin",
            Engine::OpenSearch2 => "opensearch-plugin",
        };
        for part in ["ik_smart", "analysis-ik", tool, "cjk"] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
        let creates = cluster
            .requests()
            .await
            .into_iter()
            .filter(|(m, p, _)| m == "PUT" && p == "/zh")
            .count();
        assert_eq!(creates, 0, "an index was created without its analyzer");
        assert!(ik.count("zh").await.unwrap_err().is_not_found());

        // With the plugin: the text field uses it, for documents and queries alike.
        cluster.install_analyzer("ik_smart");
        ik.create_index(&schema("zh", 2)).await.unwrap();
        let create = cluster
            .requests()
            .await
            .into_iter()
            .find(|(m, p, _)| m == "PUT" && p == "/zh")
            .unwrap();
        assert_eq!(
            json_of(&create.2)["mappings"]["properties"]["text"],
            json!({"type": "text", "analyzer": "ik_smart"})
        );
        ik.upsert(
            "zh",
            vec![
                rec("a", vec![1.0, 0.0], "复制文件描述符"),
                rec("b", vec![0.0, 1.0], "挂载文件系统"),
            ],
        )
        .await
        .unwrap();
        let hits = ik
            .search(
                "zh",
                &SearchRequest::new(Query::Text("文件描述符".into()), 2),
            )
            .await
            .unwrap();
        assert_eq!(hits[0].id, "a");
        // Idempotent with the same analyzer; another one is refused, not silently used.
        ik.create_index(&schema("zh", 2)).await.unwrap();
        cluster.install_analyzer("smartcn");
        let smartcn =
            SearchIndex::new(config(&cluster, engine).with_text_analyzer("smartcn")).unwrap();
        let err = smartcn.create_index(&schema("zh", 2)).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
        assert!(err.to_string().contains("ik_smart"), "{err}");
    }
}

#[tokio::test]
async fn a_cluster_that_will_not_analyze_still_names_a_missing_analyzer() {
    let cluster = Running::start(Engine::Elasticsearch8).await;
    cluster.refuse_analyze();
    let index =
        SearchIndex::new(config(&cluster, Engine::Elasticsearch8).with_text_analyzer("smartcn"))
            .unwrap();
    // `_analyze` is refused, so the create is tried, and its mapping error is translated.
    let err = index.create_index(&schema("zh", 2)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("analysis-smartcn"), "{err}");
    // A built-in analyzer needs no plugin.
    let cjk = SearchIndex::new(config(&cluster, Engine::Elasticsearch8).with_text_analyzer("cjk"))
        .unwrap();
    cjk.create_index(&schema("zh", 2)).await.unwrap();
}
