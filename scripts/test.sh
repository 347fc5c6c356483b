#!/usr/bin/env bash
# The test command. The oss-client tests talk to a real S3-compatible server, moto (PyPI),
# which they start themselves; this installs a pinned moto into target/moto-venv (once) and
# puts it first on PATH. Pinned: moto 5.2 answers CompleteMultipartUpload with a root element
# the AWS SDK rejects. Set RAGLOOP_S3_ENDPOINT to test against another S3-compatible server.
# The embed-runtime tests run the real all-MiniLM-L6-v2, fetched by scripts/fetch-model.sh;
# the venv also has pyarrow, which a test uses to read the Parquet shards `ragloop embed` writes,
# and the official OpenAI Python client, which a test points at `ragloop serve`.
# doc-parsers' quality tests read the corpus scripts/doc-corpus.sh builds from Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

moto_version=5.1.22
venv=target/moto-venv
marker="$venv/moto-$moto_version-pyarrow-openai"
if [ ! -f "$marker" ]; then
    echo "installing moto[server]==$moto_version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" \
        "pyarrow==26.0.1" "openai==3.63.0"
    touch "$marker"
fi
export PATH="$PWD/$venv/bin:$PATH"
# The page `ragloop serve` bundles is tested in a real headless Chromium over WebDriver:
# Debian's chromium and chromium-driver (installed with apt-get when missing and running as root).
if ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver >/dev/null
    else
        echo "chromedriver not found: install chromium and chromium-driver (the page test needs them)" >&2
    fi
fi
scripts/fetch-model.sh
# The documents corpus (Debian manuals as HTML, PDF, Markdown, DOCX + reference texts) for
# doc-parsers' parse-quality tests; it needs apt and pandoc/poppler/qpdf. Off CI, a machine
# without them runs the rest and those tests say they were skipped.
if ! scripts/doc-corpus.sh; then
    if [ -n "${CI:-}" ]; then
        exit 1
    fi
    echo "documents corpus unavailable: doc-parsers' quality tests will be skipped" >&2
fi

exec cargo test --workspace --locked "$@"
