//! [`SearchIndex`]: the [`VectorIndex`] of Elasticsearch 8 and OpenSearch 2 clusters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use opensearch::http::Method;
use rag_core::{
    Error, FieldKind, Fusion, IndexRecord, IndexSchema, ItemError, Metric, Query, Result,
    SearchHit, SearchRequest, UpsertReport, VectorIndex,
};
use serde_json::{Map, Value, json};

use crate::config::{HybridMode, Refresh, SearchConfig};
use crate::dsl;
use crate::mapping::{
    EMBEDDING_FIELD, Engine, TEXT_FIELD, analyzer_plugin, mapping_with, schema_from_mapping,
    text_analyzer_of,
};
use crate::transport::{Body, Http, Reply};

/// Longest document id the engines accept (bytes).
const MAX_ID_BYTES: usize = 512;

/// A [`VectorIndex`] on an Elasticsearch 8.x cluster (Alibaba Cloud Elasticsearch or a
/// self-managed one) or an OpenSearch 2.x cluster (the open-source engine; not "Alibaba Cloud
/// OpenSearch", a different product with its own API).
///
/// - **create**: the mapping of [`mapping_with`] (`dense_vector` + HNSW, or `knn_vector` on
///   the lucene engine), with the ragloop schema in `_meta`; an existing index of another
///   dimension is [`Error::DimensionMismatch`] before anything is written.
/// - **upsert**: `_bulk` requests of at most `bulk_max_docs` documents and `bulk_max_bytes`
///   bytes, document `_id` = record id (content-hash chunk ids make re-runs idempotent); items
///   the cluster rejects with 429/503 are resent with backoff, every other item error is
///   reported in the [`UpsertReport`] with the engine's reason — nothing is dropped silently.
/// - **search**: kNN (`num_candidates` from the request), BM25 `match`, hybrid natively
///   (ES `retriever.rrf`, OpenSearch `hybrid` query + normalisation pipeline) or client-side
///   RRF ([`HybridMode`]); filters become `bool`/`term`/`terms`/`range` clauses; kNN scores are
///   converted back to the metric's similarity so they compare with the local index's.
/// - **aliases**: [`SearchIndex::swap_alias`] moves an alias atomically, for re-indexing
///   without downtime.
pub struct SearchIndex {
    http: Http,
    /// Cleared when the engine refuses native hybrid search (version or licence).
    native_hybrid: AtomicBool,
    /// Schemas seen, for searches (writes always re-read the mapping).
    schemas: Mutex<HashMap<String, IndexSchema>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("config", &self.http.config)
            .finish_non_exhaustive()
    }
}

fn enc(name: &str) -> String {
    // Index names are validated to [a-z0-9._-]; ids go in bodies, never in paths.
    name.to_string()
}

