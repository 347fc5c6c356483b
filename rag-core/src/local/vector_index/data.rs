//! The in-memory state of one index: its records by slot, the id map, the text index and the
//! graph.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use serde_json::Value;

use super::rows::Rows;
use super::*;
use crate::chunk::ChunkKey;
use crate::index::FieldValue;

/// The graph of one index and whether it changed since it was saved.
pub(super) struct Ann {
    pub(super) factory: Arc<dyn AnnFactory>,
    pub(super) graph: Box<dyn AnnGraph>,
    pub(super) dirty: bool,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("len", &self.graph.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}

/// Which segment state a saved graph or text index describes.
#[derive(Serialize, Deserialize, PartialEq)]
pub(super) struct Stamp {
    pub(super) last_segment: String,
    pub(super) len: usize,
}

/// How the index answers text queries.
pub(super) enum Text {
    /// The in-memory BM25, keyed by slot.
    Builtin(Bm25),
    /// A factory's text index is attached once the segments are loaded (until then, records
    /// are not indexed for text at all: the attached index has them or is rebuilt).
    Pending,
    /// A factory's text index, keyed by record id.
    External {
        factory: Arc<dyn TextFactory>,
        index: Box<dyn TextIndex>,
    },
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(bm) => f.debug_tuple("Builtin").field(bm).finish(),
            Self::Pending => f.write_str("Pending"),
            Self::External { factory, .. } => f.debug_tuple("External").field(factory).finish(),
        }
    }
}

/// One live record beside the columns of [`IndexData`] (vector, norm, filter fields): its id,
/// and where its text and full metadata are ([`Body`]). Made on the spot from the slot's row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot<'a> {
    pub(super) id: IdRef<'a>,
    pub(super) body: Body<'a>,
}

/// Where a record's text and metadata are.
#[derive(Debug, Clone, Copy)]
pub(super) enum Body<'a> {
    /// In memory (an in-memory index): text and metadata.
    Here(&'a (String, Metadata)),
    /// In a segment file: the record's JSON header, `len` bytes at `offset`.
    Segment {
        file: &'a SegmentFile,
        offset: u64,
        len: u32,
    },
    /// Nowhere: a slot whose body was never recorded (never made by the index's writes).
    Missing,
}

/// A slot's row in [`IndexData::slots`]: its id's 16 bytes (a content-hash id; zeros for any
/// other, which `other_ids` keeps), its body's offset, then its file's number in
/// `IndexData::files` ([`HERE`]: the body is in `IndexData::here`) and length.
type SlotRow = [u64; 4];

/// The file number of a body kept in memory.
const HERE: u32 = u32::MAX;

fn slot_row(key: [u8; 16], file: u32, offset: u64, len: u32) -> SlotRow {
    let (a, b) = key.split_at(8);
    let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or_default());
    [
        word(a),
        word(b),
        offset,
        u64::from(file) | (u64::from(len) << 32),
    ]
}

fn row_key(row: &SlotRow) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&row[0].to_le_bytes());
    key[8..].copy_from_slice(&row[1].to_le_bytes());
    key
}

/// Slot `i`'s id: its row's bytes, or the other id kept for it.
fn id_of<'a>(
    slots: &Rows<SlotRow>,
    other_ids: &'a HashMap<usize, Box<str>>,
    i: usize,
) -> IdRef<'a> {
    let other = if other_ids.is_empty() {
        None
    } else {
        other_ids.get(&i)
    };
    match other {
        Some(id) => IdRef::Other(id),
        None => IdRef::Hash(row_key(&slots.one(i))),
    }
}

/// A row's body place: file number, offset, length.
fn row_place(row: &SlotRow) -> (u32, u64, u32) {
    (row[3] as u32, row[2], (row[3] >> 32) as u32)
}

/// Which slots are dead, a bit each.
#[derive(Debug, Default)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        self.len += 1;
        self.set(self.len - 1, bit);
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: usize, bit: bool) {
        let mask = 1u64 << (i % 64);
        if bit {
            self.words[i / 64] |= mask;
        } else {
            self.words[i / 64] &= !mask;
        }
    }

    /// `len` bits, all clear.
    fn clear(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }
}

