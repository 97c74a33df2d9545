"""Corpora: documents in, fixed-length token sequences out.

A corpus spec is one of:
  * ``"embedded"``: the English corpus shipped with lantern (works offline);
  * a local file: ``.txt`` (one document, or several separated by form feeds or
    lines of exactly ``<|endoftext|>``), ``.jsonl`` / ``.jsonl.gz`` (a "text"
    field per line) or ``.parquet`` (a "text" column);
  * a local directory: every such file inside it, in sorted path order;
  * otherwise a Hugging Face dataset, ``name`` or ``name:config`` (split
    "train", streamed; needs the optional ``datasets`` package).

Every sequence is one BOS followed by seq_len-1 tokens of a single document, so
no context ever leaks across documents and every position has the same prefix
structure the model saw in training.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lantern.errors import LanternError

EMBEDDED_CORPUS = "embedded"
EMBEDDED_FILES = ("kjv.jsonl.gz", "python-docs.jsonl.gz")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
# Suffixes that mark a spec as a file path rather than a dataset name.
_FILE_LIKE_SUFFIXES = {".txt", ".text", ".jsonl", ".json", ".gz", ".parquet", ".csv", ".tsv",
                       ".arrow", ".zst", ".bz2", ".xz", ".md"}
_TXT_SEPARATOR = re.compile(r"\f|^<\|endoftext\|>\r?$", re.MULTILINE)
_TOKENIZE_BATCH_DOCS = 64
_TOKENIZE_BATCH_CHARS = 1_000_000


class CorpusError(LanternError, ValueError):
    """A corpus spec that cannot be read (missing file, unsupported format, missing package)."""


class EmptyCorpusError(CorpusError):
    """The corpus yielded no full token sequence."""


@dataclass
class TokenizedCorpus:
    """Token sequences ready for the model, with the document each one came from."""

    tokens: np.ndarray
    """int32 [n_seq, seq_len]: BOS, then seq_len-1 tokens of one document."""
    doc_ids: np.ndarray
    """int32 [n_seq]: index, in reading order, of the document each sequence came from."""
    seq_len: int
    """Tokens per sequence, BOS included."""
    n_documents: int
    """Documents read and tokenized, including those too short for a full sequence."""
    n_dropped_tokens: int
    """Tokens in document tails shorter than seq_len-1, which were left out."""
    spec: str
    """The corpus spec it was read from."""

    @property
    def n_tokens(self) -> int:
        """Tokens kept, BOS included."""
        return int(self.tokens.size)


def iter_documents(spec: str, seed: int = 0) -> Iterator[str]:
    """Yield the non-blank documents of a corpus spec (see the module docstring).

    Errors about the spec itself (missing file, unsupported type, no ``datasets``)
    are raised here, at call time, not at the first ``next()``. ``seed`` only
    orders the embedded corpus; files and datasets are read in their own order.
    """
    if not spec.strip():
        raise CorpusError(f"empty corpus spec; use {EMBEDDED_CORPUS!r}, a file, a directory or a dataset name")
    if spec == EMBEDDED_CORPUS:
        docs: Iterable[str] = _embedded_documents(seed)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            docs = _directory_documents(path)
        elif path.is_file():
            docs = _file_documents(path)
        elif _looks_like_path(spec):
            raise CorpusError(f"corpus file or directory not found: {path}")
        else:
            docs = _hf_documents(spec)
    return (doc for doc in docs if doc is not None and doc.strip())


def tokenize_corpus(spec: str, tokenizer: Any, seq_len: int, max_tokens: int | None, bos_id: int,
                    seed: int = 0) -> TokenizedCorpus:
    """Tokenize a corpus into BOS-prefixed sequences of seq_len tokens that never cross documents.

    Each document is tokenized without special tokens (and with special-token
    strings such as "<bos>" in the text read as plain text, so each sequence
    holds exactly one BOS), cut into chunks of seq_len-1 tokens, and each chunk
    gets a BOS in front. A document's last partial chunk is dropped. Reading
    stops once another sequence would exceed max_tokens (n_seq * seq_len).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (BOS plus one token), got {seq_len}")
    if max_tokens is not None and max_tokens < seq_len:
        raise CorpusError(f"max_tokens={max_tokens} is smaller than seq_len={seq_len}: no sequence fits")
    chunk = seq_len - 1
    max_seqs = None if max_tokens is None else max_tokens // seq_len
    blocks: list[np.ndarray] = []
    block_docs: list[np.ndarray] = []
    n_seq = n_docs = n_read = n_dropped = 0

    for batch in _batched(iter_documents(spec, seed)):
        encoded = tokenizer(batch, add_special_tokens=False, split_special_tokens=True,
                            return_attention_mask=False, verbose=False)["input_ids"]
        for ids in encoded:
            doc_id, n_docs = n_docs, n_docs + 1
            n_read += len(ids)
            n_full = len(ids) // chunk
            take = n_full if max_seqs is None else min(n_full, max_seqs - n_seq)
            if take == n_full:
                n_dropped += len(ids) - n_full * chunk
            if take:
                blocks.append(np.asarray(ids[: take * chunk], dtype=np.int32).reshape(take, chunk))
                block_docs.append(np.full(take, doc_id, dtype=np.int32))
                n_seq += take
            if max_seqs is not None and n_seq >= max_seqs:
                break
        else:
            continue
        break

    if n_seq == 0:
        raise EmptyCorpusError(f"corpus {spec!r} gave no full sequence of seq_len={seq_len} tokens "
                               f"(read {n_docs} documents, {n_read} tokens)")
    body = np.concatenate(blocks)
    tokens = np.empty((n_seq, seq_len), dtype=np.int32)
    tokens[:, 0] = bos_id
    tokens[:, 1:] = body
    return TokenizedCorpus(tokens=tokens, doc_ids=np.concatenate(block_docs), seq_len=seq_len,
                           n_documents=n_docs, n_dropped_tokens=n_dropped, spec=spec)


