//! Persistence of the embedded index: replay, compaction, damaged segments, one writer.

#![allow(clippy::unwrap_used)]
use proptest::prelude::*;

use super::segments::{COMPACT_AFTER, SEGMENT_MAGIC_V1, merge_from};
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

#[test]
fn merges_take_the_newest_half_and_each_older_segment_they_outgrow() {
    let n = COMPACT_AFTER + 1;
    // One big old segment and many small new ones: the small ones merge, the big one stays.
    let mut sizes = vec![1_000_000];
    sizes.extend(std::iter::repeat_n(100, n - 1));
    assert_eq!(merge_from(&sizes), 1);
    // Equal sizes: the merged half outgrows every older segment, so everything is rewritten.
    assert_eq!(merge_from(&vec![100; n]), 0);
    // The newest half, then every small segment and the 200-byte one it outgrows; not the
    // 5,000-byte one.
    let mut sizes = vec![100_000, 5_000, 200];
    sizes.extend(std::iter::repeat_n(10, n - 3));
    assert_eq!(merge_from(&sizes), 2);
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("i/segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn small_writes_after_a_big_one_merge_among_themselves_and_replay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
        .await
        .unwrap();
    let big: Vec<IndexRecord> = (0..2_000)
        .map(|i| rec(&format!("b{i}"), i as f32))
        .collect();
    idx.upsert("i", big).await.unwrap();
    let base = segment_files(dir.path())[0].clone();
    // Small writes, overwrites and deletes: several merges, none of them reaching the base.
    for i in 0..(3 * COMPACT_AFTER) {
        idx.upsert("i", vec![rec(&format!("s{i}"), -(i as f32))])
            .await
            .unwrap();
        if i % 7 == 0 {
            idx.upsert("i", vec![rec(&format!("b{i}"), 0.5)])
                .await
                .unwrap();
            idx.delete("i", &[format!("s{}", i / 2)]).await.unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() <= COMPACT_AFTER, "{} segments", files.len());
    assert_eq!(files[0], base, "the big segment was never rewritten");
    let expected = idx.records("i").await.unwrap();
    drop(idx);
    let reopened = LocalVectorIndex::open(dir.path()).await.unwrap();
    assert_eq!(reopened.records("i").await.unwrap(), expected);
}

#[tokio::test]
async fn a_persisted_index_reads_texts_and_metadata_from_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    let schema = IndexSchema::new("i", 2, Metric::Dot).with_field("lang", FieldKind::Keyword);
    idx.create_index(&schema).await.unwrap();
    let with_meta = |id: &str, x: f32, lang: &str| {
        let mut r = rec(id, x);
        r.metadata.insert("lang".into(), lang.into());
        r.metadata.insert("page".into(), 7.into());
        r
    };
    // Enough writes for merges and a full rewrite, each record a text and metadata of its own.
    for i in 0..(3 * COMPACT_AFTER) {
        let lang = if i % 2 == 0 { "en" } else { "zh" };
        idx.upsert("i", vec![with_meta(&format!("r{i}"), i as f32, lang)])
            .await
            .unwrap();
    }
    {
        let handle = idx.get("i").await.unwrap();
        let data = handle.read().await;
        let kept_in_memory = data
            .live()
            .filter(|(_, s)| matches!(s.body, data::Body::Here(_)))
            .count();
        assert_eq!(kept_in_memory, 0, "no text is held in memory");
        let (i, _) = data.live().next().unwrap();
        let fields = data.fields(i);
        assert_eq!(fields.len(), 1, "only the schema's fields: {fields:?}");
        assert!(
            matches!(fields[0], Some(crate::index::FieldValue::Str(_))),
            "{fields:?}"
        );
    }
    let mut req = SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 3);
    req.filter = Some(crate::index::Filter::Eq("lang".into(), "zh".into()));
    let hits = idx.search("i", &req).await.unwrap();
    let top = 3 * COMPACT_AFTER - 1;
    assert_eq!(hits[0].id, format!("r{top}"));
    assert_eq!(hits[0].text, format!("record r{top}"));
    assert_eq!(hits[0].metadata["page"], 7);
    assert_eq!(hits[0].metadata["lang"], "zh");
}

