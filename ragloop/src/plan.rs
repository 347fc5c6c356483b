//! `--dry-run`: what `ragloop run` will do with a configuration — each stage's backend, the
//! exact job commands and the report's rows — with no call made and no credential needed.

use anyhow::Result;
use rag_core::Stage;
use rag_core::pipeline::Layout;

use crate::backends::{job_command, store_spec};
use crate::config::{DeployBackend, JobsBackend, LoopConfig, RerankBackend, StoreBackend};
use crate::jobs::JobPlan;

/// The plan as text, one line per stage. `local_command` is the program local jobs run.
pub fn plan(config: &LoopConfig, local_command: Vec<String>) -> Result<String> {
    config.validate()?;
    let layout = Layout::new(config.root.clone());
    let program = crate::backends::image_free(config, &local_command)?;
    let command = match (&program, &config.jobs.command) {
        (Some(p), None) => p.command(),
        _ => job_command(config, local_command),
    };
    let jobs = JobPlan::new(config, command, store_spec(config)?);
    let store = match config.store.backend {
        StoreBackend::Local => format!(
            "local files under {}",
            config.work_dir.join("store").display()
        ),
        StoreBackend::Oss => format!(
            "OSS ({})",
            config
                .store
                .endpoint
                .clone()
                .or(config.store.region.clone())
                .unwrap_or_else(|| "cn-hangzhou".into())
        ),
    };
    let runs_jobs = match config.jobs.backend {
        JobsBackend::Local => "local processes".to_string(),
        JobsBackend::Pai => format!(
            "PAI-DLC workspace {}",
            config
                .jobs
                .workspace_id
                .as_deref()
                .unwrap_or("$PAI_WORKSPACE_ID")
        ),
    };
    let mut out = format!(
        "Plan for {} (store: {store}; jobs: {runs_jobs})\n",
        layout.root()
    );
    if let Some(p) = &program {
        let region = crate::backends::pai_region(config);
        out.push_str(&format!(
            "  image-free jobs: {} ({} bytes{}) → {} (uploaded once), mounted at {} in {}\n",
            p.path.display(),
            p.size,
            p.glibc
                .map(|(a, b)| format!(", needs glibc {a}.{b}"))
                .unwrap_or_default(),
            p.uri,
            crate::program::MOUNT,
            config
                .jobs
                .base_image
                .clone()
                .unwrap_or_else(|| crate::program::stock_image(&region))
        ));
    }
    let mut stage =
        |s: Stage, what: String| out.push_str(&format!("  {:<20} {what}\n", s.to_string()));
    stage(
        Stage::Ingest,
        format!("{} → {}", config.data.display(), layout.raw_docs()),
    );
    let training = jobs.training();
    let mut train_line = match &training {
        Some(spec) => format!(
            "job {}{} → {}: {}",
            spec.name,
            match (&spec.base_model, spec.hyper_parameters.get("mode")) {
                (Some(base), Some(mode)) => format!(" ({mode} on {base})"),
                _ => String::new(),
            },
            spec.output,
            spec.command.join(" ")
        ),
        None => match jobs.training_skipped() {
            Some(why) => format!("none — {why}"),
            None => format!("none ({} as it is)", config.embedding.model),
        },
    };
    if let Some(s) = jobs.training_synthetic() {
        train_line.push_str(&format!(
            "\n  {:<20} synthetic questions from {}: {} per document, at most {} documents and {} tokens ([embedding] synthetic, synthetic_docs, synthetic_tokens)",
            "", s.model, s.questions, s.documents, s.tokens
        ));
    }
    if let Some(spec) = jobs.reranker_training() {
        train_line.push_str(&format!(
            "\n  {:<20} job {} (cross-encoder on {}) → {}: {}",
            "",
            spec.name,
            spec.base_model.as_deref().unwrap_or_default(),
            spec.output,
            spec.command.join(" ")
        ));
    }
    stage(Stage::TrainEmbeddings, train_line);
    stage(
        Stage::FineTuneLlm,
        match jobs.llm_fine_tune() {
            Some(spec) => format!(
                "{:?} fine-tune of {} on {} → {}",
                config.llm_fine_tune.backend,
                spec.base_model.as_deref().unwrap_or("?"),
                layout.qa_pairs(),
                spec.output
            ),
            None => "skipped".into(),
        },
    );
    stage(
        Stage::Deploy,
        match config.deploy.backend {
            DeployBackend::None => "skipped".into(),
            DeployBackend::Bailian => format!(
                "Bailian deployment, plan {}, {} instance(s) × the model's base capacity (GET /deployments/models), waits until it serves",
                config.deploy.plan.as_deref().unwrap_or("compute"),
                config.deploy.capacity.unwrap_or(1)
            ),
            b => format!("{b:?} deployment, waits until it serves"),
        },
    );
    let served = training
        .as_ref()
        .map_or(config.embedding.model.clone(), |s| s.output.to_string());
    let shards = layout
        .root()
        .as_prefix()
        .join("vector-indexes/<model id>/")
        .map_or_else(|_| String::new(), |u| u.to_string());
    stage(
        Stage::Embed,
        if config.embedding.workers == 0 {
            format!("in this process with {served} → {shards}")
        } else {
            let specs =
                jobs.embedding_workers(&served, &layout.vector_shards("MODEL_ID"), "CORPUS");
            format!(
                "{} jobs, e.g. {}",
                specs.len(),
                specs
                    .first()
                    .map_or_else(String::new, |s| s.command.join(" "))
            )
        },
    );
    let base_too = training.is_some()
        && config.queries().is_some()
        && config
            .retrievers()
            .iter()
            .any(|r| r.to_string().ends_with(":base"));
    stage(
        Stage::Index,
        format!(
            "{:?} index {:?}, BM25 with the {} analyzer{}",
            config.index.backend,
            config.index.name,
            match &config.index.cluster_analyzer {
                Some(name) => format!("cluster's {name}"),
                None => config.index.analyzer.to_string(),
            },
            if base_too {
                format!(
                    " (and {:?} for the base model {}, for the report)",
                    format!("{}-base", config.index.name),
                    config.embedding.model
                )
            } else {
                String::new()
            }
        ),
    );
    let r = &config.rerank;
    let rerank = match r.backend {
        RerankBackend::None => String::new(),
        backend => format!(
            ", its top {} fused candidates reranked by {} ({}; weight {})",
            r.candidates,
            match (&r.model, config.reranker_output()) {
                (Some(m), _) => m.clone(),
                (None, Some(trained)) => format!("the cross-encoder stage 2 trains, {trained}"),
                (None, None) => "gte-rerank-v2".into(),
            },
            match backend {
                RerankBackend::Bailian => "Bailian",
                _ => "local",
            },
            r.weight
                .map_or_else(|| "as its training chose, else 1".into(), |w| w.to_string())
        ),
    };
    stage(
        Stage::Answer,
        format!(
            "{:?} LLM{}, top {} chunks, hybrid retrieval{rerank}",
            config.llm.backend,
            config
                .llm
                .model
                .as_ref()
                .map_or_else(String::new, |m| format!(" {m}")),
            config.index.top_k
        ),
    );
    match config.queries() {
        Some(q) => out.push_str(&format!(
            "  {:<20} {}{} on the {:?} split of {}\n",
            "report",
            config
                .retrievers()
                .iter()
                .map(ToString::to_string)
                // Without training a base row is the served one, reported once.
                .filter(|r| training.is_some() || !r.ends_with(":base"))
                .collect::<Vec<_>>()
                .join(", "),
            if r.backend == RerankBackend::None {
                ""
            } else {
                " (hybrid also reranked)"
            },
            config.eval.split,
            q.display()
        )),
        None => out.push_str(&format!("  {:<20} no query set: no evaluation\n", "report")),
    }
    Ok(out)
}
