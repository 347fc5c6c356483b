//! The seed's seven stages and how long ones report progress.

use serde::Serialize;

/// The seed's seven stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Stage {
    /// 1: local documents to `raw-docs/`.
    Ingest,
    /// 2: embedding model training job.
    TrainEmbeddings,
    /// 3: LLM fine-tuning job.
    FineTuneLlm,
    /// 4: serving the fine-tuned LLM.
    Deploy,
    /// 5: batch embedding to Parquet.
    Embed,
    /// 6: loading vectors into the index.
    Index,
    /// 7: retrieval and grounded answering.
    Answer,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Self::Ingest,
        Self::TrainEmbeddings,
        Self::FineTuneLlm,
        Self::Deploy,
        Self::Embed,
        Self::Index,
        Self::Answer,
    ];

    /// The seed's step number.
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::TrainEmbeddings => "train-embeddings",
            Self::FineTuneLlm => "fine-tune-llm",
            Self::Deploy => "deploy",
            Self::Embed => "embed",
            Self::Index => "index",
            Self::Answer => "answer",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. {}", self.number(), self.name())
    }
}

/// Receives progress of long stages (a CLI draws bars; a service might export metrics).
pub trait Progress: Send + Sync {
    /// A stage starts with `total` units of work, when known.
    fn begin(&self, stage: Stage, total: Option<u64>);
    /// `n` more units are done.
    fn advance(&self, stage: Stage, n: u64);
    /// The stage ended; `summary` says what it did.
    fn end(&self, stage: Stage, summary: &str);
    /// A line of news from the stage's work elsewhere (the newest line of a running job's
    /// log). Ignored unless implemented.
    fn note(&self, stage: Stage, line: &str) {
        let _ = (stage, line);
    }
}

/// A [`Progress`] that logs stage starts and ends through `tracing` and nothing else.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        tracing::info!(%stage, ?total, "stage started");
    }
    fn advance(&self, _: Stage, _: u64) {}
    fn end(&self, stage: Stage, summary: &str) {
        tracing::info!(%stage, summary, "stage ended");
    }
    fn note(&self, stage: Stage, line: &str) {
        tracing::info!(%stage, line, "job");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_numbered_as_the_seed_does() {
        let numbers: Vec<u8> = Stage::ALL.iter().map(|s| s.number()).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Stage::Embed.to_string(), "5. embed");
    }
}
