//! EPUB (2 and 3): the zip's `META-INF/container.xml` names the package document (OPF); its
//! `<spine>` gives the reading order of the content documents (XHTML), each read as
//! [`HtmlParser`](crate::HtmlParser) reads a page, into one document for the book — headings
//! are its sections, the book's Dublin Core metadata (`dc:title`, `dc:creator`, …) its title
//! and metadata. DRM-encrypted books (`META-INF/encryption.xml` over the content) are refused
//! with that reason.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;
use crate::package::{Package, attr, core_properties, malformed, resolve};

/// The EPUB parser (`.epub`; a zip whose first entry is `mimetype` =
/// `application/epub+zip`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EpubParser;

impl DocumentParser for EpubParser {
    fn format(&self) -> &str {
        "epub"
    }

    fn extensions(&self) -> &[&str] {
        &["epub"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        // The OCF container's first entry is the uncompressed `mimetype` file.
        data.starts_with(b"PK\x03\x04")
            && data[..data.len().min(128)]
                .windows(b"application/epub+zip".len())
                .any(|w| w == b"application/epub+zip")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let mut zip = Package::open(file.data, "EPUB")?;
        let container = zip
            .part("META-INF/container.xml")?
            .ok_or_else(|| ParseError::new("not an EPUB: no META-INF/container.xml"))?;
        let opf_path = rootfile(&container)?
            .ok_or_else(|| ParseError::new("not an EPUB: container.xml names no rootfile"))?;
        let opf = zip.part(&opf_path)?.ok_or_else(|| {
            ParseError::new(format!("EPUB package document {opf_path} is missing"))
        })?;
        let package = read_package(&opf)?;
        if let Some(enc) = zip.part("META-INF/encryption.xml")?
            && enc.contains("EncryptedData")
            && !enc.contains("http://www.idpf.org/2008/embedding")
            && !enc.contains("http://ns.adobe.com/pdf/enc#RC")
        {
            // Font obfuscation (the two algorithms above) is not DRM; anything else is.
            return Err(ParseError::new(
                "the EPUB is encrypted (DRM): its content cannot be read",
            ));
        }
        let base = opf_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut out = DocBuilder::new();
        let mut first_title = String::new();
        let mut read = 0;
        for idref in &package.spine {
            let Some((href, media)) = package.manifest.get(idref) else {
                continue;
            };
            if !matches!(
                media.as_str(),
                "application/xhtml+xml" | "text/html" | "application/x-dtbook+xml"
            ) {
                continue;
            }
            let path = href_path(base, href);
            let Some(bytes) = zip.bytes(&path)? else {
                continue;
            };
            let text = crate::html::decode(&bytes)?;
            out.block_break();
            let (next, title) = crate::html::walk_into(out, &text);
            out = next;
            if first_title.is_empty() {
                first_title = title;
            }
            read += 1;
        }
        if read == 0 {
            return Err(ParseError::new(
                "the EPUB's spine names no readable content document",
            ));
        }
        let title = package
            .metadata
            .get("title")
            .cloned()
            .or_else(|| out.first_heading().map(str::to_string))
            .unwrap_or(first_title);
        let mut doc = out.finish(file.document(title, ""));
        doc.metadata = package.metadata;
        Ok(Parsed::documents([doc]))
    }
}

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    malformed("EPUB", e)
}

/// The first `<rootfile full-path>` of `container.xml`.
fn rootfile(xml: &str) -> Result<Option<String>, ParseError> {
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"rootfile" => {
                if let Some(path) = attr(&e, "full-path") {
                    return Ok(Some(path));
                }
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
    }
}

/// What the package document says: metadata, manifest (id → href, media type), spine.
struct PackageDoc {
    metadata: std::collections::BTreeMap<String, String>,
    manifest: HashMap<String, (String, String)>,
    spine: Vec<String>,
}

fn read_package(xml: &str) -> Result<PackageDoc, ParseError> {
    let metadata = core_properties(xml, "EPUB")?;
    let mut manifest = HashMap::new();
    let mut spine = Vec::new();
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"item" => {
                    if let (Some(id), Some(href)) = (attr(&e, "id"), attr(&e, "href")) {
                        let media = attr(&e, "media-type").unwrap_or_default();
                        manifest.insert(id, (href, media));
                    }
                }
                b"itemref" => spine.extend(attr(&e, "idref")),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(PackageDoc {
        metadata,
        manifest,
        spine,
    })
}

/// The zip path of `href` (percent-encoded, relative to the package document's folder
/// `base`, fragment dropped).
fn href_path(base: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap_or_default();
    resolve(base, &percent_decode(href))
}

/// `%XX` escapes decoded (as UTF-8 bytes; an invalid escape stays as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::epub;

    #[test]
    fn spine_order_headings_and_metadata() {
        let data = epub(
            "Field Guide",
            &[
                (
                    "Text/ch%201.xhtml",
                    "<html><head><title>One</title></head><body><h1>Install</h1><p>Run make.</p></body></html>",
                ),
                (
                    "Text/ch2.xhtml",
                    "<html><body><h1>Use</h1><h2>Flags</h2><p>Pass <em>-v</em>.</p><nav>toc</nav></body></html>",
                ),
            ],
        );
        let file = RawFile {
            name: "guide.epub",
            source: "s/guide.epub",
            data: &data,
        };
        assert!(EpubParser.sniff(&data));
        let d = EpubParser.parse(&file).unwrap().documents.remove(0);
        assert_eq!(d.title, "Field Guide");
        assert_eq!(d.metadata["author"], "A. Writer");
        assert_eq!(d.text, "Install\n\nRun make.\n\nUse\n\nFlags\n\nPass -v.");
        assert_eq!(
            d.section_at(d.text.find("-v").unwrap()),
            ["Use".to_string(), "Flags".to_string()]
        );
        assert_eq!(d.section_at(0), ["Install".to_string()]);
    }

    #[test]
    fn hrefs_resolve_against_the_package_folder() {
        assert_eq!(
            href_path("OEBPS", "Text/a%20b.xhtml#x"),
            "OEBPS/Text/a b.xhtml"
        );
        assert_eq!(
            href_path("OEBPS/pkg", "../Text/c.xhtml"),
            "OEBPS/Text/c.xhtml"
        );
        assert_eq!(href_path("", "c.xhtml"), "c.xhtml");
        assert_eq!(href_path("OEBPS", "/abs/c.xhtml"), "abs/c.xhtml");
    }

    #[test]
    fn broken_books_are_refused_with_the_reason() {
        let parse = |data: &[u8]| {
            EpubParser
                .parse(&RawFile {
                    name: "b.epub",
                    source: "s",
                    data,
                })
                .unwrap_err()
                .to_string()
        };
        assert!(parse(b"PK\x03\x04 not really").contains("zip archive is unreadable"));
        let empty = epub("Empty", &[]);
        assert!(parse(&empty).contains("names no readable content"));
    }
}
