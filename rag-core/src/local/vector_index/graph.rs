//! The optional ANN graph of one index: attached on open (loaded when current, else rebuilt),
//! kept in step with writes, saved with the segment state it covers.

use super::data::{Ann, Stamp};
use super::*;

impl IndexData {
    pub(super) fn ann_paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.dir
            .as_ref()
            .map(|d| (d.join("ann.graph"), d.join("ann.json")))
    }

    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            last_segment: self
                .segments
                .last()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            len: self.live_len(),
        }
    }

    /// Loads the saved graph if it covers the current segments, else builds one.
    pub(super) fn attach_ann(&mut self, factory: Arc<dyn AnnFactory>) -> Result<()> {
        if let Some((graph_path, stamp_path)) = self.ann_paths() {
            let saved: Option<Stamp> = std::fs::read(&stamp_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if saved.as_ref() == Some(&self.stamp()) {
                match factory.load(&self.schema, &graph_path) {
                    Ok(graph) if graph.len() == self.live_len() => {
                        self.ann = Some(Ann {
                            factory,
                            graph,
                            dirty: false,
                        });
                        return Ok(());
                    }
                    Ok(_) => {
                        tracing::warn!(path = %graph_path.display(), "saved graph is stale; rebuilding")
                    }
                    Err(e) => {
                        tracing::warn!(path = %graph_path.display(), error = %e, "saved graph unreadable; rebuilding")
                    }
                }
            }
        }
        let graph = factory.create(&self.schema)?;
        let items: Vec<(u64, &[f32])> = self
            .live_slots()
            .map(|i| (i as u64, self.vector(i)))
            .collect();
        graph.add_batch(&items)?;
        self.ann = Some(Ann {
            factory,
            graph,
            dirty: true,
        });
        self.save_ann()
    }

    /// Writes the graph and its stamp (graph first; a stale stamp only costs a rebuild).
    pub(super) fn save_ann(&mut self) -> Result<()> {
        let stamp = self.stamp();
        let (Some((graph_path, stamp_path)), Some(ann)) = (self.ann_paths(), self.ann.as_mut())
        else {
            return Ok(());
        };
        if !ann.dirty {
            return Ok(());
        }
        // A reader saves a graph it rebuilt only while no writer holds the directory (the
        // writer saves its own); graph and stamp are then written by one process at a time.
        let root = graph_path.parent().and_then(Path::parent);
        let _lock = match (self.writer, root) {
            (false, Some(root)) => match crate::local::DirLock::acquire(root, "the index") {
                Ok(lock) => Some(lock),
                Err(_) => return Ok(()),
            },
            _ => None,
        };
        let tmp = temp_path(&graph_path);
        if let Err(e) = ann.graph.save(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &graph_path)
            .map_err(|e| Error::io(e, format!("writing {}", graph_path.display())))?;
        write_stamp(&stamp_path, &stamp)?;
        ann.dirty = false;
        Ok(())
    }

    /// Moves a graph saved for the current records to the current segments' stamp (after a
    /// merge that changed segment names, not records); an unsaved graph gets it when saved.
    pub(super) fn restamp_ann(&mut self) -> Result<()> {
        let stamp = self.stamp();
        if let (Some((_, stamp_path)), Some(Ann { dirty: false, .. })) =
            (self.ann_paths(), self.ann.as_ref())
        {
            write_stamp(&stamp_path, &stamp)?;
        }
        Ok(())
    }

    /// Brings the graph in step after records were applied: `removed` slots leave it, `added`
    /// slots join it. A graph that fails is dropped (searches go exact, the next open rebuilds).
    pub(super) fn update_ann(&mut self, removed: &[usize], added: &[usize]) {
        let Some(mut ann) = self.ann.take() else {
            return;
        };
        let items: Vec<(u64, &[f32])> = added
            .iter()
            .filter(|&&i| self.is_live(i))
            .map(|&i| (i as u64, self.vector(i)))
            .collect();
        let result = removed
            .iter()
            .try_for_each(|&s| ann.graph.remove(s as u64))
            .and_then(|()| ann.graph.add_batch(&items));
        ann.dirty = true;
        match result {
            Ok(()) => self.ann = Some(ann),
            Err(e) => {
                tracing::warn!(error = %e, index = %self.schema.name, "ANN graph update failed; exact search until the next open");
                if let Some((_, stamp)) = self.ann_paths() {
                    let _ = std::fs::remove_file(stamp);
                }
            }
        }
    }
}

/// Writes a graph's stamp beside it.
fn write_stamp(path: &Path, stamp: &Stamp) -> Result<()> {
    let json = serde_json::to_vec(stamp)
        .map_err(|e| Error::backend("local-index", "encode graph stamp", e))?;
    write_atomic(path, &json)
}