/// The values of one of the schema's metadata fields, a row per slot ([`Rows`]: in a file of
/// the index's own where it has a directory), in the smallest form that filters can read back
/// exactly. Filters compare numbers as `f64` (`Filter::matches_by`),
/// so numeric fields keep that; keywords are codes into the distinct values (the chunks of a
/// document share theirs). A value of another type than the field's (a `null`) is kept as is
/// in `odd`, its row reading as empty in `rows`.
#[derive(Debug)]
pub(super) struct Column {
    rows: Values,
    odd: HashMap<usize, Value>,
}

#[derive(Debug)]
enum Values {
    Keyword {
        codes: Rows<u32>,
        values: Box<Distinct>,
    },
    Number(Rows<f64>),
    /// 0 false, 1 true, [`NO_BOOL`] none.
    Bool(Rows<u8>),
}

/// A keyword column's distinct values.
#[derive(Debug)]
struct Distinct {
    /// Their bytes end to end (in a file, as the codes): value `c` ends at byte `ends[c]`.
    /// Only the lookup table grows on the heap with them.
    text: Rows<u8>,
    ends: Rows<u64>,
    /// Codes, found by their value.
    lookup: HashTable<u32>,
}

/// A keyword row without a value.
const NO_CODE: u32 = u32::MAX;
/// A boolean row without a value.
const NO_BOOL: u8 = 2;

impl Column {
    /// An empty column of `kind`, its rows in a file in `dir` or on the heap.
    fn new(kind: FieldKind, dir: Option<&Path>) -> Self {
        fn rows<T: bytemuck::Pod>(dir: Option<&Path>) -> Rows<T> {
            match dir {
                Some(dir) => Rows::in_dir(dir, 1, "filter column"),
                None => Rows::heap(1),
            }
        }
        let rows = match kind {
            FieldKind::Keyword => Values::Keyword {
                codes: rows(dir),
                values: Box::new(Distinct {
                    text: rows(dir),
                    ends: rows(dir),
                    lookup: HashTable::new(),
                }),
            },
            FieldKind::Integer | FieldKind::Float => Values::Number(rows(dir)),
            FieldKind::Bool => Values::Bool(rows(dir)),
        };
        Self {
            rows,
            odd: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        match &self.rows {
            Values::Keyword { codes, .. } => codes.len(),
            Values::Number(values) => values.len(),
            Values::Bool(values) => values.len(),
        }
    }

    /// Writes the rows held in memory out to the column's file ([`Rows::flush`]).
    fn flush(&mut self) -> Result<()> {
        match &mut self.rows {
            Values::Keyword { codes, values } => {
                codes.flush()?;
                values.text.flush()?;
                values.ends.flush()
            }
            Values::Number(values) => values.flush(),
            Values::Bool(values) => values.flush(),
        }
    }

    /// Appends the next row's value.
    fn push(&mut self, value: Option<&Value>, hasher: &RandomState) {
        let row = self.len();
        let mut odd = |v: &Value| {
            self.odd.insert(row, v.clone());
        };
        match &mut self.rows {
            Values::Keyword { codes, values } => {
                let Distinct { text, ends, lookup } = &mut **values;
                let code = match value {
                    None => NO_CODE,
                    Some(Value::String(s)) => {
                        let h = hasher.hash_one(s.as_str());
                        let same = |&c: &u32| keyword(text, ends, c) == s;
                        match lookup.find(h, same) {
                            Some(&c) => c,
                            None => {
                                let c = u32::try_from(ends.len()).unwrap_or(NO_CODE);
                                assert!(c != NO_CODE, "fewer than 2^32 - 1 distinct keywords");
                                text.extend(s.as_bytes());
                                ends.push(&[text.len() as u64]);
                                let rehash = |&c: &u32| hasher.hash_one(keyword(text, ends, c));
                                lookup.insert_unique(h, c, rehash);
                                c
                            }
                        }
                    }
                    Some(other) => {
                        odd(other);
                        NO_CODE
                    }
                };
                codes.push(&[code]);
            }
            Values::Number(values) => values.push(&[match value {
                None => f64::NAN,
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() => x,
                    _ => {
                        odd(v);
                        f64::NAN
                    }
                },
            }]),
            Values::Bool(values) => values.push(&[match value {
                None => NO_BOOL,
                Some(Value::Bool(b)) => u8::from(*b),
                Some(other) => {
                    odd(other);
                    NO_BOOL
                }
            }]),
        }
    }

