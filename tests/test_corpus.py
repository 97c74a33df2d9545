"""Corpus reading and tokenization, with real files and the real Gemma 3 tokenizer."""

from __future__ import annotations

import gzip
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lantern.data.corpus import (
    EMBEDDED_CORPUS,
    CorpusError,
    EmptyCorpusError,
    TokenizedCorpus,
    iter_documents,
    tokenize_corpus,
)

# Distinct, fairly long documents, so sequences from different documents are told apart.
DOCS = [
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. " * 12,
    "Quantum chromodynamics describes the strong interaction between quarks and gluons. " * 9,
    "Short note.",  # shorter than any sequence: only dropped tokens
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # <bos> in text is just text\n" * 10,
    "Rivers carve canyons slowly; sediment settles in deltas where the current weakens. " * 11,
]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text, "id": i}) + "\n")
            if i == 0:
                f.write("\n")  # blank lines are skipped
    return path


# --- reading documents ---------------------------------------------------------------


def test_txt_whole_file_is_one_document(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First paragraph.\n\nSecond paragraph.\n", encoding="utf-8")
    assert list(iter_documents(str(path))) == ["First paragraph.\n\nSecond paragraph.\n"]


@pytest.mark.parametrize("separator", ["\f", "\n<|endoftext|>\n"])
def test_txt_separators_split_documents(tmp_path, separator):
    path = tmp_path / "many.txt"
    path.write_text(separator.join(["alpha one", "beta two", "  ", "gamma <|endoftext|> three"]),
                    encoding="utf-8")
    # The blank part is skipped; "<|endoftext|>" inside a line is not a separator.
    assert list(iter_documents(str(path))) == ["alpha one", "beta two", "gamma <|endoftext|> three"]


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_jsonl(tmp_path, name):
    path = write_jsonl(tmp_path / name, DOCS)
    assert list(iter_documents(str(path))) == DOCS


def test_jsonl_without_text_field_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: no \"text\" field"):
        list(iter_documents(str(path)))


def test_parquet_read_in_batches(tmp_path):
    texts = [f"document number {i} about topic {i % 7}" for i in range(2500)]  # > one 1024-row batch
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(2500)), "text": texts}), path, row_group_size=700)
    assert list(iter_documents(str(path))) == texts


def test_directory_reads_supported_files_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("from b/2.txt", encoding="utf-8")
    (tmp_path / "a.txt").write_text("from a.txt", encoding="utf-8")
    write_jsonl(tmp_path / "c.jsonl.gz", ["from c 1", "from c 2"])
    pq.write_table(pa.table({"text": ["from b.parquet"]}), tmp_path / "b.parquet")
    (tmp_path / "notes.md").write_text("ignored: not a corpus file type", encoding="utf-8")
    assert list(iter_documents(str(tmp_path))) == [
        "from a.txt", "from b.parquet", "from b/2.txt", "from c 1", "from c 2"]


def test_missing_file_is_a_clear_error_at_call_time(tmp_path):
    path = tmp_path / "nowhere" / "corpus.jsonl"
    with pytest.raises(CorpusError, match="not found") as info:
        iter_documents(str(path))  # no next(): the error must not wait for iteration
    assert str(path) in str(info.value)
    with pytest.raises(CorpusError, match="not found: missing-corpus.txt"):
        iter_documents("missing-corpus.txt")


def test_empty_spec_is_an_error_not_the_current_directory():
    with pytest.raises(CorpusError, match="empty corpus spec"):
        iter_documents("")


def test_dataset_name_without_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(CorpusError, match="pip install datasets"):
        iter_documents("someone/some-dataset:en")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        iter_documents(str(path))


# --- tokenizing -----------------------------------------------------------------------


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", DOCS)


def test_sequences_start_with_one_bos_and_stay_inside_one_document(tokenizer, bos, corpus_file):
    seq_len = 24
    corpus = tokenize_corpus(str(corpus_file), tokenizer, seq_len=seq_len, max_tokens=None, bos_id=bos)
    assert isinstance(corpus, TokenizedCorpus)
    assert corpus.tokens.dtype == np.int32 and corpus.doc_ids.dtype == np.int32
    assert corpus.tokens.shape[1] == seq_len and corpus.doc_ids.shape == (corpus.tokens.shape[0],)
    assert (corpus.tokens[:, 0] == bos).all()
    assert ((corpus.tokens == bos).sum(axis=1) == 1).all()
    assert corpus.n_documents == len(DOCS) and corpus.spec == str(corpus_file)

    # Each document's sequences are exactly its own tokens, cut in order: nothing crosses a boundary.
    dropped = 0
    for doc_id, text in enumerate(DOCS):
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        n_full = len(ids) // (seq_len - 1)
        rows = corpus.tokens[corpus.doc_ids == doc_id, 1:]
        assert rows.shape[0] == n_full
        assert rows.reshape(-1).tolist() == ids[: n_full * (seq_len - 1)]
        dropped += len(ids) - n_full * (seq_len - 1)
    assert corpus.n_dropped_tokens == dropped > 0
    assert (np.diff(corpus.doc_ids) >= 0).all()


