//! The jobs the loop submits, built from the configuration alone (no connection needed, so
//! `--dry-run` shows exactly what `run` submits): stage 2's trainer, stage 3's fine-tune and
//! stage 5's embedding workers. Every job gets the loop's store description
//! ([`StoreSpec::ENV`]) and opens its store with the same factory as the loop.

use std::path::{Path, PathBuf};

use rag_core::pipeline::Layout;
use rag_core::training::Framework;
use rag_core::{JobKind, JobSpec, StoreUri};

use crate::config::{JobsBackend, LlmBackend, LlmFineTuneBackend, LoopConfig, ModelKind, Training};
use crate::stores::{StoreSpec, absolute};

/// What stage 2 asks the loop's LLM for (`JobPlan::synthetic`): shown by the dry run, passed
/// to the job as `--synthetic*` flags and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticPlan {
    /// Questions per document.
    pub questions: usize,
    /// At most this many documents.
    pub documents: usize,
    /// Token budget.
    pub tokens: u64,
    /// `bailian qwen-plus`, `openai <model>`.
    pub model: String,
    /// Variables the job reads the LLM from (never a key).
    pub env: Vec<(String, String)>,
}

/// Builds the loop's job specs.
#[derive(Debug, Clone)]
pub struct JobPlan {
    config: LoopConfig,
    layout: Layout,
    command: Vec<String>,
    store: StoreSpec,
    /// The pooled-vector cache local embedding jobs share (`<work_dir>/cache/pooled`).
    local_cache: Option<PathBuf>,
}

impl JobPlan {
    /// Jobs for `config` running `command` (the `ragloop` program, program first) against
    /// `store`.
    pub fn new(config: &LoopConfig, command: Vec<String>, store: StoreSpec) -> Self {
        let local_cache = (config.jobs.backend == JobsBackend::Local)
            .then(|| absolute(&config.work_dir.join("cache/pooled")).ok())
            .flatten();
        Self {
            layout: Layout::new(config.root.clone()),
            config: config.clone(),
            command,
            store,
            local_cache,
        }
    }

    /// The store every job opens.
    pub fn store(&self) -> &StoreSpec {
        &self.store
    }

    /// A spec running `ragloop <args…>`, with the store description and inputs.
    fn spec(&self, name: String, kind: JobKind, args: Vec<String>, output: StoreUri) -> JobSpec {
        let mut command = self.command.clone();
        command.extend(args);
        JobSpec::new(name, kind, command, output)
            .with_input("data", self.layout.raw_docs())
            .with_env(StoreSpec::ENV, self.store.to_json())
    }

    /// A model location as a job sees it: store URIs and pretrained names as they are, local
    /// paths absolute.
    fn job_path(location: &str) -> String {
        if crate::embed::pretrained(location).is_some() {
            return location.to_string();
        }
        match location.parse::<StoreUri>() {
            Ok(uri) => uri.to_string(),
            Err(_) => absolute(Path::new(location))
                .unwrap_or_else(|_| PathBuf::from(location))
                .display()
                .to_string(),
        }
    }

    /// `--quantize int8` when the loop's encoder runs in int8 (jobs encode as stage 5 does),
    /// and `--device` when the configuration names one (`auto`, the default, is the jobs'
    /// default too: a GPU node's job finds its GPU).
    fn quantize_args(&self, args: &mut Vec<String>) {
        let q = self.config.embedding.quantize;
        if q != embed_runtime::Quantization::None {
            args.extend(["--quantize".into(), q.to_string()]);
        }
        let d = self.config.embedding.device;
        if d != embed_runtime::DeviceChoice::Auto {
            args.extend(["--device".into(), d.to_string()]);
        }
    }

    /// What both trainers of stage 2 are told alike: the pooled-vector cache a job on this
    /// machine shares with stage 5 (the chunks it embeds to train are the ones stage 5
    /// embeds), the index's analyzer, the encoder's quantisation, and the queries' train split
    /// when there is one (then nothing is mined).
    fn trainer_args(&self, args: &mut Vec<String>, queries: Option<&Path>) {
        if let Some(cache) = &self.local_cache {
            args.extend(["--cache".into(), cache.display().to_string()]);
        }
        args.extend(["--analyzer".into(), self.config.index.analyzer.to_string()]);
        self.quantize_args(args);
        if let Some(q) = queries {
            args.extend([
                "--queries".into(),
                Self::job_path(&q.display().to_string()),
                "--queries-split".into(),
                "train".into(),
                "--mine".into(),
                "none".into(),
            ]);
        }
    }

