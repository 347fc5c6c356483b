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
        data.join("oncall.pptx"),
        doc_parsers::testing::pptx(
            "On-call",
            &[
                (Some("Rota"), &["Two engineers share each week."], None),
                (
                    Some("Handover"),
                    &["Handovers happen every Monday at ten in the war room."],
                    Some("Bring the incident log."),
                ),
            ],
        ),
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

/// A project directory with [`write_folder`]'s files in `docs/` and a `ragloop.toml` that runs
/// the quick local loop (the hashed model) on them into `work/`.
fn quick_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_folder(&dir.path().join("docs"));
    std::fs::write(dir.path().join("ragloop.toml"), QUICK_CONFIG).unwrap();
    dir
}

/// `ragloop run --json --question QUESTION` in `dir`, which must succeed: its summary.
fn run_json(dir: &std::path::Path, question: &str) -> serde_json::Value {
    let out = ragloop(dir)
        .args(["run", "--json", "--question", question])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
}

const QUICK_CONFIG: &str =
    "data = \"docs\"\nwork_dir = \"work\"\n[embedding]\nmodel = \"hashed\"\ndims = 256\n";

#[test]
fn a_folder_of_mixed_files_is_read_counted_and_cited_by_page_and_section() {
    // The quick local loop on this folder, for every command run here.
    let dir = quick_project();

    let out = ragloop(dir.path()).arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "9 files uploaded",
        "6 documents",
        "docx: 1 file, 1 skipped",
        "html: 1 file, 1 skipped",
        "markdown: 1 file",
        "pdf: 1 file, 1 skipped",
        "pptx: 1 file",
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
    // A slide is a page, its title the section.
    let out = ragloop(dir.path())
        .args(["ask", "When do handovers happen?"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("oncall.pptx p. 2 · Handover"), "{text}");
}

#[test]
fn a_file_that_cannot_be_read_is_listed_and_the_rest_goes_through_to_the_answer() {
    // A dangling symlink and a key over the store's 1,024-byte limit once stopped `ragloop
    // run` after stage 1. Now they are listed as FAILED, every later stage runs on the other
    // files, and the command exits non-zero at the end, as `cp -r` does.
    let dir = quick_project();
    let docs = dir.path().join("docs");
    std::os::unix::fs::symlink(docs.join("nowhere.txt"), docs.join("dangling.txt")).unwrap();
    let mut deep = docs.clone();
    for i in 0..5 {
        deep.push(format!("{i}{}", "d".repeat(240)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.txt"), "Too deep for an object key.").unwrap();

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
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not every input was taken"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 7, "{summary}");
    let failed = stages[0]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|f| f.as_str().unwrap().contains("dangling.txt")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.as_str().unwrap().contains("longer than 1024 bytes")),
        "{failed:?}"
    );
    // Files that are no documents are listed under stage 5 with their reasons.
    let embed = stages[4]["details"].to_string();
    assert!(
        embed.contains("cut.pdf: not a readable PDF") && embed.contains("empty.html"),
        "{embed}"
    );
    // The other files were indexed and answer the question.
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "guide.html",
        "{summary}"
    );

    // The text form lists them under stage 1; `ingest` alone exits 1 the same way.
    let out = ragloop(dir.path()).arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED ") && stdout.contains("dangling.txt"),
        "{stdout}"
    );
}

