//! Vector shards: embedded chunks as Parquet (seed step 5, `vector-indexes/`).
//!
//! Columns: `id`, `doc_id`, `title`, `source`, `text` (UTF-8), `start`, `end`, `ordinal`
//! (UInt64), `section` (UTF-8, empty for none), `page` and `page_end` (UInt32, null for none)
//! and `vector` (`FixedSizeList<Float32>`). Shards written before `section` and the pages
//! existed read with them empty. File metadata holds the model id, the
//! dimension, whether vectors are normalised and a hash of the chunks' source text, so that a
//! reader knows which model made the vectors and a re-run knows whether a shard is current.

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

    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![
            kv(KEY_MODEL, meta.model_id.clone()),
            kv(KEY_DIMS, meta.dims.to_string()),
            kv(KEY_NORM, meta.normalized.to_string()),
            kv(KEY_HASH, meta.source_hash.clone()),
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

/// Reads only a shard's metadata.
pub fn read_shard_meta(data: Bytes) -> Result<ShardMeta> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?;
    shard_meta(&builder)
}

fn shard_meta(builder: &ParquetRecordBatchReaderBuilder<Bytes>) -> Result<ShardMeta> {
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
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

/// Decodes a shard written by [`write_shard`].
pub fn read_shard(data: Bytes) -> Result<(ShardMeta, Vec<EmbeddedChunk>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?;
    let meta = shard_meta(&builder)?;
    let reader = builder
        .build()
        .map_err(|e| Error::backend("parquet", "opening reader", e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::invalid(format!("corrupt Parquet shard: {e}")))?;
        decode_batch(&batch, meta.dims, &mut rows)?;
    }
    Ok((meta, rows))
}

/// Decodes a shard `rows` rows at a time: only one batch of decoded rows is in memory besides
/// the file itself, so loading an index from shards stays bounded whatever the corpus size.
pub fn read_shard_batches(data: Bytes, rows: usize) -> Result<(ShardMeta, ShardBatches)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| Error::invalid(format!("not a Parquet file: {e}")))?;
    let meta = shard_meta(&builder)?;
    let reader = builder
        .with_batch_size(rows.max(1))
        .build()
        .map_err(|e| Error::backend("parquet", "opening reader", e))?;
    let dims = meta.dims;
    Ok((meta, ShardBatches { reader, dims }))
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
        let batch = self.reader.next()?;
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
    fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| Error::invalid(format!("shard column {name:?} missing or mistyped")))
    }
    let s = |n| col::<StringArray>(batch, n);
    let u = |n| col::<UInt64Array>(batch, n);
    let (id, doc_id, title, source, text) = (
        s("id")?,
        s("doc_id")?,
        s("title")?,
        s("source")?,
        s("text")?,
    );
    let (start, end, ordinal) = (u("start")?, u("end")?, u("ordinal")?);
    // Optional columns (absent from shards of earlier versions).
    let section = batch
        .column_by_name("section")
        .map(|_| s("section"))
        .transpose()?;
    let optional_u32 = |n| {
        batch
            .column_by_name(n)
            .map(|_| col::<UInt32Array>(batch, n))
            .transpose()
    };
    let (page, page_end) = (optional_u32("page")?, optional_u32("page_end")?);
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
    for i in 0..batch.num_rows() {
        let off = vectors.value_offset_at(i) as usize;
        out.push(EmbeddedChunk {
            chunk: Chunk {
                id: id.value(i).to_string(),
                doc_id: doc_id.value(i).to_string(),
                title: title.value(i).to_string(),
                source: source.value(i).to_string(),
                text: text.value(i).to_string(),
                start: start.value(i) as usize,
                end: end.value(i) as usize,
                ordinal: ordinal.value(i) as usize,
                section: section.map(|c| c.value(i).to_string()).unwrap_or_default(),
                page: page.and_then(|c| c.is_valid(i).then(|| c.value(i))),
                page_end: page_end.and_then(|c| c.is_valid(i).then(|| c.value(i))),
            },
            vector: values.values()[off..off + dims].to_vec(),
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
        assert_eq!(read_shard_meta(bytes.clone()).unwrap(), meta);
        let (m, back) = read_shard(bytes).unwrap();
        assert_eq!(m, meta);
        assert_eq!(back, rows);
        let (m, batches) = read_shard_batches(write_shard(&rows, &meta).unwrap(), 1).unwrap();
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
}
