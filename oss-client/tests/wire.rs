//! OSS wire details over wiremock: error XML bodies, throttling, retries, time-outs and the
//! headers OSS needs. Bodies follow OSS's documented error format
//! (<https://www.alibabacloud.com/help/en/oss/user-guide/error-codes>).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use oss_client::{OssConfig, OssStore};
use rag_core::{AccessKey, Error, ObjectStore, Secret, StoreUri};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn oss_error(code: &str, message: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>{code}</Code>
  <Message>{message}</Message>
  <RequestId>5C3D9778CC1C2AEDF85BC2A0</RequestId>
  <HostId>examplebucket.oss-cn-hangzhou.aliyuncs.com</HostId>
  <EC>0026-00000001</EC>
</Error>"#
    )
}

fn store(server: &MockServer) -> OssStore {
    store_at(server.uri(), Duration::from_millis(500))
}

/// A store on `endpoint`: three attempts, 5 ms first backoff, `attempt_timeout` each.
fn store_at(endpoint: String, attempt_timeout: Duration) -> OssStore {
    let mut config = OssConfig::new("cn-hangzhou")
        .unwrap()
        .with_endpoint(endpoint)
        .path_style(true)
        .with_credentials(AccessKey {
            id: "LTAI5tExample".into(),
            secret: Secret::new("never-printed-secret"),
            security_token: None,
        });
    config.initial_backoff = Duration::from_millis(5);
    config.max_attempts = 3;
    config.attempt_timeout = attempt_timeout;
    OssStore::new(config).unwrap()
}

fn uri() -> StoreUri {
    "oss://examplebucket/example.txt".parse().unwrap()
}

#[tokio::test]
async fn no_such_key_is_not_found_and_access_denied_is_auth() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/examplebucket/example.txt"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_string(oss_error("NoSuchKey", "The specified key does not exist.")),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/examplebucket/secret.txt"))
        .respond_with(ResponseTemplate::new(403).set_body_string(oss_error(
            "AccessDenied",
            "You have no right to access this object.",
        )))
        .mount(&server)
        .await;
    let s = store(&server);
    assert!(matches!(s.get(&uri()).await, Err(Error::NotFound { .. })));
    let err = s
        .get(&"oss://examplebucket/secret.txt".parse().unwrap())
        .await
        .unwrap_err();
    match &err {
        Error::Auth { message } => assert!(message.contains("AccessDenied"), "{message}"),
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!format!("{err:?} {err}").contains("never-printed-secret"));
    assert!(
        !format!("{s:?}").contains("never-printed-secret"),
        "Debug of the store hides the secret"
    );
}

#[tokio::test]
async fn slow_down_is_retried_until_it_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/examplebucket/example.txt"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_string(oss_error("SlowDown", "Please reduce your request rate.")),
        )
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/examplebucket/example.txt"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(store(&server).get_bytes(&uri()).await.unwrap(), "hello");
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_configured_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_string(oss_error(
            "InternalError",
            "We encountered an internal error.",
        )))
        .expect(3)
        .mount(&server)
        .await;
    let err = store(&server).get(&uri()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn slow_responses_time_out_as_a_typed_error() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let start = std::time::Instant::now();
    let err = store(&server).head(&uri()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "three 0.5 s attempts, not the 5 s delay"
    );
}

#[tokio::test]
async fn uploads_send_no_checksum_trailers_oss_would_reject() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/examplebucket/example.txt"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "\"5d41402abc4b2a76b9719d911017c592\""),
        )
        .mount(&server)
        .await;
    let put = store(&server).put(&uri(), "hello".into()).await.unwrap();
    assert_eq!(
        put.e_tag.as_deref(),
        Some("5d41402abc4b2a76b9719d911017c592")
    );
    let requests = server.received_requests().await.unwrap();
    let req = &requests[0];
    assert_eq!(
        req.body, b"hello",
        "the body is sent as is, not aws-chunked"
    );
    for (name, _) in req.headers.iter() {
        let name = name.as_str();
        assert!(
            !name.starts_with("x-amz-checksum")
                && name != "x-amz-trailer"
                && name != "x-amz-sdk-checksum-algorithm",
            "unexpected checksum header {name}"
        );
    }
    let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(
        auth.contains("Credential=LTAI5tExample/"),
        "signed with the configured key: {auth}"
    );
}

