//! The embedded index with BM25 on tantivy: conformance, the same matches and scores as the
//! in-memory BM25 under any filter, persistence (a current text index is opened as it is, a
//! stale or missing one rebuilt), compaction, and readers beside a writer.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rag_core::conformance::vector_index;
use rag_core::local::LocalVectorIndex;
use rag_core::{
    Analyzer, FieldKind, Filter, IndexRecord, IndexSchema, Metadata, Metric, Query, SearchHit,
    SearchRequest, VectorIndex,
};
use serde_json::{Value, json};
use vector_store::{local_options, open_local_index};

fn schema() -> IndexSchema {
    IndexSchema::new("docs", 4, Metric::Cosine)
        .with_analyzer(Analyzer::English)
        .with_field("lang", FieldKind::Keyword)
        .with_field("year", FieldKind::Integer)
        .with_field("score", FieldKind::Float)
        .with_field("draft", FieldKind::Bool)
}

fn record(i: usize, text: &str, metadata: Metadata) -> IndexRecord {
    IndexRecord {
        id: format!("d{i}"),
        vector: vec![1.0, i as f32, 0.5, -1.0],
        text: text.into(),
        metadata,
    }
}

const WORDS: &[&str] = &[
    "file",
    "files",
    "descriptor",
    "duplicate",
    "socket",
    "open",
    "close",
    "kernel",
    "memory",
    "page",
    "signal",
    "process",
];