#[tokio::test]
async fn a_damaged_segment_stops_a_merge_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
        .await
        .unwrap();
    let big: Vec<IndexRecord> = (0..500).map(|i| rec(&format!("b{i}"), i as f32)).collect();
    idx.upsert("i", big).await.unwrap();
    for i in 0..(COMPACT_AFTER - 1) {
        idx.upsert("i", vec![rec(&format!("s{i}"), 1.0)])
            .await
            .unwrap();
    }
    // Flip a byte of the newest segment's text: the next write's merge reads it.
    let before = segment_files(dir.path());
    let newest = dir.path().join("i/segments").join(before.last().unwrap());
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&newest, &bytes).unwrap();
    let err = idx.upsert("i", vec![rec("last", 1.0)]).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let after = segment_files(dir.path());
    assert!(
        before.iter().all(|f| after.contains(f)),
        "no segment was removed"
    );
    assert!(
        after.iter().all(|f| f.ends_with(".seg")),
        "no temporary file left: {after:?}"
    );
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
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&seg.display().to_string()),
        "names the file: {msg}"
    );
    assert!(
        msg.contains("Remove") && msg.contains("index again"),
        "says what to do: {msg}"
    );
}

/// An index of one write, and the path of its only segment.
async fn one_segment(dir: &Path) -> PathBuf {
    let idx = LocalVectorIndex::open(dir).await.unwrap();
    idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
        .await
        .unwrap();
    idx.upsert("i", vec![rec("a", 1.0), rec("b", 2.0)])
        .await
        .unwrap();
    std::fs::read_dir(dir.join("i/segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[tokio::test]
async fn a_changed_byte_in_a_segment_is_caught_by_its_checksum() {
    // Before the checksum, a changed byte inside a record's text or vector loaded silently.
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path()).await;
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(8).position(|w| w == b"record a").unwrap();
    bytes[at + 7] = b'X';
    std::fs::write(&seg, &bytes).unwrap();
    let err = LocalVectorIndex::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[tokio::test]
async fn a_nan_vector_in_an_unchecksummed_segment_is_refused() {
    // A segment of the format before checksums, holding a NaN no writer produces: it used to
    // load and rank first for every query.
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path()).await;
    let head = br#"{"op":"upsert","id":"n","text":"nan","metadata":{}}"#;
    let mut v1 = SEGMENT_MAGIC_V1.to_vec();
    v1.extend_from_slice(&(head.len() as u32).to_le_bytes());
    v1.extend_from_slice(head);
    v1.extend_from_slice(&f32::NAN.to_le_bytes());
    v1.extend_from_slice(&1f32.to_le_bytes());
    std::fs::write(&seg, &v1).unwrap();
    let err = LocalVectorIndex::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("non-finite vector"), "{err}");
    // The same record with a finite vector is a valid old-format segment.
    v1.truncate(v1.len() - 8);
    v1.extend_from_slice(&0.5f32.to_le_bytes());
    v1.extend_from_slice(&1f32.to_le_bytes());
    std::fs::write(&seg, &v1).unwrap();
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    assert_eq!(idx.records("i").await.unwrap()[0].vector, vec![0.5, 1.0]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random byte changes and truncations of a segment: opening never panics and never
    /// loads anything but the original records (here: always an error, as the CRC sees every
    /// change of up to 4 bytes).
    #[test]
    fn damaged_segments_never_load(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..5),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let seg = rt.block_on(one_segment(dir.path()));
        let original = std::fs::read(&seg).unwrap();
        let mut bytes = original.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        // Two flips of one byte may cancel out.
        let changed = bytes != original;
        std::fs::write(&seg, &bytes).unwrap();
        let opened = rt.block_on(LocalVectorIndex::open(dir.path()));
        prop_assert!(!changed || opened.is_err(), "a damaged segment loaded");
    }
}

#[tokio::test]
async fn one_writer_at_a_time_and_the_next_one_sees_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalVectorIndex::open(dir.path()).await.unwrap();
    first
        .create_index(&IndexSchema::new("i", 2, Metric::Dot))
        .await
        .unwrap();
    // A second handle (another process, as far as the lock goes) opened before any write.
    let second = LocalVectorIndex::open(dir.path()).await.unwrap();
    first.upsert("i", vec![rec("a", 1.0)]).await.unwrap();
    let err = second.upsert("i", vec![rec("b", 2.0)]).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("in use by pid {}", std::process::id())),
        "{err}"
    );
    // Reads never wait for the writer.
    assert_eq!(second.count("i").await.unwrap(), 0);
    drop(first);
    // The lock is free: the second writer first reloads what the first wrote.
    second.upsert("i", vec![rec("b", 2.0)]).await.unwrap();
    let ids: Vec<String> = second
        .records("i")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        ["a", "b"],
        "the first writer's record is kept, not overwritten"
    );
    drop(second);
    let reopened = LocalVectorIndex::open(dir.path()).await.unwrap();
    assert_eq!(reopened.count("i").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_and_a_reader_race_without_loss_or_half_states() {
    // Two writers race for one directory while a reader keeps opening it: exactly one writer
    // gets in and writes all its batches (crossing compactions); every open sees whole batches.
    let dir = tempfile::tempdir().unwrap();
    LocalVectorIndex::open(dir.path())
        .await
        .unwrap()
        .create_index(&IndexSchema::new("i", 2, Metric::Dot))
        .await
        .unwrap();
    let batches = COMPACT_AFTER + 20;
    let writer = |name: &'static str| {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move {
            let idx = LocalVectorIndex::open(&dir).await.unwrap();
            let mut written = 0;
            for b in 0..batches {
                let recs = (0..3)
                    .map(|j| rec(&format!("{name}-{b}-{j}"), b as f32))
                    .collect();
                match idx.upsert("i", recs).await {
                    Ok(_) => written += 1,
                    Err(Error::Unavailable { .. }) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            written
        })
    };
    let (a, b) = (writer("a"), writer("b"));
    let reader = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move {
            let mut opens = 0;
            loop {
                let idx = LocalVectorIndex::open(&dir)
                    .await
                    .expect("a reader never fails");
                let n = idx.count("i").await.unwrap();
                assert_eq!(n % 3, 0, "a half-written batch was visible");
                opens += 1;
                if n == 3 * batches || opens > 2_000 {
                    return opens;
                }
            }
        })
    };
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(reader.await.unwrap() > 0);
    assert_eq!(
        a.max(b),
        batches,
        "the writer that got the lock wrote every batch"
    );
    let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
    assert_eq!(idx.count("i").await.unwrap(), 3 * (a + b));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("i/segments"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A value of a field of each kind, missing or `null` too.
fn field_value() -> impl Strategy<
    Value = (
        Option<serde_json::Value>,
        Option<serde_json::Value>,
        Option<serde_json::Value>,
    ),
> {
    use serde_json::Value;
    let kw = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| Some(Value::from(s))),
    ];
    let num = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (-3i64..4).prop_map(|n| Some(Value::from(n))),
        (-3.0f64..4.0).prop_map(|x| Some(Value::from(x))),
    ];
    let flag = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(Value::from(b))),
    ];
    (kw, num, flag)
}

