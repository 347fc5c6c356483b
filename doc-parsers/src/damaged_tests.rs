//! Damaged files of every format never take the process down: random byte flips and cuts of
//! a valid file either parse or fail with a reason, called on the parser itself (the
//! registry's panic guard is a second line, not the first).

use crate::testing;
use proptest::prelude::*;
use rag_core::parse::{DocumentParser, RawFile};

fn samples() -> Vec<(Box<dyn DocumentParser>, Vec<u8>)> {
    let docx = testing::docx(&[(
        "word/document.xml",
        r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Hello there</w:t></w:r></w:p></w:body></w:document>"#,
    )]);
    vec![
        (Box::new(crate::DocxParser), docx),
        (
            Box::new(crate::PptxParser),
            testing::pptx(
                "Deck",
                &[
                    (Some("One"), &["first point"], Some("a note")),
                    (None, &["x"], None),
                ],
            ),
        ),
        (
            Box::new(crate::EpubParser),
            testing::epub(
                "Book",
                &[("a.xhtml", "<html><body><h1>A</h1><p>text</p></body></html>")],
            ),
        ),
        (
            Box::new(crate::SpreadsheetParser),
            testing::xlsx(&[("S", &[&["a", "1"], &["b", "2"]], false)]),
        ),
        (
            Box::new(crate::HtmlParser),
            b"<html><title>t</title><body><h1>x</h1><p>y &amp; z</p></body></html>".to_vec(),
        ),
        (
            Box::new(crate::MarkdownParser),
            b"---\ntitle: t\n---\n# A\n\n```\ncode\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                .to_vec(),
        ),
        (
            Box::new(crate::PdfParser),
            testing::pdf(&["BT /F1 12 Tf 72 700 Td (Hello) Tj ET"]),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn flipped_or_cut_files_parse_or_fail_with_a_reason(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let samples = samples();
        let (parser, data) = &samples[which];
        let mut data = data.clone();
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] ^= byte;
        }
        if let Some(cut) = cut {
            data.truncate(cut.index(data.len()));
        }
        let file = RawFile { name: "f", source: "s/f", data: &data };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(&file)));
        prop_assert!(outcome.is_ok(), "{} panicked", parser.format());
        if let Err(e) = outcome.unwrap() {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
}
