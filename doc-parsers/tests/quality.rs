//! Parse quality on real manuals (`scripts/doc-corpus.sh`: the Bash manual and the Debian
//! Reference as HTML and PDF, Docker's Markdown documentation; DOCX written from them by pandoc
//! and LibreOffice, EPUB and PPTX by pandoc, XLSX by LibreOffice Calc): for every file, token
//! F1 of our text against an independent extractor's (pdftotext, pandoc, LibreOffice's CSV
//! export) must be at least 0.95, and the structure must be there (sections; PDF pages as
//! pdftotext counts them, page by page; a page per slide).
//!
//! The corpus is built by `scripts/test.sh`; without it (no apt, no pandoc) these tests say so
//! and pass, except under CI, where a missing corpus fails them.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rag_core::chunk::Document;

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RAGLOOP_DOC_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/doc-corpus"));
    if dir.join(".complete-v3").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no documents corpus at {} (run scripts/doc-corpus.sh)",
        dir.display()
    );
    eprintln!(
        "skipped: no documents corpus at {} (run scripts/doc-corpus.sh)",
        dir.display()
    );
    None
}

/// Lower-cased runs of letters and digits.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Multiset token F1 of `ours` against `reference`.
fn f1(ours: &str, reference: &str) -> f64 {
    let mut want: HashMap<String, i64> = HashMap::new();
    let r = tokens(reference);
    for t in &r {
        *want.entry(t.clone()).or_default() += 1;
    }
    let o = tokens(ours);
    let mut hit = 0i64;
    for t in &o {
        if let Some(n) = want.get_mut(t)
            && *n > 0
        {
            *n -= 1;
            hit += 1;
        }
    }
    if o.is_empty() || r.is_empty() {
        return if o.is_empty() && r.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let (p, rc) = (hit as f64 / o.len() as f64, hit as f64 / r.len() as f64);
    if p + rc == 0.0 {
        0.0
    } else {
        2.0 * p * rc / (p + rc)
    }
}

fn parse(path: &Path) -> Document {
    let data = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let report = doc_parsers::all().parse(&name, &path.display().to_string(), &data);
    assert!(
        report.skipped.is_empty(),
        "{name}: skipped {:?}",
        report.skipped
    );
    assert_eq!(report.documents.len(), 1, "{name}");
    report.documents.into_iter().next().unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Checks every file of `format` against its reference; returns the documents.
fn check_format(format: &str) -> Vec<(PathBuf, Document)> {
    let Some(root) = corpus() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut worst = (1.0f64, String::new());
    let mut sum = 0.0;
    for path in files(&root.join(format)) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let reference =
            std::fs::read_to_string(root.join("ref").join(format).join(format!("{name}.txt")))
                .unwrap();
        let doc = parse(&path);
        let score = f1(&doc.text, &reference);
        sum += score;
        if score < worst.0 {
            worst = (score, name.clone());
        }
        out.push((path, doc));
    }
    assert!(!out.is_empty(), "no {format} files in the corpus");
    eprintln!(
        "{format}: {} files, mean token F1 {:.4}, lowest {:.4} ({})",
        out.len(),
        sum / out.len() as f64,
        worst.0,
        worst.1
    );
    assert!(
        worst.0 >= 0.95,
        "{format}: token F1 {:.4} on {} is under 0.95",
        worst.0,
        worst.1
    );
    out
}

#[test]
fn html_reads_like_pandoc_and_keeps_its_headings() {
    for (path, doc) in check_format("html") {
        assert!(!doc.title.is_empty(), "{}: no title", path.display());
        assert!(
            doc.sections.len() >= 3,
            "{}: {} sections",
            path.display(),
            doc.sections.len()
        );
    }
}

#[test]
fn markdown_reads_like_pandoc_and_keeps_its_headings() {
    let docs = check_format("markdown");
    if docs.is_empty() {
        return;
    }
    let with_sections = docs.iter().filter(|(_, d)| !d.sections.is_empty()).count();
    assert!(
        with_sections * 10 >= docs.len() * 9,
        "only {with_sections} of {} pages have sections",
        docs.len()
    );
}

#[test]
fn docx_reads_like_pandoc_and_has_the_html_headings() {
    let docs = check_format("docx");
    let Some(root) = corpus() else { return };
    for (path, doc) in docs {
        // The DOCX was written from the HTML file of the same name (`.lo` when LibreOffice
        // wrote it): its heading styles must give the same sections.
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let stem = stem.trim_end_matches(".lo").to_string();
        let (found, of) = html_headings_found(&root, &stem, &doc);
        assert!(
            found * 10 >= of * 9,
            "{stem}: {found} of {of} HTML headings are DOCX sections"
        );
    }
}

#[test]
fn both_writers_docx_files_are_in_the_corpus() {
    let Some(root) = corpus() else { return };
    let names: Vec<String> = files(&root.join("docx"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".lo.docx")), "{names:?}");
    assert!(names.iter().any(|n| !n.ends_with(".lo.docx")), "{names:?}");
}