    /// Stage 2's job, if the configuration trains.
    pub fn training(&self) -> Option<JobSpec> {
        let e = &self.config.embedding;
        let output = self.config.model_output();
        let mut args: Vec<String> = vec![
            "train".into(),
            "--data".into(),
            self.layout.raw_docs().to_string(),
            "--output".into(),
            output.to_string(),
        ];
        match (e.kind(), e.training()) {
            (_, Training::None) | (ModelKind::Bailian(_), _) => None,
            (ModelKind::Hashed, _) => {
                args.extend(["--dims".into(), e.dims.to_string()]);
                Some(
                    self.spec("emb-train".into(), JobKind::EmbeddingFineTune, args, output)
                        .with_hyper_parameter("dims", e.dims),
                )
            }
            (ModelKind::Sentence(base), mode) => {
                let queries = self.training_queries();
                let synthetic = self.synthetic(queries.is_none());
                if self.mined_pairs_only(queries, synthetic.as_ref()) {
                    return None;
                }
                let mode = if mode == Training::Full {
                    "full"
                } else {
                    "adapter"
                };
                self.trainer_args(&mut args, queries);
                if let Some(s) = &synthetic {
                    args.extend([
                        "--synthetic".into(),
                        s.questions.to_string(),
                        "--synthetic-docs".into(),
                        s.documents.to_string(),
                        "--synthetic-tokens".into(),
                        s.tokens.to_string(),
                    ]);
                }
                let mut spec = self
                    .spec(
                        format!("{}-train", e.name),
                        JobKind::EmbeddingFineTune,
                        args,
                        output,
                    )
                    .with_base_model(Self::job_path(&base))
                    .with_hyper_parameter("mode", mode);
                // The job finds the LLM the way `ragloop train --synthetic` does (`llm_env`):
                // where and which model from these; the key from its own environment.
                if let Some(s) = synthetic {
                    for (name, value) in s.env {
                        spec = spec.with_env(name, value);
                    }
                }
                Some(spec)
            }
        }
    }

    /// Stage 2's second job, with `[rerank] backend = "local"` and no `model`: a cross-encoder
    /// trained from the embedding model's encoder (`ragloop train --reranker`) on the queries'
    /// train split (else pairs mined from the documents), its hard negatives mined by the base
    /// bi-encoder over the chunks stage 5 embeds (the same pooled-vector cache), written to
    /// [`LoopConfig::reranker_output`].
    pub fn reranker_training(&self) -> Option<JobSpec> {
        let output = self.config.reranker_output()?;
        let ModelKind::Sentence(base) = self.config.embedding.kind() else {
            return None;
        };
        let mut args: Vec<String> = vec![
            "train".into(),
            "--reranker".into(),
            "--data".into(),
            self.layout.raw_docs().to_string(),
            "--output".into(),
            output.to_string(),
        ];
        self.trainer_args(&mut args, self.training_queries());
        Some(
            self.spec(
                format!("{}-reranker-train", self.config.embedding.name),
                JobKind::EmbeddingFineTune,
                args,
                output,
            )
            .with_base_model(Self::job_path(&base)),
        )
    }

    /// Why stage 2 trains nothing although the model could be trained: `embedding.train` is
    /// left to its default and there is nothing to train on but pairs mined from the documents
    /// (no train split of labelled queries, no LLM to write questions). Adapters trained on
    /// mined pairs alone lowered dense retrieval on held-out real queries (BENCHMARKS.md: 3.3
    /// nDCG@10 points on the man pages' test split, 1.1 on their train split), so by default
    /// the loop serves the base model rather than a worse one; `train = "adapter"` or `"full"`
    /// trains on the mined pairs all the same.
    pub fn training_skipped(&self) -> Option<String> {
        let queries = self.training_queries();
        let skipped = self.mined_pairs_only(queries, self.synthetic(queries.is_none()).as_ref());
        skipped.then(|| {
            format!(
                "skipped: nothing to train on but pairs mined from the documents (no train split in \
                 eval.queries, no [llm] to write questions), which made retrieval worse on held-out \
                 queries; {} is used as it is (embedding.train = \"adapter\" trains on them anyway)",
                self.config.embedding.model
            )
        })
    }

    /// Whether stage 2 would train a sentence-transformers model, by default, on nothing but
    /// mined pairs ([`training_skipped`](Self::training_skipped)).
    fn mined_pairs_only(&self, queries: Option<&Path>, synthetic: Option<&SyntheticPlan>) -> bool {
        let e = &self.config.embedding;
        matches!(e.kind(), ModelKind::Sentence(_))
            && e.train.is_none()
            && queries.is_none()
            && synthetic.is_none()
    }

    /// The query set whose train split stage 2 trains on: when the evaluated split is another
    /// and the set is a local file a job on this machine reads.
    fn training_queries(&self) -> Option<&Path> {
        self.config.queries().filter(|q| {
            self.config.eval.split != "train"
                && self.store.local_root().is_some()
                && crate::queries::read_queries(q, Some("train")).is_ok_and(|v| !v.is_empty())
        })
    }

