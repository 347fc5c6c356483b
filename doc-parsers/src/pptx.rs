//! PPTX (Office Open XML presentations): slides in the deck's order (`ppt/presentation.xml`'s
//! slide list through its relationships, not file names), **one page per slide**, so a
//! citation says which slide. A slide's title placeholder is its section; its other shapes'
//! paragraphs (`a:t` runs; `a:br` breaks the line) follow in the slide's shape order, tables
//! as ` | ` rows, groups walked into; the speaker notes' body follows the slide's text.
//! `docProps/core.xml` gives the metadata and title (else the first slide's title).

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;
use crate::package::{Package, attr, core_properties, malformed, resolve};

/// The PPTX parser (`.pptx`, `.pptm`, `.ppsx`; a zip holding `ppt/presentation.xml`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PptxParser;

impl DocumentParser for PptxParser {
    fn format(&self) -> &str {
        "pptx"
    }

    fn extensions(&self) -> &[&str] {
        &["pptx", "pptm", "ppsx"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        data.starts_with(b"PK\x03\x04")
            && data
                .windows(b"ppt/presentation.xml".len())
                .any(|w| w == b"ppt/presentation.xml")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let mut zip = Package::open(file.data, "PPTX")?;
        let presentation = zip
            .part("ppt/presentation.xml")?
            .ok_or_else(|| ParseError::new("not a PPTX: no ppt/presentation.xml"))?;
        let rels = match zip.part("ppt/_rels/presentation.xml.rels")? {
            Some(xml) => relationships(&xml)?,
            None => HashMap::new(),
        };
        let metadata = match zip.part("docProps/core.xml")? {
            Some(xml) => core_properties(&xml, "PPTX")?,
            None => Default::default(),
        };
        let mut out = DocBuilder::new();
        let mut first_title = None;
        for rid in slide_ids(&presentation)? {
            let Some(target) = rels.get(&rid) else {
                continue;
            };
            let path = resolve("ppt", target);
            let Some(xml) = zip.part(&path)? else {
                continue;
            };
            out.page();
            let slide = read_shapes(&xml)?;
            match &slide.title {
                Some(t) => {
                    out.heading(1, t);
                    first_title.get_or_insert_with(|| t.clone());
                }
                None => out.untitled_section(),
            }
            write_lines(&mut out, &slide.lines);
            if let Some(notes) = notes_of(&mut zip, &path)? {
                write_lines(&mut out, &notes.lines);
            }
        }
        let title = metadata
            .get("title")
            .cloned()
            .or(first_title)
            .unwrap_or_default();
        let mut doc = out.finish(file.document(title, ""));
        doc.metadata = metadata;
        Ok(Parsed::documents([doc]))
    }
}

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    malformed("PPTX", e)
}

/// Lines as one block each; an empty line ends a block (a shape's end).
fn write_lines(out: &mut DocBuilder, lines: &[String]) {
    for line in lines {
        if line.is_empty() {
            out.block_break();
        } else {
            out.line_break();
            out.words(line);
        }
    }
    out.block_break();
}

/// The relationship id of every slide, in the deck's order.
fn slide_ids(xml: &str) -> Result<Vec<String>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut ids = Vec::new();
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"sldId" => {
                ids.extend(attr(&e, "r:id"));
            }
            Event::Eof => return Ok(ids),
            _ => {}
        }
    }
}

/// A relationships part: id → target.
fn relationships(xml: &str) -> Result<HashMap<String, String>, ParseError> {
    relationship_list(xml).map(|list| list.into_iter().map(|(id, _, t)| (id, t)).collect())
}

