//! A stateful fake Elasticsearch 8 / OpenSearch 2 cluster on wiremock.
//!
//! It speaks the wire format of the engines' REST references — create index with a mapping,
//! `_mapping`, `_bulk` (NDJSON, per-item results), `_search` with `knn` / `match` /
//! `retriever.rrf` (ES) or `knn` / `hybrid` + `search_pipeline` (OpenSearch), `_count`,
//! aliases, search pipelines, error bodies with `type`/`reason` — and keeps its documents in a
//! `LocalVectorIndex`, so searches really rank. Scores are scaled the way the engines scale
//! them (`(1 + cos) / 2` …). Faults are scripted per document id or per request.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use rag_core::local::LocalVectorIndex;
use rag_core::{
    FieldKind, Filter, IndexRecord, IndexSchema, Metadata, Metric, Query, SearchHit, SearchRequest,
    VectorIndex,
};
use serde_json::{Value, json};
use vector_store::Engine;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A bulk item fault: the item gets this status and error type instead of being written.
#[derive(Clone, Debug)]
pub struct ItemFault {
    pub status: u16,
    pub error_type: &'static str,
    /// How many times it happens before the item goes through (`usize::MAX`: always).
    pub times: usize,
}

#[derive(Default)]
struct State {
    mappings: HashMap<String, Value>,
    aliases: BTreeMap<String, String>,
    pipelines: HashMap<String, Value>,
    item_faults: HashMap<String, ItemFault>,
    /// Whole-request faults, consumed in order: (status, body, Retry-After).
    request_faults: VecDeque<(u16, Value, Option<u64>)>,
    /// Refuse `retriever` / `hybrid` like an engine without native hybrid search.
    refuse_native_hybrid: bool,
    /// The version `GET /` reports (the engine's default when unset).
    version: Option<String>,
    /// Analyzers plugins provide (`ik_smart` …), beside the built-in ones.
    plugin_analyzers: Vec<String>,
    /// Answer `_analyze` with 403, as a cluster whose user may not call it.
    refuse_analyze: bool,
}

/// Analyzers every Elasticsearch / OpenSearch cluster has.
const BUILT_IN_ANALYZERS: [&str; 6] = [
    "standard",
    "simple",
    "whitespace",
    "keyword",
    "english",
    "cjk",
];

#[derive(Clone)]
pub struct FakeCluster {
    pub engine: Engine,
    state: Arc<Mutex<State>>,
    docs: Arc<LocalVectorIndex>,
}

pub struct Running {
    pub server: MockServer,
    pub fake: FakeCluster,
}

impl Running {
    pub async fn start(engine: Engine) -> Self {
        let server = MockServer::start().await;
        let fake = FakeCluster {
            engine,
            state: Arc::new(Mutex::new(State::default())),
            docs: Arc::new(LocalVectorIndex::in_memory()),
        };
        Mock::given(any())
            .respond_with(fake.clone())
            .mount(&server)
            .await;
        Self { server, fake }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Requests received so far: (method, path with query, body).
    pub async fn requests(&self) -> Vec<(String, String, Vec<u8>)> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let q = r.url.query().map(|q| format!("?{q}")).unwrap_or_default();
                (r.method.to_string(), format!("{}{q}", r.url.path()), r.body)
            })
            .collect()
    }

    pub fn fail_item(&self, id: &str, fault: ItemFault) {
        self.fake
            .state
            .lock()
            .unwrap()
            .item_faults
            .insert(id.into(), fault);
    }

    pub fn fail_next_request(&self, status: u16, body: Value, retry_after: Option<u64>) {
        self.fake
            .state
            .lock()
            .unwrap()
            .request_faults
            .push_back((status, body, retry_after));
    }

    /// Reports this version in `GET /`.
    pub fn set_version(&self, version: &str) {
        self.fake.state.lock().unwrap().version = Some(version.into());
    }

    /// Makes a plugin's analyzer available (as installing the plugin would).
    pub fn install_analyzer(&self, name: &str) {
        self.fake
            .state
            .lock()
            .unwrap()
            .plugin_analyzers
            .push(name.into());
    }

    /// Answers `_analyze` with 403 (a user without the privilege).
    pub fn refuse_analyze(&self) {
        self.fake.state.lock().unwrap().refuse_analyze = true;
    }

    pub fn refuse_native_hybrid(&self) {
        self.fake.state.lock().unwrap().refuse_native_hybrid = true;
    }

    /// Creates an index directly (as another tool would).
    pub fn put_mapping(&self, name: &str, body: Value) {
        let r = self.fake.handle(
            "PUT",
            &format!("/{name}"),
            &HashMap::new(),
            &serde_json::to_vec(&body).unwrap(),
        );
        assert!(r.0 < 300, "{r:?}");
    }
}

