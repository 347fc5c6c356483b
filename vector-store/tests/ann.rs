//! The embedded ANN index: conformance, recall against exact search (plain and filtered),
//! persistence of the graph, compaction and replacement keeping it in step.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use rag_core::conformance::vector_index;
use rag_core::local::LocalVectorIndex;
use rag_core::{
    FieldKind, Filter, IndexRecord, IndexSchema, Metadata, Metric, Query, SearchRequest,
    VectorIndex,
};
use serde_json::json;
use vector_store::{AnnParams, HnswGraphs, open_ann_index};

/// Always use the graph, however small the index.
fn graph_always() -> AnnParams {
    AnnParams {
        exact_below: 0,
        ..AnnParams::default()
    }
}

/// Deterministic clustered vectors: 20 centres, points scattered around them.
fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dims).map(|_| next() * 4.0).collect())
        .collect();
    (0..n)
        .map(|i| centres[i % 20].iter().map(|c| c + next()).collect())
        .collect()
}

fn records(vs: &[Vec<f32>]) -> Vec<IndexRecord> {
    vs.iter()
        .enumerate()
        .map(|(i, v)| IndexRecord {
            id: format!("r{i}"),
            vector: v.clone(),
            text: format!("record number {i}"),
            metadata: [
                ("even".to_string(), json!(i % 2 == 0)),
                ("n".into(), json!(i)),
            ]
            .into_iter()
            .collect::<Metadata>(),
        })
        .collect()
}

fn schema() -> IndexSchema {
    IndexSchema::new("ann", 32, Metric::Cosine)
        .with_field("even", FieldKind::Bool)
        .with_field("n", FieldKind::Integer)
}

async fn recall(
    ann: &dyn VectorIndex,
    exact: &dyn VectorIndex,
    queries: &[Vec<f32>],
    filter: Option<Filter>,
) -> f64 {
    let mut found = 0;
    for q in queries {
        let mut req = SearchRequest::new(Query::Vector(q.clone()), 10);
        req.filter = filter.clone();
        let truth: HashSet<String> = exact
            .search("ann", &req)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let got = ann.search("ann", &req).await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0].score >= w[1].score),
            "scores descend"
        );
        if let Some(f) = &filter {
            assert!(
                got.iter().all(|h| f.matches(&h.metadata)),
                "filter respected"
            );
        }
        found += got.iter().filter(|h| truth.contains(&h.id)).count();
    }
    found as f64 / (10 * queries.len()) as f64
}

#[tokio::test]
async fn conformance_in_memory_and_persisted() {
    let index = LocalVectorIndex::in_memory_with_ann(std::sync::Arc::new(
        vector_store::HnswGraphs::new(graph_always()),
    ));
    vector_index::run_all(&index, "ann").await;
    let dir = tempfile::tempdir().unwrap();
    let index = open_ann_index(dir.path(), graph_always()).await.unwrap();
    vector_index::run_all(&index, "ann").await;
}

#[tokio::test]
async fn the_ann_index_stays_true_to_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_ann_index(dir.path(), graph_always()).await.unwrap();
    rag_core::conformance::sync::check(std::sync::Arc::new(index), "ann").await;
}

