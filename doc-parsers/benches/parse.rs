//! Parsing speed and memory per format on the documents corpus (`scripts/doc-corpus.sh`):
//! files, MB, pages (PDF pages; one per file elsewhere), seconds, pages/s, MB/s and the peak
//! resident memory of a process that parses only that format (each format runs in a child
//! process of this binary, so peaks do not mix). Beside ours, the reference extractors
//! (pdftotext, pandoc, LibreOffice for spreadsheets) on the same files when they are installed
//! (nothing reads PPTX to text among them).
//!
//! `cargo bench -p doc-parsers --bench parse` (release build; the corpus must exist).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn corpus() -> PathBuf {
    std::env::var_os("RAGLOOP_DOC_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/doc-corpus"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Peak resident set of this process, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Parses every file of one format `rounds` times; prints one tab-separated line.
fn child(format: &str) {
    let dir = corpus().join(format);
    let paths = files(&dir);
    let data: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(p).unwrap_or_default())
        })
        .collect();
    let bytes: usize = data.iter().map(|(_, d)| d.len()).sum();
    let parsers = doc_parsers::all();
    let mut pages = 0;
    let mut chars = 0;
    let rounds = 3;
    let t = Instant::now();
    for _ in 0..rounds {
        pages = 0;
        chars = 0;
        for (name, d) in &data {
            let r = parsers.parse(name, name, d);
            for doc in &r.documents {
                pages += doc.pages.len().max(1);
                chars += doc.text.len();
            }
        }
    }
    let secs = t.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "{format}\t{}\t{bytes}\t{pages}\t{chars}\t{secs}\t{}",
        data.len(),
        peak_rss_mib()
    );
}

/// Seconds the reference extractor takes over the same files, if it is installed.
fn reference_seconds(format: &str, paths: &[PathBuf]) -> Option<f64> {
    let t = Instant::now();
    for p in paths {
        let status = match format {
            "pptx" => return None,
            "pdf" => Command::new("pdftotext")
                .arg("-q")
                .arg(p)
                .arg("/dev/null")
                .status(),
            "spreadsheet" => {
                let out = std::env::temp_dir().join("ragloop-bench-csv");
                Command::new("soffice")
                    .args(["--headless", "--convert-to", "csv", "--outdir"])
                    .arg(&out)
                    .arg(p)
                    .output()
                    .map(|o| o.status)
            }
            _ => {
                let reader = match format {
                    "markdown" => "gfm",
                    f => f,
                };
                Command::new("pandoc")
                    .args(["--quiet", "-f", reader, "-t", "plain", "-o", "/dev/null"])
                    .arg(p)
                    .status()
            }
        };
        if !status.ok()?.success() {
            return None;
        }
    }
    Some(t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1]);
        return;
    }
    let root = corpus();
    if !root.exists() {
        eprintln!(
            "no corpus at {} (run scripts/doc-corpus.sh)",
            root.display()
        );
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "| format | files | MB | pages | ours s | pages/s | MB/s | peak RSS MiB | reference | reference s | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for format in [
        "html",
        "markdown",
        "docx",
        "pdf",
        "epub",
        "pptx",
        "spreadsheet",
    ] {
        let out = Command::new(&exe)
            .args(["--child", format])
            .output()
            .expect("child run");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split('\t').collect();
        if f.len() != 7 {
            eprintln!(
                "{format}: child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        let (n, bytes, pages, secs, rss): (usize, f64, usize, f64, f64) = (
            f[1].parse().unwrap_or(0),
            f[2].parse().unwrap_or(0.0),
            f[3].parse().unwrap_or(0),
            f[5].parse().unwrap_or(0.0),
            f[6].parse().unwrap_or(0.0),
        );
        let mb = bytes / 1e6;
        let reference = match format {
            "pdf" => "pdftotext",
            "spreadsheet" => "LibreOffice → CSV",
            "pptx" => "–",
            _ => "pandoc",
        };
        let ref_secs = reference_seconds(format, &files(&root.join(format)));
        let (ref_cell, speed) = match ref_secs {
            Some(r) => (format!("{r:.2}"), format!("{:.1}×", r / secs.max(1e-9))),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {format} | {n} | {mb:.1} | {pages} | {secs:.2} | {:.0} | {:.1} | {rss:.0} | {reference} | {ref_cell} | {speed} |",
            pages as f64 / secs.max(1e-9),
            mb / secs.max(1e-9),
        );
    }
}