    /// Renumbers rows `live` (ascending) as `0..live.len()` and drops the rest
    /// ([`Rows::renumber`]).
    fn renumber(&mut self, live: &[usize]) -> Result<()> {
        match &mut self.rows {
            Values::Keyword { codes, .. } => codes.renumber(live)?,
            Values::Number(values) => values.renumber(live)?,
            Values::Bool(values) => values.renumber(live)?,
        }
        renumber_map(&mut self.odd, live);
        Ok(())
    }

    /// Row `row`'s value (a number as the `f64` filters compare).
    pub(super) fn get(&self, row: usize) -> Option<FieldValue<'_>> {
        let value = match &self.rows {
            Values::Keyword { codes, values } => match codes.one(row) {
                NO_CODE => None,
                c => Some(FieldValue::Str(keyword(&values.text, &values.ends, c))),
            },
            Values::Number(values) => {
                let x = values.one(row);
                (!x.is_nan()).then_some(FieldValue::Number(x))
            }
            Values::Bool(values) => match values.one(row) {
                NO_BOOL => None,
                b => Some(FieldValue::Bool(b == 1)),
            },
        };
        value.or_else(|| self.odd.get(&row).map(FieldValue::Json))
    }
}

/// Re-keys `map` (by slot) for the renumbering of slots `live` (ascending) as
/// `0..live.len()`, dropping the entries of other slots.
fn renumber_map<V>(map: &mut HashMap<usize, V>, live: &[usize]) {
    if !map.is_empty() {
        *map = std::mem::take(map)
            .into_iter()
            .filter_map(|(i, v)| Some((live.binary_search(&i).ok()?, v)))
            .collect();
    }
}

/// Keyword `c` of the distinct values `text` (ending at `ends`).
fn keyword<'a>(text: &'a Rows<u8>, ends: &Rows<u64>, c: u32) -> &'a str {
    let c = c as usize;
    let start = if c == 0 { 0 } else { ends.one(c - 1) as usize };
    let bytes = text.range(start, ends.one(c) as usize);
    // The bytes of a `&str`, pushed whole: never other than UTF-8 but by a bug here.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// A record id as the id table hashes and compares it: a content-hash id as its bytes (as
/// [`ChunkKey`] keeps it), any other as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum IdRef<'a> {
    Hash([u8; 16]),
    Other(&'a str),
}

impl std::fmt::Display for IdRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hash(bytes) => f.write_str(&hex::encode(bytes)),
            Self::Other(id) => f.write_str(id),
        }
    }
}

impl<'a> IdRef<'a> {
    fn of(id: &'a str) -> Self {
        ChunkKey::hash_bytes(id).map_or(Self::Other(id), Self::Hash)
    }

    fn key(key: &'a ChunkKey) -> Self {
        match key {
            ChunkKey::Hash(bytes) => Self::Hash(*bytes),
            ChunkKey::Other(id) => Self::Other(id),
        }
    }
}

/// A segment file held open for reading records' bodies. The handle outlives the name: a
/// merge removes the file after re-pointing its records, and a reader process keeps reading
/// what it loaded.
#[derive(Debug)]
pub(super) struct SegmentFile {
    pub(super) path: PathBuf,
    file: std::fs::File,
}

