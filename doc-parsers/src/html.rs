//! HTML: the text a reader sees, in document order, with headings as sections.
//!
//! Parsed with html5ever (through `scraper`), so entities, unclosed tags and misnested markup
//! come out as a browser would build them. Dropped: `script`, `style`, `template`,
//! `noscript`, forms' controls, `svg`/`canvas`/`iframe`, anything `hidden` or
//! `aria-hidden`, and page chrome — `nav`, `role="navigation"`, and `header`/`footer`/`aside`
//! outside the page's `main`/`article`. `h1`–`h6` start sections; list items become `- ` lines,
//! table rows ` | `-separated lines, `pre` stays verbatim. The bytes are decoded from their
//! byte-order mark, else a declared charset (`<meta charset>`, `http-equiv`), else UTF-8, else
//! windows-1252 (the web's default).

use ego_tree::NodeRef;
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};
use scraper::{Html, Node};

use crate::builder::DocBuilder;

/// The HTML parser (`.html`, `.htm`, `.xhtml`; content starting `<!doctype html` or `<html`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlParser;

impl DocumentParser for HtmlParser {
    fn format(&self) -> &str {
        "html"
    }

    fn extensions(&self) -> &[&str] {
        &["html", "htm", "xhtml"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        let head = &data[..data.len().min(512)];
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let start = head.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else { return false };
        let head = head[start..].to_ascii_lowercase();
        head.starts_with(b"<!doctype html") || head.starts_with(b"<html")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let text = decode(file.data)?;
        let (out, title) = walk_into(DocBuilder::new(), &text);
        let title = match title.as_str() {
            "" => out.first_heading().unwrap_or_default().to_string(),
            t => t.to_string(),
        };
        let doc = out.finish(file.document(title, ""));
        Ok(Parsed::documents([doc]))
    }
}

/// Writes the visible text of the HTML page `text` into `out` (as [`HtmlParser`] reads it);
/// returns the builder and the page's `<title>`, whitespace collapsed (empty without one).
pub(crate) fn walk_into(out: DocBuilder, text: &str) -> (DocBuilder, String) {
    let html = Html::parse_document(text);
    let mut walk = Walk {
        out,
        title: String::new(),
        in_content: false,
    };
    walk.node(html.tree.root(), Ctx::default());
    let title = walk.title.split_whitespace().collect::<Vec<_>>().join(" ");
    (walk.out, title)
}

/// Decodes HTML bytes: BOM, then a declared charset, then UTF-8, then windows-1252.
pub(crate) fn decode(data: &[u8]) -> Result<String, ParseError> {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(data) {
        return Ok(enc.decode_without_bom_handling(&data[bom..]).0.into_owned());
    }
    let declared = declared_charset(&data[..data.len().min(1024)])
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()));
    if let Some(enc) = declared.filter(|e| *e != encoding_rs::UTF_8) {
        return Ok(enc.decode_without_bom_handling(data).0.into_owned());
    }
    match std::str::from_utf8(data) {
        Ok(s) => Ok(s.to_string()),
        Err(_) if declared == Some(encoding_rs::UTF_8) => {
            // Declared UTF-8 but is not: replacement characters mark the bad bytes.
            Ok(String::from_utf8_lossy(data).into_owned())
        }
        Err(_) => Ok(encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(data)
            .0
            .into_owned()),
    }
}