fn error(status: u16, ty: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": ty, "reason": reason}], "type": ty, "reason": reason}, "status": status}),
    )
}

fn not_found(index: &str) -> (u16, Value) {
    error(
        404,
        "index_not_found_exception",
        &format!("no such index [{index}]"),
    )
}

impl Respond for FakeCluster {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let fault = self.state.lock().unwrap().request_faults.pop_front();
        if let Some((status, body, retry_after)) = fault {
            let mut t = ResponseTemplate::new(status).set_body_json(body);
            if let Some(s) = retry_after {
                t = t.insert_header("Retry-After", s.to_string().as_str());
            }
            return t;
        }
        let query: HashMap<String, String> = req
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let (status, body) = self.handle(req.method.as_str(), req.url.path(), &query, &req.body);
        ResponseTemplate::new(status).set_body_json(body)
    }
}

impl FakeCluster {
    fn resolve(&self, name: &str) -> String {
        let st = self.state.lock().unwrap();
        st.aliases
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    fn handle(
        &self,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        body: &[u8],
    ) -> (u16, Value) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let json_body = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        match (method, parts.as_slice()) {
            ("GET", [""]) => {
                // The root endpoint: cluster name and version, as both engines answer it.
                let st = self.state.lock().unwrap();
                let (default, distribution) = match self.engine {
                    Engine::Elasticsearch8 => ("8.15.0", "elasticsearch"),
                    Engine::OpenSearch2 => ("2.19.0", "opensearch"),
                };
                let number = st.version.clone().unwrap_or_else(|| default.into());
                (
                    200,
                    json!({"name": "node-1", "cluster_name": "fake",
                           "version": {"distribution": distribution, "number": number},
                           "tagline": "The OpenSearch Project: https://opensearch.org/"}),
                )
            }
            ("POST", ["_analyze"]) => {
                let body = json_body();
                let name = body["analyzer"].as_str().unwrap_or("standard");
                let st = self.state.lock().unwrap();
                if st.refuse_analyze {
                    return error(
                        403,
                        "security_exception",
                        "action [indices:admin/analyze] is unauthorized",
                    );
                }
                if !self.knows_analyzer(&st, name) {
                    return error(
                        400,
                        "illegal_argument_exception",
                        &format!("failed to find global analyzer [{name}]"),
                    );
                }
                let text = body["text"].as_str().unwrap_or_default();
                let tokens: Vec<Value> = rag_core::text::words(text)
                    .enumerate()
                    .map(|(i, t)| json!({"token": t, "position": i}))
                    .collect();
                (200, json!({ "tokens": tokens }))
            }
            ("POST", ["_bulk"]) => self.bulk(body),
            ("POST", ["_aliases"]) => self.aliases(json_body()),
            ("GET", ["_alias", alias]) => {
                let st = self.state.lock().unwrap();
                match st.aliases.get(*alias) {
                    Some(ix) => (200, json!({ ix: {"aliases": { *alias: {} }}})),
                    None => (
                        404,
                        json!({"error": format!("alias [{alias}] missing"), "status": 404}),
                    ),
                }
            }
            ("PUT", ["_search", "pipeline", name]) => {
                if self.engine != Engine::OpenSearch2 {
                    return error(400, "parse_exception", "no handler");
                }
                self.state
                    .lock()
                    .unwrap()
                    .pipelines
                    .insert(name.to_string(), json_body());
                (200, json!({"acknowledged": true}))
            }
            ("PUT", [index]) => self.create(index, json_body()),
            ("DELETE", [index]) => {
                let index = self.resolve(index);
                let existed = self.state.lock().unwrap().mappings.remove(&index).is_some();
                if !existed {
                    return not_found(&index);
                }
                block_on(self.docs.drop_index(&index)).unwrap();
                self.state
                    .lock()
                    .unwrap()
                    .aliases
                    .retain(|_, ix| *ix != index);
                (200, json!({"acknowledged": true}))
            }
            ("GET", [index, "_mapping"]) => {
                let index = self.resolve(index);
                match self.state.lock().unwrap().mappings.get(&index) {
                    Some(m) => (200, json!({ index: { "mappings": m } })),
                    None => not_found(&index),
                }
            }
            ("GET", [index, "_count"]) => {
                let index = self.resolve(index);
                match block_on(self.docs.count(&index)) {
                    Ok(n) => (
                        200,
                        json!({"count": n, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}),
                    ),
                    Err(_) => not_found(&index),
                }
            }
            ("POST", [_, "_refresh"]) => (
                200,
                json!({"_shards": {"total": 1, "successful": 1, "failed": 0}}),
            ),
            ("POST", [index, "_search"]) => self.search(&self.resolve(index), query, json_body()),
            _ => error(
                400,
                "illegal_argument_exception",
                &format!("no handler for {method} {path}"),
            ),
        }
    }

