//! [`VectorIndex`] conformance.

use serde_json::json;

use crate::error::Error;
use crate::index::{
    FieldKind, Filter, Fusion, IndexRecord, IndexSchema, Metadata, Metric, Query, SearchRequest,
    VectorIndex,
};

/// Runs every check on indexes named `{prefix}-…` (created and dropped by the suite).
pub async fn run_all(index: &dyn VectorIndex, prefix: &str) {
    create_is_idempotent_and_checks_dims(index, &format!("{prefix}-create")).await;
    empty_index(index, &format!("{prefix}-empty")).await;
    upsert_reports_items_and_replaces(index, &format!("{prefix}-upsert")).await;
    duplicate_ids_in_one_batch_keep_the_last(index, &format!("{prefix}-dups")).await;
    knn_search(index, &format!("{prefix}-knn")).await;
    text_and_hybrid_search(index, &format!("{prefix}-text")).await;
    english_analyzer(index, &format!("{prefix}-english")).await;
    filters(index, &format!("{prefix}-filter")).await;
    bad_requests(index, &format!("{prefix}-bad")).await;
    delete_and_drop(index, &format!("{prefix}-drop")).await;
}

fn schema(name: &str) -> IndexSchema {
    IndexSchema::new(name, 4, Metric::Cosine)
        .with_field("lang", FieldKind::Keyword)
        .with_field("year", FieldKind::Integer)
}

fn record(id: &str, vector: [f32; 4], text: &str, lang: &str, year: i64) -> IndexRecord {
    let metadata: Metadata = [
        ("lang".to_string(), json!(lang)),
        ("year".to_string(), json!(year)),
    ]
    .into_iter()
    .collect();
    IndexRecord {
        id: id.into(),
        vector: vector.to_vec(),
        text: text.into(),
        metadata,
    }
}

/// Five records on distinct axes, with text and metadata.
fn corpus() -> Vec<IndexRecord> {
    vec![
        record(
            "r1",
            [1.0, 0.0, 0.0, 0.0],
            "dup duplicates a file descriptor",
            "en",
            2001,
        ),
        record("r2", [0.9, 0.1, 0.0, 0.0], "open opens a file", "en", 2005),
        record(
            "r3",
            [0.0, 1.0, 0.0, 0.0],
            "socket creates an endpoint for communication",
            "en",
            2010,
        ),
        record(
            "r4",
            [0.0, 0.0, 1.0, 0.0],
            "fcntl manipulates a file descriptor",
            "de",
            2015,
        ),
        record(
            "r5",
            [0.0, 0.0, 0.0, 1.0],
            "signal handling ANSI C",
            "de",
            2020,
        ),
    ]
}

async fn fresh(index: &dyn VectorIndex, name: &str) {
    if index.schema(name).await.is_ok() {
        index.drop_index(name).await.unwrap();
    }
    index
        .create_index(&schema(name))
        .await
        .expect("create_index");
    let report = index.upsert(name, corpus()).await.expect("upsert");
    assert!(
        report.is_complete(),
        "all valid records written: {report:?}"
    );
}

