//! `ragloop train --reranker`: fine-tunes a cross-encoder on the domain, initialised from the
//! base model's encoder (`--base-model`, e.g. the bi-encoder the loop embeds with). Each
//! training query's positive is its document's chunk the base bi-encoder ranks highest (the
//! passage retrieval returns) and its hard negatives are other documents' chunks the
//! bi-encoder ranks high, without the likely false negatives ([`super::passages::prepare`]);
//! the loss is listwise over (positive, negatives, in-batch fill-ins). Writes a cross-encoder
//! directory that embed-runtime and sentence-transformers load, a report and `_SUCCESS`.
//!
//! It also chooses how much the reranker's order should count against the search's
//! (`rag_core::rerank::blend`), on the held-out queries (never trained on): each is searched
//! over every chunk as the loop's hybrid search does it with the base model (dense and BM25
//! lists fused by RRF), its top [`CANDIDATES`] reranked, and the weight of [`WEIGHTS`] with
//! the best document-level nDCG@10 is saved as `rerank.json` beside the model. With fewer than
//! [`super::fusion::MIN_HELD_OUT`] held-out queries it is the prior, equal weights ([`PRIOR`]).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::{HardOptions, MiningReport};
use embed_runtime::train::pairs::{self, Negative, Pair};
use embed_runtime::train::{CrossEncoderTrainer, CrossTrainConfig, TrainReport};
use serde::Serialize;

use super::passages::{self as passages, Prepared};
use super::{StepProgress, TrainArgs, gather_pairs, job_progress, publish};
use crate::evaluation::RerankChoice;

/// The reranker weights the job compares.
pub const WEIGHTS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
/// The weight without enough held-out queries to choose on (and the winner of ties): both
/// orders count equally, as reciprocal-rank fusion weighs its lists.
pub const PRIOR: f32 = 0.5;
/// Fused candidates reranked per held-out query (`[rerank] candidates`' default).
pub const CANDIDATES: usize = 50;

/// What `ragloop train --reranker` did.
#[derive(Debug, Clone, Serialize)]
pub struct RerankerSummary {
    /// The encoder it started from.
    pub base_model: String,
    /// Where the cross-encoder was written.
    pub output: String,
    /// Documents read.
    pub documents: usize,
    /// Training pairs (queries with a positive chunk).
    pub train_pairs: usize,
    /// Pairs held out.
    pub held_out_pairs: usize,
    /// Chunks the candidates came from.
    pub chunks: usize,
    /// Positives and hard negatives mined by the base bi-encoder.
    pub mining: MiningReport,
    /// How much the reranker's order counts against the search's (saved as `rerank.json`).
    pub weight: RerankChoice,
    /// Hyper-parameters.
    pub config: CrossTrainConfig,
    /// Loss per step and timings.
    pub report: TrainReport,
    /// Wall time of the whole job.
    pub seconds: f64,
}