#[tokio::test]
async fn graph_search_recalls_the_exact_neighbours() {
    let vs = vectors(3_000, 32, 7);
    let queries = vectors(40, 32, 99);
    let ann = open_ann_index(tempfile::tempdir().unwrap().path(), graph_always())
        .await
        .unwrap();
    let exact = LocalVectorIndex::in_memory();
    for ix in [&ann as &dyn VectorIndex, &exact] {
        ix.create_index(&schema()).await.unwrap();
        for batch in records(&vs).chunks(500) {
            assert!(
                ix.upsert("ann", batch.to_vec())
                    .await
                    .unwrap()
                    .is_complete()
            );
        }
    }
    let r = recall(&ann, &exact, &queries, None).await;
    assert!(r >= 0.95, "recall@10 {r}");
    // A filter half the records pass goes through the graph with the filter inside the walk.
    let even = Filter::Eq("even".into(), json!(true));
    let r = recall(&ann, &exact, &queries, Some(even)).await;
    assert!(r >= 0.95, "filtered recall@10 {r}");
    // A selective filter (30 of 3,000) is answered exactly.
    let few = Filter::Range {
        field: "n".into(),
        gte: Some(100.0),
        lte: Some(129.0),
    };
    assert_eq!(recall(&ann, &exact, &queries, Some(few)).await, 1.0);
    // Scores are the metric's similarity exactly as exact search gives them, although the
    // graph walks bfloat16 copies of the vectors: the index scores its candidates again.
    let req = SearchRequest::new(Query::Vector(vs[5].clone()), 1);
    let a = ann.search("ann", &req).await.unwrap();
    assert_eq!(a[0].id, "r5");
    for q in &queries {
        let req = SearchRequest::new(Query::Vector(q.clone()), 10);
        let exact_scores: std::collections::HashMap<String, f32> = exact
            .search("ann", &req)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.id, h.score))
            .collect();
        for hit in ann.search("ann", &req).await.unwrap() {
            if let Some(e) = exact_scores.get(&hit.id) {
                assert_eq!(hit.score.to_bits(), e.to_bits(), "{}", hit.id);
            }
        }
    }
}

#[tokio::test]
async fn the_graph_is_saved_reloaded_and_rebuilt_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let vs = vectors(2_000, 32, 3);
    let params = AnnParams {
        exact_below: 100,
        ..AnnParams::default()
    };
    {
        let ix = open_ann_index(dir.path(), params).await.unwrap();
        ix.create_index(&schema()).await.unwrap();
        ix.upsert("ann", records(&vs)).await.unwrap();
        ix.flush().await.unwrap();
    }
    let graph = dir.path().join("ann/ann.graph");
    let stamp = std::fs::metadata(&graph).unwrap().modified().unwrap();
    let probe = SearchRequest::new(Query::Vector(vs[42].clone()), 3);
    {
        let ix = open_ann_index(dir.path(), params).await.unwrap();
        assert_eq!(ix.search("ann", &probe).await.unwrap()[0].id, "r42");
        assert_eq!(
            std::fs::metadata(&graph).unwrap().modified().unwrap(),
            stamp,
            "a current graph is loaded, not rebuilt"
        );
        // Replace r42 far away and delete r43; the graph follows and is saved on drop.
        let mut moved = records(&vs)[42].clone();
        moved.vector = vs[7].clone();
        ix.upsert("ann", vec![moved]).await.unwrap();
        ix.delete("ann", &["r43".into()]).await.unwrap();
        let hits = ix
            .search("ann", &SearchRequest::new(Query::Vector(vs[43].clone()), 5))
            .await
            .unwrap();
        assert!(
            hits.iter().all(|h| h.id != "r43"),
            "deleted records leave the graph"
        );
    }
    // A stale stamp (e.g. a crash after a write) forces a rebuild from the records.
    std::fs::write(
        dir.path().join("ann/ann.json"),
        b"{\"last_segment\":\"x\",\"len\":1}",
    )
    .unwrap();
    let ix = open_ann_index(dir.path(), params).await.unwrap();
    assert_eq!(ix.count("ann").await.unwrap(), 1_999);
    let hits = ix
        .search("ann", &SearchRequest::new(Query::Vector(vs[7].clone()), 2))
        .await
        .unwrap();
    let ids: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(
        ids,
        HashSet::from(["r7", "r42"]),
        "the replaced vector is found at its new place"
    );
}

#[tokio::test]
async fn compaction_keeps_graph_keys_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let vs = vectors(1_200, 32, 11);
    let ix = open_ann_index(dir.path(), graph_always()).await.unwrap();
    ix.create_index(&schema()).await.unwrap();
    // Many small writes and deletes: compactions renumber slots and rename graph keys.
    let recs = records(&vs);
    for batch in recs.chunks(12) {
        ix.upsert("ann", batch.to_vec()).await.unwrap();
    }
    let doomed: Vec<String> = (0..1_200).step_by(3).map(|i| format!("r{i}")).collect();
    for d in doomed.chunks(40) {
        ix.delete("ann", d).await.unwrap();
    }
    assert_eq!(ix.count("ann").await.unwrap(), 800);
    for i in [1usize, 500, 1_198] {
        let hits = ix
            .search("ann", &SearchRequest::new(Query::Vector(vs[i].clone()), 1))
            .await
            .unwrap();
        assert_eq!(
            hits[0].id,
            format!("r{i}"),
            "each live record still finds itself"
        );
        assert_eq!(hits[0].text, format!("record number {i}"));
    }
    drop(ix);
    let ix = open_ann_index(dir.path(), graph_always()).await.unwrap();
    let hits = ix
        .search(
            "ann",
            &SearchRequest::new(Query::Vector(vs[500].clone()), 1),
        )
        .await
        .unwrap();
    assert_eq!(hits[0].id, "r500");
}