/// The sections of `doc` and those of the HTML chapter it was written from, by title.
fn html_headings_found(root: &Path, stem: &str, doc: &Document) -> (usize, usize) {
    let html = parse(&root.join("html").join(format!("{stem}.html")));
    let titles = |d: &Document| -> Vec<String> {
        d.sections
            .iter()
            .filter_map(|s| s.path.last())
            .map(|t| t.to_lowercase())
            .collect()
    };
    let (h, d) = (titles(&html), titles(doc));
    (h.iter().filter(|t| d.contains(t)).count(), h.len())
}

#[test]
fn epub_reads_like_pandoc_and_has_the_chapters_headings() {
    let docs = check_format("epub");
    let Some(root) = corpus() else { return };
    for (path, doc) in docs {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(!doc.title.is_empty(), "{stem}: no title");
        let (found, of) = html_headings_found(&root, &stem, &doc);
        assert!(
            found * 10 >= of * 9,
            "{stem}: {found} of {of} HTML headings are EPUB sections"
        );
    }
}

#[test]
fn pptx_reads_like_its_markdown_with_a_page_per_slide() {
    for (path, doc) in check_format("pptx") {
        let name = path.display();
        // pandoc cuts a slide at every heading: at least as many pages as sections, and every
        // slide title a section.
        assert!(doc.pages.len() >= 2, "{name}: {} slides", doc.pages.len());
        assert!(
            doc.sections.iter().filter(|s| !s.path.is_empty()).count() >= 2,
            "{name}: {} sections",
            doc.sections.len()
        );
        for s in doc.sections.iter().filter(|s| !s.path.is_empty()) {
            let page = doc.page_at(s.start).unwrap() as usize;
            assert_eq!(
                doc.pages[page - 1],
                s.start,
                "{name}: a slide title not on top"
            );
        }
    }
}

#[test]
fn spreadsheets_read_like_libreoffice_csv() {
    for (path, doc) in check_format("spreadsheet") {
        assert!(
            !doc.sections.is_empty(),
            "{}: no sheet section",
            path.display()
        );
    }
}

#[test]
fn pdf_reads_like_pdftotext_page_by_page() {
    let docs = check_format("pdf");
    if docs.is_empty() {
        return;
    }
    // The Debian Reference has an outline (the Bash PDFs have none): its bookmarks are the
    // sections, each found where its title is printed.
    let (_, reference) = docs
        .iter()
        .find(|(p, _)| p.ends_with("debian-reference.en.pdf"))
        .expect("the Debian Reference PDF");
    assert!(
        reference.sections.len() >= 100,
        "{} sections",
        reference.sections.len()
    );
    let at_title = reference
        .sections
        .iter()
        .filter(|s| {
            let title = s.path.last().unwrap().to_lowercase();
            let first = title
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            reference.text[s.start..].to_lowercase().starts_with(&first)
        })
        .count();
    assert!(
        at_title * 10 >= reference.sections.len() * 9,
        "only {at_title} of {} sections start at their title",
        reference.sections.len()
    );
    for (path, doc) in docs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let reference = std::fs::read_to_string(
            path.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("ref/pdf")
                .join(format!("{name}.txt")),
        )
        .unwrap();
        // pdftotext ends every page with a form feed.
        let ref_pages: Vec<&str> = reference.split('\u{c}').collect();
        let ref_pages = &ref_pages[..ref_pages.len() - usize::from(ref_pages.last() == Some(&""))];
        assert_eq!(doc.pages.len(), ref_pages.len(), "{name}: page count");
        // Every page's own text against the same page of pdftotext (pages with words only).
        let mut low = Vec::new();
        for (i, want) in ref_pages.iter().enumerate() {
            let start = doc.pages[i];
            let end = doc.pages.get(i + 1).copied().unwrap_or(doc.text.len());
            if tokens(want).len() < 20 {
                continue;
            }
            let score = f1(&doc.text[start..end], want);
            if score < 0.9 {
                low.push((i + 1, score));
            }
        }
        assert!(
            low.len() * 50 <= ref_pages.len(),
            "{name}: pages under 0.9 token F1 against pdftotext's same page: {low:?}"
        );
    }
}

#[test]
fn broken_files_are_skipped_with_their_reason_and_awkward_ones_read() {
    let Some(root) = corpus() else { return };
    let parsers = doc_parsers::all();
    let read = |name: &str| {
        let data = std::fs::read(root.join("bad").join(name)).unwrap();
        parsers.parse(name, name, &data)
    };
    for (name, reason) in [
        ("encrypted.pdf", "encrypted PDF"),
        ("truncated.pdf", "not a readable PDF"),
        ("truncated.docx", "zip archive is unreadable"),
        ("truncated.epub", "zip archive is unreadable"),
        ("truncated.pptx", "zip archive is unreadable"),
        ("empty.html", "empty document"),
    ] {
        let r = read(name);
        assert!(r.documents.is_empty(), "{name} gave documents");
        assert!(
            r.skipped.iter().any(|s| s.reason.contains(reason)),
            "{name}: {:?}",
            r.skipped
        );
    }
    // Encrypted with an owner password only: anyone may read it, and so do we.
    let r = read("owner-password-only.pdf");
    assert_eq!(r.documents.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.documents[0].pages.len(), 87);
    // A DOCX called .pdf is read as what it is.
    let r = read("really-a-docx.pdf");
    assert_eq!(r.formats["docx"].documents, 1, "{r:?}");
}
