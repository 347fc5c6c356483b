#!/usr/bin/env python3
"""Builds the Chinese retrieval set data/manpages-zh from Debian's manpages-zh package.

corpus.jsonl.gz   {"id": "ls.1", "title": "ls", "text": <rendered page without its NAME section>}
queries.jsonl.gz  {"id": "q-ls.1", "text": "列出目录内容", "relevant": ["ls.1"], "split": "train"|"test"}

The same recipe as the English man pages (data/manpages/README.md): each simplified-Chinese page
(zh_CN) is rendered with `man -l` at 100 columns and `col -bx`; its first section (名称, NAME,
...: whatever the translator called it) is the NAME line `names - description`; the description
is the query, the page is its answer, and the NAME section is removed from the text. Pages
whose description has no Chinese character, alias pages (`.so`) and pages under 200 characters
are dropped (as are the few pages groff does not finish). About 20% of the queries (a stable hash of the page id) form the test split.

Nothing is downloaded but the package itself (`apt-get download`, no root needed).
Usage: scripts/build-manpages-zh.py [OUT_DIR]   (default data/manpages-zh)
"""
import glob, gzip, io, hashlib, json, os, re, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor

PACKAGE = "manpages-zh"
HAN = re.compile(r"[\u3400-\u9fff]")
HEADING = re.compile(r"^\S.*$")


def render(path):
    src = gzip.open(path, "rt", errors="replace").read()
    if src.lstrip().startswith(".so ") or (".SH" not in src and ".Sh" not in src):
        return None  # alias page
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8")
    try:  # groff loops on a few pages (df.1): those are dropped
        txt = subprocess.run(["man", "-l", "-E", "UTF-8", path], capture_output=True,
                             stdin=subprocess.DEVNULL, text=True, env=env, errors="replace",
                             timeout=20).stdout
    except subprocess.TimeoutExpired:
        print(f"skipped {os.path.basename(path)}: groff did not finish in 20 s", file=sys.stderr)
        return None
    txt = subprocess.run(["col", "-bx"], input=txt, capture_output=True, text=True).stdout
    lines = txt.splitlines()
    if lines and re.match(r"^\S+\(\d\w*\)\s", lines[0]):
        lines = lines[1:]  # the running header
    if lines and re.search(r"\S+\(\d\w*\)$", lines[-1].strip()):
        lines = lines[:-1]  # and footer
    # The first section: a heading at column 0, then its indented body up to the next heading.
    first = next((i for i, l in enumerate(lines) if HEADING.match(l)), None)
    if first is None:
        return None
    end = next((i for i in range(first + 1, len(lines)) if HEADING.match(lines[i])), len(lines))
    name_line = " ".join(" ".join(lines[first + 1:end]).split())
    m = re.match(r"^(.*?)\s+[-—－]+\s+(.*)$", name_line)
    if not m or not HAN.search(m.group(2)):
        return None
    names, desc = m.group(1).strip(), m.group(2).strip()
    body = "\n".join(lines[:first] + lines[end:]).strip()
    base = os.path.basename(path)[:-3]
    return {"id": base, "title": names, "text": body}, desc


def gz(path):
    """A text file gzipped without a timestamp, so a rebuild gives the same bytes."""
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        version = os.path.basename(deb).split("_")[1]
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "root")], check=True)
        paths = sorted(p for p in glob.glob(os.path.join(tmp, "root/usr/share/man/zh_CN/man*/*.gz"))
                       if not os.path.islink(p))
        with ThreadPoolExecutor(8) as ex:
            results = [r for r in ex.map(render, paths) if r]
    seen = set()
    n = {"train": 0, "test": 0}
    with gz(os.path.join(out_dir, "corpus.jsonl.gz")) as c, \
            gz(os.path.join(out_dir, "queries.jsonl.gz")) as q:
        for doc, desc in results:
            if doc["id"] in seen or len(doc["text"]) < 200:
                continue
            seen.add(doc["id"])
            c.write(json.dumps(doc, ensure_ascii=False) + "\n")
            split = "test" if int(hashlib.sha256(doc["id"].encode()).hexdigest(), 16) % 5 == 0 else "train"
            n[split] += 1
            q.write(json.dumps({"id": "q-" + doc["id"], "text": desc, "relevant": [doc["id"]],
                                "split": split}, ensure_ascii=False) + "\n")
    print(f"{PACKAGE} {version}: {len(seen)} documents, {n['train']} train and {n['test']} test "
          f"queries written to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/manpages-zh")
