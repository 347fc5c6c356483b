//! [`Layout`]: where each stage's data lives under one bucket prefix.

use crate::uri::StoreUri;

/// Where each stage's data lives under one bucket prefix (the seed's layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: StoreUri,
}

impl Layout {
    /// A layout under `root` (`oss://bucket/` or `oss://bucket/project/`).
    pub fn new(root: StoreUri) -> Self {
        Self {
            root: root.as_prefix(),
        }
    }

    /// The root prefix.
    pub fn root(&self) -> &StoreUri {
        &self.root
    }

    fn dir(&self, rel: &str) -> StoreUri {
        // `rel` is built from validated parts, so joining cannot fail; fall back to the root.
        self.root
            .join(rel)
            .unwrap_or_else(|_| self.root.clone())
            .as_prefix()
    }

    /// `raw-docs/`: the ingested corpus.
    pub fn raw_docs(&self) -> StoreUri {
        self.dir("raw-docs/")
    }

    /// `qa-pairs/`: LLM fine-tuning data.
    pub fn qa_pairs(&self) -> StoreUri {
        self.dir("qa-pairs/")
    }

    /// `models/<name>/`: a trained model.
    pub fn model(&self, name: &str) -> StoreUri {
        self.dir(&format!("models/{}/", key_safe(name)))
    }

    /// `ingested.json`: the `raw-docs/` keys stage 1 put there from the data folder, so a
    /// file removed from the folder is removed from the store on the next ingest.
    pub fn ingested(&self) -> StoreUri {
        self.root
            .join("ingested.json")
            .unwrap_or_else(|_| self.root.clone())
    }

    /// `indexes/<name>/manifest.json`: the chunk ids of each document that stage 6 last put
    /// into index `name`, so the next run deletes the chunks of removed or changed documents.
    pub fn index_manifest(&self, name: &str) -> StoreUri {
        let dir = self.dir(&format!("indexes/{}/", key_safe(name)));
        dir.join("manifest.json").unwrap_or(dir)
    }

    /// `vector-indexes/<model>/`: the Parquet shards of one embedding model.
    pub fn vector_shards(&self, model_id: &str) -> StoreUri {
        self.dir(&format!("vector-indexes/{}/", key_safe(model_id)))
    }
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn key_safe(name: &str) -> String {
    let s = crate::uri::safe_segment(name, '_');
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}
