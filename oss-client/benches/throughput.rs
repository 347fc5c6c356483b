//! Upload/download throughput of `oss_client::cp` against a local S3 server (moto), side by side
//! with `aws s3 cp --recursive` (awscli) on the same server, data and machine.
//!
//! `cargo bench -p oss-client --bench throughput [-- TOTAL_MIB]` (default 1024 MiB). Writes the
//! table to stdout and, with `--write`, into BENCHMARKS.md between the oss-client markers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use oss_client::cp::{CpOptions, download_prefix, upload_dir};
use oss_client::testing::S3TestServer;

struct Row {
    tool: &'static str,
    case: String,
    direction: &'static str,
    seconds: f64,
    mib: f64,
}

fn write_files(dir: &Path, files: usize, bytes_each: usize) {
    let mut block = vec![0u8; bytes_each];
    for i in 0..files {
        // Cheap, incompressible-looking content that differs per file.
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join(format!("part-{i:04}.bin")), &block).unwrap();
    }
}

fn aws(server: &S3TestServer, args: &[&str]) -> Option<f64> {
    let start = Instant::now();
    let status = Command::new("aws")
        .args(args)
        .args(["--endpoint-url", server.endpoint(), "--only-show-errors"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .status()
        .ok()?;
    status.success().then(|| start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let write = args.iter().any(|a| a == "--write");
    let total_mib: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1024);
    let server = S3TestServer::start();
    // Same part size as awscli's default (8 MiB).
    let store = oss_client::OssStore::new(server.config().with_part_size(8 << 20)).unwrap();
    store.create_bucket("bench").await.unwrap();
    let mut rows = Vec::new();
    for files in [100usize, 1] {
        let case = format!(
            "{files} file{} × {} MiB",
            if files == 1 { "" } else { "s" },
            total_mib / files
        );
        let src = tempfile::tempdir().unwrap();
        write_files(src.path(), files, total_mib * 1024 * 1024 / files);
        let mib = total_mib as f64;

        let prefix = format!("oss://bench/rust-{files}/").parse().unwrap();
        let opts = CpOptions {
            skip_unchanged: false,
            ..Default::default()
        };
        let t = Instant::now();
        let up = upload_dir(&store, src.path(), &prefix, &opts, &|_| {})
            .await
            .unwrap();
        assert!(up.is_complete());
        rows.push(Row {
            tool: "ragloop (oss-client)",
            case: case.clone(),
            direction: "upload",
            seconds: t.elapsed().as_secs_f64(),
            mib,
        });
        let dst = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let down = download_prefix(&store, &prefix, dst.path(), &opts, &|_| {})
            .await
            .unwrap();
        assert!(down.is_complete() && down.copied == files);
        rows.push(Row {
            tool: "ragloop (oss-client)",
            case: case.clone(),
            direction: "download",
            seconds: t.elapsed().as_secs_f64(),
            mib,
        });
        drop(dst);

        let remote = format!("s3://bench/aws-{files}/");
        let src_path = src.path().to_str().unwrap();
        if let Some(s) = aws(&server, &["s3", "cp", "--recursive", src_path, &remote]) {
            rows.push(Row {
                tool: "aws s3 cp (awscli)",
                case: case.clone(),
                direction: "upload",
                seconds: s,
                mib,
            });
            let dst = tempfile::tempdir().unwrap();
            if let Some(s) = aws(
                &server,
                &[
                    "s3",
                    "cp",
                    "--recursive",
                    &remote,
                    dst.path().to_str().unwrap(),
                ],
            ) {
                rows.push(Row {
                    tool: "aws s3 cp (awscli)",
                    case: case.clone(),
                    direction: "download",
                    seconds: s,
                    mib,
                });
            }
        } else {
            eprintln!("awscli not available: reference rows left out");
        }
    }
    let mut table =
        String::from("| tool | data | direction | seconds | MiB/s |\n|---|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.0} |\n",
            r.tool,
            r.case,
            r.direction,
            r.seconds,
            r.mib / r.seconds
        ));
    }
    print!("{table}");
    if write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let (begin, end) = ("<!-- oss-client:begin -->", "<!-- oss-client:end -->");
        let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else {
            panic!("BENCHMARKS.md lacks the {begin} … {end} markers");
        };
        let updated = format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
