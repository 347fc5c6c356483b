//! # doc-parsers
//!
//! The document formats of ragloop beyond plain text and JSONL: HTML, Markdown, PDF, DOCX,
//! PPTX, EPUB and spreadsheets (XLSX, XLSB, XLS, ODS),
//! each a [`DocumentParser`](rag_core::parse::DocumentParser) that turns one file into a
//! [`Document`](rag_core::chunk::Document) whose text is in reading order and whose
//! [`sections`](rag_core::chunk::Document::sections) (heading paths) and
//! [`pages`](rag_core::chunk::Document::pages) go with every chunk into the index and the
//! citations (`guide.pdf p. 12 · 3 Installation > 3.2 Linux`). All pure Rust, on well-kept
//! crates: html5ever (`scraper`), `pulldown-cmark`, `pdf-extract` (lopdf), `zip` + `quick-xml`,
//! `calamine`.
//! rag-core stays free of them; [`all`] is the registry the `ragloop` CLI reads corpora with.
//!
//! ```
//! let parsers = doc_parsers::all();
//! let page = b"<!doctype html><title>Guide</title><nav>Home</nav>
//!     <h1>Install</h1><p>Run <b>make</b>.</p><h2>Linux</h2><p>Use apt.</p>";
//! let report = parsers.parse("guide.html", "mem://b/raw-docs/guide.html", page);
//! let doc = &report.documents[0];
//! assert_eq!(doc.title, "Guide");
//! assert_eq!(doc.text, "Install\n\nRun make.\n\nLinux\n\nUse apt.");
//! assert_eq!(doc.section_at(doc.text.find("apt").unwrap()), ["Install", "Linux"]);
//! assert_eq!(report.formats["html"].files, 1);
//! ```

mod builder;
#[cfg(test)]
mod damaged_tests;
mod docx;
mod epub;
mod html;
mod markdown;
mod package;
mod pdf;
mod pptx;
mod spreadsheet;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use docx::DocxParser;
pub use epub::EpubParser;
pub use html::HtmlParser;
pub use markdown::MarkdownParser;
pub use pdf::PdfParser;
pub use pptx::PptxParser;
pub use spreadsheet::SpreadsheetParser;

/// The built-in parsers (JSONL, text) plus HTML, Markdown, PDF, DOCX, PPTX, EPUB and
/// spreadsheets (XLSX, XLSB, XLS, ODS).
pub fn all() -> rag_core::parse::Parsers {
    rag_core::parse::Parsers::builtin()
        .with(MarkdownParser)
        .with(SpreadsheetParser)
        .with(EpubParser)
        .with(PptxParser)
        .with(DocxParser)
        .with(PdfParser)
        .with(HtmlParser)
}