def test_max_tokens_is_respected_and_filled(tokenizer, bos, corpus_file):
    seq_len = 16
    full = tokenize_corpus(str(corpus_file), tokenizer, seq_len=seq_len, max_tokens=None, bos_id=bos)
    max_tokens = 10 * seq_len + 7  # not a multiple of seq_len
    assert full.n_tokens > max_tokens
    capped = tokenize_corpus(str(corpus_file), tokenizer, seq_len=seq_len, max_tokens=max_tokens, bos_id=bos)
    assert capped.tokens.shape == (10, seq_len)
    assert capped.n_tokens <= max_tokens
    np.testing.assert_array_equal(capped.tokens, full.tokens[:10])  # a prefix of the unbounded result
    np.testing.assert_array_equal(capped.doc_ids, full.doc_ids[:10])

    # Stop inside the second document: only the first document's tail counts as dropped.
    first = tokenizer(DOCS[0], add_special_tokens=False)["input_ids"]
    n_first = len(first) // (seq_len - 1)
    assert (full.doc_ids == 1).sum() > 2
    capped = tokenize_corpus(str(corpus_file), tokenizer, seq_len=seq_len,
                             max_tokens=(n_first + 2) * seq_len, bos_id=bos)
    assert capped.doc_ids.tolist() == [0] * n_first + [1, 1]
    assert capped.n_documents == 2
    assert capped.n_dropped_tokens == len(first) - n_first * (seq_len - 1)


def test_max_tokens_below_seq_len_is_an_error(tokenizer, bos, corpus_file):
    with pytest.raises(CorpusError, match="max_tokens=10 is smaller than seq_len=16"):
        tokenize_corpus(str(corpus_file), tokenizer, seq_len=16, max_tokens=10, bos_id=bos)


def test_empty_directory_is_an_empty_corpus(tokenizer, bos, tmp_path):
    with pytest.raises(EmptyCorpusError, match=r"no full sequence of seq_len=32 tokens \(read 0 documents"):
        tokenize_corpus(str(tmp_path), tokenizer, seq_len=32, max_tokens=None, bos_id=bos)


def test_documents_all_too_short_is_an_empty_corpus(tokenizer, bos, tmp_path):
    path = write_jsonl(tmp_path / "tiny.jsonl", ["one two", "three", "   "])
    with pytest.raises(EmptyCorpusError) as info:
        tokenize_corpus(str(path), tokenizer, seq_len=64, max_tokens=1000, bos_id=bos)
    message = str(info.value)
    assert "\n" not in message
    assert "seq_len=64" in message and "read 2 documents" in message and str(path) in message
    assert isinstance(info.value, ValueError)


# --- the embedded corpus --------------------------------------------------------------


def embedded_sources() -> dict[str, str]:
    """text -> source, read straight from the shipped files."""
    folder = resources.files("lantern") / "assets" / "corpus"
    sources = {}
    for name in ("kjv.jsonl.gz", "python-docs.jsonl.gz"):
        with (folder / name).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                sources[row["text"]] = row["source"]
    return sources


def test_embedded_corpus_mixes_both_sources_from_the_start():
    sources = embedded_sources()
    assert set(sources.values()) == {"kjv", "python-docs"}
    for seed in range(10):
        docs = list(iter_documents(EMBEDDED_CORPUS, seed=seed))
        assert sorted(docs) == sorted(sources)  # every document exactly once
        # Prefixes of ~75k and ~250k tokens already hold both sources in fair shares
        # (a plain shuffle fails this: some seeds start with a long run of one source).
        for prefix_chars in (300_000, 1_000_000):
            chars = {"kjv": 0, "python-docs": 0}
            for doc in docs:
                if sum(chars.values()) >= prefix_chars:
                    break
                chars[sources[doc]] += len(doc)
            share = chars["kjv"] / sum(chars.values())
            assert 0.35 < share < 0.7, (seed, prefix_chars, chars)
    assert list(iter_documents(EMBEDDED_CORPUS, seed=1)) != list(iter_documents(EMBEDDED_CORPUS, seed=0))
    assert list(iter_documents(EMBEDDED_CORPUS)) == list(iter_documents(EMBEDDED_CORPUS, seed=0))


def test_embedded_corpus_has_a_million_tokens(tokenizer, bos):
    corpus = tokenize_corpus(EMBEDDED_CORPUS, tokenizer, seq_len=128, max_tokens=None, bos_id=bos)
    assert corpus.n_tokens >= 1_000_000
    assert corpus.n_documents == len(embedded_sources())
    assert ((corpus.tokens == bos).sum(axis=1) == 1).all()
    assert len(np.unique(corpus.doc_ids)) > 200