fn ids(hits: &[crate::index::SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// Creating twice with one schema succeeds; another dimension is `DimensionMismatch`.
pub async fn create_is_idempotent_and_checks_dims(index: &dyn VectorIndex, name: &str) {
    let _ = index.drop_index(name).await;
    index.create_index(&schema(name)).await.expect("create");
    index
        .create_index(&schema(name))
        .await
        .expect("create again with the same schema");
    assert_eq!(index.schema(name).await.unwrap(), schema(name));
    let mut other = schema(name);
    other.dims = 8;
    assert!(matches!(
        index.create_index(&other).await,
        Err(Error::DimensionMismatch {
            expected: 4,
            actual: 8
        })
    ));
    index.drop_index(name).await.unwrap();
}

/// An empty index counts 0 and finds nothing.
pub async fn empty_index(index: &dyn VectorIndex, name: &str) {
    let _ = index.drop_index(name).await;
    index.create_index(&schema(name)).await.unwrap();
    assert_eq!(index.count(name).await.unwrap(), 0);
    let hits = index
        .search(
            name,
            &SearchRequest::new(Query::Vector(vec![1.0, 0.0, 0.0, 0.0]), 5),
        )
        .await
        .unwrap();
    assert!(hits.is_empty());
    let hits = index
        .search(name, &SearchRequest::new(Query::Text("file".into()), 5))
        .await
        .unwrap();
    assert!(hits.is_empty());
    index.drop_index(name).await.unwrap();
}

/// Bad records fail one by one; good ones in the same batch are written; same id replaces.
pub async fn upsert_reports_items_and_replaces(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let mut bad_dims = record("bad-dims", [1.0, 0.0, 0.0, 0.0], "x", "en", 1);
    bad_dims.vector.push(0.5);
    let report = index
        .upsert(
            name,
            vec![
                bad_dims,
                record("ok-1", [0.5, 0.5, 0.0, 0.0], "fine", "en", 1),
                record("nan", [f32::NAN, 0.0, 0.0, 0.0], "x", "en", 1),
            ],
        )
        .await
        .expect("a batch with bad items still returns a report");
    assert_eq!(report.written, vec!["ok-1".to_string()]);
    let failed: Vec<&str> = report.failed.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(failed, ["bad-dims", "nan"]);
    assert!(
        report.failed[0].reason.contains("dimension"),
        "reason names the dimension"
    );
    assert_eq!(index.count(name).await.unwrap(), 6);

    let replaced = record("r1", [0.0, 0.0, 0.0, 1.0], "replaced text", "en", 2001);
    assert!(
        index
            .upsert(name, vec![replaced])
            .await
            .unwrap()
            .is_complete()
    );
    assert_eq!(
        index.count(name).await.unwrap(),
        6,
        "same id replaces, not duplicates"
    );
    let hits = index
        .search(name, &SearchRequest::new(Query::Text("replaced".into()), 1))
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["r1"]);
    index.drop_index(name).await.unwrap();
}

/// One id twice in one batch (a document repeating a paragraph has one chunk id for both):
/// the later record wins, stored once; nothing fails and nothing is doubled.
pub async fn duplicate_ids_in_one_batch_keep_the_last(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let report = index
        .upsert(
            name,
            vec![
                record("twice", [0.0, 1.0, 0.0, 0.0], "first copy", "en", 1),
                record("once", [0.5, 0.5, 0.0, 0.0], "another copy", "en", 1),
                record("twice", [0.0, 0.0, 1.0, 0.0], "second copy", "en", 2),
            ],
        )
        .await
        .expect("upsert");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(index.count(name).await.unwrap(), 7, "the id is stored once");
    let by_text = index
        .search(name, &SearchRequest::new(Query::Text("copy".into()), 10))
        .await
        .unwrap();
    let twice: Vec<_> = by_text.iter().filter(|h| h.id == "twice").collect();
    assert_eq!(twice.len(), 1, "one hit per id: {:?}", ids(&by_text));
    assert_eq!(twice[0].text, "second copy", "the later record wins");
    let by_vector = index
        .search(
            name,
            &SearchRequest::new(Query::Vector(vec![0.0, 0.0, 1.0, 0.0]), 10),
        )
        .await
        .unwrap();
    assert_eq!(
        by_vector.iter().filter(|h| h.id == "twice").count(),
        1,
        "{:?}",
        ids(&by_vector)
    );
    index.drop_index(name).await.unwrap();
}

/// Nearest neighbours come back ordered by score; k larger than the count returns all.
pub async fn knn_search(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let q = Query::Vector(vec![1.0, 0.05, 0.0, 0.0]);
    let hits = index
        .search(name, &SearchRequest::new(q.clone(), 2))
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["r1", "r2"]);
    assert!(hits[0].score >= hits[1].score, "scores descend");
    assert_eq!(
        hits[0].text, "dup duplicates a file descriptor",
        "hits carry text"
    );
    assert_eq!(
        hits[0].metadata.get("lang"),
        Some(&json!("en")),
        "hits carry metadata"
    );
    let all = index
        .search(name, &SearchRequest::new(q, 50))
        .await
        .unwrap();
    assert_eq!(all.len(), 5, "k larger than count returns every record");
    index.drop_index(name).await.unwrap();
}