    fn knows_analyzer(&self, st: &State, name: &str) -> bool {
        BUILT_IN_ANALYZERS.contains(&name) || st.plugin_analyzers.iter().any(|a| a == name)
    }

    fn create(&self, index: &str, body: Value) -> (u16, Value) {
        if self.state.lock().unwrap().mappings.contains_key(index) {
            return error(
                400,
                "resource_already_exists_exception",
                &format!("index [{index}/abc] already exists"),
            );
        }
        let mappings = body["mappings"].clone();
        let props = &mappings["properties"];
        let vector = &props["embedding"];
        let (dims, space) = match self.engine {
            Engine::Elasticsearch8 => {
                assert_eq!(vector["type"], "dense_vector");
                (vector["dims"].as_u64(), vector["similarity"].as_str())
            }
            Engine::OpenSearch2 => {
                assert_eq!(vector["type"], "knn_vector");
                assert_eq!(
                    body["settings"]["index"]["knn"], true,
                    "OpenSearch needs index.knn"
                );
                (
                    vector["dimension"].as_u64(),
                    vector["method"]["space_type"].as_str(),
                )
            }
        };
        let metric = match space {
            Some("cosine" | "cosinesimil") => Metric::Cosine,
            Some("dot_product" | "innerproduct") => Metric::Dot,
            Some("l2_norm" | "l2") => Metric::L2,
            other => {
                return error(
                    400,
                    "mapper_parsing_exception",
                    &format!("unknown similarity {other:?}"),
                );
            }
        };
        // The text field's analyzer, as the engines resolve it: built-in names and installed
        // plugins' (the `english` language analyzer stems, and the local index's English
        // analyzer stands in; the others cut CJK text, and the local standard analyzer's
        // character bigrams stand in).
        let analyzer = match props["text"]["analyzer"].as_str() {
            None => rag_core::Analyzer::Standard,
            Some("english") => rag_core::Analyzer::English,
            Some(name) if self.knows_analyzer(&self.state.lock().unwrap(), name) => {
                rag_core::Analyzer::Standard
            }
            Some(other) => {
                return error(
                    400,
                    "mapper_parsing_exception",
                    &format!("analyzer [{other}] has not been configured in mappings"),
                );
            }
        };
        let mut schema =
            IndexSchema::new(index, dims.unwrap() as usize, metric).with_analyzer(analyzer);
        for (name, def) in props.as_object().unwrap() {
            let kind = match def["type"].as_str().unwrap() {
                "keyword" => FieldKind::Keyword,
                "long" => FieldKind::Integer,
                "double" => FieldKind::Float,
                "boolean" => FieldKind::Bool,
                _ => continue,
            };
            schema = schema.with_field(name.clone(), kind);
        }
        block_on(self.docs.create_index(&schema)).unwrap();
        self.state
            .lock()
            .unwrap()
            .mappings
            .insert(index.to_string(), mappings);
        (
            200,
            json!({"acknowledged": true, "shards_acknowledged": true, "index": index}),
        )
    }