impl SearchIndex {
    /// A client for the cluster `config` describes (no request is sent yet).
    pub fn new(config: SearchConfig) -> Result<Self> {
        let native = config.hybrid == HybridMode::Native;
        Ok(Self {
            http: Http::new(config)?,
            native_hybrid: AtomicBool::new(native),
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// The engine this client talks to.
    pub fn engine(&self) -> Engine {
        self.http.config.engine
    }

    /// The configuration.
    pub fn config(&self) -> &SearchConfig {
        &self.http.config
    }

    /// Makes everything written so far searchable (`POST /{index}/_refresh`); needed after
    /// loads with [`Refresh::None`].
    pub async fn refresh(&self, index: &str) -> Result<()> {
        let path = format!("/{}/_refresh", enc(index));
        self.http
            .call(Method::Post, &path, &[], Body::Empty, "refresh")
            .await?
            .into_result(&format!("refreshing {index:?}"))?;
        Ok(())
    }

    /// The indexes `alias` points to (empty when the alias does not exist).
    pub async fn alias_targets(&self, alias: &str) -> Result<Vec<String>> {
        let path = format!("/_alias/{}", enc(alias));
        let reply = self
            .http
            .call(Method::Get, &path, &[], Body::Empty, "get alias")
            .await?;
        if reply.status == 404 {
            return Ok(Vec::new());
        }
        let body = reply.into_result(&format!("reading alias {alias:?}"))?;
        let mut out: Vec<String> = body
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// Points `alias` at `index` and away from every other index, in one atomic `_aliases`
    /// call: searches through the alias never see a half-built index. Returns the indexes the
    /// alias left (drop them when no reader needs them).
    ///
    /// Re-indexing without downtime: create `rag-index-v2`, load it, `swap_alias("rag-index",
    /// "rag-index-v2")`, drop what this returns.
    pub async fn swap_alias(&self, alias: &str, index: &str) -> Result<Vec<String>> {
        let old: Vec<String> = self
            .alias_targets(alias)
            .await?
            .into_iter()
            .filter(|o| o != index)
            .collect();
        let mut actions: Vec<Value> = old
            .iter()
            .map(|o| json!({ "remove": { "index": o, "alias": alias } }))
            .collect();
        actions.push(json!({ "add": { "index": index, "alias": alias } }));
        let body = json!({ "actions": actions });
        self.http
            .call(
                Method::Post,
                "/_aliases",
                &[],
                Body::Json(&body),
                "update aliases",
            )
            .await?
            .into_result(&format!("moving alias {alias:?} to {index:?}"))?;
        self.schemas.lock().map(|mut s| s.remove(alias)).ok();
        Ok(old)
    }

    /// The `mappings` object of `index` (`GET /{index}/_mapping`).
    async fn fetch_mappings(&self, index: &str) -> Result<Value> {
        let path = format!("/{}/_mapping", enc(index));
        let body = self
            .http
            .call(Method::Get, &path, &[], Body::Empty, "get mapping")
            .await?
            .into_result(&format!("index {index:?}"))?;
        // The response is keyed by the concrete index (an alias resolves to it).
        body.as_object()
            .and_then(|o| o.values().next())
            .map(|v| v["mappings"].clone())
            .ok_or_else(|| Error::not_found(format!("index {index:?}")))
    }

    async fn fetch_schema(&self, index: &str) -> Result<IndexSchema> {
        let schema = schema_from_mapping(index, &self.fetch_mappings(index).await?)?;
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(index.to_string(), schema.clone());
        }
        Ok(schema)
    }

    /// An existing index fits when its schema does and, with a configured cluster analyzer,
    /// its text field uses that analyzer.
    async fn check_existing(&self, schema: &IndexSchema) -> Result<()> {
        let mappings = self.fetch_mappings(&schema.name).await?;
        let existing = schema_from_mapping(&schema.name, &mappings)?;
        existing.is_compatible(schema)?;
        if let Some(want) = &self.http.config.text_analyzer {
            let has = text_analyzer_of(&mappings);
            if has != want {
                return Err(Error::AlreadyExists {
                    what: format!(
                        "index {:?}, whose text is analyzed with {has:?}, not the configured \
                         {want:?} (drop it to rebuild it, or name another index)",
                        schema.name
                    ),
                });
            }
        }
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(schema.name.clone(), existing);
        }
        Ok(())
    }

    /// Whether the cluster knows the analyzer `name`: `POST /_analyze` with it answers 400
    /// `failed to find global analyzer` when no plugin provides it
    /// (<https://www.elastic.co/guide/en/elasticsearch/reference/8.15/indices-analyze.html>;
    /// OpenSearch: <https://opensearch.org/docs/2.15/api-reference/analyze-apis/>). A cluster
    /// that refuses the call (no permission) is left to answer the create itself.
    async fn check_text_analyzer(&self, name: &str) -> Result<()> {
        let body = json!({ "analyzer": name, "text": "全文检索 full-text search" });
        let reply = self
            .http
            .call(Method::Post, "/_analyze", &[], Body::Json(&body), "analyze")
            .await?;
        if reply.ok() {
            return Ok(());
        }
        let reason = reply.body["error"]["reason"].as_str().unwrap_or_default();
        if reply.status == 400 && reason.contains("failed to find") {
            return Err(missing_analyzer(name, self.engine()));
        }
        tracing::warn!(
            status = reply.status,
            reason,
            "could not check the analyzer {name:?}; creating the index as asked"
        );
        Ok(())
    }

    /// The cluster's version (`GET /`: `version.number`) as (major, minor).
    pub async fn cluster_version(&self) -> Result<(u32, u32)> {
        let body = self
            .http
            .call(Method::Get, "/", &[], Body::Empty, "cluster info")
            .await?
            .into_result("cluster info")?;
        let number = body["version"]["number"].as_str().unwrap_or_default();
        parse_version(number).ok_or_else(|| {
            Error::backend_msg(
                "search",
                format!("cluster info: no version number in {body}"),
            )
        })
    }

    /// OpenSearch's lucene engine takes `innerproduct` from 2.13 on: an older cluster is
    /// told before the create, not with a mapping error after it. A cluster that will not
    /// say its version (a proxy without `GET /`) is left to answer the create itself.
    async fn check_engine_supports(&self, schema: &IndexSchema) -> Result<()> {
        if self.engine() != Engine::OpenSearch2 || schema.metric != Metric::Dot {
            return Ok(());
        }
        match self.cluster_version().await {
            Ok(v) if v < LUCENE_INNERPRODUCT_SINCE => Err(Error::invalid(format!(
                "OpenSearch {}.{} cannot create index {:?}: the lucene engine takes space_type innerproduct (metric dot) from {}.{} on; upgrade the cluster or use metric cosine (unit-length vectors rank the same)",
                v.0, v.1, schema.name, LUCENE_INNERPRODUCT_SINCE.0, LUCENE_INNERPRODUCT_SINCE.1
            ))),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cluster's version; creating the index as asked");
                Ok(())
            }
        }
    }

    async fn cached_schema(&self, index: &str) -> Result<IndexSchema> {
        let cached = self.schemas.lock().ok().and_then(|c| c.get(index).cloned());
        match cached {
            Some(s) => Ok(s),
            None => self.fetch_schema(index).await,
        }
    }

    fn forget(&self, index: &str) {
        if let Ok(mut cache) = self.schemas.lock() {
            cache.remove(index);
        }
    }

    async fn ensure_pipeline(&self) -> Result<()> {
        let path = format!("/_search/pipeline/{}", self.http.config.search_pipeline);
        let body = dsl::hybrid_pipeline();
        self.http
            .call(
                Method::Put,
                &path,
                &[],
                Body::Json(&body),
                "put search pipeline",
            )
            .await?
            .into_result("creating the hybrid search pipeline")?;
        Ok(())
    }

    fn refresh_param(&self) -> &'static [(&'static str, &'static str)] {
        match self.http.config.refresh {
            Refresh::WaitFor => &[("refresh", "wait_for")],
            Refresh::None => &[],
        }
    }

