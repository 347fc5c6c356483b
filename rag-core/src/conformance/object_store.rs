//! [`ObjectStore`] conformance.

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::{ObjectStore, bytes_stream};
use crate::uri::StoreUri;

/// Runs every check under `base` (a prefix that the suite may fill and empty).
pub async fn run_all(store: &dyn ObjectStore, base: &StoreUri) {
    let base = base.as_prefix();
    put_get_head_delete(store, &base.join("basic/").unwrap()).await;
    empty_objects(store, &base.join("empty/").unwrap()).await;
    overwrite_replaces(store, &base.join("overwrite/").unwrap()).await;
    unicode_and_space_keys(store, &base.join("unicode/").unwrap()).await;
    missing_objects(store, &base.join("missing/").unwrap()).await;
    ranges(store, &base.join("range/").unwrap()).await;
    large_streamed_object(store, &base.join("large/").unwrap()).await;
    failed_stream_leaves_nothing(store, &base.join("failed/").unwrap()).await;
    list_pagination_and_prefixes(store, &base.join("list/").unwrap()).await;
    copy_objects(store, &base.join("copy/").unwrap()).await;
}

async fn keys_under(store: &dyn ObjectStore, prefix: &StoreUri) -> Vec<String> {
    store
        .list(prefix)
        .map_ok(|m| m.uri.key().to_string())
        .try_collect()
        .await
        .expect("list")
}

/// put, get, head, delete of one small object.
pub async fn put_get_head_delete(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("a/b.txt").unwrap();
    let put = store
        .put(&uri, Bytes::from_static(b"hello"))
        .await
        .expect("put");
    assert_eq!(put.size, 5, "put reports the size written");
    assert_eq!(store.get_bytes(&uri).await.expect("get").as_ref(), b"hello");
    let meta = store.head(&uri).await.expect("head");
    assert_eq!(
        (meta.size, &meta.uri),
        (5, &uri),
        "head reports size and uri"
    );
    assert!(store.exists(&uri).await.unwrap());
    store.delete(&uri).await.expect("delete");
    assert!(!store.exists(&uri).await.unwrap(), "deleted object is gone");
    store
        .delete(&uri)
        .await
        .expect("deleting a missing object succeeds");
}

/// Zero-byte objects exist and read back empty.
pub async fn empty_objects(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("empty").unwrap();
    store.put(&uri, Bytes::new()).await.expect("put empty");
    assert_eq!(store.head(&uri).await.expect("head empty").size, 0);
    assert!(store.get_bytes(&uri).await.expect("get empty").is_empty());
    assert!(
        store
            .get_range(&uri, 0..0)
            .await
            .expect("empty range")
            .is_empty()
    );
    store.delete(&uri).await.unwrap();
}

/// A second put replaces the first, and the version tag (if any) changes.
pub async fn overwrite_replaces(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("o").unwrap();
    let first = store.put(&uri, Bytes::from_static(b"one")).await.unwrap();
    let second = store
        .put(&uri, Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&uri).await.unwrap().as_ref(), b"second");
    if let (Some(a), Some(b)) = (first.e_tag, second.e_tag) {
        assert_ne!(a, b, "e_tag changes with the content");
    }
    store.delete(&uri).await.unwrap();
}

/// Keys with spaces, accents and CJK survive put, list and get.
pub async fn unicode_and_space_keys(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("dir with space/ünïcødé 文件 (1).txt").unwrap();
    store
        .put(&uri, Bytes::from_static("内容".as_bytes()))
        .await
        .expect("put unicode key");
    assert_eq!(keys_under(store, base).await, vec![uri.key().to_string()]);
    assert_eq!(
        store.get_bytes(&uri).await.unwrap().as_ref(),
        "内容".as_bytes()
    );
    store.delete(&uri).await.unwrap();
}

/// Reading something that does not exist is `NotFound`.
pub async fn missing_objects(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("nope").unwrap();
    assert!(
        matches!(store.get(&uri).await, Err(Error::NotFound { .. })),
        "get missing"
    );
    assert!(
        matches!(store.head(&uri).await, Err(Error::NotFound { .. })),
        "head missing"
    );
    assert!(
        matches!(
            store.get_range(&uri, 0..1).await,
            Err(Error::NotFound { .. })
        ),
        "get_range missing"
    );
    assert!(
        keys_under(store, base).await.is_empty(),
        "listing an empty prefix"
    );
}

