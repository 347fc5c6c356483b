//! oss-client against a real S3-compatible server (`oss_client::testing::S3TestServer`: moto
//! started on a free loopback port, or the server at `RAGLOOP_S3_ENDPOINT`).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use oss_client::cp::{CpEvent, CpOptions, download_prefix, upload_dir};
use oss_client::testing::S3TestServer;
use oss_client::{MIN_PART_SIZE, OssStore};
use rag_core::store::bytes_stream;
use rag_core::{Error, ObjectStore, StoreUri};

async fn store(server: &S3TestServer, bucket: &str) -> OssStore {
    server.store(bucket).await.unwrap()
}

fn server() -> S3TestServer {
    S3TestServer::start()
}

#[tokio::test]
async fn oss_store_conforms_against_a_real_s3_server() {
    let server = server();
    let store = store(&server, "conformance").await;
    rag_core::conformance::object_store::run_all(
        &store,
        &"oss://conformance/run/".parse().unwrap(),
    )
    .await;
    // s3:// URIs address the same objects.
    rag_core::conformance::object_store::put_get_head_delete(
        &store,
        &"s3://conformance/s3-scheme/".parse().unwrap(),
    )
    .await;
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_failed_uploads_are_aborted() {
    let server = server();
    let store = store(&server, "multipart").await;
    let uri: StoreUri = "oss://multipart/big.bin".parse().unwrap();
    // 3.5 parts of 5 MiB, fed in odd-sized chunks.
    let data: Vec<u8> = (0..(MIN_PART_SIZE * 7 / 2) as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let data = Bytes::from(data);
    let put = store
        .put_stream(&uri, bytes_stream(data.clone(), 777_777))
        .await
        .unwrap();
    assert_eq!(put.size, data.len() as u64);
    assert!(
        put.e_tag.unwrap().ends_with("-4"),
        "a four-part multipart ETag"
    );
    assert_eq!(store.get_bytes(&uri).await.unwrap(), data);

    // A source that breaks after two parts: the upload fails and is aborted.
    let broken: rag_core::ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(data.slice(..MIN_PART_SIZE * 2 + 10)),
        Err(Error::Unavailable {
            message: "disk went away".into(),
            source: None,
        }),
    ]));
    let failed: StoreUri = "oss://multipart/failed.bin".parse().unwrap();
    assert!(store.put_stream(&failed, broken).await.is_err());
    assert!(!store.exists(&failed).await.unwrap());
    let pending = store
        .client()
        .list_multipart_uploads()
        .bucket("multipart")
        .send()
        .await
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "no multipart upload left open: {:?}",
        pending.uploads()
    );
}

#[tokio::test]
async fn cp_copies_trees_both_ways_skips_unchanged_files_and_honours_globs() {
    let server = server();
    let store = store(&server, "cp-bucket").await;
    let src = tempfile::tempdir().unwrap();
    let files = [
        ("a.txt", "alpha"),
        ("sub/b.md", "beta"),
        ("sub/deep/c.txt", "gamma"),
        ("skip.log", "log"),
    ];
    for (rel, body) in files {
        let p = src.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let prefix: StoreUri = "oss://cp-bucket/raw-docs/".parse().unwrap();
    let opts = CpOptions {
        exclude: vec!["*.log".into()],
        ..Default::default()
    };
    let events = std::sync::Mutex::new(Vec::new());
    let record = |e: CpEvent| events.lock().unwrap().push(e);

    let up = upload_dir(&store, src.path(), &prefix, &opts, &record)
        .await
        .unwrap();
    assert_eq!((up.files, up.copied, up.skipped), (3, 3, 0), "{up:?}");
    assert!(up.is_complete());
    assert!(
        !store
            .exists(&prefix.join("skip.log").unwrap())
            .await
            .unwrap(),
        "excluded"
    );
    assert_eq!(
        events.lock().unwrap().len(),
        4,
        "planned + one event per file"
    );

    std::fs::write(src.path().join("a.txt"), "alpha, edited").unwrap();
    let again = upload_dir(&store, src.path(), &prefix, &opts, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.copied, again.skipped),
        (1, 2),
        "only the edited file goes up again"
    );

    let dst = tempfile::tempdir().unwrap();
    // A glob without '/' matches file names at any depth; one with '/' matches the path.
    let md_only = CpOptions {
        include: vec!["*.md".into(), "*.txt".into()],
        exclude: vec!["sub/deep/**".into()],
        ..Default::default()
    };
    let down = download_prefix(&store, &prefix, dst.path(), &md_only, &|_| {})
        .await
        .unwrap();
    assert_eq!((down.files, down.copied), (2, 2), "{down:?}");
    assert_eq!(
        std::fs::read_to_string(dst.path().join("a.txt")).unwrap(),
        "alpha, edited"
    );
    assert_eq!(
        std::fs::read_to_string(dst.path().join("sub/b.md")).unwrap(),
        "beta"
    );
    assert!(
        !dst.path().join("sub/deep/c.txt").exists(),
        "excluded by path"
    );
    let again = download_prefix(&store, &prefix, dst.path(), &md_only, &|_| {})
        .await
        .unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2));

    let missing = upload_dir(&store, &src.path().join("nope"), &prefix, &opts, &|_| {}).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn a_missing_bucket_is_not_found() {
    let server = server();
    let store = store(&server, "exists").await;
    let err = store
        .get(&"oss://no-such-bucket-x/k".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
