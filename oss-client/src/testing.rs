//! A real S3-compatible server for tests (feature `testing`): `moto_server` from PyPI
//! (`moto[server]`), started on a free loopback port and killed on drop, or the server named by
//! `RAGLOOP_S3_ENDPOINT`.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rag_core::{AccessKey, Result, Secret};

use crate::{MIN_PART_SIZE, OssConfig, OssStore};

/// A running S3 server; the one this process started is killed on drop.
#[derive(Debug)]
pub struct S3TestServer {
    endpoint: String,
    child: Option<Child>,
}

impl S3TestServer {
    /// The server at `RAGLOOP_S3_ENDPOINT`, or a new `moto_server` from PATH.
    ///
    /// # Panics
    /// When neither is available, with a message saying how to install moto.
    pub fn start() -> Self {
        if let Ok(endpoint) = std::env::var("RAGLOOP_S3_ENDPOINT") {
            return Self {
                endpoint,
                child: None,
            };
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start moto_server ({e}); run the tests with scripts/test.sh, \
                     install it with `pip install 'moto[server]==5.1.22'`, or point \
                     RAGLOOP_S3_ENDPOINT at an S3-compatible server"
                )
            });
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    /// The server's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A path-style configuration for this server with test credentials and 5 MiB parts.
    pub fn config(&self) -> OssConfig {
        OssConfig::new("us-east-1")
            .expect("valid region")
            .with_endpoint(&self.endpoint)
            .path_style(true)
            .with_part_size(MIN_PART_SIZE)
            .with_credentials(AccessKey {
                id: "testing".into(),
                secret: Secret::new("testing"),
                security_token: None,
            })
    }

    /// A store on this server with `bucket` created.
    pub async fn store(&self, bucket: &str) -> Result<OssStore> {
        let store = OssStore::new(self.config())?;
        store.create_bucket(bucket).await?;
        Ok(store)
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