/// BM25 finds term matches; hybrid fuses both rankings.
pub async fn text_and_hybrid_search(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let hits = index
        .search(
            name,
            &SearchRequest::new(Query::Text("file descriptor".into()), 3),
        )
        .await
        .unwrap();
    let mut top2 = ids(&hits)[..2].to_vec();
    top2.sort();
    assert_eq!(top2, ["r1", "r4"], "both-term documents rank first");
    // r4 is in the top two of both lists; r3 tops only the vector list, r1 only the text list.
    // Whatever the tie-breaking, r4 scores at least 2/(60+2) and the others less.
    let hybrid = Query::Hybrid {
        vector: vec![0.0, 0.7, 0.7, 0.0],
        text: "file descriptor".into(),
    };
    let hits = index
        .search(name, &SearchRequest::new(hybrid, 3))
        .await
        .unwrap();
    assert_eq!(ids(&hits)[0], "r4", "best in both lists wins the fusion");
    assert_eq!(hits.len(), 3);
    // Convex fusion: all weight on one list ranks that list's best first (r3 is the vector
    // list's clear best, r1 the text list's), whatever the scale of each list's scores.
    let split = Query::Hybrid {
        vector: vec![0.0, 1.0, 0.2, 0.0],
        text: "duplicates file descriptor".into(),
    };
    for (w, want) in [(1.0, "r3"), (0.0, "r1")] {
        let request =
            SearchRequest::new(split.clone(), 3).with_fusion(Fusion::Convex { vector_weight: w });
        let hits = index.search(name, &request).await.unwrap();
        assert_eq!(ids(&hits)[0], want, "convex fusion with vector weight {w}");
        assert_eq!(hits.len(), 3);
    }
    index.drop_index(name).await.unwrap();
}

/// An index created with [`Analyzer::English`](crate::Analyzer::English) says so in its
/// schema, and its text search meets other forms of the query's words (`convert encoding` →
/// "converts … encodings"); asking for it again with another analyzer is refused.
pub async fn english_analyzer(index: &dyn VectorIndex, name: &str) {
    if index.schema(name).await.is_ok() {
        index.drop_index(name).await.unwrap();
    }
    let english = schema(name).with_analyzer(crate::Analyzer::English);
    index.create_index(&english).await.expect("create_index");
    assert_eq!(
        index.schema(name).await.unwrap().analyzer,
        crate::Analyzer::English
    );
    let records = vec![
        record(
            "c1",
            [1.0, 0.0, 0.0, 0.0],
            "converts text between character encodings",
            "en",
            2020,
        ),
        record(
            "c2",
            [0.0, 1.0, 0.0, 0.0],
            "prints the date and the time",
            "en",
            2021,
        ),
    ];
    assert!(index.upsert(name, records).await.unwrap().is_complete());
    let hits = index
        .search(
            name,
            &SearchRequest::new(Query::Text("convert encoding".into()), 2),
        )
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["c1"], "stems meet other word forms");
    let err = index.create_index(&schema(name)).await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { .. }),
        "another analyzer for an existing index: {err}"
    );
    index.drop_index(name).await.unwrap();
}

/// Filters restrict every kind of search.
pub async fn filters(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let q = Query::Vector(vec![1.0, 0.0, 0.0, 0.0]);
    let de = SearchRequest::new(q.clone(), 5).with_filter(Filter::Eq("lang".into(), json!("de")));
    let mut got = ids(&index.search(name, &de).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["r4", "r5"]);
    let range = SearchRequest::new(Query::Text("file".into()), 5).with_filter(Filter::Range {
        field: "year".into(),
        gte: Some(2004.0),
        lte: Some(2016.0),
    });
    let mut got = ids(&index.search(name, &range).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["r2", "r4"]);
    let none = SearchRequest::new(q, 5).with_filter(Filter::Eq("lang".into(), json!("fr")));
    assert!(index.search(name, &none).await.unwrap().is_empty());
    index.drop_index(name).await.unwrap();
}

/// k = 0, empty text, wrong query dimension and missing indexes are typed errors.
pub async fn bad_requests(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let v = Query::Vector(vec![1.0, 0.0, 0.0, 0.0]);
    assert!(matches!(
        index.search(name, &SearchRequest::new(v, 0)).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        index
            .search(name, &SearchRequest::new(Query::Text("  ".into()), 3))
            .await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        index
            .search(name, &SearchRequest::new(Query::Vector(vec![1.0; 3]), 3))
            .await,
        Err(Error::DimensionMismatch {
            expected: 4,
            actual: 3
        })
    ));
    let missing = format!("{name}-missing");
    assert!(matches!(
        index.count(&missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        index.upsert(&missing, corpus()).await,
        Err(Error::NotFound { .. })
    ));
    index.drop_index(name).await.unwrap();
}

/// Deletes remove records; dropping removes the index.
pub async fn delete_and_drop(index: &dyn VectorIndex, name: &str) {
    fresh(index, name).await;
    let removed = index
        .delete(name, &["r1".into(), "r2".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(index.count(name).await.unwrap(), 3);
    let hits = index
        .search(name, &SearchRequest::new(Query::Text("dup".into()), 5))
        .await
        .unwrap();
    assert!(hits.is_empty(), "deleted records are not found");
    index.drop_index(name).await.unwrap();
    assert!(matches!(
        index.count(name).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        index.drop_index(name).await,
        Err(Error::NotFound { .. })
    ));
}
