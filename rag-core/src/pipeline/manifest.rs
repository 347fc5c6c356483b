//! Stage 6's manifest: the chunk ids of each document an index holds, held compactly.
//!
//! Stage 6 gathers one entry per chunk of the corpus, and reads the last run's manifest beside
//! it, so its in-memory form is what grows with the corpus: each document's id once, and per
//! chunk its [`ChunkKey`] (16 bytes for a content-hash id) in one array, each document's ids a
//! run of it. On disk it is JSON, `{"documents": {"<doc id>": ["<chunk id>", …], …}}`.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use serde::de::{MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkKey;

/// The chunk ids of each document an index holds ([`Layout::index_manifest`](super::Layout::index_manifest)),
/// written by stage 6 after its upserts and deletions: documents in id order, each one's chunk
/// ids sorted ([`ChunkKey`]'s order: content hashes first) and distinct. Built with
/// [`ManifestBuilder`]; read and written as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexManifest {
    /// The documents' ids end to end, in id order.
    names: String,
    /// Per document in id order: where its id ends in `names`, and where its runs end in
    /// `hashes` and `others`.
    docs: Vec<(usize, usize, usize)>,
    /// Content-hash chunk ids, as their bytes.
    hashes: Vec<[u8; 16]>,
    /// Other chunk ids.
    others: Vec<Box<str>>,
}

/// One document's chunk ids: its content-hash ones, then the others.
type Ids<'a> = (&'a [[u8; 16]], &'a [Box<str>]);

impl IndexManifest {
    /// Document `i`'s id and chunk ids.
    fn entry(&self, i: usize) -> (&str, Ids<'_>) {
        let (n_end, h_end, o_end) = self.docs[i];
        let (n_start, h_start, o_start) = match i {
            0 => (0, 0, 0),
            _ => self.docs[i - 1],
        };
        (
            &self.names[n_start..n_end],
            (&self.hashes[h_start..h_end], &self.others[o_start..o_end]),
        )
    }

    fn find(&self, doc: &str) -> Option<Ids<'_>> {
        let (mut lo, mut hi) = (0, self.docs.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (name, ids) = self.entry(mid);
            match name.cmp(doc) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(ids),
            }
        }
        None
    }

    /// Each document's id and its chunk ids (sorted), in document id order.
    pub fn documents(&self) -> impl ExactSizeIterator<Item = (&str, Vec<ChunkKey>)> {
        (0..self.docs.len()).map(|i| {
            let (doc, ids) = self.entry(i);
            (doc, keys(ids))
        })
    }

    /// The chunk ids of document `doc` (sorted), if it has an entry.
    pub fn get(&self, doc: &str) -> Option<Vec<ChunkKey>> {
        self.find(doc).map(keys)
    }

    /// How many documents have an entry.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document has an entry.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Chunk ids of `previous` that this manifest does not hold, sorted, with how many of
    /// `previous`'s documents are gone and how many changed. A chunk id that moved to another
    /// document (the same text) is not stale.
    pub fn stale_since(&self, previous: &IndexManifest) -> (Vec<String>, usize, usize) {
        let mut scan = StaleScan::new(self);
        for i in 0..previous.docs.len() {
            let (doc, (h, o)) = previous.entry(i);
            scan.visit(doc, h, o);
        }
        let (stale, removed, changed, _) = scan.finish();
        (stale, removed, changed)
    }

    /// [`stale_since`](Self::stale_since) the manifest whose JSON is `json`, read a document
    /// at a time — the previous manifest is never built in memory beside this one — and
    /// whether the two are equal (then there is nothing to write).
    pub fn stale_since_json(
        &self,
        json: &[u8],
    ) -> serde_json::Result<(Vec<String>, usize, usize, bool)> {
        use serde::de::{DeserializeSeed, IgnoredAny};

        /// The top-level object: its `documents` map scanned, anything else skipped.
        struct Top<'s, 'a>(&'s mut StaleScan<'a>);
        impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<(), D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Top<'_, '_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an index manifest")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
                let mut found = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "documents" {
                        map.next_value_seed(Documents(&mut *self.0))?;
                        found = true;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if found {
                    Ok(())
                } else {
                    Err(serde::de::Error::missing_field("documents"))
                }
            }
        }
        /// The `documents` map, each entry compared as it is read.
        struct Documents<'s, 'a>(&'s mut StaleScan<'a>);
        impl<'de> DeserializeSeed<'de> for Documents<'_, '_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<(), D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Documents<'_, '_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of document ids to lists of chunk ids")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
                let (mut hashes, mut others) = (Vec::new(), Vec::new());
                while let Some(doc) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    hashes.clear();
                    others.clear();
                    for id in map.next_value::<Vec<ChunkKey>>()? {
                        match id {
                            ChunkKey::Hash(h) => hashes.push(h),
                            ChunkKey::Other(o) => others.push(o),
                        }
                    }
                    hashes.sort_unstable();
                    hashes.dedup();
                    others.sort_unstable();
                    others.dedup();
                    self.0.visit(&doc, &hashes, &others);
                }
                Ok(())
            }
        }

        let mut scan = StaleScan::new(self);
        let mut de = serde_json::Deserializer::from_slice(json);
        Top(&mut scan).deserialize(&mut de)?;
        de.end()?;
        let (stale, removed, changed, same) = scan.finish();
        Ok((stale, removed, changed, same))
    }
}

