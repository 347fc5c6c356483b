//! A folder of a user's own files — HTML, Markdown, DOCX, PDF, text, and broken ones — through
//! `ragloop ingest` and `ragloop run`: per-format counts, skipped files with their reasons,
//! and answers whose citations name the page and the section.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn ragloop(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ragloop"));
    c.current_dir(cwd);
    c
}

const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

fn write_folder(data: &Path) {
    std::fs::create_dir_all(data.join("wiki")).unwrap();
    std::fs::write(
        data.join("guide.html"),
        "<!doctype html><html><head><title>Backup guide</title></head><body>\
         <nav>Home | Blog | Contact</nav>\
         <h1>Backups</h1><p>Keep three copies of your data.</p>\
         <h2>Restoring snapshots</h2><p>To restore a snapshot, stop the service and run \
         <code>vault restore --snapshot latest</code>, then start the service again.</p>\
         <footer>Copyright example.org</footer></body></html>",
    )
    .unwrap();
    std::fs::write(
        data.join("wiki/network.md"),
        "---\ntitle: Network notes\n---\n\n# Network\n\n## Firewall\n\nOpen port 8443 for the \
         dashboard and keep port 22 closed to the internet.\n",
    )
    .unwrap();
    let body = format!(
        r#"<w:document {W}><w:body><w:p><w:pPr><w:outlineLvl w:val="0"/></w:pPr><w:r><w:t>Rotation</w:t></w:r></w:p>
        <w:p><w:r><w:t>Certificates are rotated every ninety days by the renewal timer.</w:t></w:r></w:p></w:body></w:document>"#
    );
    std::fs::write(
        data.join("certs.docx"),
        doc_parsers::testing::docx(&[("word/document.xml", &body)]),
    )
    .unwrap();
    std::fs::write(
        data.join("handbook.pdf"),
        doc_parsers::testing::pdf(&[
            "BT /F1 12 Tf 72 700 Td (Welcome to the operations handbook.) Tj ET",
            "BT /F1 12 Tf 72 700 Td (Disk quotas are raised by filing a storage ticket.) Tj ET",
        ]),
    )
    .unwrap();
    std::fs::write(
        data.join("readme.txt"),
        "Plain notes about the on-call rota.",
    )
    .unwrap();
    // Broken: a PDF cut short, an empty page, a Word file that is not a zip.
    let pdf = doc_parsers::testing::pdf(&["BT /F1 12 Tf 72 700 Td (lost) Tj ET"]);
    std::fs::write(data.join("cut.pdf"), &pdf[..pdf.len() / 3]).unwrap();
    std::fs::write(data.join("empty.html"), "").unwrap();
    std::fs::write(data.join("fake.docx"), "PK\u{3}\u{4} not really").unwrap();
}

#[test]
fn a_folder_of_mixed_files_is_read_counted_and_cited_by_page_and_section() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(&dir.path().join("docs"));
    // The quick local loop on this folder, for every command run here.
    std::fs::write(
        dir.path().join("ragloop.toml"),
        "data = \"docs\"\nwork_dir = \"work\"\n[embedding]\nmodel = \"hashed\"\ndims = 256\n",
    )
    .unwrap();

    let out = ragloop(dir.path()).arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "8 files uploaded",
        "5 documents",
        "docx: 1 file, 1 skipped",
        "html: 1 file, 1 skipped",
        "markdown: 1 file",
        "pdf: 1 file, 1 skipped",
        "text: 1 file",
        "cut.pdf: not a readable PDF",
        "empty.html: empty document",
        "fake.docx: not a DOCX",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }

    let out = ragloop(dir.path())
        .args([
            "run",
            "--json",
            "--question",
            "How do I restore a snapshot?",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ragloop run failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cited = &summary["answer"]["citations"][0];
    assert_eq!(cited["doc_id"], "guide.html", "{summary}");
    assert_eq!(cited["section"], "Backups > Restoring snapshots", "{cited}");

    // A paged document is cited with its page; the text form prints page and section.
    let out = ragloop(dir.path())
        .args(["ask", "How are disk quotas raised?"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both pages are one chunk here, so both are named.
    assert!(text.contains("handbook.pdf pp. 1–2"), "{text}");
}
