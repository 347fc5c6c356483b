//! DashScope text-rerank as a `Reranker`: the shared conformance suite against a fake server
//! that speaks the wire format (`dashscope/rerank/text_rerank.py` of the official SDK and the
//! API reference) and scores by shared words, the exact request body, batches, errors and
//! retries.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bailian_client::{BailianConfig, Region, RerankClient, RerankOptions};
use rag_core::rerank::Reranker;
use rag_core::{Error, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-rerank-0123456789";
const PATH: &str = "/api/v1/services/rerank/text-rerank/text-rerank";

fn config(server: &MockServer) -> BailianConfig {
    let mut c = BailianConfig::new(Region::Beijing)
        .with_native_base(format!("{}/api/v1", server.uri()))
        .with_api_key(Secret::new(KEY));
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(100);
    c
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Scores each document by the share of the query's words it holds (the relevance a real
/// model would give, roughly), answering as the service does: results sorted by score, with
/// usage and a request id. Refuses what the service refuses (no documents, an empty one).
struct FakeRerank;

impl Respond for FakeRerank {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let query = body["input"]["query"].as_str().unwrap();
        let docs: Vec<&str> = body["input"]["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        if docs.is_empty() || docs.iter().any(|d| d.is_empty()) {
            return ResponseTemplate::new(400).set_body_json(json!({"code": "InvalidParameter", "message": "Empty document", "request_id": "r-400"}));
        }
        let q = words(query);
        let mut results: Vec<(usize, f64)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let dw = words(d);
                let hits = q.iter().filter(|w| dw.contains(w)).count();
                (i, hits as f64 / (q.len().max(1) as f64))
            })
            .collect();
        results.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top_n = body["parameters"]["top_n"].as_u64().unwrap() as usize;
        results.truncate(top_n);
        ResponseTemplate::new(200).set_body_json(json!({
            "output": {"results": results.iter().map(|(i, s)| json!({"index": i, "relevance_score": s})).collect::<Vec<_>>()},
            "usage": {"total_tokens": 10 * docs.len()},
            "request_id": "r-ok",
        }))
    }
}

async fn fake(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(FakeRerank)
        .mount(server)
        .await;
}

#[tokio::test]
async fn the_text_rerank_client_conforms() {
    let server = MockServer::start().await;
    fake(&server).await;
    let client =
        RerankClient::new(config(&server), "gte-rerank-v2", RerankOptions::default()).unwrap();
    rag_core::conformance::rerank::run_all(&client).await;
}

#[tokio::test]
async fn the_request_is_the_documented_body_and_batches_keep_order() {
    let server = MockServer::start().await;
    fake(&server).await;
    let options = RerankOptions {
        max_batch: 3,
        max_input_chars: 12,
    };
    let client = RerankClient::new(config(&server), "gte-rerank-v2", options).unwrap();
    let docs: Vec<String> = [
        "open file",
        "signal",
        "file descriptor table",
        "oven",
        "",
        "descriptor",
        "bread",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let scores = client.score("file descriptor", &docs).await.unwrap();
    // The query is cut too ("file descrip"), so "descriptor" alone no longer matches.
    assert_eq!(scores, vec![0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3, "7 documents in batches of 3");
    let first: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        first,
        json!({
            "model": "gte-rerank-v2",
            "input": {"query": "file descrip", "documents": ["open file", "signal", "file descrip"]},
            "parameters": {"return_documents": false, "top_n": 3},
        }),
        "texts cut to max_input_chars"
    );
    let second: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(
        second["input"]["documents"],
        json!(["oven", " ", "descriptor"]),
        "an empty document is sent as a space"
    );
    assert_eq!(client.model_id(), "dashscope-gte-rerank-v2");
    assert!(!format!("{client:?}").contains(KEY), "no key in Debug");
}

#[tokio::test]
async fn throttling_is_retried_and_a_bad_request_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0.02")
                .set_body_json(json!({"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded, please try again later.", "request_id": "r-429"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    fake(&server).await;
    let client =
        RerankClient::new(config(&server), "gte-rerank-v2", RerankOptions::default()).unwrap();
    let docs = vec!["signal handler".to_string()];
    assert_eq!(client.score("signal", &docs).await.unwrap(), vec![1.0]);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the 429 was retried"
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "InvalidParameter", "message": "Range of top_n should be [1, 500]", "request_id": "r-bad"})))
        .mount(&server)
        .await;
    let client =
        RerankClient::new(config(&server), "gte-rerank-v2", RerankOptions::default()).unwrap();
    let err = client.score("signal", &docs).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(
        err.to_string().contains("r-bad") && err.to_string().contains("InvalidParameter"),
        "{err}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a 400 is not retried"
    );
}

#[tokio::test]
async fn answers_that_do_not_score_every_document_once_are_errors() {
    for results in [
        json!([{"index": 0, "relevance_score": 0.5}]),
        json!([{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}]),
        json!([{"index": 0, "relevance_score": 0.5}, {"index": 7, "relevance_score": 0.4}]),
        json!([{"index": 0, "relevance_score": 0.5}, {"index": 1}]),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"output": {"results": results}, "request_id": "r"})),
            )
            .mount(&server)
            .await;
        let client =
            RerankClient::new(config(&server), "gte-rerank-v2", RerankOptions::default()).unwrap();
        let docs = vec!["a".to_string(), "b".to_string()];
        let err = client.score("q", &docs).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{results}: {err:?}");
    }
}