    /// Sends `_bulk` bodies; returns per-line outcomes in request order.
    async fn bulk(&self, ndjson: &[u8], expected: usize) -> Result<Vec<ItemOutcome>> {
        let body = self
            .http
            .call(
                Method::Post,
                "/_bulk",
                self.refresh_param(),
                Body::NdJson(ndjson),
                "bulk",
            )
            .await?
            .into_result("bulk request")?;
        let items = body["items"]
            .as_array()
            .ok_or_else(|| Error::backend_msg("search", "bulk response without an items array"))?;
        if items.len() != expected {
            return Err(Error::backend_msg(
                "search",
                format!(
                    "bulk response has {} items for {expected} actions",
                    items.len()
                ),
            ));
        }
        Ok(items.iter().map(ItemOutcome::of).collect())
    }

    async fn search_raw(&self, index: &str, body: &Value, query: &[(&str, &str)]) -> Result<Reply> {
        let path = format!("/{}/_search", enc(index));
        self.http
            .call(Method::Post, &path, query, Body::Json(body), "search")
            .await
    }

    async fn search_hits(
        &self,
        index: &str,
        body: &Value,
        score: impl Fn(f64) -> f32,
    ) -> Result<Vec<SearchHit>> {
        let reply = self.search_raw(index, body, &[]).await?;
        if reply.status == 404 {
            self.forget(index);
        }
        let body = reply.into_result(&format!("searching {index:?}"))?;
        dsl::hits(&body, score)
    }

