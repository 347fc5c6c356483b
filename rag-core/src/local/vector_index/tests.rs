//! Persistence of the embedded index: replay, compaction, corrupt segments.

#![allow(clippy::unwrap_used)]
use super::segments::COMPACT_AFTER;
use super::*;
use crate::index::Metric;

fn rec(id: &str, x: f32) -> IndexRecord {
    IndexRecord {
        id: id.into(),
        vector: vec![x, 1.0],
        text: format!("record {id}"),
        metadata: Metadata::new(),
    }
}

#[tokio::test]
async fn reopening_replays_upserts_deletes_and_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
        idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
            .await
            .unwrap();
        // More single-record writes than COMPACT_AFTER, so at least one compaction runs.
        for i in 0..(COMPACT_AFTER + 10) {
            idx.upsert("i", vec![rec(&format!("r{i}"), i as f32)])
                .await
                .unwrap();
        }
        idx.upsert("i", vec![rec("r0", 1000.0)]).await.unwrap();
        assert_eq!(idx.delete("i", &["r1".into()]).await.unwrap(), 1);
    }
    let segs = std::fs::read_dir(dir.path().join("i/segments"))
        .unwrap()
        .count();
    assert!(
        segs < COMPACT_AFTER,
        "compaction bounded the segments: {segs}"
    );
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    assert_eq!(idx.count("i").await.unwrap(), COMPACT_AFTER + 10 - 1);
    let top = idx
        .search("i", &SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 1))
        .await
        .unwrap();
    assert_eq!(
        (top[0].id.as_str(), top[0].score),
        ("r0", 1000.0),
        "later upsert wins"
    );
    let gone = idx
        .search("i", &SearchRequest::new(Query::Text("r1".into()), 5))
        .await
        .unwrap();
    assert!(gone.iter().all(|h| h.id != "r1"), "delete persisted");
}

#[tokio::test]
async fn a_corrupt_segment_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
        idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
            .await
            .unwrap();
        idx.upsert("i", vec![rec("a", 1.0)]).await.unwrap();
    }
    let seg = std::fs::read_dir(dir.path().join("i/segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - 3]).unwrap();
    let err = LocalVectorIndex::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}