/// [`IndexManifest::stale_since`] a previous manifest's documents, one at a time.
struct StaleScan<'a> {
    now: &'a IndexManifest,
    /// Chunk ids of the previous manifest's documents that the document no longer holds
    /// (they may have moved to another document).
    hashes: Vec<[u8; 16]>,
    others: Vec<Box<str>>,
    removed: usize,
    changed: usize,
    /// Previous documents seen, and those equal to this manifest's.
    seen: usize,
    same: usize,
}

impl<'a> StaleScan<'a> {
    fn new(now: &'a IndexManifest) -> Self {
        Self {
            now,
            hashes: Vec::new(),
            others: Vec::new(),
            removed: 0,
            changed: 0,
            seen: 0,
            same: 0,
        }
    }

    /// A previous document and its chunk ids (each run sorted and distinct).
    fn visit(&mut self, doc: &str, h: &[[u8; 16]], o: &[Box<str>]) {
        self.seen += 1;
        match self.now.find(doc) {
            None => {
                self.removed += 1;
                self.hashes.extend(h);
                self.others.extend(o.iter().cloned());
            }
            Some((now_h, now_o)) if (now_h, now_o) != (h, o) => {
                self.changed += 1;
                self.hashes
                    .extend(h.iter().filter(|id| now_h.binary_search(id).is_err()));
                self.others.extend(
                    o.iter()
                        .filter(|id| now_o.binary_search(id).is_err())
                        .cloned(),
                );
            }
            Some(_) => self.same += 1,
        }
    }

    /// The stale ids (sorted), documents removed and changed, and whether the previous
    /// manifest equals this one.
    fn finish(self) -> (Vec<String>, usize, usize, bool) {
        let Self {
            now,
            mut hashes,
            mut others,
            ..
        } = self;
        if !hashes.is_empty() {
            let mut live: Vec<&[u8; 16]> = now.hashes.iter().collect();
            live.sort_unstable();
            hashes.retain(|id| live.binary_search(&id).is_err());
        }
        if !others.is_empty() {
            let mut live: Vec<&str> = now.others.iter().map(|id| &**id).collect();
            live.sort_unstable();
            others.retain(|id| live.binary_search(&&**id).is_err());
        }
        let mut stale: Vec<String> = hashes.into_iter().map(hex::encode).collect();
        stale.extend(others.into_iter().map(String::from));
        stale.sort_unstable();
        stale.dedup();
        let same = stale.is_empty() && self.seen == now.len() && self.same == now.len();
        (stale, self.removed, self.changed, same)
    }
}

/// One document's chunk ids as keys, in [`ChunkKey`]'s order.
fn keys((hashes, others): Ids<'_>) -> Vec<ChunkKey> {
    let hashes = hashes.iter().map(|h| ChunkKey::Hash(*h));
    hashes
        .chain(others.iter().map(|o| ChunkKey::Other(o.clone())))
        .collect()
}