    fn aliases(&self, body: Value) -> (u16, Value) {
        let mut st = self.state.lock().unwrap();
        // Validate everything first: `_aliases` is atomic.
        for a in body["actions"].as_array().unwrap() {
            if let Some(add) = a.get("add") {
                let ix = add["index"].as_str().unwrap();
                if !st.mappings.contains_key(ix) {
                    return not_found(ix);
                }
            }
        }
        for a in body["actions"].as_array().unwrap() {
            if let Some(rm) = a.get("remove") {
                st.aliases.remove(rm["alias"].as_str().unwrap());
            }
            if let Some(add) = a.get("add") {
                st.aliases.insert(
                    add["alias"].as_str().unwrap().into(),
                    add["index"].as_str().unwrap().into(),
                );
            }
        }
        (200, json!({"acknowledged": true}))
    }

    fn bulk(&self, body: &[u8]) -> (u16, Value) {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "bulk bodies end with a newline");
        let mut lines = text.lines();
        let mut items = Vec::new();
        let mut errors = false;
        while let Some(action) = lines.next() {
            let action: Value = serde_json::from_str(action).unwrap();
            let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
            let index = self.resolve(meta["_index"].as_str().unwrap());
            let id = meta["_id"].as_str().unwrap().to_string();
            let exists = self.state.lock().unwrap().mappings.contains_key(&index);
            let item = match op.as_str() {
                "index" => {
                    let source: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
                    let fault = {
                        let mut st = self.state.lock().unwrap();
                        match st.item_faults.get_mut(&id) {
                            Some(f) if f.times > 0 => {
                                f.times = f.times.saturating_sub(1);
                                Some(f.clone())
                            }
                            _ => None,
                        }
                    };
                    if let Some(f) = fault {
                        errors = true;
                        json!({"_index": index, "_id": id, "status": f.status,
                               "error": {"type": f.error_type, "reason": format!("scripted {} for [{id}]", f.error_type)}})
                    } else if !exists {
                        errors = true;
                        json!({"_index": index, "_id": id, "status": 404,
                               "error": {"type": "index_not_found_exception", "reason": "no such index"}})
                    } else {
                        let mut src = source.as_object().unwrap().clone();
                        let vector: Vec<f32> =
                            serde_json::from_value(src.remove("embedding").unwrap()).unwrap();
                        let text = src
                            .remove("text")
                            .and_then(|t| t.as_str().map(String::from))
                            .unwrap_or_default();
                        let metadata: Metadata = src.into_iter().collect();
                        let report = block_on(self.docs.upsert(
                            &index,
                            vec![IndexRecord {
                                id: id.clone(),
                                vector,
                                text,
                                metadata,
                            }],
                        ))
                        .unwrap();
                        if report.is_complete() {
                            json!({"_index": index, "_id": id, "_version": 1, "result": "created",
                                   "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1, "status": 201})
                        } else {
                            errors = true;
                            json!({"_index": index, "_id": id, "status": 400,
                                   "error": {"type": "document_parsing_exception", "reason": report.failed[0].reason}})
                        }
                    }
                }
                "delete" => {
                    let n =
                        block_on(self.docs.delete(&index, std::slice::from_ref(&id))).unwrap_or(0);
                    if n == 1 {
                        json!({"_index": index, "_id": id, "result": "deleted", "status": 200})
                    } else {
                        json!({"_index": index, "_id": id, "result": "not_found", "status": 404})
                    }
                }
                other => panic!("unexpected bulk action {other}"),
            };
            items.push(json!({ op.clone(): item }));
        }
        (200, json!({"took": 3, "errors": errors, "items": items}))
    }

    fn search(&self, index: &str, query: &HashMap<String, String>, body: Value) -> (u16, Value) {
        let Ok(schema) = block_on(self.docs.schema(index)) else {
            return not_found(index);
        };
        let size = body["size"].as_u64().unwrap_or(10) as usize;
        let refuse = self.state.lock().unwrap().refuse_native_hybrid;
        let (request, scale): (SearchRequest, fn(Metric, f32) -> f32) =
            if let Some(rrf) = body.get("retriever").map(|r| &r["rrf"]) {
                assert_eq!(self.engine, Engine::Elasticsearch8);
                if refuse {
                    return error(
                        400,
                        "x_content_parse_exception",
                        "[1:13] unknown field [retriever]",
                    );
                }
                let rs = rrf["retrievers"].as_array().unwrap();
                let (text, f1) = parse_text(&rs[0]["standard"]["query"]);
                let (vector, _, f2) = parse_es_knn(&rs[1]["knn"]);
                assert_eq!(f1, f2, "both retrievers carry the filter");
                let mut r = SearchRequest::new(Query::Hybrid { vector, text }, size);
                r.filter = f1;
                r.num_candidates = rrf["rank_window_size"].as_u64().unwrap() as usize;
                r.rrf_k = rrf["rank_constant"].as_u64().unwrap() as u32;
                (r, |_, s| s)
            } else if let Some(knn) = body.get("knn") {
                assert_eq!(
                    self.engine,
                    Engine::Elasticsearch8,
                    "top-level knn is ES syntax"
                );
                let (vector, k, filter) = parse_es_knn(knn);
                let mut r = SearchRequest::new(Query::Vector(vector), k.min(size));
                r.filter = filter;
                (r, es_scale)
            } else if let Some(h) = body["query"].get("hybrid") {
                assert_eq!(self.engine, Engine::OpenSearch2);
                if refuse {
                    return error(400, "parsing_exception", "unknown query [hybrid]");
                }
                let Some(pipeline) = query.get("search_pipeline") else {
                    return error(
                        400,
                        "illegal_argument_exception",
                        "hybrid query needs a normalization search pipeline",
                    );
                };
                if !self.state.lock().unwrap().pipelines.contains_key(pipeline) {
                    return error(
                        404,
                        "resource_not_found_exception",
                        &format!("Pipeline {pipeline} is not defined"),
                    );
                }
                let qs = h["queries"].as_array().unwrap();
                let (text, filter) = parse_text(&qs[0]);
                let (vector, k, _) = parse_os_knn(&qs[1]["knn"]);
                return (
                    200,
                    hits_body(self.os_hybrid(index, &schema, vector, text, k, filter, size)),
                );
            } else if let Some(knn) = body["query"].get("knn") {
                assert_eq!(
                    self.engine,
                    Engine::OpenSearch2,
                    "knn query is OpenSearch syntax"
                );
                let (vector, k, filter) = parse_os_knn(knn);
                let mut r = SearchRequest::new(Query::Vector(vector), k.min(size));
                r.filter = filter;
                (r, os_scale)
            } else {
                let (text, filter) = parse_text(&body["query"]);
                let mut r = SearchRequest::new(Query::Text(text), size);
                r.filter = filter;
                (r, |_, s| s)
            };
        match block_on(self.docs.search(index, &request)) {
            Ok(mut hits) => {
                for h in &mut hits {
                    h.score = scale(schema.metric, h.score);
                }
                (200, hits_body(hits))
            }
            Err(e) => error(400, "search_phase_execution_exception", &e.to_string()),
        }
    }

    /// OpenSearch's normalisation processor: min-max per sub-query, then the arithmetic mean.
    #[allow(clippy::too_many_arguments)]
    fn os_hybrid(
        &self,
        index: &str,
        schema: &IndexSchema,
        vector: Vec<f32>,
        text: String,
        k: usize,
        filter: Option<Filter>,
        size: usize,
    ) -> Vec<SearchHit> {
        let mut lists = Vec::new();
        for q in [Query::Text(text), Query::Vector(vector)] {
            let mut r = SearchRequest::new(q, k);
            r.filter = filter.clone();
            let mut hits = block_on(self.docs.search(index, &r)).unwrap();
            if let (Some(max), Some(min)) =
                (hits.first().map(|h| h.score), hits.last().map(|h| h.score))
            {
                for h in &mut hits {
                    h.score = if max > min {
                        (h.score - min) / (max - min)
                    } else {
                        1.0
                    };
                }
            }
            lists.push(hits);
        }
        let _ = schema;
        let mut fused: HashMap<String, SearchHit> = HashMap::new();
        for list in lists {
            for h in list {
                fused
                    .entry(h.id.clone())
                    .and_modify(|e| e.score += h.score / 2.0)
                    .or_insert(SearchHit {
                        score: h.score / 2.0,
                        ..h
                    });
            }
        }
        let mut out: Vec<SearchHit> = fused.into_values().collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out.truncate(size);
        out
    }
}

fn es_scale(metric: Metric, s: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => (1.0 + s) / 2.0,
        Metric::L2 => 1.0 / (1.0 + s * s),
    }
}

