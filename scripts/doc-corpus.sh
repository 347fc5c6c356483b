#!/usr/bin/env bash
# Builds the documents test corpus: real manuals nobody here wrote, from Debian packages, in
# every format doc-parsers reads, each with a reference text from an independent extractor.
#
#   target/doc-corpus/<format>/<file>        the documents (html, pdf, markdown, docx)
#   target/doc-corpus/ref/<format>/<file>.txt what the reference extractor reads in them
#   target/doc-corpus/licenses/<package>     each package's copyright file
#
# Sources: bash-doc (the Bash manual as HTML and PDF), debian-reference-en (the Debian
# Reference as HTML chapters and one PDF), docker-doc (Docker's Markdown documentation).
# DOCX: no package ships Word files, so pandoc writes them from the HTML manuals (real
# headings, lists and tables in Word's paragraph styles). References: pdftotext (poppler)
# for PDF, pandoc's plain-text writer for HTML, DOCX and Markdown.
# bad/ holds broken and awkward files made from them (encrypted, truncated, empty, a DOCX
# named .pdf), each with the reason the loader must give.
# Needs apt (the packages are downloaded, not installed), pandoc, poppler-utils and qpdf (installed
# with apt-get when missing and running as root). Idempotent; pinned package versions are
# not needed: the tests compare our text with the reference made from the same file.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/doc-corpus
marker="$out/.complete-v2"
if [ -f "$marker" ]; then
    exit 0
fi

need=()
command -v pandoc >/dev/null || need+=(pandoc)
command -v pdftotext >/dev/null || need+=(poppler-utils)
command -v qpdf >/dev/null || need+=(qpdf)
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
mkdir -p "$out"/{html,pdf,markdown,docx,licenses,bad} "$out"/ref/{html,pdf,markdown,docx}

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

# DOCX written by pandoc from the HTML manuals.
for f in "$out"/html/*.html; do
    base=$(basename "$f" .html)
    pandoc --quiet -f html -t docx -o "$out/docx/$base.docx" "$f"
done

# References.
for f in "$out"/pdf/*.pdf; do
    pdftotext -enc UTF-8 "$f" "$out/ref/pdf/$(basename "$f").txt"
done
for fmt in html:html markdown:gfm docx:docx; do
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
: > "$out/bad/empty.html"
cp "$out/docx/bash.docx" "$out/bad/really-a-docx.pdf"

touch "$marker"
echo "doc-corpus: $(find "$out" -path "$out/ref" -prune -o -type f -newer "$out/licenses" -print | wc -l) files in $out" >&2
