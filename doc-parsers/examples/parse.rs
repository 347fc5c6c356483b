//! Prints what the parsers read in files: format, title, sections, pages, then the text.
//!
//! `cargo run -p doc-parsers --example parse -- guide.pdf notes.md`

fn main() {
    let parsers = doc_parsers::all();
    for path in std::env::args().skip(1) {
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let name = std::path::Path::new(&path)
            .file_name()
            .map_or(path.clone(), |n| n.to_string_lossy().into_owned());
        let report = parsers.parse(&name, &path, &data);
        for (format, count) in &report.formats {
            println!("== {path}: {format}, {} documents", count.documents);
        }
        for s in &report.skipped {
            println!("skipped {}: {}", s.source, s.reason);
        }
        for doc in &report.documents {
            println!("title: {}", doc.title);
            println!("pages: {}", doc.pages.len());
            for s in &doc.sections {
                println!("section @{}: {}", s.start, s.path.join(" > "));
            }
            println!("{}", doc.text);
        }
    }
}
