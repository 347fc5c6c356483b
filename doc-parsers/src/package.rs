//! Zip packages (DOCX, PPTX, EPUB): parts read out of the archive with a size cap, XML
//! attributes, and the Dublin Core metadata both OOXML's `docProps/core.xml` and EPUB's
//! package document carry.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rag_core::parse::ParseError;
use zip::ZipArchive;

/// Largest part read out of an archive (a zip bomb stops here): 256 MiB.
pub(crate) const MAX_PART_BYTES: u64 = 256 << 20;

/// An opened zip package of one format (the format names its errors).
pub(crate) struct Package<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    format: &'static str,
}

impl<'a> Package<'a> {
    /// Opens `data` as a zip archive; an unreadable one is "not a {format}".
    pub(crate) fn open(data: &'a [u8], format: &'static str) -> Result<Self, ParseError> {
        let zip = ZipArchive::new(Cursor::new(data)).map_err(|e| {
            ParseError::new(format!(
                "not a {format}: the zip archive is unreadable: {e}"
            ))
        })?;
        Ok(Self { zip, format })
    }

    /// One part as bytes, `None` when absent.
    pub(crate) fn bytes(&mut self, name: &str) -> Result<Option<Vec<u8>>, ParseError> {
        let format = self.format;
        let mut entry = match self.zip.by_name(name) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => {
                return Err(ParseError::new(format!(
                    "{format} part {name} unreadable: {e}"
                )));
            }
        };
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_PART_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ParseError::new(format!("{format} part {name} unreadable: {e}")))?;
        if bytes.len() as u64 > MAX_PART_BYTES {
            return Err(ParseError::new(format!(
                "{format} part {name} decompresses to more than {MAX_PART_BYTES} bytes"
            )));
        }
        Ok(Some(bytes))
    }

    /// One XML part as text, `None` when absent.
    pub(crate) fn part(&mut self, name: &str) -> Result<Option<String>, ParseError> {
        let format = self.format;
        match self.bytes(name)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
                ParseError::new(format!("{format} part {name} is not UTF-8 XML: {e}"))
            }),
        }
    }
}

/// "{format} XML is malformed: {e}".
pub(crate) fn malformed(format: &str, e: impl std::fmt::Display) -> ParseError {
    ParseError::new(format!("{format} XML is malformed: {e}"))
}

/// The value of attribute `name` (`w:val`), unescaped.
pub(crate) fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// The Dublin Core fields of `xml` (OOXML's `docProps/core.xml`, EPUB's `<metadata>`), first
/// of each kind: title, author (`creator`), subject, keywords, description, language and
/// dates.
pub(crate) fn core_properties(
    xml: &str,
    format: &str,
) -> Result<BTreeMap<String, String>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut out = BTreeMap::new();
    let mut field: Option<&'static str> = None;
    loop {
        match reader.read_event().map_err(|e| malformed(format, e))? {
            Event::Start(e) => {
                field = match e.local_name().as_ref() {
                    b"title" => Some("title"),
                    b"creator" => Some("author"),
                    b"subject" => Some("subject"),
                    b"keywords" => Some("keywords"),
                    b"description" => Some("description"),
                    b"language" => Some("language"),
                    b"created" => Some("created"),
                    b"modified" => Some("modified"),
                    _ => None,
                }
            }
            Event::Text(t) => {
                if let Some(f) = field {
                    let v = t.unescape().map_err(|e| malformed(format, e))?;
                    let v = v.trim();
                    if !v.is_empty() && !out.contains_key(f) {
                        out.insert(f.to_string(), v.to_string());
                    }
                }
            }
            Event::End(_) => field = None,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The zip path of `target` (a relationship target or a manifest href, decoded) relative to
/// the folder `dir`: `.` and `..` segments resolved, a leading `/` starting at the root.
pub(crate) fn resolve(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}
