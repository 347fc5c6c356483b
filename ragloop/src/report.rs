//! The evaluation report: a Markdown table of every retriever's metrics and a PNG chart with
//! the hit@k curves (k = 1…10) beside the nDCG@10 of each retriever.
//!
//! The chart is drawn with `plotters` on its bitmap backend; text uses DejaVu Sans, shipped in
//! `ragloop/assets/` (Bitstream Vera licence, `DejaVuSans-LICENSE.txt`), so the report looks
//! the same on a machine without fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::evaluation::MetricsRow;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Chart size in pixels.
pub const CHART_SIZE: (u32, u32) = (1280, 560);

/// The Markdown table (one row per retriever) under a heading naming the query set.
pub fn markdown(title: &str, rows: &[MetricsRow]) -> String {
    let mut out = format!("# {title}\n\n");
    if let Some(first) = rows.first() {
        out.push_str(&format!(
            "{} queries, document level (a query counts as answered when one of its relevant \
             pages is retrieved).\n\n",
            first.metrics.queries
        ));
    }
    out.push_str("| retriever | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in rows {
        let m = &r.metrics;
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.retriever, m.hit_at_1, m.hit_at_5, m.hit_at_10, m.mrr_at_10, m.ndcg_at_10
        ));
    }
    out
}

fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLOURS[i % COLOURS.len()]
}

/// Draws the chart into `path` (PNG).
pub fn chart(title: &str, rows: &[MetricsRow], path: &Path) -> Result<()> {
    let mut registered = Ok(());
    REGISTER.call_once(|| {
        registered = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled font does not load"));
    });
    registered?;
    let draw = |e| anyhow!("drawing {}: {e:?}", path.display());
    let root = BitMapBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(draw)?;
    let (left, right) = root.split_horizontally(CHART_SIZE.0 * 11 / 20);

    let mut curves = ChartBuilder::on(&left)
        .caption("hit@k", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1u32..10u32, 0f64..1f64)
        .map_err(draw)?;
    curves
        .configure_mesh()
        .x_desc("k (pages retrieved)")
        .y_desc("queries answered")
        .light_line_style(WHITE)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    for (i, row) in rows.iter().enumerate() {
        let c = colour(i);
        curves
            .draw_series(LineSeries::new(
                (1..=10u32).map(|k| (k, row.metrics.hit_at[k as usize - 1])),
                c.stroke_width(2),
            ))
            .map_err(draw)?
            .label(row.retriever.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    curves
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;

    // nDCG@10 as horizontal bars, best retriever on top, names written on the bars.
    let n = rows.len().max(1);
    let mut bars = ChartBuilder::on(&right)
        .caption("nDCG@10", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .build_cartesian_2d(0f64..1f64, 0f64..n as f64)
        .map_err(draw)?;
    bars.configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .light_line_style(WHITE)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    for (i, row) in rows.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let v = row.metrics.ndcg_at_10;
        bars.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.15), (v, y + 0.85)],
            colour(i).mix(0.35).filled(),
        )))
        .map_err(draw)?;
        bars.draw_series(std::iter::once(Text::new(
            format!("{}  {v:.3}", row.retriever),
            (0.01, y + 0.62),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))
        .map_err(draw)?;
    }
    root.present().map_err(draw)?;
    Ok(())
}

/// The showcase answer as Markdown: question, answer, and each citation with its page and
/// section when the document has them.
pub fn answer_markdown(a: &rag_core::pipeline::Answer) -> String {
    let mut out = format!(
        "\n## Answer\n\n**Q:** {}\n\n**A:** {}\n",
        a.question, a.text
    );
    if !a.citations.is_empty() {
        out.push_str("\nSources:\n\n");
        for c in &a.citations {
            let place = c.place();
            let place = if place.is_empty() {
                String::new()
            } else {
                format!(", {place}")
            };
            out.push_str(&format!(
                "- `[{}]` {}{place} (bytes {}..{})\n",
                c.chunk_id, c.source, c.start, c.end
            ));
        }
    }
    out
}

/// Writes `<stem>.md` (the table, the chart, and the answer when given) and `<stem>.png` into
/// `dir`; returns their paths.
pub fn write(
    dir: &Path,
    stem: &str,
    title: &str,
    rows: &[MetricsRow],
    answer: Option<&rag_core::pipeline::Answer>,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join(format!("{stem}.md"));
    let png = dir.join(format!("{stem}.png"));
    let mut text = markdown(title, rows);
    text.push_str(&format!(
        "\n![hit@k and nDCG@10]({})\n",
        png.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    if let Some(a) = answer {
        text.push_str(&answer_markdown(a));
    }
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    chart(title, rows, &png)?;
    Ok((md, png))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::eval::MetricsAccumulator;

    fn row(name: &str, ranks: &[Option<usize>]) -> MetricsRow {
        let mut acc = MetricsAccumulator::default();
        for r in ranks {
            let mut ranked: Vec<String> = (0..10).map(|i| format!("other{i}")).collect();
            if let Some(r) = r {
                ranked[*r] = "good".into();
            }
            acc.add(&ranked, &["good".to_string()]);
        }
        MetricsRow {
            retriever: name.into(),
            metrics: acc.finish(),
        }
    }

    #[test]
    fn writes_the_table_and_a_png_chart() {
        let rows = vec![
            row("BM25", &[Some(0), Some(3), None, Some(9)]),
            row("dense", &[Some(0), Some(0), Some(1), None]),
            row(
                "hybrid: BM25 + dense (RRF)",
                &[Some(0), Some(0), Some(0), Some(2)],
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (md, png) = write(
            dir.path(),
            "eval-report",
            "Retrieval on 4 queries",
            &rows,
            None,
        )
        .unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.contains("| BM25 | 0.250 | 0.500 | 0.750 |"), "{text}");
        assert!(
            text.contains("| hybrid: BM25 + dense (RRF) | 0.750 | 1.000 | 1.000 |"),
            "{text}"
        );
        assert!(text.contains("![hit@k and nDCG@10](eval-report.png)"));

        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), CHART_SIZE);
        // Something was drawn: a blank chart compresses to almost nothing.
        assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
    }
}