fn os_scale(metric: Metric, s: f32) -> f32 {
    match metric {
        Metric::Cosine => (1.0 + s) / 2.0,
        Metric::Dot if s >= 0.0 => s + 1.0,
        Metric::Dot => 1.0 / (1.0 - s),
        Metric::L2 => 1.0 / (1.0 + s * s),
    }
}

fn hits_body(hits: Vec<SearchHit>) -> Value {
    let max = hits.first().map(|h| h.score);
    let hits: Vec<Value> = hits
        .into_iter()
        .map(|h| {
            let mut src: serde_json::Map<String, Value> = h.metadata.into_iter().collect();
            src.insert("text".into(), json!(h.text));
            json!({"_index": "x", "_id": h.id, "_score": h.score, "_source": src})
        })
        .collect();
    json!({"took": 2, "timed_out": false, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
           "hits": {"total": {"value": hits.len(), "relation": "eq"}, "max_score": max, "hits": hits}})
}

fn parse_text(q: &Value) -> (String, Option<Filter>) {
    let b = &q["bool"];
    let text = b["must"][0]["match"]["text"]["query"]
        .as_str()
        .unwrap()
        .to_string();
    let filter = b.get("filter").map(|f| parse_filter(&f[0]));
    (text, filter)
}

fn parse_es_knn(knn: &Value) -> (Vec<f32>, usize, Option<Filter>) {
    assert_eq!(knn["field"], "embedding");
    assert!(knn["num_candidates"].as_u64().unwrap() >= knn["k"].as_u64().unwrap());
    let v = serde_json::from_value(knn["query_vector"].clone()).unwrap();
    (
        v,
        knn["k"].as_u64().unwrap() as usize,
        knn.get("filter").map(parse_filter),
    )
}