    /// Native hybrid search, or `None` when the engine refuses it (then client RRF is used
    /// from now on).
    async fn native_hybrid(&self, index: &str, body: &Value) -> Result<Option<Vec<SearchHit>>> {
        let pipeline = self.http.config.search_pipeline.clone();
        let query: Vec<(&str, &str)> = match self.engine() {
            Engine::Elasticsearch8 => Vec::new(),
            Engine::OpenSearch2 => vec![("search_pipeline", pipeline.as_str())],
        };
        let reply = self.search_raw(index, body, &query).await?;
        let refused = match reply.status {
            // Unknown `retriever` (ES < 8.14), a licence without RRF, a missing pipeline or
            // `hybrid` query (OpenSearch < 2.10).
            400 => !reply.error_type().contains("index_not_found"),
            403 => reply.body.to_string().contains("license"),
            404 => reply.error_type() != "index_not_found_exception",
            _ => false,
        };
        if refused {
            tracing::warn!(
                engine = ?self.engine(),
                error = %reply.body,
                "native hybrid search refused; using client-side RRF from now on"
            );
            self.native_hybrid.store(false, Ordering::Relaxed);
            return Ok(None);
        }
        let body = reply.into_result(&format!("hybrid search of {index:?}"))?;
        dsl::hits(&body, |s| s as f32).map(Some)
    }
}

/// What the cluster said of one bulk action.
enum ItemOutcome {
    Ok { result: String },
    Failed { status: u16, reason: String },
}

impl ItemOutcome {
    fn of(item: &Value) -> Self {
        // Each item is `{"<action>": {"_id", "status", "result" | "error"}}`.
        let inner = item
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        let status = inner["status"].as_u64().unwrap_or(0) as u16;
        let error = &inner["error"];
        if (200..300).contains(&status) && error.is_null() {
            return Self::Ok {
                result: inner["result"].as_str().unwrap_or("").to_string(),
            };
        }
        let reason = match error {
            Value::Object(e) => format!(
                "{}: {}",
                e.get("type").and_then(Value::as_str).unwrap_or("error"),
                e.get("reason").and_then(Value::as_str).unwrap_or("")
            ),
            Value::Null => inner["result"].as_str().unwrap_or("failed").to_string(),
            other => other.to_string(),
        };
        Self::Failed { status, reason }
    }

    fn retryable(status: u16) -> bool {
        matches!(status, 429 | 502 | 503 | 504)
    }
}

/// Checks a record against the schema; the reason names what is wrong.
fn check_record(schema: &IndexSchema, r: &IndexRecord) -> std::result::Result<(), String> {
    if r.id.is_empty() {
        return Err("empty id".into());
    }
    if r.id.len() > MAX_ID_BYTES {
        return Err(format!("id longer than {MAX_ID_BYTES} bytes"));
    }
    if r.vector.len() != schema.dims {
        return Err(format!(
            "dimension mismatch: expected {}, got {}",
            schema.dims,
            r.vector.len()
        ));
    }
    if r.vector.iter().any(|x| !x.is_finite()) {
        return Err("vector holds NaN or infinity".into());
    }
    for (name, v) in &r.metadata {
        if name == EMBEDDING_FIELD || name == TEXT_FIELD {
            return Err(format!("metadata field {name:?} is reserved"));
        }
        if let Some(f) = schema.metadata_fields.iter().find(|f| &f.name == name) {
            let ok = v.is_null()
                || match f.kind {
                    FieldKind::Keyword => v.is_string(),
                    FieldKind::Integer => v.is_i64() || v.is_u64(),
                    FieldKind::Float => v.is_number(),
                    FieldKind::Bool => v.is_boolean(),
                };
            if !ok {
                return Err(format!("metadata field {name:?} is not {:?}: {v}", f.kind));
            }
        }
    }
    Ok(())
}

