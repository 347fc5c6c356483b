//! XLM-RoBERTa (multilingual-e5, bge-m3's encoder, bge-reranker) against transformers and
//! sentence-transformers. No real XLM-R weights can be fetched here, so
//! `tests/fixtures/tiny-xlmr` and `tiny-xlmr-cross-encoder` are small randomly initialised
//! models with a Unigram (SentencePiece) tokenizer, saved by sentence-transformers 6.2 (its
//! newer directory layout) with the outputs it computes (`scripts/xlmr_fixture.py`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/parity.rs"]
mod parity;
use parity::{check_cross_encoder, check_embeddings, check_fine_tuning, fixture};

use embed_runtime::{Pooling, SentenceEmbedder};

#[test]
fn embeddings_match_sentence_transformers() {
    let model = check_embeddings(&fixture("tiny-xlmr"), 1e-4);
    // sentence-transformers 6's layout: `pooling_mode`, `embedding_dimension`, the length
    // in the tokenizer's `model_max_length`.
    let layout = model.layout();
    assert_eq!(
        (layout.pooling, layout.normalize, layout.dims),
        (Pooling::Mean, true, 32)
    );
}

#[tokio::test]
async fn the_xlmr_embedder_passes_the_embedding_conformance_suite() {
    let model = SentenceEmbedder::load(&fixture("tiny-xlmr")).unwrap();
    // What any model passes; "related texts are closer" needs trained weights.
    use rag_core::conformance::embedding as suite;
    suite::shapes_and_order(&model).await;
    suite::edge_inputs(&model).await;
    suite::batch_matches_single(&model).await;
}

#[test]
fn cross_encoder_scores_match_sentence_transformers_and_it_trains() {
    check_cross_encoder(
        &fixture("tiny-xlmr-cross-encoder"),
        "XLMRobertaForSequenceClassification",
    );
}

#[test]
fn the_trainer_fine_tunes_xlmr_and_the_result_loads() {
    check_fine_tuning(&fixture("tiny-xlmr"));
}