#[test]
fn a_damaged_trained_model_is_trained_again_not_advised_away() {
    // A cut `idf.f32` once failed every later run with "run stage 2: `ragloop run`", which
    // skipped stage 2 (its `_SUCCESS` was there) and failed the same way.
    let dir = quick_project();
    let run = || {
        let out = ragloop(dir.path())
            .args(["run", "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    let idf = find(&dir.path().join("work/store"), "idf.f32").expect("a trained IDF table");
    let bytes = std::fs::read(&idf).unwrap();
    std::fs::write(&idf, &bytes[..bytes.len() / 2]).unwrap();

    let second = run();
    let train = &second["stages"][1];
    let details = train["details"].to_string();
    assert!(
        details.contains("idf.f32 is damaged") && details.contains("trained again"),
        "{train}"
    );
    assert!(
        train["summary"].as_str().unwrap().starts_with("job "),
        "{train}"
    );
    assert_eq!(std::fs::read(&idf).unwrap(), bytes);
    // The same model again, so the same answer.
    assert_eq!(second["answer"]["text"], first["answer"]["text"]);
    assert_eq!(second["answer"]["citations"], first["answer"]["citations"]);
}

/// The first file named `name` under `dir`.
fn find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

#[test]
fn an_index_built_with_another_analyzer_is_rebuilt_from_the_shards() {
    // An index from before `[index] analyzer` (the standard one), or one whose analyzer the
    // configuration changed, is derived data: stage 6 drops it and indexes the shards again,
    // instead of failing on the schema it no longer matches.
    let dir = quick_project();
    let config = |analyzer: &str| {
        std::fs::write(
            dir.path().join("ragloop.toml"),
            format!("{QUICK_CONFIG}[index]\nanalyzer = \"{analyzer}\"\n"),
        )
        .unwrap();
    };
    let run = |question: &str| run_json(dir.path(), question);
    config("standard");
    let first = run("Which port does the dashboard open?");
    const REBUILT: &str = "index \"rag-index\" with the standard analyzer (english was asked for): rebuilt from the shards";
    let rebuilt = |summary: &serde_json::Value| {
        summary["stages"][5]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str() == Some(REBUILT))
    };
    assert!(!rebuilt(&first), "{first}");
    config("english");
    let second = run("Which port does the dashboard open?");
    let index = &second["stages"][5];
    assert!(rebuilt(&second), "{index}");
    // Every record again, none twice: as many as the first build held.
    let held = |summary: &serde_json::Value| {
        let text = summary["stages"][5]["summary"]
            .as_str()
            .unwrap()
            .to_string();
        let count = text.split("; ").nth(1).unwrap().split(' ').next().unwrap();
        count.parse::<usize>().unwrap()
    };
    assert_eq!(held(&second), held(&first), "{index}");
    assert!(held(&first) >= 7, "{first}");
    assert_eq!(
        second["answer"]["citations"][0]["doc_id"], "wiki/network.md",
        "{second}"
    );
}

#[test]
fn a_removed_or_edited_file_leaves_the_index_on_the_next_run() {
    // Issue 26: chunk ids are content hashes and stage 6 only upserted, so a deleted file's
    // chunks stayed retrievable and an edited file was cited with its old text too.
    let dir = quick_project();
    let run = |question: &str| run_json(dir.path(), question);
    let first = run("How do I restore a snapshot?");
    assert_eq!(first["answer"]["citations"][0]["doc_id"], "guide.html");

    let docs = dir.path().join("docs");
    std::fs::remove_file(docs.join("guide.html")).unwrap();
    std::fs::write(
        docs.join("wiki/network.md"),
        "---\ntitle: Network notes\n---\n\n# Network\n\n## Firewall\n\nOpen port 9443 for the \
         dashboard and keep port 22 closed to the internet.\n",
    )
    .unwrap();
    let second = run("Which port does the dashboard open?");
    let ingest = second["stages"][0]["summary"].as_str().unwrap();
    assert!(ingest.contains("1 removed"), "{ingest}");
    let index = second["stages"][5]["summary"].as_str().unwrap();
    assert!(
        index.contains("stale deleted (1 documents removed, 1 changed)"),
        "{index}"
    );
    let answer = second["answer"]["text"].as_str().unwrap();
    assert!(
        answer.contains("9443") && !answer.contains("8443"),
        "{answer}"
    );
    // The removed guide is cited no more.
    let out = ragloop(dir.path())
        .args(["ask", "--json", "How do I restore a snapshot?"])
        .output()
        .unwrap();
    let asked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cited: Vec<&str> = asked["citations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["doc_id"].as_str())
        .collect();
    assert!(!cited.contains(&"guide.html"), "{asked}");
}
