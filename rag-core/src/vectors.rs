//! Vector shards: embedded chunks as Parquet (seed step 5, `vector-indexes/`).
//!
//! Columns: `id`, `doc_id`, `title`, `source`, `text` (UTF-8), `start`, `end`, `ordinal`
//! (UInt64), `section` (UTF-8, empty for none), `page` and `page_end` (UInt32, null for none)
//! and `vector` (`FixedSizeList<Float32>`). Shards written before `section` and the pages
//! existed read with them empty. File metadata holds the model id, the
//! dimension, whether vectors are normalised and a hash of the chunks' source text, so that a
//! reader knows which model made the vectors and a re-run knows whether a shard is current.
//!
//! Parquet's pages carry no checksum as written here, so the metadata also holds a CRC-32 of
//! every row's content (`ragloop.content_crc32`), checked by every reader before it returns a
//! row: a changed byte is [`Error::Corrupt`], never text that is not in the source. Vectors
//! must be finite. Shards written before the CRC read without it.

use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::chunk::Chunk;
use crate::error::{Error, Result};

/// A chunk and its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedChunk {
    /// The chunk.
    pub chunk: Chunk,
    /// Its embedding.
    pub vector: Vec<f32>,
}

/// What a shard's file metadata records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    /// The embedding model's id.
    pub model_id: String,
    /// Vector dimension.
    pub dims: usize,
    /// Whether vectors have unit norm.
    pub normalized: bool,
    /// [`source_hash`] of the shard's chunks.
    pub source_hash: String,
}

const KEY_MODEL: &str = "ragloop.model_id";
const KEY_DIMS: &str = "ragloop.dims";
const KEY_NORM: &str = "ragloop.normalized";
const KEY_HASH: &str = "ragloop.source_hash";
const KEY_CRC: &str = "ragloop.content_crc32";

/// What a damaged shard's error says to do.
const REEMBED: &str = "the embed stage writes it again (rerun `ragloop run`, or remove the file)";

/// SHA-256 over the chunk ids (which hash document id and text) of a shard, in order.
pub fn source_hash<'a>(chunks: impl IntoIterator<Item = &'a Chunk>) -> String {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn schema(dims: usize) -> Result<Arc<Schema>> {
    let dims = i32::try_from(dims).map_err(|_| Error::invalid("dims too large"))?;
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    let int = |n: &str| Field::new(n, DataType::UInt64, false);
    Ok(Arc::new(Schema::new(vec![
        text("id"),
        text("doc_id"),
        text("title"),
        text("source"),
        text("text"),
        int("start"),
        int("end"),
        int("ordinal"),
        text("section"),
        Field::new("page", DataType::UInt32, true),
        Field::new("page_end", DataType::UInt32, true),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dims),
            false,
        ),
    ])))
}

/// Encodes rows as one Parquet file (Snappy-compressed).
pub fn write_shard(rows: &[EmbeddedChunk], meta: &ShardMeta) -> Result<Bytes> {
    if let Some(bad) = rows.iter().find(|r| r.vector.len() != meta.dims) {
        return Err(Error::DimensionMismatch {
            expected: meta.dims,
            actual: bad.vector.len(),
        });
    }
    let schema = schema(meta.dims)?;
    let strings = |f: fn(&Chunk) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| f(&r.chunk)),
        ))
    };
    let ints = |f: fn(&Chunk) -> usize| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| f(&r.chunk) as u64),
        ))
    };
    let mut vectors = FixedSizeListBuilder::with_capacity(
        Float32Builder::with_capacity(rows.len() * meta.dims),
        meta.dims as i32,
        rows.len(),
    )
    .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
    for r in rows {
        vectors.values().append_slice(&r.vector);
        vectors.append(true);
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            strings(|c| &c.id),
            strings(|c| &c.doc_id),
            strings(|c| &c.title),
            strings(|c| &c.source),
            strings(|c| &c.text),
            ints(|c| c.start),
            ints(|c| c.end),
            ints(|c| c.ordinal),
            strings(|c| &c.section),
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.chunk.page))),
            Arc::new(UInt32Array::from_iter(
                rows.iter().map(|r| r.chunk.page_end),
            )),
            Arc::new(vectors.finish()),
        ],
    )
    .map_err(|e| Error::backend("parquet", "building record batch", e))?;

    let mut crc = crc32fast::Hasher::new();
    hash_rows(&batch, meta.dims, &mut crc)?;
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![
            kv(KEY_MODEL, meta.model_id.clone()),
            kv(KEY_DIMS, meta.dims.to_string()),
            kv(KEY_NORM, meta.normalized.to_string()),
            kv(KEY_HASH, meta.source_hash.clone()),
            kv(KEY_CRC, crc.finalize().to_string()),
        ]))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))
        .map_err(|e| Error::backend("parquet", "opening writer", e))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| Error::backend("parquet", "writing shard", e))?;
    Ok(Bytes::from(buf))
}

