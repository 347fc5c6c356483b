//! A bucket reached through its custom domain (`OssConfig::with_cname`), over wiremock
//! standing in for the domain: requests go to `domain/key` — no bucket in host or path, as
//! the OSS SDKs' `cname` mode sends them
//! (<https://www.alibabacloud.com/help/en/oss/developer-reference/use-custom-domain-names>) —
//! signed with SigV4 for `s3` in the bucket's region; another bucket is refused unsent.
#![allow(clippy::unwrap_used)]

use oss_client::{OssConfig, OssStore};
use rag_core::{AccessKey, ObjectStore, Secret};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn store(domain: &str) -> OssStore {
    let config = OssConfig::new("cn-shanghai")
        .unwrap()
        .with_cname("corpus-bucket", format!("{domain}/"))
        .with_credentials(AccessKey {
            id: "LTAI5tExample".into(),
            secret: Secret::new("never-printed-secret"),
            security_token: None,
        });
    OssStore::new(config).unwrap()
}

#[tokio::test]
async fn requests_go_to_the_domain_with_the_key_alone_and_are_signed_for_the_region() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/raw-docs/a.txt"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "\"5d41402abc4b2a76b9719d911017c592\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/raw-docs/a.txt"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
        .mount(&server)
        .await;
    // ListObjectsV2 on the domain's root.
    Mock::given(method("GET"))
        .and(path("/"))
        .and(query_param("list-type", "2"))
        .and(query_param("prefix", "raw-docs/"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>corpus-bucket</Name><Prefix>raw-docs/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>false</IsTruncated>
  <Contents><Key>raw-docs/a.txt</Key><LastModified>2026-12-06T03:00:00.000Z</LastModified>
  <ETag>"5d41402abc4b2a76b9719d911017c592"</ETag><Size>5</Size><StorageClass>Standard</StorageClass></Contents>
</ListBucketResult>"#,
        ))
        .mount(&server)
        .await;

    let s = store(&server.uri());
    let uri = "oss://corpus-bucket/raw-docs/a.txt".parse().unwrap();
    s.put(&uri, "hello".into()).await.unwrap();
    assert_eq!(s.get_bytes(&uri).await.unwrap(), "hello");
    let listed = s
        .list_page(&"oss://corpus-bucket/raw-docs/".parse().unwrap(), None, 100)
        .await
        .unwrap();
    assert_eq!(listed.objects.len(), 1);
    assert_eq!(listed.objects[0].uri.key(), "raw-docs/a.txt");

    let requests = server.received_requests().await.unwrap();
    for r in &requests {
        let host = r.headers.get("host").unwrap().to_str().unwrap();
        assert!(
            server.uri().ends_with(host),
            "the domain is the host, no bucket in it: {host}"
        );
        assert!(!r.url.path().contains("corpus-bucket"), "{}", r.url);
        let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=LTAI5tExample/")
                && auth.contains("/cn-shanghai/s3/aws4_request"),
            "{auth}"
        );
        assert!(!auth.contains("never-printed-secret"));
    }
}

#[tokio::test]
async fn another_bucket_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let s = store(&server.uri());
    let err = s
        .get_bytes(&"oss://other-bucket/a.txt".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corpus-bucket"), "{err}");
    assert!(
        matches!(err, rag_core::Error::InvalidInput { .. }),
        "{err:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}