/// Ranged reads return the asked bytes, clamp the end and reject a start past the end.
pub async fn ranges(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("r").unwrap();
    store
        .put(&uri, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(store.get_range(&uri, 2..5).await.unwrap().as_ref(), b"234");
    assert_eq!(
        store.get_range(&uri, 8..100).await.unwrap().as_ref(),
        b"89",
        "end clamps"
    );
    assert!(
        matches!(
            store.get_range(&uri, 10..12).await,
            Err(Error::InvalidInput { .. })
        ),
        "start past the end"
    );
    store.delete(&uri).await.unwrap();
}

/// A 9 MiB object written as a stream reads back byte for byte (and in ranges across chunks).
pub async fn large_streamed_object(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("big.bin").unwrap();
    let data: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data = Bytes::from(data);
    let put = store
        .put_stream(&uri, bytes_stream(data.clone(), 1024 * 1024 + 7))
        .await
        .expect("put_stream");
    assert_eq!(put.size, data.len() as u64);
    assert_eq!(store.head(&uri).await.unwrap().size, data.len() as u64);
    let got = store.get(&uri).await.unwrap();
    let mut hasher = Sha256::new();
    let mut stream = got.stream;
    let mut n = 0;
    while let Some(chunk) = stream.try_next().await.expect("stream chunk") {
        n += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(n, data.len());
    assert_eq!(
        hasher.finalize().as_slice(),
        Sha256::digest(&data).as_slice(),
        "content intact"
    );
    let mid = 5 * 1024 * 1024 - 3..5 * 1024 * 1024 + 3;
    assert_eq!(
        store
            .get_range(&uri, mid.start as u64..mid.end as u64)
            .await
            .unwrap(),
        data.slice(mid)
    );
    store.delete(&uri).await.unwrap();
}

/// A stream that fails midway leaves no object (and no old one is torn).
pub async fn failed_stream_leaves_nothing(store: &dyn ObjectStore, base: &StoreUri) {
    let uri = base.join("f").unwrap();
    let broken = stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(Error::Unavailable {
            message: "source broke".into(),
            source: None,
        }),
    ])
    .boxed();
    assert!(
        store.put_stream(&uri, broken).await.is_err(),
        "the stream's error surfaces"
    );
    assert!(!store.exists(&uri).await.unwrap(), "no partial object");
    assert!(keys_under(store, base).await.is_empty(), "nothing listed");
}

/// Listing returns exactly the keys under a prefix, in order, across pages.
pub async fn list_pagination_and_prefixes(store: &dyn ObjectStore, base: &StoreUri) {
    let keys = ["a/1", "a/2", "a/3/x", "a1", "ab/c", "b/1", "b/2"];
    for k in keys {
        store
            .put(&base.join(k).unwrap(), Bytes::from(k.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    let full = |ks: &[&str]| {
        ks.iter()
            .map(|k| base.join(k).unwrap().key().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys_under(store, base).await,
        full(&keys),
        "whole listing in key order"
    );
    assert_eq!(
        keys_under(store, &base.join("a/").unwrap()).await,
        full(&["a/1", "a/2", "a/3/x"])
    );
    assert_eq!(
        keys_under(store, &base.join("a").unwrap()).await,
        full(&["a/1", "a/2", "a/3/x", "a1", "ab/c"]),
        "a prefix matches partial names, as on S3"
    );
    // Walk pages of two.
    let mut token = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_page(base, token, 2).await.expect("list_page");
        assert!(page.objects.len() <= 2, "page respects max_keys");
        seen.extend(page.objects.iter().map(|m| m.uri.key().to_string()));
        pages += 1;
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(seen, full(&keys), "pages hold every key once, in order");
    for k in keys {
        store.delete(&base.join(k).unwrap()).await.unwrap();
    }
    assert!(keys_under(store, base).await.is_empty());
}

/// Copy duplicates content; copying a missing object is `NotFound`.
pub async fn copy_objects(store: &dyn ObjectStore, base: &StoreUri) {
    let (a, b) = (base.join("src").unwrap(), base.join("sub/dst").unwrap());
    store.put(&a, Bytes::from_static(b"payload")).await.unwrap();
    store.copy(&a, &b).await.expect("copy");
    assert_eq!(store.get_bytes(&b).await.unwrap().as_ref(), b"payload");
    assert_eq!(
        store.get_bytes(&a).await.unwrap().as_ref(),
        b"payload",
        "source kept"
    );
    assert!(matches!(
        store.copy(&base.join("missing").unwrap(), &b).await,
        Err(Error::NotFound { .. })
    ));
    store.delete(&a).await.unwrap();
    store.delete(&b).await.unwrap();
}