/// Reads only a shard's metadata (nothing of its rows is checked; see [`verify_shard`]).
pub fn read_shard_meta(data: Bytes) -> Result<ShardMeta> {
    guarded(|| {
        let builder = ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?;
        shard_meta(&builder)
    })
}

/// Runs a Parquet read, turning a panic of the decoder (it asserts on some damaged footers,
/// found by the byte-flip property test below) into [`Error::Corrupt`].
fn guarded<T>(read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(damaged("the Parquet decoder failed on it")))
}

fn key_values(builder: &ParquetRecordBatchReaderBuilder<Bytes>) -> Vec<KeyValue> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
}

fn shard_meta(builder: &ParquetRecordBatchReaderBuilder<Bytes>) -> Result<ShardMeta> {
    let kv = key_values(builder);
    let get = |k: &str| {
        kv.iter()
            .find(|e| e.key == k)
            .and_then(|e| e.value.clone())
            .ok_or_else(|| Error::invalid(format!("Parquet file lacks the {k} metadata")))
    };
    Ok(ShardMeta {
        model_id: get(KEY_MODEL)?,
        dims: get(KEY_DIMS)?
            .parse()
            .map_err(|_| Error::invalid("bad ragloop.dims"))?,
        normalized: get(KEY_NORM)? == "true",
        source_hash: get(KEY_HASH)?,
    })
}

/// The content CRC the writer recorded (`None`: a shard from before it was recorded). A key
/// the writer never writes is damage too: a changed letter in the CRC's own key would
/// otherwise pass the shard off as one from before the CRC.
fn stored_crc(builder: &ParquetRecordBatchReaderBuilder<Bytes>) -> Result<Option<u32>> {
    let kv = key_values(builder);
    const KNOWN: [&str; 6] = [
        KEY_MODEL,
        KEY_DIMS,
        KEY_NORM,
        KEY_HASH,
        KEY_CRC,
        "ARROW:schema",
    ];
    if let Some(odd) = kv.iter().find(|e| !KNOWN.contains(&e.key.as_str())) {
        return Err(damaged(&format!("unknown metadata key {:?}", odd.key)));
    }
    kv.iter()
        .find(|e| e.key == KEY_CRC)
        .map(|e| {
            e.value
                .as_deref()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| damaged("its content checksum is unreadable"))
        })
        .transpose()
}

fn damaged(why: &str) -> Error {
    Error::corrupt("vector shard", format!("{why}; {REEMBED}"))
}

/// Checks a whole shard — Parquet decoding, every vector finite, the content CRC — and returns
/// its metadata; memory stays at one row group. The embed stage calls it before it keeps a
/// shard as current, so a damaged one is embedded again.
pub fn verify_shard(data: Bytes) -> Result<ShardMeta> {
    guarded(|| checked_pass(data, |_, _| Ok(())))
}

