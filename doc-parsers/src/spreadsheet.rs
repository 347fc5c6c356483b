//! Spreadsheets (XLSX, XLSM, XLSB, XLS, ODS) through `calamine`: every visible worksheet is a
//! section named after the sheet, its non-empty rows ` | `-separated lines (numbers as the
//! cell holds them, dates as ISO dates). Hidden sheets, charts and macros are left out.

use std::io::Cursor;

use calamine::{Data, Reader, SheetType, SheetVisible};
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;

/// The spreadsheet parser (`.xlsx`, `.xlsm`, `.xlsb`, `.xls`, `.ods`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpreadsheetParser;

impl DocumentParser for SpreadsheetParser {
    fn format(&self) -> &str {
        "spreadsheet"
    }

    fn extensions(&self) -> &[&str] {
        &["xlsx", "xlsm", "xlsb", "xls", "ods"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        let zip_with = |needle: &[u8]| {
            data.starts_with(b"PK\x03\x04") && data.windows(needle.len()).any(|w| w == needle)
        };
        // XLS shares its OLE container with .doc and .msg, so only the extension names it.
        zip_with(b"xl/workbook.")
            || zip_with(b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(file.data))
            .map_err(|e| ParseError::new(format!("not a readable spreadsheet: {e}")))?;
        let sheets: Vec<String> = book
            .sheets_metadata()
            .iter()
            .filter(|s| s.typ == SheetType::WorkSheet && s.visible == SheetVisible::Visible)
            .map(|s| s.name.clone())
            .collect();
        let mut out = DocBuilder::new();
        for name in sheets {
            let range = book
                .worksheet_range(&name)
                .map_err(|e| ParseError::new(format!("sheet {name:?} unreadable: {e}")))?;
            let rows: Vec<String> = range
                .rows()
                .filter_map(|row| {
                    let cells: Vec<String> = row.iter().map(cell).collect();
                    let used = cells.iter().rposition(|c| !c.is_empty())? + 1;
                    Some(cells[..used].join(" | "))
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            out.heading(1, &name);
            for row in rows {
                out.line_break();
                out.raw(&row);
            }
            out.block_break();
        }
        let title = file
            .name
            .rsplit('/')
            .next()
            .and_then(|n| n.rsplit_once('.').map(|(stem, _)| stem))
            .unwrap_or(file.name)
            .to_string();
        Ok(Parsed::documents([out.finish(file.document(title, ""))]))
    }
}

/// A cell as text: whitespace collapsed, dates ISO (`2024-03-01`, with the time when it has
/// one), errors as Excel writes them.
fn cell(data: &Data) -> String {
    let text = match data {
        Data::DateTime(d) => match d.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => t.date().to_string(),
            Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => d.to_string(),
        },
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xlsx;

    #[test]
    fn visible_sheets_are_sections_and_rows_are_lines() {
        let data = xlsx(&[
            (
                "Prices",
                &[&["Item", "Price"], &["Tea", "3.5"], &[], &["Cake", "", ""]],
                false,
            ),
            ("Secret", &[&["hidden", "row"]], true),
            ("Notes", &[&["", "Mind the  gap"]], false),
        ]);
        assert!(SpreadsheetParser.sniff(&data));
        let d = SpreadsheetParser
            .parse(&RawFile {
                name: "shop/q1 prices.xlsx",
                source: "s",
                data: &data,
            })
            .unwrap()
            .documents
            .remove(0);
        assert_eq!(d.title, "q1 prices");
        assert_eq!(
            d.text,
            "Prices\n\nItem | Price\nTea | 3.5\nCake\n\nNotes\n\nMind the gap"
        );
        assert_eq!(
            d.section_at(d.text.find("Tea").unwrap()),
            ["Prices".to_string()]
        );
    }

    #[test]
    fn a_broken_workbook_is_refused_with_the_reason() {
        let err = SpreadsheetParser
            .parse(&RawFile {
                name: "b.xlsx",
                source: "s",
                data: b"PK\x03\x04 truncated",
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("not a readable spreadsheet"),
            "{err}"
        );
    }
}