fn parse_os_knn(knn: &Value) -> (Vec<f32>, usize, Option<Filter>) {
    let inner = &knn["embedding"];
    let v = serde_json::from_value(inner["vector"].clone()).unwrap();
    (
        v,
        inner["k"].as_u64().unwrap() as usize,
        inner.get("filter").map(parse_filter),
    )
}

fn parse_filter(f: &Value) -> Filter {
    let (kind, body) = f.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "term" => {
            let (field, v) = body.as_object().unwrap().iter().next().unwrap();
            Filter::Eq(field.clone(), v.clone())
        }
        "terms" => {
            let (field, v) = body.as_object().unwrap().iter().next().unwrap();
            Filter::In(field.clone(), v.as_array().unwrap().clone())
        }
        "range" => {
            let (field, b) = body.as_object().unwrap().iter().next().unwrap();
            Filter::Range {
                field: field.clone(),
                gte: b["gte"].as_f64(),
                lte: b["lte"].as_f64(),
            }
        }
        "bool" => {
            if let Some(fs) = body.get("filter") {
                Filter::And(fs.as_array().unwrap().iter().map(parse_filter).collect())
            } else if let Some(fs) = body.get("should") {
                Filter::Or(fs.as_array().unwrap().iter().map(parse_filter).collect())
            } else {
                Filter::Not(Box::new(parse_filter(&body["must_not"][0])))
            }
        }
        other => panic!("unexpected filter clause {other}"),
    }
}
