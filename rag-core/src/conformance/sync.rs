//! The loop keeps an index true to the corpus: stages 1, 5 and 6 run on a folder, one document
//! is edited, one deleted and one added, and the rerun leaves the index holding exactly what a
//! fresh build of the new folder holds — on any [`VectorIndex`]. Run by every backend's tests:
//!
//! ```text
//! rag_core::conformance::sync::check(Arc::new(MyIndex::new(..)), "my").await;
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::embedding::EmbeddingModel;
use crate::index::{Query, SearchRequest, VectorIndex};
use crate::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore};
use crate::pipeline::{Layout, Pipeline, PipelineOptions};

const ALPHA: &str = "Alpha notes: backups run nightly and keep three copies.";
const ALPHA_EDITED: &str =
    "Alpha notes: backups run hourly and keep seven copies.\n\nRestores are tested every month.";
const BETA: &str = "Beta notes: the firewall keeps port 22 closed.";
const GAMMA: &str = "Gamma notes: certificates rotate every ninety days.";
const DELTA: &str = "Delta notes: quotas are raised by filing a storage ticket.";

/// Builds index `<prefix>-sync` from a folder, edits one document, deletes one and adds
/// one, reruns, and compares the index with `<prefix>-fresh` built from the new folder alone.
/// Both indexes are dropped at the end.
pub async fn check(index: Arc<dyn VectorIndex>, prefix: &str) {
    let dir = std::env::temp_dir().join(format!(
        "ragloop-sync-{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(data.join(name), text).unwrap();
    write("alpha.txt", ALPHA);
    write("beta.txt", BETA);
    write("sub/gamma.txt", GAMMA);

    let model = HashedEmbedding::new(HashedEmbeddingConfig {
        dims: 64,
        ..Default::default()
    })
    .unwrap();
    let synced = format!("{prefix}-sync");
    let fresh = format!("{prefix}-fresh");
    let store = Arc::new(InMemoryStore::new());
    build(&store, &index, &synced, &data, &model).await;
    assert_eq!(ids(&index, &synced, &model).await.len(), 3);

    write("alpha.txt", ALPHA_EDITED);
    std::fs::remove_file(data.join("beta.txt")).unwrap();
    write("delta.txt", DELTA);
    let report = build(&store, &index, &synced, &data, &model).await;
    assert_eq!(
        (report.documents_removed, report.documents_changed),
        (1, 1),
        "beta.txt removed and alpha.txt changed: {report:?}"
    );
    assert_eq!(
        report.deleted, 2,
        "beta's chunk and alpha's old one: {report:?}"
    );

    build(
        &Arc::new(InMemoryStore::new()),
        &index,
        &fresh,
        &data,
        &model,
    )
    .await;
    let (got, want) = (
        ids(&index, &synced, &model).await,
        ids(&index, &fresh, &model).await,
    );
    assert_eq!(got, want, "the synced index differs from a fresh build");
    assert_eq!(
        index.count(&synced).await.unwrap(),
        index.count(&fresh).await.unwrap()
    );
    // Nothing of the deleted document or the edited one's old text is found.
    for hit in index
        .search(
            &synced,
            &SearchRequest::new(Query::Text("firewall nightly".into()), 10),
        )
        .await
        .unwrap()
    {
        assert!(
            !hit.text.contains("firewall") && !hit.text.contains("nightly"),
            "stale chunk {:?} still retrieved",
            hit.text
        );
    }
    // A rerun with nothing changed deletes nothing.
    let again = build(&store, &index, &synced, &data, &model).await;
    assert_eq!(again.deleted, 0, "{again:?}");

    index.drop_index(&synced).await.unwrap();
    index.drop_index(&fresh).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stages 1, 5 and 6 of `data` into index `name` through `store`.
async fn build(
    store: &Arc<InMemoryStore>,
    index: &Arc<dyn VectorIndex>,
    name: &str,
    data: &Path,
    model: &HashedEmbedding,
) -> crate::pipeline::IndexReport {
    let pipeline = Pipeline::new(store.clone(), Layout::new("mem://sync/".parse().unwrap()))
        .with_index(index.clone())
        .with_options(PipelineOptions {
            index_name: name.into(),
            ..Default::default()
        });
    pipeline.ingest(data).await.unwrap();
    pipeline.embed(model).await.unwrap();
    pipeline.index(model).await.unwrap()
}

/// Every id in index `name` (a vector search for more records than it holds).
async fn ids(
    index: &Arc<dyn VectorIndex>,
    name: &str,
    model: &HashedEmbedding,
) -> BTreeSet<String> {
    let vector = model.embed_query("notes").await.unwrap();
    let hits = index
        .search(name, &SearchRequest::new(Query::Vector(vector), 100))
        .await
        .unwrap();
    hits.into_iter().map(|h| h.id).collect()
}