/// One checked pass over a shard: every batch is hashed (vectors checked finite) and handed
/// to `each` with the dims; the content CRC is compared at the end.
fn checked_pass(
    data: Bytes,
    mut each: impl FnMut(&RecordBatch, usize) -> Result<()>,
) -> Result<ShardMeta> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?;
    let meta = shard_meta(&builder)?;
    let stored = stored_crc(&builder)?;
    let reader = builder
        .build()
        .map_err(|e| Error::backend("parquet", "opening reader", e))?;
    let mut crc = crc32fast::Hasher::new();
    for batch in reader {
        let batch = batch.map_err(|e| damaged(&format!("Parquet decoding failed: {e}")))?;
        hash_rows(&batch, meta.dims, &mut crc)?;
        each(&batch, meta.dims)?;
    }
    match stored {
        Some(want) if want != crc.finalize() => Err(damaged("content checksum mismatch")),
        _ => Ok(meta),
    }
}

/// Decodes a shard written by [`write_shard`], checked as [`verify_shard`] checks it.
pub fn read_shard(data: Bytes) -> Result<(ShardMeta, Vec<EmbeddedChunk>)> {
    let mut rows = Vec::new();
    let meta = guarded(|| checked_pass(data, |b, dims| decode_batch(b, dims, &mut rows)))?;
    Ok((meta, rows))
}

/// Decodes a shard `rows` rows at a time: only one batch of decoded rows is in memory besides
/// the file itself, so loading an index from shards stays bounded whatever the corpus size.
/// The whole shard is checked ([`verify_shard`]) before the first batch is returned.
pub fn read_shard_batches(data: Bytes, rows: usize) -> Result<(ShardMeta, ShardBatches)> {
    let meta = verify_shard(data.clone())?;
    let reader = guarded(|| {
        ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?
            .with_batch_size(rows.max(1))
            .build()
            .map_err(|e| Error::backend("parquet", "opening reader", e))
    })?;
    let dims = meta.dims;
    Ok((meta, ShardBatches { reader, dims }))
}

/// Feeds every row's content to `crc` (strings length-prefixed, integers little-endian, a
/// missing page as a flag, vectors as f32 bits) and checks each vector is finite.
fn hash_rows(batch: &RecordBatch, dims: usize, crc: &mut crc32fast::Hasher) -> Result<()> {
    let c = Columns::of(batch, dims)?;
    let text = |crc: &mut crc32fast::Hasher, s: &str| {
        crc.update(&(s.len() as u64).to_le_bytes());
        crc.update(s.as_bytes());
    };
    let page = |crc: &mut crc32fast::Hasher, p: Option<&UInt32Array>, i: usize| match p {
        Some(p) if p.is_valid(i) => {
            crc.update(&[1]);
            crc.update(&p.value(i).to_le_bytes());
        }
        _ => crc.update(&[0]),
    };
    for i in 0..batch.num_rows() {
        for col in [c.id, c.doc_id, c.title, c.source, c.text] {
            text(crc, col.value(i));
        }
        for col in [c.start, c.end, c.ordinal] {
            crc.update(&col.value(i).to_le_bytes());
        }
        text(crc, c.section.map_or("", |s| s.value(i)));
        page(crc, c.page, i);
        page(crc, c.page_end, i);
        let v = c.vector(i);
        if !v.iter().all(|x| x.is_finite()) {
            return Err(damaged(&format!(
                "row {:?} has a non-finite vector",
                c.id.value(i)
            )));
        }
        v.iter().for_each(|x| crc.update(&x.to_le_bytes()));
    }
    Ok(())
}