def _batched(docs: Iterable[str]) -> Iterator[list[str]]:
    """Group documents so the tokenizer's (parallel) batch call does the work, without huge batches."""
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= _TOKENIZE_BATCH_DOCS or chars >= _TOKENIZE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _embedded_documents(seed: int) -> list[str]:
    """The shipped documents, interleaved so that any prefix holds both sources in proportion.

    Each source is shuffled, laid out along [0, 1] by its characters, and the
    sources are merged by each document's midpoint on that line: a plain
    shuffle could start with many documents of one source.
    """
    rng = random.Random(seed)
    folder = resources.files("lantern") / "assets" / "corpus"
    keyed: list[tuple[float, str]] = []
    for name in EMBEDDED_FILES:
        with (folder / name).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        rng.shuffle(texts)
        total = sum(map(len, texts))
        done = 0
        for text in texts:
            keyed.append(((done + len(text) / 2) / total, text))
            done += len(text)
    keyed.sort(key=lambda pair: pair[0])
    return [text for _, text in keyed]


def _looks_like_path(spec: str) -> bool:
    """True for specs that cannot be a Hub name ("org/name" or "name", optionally ":config")."""
    return (spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1
            or (os.sep != "/" and os.sep in spec)
            or Path(spec).suffix.lower() in _FILE_LIKE_SUFFIXES)


def _suffix(path: Path) -> str | None:
    """The supported suffix of a corpus file, or None."""
    name = path.name.lower()
    return next((s for s in sorted(LOCAL_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def _directory_documents(folder: Path) -> Iterator[str]:
    files = sorted((p for p in folder.rglob("*") if p.is_file() and _suffix(p)),
                   key=lambda p: p.relative_to(folder).as_posix())
    for path in files:
        yield from _file_documents(path)


def _file_documents(path: Path) -> Iterator[str]:
    suffix = _suffix(path)
    if suffix is None:
        raise CorpusError(f"{path}: unsupported corpus file type (use {', '.join(LOCAL_SUFFIXES)})")
    if suffix == ".txt":
        return _txt_documents(path)
    if suffix == ".parquet":
        return _parquet_documents(path)
    return _jsonl_documents(path)


def _txt_documents(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if _TXT_SEPARATOR.search(text):
        yield from (part.strip() for part in _TXT_SEPARATOR.split(text))
    else:
        yield text


def _jsonl_documents(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict) or "text" not in row:
                raise CorpusError(f'{path}:{lineno}: no "text" field')
            yield row["text"]


def _parquet_documents(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if "text" not in parquet.schema_arrow.names:
        raise CorpusError(f'{path}: no "text" column (columns: {", ".join(parquet.schema_arrow.names)})')
    for batch in parquet.iter_batches(batch_size=1024, columns=["text"]):
        yield from batch.column(0).to_pylist()


def _hf_documents(spec: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise CorpusError(f"{spec!r} is not a local file or directory, so it was taken as a Hugging Face "
                          "dataset name; reading datasets needs the `datasets` package: pip install datasets"
                          ) from None
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as err:  # the hub raises many types; one clear line is what the user needs
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorpusError(f"cannot load Hugging Face dataset {spec!r}: {first}") from err
    return _hf_rows(spec, dataset)


def _hf_rows(spec: str, dataset: Iterable[dict]) -> Iterator[str]:
    for row in dataset:
        if "text" not in row:
            raise CorpusError(f'Hugging Face dataset {spec!r} has no "text" column (columns: {", ".join(row)})')
        yield row["text"]