/// Gathers an [`IndexManifest`] a chunk at a time, documents in any order, repeats dropped at
/// [`finish`](Self::finish). Holds each document's id once (end to end in one string) and, per
/// chunk, a document number beside the chunk's key: 20 bytes for a content-hash id.
#[derive(Debug, Default)]
pub struct ManifestBuilder {
    /// Document ids end to end, by number: document `d`'s ends at `ends[d]`.
    names: String,
    ends: Vec<usize>,
    /// Document numbers, found by their id (hashed with `hasher`).
    lookup: HashTable<u32>,
    hasher: RandomState,
    hashes: Vec<(u32, [u8; 16])>,
    others: Vec<(u32, Box<str>)>,
}

/// Document `d`'s id in `names` (ending at `ends`).
fn name<'a>(names: &'a str, ends: &[usize], d: u32) -> &'a str {
    let d = d as usize;
    let start = if d == 0 { 0 } else { ends[d - 1] };
    &names[start..ends[d]]
}

impl ManifestBuilder {
    /// Records that chunk `id` belongs to document `doc`.
    pub fn add(&mut self, doc: &str, id: ChunkKey) {
        let d = self.document(doc);
        match id {
            ChunkKey::Hash(bytes) => self.hashes.push((d, bytes)),
            ChunkKey::Other(id) => self.others.push((d, id)),
        }
    }

    /// The number of document `doc`, which gets an entry (with no chunks yet) if it had none.
    fn document(&mut self, doc: &str) -> u32 {
        let h = self.hasher.hash_one(doc);
        let Self {
            names,
            ends,
            lookup,
            hasher,
            ..
        } = self;
        if let Some(&d) = lookup.find(h, |&d| name(names, ends, d) == doc) {
            return d;
        }
        let d = u32::try_from(ends.len()).unwrap_or(u32::MAX);
        assert!(
            d < u32::MAX,
            "a manifest holds fewer than 2^32 - 1 documents"
        );
        names.push_str(doc);
        ends.push(names.len());
        lookup.insert_unique(h, d, |&d| hasher.hash_one(name(names, ends, d)));
        d
    }

    /// The manifest: documents sorted by id, each one's chunk ids sorted and distinct.
    pub fn finish(self) -> IndexManifest {
        let Self {
            names,
            ends,
            lookup,
            mut hashes,
            mut others,
            ..
        } = self;
        drop(lookup);
        let count = ends.len();
        // Document numbers become ranks in id order; each document's chunks then sort
        // together, in order.
        let mut order: Vec<u32> = (0..count as u32).collect();
        order.sort_unstable_by(|&a, &b| name(&names, &ends, a).cmp(name(&names, &ends, b)));
        let mut rank = vec![0u32; count];
        for (r, &d) in order.iter().enumerate() {
            rank[d as usize] = r as u32;
        }
        for pair in &mut hashes {
            pair.0 = rank[pair.0 as usize];
        }
        for pair in &mut others {
            pair.0 = rank[pair.0 as usize];
        }
        drop(rank);
        hashes.sort_unstable();
        hashes.dedup();
        others.sort_unstable();
        others.dedup();
        // Each document's run ends where the next document's starts.
        let run_ends = |ranks: &mut dyn Iterator<Item = u32>| {
            let mut run_ends = vec![0usize; count];
            let mut at = 0;
            let mut ranks = ranks.peekable();
            for (r, end) in run_ends.iter_mut().enumerate() {
                while ranks.next_if(|&p| p as usize == r).is_some() {
                    at += 1;
                }
                *end = at;
            }
            run_ends
        };
        let hash_ends = run_ends(&mut hashes.iter().map(|p| p.0));
        let other_ends = run_ends(&mut others.iter().map(|p| p.0));
        let mut sorted = String::with_capacity(names.len());
        let docs = order
            .iter()
            .zip(hash_ends.into_iter().zip(other_ends))
            .map(|(&d, (h, o))| {
                sorted.push_str(name(&names, &ends, d));
                (sorted.len(), h, o)
            })
            .collect();
        IndexManifest {
            names: sorted,
            docs,
            // In place: the pairs' memory holds the keys.
            hashes: hashes.into_iter().map(|(_, h)| h).collect(),
            others: others.into_iter().map(|(_, o)| o).collect(),
        }
    }
}