/// A download whose connection dies mid-body resumes where it stopped: a ranged GET from the
/// bytes received, `If-Match` the object's ETag, and only a `206` for exactly that range is
/// spliced on. A server that ignores the range, an object replaced in between (412), or cuts
/// past the attempts end in an error — never a short or mixed object.
#[tokio::test]
async fn a_download_cut_mid_body_resumes_by_range_or_fails_never_short() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    const ETAG: &str = "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"";
    let object: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let start = |obj: &[u8]| {
        Reply::cut(200, &obj[..1000], obj.len())
            .with_header("etag", ETAG)
            .with_header("last-modified", "Wed, 25 Nov 2026 10:00:00 GMT")
    };

    // Resumed: the second GET asks for the rest of the same version.
    let obj = object.clone();
    let server = FaultServer::start(move |req, n| {
        if n == 0 {
            return start(&obj);
        }
        assert_eq!(req.header("range"), Some("bytes=1000-"));
        assert_eq!(req.header("if-match"), Some(ETAG));
        Reply::Full {
            status: 206,
            headers: vec![
                ("etag".into(), ETAG.into()),
                ("content-range".into(), "bytes 1000-4095/4096".into()),
            ],
            body: obj[1000..].to_vec(),
        }
    })
    .await;
    let store = store_at(server.uri(), Duration::from_secs(2));
    assert_eq!(store.get_bytes(&uri()).await.unwrap(), object);
    assert_eq!(server.requests().len(), 2);

    // A server that ignores the range and sends the whole object again.
    let obj = object.clone();
    let server = FaultServer::start(move |_req, n| {
        if n == 0 {
            start(&obj)
        } else {
            Reply::ok(&obj).with_header("etag", ETAG)
        }
    })
    .await;
    let store = store_at(server.uri(), Duration::from_secs(2));
    let err = store.get_bytes(&uri()).await.unwrap_err();
    assert!(err.to_string().contains("did not resume"), "{err}");

    // The object was replaced between the two GETs.
    let obj = object.clone();
    let server = FaultServer::start(move |_req, n| {
        if n == 0 {
            start(&obj)
        } else {
            Reply::Full {
                status: 412,
                headers: vec![("content-type".into(), "application/xml".into())],
                body: oss_error(
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold.",
                )
                .into_bytes(),
            }
        }
    })
    .await;
    let store = store_at(server.uri(), Duration::from_secs(2));
    assert!(store.get_bytes(&uri()).await.is_err());

    // Cut every time: two resumptions (three attempts), then an error.
    let obj = object.clone();
    let server = FaultServer::start(move |req, n| {
        if n == 0 {
            return start(&obj);
        }
        let from: usize = req.header("range").unwrap()["bytes=".len()..]
            .trim_end_matches('-')
            .parse()
            .unwrap();
        Reply::Cut {
            status: 206,
            headers: vec![
                ("etag".into(), ETAG.into()),
                ("content-range".into(), format!("bytes {from}-4095/4096")),
            ],
            declared: 4096 - from,
            sent: obj[from..from + 10].to_vec(),
        }
    })
    .await;
    let store = store_at(server.uri(), Duration::from_secs(2));
    let err = store.get_bytes(&uri()).await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("broke off"),
        "{err:?}"
    );
    let ranges: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_string))
        .collect();
    assert_eq!(
        ranges,
        [None, Some("bytes=1000-".into()), Some("bytes=1010-".into())]
    );
}