/// The `_source` of a record: vector, text and non-null metadata.
fn source_of(r: &IndexRecord) -> Value {
    let mut doc = Map::new();
    doc.insert(EMBEDDING_FIELD.into(), json!(r.vector));
    doc.insert(TEXT_FIELD.into(), json!(r.text));
    for (k, v) in &r.metadata {
        if !v.is_null() {
            doc.insert(k.clone(), v.clone());
        }
    }
    Value::Object(doc)
}

/// Appends one action line (and its source) to an NDJSON body.
fn push_line(buf: &mut Vec<u8>, v: &Value) {
    // Serialising a `Value` cannot fail.
    serde_json::to_writer(&mut *buf, v).unwrap_or_default();
    buf.push(b'\n');
}

/// The error for a cluster without the analyzer `name`: which plugin provides it and how to
/// get it, or the built-in alternative.
fn missing_analyzer(name: &str, engine: Engine) -> Error {
    let tool = match engine {
        Engine::Elasticsearch8 => "bin/elasticsearch-plugin",
        Engine::OpenSearch2 => "bin/opensearch-plugin",
    };
    let remedy = match analyzer_plugin(name) {
        Some("analysis-ik") => format!(
            "it comes with the IK plugin (analysis-ik, github.com/infinilabs/analysis-ik): on \
             Alibaba Cloud Elasticsearch install it from the instance's plug-in page; elsewhere \
             `{tool} install` the release matching the cluster's version, then restart the nodes"
        ),
        Some(plugin) => format!(
            "it comes with the {plugin} plugin: `{tool} install {plugin}` on every node (on \
             Alibaba Cloud Elasticsearch, from the instance's plug-in page), then restart them"
        ),
        None => "no plugin of this cluster provides it".to_string(),
    };
    Error::invalid(format!(
        "the search cluster has no analyzer {name:?}: {remedy}; or use `cjk` (built in: \
         character bigrams for Chinese, Japanese and Korean) or `standard`"
    ))
}

