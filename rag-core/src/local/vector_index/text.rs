//! The text index of one index when a [`TextFactory`] gives it: attached on open (used as it
//! is when its stamp is the segments' state, else rebuilt from the records), kept in step with
//! writes, committed with the segment state it covers.

use super::data::{Slot, Text};
use super::*;
use crate::local::fulltext::{TextDoc, TextFactory};

/// Records handed to the text index per call while it is rebuilt.
const REBUILD_BATCH: usize = 8_192;

impl IndexData {
    /// The segment state after the last write, as the text index records it.
    pub(super) fn stamp_text(&self) -> String {
        serde_json::to_string(&self.stamp()).unwrap_or_default()
    }

    fn text_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("text"))
    }

    /// Opens the saved text index if it covers the current segments, else rebuilds it: in
    /// its directory when this process may write there (it is the writer, or no one is), in
    /// memory otherwise.
    pub(super) fn attach_text(&mut self, factory: Arc<dyn TextFactory>) -> Result<()> {
        let stamp = self.stamp_text();
        let Some(dir) = self.text_dir() else {
            let index = factory.open(&self.schema, None)?;
            self.fill_text(index.as_ref(), &stamp)?;
            self.text = Text::External { factory, index };
            return Ok(());
        };
        if dir.exists() {
            match factory.open(&self.schema, Some(&dir)) {
                Ok(index)
                    if index.stamp().as_deref() == Some(stamp.as_str())
                        && index.len()? == self.live_len() =>
                {
                    self.text = Text::External { factory, index };
                    return Ok(());
                }
                Ok(_) => tracing::info!(path = %dir.display(), "text index is stale; rebuilding"),
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "text index unreadable; rebuilding")
                }
            }
        }
        // Rebuilt where it lives only by the directory's writer, or while no one writes.
        let root = self.dir.as_deref().and_then(Path::parent);
        let lock = match (self.writer, root) {
            (false, Some(root)) => match crate::local::DirLock::acquire(root, "the index") {
                Ok(lock) => Some(lock),
                Err(_) => {
                    let index = factory.open(&self.schema, None)?;
                    self.fill_text(index.as_ref(), &stamp)?;
                    self.text = Text::External { factory, index };
                    return Ok(());
                }
            },
            _ => None,
        };
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(e, format!("removing {}", dir.display())));
            }
            _ => {}
        }
        let built = factory.open(&self.schema, Some(&dir))?;
        self.fill_text(built.as_ref(), &stamp)?;
        built.commit()?;
        // A reader reopens what it built, so it holds no writer of the text index.
        let index = if lock.is_some() {
            drop(built);
            factory.open(&self.schema, Some(&dir))?
        } else {
            built
        };
        self.text = Text::External { factory, index };
        Ok(())
    }

    fn fill_text(&self, index: &dyn TextIndex, stamp: &str) -> Result<()> {
        let live: Vec<Slot<'_>> = self.live().map(|(_, s)| s).collect();
        for batch in live.chunks(REBUILD_BATCH) {
            index.upsert(&docs(&bodies(batch)?), stamp)?;
        }
        if live.is_empty() {
            index.restamp(stamp)?;
        }
        Ok(())
    }

    /// Brings the text index in step after a write was applied: the records of slots `added`
    /// written, `deletes` removed. A text index that fails is replaced by the in-memory BM25
    /// (its saved stamp is then stale, so the next open rebuilds it).
    pub(super) fn update_text(&mut self, added: &[usize], deletes: &[&str]) {
        let stamp = self.stamp_text();
        let Text::External { index, .. } = &self.text else {
            return;
        };
        let upserts: Vec<Slot<'_>> = added.iter().filter_map(|&s| self.slot(s)).collect();
        let result = if upserts.is_empty() && deletes.is_empty() {
            Ok(())
        } else {
            bodies(&upserts).and_then(|bodies| {
                index
                    .delete(deletes, &stamp)
                    .and_then(|()| index.upsert(&docs(&bodies), &stamp))
            })
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, index = %self.schema.name, "text index update failed; BM25 in memory until the next open");
            let mut bm = Bm25::new(self.schema.analyzer);
            for (slot, s) in self.live() {
                match s.body() {
                    Ok((text, _)) => bm.add(slot, &text),
                    Err(e) => {
                        tracing::warn!(error = %e, id = %s.id, "a record's text is unreadable; BM25 leaves it out")
                    }
                }
            }
            self.text = Text::Builtin(bm);
        }
    }

    /// Commits the text index's writes with their stamp (a no-op for the in-memory BM25).
    pub(super) fn commit_text(&mut self) -> Result<()> {
        match &self.text {
            Text::External { index, .. } => index.commit(),
            _ => Ok(()),
        }
    }
}

/// The slots' ids with their texts and metadata.
fn bodies(slots: &[Slot<'_>]) -> Result<Vec<(String, String, Metadata)>> {
    slots
        .iter()
        .map(|s| {
            s.body()
                .map(|(text, metadata)| (s.id.to_string(), text, metadata))
        })
        .collect()
}

fn docs(bodies: &[(String, String, Metadata)]) -> Vec<TextDoc<'_>> {
    bodies
        .iter()
        .map(|(id, text, metadata)| TextDoc { id, text, metadata })
        .collect()
}
