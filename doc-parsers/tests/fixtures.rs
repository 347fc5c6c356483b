//! Every format on a small real file (`tests/fixtures/`, made from Debian packages by the
//! tools users make such files with; see its README for sources and licences): each reads as
//! one document with its title, its structure (sections, pages) and its text, through the
//! registry the CLI uses (so content sniffing picks the parser, not only the extension).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use rag_core::chunk::Document;

/// Parses `tests/fixtures/<name>` with [`doc_parsers::all`], as file `as_name`; returns the
/// format that read it and the document.
fn read(name: &str, as_name: &str) -> (String, Document) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let data = std::fs::read(&path).unwrap();
    let report = doc_parsers::all().parse(as_name, as_name, &data);
    assert!(report.skipped.is_empty(), "{name}: {:?}", report.skipped);
    assert_eq!(report.documents.len(), 1, "{name}");
    let format = report.formats.keys().next().unwrap().clone();
    (format, report.documents.into_iter().next().unwrap())
}

/// The section path at the first occurrence of `phrase`.
fn section_of(doc: &Document, phrase: &str) -> String {
    let at = doc
        .text
        .find(phrase)
        .unwrap_or_else(|| panic!("{phrase:?} not in the text"));
    doc.section_at(at).join(" > ")
}

#[test]
fn pdf_pages_of_the_bash_manual() {
    let (format, d) = read("bash-pages-1-2.pdf", "bash-pages-1-2.pdf");
    assert_eq!(format, "pdf");
    assert_eq!(d.pages.len(), 2);
    let at = d
        .text
        .find("sh-compatible command language interpreter")
        .unwrap();
    assert_eq!(d.page_at(at), Some(1));
    assert!(d.text.contains("GNU Bourne-Again SHell"));
}

#[test]
fn html_chapter_of_the_debian_reference() {
    let (format, d) = read("debian-reference-ch08.html", "ch08.html");
    assert_eq!(format, "html");
    assert_eq!(d.title, "Chapter 8. I18N and L10N");
    assert_eq!(
        section_of(&d, "Rationale for UTF-8 locale\n\n"),
        "Chapter 8. I18N and L10N > 8.1. The locale > 8.1.1. Rationale for UTF-8 locale"
    );
}

#[test]
fn docx_written_by_libreoffice_has_word_heading_styles() {
    // Named .bin: the content, not the extension, says DOCX.
    let (format, d) = read("debian-reference-ch03.lo.docx", "upload.bin");
    assert_eq!(format, "docx");
    assert!(d.title.contains("The system initialization"), "{}", d.title);
    assert!(d.sections.len() >= 10, "{} sections", d.sections.len());
    // Heading 1–3 paragraph styles nest as the HTML's h1–h3 did.
    assert!(
        d.sections.iter().any(|s| s.path
            == [
                "Chapter 3. The system initialization",
                "3.1. An overview of the boot strap process",
                "3.1.2. Stage 2: the boot loader"
            ]),
        "{:?}",
        d.sections
    );
    assert_eq!(
        d.metadata.get("language").map(String::as_str),
        Some("en-US")
    );
}

#[test]
fn epub_written_by_pandoc_reads_its_spine() {
    let (format, d) = read("debian-reference-ch04.epub", "book.epub");
    assert_eq!(format, "epub");
    assert!(d.title.contains("Authentication and access controls"));
    assert!(
        section_of(&d, "Good password\n\n").ends_with("4.3. Good password"),
        "{}",
        section_of(&d, "Good password\n\n")
    );
}

#[test]
fn xlsx_written_by_libreoffice_calc_is_a_sheet_of_rows() {
    let (format, d) = read("debian-reference-ch04.xlsx", "ch04.xlsx");
    assert_eq!(format, "spreadsheet");
    assert_eq!(d.title, "ch04");
    assert_eq!(section_of(&d, "Normal Unix authentication"), "Sheet1");
}

#[test]
fn pptx_written_by_pandoc_has_a_page_per_slide() {
    let (format, d) = read("docker-checkpoint.pptx", "deck.pptx");
    assert_eq!(format, "pptx");
    assert_eq!(d.title, "docker checkpoint");
    assert_eq!(d.pages.len(), 2);
    let at = d.text.find("freeze a running container").unwrap();
    assert_eq!(d.page_at(at), Some(2));
    assert_eq!(section_of(&d, "freeze a running container"), "Description");
}

#[test]
fn markdown_from_docker_docs_has_front_matter_and_code() {
    let (format, d) = read("docker-context.md", "context.md");
    assert_eq!(format, "markdown");
    assert_eq!(
        d.metadata["description"],
        "The context command description and usage"
    );
    // The code block is kept verbatim, its column alignment included.
    assert!(d.text.contains("create      Create new context\n"));
    assert_eq!(
        section_of(&d, "Related commands"),
        "config > Related commands"
    );
}
