//! Small real files made in code, for tests here and in crates that read corpora (feature
//! `testing`): a valid PDF with a text layer, a DOCX archive from its XML parts, an EPUB and
//! a PPTX and an XLSX.

use std::io::{Cursor, Write};

/// A zip archive holding these parts (a DOCX when they are a DOCX's).
pub fn docx(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in parts {
        zip.start_file(*name, options).expect("writing to memory");
        zip.write_all(body.as_bytes()).expect("writing to memory");
    }
    zip.finish().expect("writing to memory").into_inner()
}

/// An EPUB 3 book titled `title` (author "A. Writer") whose spine is `chapters`: (href as the
/// manifest writes it, percent-encoded, relative to `OEBPS/`; XHTML).
pub fn epub(title: &str, chapters: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut put = |name: &str, body: &str, options| {
        zip.start_file(name, options).expect("writing to memory");
        zip.write_all(body.as_bytes()).expect("writing to memory");
    };
    put("mimetype", "application/epub+zip", stored);
    put(
        "META-INF/container.xml",
        r#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#,
        deflated,
    );
    let manifest: String = chapters
        .iter()
        .enumerate()
        .map(|(i, (href, _))| {
            format!(r#"<item id="c{i}" href="{href}" media-type="application/xhtml+xml"/>"#)
        })
        .collect();
    let spine: String = (0..chapters.len())
        .map(|i| format!(r#"<itemref idref="c{i}"/>"#))
        .collect();
    put(
        "OEBPS/content.opf",
        &format!(
            r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title><dc:creator>A. Writer</dc:creator><dc:language>en</dc:language></metadata><manifest>{manifest}</manifest><spine>{spine}</spine></package>"#
        ),
        deflated,
    );
    for (href, body) in chapters {
        put(
            &format!("OEBPS/{}", href.replace("%20", " ")),
            body,
            deflated,
        );
    }
    zip.finish().expect("writing to memory").into_inner()
}

/// A PPTX deck: per slide its title (`None`: no title placeholder), its body paragraphs and
/// its speaker notes; `docProps/core.xml` titles the deck `title`.
pub fn pptx(title: &str, slides: &[(Option<&str>, &[&str], Option<&str>)]) -> Vec<u8> {
    const P: &str = r#"xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships""#;
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let para = |t: &str| format!("<a:p><a:r><a:rPr lang=\"en-US\"/><a:t>{t}</a:t></a:r></a:p>");
    let shape = |ph: &str, paras: &[&str]| {
        format!(
            "<p:sp><p:nvSpPr><p:cNvPr id=\"2\" name=\"s\"/><p:cNvSpPr/><p:nvPr>{ph}</p:nvPr></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/>{}</p:txBody></p:sp>",
            paras.iter().map(|t| para(t)).collect::<String>()
        )
    };
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut ids = String::new();
    let mut rels = String::new();
    // Listed in reverse file order, so reading order must come from sldIdLst, not names.
    for (i, (slide_title, body, notes)) in slides.iter().enumerate() {
        let n = slides.len() - i;
        ids.push_str(&format!(r#"<p:sldId id="{}" r:id="rId{n}"/>"#, 255 + n));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="{REL}/slide" Target="slides/slide{n}.xml"/>"#
        ));
        let mut tree = String::new();
        if let Some(t) = slide_title {
            tree.push_str(&shape(r#"<p:ph type="title"/>"#, &[t]));
        }
        tree.push_str(&shape(r#"<p:ph idx="1"/>"#, body));
        parts.push((
            format!("ppt/slides/slide{n}.xml"),
            format!(
                r#"<?xml version="1.0"?><p:sld {P}><p:cSld><p:spTree><p:nvGrpSpPr/><p:grpSpPr/>{tree}</p:spTree></p:cSld></p:sld>"#
            ),
        ));
        if let Some(notes) = notes {
            parts.push((
                format!("ppt/slides/_rels/slide{n}.xml.rels"),
                format!(
                    r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId9" Type="{REL}/notesSlide" Target="../notesSlides/notesSlide{n}.xml"/></Relationships>"#
                ),
            ));
            let body = shape(r#"<p:ph type="body" idx="1"/>"#, &[notes]);
            let number = shape(r#"<p:ph type="sldNum" idx="5"/>"#, &["99"]);
            parts.push((
                format!("ppt/notesSlides/notesSlide{n}.xml"),
                format!(
                    r#"<?xml version="1.0"?><p:notes {P}><p:cSld><p:spTree>{number}{body}</p:spTree></p:cSld></p:notes>"#
                ),
            ));
        }
    }
    parts.push((
        "ppt/presentation.xml".into(),
        format!(r#"<?xml version="1.0"?><p:presentation {P}><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>"#),
    ));
    parts.push((
        "ppt/_rels/presentation.xml.rels".into(),
        format!(r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>"#),
    ));
    parts.push((
        "docProps/core.xml".into(),
        format!(r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>"#),
    ));
    let refs: Vec<(&str, &str)> = parts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    docx(&refs)
}

/// An XLSX workbook: per sheet its name, rows of cells (a cell that parses as a number is
/// stored as one, others as inline strings, empty ones left out) and whether it is hidden.
pub fn xlsx(sheets: &[(&str, &[&[&str]], bool)]) -> Vec<u8> {
    const NS: &str = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships""#;
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut listed = String::new();
    let mut rels = String::new();
    let mut types = String::new();
    for (i, (name, rows, hidden)) in sheets.iter().enumerate() {
        let n = i + 1;
        let state = if *hidden { r#" state="hidden""# } else { "" };
        listed.push_str(&format!(
            r#"<sheet name="{name}" sheetId="{n}"{state} r:id="rId{n}"/>"#
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="{REL}/worksheet" Target="worksheets/sheet{n}.xml"/>"#
        ));
        types.push_str(&format!(
            r#"<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#
        ));
        let mut data = String::new();
        for (r, row) in rows.iter().enumerate() {
            data.push_str(&format!(r#"<row r="{}">"#, r + 1));
            for (c, value) in row.iter().enumerate() {
                let at = format!("{}{}", (b'A' + c as u8) as char, r + 1);
                if value.is_empty() {
                    continue;
                }
                if value.parse::<f64>().is_ok() {
                    data.push_str(&format!(r#"<c r="{at}"><v>{value}</v></c>"#));
                } else {
                    data.push_str(&format!(
                        r#"<c r="{at}" t="inlineStr"><is><t>{value}</t></is></c>"#
                    ));
                }
            }
            data.push_str("</row>");
        }
        parts.push((
            format!("xl/worksheets/sheet{n}.xml"),
            format!(
                r#"<?xml version="1.0"?><worksheet {NS}><sheetData>{data}</sheetData></worksheet>"#
            ),
        ));
    }
    parts.push((
        "[Content_Types].xml".into(),
        format!(
            r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>{types}</Types>"#
        ),
    ));
    parts.push((
        "_rels/.rels".into(),
        format!(r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#),
    ));
    parts.push((
        "xl/workbook.xml".into(),
        format!(r#"<?xml version="1.0"?><workbook {NS}><sheets>{listed}</sheets></workbook>"#),
    ));
    parts.push((
        "xl/_rels/workbook.xml.rels".into(),
        format!(r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>"#),
    ));
    let refs: Vec<(&str, &str)> = parts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    docx(&refs)
}

/// A one-font PDF whose pages draw `contents`, with a correct cross-reference table.
pub fn pdf(contents: &[&str]) -> Vec<u8> {
    let n = contents.len();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Count {n} /Kids [{}] >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for (i, c) in contents.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{c}\nendstream",
            c.len() + 1
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
