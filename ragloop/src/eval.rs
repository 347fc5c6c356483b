//! `ragloop eval`: retrieval quality of BM25, the hashed model and any number of
//! sentence-transformers models (dense and hybrid with BM25) on a query set, written as the
//! evaluation report (Markdown table + PNG chart; see [`crate::report`]).
//!
//! Everything runs in memory on the local backends: the documents are ingested into an
//! in-memory store, chunked, embedded with each model, indexed (one index per model) and
//! queried. Pass a base model and a trained one to see what training bought:
//! `ragloop eval --model models/all-MiniLM-L6-v2 --model target/emb-v1`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore, LocalVectorIndex};
use rag_core::pipeline::{Layout, Pipeline, PipelineOptions, Progress, RetrievalMode};
use rag_core::{EmbeddingModel, ObjectStore, QueryMemo, VectorIndex};
use serde::Serialize;

use crate::evaluation::{self, MetricsRow};

/// Arguments of `ragloop eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Directory of documents (as `ragloop run --data`).
    #[arg(long, default_value = "data/manpages/docs")]
    pub data: PathBuf,
    /// Queries with relevant document ids (JSONL or JSONL.gz).
    #[arg(long, default_value = "data/manpages/queries.jsonl.gz")]
    pub queries: PathBuf,
    /// Which split to evaluate on.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A sentence-transformers model directory to evaluate (repeat for several, e.g. the base
    /// model and a trained one).
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// How each `--model` runs: `none` (f32), `int8`, or both (`none,int8`) to see what
    /// quantisation costs.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub quantize: Vec<embed_runtime::Quantization>,
    /// Dimension of the hashed model (fitted on the documents); 0 leaves it out.
    #[arg(long, default_value_t = 768, value_parser = crate::bounded(0, rag_core::MAX_DIMS as u64))]
    pub dims: usize,
    /// A cross-encoder directory (`ragloop train --reranker` writes one): each model's
    /// hybrid row is also reported with its top `--rerank-candidates` reranked.
    #[arg(long)]
    pub reranker: Option<PathBuf>,
    /// Fused candidates the reranker reorders.
    #[arg(long, default_value_t = 50, value_parser = crate::bounded(1, 1000))]
    pub rerank_candidates: usize,
    /// How much the reranker's order counts against the search's (`[rerank] weight`): 1 takes
    /// its order, below 1 fuses both orders by weighted reciprocal rank. Several (`1,0.5`) give
    /// one reranked row each; the reranker scores each query's candidates once. Default: the
    /// weight its training job chose (`rerank.json` in the directory), else 1.
    #[arg(long, value_delimiter = ',', value_parser = crate::config::parse_rerank_weight)]
    pub rerank_weight: Vec<f32>,
    /// Where `eval-report.md` and `eval-report.png` go.
    #[arg(long, default_value = "target/eval")]
    pub out: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What `ragloop eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    /// One row per retriever.
    pub rows: Vec<MetricsRow>,
    /// The Markdown report.
    pub report: PathBuf,
    /// The chart.
    pub chart: PathBuf,
}

/// Runs the evaluation and writes the report.
pub async fn run(args: &EvalArgs, progress: Arc<dyn Progress>) -> Result<EvalSummary> {
    let queries = crate::queries::read_split(&args.queries, &args.split)?;
    if queries.is_empty() {
        bail!(
            "{} has no queries in split {:?}",
            args.queries.display(),
            args.split
        );
    }
    let store = Arc::new(InMemoryStore::new());
    let index: Arc<dyn VectorIndex> = Arc::new(LocalVectorIndex::in_memory_with(
        vector_store::local_options(None),
    ));
    let layout = Layout::new("mem://ragloop-eval/".parse()?);
    let pipeline_weighted = |name: &str, rerank_weight: f32| {
        Pipeline::new(store.clone(), layout.clone())
            .with_index(index.clone())
            .with_options(PipelineOptions {
                parsers: crate::parsers(),
                index_name: name.into(),
                rerank_candidates: args.rerank_candidates,
                rerank_weight,
                ..Default::default()
            })
            .with_progress(progress.clone())
    };
    let pipeline_for = |name: &str| pipeline_weighted(name, 1.0);
    let mut weights = args.rerank_weight.clone();
    if weights.is_empty() {
        let chosen = match &args.reranker {
            Some(dir) => evaluation::RerankChoice::read(dir)?.map(|c| c.weight),
            None => None,
        };
        weights.push(chosen.unwrap_or(1.0));
    }
    let reranker: Option<Arc<dyn rag_core::rerank::Reranker>> = match &args.reranker {
        None => None,
        Some(dir) => Some(Arc::new(Memo::new(
            embed_runtime::CrossEncoder::load(dir)
                .with_context(|| format!("loading the reranker in {}", dir.display()))?,
        ))),
    };
    let first = pipeline_for("eval-bm25");
    let ingest = first.ingest(&args.data).await?;
    if !ingest.failed.is_empty() {
        bail!(
            "{} files could not be read: {:?}",
            ingest.failed.len(),
            ingest.failed
        );
    }

    // The models: the hashed one fitted on the documents (its IDF), then each directory.
    let mut models: Vec<(String, Arc<dyn EmbeddingModel>)> = Vec::new();
    if args.dims > 0 {
        let loaded = rag_core::loader::load_documents_with(
            store.as_ref() as &dyn ObjectStore,
            &layout.raw_docs(),
            &crate::parsers(),
        )
        .await?;
        let hashed = HashedEmbedding::fit(
            HashedEmbeddingConfig {
                dims: args.dims,
                ..Default::default()
            },
            loaded.documents.iter().map(|d| d.text.as_str()),
        )?;
        models.push(("hashed (IDF)".into(), Arc::new(hashed)));
    }
    for dir in &args.model {
        for &quantize in &args.quantize {
            let options = embed_runtime::EmbedderOptions {
                quantize,
                ..Default::default()
            };
            let m = embed_runtime::SentenceEmbedder::load_with(dir, options)
                .with_context(|| format!("loading the model in {}", dir.display()))?;
            let name = match quantize {
                embed_runtime::Quantization::None => dir.display().to_string(),
                q => format!("{} ({q})", dir.display()),
            };
            models.push((name, Arc::new(m)));
        }
    }
    if models.is_empty() {
        bail!("nothing to evaluate: give --model or a hashed --dims above 0");
    }

    let mut rows = Vec::new();
    for (i, (name, model)) in models.iter().enumerate() {
        // Each query embedded once for all of this model's rows.
        let model = QueryMemo::new(model.clone());
        let p = pipeline_for(&format!("eval-{i}"));
        p.embed(&model).await?;
        let indexed = p.index(&model).await?;
        if !indexed.failed.is_empty() {
            bail!(
                "{} records of {name} could not be indexed",
                indexed.failed.len()
            );
        }
        let modes = if i == 0 {
            &[
                RetrievalMode::Text,
                RetrievalMode::Vector,
                RetrievalMode::Hybrid,
            ][..]
        } else {
            &[RetrievalMode::Vector, RetrievalMode::Hybrid][..]
        };
        for &mode in modes {
            rows.push(evaluation::row(&p, &model, name, mode, &queries).await?);
        }
        if let Some(r) = &reranker {
            for &weight in &weights {
                let p = pipeline_weighted(&format!("eval-{i}"), weight).with_reranker(r.clone());
                let mode = RetrievalMode::Hybrid;
                if let Some(row) =
                    evaluation::reranked_row(&p, &model, name, mode, &queries).await?
                {
                    rows.push(row);
                }
            }
        }
    }
    let title = format!(
        "Retrieval on the {:?} split of {}",
        args.split,
        args.queries.display()
    );
    let (report, chart) = crate::report::write(&args.out, "eval-report", &title, &rows, None)?;
    Ok(EvalSummary {
        rows,
        report,
        chart,
    })
}

/// A reranker that remembers its scores by (query, passage), so the rows of several
/// `--rerank-weight`s cost one cross-encoder pass (scores are independent of the other
/// passages of a call: the [`Reranker`](rag_core::rerank::Reranker) contract).
struct Memo<R> {
    inner: R,
    seen: std::sync::Mutex<std::collections::HashMap<(String, String), f32>>,
}

impl<R> Memo<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            seen: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl<R: rag_core::rerank::Reranker> rag_core::rerank::Reranker for Memo<R> {
    async fn score(&self, query: &str, documents: &[String]) -> rag_core::Result<Vec<f32>> {
        let key = |d: &String| (query.to_string(), d.clone());
        let missing: Vec<String> = {
            let seen = self.seen.lock().expect("memo lock");
            documents
                .iter()
                .filter(|d| !seen.contains_key(&key(d)))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let scores = self.inner.score(query, &missing).await?;
            let mut seen = self.seen.lock().expect("memo lock");
            for (d, s) in missing.iter().zip(scores) {
                seen.insert(key(d), s);
            }
        }
        let seen = self.seen.lock().expect("memo lock");
        Ok(documents.iter().map(|d| seen[&key(d)]).collect())
    }

    fn model_id(&self) -> String {
        self.inner.model_id()
    }
}