/// The saved graph of an index of 1,200 records, and a probe only a working search answers.
async fn saved_graph(dir: &std::path::Path) -> (std::path::PathBuf, SearchRequest) {
    let vs = vectors(1_200, 32, 5);
    let ix = open_ann_index(dir, graph_always()).await.unwrap();
    ix.create_index(&schema()).await.unwrap();
    ix.upsert("ann", records(&vs)).await.unwrap();
    ix.flush().await.unwrap();
    (
        dir.join("ann/ann.graph"),
        SearchRequest::new(Query::Vector(vs[42].clone()), 3),
    )
}

#[tokio::test]
async fn a_graph_header_out_of_range_is_rebuilt_not_a_crash() {
    // The reproducers: each once panicked (entry point, top level) or aborted on a
    // petabyte allocation (node count) on every open, until the file was deleted by hand.
    use rag_core::local::ann::AnnFactory;
    for (offset, value, why) in [
        (48, 999_999u64, "entry point"),
        (56, 60, "top level"),
        (40, 1 << 40, "node count"),
        (24, 1 << 40, "m"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (graph, probe) = saved_graph(dir.path()).await;
        let mut bytes = std::fs::read(&graph).unwrap();
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        std::fs::write(&graph, &bytes).unwrap();
        let err = HnswGraphs::new(graph_always())
            .load(&schema(), &graph)
            .err()
            .unwrap_or_else(|| panic!("{why}: a damaged graph loaded"));
        assert!(
            matches!(err, rag_core::Error::Corrupt { .. }),
            "{why}: {err}"
        );
        let ix = open_ann_index(dir.path(), graph_always()).await.unwrap();
        assert_eq!(
            ix.search("ann", &probe).await.unwrap()[0].id,
            "r42",
            "{why}"
        );
        drop(ix);
        assert!(
            HnswGraphs::new(graph_always())
                .load(&schema(), &graph)
                .is_ok(),
            "{why}: the rebuilt graph was saved"
        );
    }
}

mod damaged_graphs {
    use super::*;
    use proptest::prelude::*;
    use rag_core::local::ann::AnnFactory;

    /// One small saved graph, built once for all cases.
    fn saved() -> &'static Vec<u8> {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            let factory = HnswGraphs::new(graph_always());
            let schema = IndexSchema::new("g", 8, Metric::Cosine);
            let graph = factory.create(&schema).unwrap();
            let vs = vectors(300, 8, 9);
            let items: Vec<(u64, &[f32])> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice()))
                .collect();
            graph.add_batch(&items).unwrap();
            graph.remove(7).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.graph");
            graph.save(&path).unwrap();
            std::fs::read(path).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Random byte changes and truncations: loading never panics, never allocates what the
        /// file cannot hold, and never returns a graph (the CRC sees every change of ≤ 4 bytes).
        #[test]
        fn damaged_graphs_never_load(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..5),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = saved().clone();
            for (at, x) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            // Two flips of one byte may cancel out.
            prop_assume!(bytes != *saved());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.graph");
            std::fs::write(&path, &bytes).unwrap();
            let loaded = HnswGraphs::new(graph_always())
                .load(&IndexSchema::new("g", 8, Metric::Cosine), &path);
            prop_assert!(loaded.is_err(), "a damaged graph loaded");
        }
    }

    #[test]
    fn the_undamaged_graph_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.graph");
        std::fs::write(&path, saved()).unwrap();
        let g = HnswGraphs::new(graph_always())
            .load(&IndexSchema::new("g", 8, Metric::Cosine), &path)
            .unwrap();
        assert_eq!(g.len(), 299);
    }
}
