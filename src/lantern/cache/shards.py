"""Shards: the finished cache, one latent range per folder, stored by latent and memory-mapped.

Per shard, for latents [lo, hi):
  indptr.npy        int64  [hi - lo + 1]  where each latent's entries start
  first_token.npy   uint32 [hi - lo]      flat token index (seq * seq_len + pos) of each latent's first entry
  token_delta.npy   uint16 [nnz]          gap to the previous entry of the same latent (0 for the first);
                                          ESCAPE marks a gap too large for 16 bits, stored in escape_*.npy
  escape_pos.npy    int64, escape_delta.npy int64: the rare large gaps
  values.npy        float16, or uint16 holding bfloat16 bits
  shard.json        latent range, nnz and every file's size and sha256
Gaps instead of absolute token indices halve the index (2 bytes/entry instead of 4); a latent's tokens
come back with one cumulative sum over its own slice, so reading stays O(its non-zeros).
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lantern.cache import layout
from lantern.cache.runs import Run
from lantern.errors import LanternError
from lantern.io import read_json, save_npy, write_json

ESCAPE = np.iinfo(np.uint16).max
INDPTR, FIRST, DELTA, ESC_POS, ESC_DELTA, VALUES = (
    "indptr.npy", "first_token.npy", "token_delta.npy", "escape_pos.npy", "escape_delta.npy", "values.npy")
SHARD_FILES = (INDPTR, FIRST, DELTA, ESC_POS, ESC_DELTA, VALUES)
VALUE_DTYPES = {"float16": np.float16, "bfloat16": np.uint16}


class CorruptCacheError(LanternError):
    """A shard file is missing, truncated or does not match its checksum."""


_REPAIR = "recompute the damaged shards with `lantern cache --repair --run-dir {run_dir}`"


def to_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 activations → the stored 16-bit representation (bfloat16 rounds to nearest even)."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):  # overflow becomes inf, which the writer reports
            return values.astype(np.float16)
    if dtype == "bfloat16":
        bits = values.view(np.uint32)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        return (rounded >> 16).astype(np.uint16)
    raise LanternError(f"unknown value dtype {dtype!r}: use one of {sorted(VALUE_DTYPES)}")


def from_stored(stored: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (np.asarray(stored).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(stored, dtype=np.float32)


def plan_shards(counts: np.ndarray, max_nnz: int, max_latents: int) -> list[tuple[int, int]]:
    """Latent ranges whose non-zeros fit `max_nnz` (a latent denser than that gets a range of its own), at most
    `max_latents` long. One binary search per range, not a Python step per latent."""
    cumulative = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    ranges, lo, n = [], 0, len(counts)
    while lo < n:
        fits = int(np.searchsorted(cumulative, cumulative[lo] + max_nnz, side="right")) - 1
        hi = min(max(fits, lo + 1), lo + max_latents, n)
        ranges.append((lo, hi))
        lo = hi
    return ranges or [(0, 0)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def encode_tokens(indptr: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Absolute ascending tokens per latent → (first_token, uint16 gaps, escape positions, escape gaps)."""
    tokens = tokens.astype(np.int64)
    starts, nonempty = indptr[:-1], np.diff(indptr) > 0
    first = np.zeros(len(indptr) - 1, dtype=np.uint32)
    first[nonempty] = tokens[starts[nonempty]]
    gaps = np.diff(tokens, prepend=0)
    gaps[starts[nonempty]] = 0
    escaped = np.flatnonzero(gaps >= ESCAPE)
    delta = gaps.astype(np.uint16)
    delta[escaped] = ESCAPE
    return first, delta, escaped.astype(np.int64), gaps[escaped].astype(np.int64)


def decode_tokens(first: np.ndarray, indptr: np.ndarray, delta: np.ndarray, esc_pos: np.ndarray,
                  esc_delta: np.ndarray, offset: int = 0) -> np.ndarray:
    """Inverse of `encode_tokens` for a contiguous slice of latents whose entries start at `offset`
    within the shard (`indptr` local to the slice, starting at 0)."""
    gaps = np.asarray(delta, dtype=np.int64)
    if len(esc_pos):
        lo, hi = np.searchsorted(esc_pos, [offset, offset + len(gaps)])
        gaps[esc_pos[lo:hi] - offset] = esc_delta[lo:hi]
    counts = np.diff(indptr)
    nonempty = counts > 0
    running = np.cumsum(gaps)
    # gaps are 0 at each latent's first entry, so entry i = first + running[i] - running[start of its latent]
    base = first.astype(np.int64)[nonempty] - running[indptr[:-1][nonempty]]
    return running + np.repeat(base, counts[nonempty])


