//! `ragloop train --reranker`: fine-tunes a cross-encoder on the domain, initialised from the
//! base model's encoder (`--base-model`, e.g. the bi-encoder the loop embeds with). Each
//! training query's positive is its document's chunk the base bi-encoder ranks highest (the
//! passage retrieval returns) and its hard negatives are other documents' chunks the
//! bi-encoder ranks high, without the likely false negatives ([`super::passages::prepare`]);
//! the loss is listwise over (positive, negatives, in-batch fill-ins). Writes a cross-encoder
//! directory that embed-runtime and sentence-transformers load, a report and `_SUCCESS`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::{HardOptions, MiningReport};
use embed_runtime::train::pairs::{self, Negative, Pair};
use embed_runtime::train::{CrossEncoderTrainer, CrossTrainConfig, TrainReport};
use serde::Serialize;

use super::{StepProgress, TrainArgs, gather_pairs, job_progress, publish};

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
    let prepared =
        super::passages::prepare(&base, &docs, &train, &options, job_progress(args.json))?;
    drop(base);
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

    let summary = RerankerSummary {
        base_model: base_arg,
        output: output.to_string(),
        documents: docs.len(),
        train_pairs: pairs.len(),
        held_out_pairs: held.len(),
        chunks: prepared.report.chunks,
        mining: prepared.report.mining.clone(),
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
        s.output,
        s.seconds
    )
}