/// The JSON array of one document's chunk ids.
struct DocIds<'a>(&'a [[u8; 16]], &'a [Box<str>]);

impl Serialize for DocIds<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() + self.1.len()))?;
        for h in self.0 {
            seq.serialize_element(&hex::encode(h))?;
        }
        for o in self.1 {
            seq.serialize_element(&**o)?;
        }
        seq.end()
    }
}

impl IndexManifest {
    /// The manifest's JSON — the bytes `serde_json::to_vec` makes of it — in parts of about
    /// `part` bytes, a run of whole documents each, for
    /// [`ObjectStore::put_stream`](crate::ObjectStore::put_stream): the text (35 bytes a chunk)
    /// is never whole in memory.
    pub fn into_json_parts(
        self,
        part: usize,
    ) -> impl Iterator<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let mut next = 0;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut buf = Vec::with_capacity(part + 4096);
            if next == 0 {
                buf.extend_from_slice(br#"{"documents":{"#);
            }
            // At least one document a part, so every part moves on.
            let first = next;
            while next < self.len() && (next == first || buf.len() < part) {
                let (doc, (hashes, others)) = self.entry(next);
                if next > 0 {
                    buf.push(b',');
                }
                let written = serde_json::to_writer(&mut buf, doc).and_then(|()| {
                    buf.push(b':');
                    serde_json::to_writer(&mut buf, &DocIds(hashes, others))
                });
                if let Err(e) = written {
                    done = true;
                    return Some(Err(crate::Error::backend("pipeline", "index manifest", e)));
                }
                next += 1;
            }
            if next == self.len() {
                buf.extend_from_slice(b"}}");
                done = true;
            }
            Some(Ok(buf.into()))
        })
    }
}