impl SegmentFile {
    /// Opens `path` for reading bodies (`None` where positional reads are not available).
    pub(super) fn open(path: &Path) -> Result<Option<Arc<Self>>> {
        if !cfg!(unix) {
            return Ok(None);
        }
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
        Ok(Some(Arc::new(Self {
            path: path.to_path_buf(),
            file,
        })))
    }

    #[cfg(unix)]
    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(e, format!("reading {}", self.path.display())))?;
        Ok(buf)
    }

    #[cfg(not(unix))]
    fn read(&self, _offset: u64, _len: u32) -> Result<Vec<u8>> {
        Err(Error::invalid("positional reads need a unix system"))
    }
}

impl Slot<'_> {
    /// The record's text and full metadata.
    pub(super) fn body(&self) -> Result<(String, Metadata)> {
        match self.body {
            Body::Here(here) => Ok((here.0.clone(), here.1.clone())),
            Body::Segment { file, offset, len } => {
                let bytes = file.read(offset, len)?;
                match serde_json::from_slice(&bytes) {
                    Ok(super::segments::SegmentHeader::Upsert { text, metadata, .. }) => {
                        Ok((text.into_owned(), metadata.into_owned()))
                    }
                    _ => Err(Error::corrupt(
                        file.path.display().to_string(),
                        format!("no record at byte {offset} (the segment changed on disk)"),
                    )),
                }
            }
            Body::Missing => Err(Error::corrupt(
                format!("record {}", self.id),
                "its text and metadata are nowhere (an index bug)",
            )),
        }
    }
}

/// One index in memory. Per record it holds what a search scans, column by column (slot `i`'s
/// vector is `vectors[i * dims..][..dims]`, its norm `norms[i]`, its filter fields row `i` of
/// `columns`), its id in `slots` and the id table; dead slots keep their rows until a
/// compaction renumbers the live ones.
#[derive(Debug)]
pub(super) struct IndexData {
    pub(super) schema: IndexSchema,
    /// Each slot's id and body place ([`SlotRow`]), dead ones included until a compaction.
    slots: Rows<SlotRow>,
    dead: Bits,
    /// The segment files bodies lie in, by the number slot rows hold (`None`: free).
    files: Vec<Option<Arc<SegmentFile>>>,
    /// Bodies kept in memory (an in-memory index), by slot.
    here: HashMap<usize, Box<(String, Metadata)>>,
    /// Ids that are not content hashes, by slot.
    other_ids: HashMap<usize, Box<str>>,
    vectors: Rows<f32>,
    norms: Rows<f32>,
    /// One per schema metadata field, in the schema's order.
    columns: Vec<Column>,
    /// The live slots, found by their record's id (hashed with `hasher`): the ids are not
    /// stored twice. Slot numbers as `u32` (4 bytes a record, not 8).
    ids: HashTable<u32>,
    hasher: RandomState,
    pub(super) text: Text,
    pub(super) dir: Option<PathBuf>,
    pub(super) segments: Vec<PathBuf>,
    pub(super) ann: Option<Ann>,
    /// Whether this process holds the directory's writer lock ([`DirLock`](crate::local::DirLock)).
    pub(super) writer: bool,
}

impl IndexData {
    /// An empty index; with `external_text` its text index comes from a factory later
    /// ([`attach_text`](Self::attach_text)), else it keeps the in-memory BM25.
    pub(super) fn new(schema: IndexSchema, dir: Option<PathBuf>, external_text: bool) -> Self {
        Self {
            text: if external_text {
                Text::Pending
            } else {
                Text::Builtin(Bm25::new(schema.analyzer))
            },
            vectors: match &dir {
                Some(dir) => Rows::in_dir(dir, schema.dims, "vector"),
                None => Rows::heap(schema.dims),
            },
            norms: match &dir {
                Some(dir) => Rows::in_dir(dir, 1, "norm"),
                None => Rows::heap(1),
            },
            columns: schema
                .metadata_fields
                .iter()
                .map(|f| Column::new(f.kind, dir.as_deref()))
                .collect(),
            schema,
            slots: match &dir {
                Some(dir) => Rows::in_dir(dir, 1, "slot"),
                None => Rows::heap(1),
            },
            dead: Bits::default(),
            files: Vec::new(),
            here: HashMap::new(),
            other_ids: HashMap::new(),
            ids: HashTable::new(),
            hasher: RandomState::new(),
            dir,
            segments: Vec::new(),
            ann: None,
            writer: false,
        }
    }