    /// Stage 2's synthetic questions, if it trains a sentence-transformers model: see
    /// [`synthetic`](Self::synthetic).
    pub fn training_synthetic(&self) -> Option<SyntheticPlan> {
        let e = &self.config.embedding;
        match (e.kind(), e.training()) {
            (ModelKind::Sentence(_), t) if t != Training::None => {
                self.synthetic(self.training_queries().is_none())
            }
            _ => None,
        }
    }

    /// Stage 2's synthetic questions, when `[llm]` is an LLM and `embedding.synthetic` (by
    /// default: training from raw documents alone) asks for them.
    pub fn synthetic(&self, from_raw_documents: bool) -> Option<SyntheticPlan> {
        let e = &self.config.embedding;
        let llm = &self.config.llm;
        let model = match llm.backend {
            LlmBackend::Extractive => return None,
            LlmBackend::Bailian => llm.model.clone().unwrap_or_else(|| "qwen-plus".into()),
            LlmBackend::Openai => llm.model.clone()?,
        };
        let questions = e
            .synthetic
            .unwrap_or(if from_raw_documents { 2 } else { 0 });
        if questions == 0 {
            return None;
        }
        let mut env = vec![("RAGLOOP_LLM_MODEL".to_string(), model.clone())];
        match llm.backend {
            LlmBackend::Openai => env.push((
                "RAGLOOP_LLM_BASE_URL".into(),
                llm.base_url.clone().unwrap_or_default(),
            )),
            _ => {
                if let Some(r) = &llm.region {
                    env.push(("DASHSCOPE_REGION".into(), r.clone()));
                }
            }
        }
        Some(SyntheticPlan {
            questions,
            documents: e.synthetic_docs,
            tokens: e.synthetic_tokens,
            model: format!("{:?} {model}", llm.backend).to_lowercase(),
            env,
        })
    }

    /// Stage 3's job, when `[llm_fine_tune]` is on.
    pub fn llm_fine_tune(&self) -> Option<JobSpec> {
        let f = &self.config.llm_fine_tune;
        if f.backend == LlmFineTuneBackend::None {
            return None;
        }
        let name = f.name.clone().unwrap_or_else(|| "llm-ft".into());
        let output = self.layout.model(&name);
        let data = self.layout.qa_pairs();
        let base = f.base_model.clone().unwrap_or_default();
        let mut command = f.command.clone().unwrap_or_default();
        if !command.is_empty() {
            command.extend([
                "--data".into(),
                data.to_string(),
                "--output".into(),
                output.to_string(),
                "--base-model".into(),
                base.clone(),
            ]);
        }
        let mut spec = JobSpec::new(&name, JobKind::LlmFineTune, command, output)
            .with_input("data", data)
            .with_base_model(base)
            .with_env(StoreSpec::ENV, self.store.to_json());
        spec.framework = Framework::DeepSpeed;
        for (k, v) in &f.hyper_parameters {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            spec = spec.with_hyper_parameter(k, v);
        }
        Some(spec)
    }

    /// Stage 5's `embedding.workers` jobs embedding the model at `model` (a local directory
    /// or a store prefix) into `shards`. Job `i` of `n` writes its `_SUCCESS` under
    /// `shards/_jobs/<corpus>/worker-<i>-of-<n>/`: `corpus` fingerprints the documents, so
    /// a rerun over the same corpus skips the workers that finished and a changed corpus
    /// runs them all again.
    pub fn embedding_workers(&self, model: &str, shards: &StoreUri, corpus: &str) -> Vec<JobSpec> {
        let n = self.config.embedding.workers;
        (0..n)
            .map(|i| {
                let done = shards
                    .join(&format!("_jobs/{corpus}/worker-{}-of-{n}/", i + 1))
                    .unwrap_or_else(|_| shards.clone());
                let mut args = vec![
                    "embed".into(),
                    "--model".into(),
                    Self::job_path(model),
                    "--input".into(),
                    self.layout.raw_docs().to_string(),
                    "--output".into(),
                    shards.to_string(),
                    "--worker".into(),
                    i.to_string(),
                    "--workers".into(),
                    n.to_string(),
                    "--done".into(),
                    done.to_string(),
                ];
                // Workers on this machine share the loop's pooled-vector cache.
                if let Some(cache) = &self.local_cache {
                    args.extend(["--cache".into(), cache.display().to_string()]);
                }
                self.quantize_args(&mut args);
                self.spec(
                    format!("embed-{}-of-{n}", i + 1),
                    JobKind::Script,
                    args,
                    done,
                )
            })
            .collect()
    }
}