def merge_shard(folder: Path, runs: list[Run], lo: int, hi: int, value_dtype: str) -> dict:
    """Gather latents [lo, hi) from every run into one shard folder (renamed into place when complete)."""
    pieces = []
    for run in runs:
        latent_ptr, tokens, values = run.arrays()
        a, b = int(latent_ptr[lo]), int(latent_ptr[hi])
        pieces.append((np.diff(latent_ptr[lo:hi + 1]), np.asarray(tokens[a:b]), np.asarray(values[a:b])))
    counts = sum((p[0] for p in pieces), np.zeros(hi - lo, dtype=np.int64))
    indptr = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    tokens = np.empty(nnz, dtype=np.uint32)
    values = np.empty(nnz, dtype=VALUE_DTYPES[value_dtype])
    cursor = indptr[:-1].copy()
    for piece_counts, piece_tokens, piece_values in pieces:
        piece_starts = np.concatenate([[0], np.cumsum(piece_counts)[:-1]])
        dest = np.repeat(cursor - piece_starts, piece_counts) + np.arange(len(piece_tokens))
        tokens[dest] = piece_tokens
        values[dest] = piece_values
        cursor += piece_counts
    first, delta, esc_pos, esc_delta = encode_tokens(indptr, tokens)
    final = folder
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, array in ((INDPTR, indptr), (FIRST, first), (DELTA, delta), (ESC_POS, esc_pos),
                            (ESC_DELTA, esc_delta), (VALUES, values)):
            save_npy(staging / name, array)
        meta = {"latents": [lo, hi], "nnz": nnz,
                "files": {name: {"bytes": (staging / name).stat().st_size, "sha256": _sha256(staging / name)}
                          for name in SHARD_FILES}}
        write_json(staging / layout.SHARD_META, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # e.g. a full disk: leave no half-written shard behind
        raise
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return meta


def finished_shard(folder: Path, lo: int, hi: int) -> dict | None:
    """The meta of a shard already merged for exactly this latent range (resume), else None."""
    meta_path = folder / layout.SHARD_META
    if meta_path.exists():
        meta = read_json(meta_path)
        if meta["latents"] == [lo, hi]:
            return meta
    return None


def check_files(folder: Path, meta: dict, verify: bool) -> None:
    """Every file present with the size the manifest recorded; with `verify`, also its sha256."""
    for name, info in meta["files"].items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size != info["bytes"]:
            raise CorruptCacheError(
                f"cache shard file {path} is {'missing' if size is None else f'{size} bytes'}, the manifest says "
                f"{info['bytes']} bytes (truncated?); {_REPAIR.format(run_dir=folder.parents[2])}")
        if verify and _sha256(path) != info["sha256"]:
            raise CorruptCacheError(f"cache shard file {path} does not match its sha256 checksum (corrupted); "
                                    f"{_REPAIR.format(run_dir=folder.parents[2])}")


@dataclass
class ShardView:
    """One verified, memory-mapped shard."""

    lo: int
    hi: int
    indptr: np.ndarray
    first: np.ndarray
    delta: np.ndarray
    esc_pos: np.ndarray
    esc_delta: np.ndarray
    values: np.ndarray

    @classmethod
    def open(cls, folder: Path, meta: dict, verify: bool) -> "ShardView":
        check_files(folder, meta, verify)
        lo, hi = meta["latents"]
        load = lambda name: np.load(folder / name, mmap_mode="r")  # noqa: E731
        return cls(lo, hi, np.load(folder / INDPTR), np.load(folder / FIRST), load(DELTA), np.load(folder / ESC_POS),
                   np.load(folder / ESC_DELTA), load(VALUES))

    def latent_slice(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr local to [a, b), absolute int64 tokens, stored values) of global latents a..b-1."""
        la, lb = a - self.lo, b - self.lo
        start, stop = int(self.indptr[la]), int(self.indptr[lb])
        local_ptr = self.indptr[la:lb + 1] - start
        tokens = decode_tokens(self.first[la:lb], local_ptr, self.delta[start:stop], self.esc_pos, self.esc_delta,
                               offset=start)
        return local_ptr, tokens, np.asarray(self.values[start:stop])