/// The `charset=` value in the first bytes (`<meta charset="…">` or a `content` attribute).
fn declared_charset(head: &[u8]) -> Option<String> {
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    let at = lower.find("charset=")? + "charset=".len();
    let value: String = lower[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

/// What an ancestor imposes on a node.
#[derive(Debug, Clone, Copy, Default)]
struct Ctx {
    /// Inside `pre`: whitespace kept.
    pre: bool,
    /// Inside an ordered list at this depth (numbers items).
    ordered: bool,
}

struct Walk {
    out: DocBuilder,
    title: String,
    /// Inside `main`/`article`: `header`/`footer`/`aside` there are content, not chrome.
    in_content: bool,
}

impl Walk {
    fn node(&mut self, node: NodeRef<'_, Node>, ctx: Ctx) {
        match node.value() {
            Node::Text(t) => {
                if ctx.pre {
                    self.out.verbatim(t);
                } else {
                    self.out.words(t);
                }
            }
            Node::Element(el) => self.element(node, el, ctx),
            Node::Document | Node::Fragment => self.children(node, ctx),
            _ => {}
        }
    }

    fn children(&mut self, node: NodeRef<'_, Node>, ctx: Ctx) {
        for child in node.children() {
            self.node(child, ctx);
        }
    }

    fn element(&mut self, node: NodeRef<'_, Node>, el: &scraper::node::Element, ctx: Ctx) {
        let name = el.name();
        if el.attr("hidden").is_some()
            || el.attr("aria-hidden") == Some("true")
            || el.attr("role") == Some("navigation")
        {
            return;
        }
        match name {
            "title" => {
                if self.title.is_empty() {
                    self.title = text_of(node);
                }
            }
            "head" => {
                // Only the title matters in the head.
                for child in node.descendants() {
                    if let Node::Element(e) = child.value()
                        && e.name() == "title"
                        && self.title.is_empty()
                    {
                        self.title = text_of(child);
                    }
                }
            }
            "script" | "style" | "template" | "noscript" | "svg" | "canvas" | "iframe"
            | "object" | "embed" | "select" | "button" | "input" | "textarea" | "nav" | "map"
            | "audio" | "video" => {}
            "header" | "footer" | "aside" if !self.in_content => {}
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = name.as_bytes()[1] - b'0';
                self.out.heading(level, &text_of(node));
            }
            "main" | "article" => {
                let was = self.in_content;
                self.in_content = true;
                self.block(node, ctx);
                self.in_content = was;
            }
            "br" => self.out.line_break(),
            "hr" => self.out.block_break(),
            "img" => {
                if let Some(alt) = el.attr("alt").filter(|a| !a.trim().is_empty()) {
                    self.out.words(alt);
                }
            }
            "pre" => {
                self.out.block_break();
                self.children(node, Ctx { pre: true, ..ctx });
                self.out.block_break();
            }
            "ul" | "menu" => self.block(
                node,
                Ctx {
                    ordered: false,
                    ..ctx
                },
            ),
            "ol" => self.block(
                node,
                Ctx {
                    ordered: true,
                    ..ctx
                },
            ),
            "li" => {
                self.out.line_break();
                if ctx.ordered {
                    let n = node
                        .prev_siblings()
                        .filter(|s| matches!(s.value(), Node::Element(e) if e.name() == "li"))
                        .count()
                        + 1;
                    self.out.raw(&format!("{n}. "));
                } else {
                    self.out.raw("- ");
                }
                self.children(node, ctx);
                self.out.line_break();
            }
            "tr" => {
                self.out.line_break();
                let mut first = true;
                for cell in node.children() {
                    if let Node::Element(e) = cell.value()
                        && matches!(e.name(), "td" | "th")
                    {
                        if !first {
                            self.out.raw(" | ");
                        }
                        first = false;
                        self.out.words(&text_of(cell));
                    }
                }
                self.out.line_break();
            }
            "dt" | "caption" | "figcaption" | "summary" | "legend" => {
                self.out.line_break();
                self.children(node, ctx);
                self.out.line_break();
            }
            "p" | "div" | "section" | "blockquote" | "dl" | "dd" | "table" | "figure"
            | "address" | "details" | "fieldset" | "form" | "body" | "html" | "center"
            | "thead" | "tbody" | "tfoot" => self.block(node, ctx),
            _ => self.children(node, ctx),
        }
    }

    /// A block element: its content set apart by blank lines.
    fn block(&mut self, node: NodeRef<'_, Node>, ctx: Ctx) {
        self.out.block_break();
        self.children(node, ctx);
        self.out.block_break();
    }
}

/// The visible text of a node, whitespace collapsed (for headings, titles and table cells).
fn text_of(node: NodeRef<'_, Node>) -> String {
    let mut words = Vec::new();
    let mut skip_depth: Option<usize> = None;
    for edge in node.traverse() {
        use ego_tree::iter::Edge;
        match edge {
            Edge::Open(n) => {
                if skip_depth.is_some() {
                    if let Node::Element(_) = n.value() {
                        skip_depth = skip_depth.map(|d| d + 1);
                    }
                    continue;
                }
                match n.value() {
                    Node::Element(e) if matches!(e.name(), "script" | "style" | "template") => {
                        skip_depth = Some(1);
                    }
                    Node::Element(e) if e.name() == "br" => words.push(String::new()),
                    Node::Text(t) => words.extend(t.split_whitespace().map(str::to_string)),
                    _ => {}
                }
            }
            Edge::Close(n) => {
                if let (Some(d), Node::Element(_)) = (skip_depth, n.value()) {
                    skip_depth = (d > 1).then(|| d - 1);
                }
            }
        }
    }
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(html: &str) -> rag_core::chunk::Document {
        let file = RawFile {
            name: "p.html",
            source: "s/p.html",
            data: html.as_bytes(),
        };
        HtmlParser.parse(&file).unwrap().documents.remove(0)
    }

    #[test]
    fn chrome_scripts_and_styles_go_content_and_structure_stay() {
        let d = parse(
            r#"<!DOCTYPE html><html><head><title>The  Guide</title><style>p{}</style></head>
            <body><nav><a href="/">Home</a> | <a>Next</a></nav>
            <header class="site">Site banner</header>
            <main><h1>Install</h1><p>Run <code>make&nbsp;install</code> &amp; wait.</p>
            <h2>On Linux</h2><ul><li>one</li><li>two <b>bold</b></li></ul>
            <ol><li>first</li><li>second</li></ol>
            <table><tr><th>Flag</th><th>Meaning</th></tr><tr><td>-v</td><td>verbose</td></tr></table>
            <pre>  code   kept
  as is</pre>
            <script>var x = "hidden";</script><div hidden>secret</div></main>
            <footer>© 2024 footer</footer></body></html>"#,
        );
        assert_eq!(d.title, "The Guide");
        assert_eq!(
            d.text,
            "Install\n\nRun make install & wait.\n\nOn Linux\n\n- one\n- two bold\n\n1. first\n2. second\n\nFlag | Meaning\n-v | verbose\n\n  code   kept\n  as is"
        );
        let paths: Vec<_> = d.sections.iter().map(|s| s.path.join(" > ")).collect();
        assert_eq!(paths, ["Install", "Install > On Linux"]);
    }

    #[test]
    fn declared_charsets_are_decoded() {
        // "café" in Latin-1, declared in a meta tag.
        let mut bytes = b"<html><head><meta charset=\"iso-8859-1\"></head><body><p>caf".to_vec();
        bytes.push(0xE9);
        bytes.extend_from_slice(b"</p></body></html>");
        let file = RawFile {
            name: "l.html",
            source: "s",
            data: &bytes,
        };
        let d = HtmlParser.parse(&file).unwrap().documents.remove(0);
        assert_eq!(d.text, "café");
        // Undeclared and not UTF-8: windows-1252.
        let file = RawFile {
            name: "l.html",
            source: "s",
            data: b"<p>\x93quoted\x94</p>",
        };
        let d = HtmlParser.parse(&file).unwrap().documents.remove(0);
        assert_eq!(d.text, "\u{201c}quoted\u{201d}");
    }

    #[test]
    fn the_first_heading_titles_a_page_without_a_title() {
        let d = parse("<body><article><header><h1>Post</h1></header><p>Body</p></article></body>");
        assert_eq!(d.title, "Post");
        assert_eq!(d.text, "Post\n\nBody");
        assert!(HtmlParser.sniff(b"\n  <!DOCTYPE HTML PUBLIC"));
        assert!(!HtmlParser.sniff(b"plain <html> later"));
    }
}