/// The typed columns of a shard's record batch.
struct Columns<'a> {
    id: &'a StringArray,
    doc_id: &'a StringArray,
    title: &'a StringArray,
    source: &'a StringArray,
    text: &'a StringArray,
    start: &'a UInt64Array,
    end: &'a UInt64Array,
    ordinal: &'a UInt64Array,
    section: Option<&'a StringArray>,
    page: Option<&'a UInt32Array>,
    page_end: Option<&'a UInt32Array>,
    vectors: &'a FixedSizeListArray,
    values: &'a arrow_array::Float32Array,
    dims: usize,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch, dims: usize) -> Result<Self> {
        fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| Error::invalid(format!("shard column {name:?} missing or mistyped")))
        }
        // Optional columns (absent from shards of earlier versions).
        fn optional<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<Option<&'a T>> {
            b.column_by_name(name)
                .map(|_| col::<T>(b, name))
                .transpose()
        }
        let vectors = col::<FixedSizeListArray>(batch, "vector")?;
        if vectors.value_length() as usize != dims {
            return Err(Error::DimensionMismatch {
                expected: dims,
                actual: vectors.value_length() as usize,
            });
        }
        let values = vectors
            .values()
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .ok_or_else(|| Error::invalid("vector values are not Float32"))?;
        if values.len() < batch.num_rows() * dims + vectors.offset() * dims {
            return Err(damaged("fewer vector values than rows"));
        }
        Ok(Self {
            id: col(batch, "id")?,
            doc_id: col(batch, "doc_id")?,
            title: col(batch, "title")?,
            source: col(batch, "source")?,
            text: col(batch, "text")?,
            start: col(batch, "start")?,
            end: col(batch, "end")?,
            ordinal: col(batch, "ordinal")?,
            section: optional(batch, "section")?,
            page: optional(batch, "page")?,
            page_end: optional(batch, "page_end")?,
            vectors,
            values,
            dims,
        })
    }

    fn vector(&self, i: usize) -> &'a [f32] {
        let off = self.vectors.value_offset_at(i);
        &self.values.values()[off..off + self.dims]
    }
}

/// The row batches of one shard, from [`read_shard_batches`].
pub struct ShardBatches {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    dims: usize,
}

impl std::fmt::Debug for ShardBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBatches")
            .field("dims", &self.dims)
            .finish_non_exhaustive()
    }
}

impl Iterator for ShardBatches {
    type Item = Result<Vec<EmbeddedChunk>>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = &mut self.reader;
        let batch = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next())) {
            Ok(batch) => batch?,
            Err(_) => return Some(Err(damaged("the Parquet decoder failed on it"))),
        };
        Some(
            batch
                .map_err(|e| Error::invalid(format!("corrupt Parquet shard: {e}")))
                .and_then(|b| {
                    let mut rows = Vec::with_capacity(b.num_rows());
                    decode_batch(&b, self.dims, &mut rows)?;
                    Ok(rows)
                }),
        )
    }
}