/// `n` records of short texts (tantivy keeps lengths below 40 terms exactly, so its BM25 equals
/// ours there) with every kind of metadata value: present, `null`, missing, `-0`.
fn corpus(n: usize, seed: u64) -> Vec<IndexRecord> {
    let mut state = seed | 1;
    let mut next = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    (0..n)
        .map(|i| {
            let len = 1 + next(12);
            let text: Vec<&str> = (0..len).map(|_| WORDS[next(WORDS.len())]).collect();
            let mut m = Metadata::new();
            match next(4) {
                0 => {}
                1 => drop(m.insert("lang".into(), Value::Null)),
                2 => drop(m.insert("lang".into(), json!("en"))),
                _ => drop(m.insert("lang".into(), json!("de"))),
            }
            match next(5) {
                0 => {}
                1 => drop(m.insert("year".into(), Value::Null)),
                _ => drop(m.insert("year".into(), json!(2019 + next(4)))),
            }
            match next(4) {
                0 => {}
                1 => drop(m.insert("score".into(), json!(-0.0))),
                _ => drop(m.insert("score".into(), json!(next(10) as f64 / 4.0))),
            }
            if next(3) > 0 {
                m.insert("draft".into(), json!(next(2) == 0));
            }
            record(i, &text.join(" "), m)
        })
        .collect()
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("en")),
        Just(json!("de")),
        Just(json!("fr")),
        (2018i64..2023).prop_map(|y| json!(y)),
        (0u32..12).prop_map(|x| json!(f64::from(x) / 4.0)),
        Just(json!(0.0)),
        Just(json!(-0.0)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("lang".to_string()),
        Just("year".to_string()),
        Just("score".to_string()),
        Just("draft".to_string()),
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        (field(), value()).prop_map(|(f, v)| Filter::Eq(f, v)),
        (field(), prop::collection::vec(value(), 0..3)).prop_map(|(f, vs)| Filter::In(f, vs)),
        (
            field(),
            prop::option::of(-1.0f64..2030.0),
            prop::option::of(-1.0f64..2030.0)
        )
            .prop_map(|(field, gte, lte)| Filter::Range { field, gte, lte }),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

async fn text_search(
    index: &LocalVectorIndex,
    q: &str,
    k: usize,
    filter: Option<Filter>,
) -> Vec<SearchHit> {
    let mut req = SearchRequest::new(Query::Text(q.into()), k);
    req.filter = filter;
    index.search("docs", &req).await.unwrap()
}

async fn both(records: &[IndexRecord]) -> (LocalVectorIndex, LocalVectorIndex) {
    let ours = LocalVectorIndex::in_memory();
    let tantivy = LocalVectorIndex::in_memory_with(local_options(None));
    for ix in [&ours, &tantivy] {
        ix.create_index(&schema()).await.unwrap();
        ix.upsert("docs", records.to_vec()).await.unwrap();
    }
    (ours, tantivy)
}

/// Hits as id → score.
fn scores(hits: &[SearchHit]) -> BTreeMap<String, f32> {
    hits.iter().map(|h| (h.id.clone(), h.score)).collect()
}

fn same_scores(ours: &[SearchHit], theirs: &[SearchHit]) -> std::result::Result<(), String> {
    let (a, b) = (scores(ours), scores(theirs));
    if a.keys().ne(b.keys()) {
        return Err(format!("matched ids differ:\n ours {a:?}\n tantivy {b:?}"));
    }
    for (id, x) in &a {
        let y = b[id];
        if (x - y).abs() > 1e-4 * x.abs().max(1.0) {
            return Err(format!("{id}: ours {x}, tantivy {y}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn conformance_in_memory_and_persisted() {
    vector_index::run_all(
        &LocalVectorIndex::in_memory_with(local_options(None)),
        "tantivy",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let index = open_local_index(dir.path(), None).await.unwrap();
    vector_index::run_all(&index, "tantivy").await;
}

#[tokio::test]
async fn the_tantivy_index_stays_true_to_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_local_index(dir.path(), None).await.unwrap();
    rag_core::conformance::sync::check(Arc::new(index), "tantivy").await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// Every filter, however nested, passes the same documents in tantivy as
    /// `Filter::matches` does, and the scores are the in-memory BM25's.
    #[test]
    fn tantivy_matches_and_scores_as_the_in_memory_bm25_under_any_filter(
        seed in any::<u64>(),
        f in prop::option::of(filter()),
        q in prop::sample::subsequence(WORDS.to_vec(), 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let records = corpus(60, seed);
            let (ours, tantivy) = both(&records).await;
            let q = q.join(" ");
            let a = text_search(&ours, &q, 100, f.clone()).await;
            let b = text_search(&tantivy, &q, 100, f.clone()).await;
            if let Some(f) = &f {
                prop_assert!(b.iter().all(|h| f.matches(&h.metadata)));
            }
            same_scores(&a, &b).map_err(TestCaseError::fail)?;
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn top_k_is_the_best_k_and_other_word_forms_match() {
    let records = corpus(300, 7);
    let (ours, tantivy) = both(&records).await;
    for q in [
        "duplicated descriptors",
        "open files",
        "kernel memory pages signal",
    ] {
        let all = text_search(&ours, q, 1_000, None).await;
        let top = text_search(&tantivy, q, 5, None).await;
        assert_eq!(top.len(), 5, "{q}");
        same_scores(&all[..5], &top).unwrap();
    }
    // Stems: "duplicated descriptors" finds documents saying "duplicate descriptor".
    let hits = text_search(&tantivy, "duplicated descriptors", 3, None).await;
    assert!(hits[0].text.contains("duplicate") || hits[0].text.contains("descriptor"));
}

#[tokio::test]
async fn replaced_and_deleted_records_are_searched_as_they_are_now() {
    let index = LocalVectorIndex::in_memory_with(local_options(None));
    index.create_index(&schema()).await.unwrap();
    index
        .upsert(
            "docs",
            vec![
                record(1, "socket options", Metadata::new()),
                record(2, "socket buffers", Metadata::new()),
            ],
        )
        .await
        .unwrap();
    let ids = |hits: Vec<SearchHit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(text_search(&index, "socket", 10, None).await).len(),
        2,
        "writes are visible to the next search"
    );
    index
        .upsert("docs", vec![record(1, "kernel memory", Metadata::new())])
        .await
        .unwrap();
    index.delete("docs", &["d2".into()]).await.unwrap();
    assert!(text_search(&index, "socket", 10, None).await.is_empty());
    assert_eq!(ids(text_search(&index, "memory", 10, None).await), ["d1"]);
    assert_eq!(index.count("docs").await.unwrap(), 1);
}

#[test]
fn an_id_twice_in_one_write_keeps_its_last_document_and_replaces_the_one_before() {
    use rag_core::local::fulltext::{TextDoc, TextFactory};
    let text = vector_store::TantivyText.open(&schema(), None).unwrap();
    let meta = Metadata::new();
    let doc = |id, text| TextDoc {
        id,
        text,
        metadata: &meta,
    };
    text.upsert(&[doc("a", "socket options")], "1").unwrap();
    text.upsert(
        &[
            doc("a", "kernel memory"),
            doc("b", "socket buffers"),
            doc("a", "socket memory"),
        ],
        "2",
    )
    .unwrap();
    let ids = |q: &str| {
        let mut ids: Vec<String> = text
            .search(q, 10, None)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("memory"), ["a"]);
    assert!(
        ids("kernel").is_empty(),
        "the earlier document of the write"
    );
    assert!(ids("options").is_empty(), "the document before the write");
    assert_eq!(ids("socket"), ["a", "b"]);
    text.delete(&["a"], "3").unwrap();
    assert_eq!(ids("socket"), ["b"]);
}

fn text_meta(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("docs/text/meta.json")
}

fn modified(p: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[tokio::test]
async fn a_current_text_index_is_opened_a_stale_or_missing_one_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(200, 3);
    {
        let ix = open_local_index(dir.path(), None).await.unwrap();
        ix.create_index(&schema()).await.unwrap();
        ix.upsert("docs", records.clone()).await.unwrap();
    }
    let (ours, _) = both(&records).await;
    let expected = text_search(&ours, "open socket", 10, None).await;
    let meta = text_meta(dir.path());
    let saved = modified(&meta);
    {
        let ix = open_local_index(dir.path(), None).await.unwrap();
        same_scores(&expected, &text_search(&ix, "open socket", 10, None).await).unwrap();
        assert_eq!(
            modified(&meta),
            saved,
            "a current text index is not rebuilt"
        );
    }
    // Written without the text index (as by a run that died before committing it): the
    // segments are ahead of it.
    {
        let ix = LocalVectorIndex::open(dir.path()).await.unwrap();
        ix.upsert(
            "docs",
            vec![record(900, "open socket open", Metadata::new())],
        )
        .await
        .unwrap();
    }
    let ix = open_local_index(dir.path(), None).await.unwrap();
    let hits = text_search(&ix, "open socket", 10, None).await;
    assert_eq!(
        hits[0].id, "d900",
        "a stale text index is rebuilt from the records"
    );
    drop(ix);
    // Removed, or damaged: rebuilt too.
    std::fs::remove_dir_all(dir.path().join("docs/text")).unwrap();
    let ix = open_local_index(dir.path(), None).await.unwrap();
    assert_eq!(
        text_search(&ix, "open socket", 10, None).await[0].id,
        "d900"
    );
    drop(ix);
    std::fs::write(&meta, b"{ not json").unwrap();
    let ix = open_local_index(dir.path(), None).await.unwrap();
    assert_eq!(
        text_search(&ix, "open socket", 10, None).await[0].id,
        "d900"
    );
    assert_eq!(ix.count("docs").await.unwrap(), 201);
}

#[tokio::test]
async fn compaction_keeps_the_text_index_current() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(300, 5);
    {
        let ix = open_local_index(dir.path(), None).await.unwrap();
        ix.create_index(&schema()).await.unwrap();
        // Over 64 writes: the segments are compacted (at least once) on the way.
        for batch in records.chunks(3) {
            ix.upsert("docs", batch.to_vec()).await.unwrap();
        }
        let gone: Vec<String> = (0..300).step_by(7).map(|i| format!("d{i}")).collect();
        ix.delete("docs", &gone).await.unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("docs/segments"))
        .unwrap()
        .count();
    assert!(segments < 64, "compacted: {segments} segments");
    let meta = text_meta(dir.path());
    let saved = modified(&meta);
    let ix = open_local_index(dir.path(), None).await.unwrap();
    assert_eq!(
        modified(&meta),
        saved,
        "the compacted state's text index is current"
    );
    let live: Vec<IndexRecord> = records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 0)
        .map(|(_, r)| r)
        .collect();
    let (ours, _) = both(&live).await;
    for q in ["file descriptor", "signal process memory"] {
        let a = text_search(&ours, q, 1_000, None).await;
        let b = text_search(&ix, q, 1_000, None).await;
        assert_eq!(
            scores(&a).keys().collect::<Vec<_>>(),
            scores(&b).keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_reader_beside_the_writer_searches_without_taking_the_text_index() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open_local_index(dir.path(), None).await.unwrap();
    writer.create_index(&schema()).await.unwrap();
    writer.upsert("docs", corpus(50, 9)).await.unwrap();
    writer
        .upsert("docs", vec![record(77, "signal handler", Metadata::new())])
        .await
        .unwrap();
    // Not committed yet: the reader finds the text index stale and builds its own in memory.
    let reader = open_local_index(dir.path(), None).await.unwrap();
    assert_eq!(
        text_search(&reader, "signal handler", 1, None).await[0].id,
        "d77"
    );
    // The writer goes on writing and committing.
    writer
        .upsert(
            "docs",
            vec![record(78, "signal handler handler", Metadata::new())],
        )
        .await
        .unwrap();
    writer.flush().await.unwrap();
    assert_eq!(text_search(&writer, "handler", 1, None).await[0].id, "d78");
    drop(writer);
    let again = open_local_index(dir.path(), None).await.unwrap();
    assert_eq!(text_search(&again, "handler", 1, None).await[0].id, "d78");
}