/// An upload whose connection closes before any answer is sent again, whole, and succeeds.
#[tokio::test]
async fn an_upload_whose_connection_drops_is_retried_whole() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    let server = FaultServer::start(|_req, n| {
        if n == 0 {
            Reply::Close
        } else {
            Reply::ok(b"").with_header("etag", "\"abc\"")
        }
    })
    .await;
    let store = store_at(server.uri(), Duration::from_secs(2));
    let body = bytes::Bytes::from(vec![7u8; 10_000]);
    let put = store.put(&uri(), body.clone()).await.unwrap();
    assert_eq!(put.size, 10_000);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one retry");
    for r in &requests {
        assert_eq!(r.method, "PUT");
        assert_eq!(r.body, body, "each attempt carries the whole object");
    }
}

/// A listing answered with something that is not the ListObjectsV2 XML (a proxy's HTML page,
/// XML cut short — which the SDK parses as far as it goes —, "truncated" without a token to go
/// on) is an error, never a short listing that reads as "these are all the objects".
#[tokio::test]
async fn a_listing_that_is_not_the_documented_xml_is_an_error_not_an_empty_list() {
    let cut = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult><Name>examplebucket</Name><Contents><Key>raw-docs/a.txt</Key><Size>12"#;
    let no_token = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult><Name>examplebucket</Name><KeyCount>0</KeyCount><IsTruncated>true</IsTruncated></ListBucketResult>"#;
    for body in ["<html><body>502 Bad Gateway</body></html>", cut, no_token] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/examplebucket/"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/xml"))
            .mount(&server)
            .await;
        let prefix: StoreUri = "oss://examplebucket/raw-docs/".parse().unwrap();
        let listed = store(&server).list_page(&prefix, None, 100).await;
        assert!(listed.is_err(), "{body:?} listed as {listed:?}");
    }
}

/// A peer that stalls mid-body (sends part, then nothing, connection open) does not hang the
/// download: the SDK's stalled-stream protection (no byte for a 5 s grace period) breaks it
/// off, the resumption is tried, and the download ends in an error.
#[tokio::test]
async fn a_download_that_stalls_mid_body_does_not_hang() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    let server = FaultServer::start(|_req, _n| Reply::Stall {
        status: 200,
        headers: vec![("etag".into(), "\"abc\"".into())],
        declared: 4096,
        sent: vec![b'x'; 100],
    })
    .await;
    let store = store_at(server.uri(), Duration::from_millis(500));
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(20), store.get_bytes(&uri())).await;
    let err = got.expect("the download hung").unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The errors a cloud user meets, answered with the XML bodies of OSS's error reference: each
/// reaches the caller as one line that says what to do, with the request id, and is not
/// retried.
#[tokio::test]
async fn errors_a_user_can_fix_come_back_with_what_to_do_and_the_request_id() {
    let cases = [
        (
            403,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
        ),
        (
            403,
            "SecurityTokenExpired",
            "The security token you provided has expired.",
            "STS token has expired",
        ),
        (
            403,
            "AccessDenied",
            "You have no right to access this object because of bucket acl.",
            "RAM policy",
        ),
        (
            403,
            "AccessDenied",
            "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
            "OSS_REGION",
        ),
    ];
    for (status, code, message, remedy) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/examplebucket/example.txt"))
            // OSS sends the request id in a header as well as in the body.
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("x-oss-request-id", "5C3D9778CC1C2AEDF85BC2A0")
                    .set_body_string(oss_error(code, message)),
            )
            .mount(&server)
            .await;
        let err = store(&server).get(&uri()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Auth { .. }), "{code}: {err:?}");
        assert!(text.contains(remedy), "{code}: {text}");
        assert!(
            text.contains("5C3D9778CC1C2AEDF85BC2A0"),
            "{code}: the request id is missing: {text}"
        );
        assert_eq!(text.lines().count(), 1, "{code}: {text}");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "{code}: a user's error is not retried"
        );
    }
}