fn decode_batch(batch: &RecordBatch, dims: usize, out: &mut Vec<EmbeddedChunk>) -> Result<()> {
    let c = Columns::of(batch, dims)?;
    let page =
        |p: Option<&UInt32Array>, i: usize| p.and_then(|p| p.is_valid(i).then(|| p.value(i)));
    for i in 0..batch.num_rows() {
        out.push(EmbeddedChunk {
            chunk: Chunk {
                id: c.id.value(i).to_string(),
                doc_id: c.doc_id.value(i).to_string(),
                title: c.title.value(i).to_string(),
                source: c.source.value(i).to_string(),
                text: c.text.value(i).to_string(),
                start: c.start.value(i) as usize,
                end: c.end.value(i) as usize,
                ordinal: c.ordinal.value(i) as usize,
                section: c
                    .section
                    .map(|s| s.value(i).to_string())
                    .unwrap_or_default(),
                page: page(c.page, i),
                page_end: page(c.page_end, i),
            },
            vector: c.vector(i).to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, v: Vec<f32>) -> EmbeddedChunk {
        EmbeddedChunk {
            chunk: Chunk {
                id: id.into(),
                doc_id: "d".into(),
                title: "T".into(),
                source: "oss://b/raw-docs/x".into(),
                text: format!("text of {id} ü"),
                start: 3,
                end: 9,
                ordinal: 1,
                section: if id == "a" {
                    "Guide > Install".into()
                } else {
                    String::new()
                },
                page: (id == "a").then_some(12),
                page_end: (id == "a").then_some(13),
            },
            vector: v,
        }
    }

    #[test]
    fn shards_round_trip_rows_and_metadata() {
        let (rows, bytes) = shard();
        let meta = read_shard_meta(bytes.clone()).unwrap();
        assert_eq!(
            (meta.model_id.as_str(), meta.dims, meta.normalized),
            ("m", 3, false)
        );
        assert_eq!(meta.source_hash, source_hash(rows.iter().map(|r| &r.chunk)));
        let (m, back) = read_shard(bytes.clone()).unwrap();
        assert_eq!(m, meta);
        assert_eq!(back, rows);
        let (m, batches) = read_shard_batches(bytes, 1).unwrap();
        assert_eq!(m, meta);
        let batches: Vec<Vec<EmbeddedChunk>> = batches.collect::<Result<_>>().unwrap();
        assert_eq!(batches, vec![rows[..1].to_vec(), rows[1..].to_vec()]);
    }

    #[test]
    fn wrong_dims_and_garbage_are_typed_errors() {
        let meta = ShardMeta {
            model_id: "m".into(),
            dims: 2,
            normalized: true,
            source_hash: String::new(),
        };
        assert!(matches!(
            write_shard(&[row("a", vec![1.0])], &meta),
            Err(Error::DimensionMismatch {
                expected: 2,
                actual: 1
            })
        ));
        assert!(matches!(
            read_shard(Bytes::from_static(b"PAR1 nonsense")),
            Err(Error::InvalidInput { .. })
        ));
    }

    fn shard() -> (Vec<EmbeddedChunk>, Bytes) {
        let rows = vec![
            row("a", vec![1.0, 2.0, 3.0]),
            row("b", vec![-1.0, 0.5, 0.0]),
        ];
        let meta = ShardMeta {
            model_id: "m".into(),
            dims: 3,
            normalized: false,
            source_hash: source_hash(rows.iter().map(|r| &r.chunk)),
        };
        let bytes = write_shard(&rows, &meta).unwrap();
        (rows, bytes)
    }

    #[test]
    fn a_changed_byte_in_a_data_page_is_caught_not_quoted() {
        // The reproducer: one changed letter of a chunk's text used to be indexed
        // and quoted with a citation. The metadata still matches; the content CRC does not.
        let (_, bytes) = shard();
        let mut b = bytes.to_vec();
        let at = b.windows(9).position(|w| w == b"text of a").unwrap();
        b[at] = b'T';
        let b = Bytes::from(b);
        assert!(read_shard_meta(b.clone()).is_ok(), "the footer is intact");
        for err in [
            read_shard(b.clone()).unwrap_err(),
            verify_shard(b.clone()).unwrap_err(),
            read_shard_batches(b, 1).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("checksum mismatch"), "{err}");
            assert!(
                err.to_string().contains("embed stage"),
                "says what to do: {err}"
            );
        }
    }

    #[test]
    fn a_non_finite_vector_is_refused_on_read() {
        let (_, bytes) = shard();
        let mut b = bytes.to_vec();
        // The vector column is stored plain: find 1.0, 2.0, 3.0 and make 2.0 a NaN.
        let pattern: Vec<u8> = [1f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let at = b.windows(12).position(|w| w == pattern).unwrap();
        b[at + 4..at + 8].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = read_shard(Bytes::from(b)).unwrap_err();
        assert!(err.to_string().contains("non-finite vector"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 128, ..Default::default()
        })]

        /// Random byte changes and truncations of a shard: no reader panics, and whatever a
        /// reader returns is the original rows (a change the CRC cannot see is one that does
        /// not reach the rows, such as a statistic).
        #[test]
        fn damaged_shards_never_read_as_other_rows(
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 0..4),
            cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
        ) {
            let (rows, bytes) = shard();
            let mut b = bytes.to_vec();
            for (at, x) in &flips {
                let i = at.index(b.len());
                b[i] ^= x;
            }
            if let Some(cut) = cut {
                b.truncate(cut.index(b.len()));
            }
            let b = Bytes::from(b);
            if let Ok((_, back)) = read_shard(b.clone()) {
                proptest::prop_assert_eq!(&back, &rows);
            }
            if let Ok((_, batches)) = read_shard_batches(b.clone(), 1) {
                let back: Vec<EmbeddedChunk> =
                    batches.collect::<Result<Vec<_>>>().unwrap_or_default().concat();
                proptest::prop_assert_eq!(&back, &rows);
            }
            let _ = verify_shard(b);
        }
    }
}
