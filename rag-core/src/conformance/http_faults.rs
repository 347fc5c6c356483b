//! A scripted HTTP/1.1 server for the faults a mock framework cannot produce: a connection
//! closed before any answer, or an answer whose body stops short of its `Content-Length`.
//! Cloud clients' tests use it to show that such a cut is retried or becomes a typed error,
//! never a short body taken as whole.
//!
//! Each connection carries one request (answers say `Connection: close`); the script decides
//! the answer from the request and how many requests came before it.
//!
//! ```text
//! let server = FaultServer::start(|_request, n| {
//!     if n == 0 {
//!         Reply::cut(200, b"{\"partial\":", 40) // 40 bytes announced, 11 sent
//!     } else {
//!         Reply::ok(b"{\"whole\": true}")
//!     }
//! })
//! .await;
//! let client = MyClient::new(server.uri());
//! ```

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `PUT`, …
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked bodies decoded).
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole answer.
    Full {
        /// HTTP status.
        status: u16,
        /// Extra headers (`Content-Length` and `Connection` are added).
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Status and headers declaring `declared` body bytes, then only `sent`, then the
    /// connection closes.
    Cut {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The `Content-Length` announced.
        declared: usize,
        /// The bytes actually sent.
        sent: Vec<u8>,
    },
    /// The connection closes after the request is read, with no answer at all.
    Close,
    /// Like `Cut`, but the connection then stays open, silent, until the client gives up: a
    /// peer that stalls mid-body.
    Stall {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The `Content-Length` announced.
        declared: usize,
        /// The bytes actually sent.
        sent: Vec<u8>,
    },
}

impl Reply {
    /// `200` with `body`.
    pub fn ok(body: &[u8]) -> Self {
        Self::Full {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    /// `status` announcing `declared` bytes and sending only `sent`.
    pub fn cut(status: u16, sent: &[u8], declared: usize) -> Self {
        Self::Cut {
            status,
            headers: Vec::new(),
            declared,
            sent: sent.to_vec(),
        }
    }

    /// Adds a header to a `Full`, `Cut` or `Stall` reply.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Full { headers, .. }
        | Self::Cut { headers, .. }
        | Self::Stall { headers, .. } = &mut self
        {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

type Script = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync;

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Starts on a free loopback port; `script(request, n)` answers the `n`-th request (from 0).
    pub async fn start(
        script: impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let requests: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let _ = serve(socket, script.as_ref(), &seen).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: TcpStream,
    script: &Script,
    seen: &Mutex<Vec<RecordedRequest>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            line.clear();
            reader.read_line(&mut line).await?;
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body).await?;
    }
    let request = RecordedRequest {
        method,
        target,
        headers,
        body,
    };
    let n = {
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.push(request.clone());
        seen.len() - 1
    };
    let socket = reader.get_mut();
    match script(&request, n) {
        Reply::Close => {}
        Reply::Full {
            status,
            headers,
            body,
        } => {
            socket
                .write_all(&head(status, &headers, body.len()))
                .await?;
            socket.write_all(&body).await?;
        }
        Reply::Cut {
            status,
            headers,
            declared,
            sent,
        } => {
            socket.write_all(&head(status, &headers, declared)).await?;
            socket.write_all(&sent).await?;
        }
        Reply::Stall {
            status,
            headers,
            declared,
            sent,
        } => {
            socket.write_all(&head(status, &headers, declared)).await?;
            socket.write_all(&sent).await?;
            socket.flush().await?;
            // Silent until the client hangs up (a read then returns 0 or fails).
            let mut byte = [0u8; 1];
            let _ = reader.read(&mut byte).await;
            return Ok(());
        }
    }
    socket.flush().await?;
    socket.shutdown().await
}

fn head(status: u16, headers: &[(String, String)], length: usize) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status} Status\r\ncontent-length: {length}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}