impl Serialize for IndexManifest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Documents<'a>(&'a IndexManifest);
        impl Serialize for Documents<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for i in 0..self.0.len() {
                    let (doc, (hashes, others)) = self.0.entry(i);
                    map.serialize_entry(doc, &DocIds(hashes, others))?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("documents", &Documents(self))?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for IndexManifest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        /// The `documents` map, read a document at a time into a builder.
        struct Documents(IndexManifest);
        impl<'de> Deserialize<'de> for Documents {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                d.deserialize_map(DocumentsVisitor).map(Documents)
            }
        }
        struct DocumentsVisitor;
        impl<'de> Visitor<'de> for DocumentsVisitor {
            type Value = IndexManifest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of document ids to lists of chunk ids")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<IndexManifest, A::Error> {
                let mut builder = ManifestBuilder::default();
                while let Some(doc) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    builder.document(&doc);
                    for id in map.next_value::<Vec<ChunkKey>>()? {
                        builder.add(&doc, id);
                    }
                }
                Ok(builder.finish())
            }
        }
        #[derive(Deserialize)]
        struct Wire {
            documents: Documents,
        }
        Wire::deserialize(d).map(|w| w.documents.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// A manifest as the maps it stands for.
    type Plain = BTreeMap<String, BTreeSet<String>>;

    fn build(plain: &[(String, String)]) -> IndexManifest {
        let mut b = ManifestBuilder::default();
        for (doc, id) in plain {
            b.add(doc, ChunkKey::new(id));
        }
        b.finish()
    }

    fn plain_of(pairs: &[(String, String)]) -> Plain {
        let mut plain = Plain::new();
        for (doc, id) in pairs {
            plain.entry(doc.clone()).or_default().insert(id.clone());
        }
        plain
    }

    /// `stale_since` computed on plain maps.
    fn stale_plain(now: &Plain, before: &Plain) -> (Vec<String>, usize, usize) {
        let live: BTreeSet<&String> = now.values().flatten().collect();
        let mut stale = BTreeSet::new();
        let (mut removed, mut changed) = (0, 0);
        for (doc, ids) in before {
            match now.get(doc) {
                None => removed += 1,
                Some(n) if n != ids => changed += 1,
                Some(_) => continue,
            }
            for id in ids {
                if !live.contains(id) {
                    stale.insert(id.clone());
                }
            }
        }
        (stale.into_iter().collect(), removed, changed)
    }

    /// Chunk ids: content hashes (kept as bytes) and other ids (kept as they are) mixed.
    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..12).prop_map(|i| crate::chunk::chunk_id("d", &i.to_string())),
            (0u8..6).prop_map(|i| format!("doc.md#{i}")),
        ]
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(((0u8..6).prop_map(|d| format!("doc-{d}")), id()), 0..40)
    }

    proptest! {
        /// Built from chunks in any order (repeats included), the manifest holds each
        /// document's distinct ids sorted, writes the JSON the plain maps write, reads it back
        /// equal, and its stale chunk ids and counts are the plain maps'.
        #[test]
        fn the_compact_manifest_is_the_plain_maps(now in pairs(), before in pairs()) {
            let (m_now, m_before) = (build(&now), build(&before));
            let (p_now, p_before) = (plain_of(&now), plain_of(&before));
            let docs: Plain = m_now
                .documents()
                .map(|(d, ids)| {
                    let listed: Vec<String> = ids.iter().map(ChunkKey::to_string).collect();
                    let set: BTreeSet<String> = listed.iter().cloned().collect();
                    assert_eq!(listed.len(), set.len(), "ids repeated");
                    (d.to_string(), set)
                })
                .collect();
            prop_assert_eq!(&docs, &p_now);
            let json = serde_json::to_string(&m_now).unwrap();
            let expected: BTreeMap<&str, Vec<ChunkKey>> = p_now
                .iter()
                .map(|(d, ids)| {
                    let mut keys: Vec<ChunkKey> = ids.iter().map(|i| ChunkKey::new(i)).collect();
                    keys.sort();
                    (d.as_str(), keys)
                })
                .collect();
            prop_assert_eq!(&json, &serde_json::json!({ "documents": expected }).to_string());
            let back: IndexManifest = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &m_now);
            // In parts (of a few documents each, or all in one), the same bytes.
            for part in [1, 64, 1 << 20] {
                let parts: Vec<bytes::Bytes> =
                    back.clone().into_json_parts(part).map(Result::unwrap).collect();
                prop_assert!(parts.len() <= m_now.len().max(1));
                prop_assert_eq!(parts.concat(), json.as_bytes());
            }
            prop_assert_eq!(m_now.stale_since(&m_before), stale_plain(&p_now, &p_before));
            // Against the previous manifest's JSON, read a document at a time: the same.
            let (stale, removed, changed, same) = m_now
                .stale_since_json(serde_json::to_string(&m_before).unwrap().as_bytes())
                .unwrap();
            prop_assert_eq!((stale, removed, changed), stale_plain(&p_now, &p_before));
            prop_assert_eq!(same, m_now == m_before);
            let (.., same) = m_now.stale_since_json(json.as_bytes()).unwrap();
            prop_assert!(same);
        }
    }

    #[test]
    fn a_manifest_written_with_string_ids_reads_the_same() {
        let a = crate::chunk::chunk_id("a", "1");
        let json = format!(r#"{{"documents":{{"a.md":["{a}","custom-id"],"empty.md":[]}}}}"#);
        let manifest: IndexManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&manifest).unwrap(), json);
        assert_eq!(manifest.len(), 2);
        assert_eq!(manifest.get("empty.md"), Some(vec![]));
        let ids = manifest.get("a.md").unwrap();
        assert!(matches!(ids[..], [ChunkKey::Hash(_), ChunkKey::Other(_)]));
        let (stale, removed, changed) = IndexManifest::default().stale_since(&manifest);
        let mut expected = vec![a, "custom-id".to_string()];
        expected.sort();
        assert_eq!((stale, removed, changed), (expected, 2, 0));
    }

    #[test]
    fn a_manifest_that_is_not_one_is_an_error() {
        for bad in [
            r#"{"documents":[]}"#,
            r#"{"documents":{"a":"x"}}"#,
            "{}",
            "[]",
        ] {
            assert!(serde_json::from_str::<IndexManifest>(bad).is_err(), "{bad}");
            let now = IndexManifest::default();
            assert!(now.stale_since_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
