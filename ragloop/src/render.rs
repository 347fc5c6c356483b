//! What the terminal shows: the per-stage lines, the retrieval table and the answer with its
//! citations.

use rag_core::pipeline::Answer;

use crate::evaluation::MetricsRow;
use crate::runner::{LoopSummary, MAX_LISTED, StageLine};

/// The summary as the terminal shows it.
pub fn render(summary: &LoopSummary) -> String {
    let mut out = render_stages(&summary.stages);
    out.push_str(&render_evaluation(&summary.evaluation));
    out.push_str(&render_answer(&summary.answer));
    if let Some(r) = &summary.report {
        out.push_str(&format!(
            "\nReport: {} (chart: {})\n",
            r.display(),
            r.with_extension("png").display()
        ));
    }
    out.push_str(&format!(
        "\nTotal {:.1}s, {} LLM tokens\n",
        summary.seconds, summary.total_tokens
    ));
    out
}

/// The per-stage lines: wall time, LLM tokens (when any) and what happened.
pub fn render_stages(stages: &[StageLine]) -> String {
    let mut out = String::from("\nStages\n");
    for s in stages {
        let tokens = if s.tokens > 0 {
            format!("{:>6} tok", s.tokens)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<20} {:>7.1}s {:>10}  {}\n",
            s.stage.to_string(),
            s.seconds,
            tokens,
            s.summary
        ));
        let failed = s
            .failed
            .iter()
            .take(MAX_LISTED)
            .map(|f| format!("FAILED {f}"));
        let more = (s.failed.len() > MAX_LISTED)
            .then(|| format!("… and {} more FAILED", s.failed.len() - MAX_LISTED));
        for d in s.details.iter().cloned().chain(failed).chain(more) {
            out.push_str(&format!("  {:<20} {:>8} {:>10}    {d}\n", "", "", ""));
        }
    }
    out
}

/// The retrieval table (empty when nothing was evaluated).
pub fn render_evaluation(rows: &[MetricsRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut out = format!(
        "\nRetrieval on {} held-out queries (document level)\n",
        first.metrics.queries
    );
    out.push_str("  | retriever | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n");
    out.push_str("  |---|---|---|---|---|---|\n");
    for r in rows {
        let m = r.metrics;
        out.push_str(&format!(
            "  | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.retriever, m.hit_at_1, m.hit_at_5, m.hit_at_10, m.mrr_at_10, m.ndcg_at_10
        ));
    }
    out
}

/// The question, the answer and its citations (chunk id, source, page and section when known,
/// byte offsets).
pub fn render_answer(a: &Answer) -> String {
    let mut out = format!("\nQ: {}\nA: {}\n", a.question, a.text);
    for c in &a.citations {
        let place = c.place();
        let place = if place.is_empty() {
            place
        } else {
            format!(" {place}")
        };
        out.push_str(&format!(
            "  [{}] {}{place} (bytes {}..{})\n",
            c.chunk_id, c.source, c.start, c.end
        ));
    }
    out.push_str(&format!(
        "  retrieval {:.1} ms, generation {:.1} ms, {} prompt + {} completion tokens\n",
        a.retrieval_time.as_secs_f64() * 1e3,
        a.generation_time.as_secs_f64() * 1e3,
        a.usage.prompt_tokens,
        a.usage.completion_tokens
    ));
    out
}