#[async_trait]
impl VectorIndex for SearchIndex {
    async fn create_index(&self, schema: &IndexSchema) -> Result<()> {
        schema.validate()?;
        if let Some(f) = schema
            .metadata_fields
            .iter()
            .find(|f| f.name == EMBEDDING_FIELD || f.name == TEXT_FIELD)
        {
            return Err(Error::invalid(format!(
                "metadata field {:?} clashes with the vector or text field",
                f.name
            )));
        }
        if self.engine() == Engine::OpenSearch2
            && self.native_hybrid.load(Ordering::Relaxed)
            && let Err(e) = self.ensure_pipeline().await
        {
            tracing::warn!(error = %e, "no hybrid search pipeline; hybrid search falls back to client-side RRF");
            self.native_hybrid.store(false, Ordering::Relaxed);
        }
        match self.check_existing(schema).await {
            Err(e) if e.is_not_found() => {}
            done => return done,
        }
        self.check_engine_supports(schema).await?;
        let analyzer = self.http.config.text_analyzer.as_deref();
        if let Some(name) = analyzer {
            self.check_text_analyzer(name).await?;
        }
        let body = mapping_with(schema, self.engine(), self.http.config.hnsw, analyzer);
        let path = format!("/{}", enc(&schema.name));
        let reply = self
            .http
            .call(Method::Put, &path, &[], Body::Json(&body), "create index")
            .await?;
        if reply.status == 400 && reply.error_type() == "resource_already_exists_exception" {
            // Created by someone else in between: same rules as above.
            return self.check_existing(schema).await;
        }
        if let Some(name) = analyzer
            && reply.status == 400
            && reply.body["error"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&format!("analyzer [{name}]")))
        {
            // The analyzer check could not run; the create names the same fault.
            return Err(missing_analyzer(name, self.engine()));
        }
        reply.into_result(&format!("creating index {:?}", schema.name))?;
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(schema.name.clone(), schema.clone());
        }
        Ok(())
    }

    async fn schema(&self, index: &str) -> Result<IndexSchema> {
        self.fetch_schema(index).await
    }

    async fn upsert(&self, index: &str, records: Vec<IndexRecord>) -> Result<UpsertReport> {
        // Re-read the mapping: `_bulk` would silently create a dropped index with a dynamic
        // mapping, and the dimension must be checked before anything is written.
        let schema = self.fetch_schema(index).await?;
        let mut report = UpsertReport::default();
        let mut pending: Vec<IndexRecord> = Vec::with_capacity(records.len());
        for r in records {
            match check_record(&schema, &r) {
                Ok(()) => pending.push(r),
                Err(reason) => report.failed.push(ItemError {
                    id: r.id,
                    reason,
                    retryable: false,
                }),
            }
        }
        let cfg = &self.http.config;
        let mut round = 0;
        while !pending.is_empty() {
            let mut retry = Vec::new();
            let mut start = 0;
            while start < pending.len() {
                // Cut the next request by document count and bytes (at least one document).
                let mut buf = Vec::new();
                let mut end = start;
                while end < pending.len() && end - start < cfg.bulk_max_docs {
                    let r = &pending[end];
                    let mut lines = Vec::new();
                    push_line(
                        &mut lines,
                        &json!({ "index": { "_index": index, "_id": r.id } }),
                    );
                    push_line(&mut lines, &source_of(r));
                    if end > start && buf.len() + lines.len() > cfg.bulk_max_bytes {
                        break;
                    }
                    buf.extend_from_slice(&lines);
                    end += 1;
                }
                let outcomes = self.bulk(&buf, end - start).await?;
                for (r, outcome) in pending[start..end].iter().zip(outcomes) {
                    match outcome {
                        ItemOutcome::Ok { .. } => report.written.push(r.id.clone()),
                        ItemOutcome::Failed { status, reason }
                            if ItemOutcome::retryable(status) && round < cfg.retry.max_retries =>
                        {
                            tracing::debug!(id = %r.id, status, %reason, "bulk item rejected; will resend");
                            retry.push(r.clone());
                        }
                        ItemOutcome::Failed { status, reason } => report.failed.push(ItemError {
                            id: r.id.clone(),
                            reason: format!("HTTP {status} {reason}"),
                            retryable: ItemOutcome::retryable(status),
                        }),
                    }
                }
                start = end;
            }
            if !retry.is_empty() {
                round += 1;
                tracing::warn!(
                    items = retry.len(),
                    round,
                    "resending bulk items the cluster rejected"
                );
                tokio::time::sleep(cfg.retry.pause(round, None)).await;
            }
            pending = retry;
        }
        Ok(report)
    }

    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize> {
        self.fetch_schema(index).await?;
        let mut removed = 0;
        for batch in ids.chunks(self.http.config.bulk_max_docs) {
            let mut buf = Vec::new();
            for id in batch {
                push_line(
                    &mut buf,
                    &json!({ "delete": { "_index": index, "_id": id } }),
                );
            }
            for outcome in self.bulk(&buf, batch.len()).await? {
                match outcome {
                    ItemOutcome::Ok { result } if result == "deleted" => removed += 1,
                    ItemOutcome::Ok { .. } | ItemOutcome::Failed { status: 404, .. } => {}
                    ItemOutcome::Failed { status, reason } => {
                        return Err(Error::backend_msg(
                            "search",
                            format!("deleting from {index:?}: HTTP {status} {reason}"),
                        ));
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn search(&self, index: &str, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let schema = self.cached_schema(index).await?;
        req.validate(schema.dims)?;
        if let Some(unknown) = req.filter.as_ref().and_then(|f| {
            f.fields()
                .into_iter()
                .find(|n| !schema.metadata_fields.iter().any(|s| s.name == *n))
        }) {
            return Err(Error::invalid(format!(
                "filter field {unknown:?} is not a metadata field of index {index:?}"
            )));
        }
        let engine = self.engine();
        let metric = schema.metric;
        let knn_score = move |s: f64| dsl::knn_similarity(engine, metric, s);
        let filter = req.filter.as_ref();
        let candidates = req.num_candidates.max(req.k);
        match &req.query {
            Query::Vector(v) => {
                let body = dsl::knn_search(engine, v, req.k, candidates, filter);
                self.search_hits(index, &body, knn_score).await
            }
            Query::Text(t) => {
                let body = dsl::text_search(t, req.k, filter);
                self.search_hits(index, &body, |s| s as f32).await
            }
            Query::Hybrid { vector, text } => {
                // Native hybrid is RRF (ES retriever) or the cluster's own pipeline
                // (OpenSearch); a convex fusion with this request's weight is fused here.
                if req.fusion == Fusion::Rrf && self.native_hybrid.load(Ordering::Relaxed) {
                    let body = dsl::hybrid_search(
                        engine, vector, text, req.k, candidates, req.rrf_k, filter,
                    );
                    if let Some(hits) = self.native_hybrid(index, &body).await? {
                        return Ok(hits);
                    }
                }
                let knn = dsl::knn_search(engine, vector, candidates, candidates, filter);
                let bm25 = dsl::text_search(text, candidates, filter);
                let (a, b) = futures::try_join!(
                    self.search_hits(index, &knn, knn_score),
                    self.search_hits(index, &bm25, |s| s as f32)
                )?;
                Ok(rag_core::fuse(req, a, b))
            }
        }
    }

    async fn count(&self, index: &str) -> Result<usize> {
        let path = format!("/{}/_count", enc(index));
        let body = self
            .http
            .call(Method::Get, &path, &[], Body::Empty, "count")
            .await?
            .into_result(&format!("index {index:?}"))?;
        body["count"]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| Error::backend_msg("search", "count response without a count"))
    }

    async fn drop_index(&self, index: &str) -> Result<()> {
        self.forget(index);
        let path = format!("/{}", enc(index));
        self.http
            .call(Method::Delete, &path, &[], Body::Empty, "delete index")
            .await?
            .into_result(&format!("index {index:?}"))?;
        Ok(())
    }
}

/// The first OpenSearch version whose lucene engine takes `innerproduct`.
pub const LUCENE_INNERPRODUCT_SINCE: (u32, u32) = (2, 13);

/// `"2.11.1"` → (2, 11).
fn parse_version(number: &str) -> Option<(u32, u32)> {
    let mut parts = number.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod version_tests {
    use super::parse_version;

    #[test]
    fn versions_parse_as_major_minor() {
        assert_eq!(parse_version("2.11.1"), Some((2, 11)));
        assert_eq!(parse_version("2.13.0"), Some((2, 13)));
        assert_eq!(parse_version("8.15.0-SNAPSHOT"), Some((8, 15)));
        assert_eq!(parse_version("3"), Some((3, 0)));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("x.y"), None);
        assert!(parse_version("2.11.1").unwrap() < super::LUCENE_INNERPRODUCT_SINCE);
        assert!(parse_version("3.0.0").unwrap() > super::LUCENE_INNERPRODUCT_SINCE);
    }
}