fn some_filter() -> impl Strategy<Value = crate::index::Filter> {
    use crate::index::Filter;
    use serde_json::Value;
    let leaf = prop_oneof![
        prop::sample::select(vec!["a", "b", "z"]).prop_map(|s| Filter::Eq("kw".into(), s.into())),
        Just(Filter::Eq("kw".into(), Value::Null)),
        Just(Filter::In("kw".into(), vec!["a".into(), "c".into()])),
        (-3i64..4).prop_map(|n| Filter::Eq("num".into(), n.into())),
        Just(Filter::Eq("num".into(), 1.0.into())),
        Just(Filter::Eq("num".into(), "1".into())),
        (
            prop::option::of(-3.0f64..4.0),
            prop::option::of(-3.0f64..4.0)
        )
            .prop_map(|(gte, lte)| Filter::Range {
                field: "num".into(),
                gte,
                lte
            }),
        any::<bool>().prop_map(|b| Filter::Eq("flag".into(), b.into())),
        Just(Filter::Eq("flag".into(), Value::Null)),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The schema's fields are kept in compact columns (keyword codes, numbers as f64,
    /// booleans as bytes, anything else as it is): every filter passes exactly the records
    /// whose metadata map it matches, with its vector's score, in memory, after a compaction
    /// moved the rows, and after a reopen that replayed the segments.
    #[test]
    fn filters_on_the_compact_columns_agree_with_the_metadata(
        values in prop::collection::vec(field_value(), 1..40),
        filters in prop::collection::vec(some_filter(), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let schema = IndexSchema::new("i", 2, Metric::Dot)
                .with_field("kw", FieldKind::Keyword)
                .with_field("num", FieldKind::Float)
                .with_field("flag", FieldKind::Bool);
            let records: Vec<IndexRecord> = values
                .iter()
                .enumerate()
                .map(|(i, (kw, num, flag))| {
                    // Content-hash ids (kept as 16 bytes) and other ids (kept as they are).
                    let id = if i % 2 == 0 {
                        crate::chunk::chunk_id("doc", &i.to_string())
                    } else {
                        format!("r{i}")
                    };
                    let mut r = rec(&id, i as f32);
                    for (name, v) in [("kw", kw), ("num", num), ("flag", flag)] {
                        if let Some(v) = v {
                            r.metadata.insert(name.into(), v.clone());
                        }
                    }
                    r
                })
                .collect();
            let memory = LocalVectorIndex::in_memory();
            memory.create_index(&schema).await.unwrap();
            memory.upsert("i", records.clone()).await.unwrap();
            let disk = LocalVectorIndex::open(dir.path()).await.unwrap();
            {
                disk.create_index(&schema).await.unwrap();
                for r in &records {
                    disk.upsert("i", vec![r.clone()]).await.unwrap();
                }
                // The first record written again, and another over and over, then deleted:
                // dead rows, then a compaction that moves the live ones' rows down.
                disk.upsert("i", vec![records[0].clone()]).await.unwrap();
                for _ in 0..=COMPACT_AFTER {
                    disk.upsert("i", vec![rec("filler", 0.0)]).await.unwrap();
                }
                disk.delete("i", &["filler".into()]).await.unwrap();
            }
            let reopened = LocalVectorIndex::open(dir.path()).await.unwrap();
            for filter in &filters {
                // Each passing record with its score (its vector's first component).
                let mut expected: Vec<(String, f32)> = records
                    .iter()
                    .filter(|r| filter.matches(&r.metadata))
                    .map(|r| (r.id.clone(), r.vector[0]))
                    .collect();
                expected.sort_by(|a, b| a.0.cmp(&b.0));
                for index in [&memory, &disk, &reopened] {
                    let mut req = SearchRequest::new(Query::Vector(vec![1.0, 0.0]), records.len());
                    req.filter = Some(filter.clone());
                    let mut got: Vec<(String, f32)> = index
                        .search("i", &req)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|h| (h.id, h.score))
                        .collect();
                    got.sort_by(|a, b| a.0.cmp(&b.0));
                    assert_eq!(got, expected, "{filter:?}");
                }
            }
        });
    }
}
