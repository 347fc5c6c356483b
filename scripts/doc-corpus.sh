#!/usr/bin/env bash
# Builds the documents test corpus: real manuals nobody here wrote, from Debian packages, in
# every format doc-parsers reads, each with a reference text from an independent extractor.
#
#   target/doc-corpus/<format>/<file>        the documents (html, pdf, markdown, docx, epub,
#                                            pptx, spreadsheet)
#   target/doc-corpus/ref/<format>/<file>.txt what the reference extractor reads in them
#   target/doc-corpus/licenses/<package>     each package's copyright file
#
# Sources: bash-doc (the Bash manual as HTML and PDF), debian-reference-en (the Debian
# Reference as HTML chapters and one PDF), docker-doc (Docker's Markdown documentation).
# No package ships Office files or EPUBs, so they are written from those manuals by the tools
# users make them with: DOCX by pandoc and by LibreOffice Writer (headless; real headings,
# lists and tables in Word's paragraph styles, each tool its own XML), EPUB by pandoc from the
# HTML chapters, PPTX by pandoc from the Markdown pages (a slide per heading), XLSX by
# LibreOffice Calc from the HTML chapters (their text and tables in cells). References:
# pdftotext (poppler) for PDF; pandoc's plain-text writer for HTML, DOCX, EPUB and Markdown
# (for PPTX, of the Markdown it was written from); LibreOffice's CSV export for XLSX.
# bad/ holds broken and awkward files made from them (encrypted, truncated, empty, a DOCX
# named .pdf), each with the reason the loader must give.
# Needs apt (the packages are downloaded, not installed), pandoc, poppler-utils, qpdf and
# LibreOffice Writer + Calc (installed with apt-get when missing and running as root). Idempotent; pinned package versions are
# not needed: the tests compare our text with the reference made from the same file.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/doc-corpus
marker="$out/.complete-v3"
if [ -f "$marker" ]; then
    exit 0
fi

need=()
command -v pandoc >/dev/null || need+=(pandoc)
command -v pdftotext >/dev/null || need+=(poppler-utils)
command -v qpdf >/dev/null || need+=(qpdf)
command -v soffice >/dev/null || need+=(libreoffice-writer-nogui libreoffice-calc-nogui)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "doc-corpus: install ${need[*]} (apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "doc-corpus: installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

rm -rf "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
formats=(html pdf markdown docx epub pptx spreadsheet)
for f in "${formats[@]}"; do mkdir -p "$out/$f" "$out/ref/$f"; done
mkdir -p "$out"/{licenses,bad}

packages=(bash-doc debian-reference-en docker-doc)
(cd "$tmp" && apt-get download -qq "${packages[@]}" 2>/dev/null)
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
done
for p in "${packages[@]}"; do
    cp "$tmp/root/usr/share/doc/$p/copyright" "$out/licenses/$p"
done

# HTML and PDF: the Bash manual and the Debian Reference.
cp "$tmp"/root/usr/share/doc/bash/{bash,bashref}.html "$out/html/"
cp "$tmp"/root/usr/share/doc/bash/{bash,bashref}.pdf "$out/pdf/"
cp "$tmp"/root/usr/share/debian-reference/ch*.en.html "$out/html/"
cp "$tmp"/root/usr/share/debian-reference/debian-reference.en.pdf "$out/pdf/"

# Markdown: Docker's documentation (one file per page, in folders).
(cd "$tmp/root/usr/share/doc/docker-doc" && find . -name '*.md' -size +1k | sort) |
    while read -r f; do
        name=$(echo "${f#./}" | tr '/' '_')
        cp "$tmp/root/usr/share/doc/docker-doc/$f" "$out/markdown/$name"
    done

# DOCX written by pandoc from the HTML manuals, and by LibreOffice from the Debian Reference's
# first chapters; EPUB by pandoc from those chapters; XLSX by LibreOffice Calc from them.
for f in "$out"/html/*.html; do
    base=$(basename "$f" .html)
    pandoc --quiet -f html -t docx -o "$out/docx/$base.docx" "$f"
done
lo() { # soffice in a profile of its own (no clash with a user's running LibreOffice)
    soffice -env:UserInstallation="file://$tmp/lo-profile" --headless "$@" >/dev/null 2>&1
}
chapters=("$out"/html/ch0[1-4].en.html)
lo --convert-to 'docx:MS Word 2007 XML' --outdir "$tmp/lo-docx" "${chapters[@]}"
for f in "$tmp"/lo-docx/*.docx; do
    mv "$f" "$out/docx/$(basename "$f" .docx).lo.docx"
done
for f in "${chapters[@]}"; do
    pandoc --quiet -f html -t epub -o "$out/epub/$(basename "$f" .html).epub" "$f"
done
lo --infilter=calc_HTML_WebQuery --convert-to xlsx --outdir "$out/spreadsheet" "${chapters[@]}"

# PPTX written by pandoc from the longest Markdown pages (a slide per heading).
ls -S "$out"/markdown/*.md | head -n 8 | while read -r f; do
    pandoc --quiet -f gfm -t pptx -o "$out/pptx/$(basename "$f" .md).pptx" "$f"
    pandoc --quiet -f gfm -t plain --wrap=none -o "$out/ref/pptx/$(basename "$f" .md).pptx.txt" "$f"
done

# References.
for f in "$out"/pdf/*.pdf; do
    pdftotext -enc UTF-8 "$f" "$out/ref/pdf/$(basename "$f").txt"
done
for f in "$out"/spreadsheet/*.xlsx; do
    lo --convert-to 'csv:Text - txt - csv (StarCalc):44,34,76,1' --outdir "$tmp/csv" "$f"
    cp "$tmp/csv/$(basename "$f" .xlsx).csv" "$out/ref/spreadsheet/$(basename "$f").txt"
done
for fmt in html:html markdown:gfm docx:docx epub:epub; do
    dir=${fmt%%:*}
    reader=${fmt##*:}
    for f in "$out/$dir"/*; do
        pandoc --quiet -f "$reader" -t plain --wrap=none -o "$out/ref/$dir/$(basename "$f").txt" "$f"
    done
done

# Broken and awkward files.
qpdf --encrypt secret secret 256 -- "$out/pdf/bash.pdf" "$out/bad/encrypted.pdf"
qpdf --encrypt "" owner-only 256 -- "$out/pdf/bash.pdf" "$out/bad/owner-password-only.pdf"
head -c 100000 "$out/pdf/bashref.pdf" > "$out/bad/truncated.pdf"
head -c 5000 "$out/docx/bashref.docx" > "$out/bad/truncated.docx"
head -c 20000 "$out/epub/ch01.en.epub" > "$out/bad/truncated.epub"
head -c 3000 "$(ls "$out"/pptx/*.pptx | head -n 1)" > "$out/bad/truncated.pptx"
: > "$out/bad/empty.html"
cp "$out/docx/bash.docx" "$out/bad/really-a-docx.pdf"

touch "$marker"
echo "doc-corpus: $(find "$out" -path "$out/ref" -prune -o -type f -newer "$out/licenses" -print | wc -l) files in $out" >&2