/// A relationships part as (id, type, target).
fn relationship_list(xml: &str) -> Result<Vec<(String, String, String)>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"Relationship" => {
                if let (Some(id), Some(target)) = (attr(&e, "Id"), attr(&e, "Target")) {
                    out.push((id, attr(&e, "Type").unwrap_or_default(), target));
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// The speaker notes of the slide at `slide_path` (their body placeholder only: not the
/// slide image or number).
fn notes_of(zip: &mut Package<'_>, slide_path: &str) -> Result<Option<Slide>, ParseError> {
    let (dir, name) = slide_path.rsplit_once('/').unwrap_or(("", slide_path));
    let Some(rels) = zip.part(&format!("{dir}/_rels/{name}.rels"))? else {
        return Ok(None);
    };
    let Some((_, _, target)) = relationship_list(&rels)?
        .into_iter()
        .find(|(_, kind, _)| kind.ends_with("/notesSlide"))
    else {
        return Ok(None);
    };
    let Some(xml) = zip.part(&resolve(dir, &target))? else {
        return Ok(None);
    };
    let mut notes = read_shapes(&xml)?;
    notes.lines.retain(|l| !l.is_empty());
    Ok((!notes.lines.is_empty()).then_some(notes))
}

/// A slide's text: its title, and its other lines (an empty line after each shape).
#[derive(Debug, Default)]
struct Slide {
    title: Option<String>,
    lines: Vec<String>,
}

/// Reads the shapes of a slide (or notes slide). Placeholders of the slide's furniture
/// (number, date, footer, the notes page's slide image) are left out; on a notes slide only
/// `body` placeholders count as notes.
fn read_shapes(xml: &str) -> Result<Slide, ParseError> {
    let notes = xml.contains("<p:notes");
    let mut reader = Reader::from_str(xml);
    let mut slide = Slide::default();
    // The shape in progress: its placeholder type, paragraphs, and the paragraph being read.
    let mut placeholder: Option<String> = None;
    let mut paragraphs: Vec<String> = Vec::new();
    let mut paragraph = String::new();
    let mut in_text = false;
    // Tables: the row's cells, the cell in progress.
    let mut row: Option<Vec<String>> = None;
    let mut cell: Option<String> = None;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => match e.local_name().as_ref() {
                b"sp" => {
                    placeholder = None;
                    paragraphs.clear();
                }
                b"ph" => placeholder = Some(attr(&e, "type").unwrap_or_else(|| "body".into())),
                b"t" => in_text = true,
                b"tr" => row = Some(Vec::new()),
                b"tc" => cell = Some(String::new()),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"ph" => placeholder = Some(attr(&e, "type").unwrap_or_else(|| "body".into())),
                b"br" => paragraph.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                paragraph.push_str(&t.unescape().map_err(xml_error)?);
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = std::mem::take(&mut paragraph);
                    match cell.as_mut() {
                        Some(c) => {
                            if !c.is_empty() {
                                c.push(' ');
                            }
                            c.push_str(text.trim());
                        }
                        None => paragraphs.push(text),
                    }
                }
                b"tc" => {
                    if let (Some(r), Some(c)) = (row.as_mut(), cell.take()) {
                        r.push(c.split_whitespace().collect::<Vec<_>>().join(" "));
                    }
                }
                b"tr" => {
                    if let Some(r) = row.take()
                        && r.iter().any(|c| !c.is_empty())
                    {
                        slide.lines.push(r.join(" | "));
                    }
                }
                b"tbl" => slide.lines.push(String::new()),
                b"sp" => {
                    let kind = placeholder.take();
                    let keep = match kind.as_deref() {
                        Some("sldNum" | "dt" | "ftr" | "hdr" | "sldImg") => false,
                        Some("body") => true,
                        Some(_) | None => !notes,
                    };
                    let texts: Vec<String> = paragraphs
                        .drain(..)
                        .flat_map(|p| {
                            p.split('\n')
                                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                        })
                        .filter(|l| !l.is_empty())
                        .collect();
                    if !keep || texts.is_empty() {
                        continue;
                    }
                    if matches!(kind.as_deref(), Some("title" | "ctrTitle")) && !notes {
                        let t = texts.join(" ");
                        if slide.title.is_none() {
                            slide.title = Some(t);
                        } else {
                            slide.lines.extend([t, String::new()]);
                        }
                    } else {
                        slide.lines.extend(texts);
                        slide.lines.push(String::new());
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(slide)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pptx;

    fn parse(data: &[u8]) -> rag_core::chunk::Document {
        PptxParser
            .parse(&RawFile {
                name: "deck.pptx",
                source: "s/deck.pptx",
                data,
            })
            .unwrap()
            .documents
            .remove(0)
    }

    #[test]
    fn slides_in_deck_order_are_pages_titles_are_sections_notes_follow() {
        let data = pptx(
            "Quarterly Review",
            &[
                (Some("Goals"), &["Ship the loop", "Measure it"], None),
                (
                    Some("Results"),
                    &["nDCG up 3 points"],
                    Some("Say why it moved"),
                ),
                (None, &["Questions?"], None),
            ],
        );
        assert!(PptxParser.sniff(&data));
        let d = parse(&data);
        assert_eq!(d.title, "Quarterly Review");
        assert_eq!(
            d.text,
            "Goals\n\nShip the loop\nMeasure it\n\nResults\n\nnDCG up 3 points\n\nSay why it moved\n\nQuestions?"
        );
        let at = |s: &str| d.text.find(s).unwrap();
        assert_eq!(d.page_at(at("Measure")), Some(1));
        assert_eq!(d.page_at(at("Say why")), Some(2));
        assert_eq!(d.page_at(at("Questions")), Some(3));
        assert_eq!(d.section_at(at("Say why")), ["Results".to_string()]);
        // A slide without a title is not filed under the previous slide's.
        assert!(d.section_at(at("Questions")).is_empty());
        // The notes page's slide number is furniture, not text.
        assert!(!d.text.contains("99"));
    }

    #[test]
    fn relationship_targets_resolve() {
        assert_eq!(resolve("ppt", "slides/slide1.xml"), "ppt/slides/slide1.xml");
        assert_eq!(
            resolve("ppt/slides", "../notesSlides/n1.xml"),
            "ppt/notesSlides/n1.xml"
        );
        assert_eq!(resolve("ppt", "/ppt/slides/s.xml"), "ppt/slides/s.xml");
    }
}