    /// How many records are live.
    pub(super) fn live_len(&self) -> usize {
        self.ids.len()
    }

    /// How many slots there are, dead ones included.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether slot `i` holds a live record.
    pub(super) fn is_live(&self, i: usize) -> bool {
        i < self.slots.len() && !self.dead.get(i)
    }

    /// The live record of slot `i`.
    pub(super) fn slot(&self, i: usize) -> Option<Slot<'_>> {
        self.is_live(i).then(|| self.slot_at(i))
    }

    /// Slot `i`'s record, live or not.
    fn slot_at(&self, i: usize) -> Slot<'_> {
        let row = self.slots.one(i);
        let (file, offset, len) = row_place(&row);
        let body = match self.files.get(file as usize) {
            Some(Some(file)) => Body::Segment { file, offset, len },
            _ => self
                .here
                .get(&i)
                .map_or(Body::Missing, |here| Body::Here(here)),
        };
        Slot {
            id: self.id_at(i),
            body,
        }
    }

    /// Slot `i`'s id.
    fn id_at(&self, i: usize) -> IdRef<'_> {
        id_of(&self.slots, &self.other_ids, i)
    }

    /// Every live slot with its record.
    pub(super) fn live(&self) -> impl Iterator<Item = (usize, Slot<'_>)> {
        self.live_slots().map(|i| (i, self.slot_at(i)))
    }

    /// Every live slot's number (what a scan over the columns iterates: no row of the slot
    /// file is read).
    pub(super) fn live_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|&i| !self.dead.get(i))
    }

    /// The live slot holding record `id`.
    pub(super) fn slot_of(&self, id: &str) -> Option<usize> {
        self.find(IdRef::of(id))
    }

    fn find(&self, id: IdRef<'_>) -> Option<usize> {
        self.ids
            .find(self.hasher.hash_one(id), |&i| self.id_at(i as usize) == id)
            .map(|&i| i as usize)
    }

    /// The number rows hold for segment file `file` (an entry of `files`, a free one reused).
    fn file_number(&mut self, file: &Arc<SegmentFile>) -> u32 {
        if let Some(n) = self
            .files
            .iter()
            .rposition(|f| f.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)))
        {
            return n as u32;
        }
        match self.files.iter().position(Option::is_none) {
            Some(n) => {
                self.files[n] = Some(file.clone());
                n as u32
            }
            None => {
                self.files.push(Some(file.clone()));
                (self.files.len() - 1) as u32
            }
        }
    }

    /// Re-points the bodies that lay in the segment files of `shift` (path → how far their
    /// records moved) to `to`, where a merge copied them; those files' numbers are freed.
    pub(super) fn move_bodies(
        &mut self,
        shift: &HashMap<PathBuf, i64>,
        to: &Arc<SegmentFile>,
    ) -> Result<()> {
        let moved: HashMap<u32, i64> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(n, f)| Some((n as u32, *shift.get(&f.as_ref()?.path)?)))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let to = self.file_number(to);
        self.slots.update(|_, row| {
            let (file, offset, len) = row_place(&row[0]);
            let Some(d) = moved.get(&file) else {
                return false;
            };
            let new = (offset as i64 + d) as u64;
            row[0] = slot_row(row_key(&row[0]), to, new, len);
            true
        })?;
        for n in moved.keys() {
            self.files[*n as usize] = None;
        }
        Ok(())
    }

    /// Puts every slot's body in `file`, at `places` (one per slot, in order): a full
    /// rewrite's new segment.
    pub(super) fn place_all(
        &mut self,
        file: &Arc<SegmentFile>,
        places: &[(u64, u32)],
    ) -> Result<()> {
        debug_assert_eq!(places.len(), self.slots.len());
        self.files = vec![Some(file.clone())];
        self.here.clear();
        self.slots.update(|i, row| {
            let (offset, len) = places[i];
            row[0] = slot_row(row_key(&row[0]), 0, offset, len);
            true
        })
    }

    /// Slot `i`'s vector.
    pub(super) fn vector(&self, i: usize) -> &[f32] {
        self.vectors.get(i)
    }

    /// Appends the vectors of records about to be applied, in the order they will be
    /// ([`apply_upsert`](Self::apply_upsert) takes the next row): the step of a write that may
    /// fail (a full disk), done before anything of it changes.
    pub(super) fn append_vectors(&mut self, vectors: &[&[f32]]) -> Result<()> {
        // The rows of earlier writes go out to their files first: what may fail.
        self.vectors.flush()?;
        self.norms.flush()?;
        self.slots.flush()?;
        for column in &mut self.columns {
            column.flush()?;
        }
        for v in vectors {
            self.vectors.push(v);
            self.norms.push(&[crate::embedding::dot(v, v).sqrt()]);
        }
        Ok(())
    }

    /// Slot `i`'s vector's length.
    pub(super) fn norm(&self, i: usize) -> f32 {
        self.norms.one(i)
    }

    /// Slot `i`'s whole record.
    pub(super) fn record(&self, i: usize, slot: Slot<'_>) -> Result<IndexRecord> {
        let (text, metadata) = slot.body()?;
        Ok(IndexRecord {
            id: slot.id.to_string(),
            vector: self.vector(i).to_vec(),
            text,
            metadata,
        })
    }

    /// Applies an upsert whose vector was appended ([`append_vectors`](Self::append_vectors))
    /// and whose record lies in a segment at `at` (its body is then read from there, not
    /// kept), or in memory only with `None`; returns the slot it replaced, if any, and its
    /// own slot.
    pub(super) fn apply_upsert(
        &mut self,
        record: IndexRecord,
        at: Option<(&Arc<SegmentFile>, u64, u32)>,
    ) -> (Option<usize>, usize) {
        let IndexRecord {
            id, text, metadata, ..
        } = record;
        if let Text::Builtin(bm) = &mut self.text {
            bm.add(self.slots.len(), &text);
        }
        let fields: Vec<Option<&Value>> = self
            .schema
            .metadata_fields
            .iter()
            .map(|f| metadata.get(&f.name))
            .collect();
        let (file, offset, len) = match at {
            Some((file, offset, len)) => (self.file_number(file), offset, len),
            None => {
                self.here
                    .insert(self.slots.len(), Box::new((text, metadata.clone())));
                (HERE, 0, 0)
            }
        };
        self.insert(ChunkKey::new(&id), (file, offset, len), &fields)
    }

    /// Puts a record in the next slot number — the next appended vector row, the values of
    /// the schema's fields (in its order) and where its body is (a file number, offset and
    /// length) — replacing a live record of its id; returns the slot it replaced, if any, and
    /// its own.
    fn insert(
        &mut self,
        id: ChunkKey,
        (file, offset, len): (u32, u64, u32),
        fields: &[Option<&Value>],
    ) -> (Option<usize>, usize) {
        let h = self.hasher.hash_one(IdRef::key(&id));
        let replaced = self.delete(IdRef::key(&id));
        let at = self.slots.len();
        debug_assert!(at < self.norms.len(), "the record's vector was appended");
        for (column, value) in self.columns.iter_mut().zip(fields) {
            column.push(*value, &self.hasher);
        }
        let key = match id {
            ChunkKey::Hash(bytes) => bytes,
            ChunkKey::Other(id) => {
                self.other_ids.insert(at, id);
                [0; 16]
            }
        };
        self.slots.push(&[slot_row(key, file, offset, len)]);
        self.dead.push(false);
        let Self {
            ids,
            slots,
            other_ids,
            hasher,
            ..
        } = self;
        let slot = u32::try_from(at).unwrap_or(u32::MAX);
        assert!(slot != u32::MAX, "an index holds fewer than 2^32 - 1 slots");
        ids.insert_unique(h, slot, |&i| {
            hasher.hash_one(id_of(slots, other_ids, i as usize))
        });
        (replaced, at)
    }

    /// Renumbers the live slots `live` (ascending: every live slot) as `0..live.len()`, in
    /// order, moving their rows down in place — no second copy of the index — and drops the
    /// dead ones. The id table's hashes stay; its slot numbers are rewritten.
    pub(super) fn renumber(&mut self, live: &[usize]) -> Result<()> {
        self.vectors.renumber(live)?;
        self.norms.renumber(live)?;
        self.slots.renumber(live)?;
        for column in &mut self.columns {
            column.renumber(live)?;
        }
        self.dead = Bits::clear(live.len());
        renumber_map(&mut self.here, live);
        renumber_map(&mut self.other_ids, live);
        for slot in self.ids.iter_mut() {
            if let Ok(new) = live.binary_search(&(*slot as usize)) {
                *slot = new as u32;
            }
        }
        Ok(())
    }

    /// Slot `i`'s values of the schema's fields, in its order.
    #[cfg(test)]
    pub(super) fn fields(&self, i: usize) -> Vec<Option<FieldValue<'_>>> {
        self.columns.iter().map(|c| c.get(i)).collect()
    }

    /// Whether slot `i` passes `filter`, reading its filter fields.
    pub(super) fn passes(&self, filter: &crate::index::Filter, i: usize) -> bool {
        let fields = &self.schema.metadata_fields;
        filter.matches_by(&|name| {
            let c = fields.iter().position(|f| f.name == name)?;
            self.columns[c].get(i)
        })
    }

    pub(super) fn apply_delete(&mut self, id: &str) -> bool {
        self.delete(IdRef::of(id)).is_some()
    }

    /// Removes the live record `id`; returns the slot it had.
    fn delete(&mut self, id: IdRef<'_>) -> Option<usize> {
        let Self {
            ids,
            slots,
            other_ids,
            hasher,
            ..
        } = self;
        let found = ids.find_entry(hasher.hash_one(id), |&i| {
            id_of(slots, other_ids, i as usize) == id
        });
        let (slot, _) = found.ok()?.remove();
        let slot = slot as usize;
        self.dead.set(slot, true);
        self.here.remove(&slot);
        self.other_ids.remove(&slot);
        if let Text::Builtin(bm) = &mut self.text {
            bm.remove(slot);
        }
        Some(slot)
    }

    /// Checks one record against the schema.
    pub(super) fn check(&self, r: &IndexRecord) -> std::result::Result<(), String> {
        if r.id.is_empty() {
            return Err("empty id".into());
        }
        if r.vector.len() != self.schema.dims {
            return Err(format!(
                "dimension mismatch: expected {}, got {}",
                self.schema.dims,
                r.vector.len()
            ));
        }
        if r.vector.iter().any(|x| !x.is_finite()) {
            return Err("vector holds NaN or infinity".into());
        }
        for f in &self.schema.metadata_fields {
            if let Some(v) = r.metadata.get(&f.name) {
                let ok = match f.kind {
                    FieldKind::Keyword => v.is_string(),
                    FieldKind::Integer => v.is_i64() || v.is_u64(),
                    FieldKind::Float => v.is_number(),
                    FieldKind::Bool => v.is_boolean(),
                };
                if !ok && !v.is_null() {
                    return Err(format!(
                        "metadata field {:?} is not {:?}: {v}",
                        f.name, f.kind
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for IndexData {
    fn drop(&mut self) {
        // Best effort: a graph or text index not saved here is rebuilt on the next open.
        if self.dir.as_ref().is_some_and(|d| d.exists()) {
            if let Err(e) = self.save_ann() {
                tracing::warn!(error = %e, index = %self.schema.name, "saving the ANN graph failed");
            }
            if let Err(e) = self.commit_text() {
                tracing::warn!(error = %e, index = %self.schema.name, "saving the text index failed");
            }
        }
    }
}