/// Runs the job; prints a summary (or JSON) on stdout.
pub async fn run(args: &TrainArgs) -> Result<()> {
    let summary = train(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    Ok(())
}

async fn train(args: &TrainArgs) -> Result<RerankerSummary> {
    let started = Instant::now();
    let base_arg = args
        .base_model
        .clone()
        .context("--reranker needs --base-model: the encoder the cross-encoder starts from")?;
    let (dst, output) = args.store.locate(&args.output)?;
    let output = output.as_prefix();
    let base_dir = crate::embed::fetch_model_dir(&base_arg, &args.model_cache, &args.store).await?;
    let docs = super::read_documents(args).await?;
    let (all, _, _) = gather_pairs(args, &docs).await?;
    let (train, held) = pairs::hold_out(all, args.hold_out);
    if train.len() < 2 {
        bail!(
            "only {} training pairs: add --queries, --pairs or documents to mine",
            train.len()
        );
    }

    // Positives and hard negatives among the chunks, by the base bi-encoder.
    let base = SentenceEmbedder::load_with(
        &base_dir,
        embed_runtime::EmbedderOptions {
            cache_dir: args.cache.clone(),
            quantize: args.quantize,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", base_dir.display()))?;
    let options = HardOptions {
        negatives: args.negatives.unwrap_or(3),
        max_ratio: args.negative_ratio,
        ..HardOptions::default()
    };
    let prepared = passages::prepare(&base, &docs, &train, &options, job_progress(args.json))?;
    let doc_id = |chunk: usize| {
        docs.get(prepared.chunk_docs[chunk] as usize)
            .map_or(String::new(), |d| d.id.clone())
    };
    let (pairs, negatives): (Vec<Pair>, Vec<Vec<Negative>>) = prepared
        .pairs
        .iter()
        .map(|p| {
            let pair = Pair {
                query: prepared.query_texts[p.query].clone(),
                passage: prepared.texts[p.positive].clone(),
                doc_id: doc_id(p.positive),
                origin: pairs::PairOrigin::Query,
            };
            let negs = p
                .negatives
                .iter()
                .map(|&n| Negative {
                    passage: prepared.texts[n].clone(),
                    doc_id: doc_id(n),
                    margin: None,
                })
                .collect();
            (pair, negs)
        })
        .unzip();

    let defaults = CrossTrainConfig::default();
    let config = CrossTrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        group_size: options.negatives.max(1) + 1,
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        warmup_ratio: args.warmup_ratio,
        max_tokens: args.max_passage_tokens.unwrap_or(defaults.max_tokens),
        dropout: args.dropout,
        seed: args.seed,
        max_steps: args.max_steps,
        ..defaults
    };
    let mut trainer = CrossEncoderTrainer::load(&base_dir, args.seed)
        .with_context(|| format!("loading {} for training", base_dir.display()))?;
    let mut shown = StepProgress::new(args.json);
    let bar = shown.bar.clone();
    let report = trainer.train(&pairs, &negatives, &config, &mut |s| shown.step(s))?;
    bar.finish_and_clear();
    let out_dir = tempfile::tempdir()?;
    trainer.save(out_dir.path(), config.max_tokens)?;
    drop(trainer);
    bar.set_message("choosing the reranker's weight on the held-out queries");
    let model = embed_runtime::CrossEncoder::load(out_dir.path())
        .context("loading the trained cross-encoder")?;
    let weight = choose_weight(&model, &base, &prepared, &held, &docs, args.analyzer)?;
    tracing::info!(weight = weight.weight, reason = %weight.reason, "reranker weight");
    std::fs::write(
        out_dir.path().join(RerankChoice::FILE),
        serde_json::to_vec_pretty(&weight)?,
    )?;

    let summary = RerankerSummary {
        base_model: base_arg,
        output: output.to_string(),
        documents: docs.len(),
        train_pairs: pairs.len(),
        held_out_pairs: held.len(),
        chunks: prepared.report.chunks,
        mining: prepared.report.mining.clone(),
        weight,
        config,
        report,
        seconds: started.elapsed().as_secs_f64(),
    };
    publish(
        dst.as_ref(),
        out_dir.path(),
        &output,
        &summary,
        render(&summary),
    )
    .await?;
    Ok(summary)
}

/// The reranker's weight against the search's order (see the module docs).
fn choose_weight(
    model: &embed_runtime::CrossEncoder,
    base: &SentenceEmbedder,
    prepared: &Prepared,
    held: &[Pair],
    docs: &[rag_core::Document],
    analyzer: rag_core::Analyzer,
) -> Result<RerankChoice> {
    let (texts, relevant) = passages::queries_of(held, docs);
    if texts.len() < super::fusion::MIN_HELD_OUT {
        return Ok(RerankChoice {
            weight: PRIOR,
            reason: format!(
                "the prior (equal weights): {} held-out queries, fewer than {} to choose on",
                texts.len(),
                super::fusion::MIN_HELD_OUT
            ),
        });
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let queries = passages::normalized(&base.embed_unnormalized(&refs, true)?);
    let chunks = passages::normalized(&prepared.chunks);
    let lists = super::fusion::Lists::new(&prepared.texts, &prepared.chunk_docs, analyzer);
    let request = rag_core::SearchRequest::new(rag_core::Query::Text(String::new()), CANDIDATES);
    let mut accs: Vec<rag_core::eval::MetricsAccumulator> =
        WEIGHTS.iter().map(|_| Default::default()).collect();
    for ((q, text), rel) in queries.iter().zip(&texts).zip(&relevant) {
        let Some((dense, lexical, rel)) = lists.candidates(q, &chunks, text, rel) else {
            continue;
        };
        let hits: Vec<usize> = rag_core::fuse(&request, dense, lexical)
            .iter()
            .filter_map(|h| h.id.parse().ok())
            .collect();
        let pairs: Vec<(&str, &str)> = hits
            .iter()
            .map(|&c| (text.as_str(), prepared.texts[c].as_str()))
            .collect();
        let order = rag_core::rerank::ranked(&model.predict(&pairs)?, hits.len());
        for (acc, &w) in accs.iter_mut().zip(&WEIGHTS) {
            let ranked: Vec<String> = rag_core::rerank::blend(&order, w)
                .iter()
                .map(|s| prepared.chunk_docs[hits[s.index]].to_string())
                .collect();
            acc.add(&ranked, &rel);
        }
    }
    let scores: Vec<f64> = accs.into_iter().map(|a| a.finish().ndcg_at_10).collect();
    // The best weight; ties go to the one nearest the prior.
    let best = (0..WEIGHTS.len())
        .min_by(|&a, &b| {
            scores[b].total_cmp(&scores[a]).then(
                (WEIGHTS[a] - PRIOR)
                    .abs()
                    .total_cmp(&(WEIGHTS[b] - PRIOR).abs()),
            )
        })
        .unwrap_or(0);
    let table: Vec<String> = WEIGHTS
        .iter()
        .zip(&scores)
        .map(|(w, s)| format!("{w}: {s:.3}"))
        .collect();
    Ok(RerankChoice {
        weight: WEIGHTS[best],
        reason: format!(
            "chosen on {} held-out queries (hybrid RRF search with the base model, top {CANDIDATES} reranked), nDCG@10 by weight {}",
            texts.len(),
            table.join(", ")
        ),
    })
}

/// The human summary (also `training-report.md` beside the model).
pub fn render(s: &RerankerSummary) -> String {
    let steps = &s.report.steps;
    let first = steps.first().map_or(f64::NAN, |x| x.loss);
    let last = steps.last().map_or(f64::NAN, |x| x.loss);
    format!(
        "# Cross-encoder reranker\n\n\
         - from {} on {} documents ({} chunks)\n\
         - {} training queries ({} held out), {} hard negatives kept, {} dropped as likely false negatives\n\
         - {} steps of {} groups × {} pairs, loss {first:.4} → {last:.4}, {:.1} s/step\n\
         - reranker weight against the search's order: {} ({})\n\
         - written to {} in {:.0} s\n",
        s.base_model,
        s.documents,
        s.chunks,
        s.train_pairs,
        s.held_out_pairs,
        s.mining.negatives,
        s.mining.dropped_false_negatives,
        steps.len(),
        s.config.batch_size,
        s.config.group_size,
        s.report.mean_step_seconds(),
        s.weight.weight,
        s.weight.reason,
        s.output,
        s.seconds
    )
}
