"""Write a coder's activations over a token array to a CSR-by-latent cache, resumably.

Each batch becomes one small part file (written atomically, sorted by latent), so a killed run resumes at
the first missing batch. Merging scatters every part into pre-sized memory-mapped arrays, one part at a
time: memory stays bounded by one part plus the per-latent offsets, never the whole cache.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lantern.cache import layout
from lantern.coders.base import SparseActs
from lantern.errors import LanternError
from lantern.io import atomic_path, write_json, write_npy


def sparse_to_triplets(acts: SparseActs, token_offset: int, keep: np.ndarray | None = None):
    """Flatten [n, k] sparse codes to (latent, token, value) triplets of strictly positive activations."""
    # Filtered at the stored precision: a tiny value that rounds to 0 in float16 is no activation.
    values = acts.values.float().numpy().astype(np.float16)
    if np.isinf(values).any():
        raise LanternError(f"activations above {np.finfo(np.float16).max:.0f} do not fit the float16 cache "
                           f"(largest: {float(acts.values.max()):.3g}); rescale the coder's encoder")
    indices = acts.indices.numpy()
    n, k = values.shape
    tokens = np.broadcast_to(np.arange(token_offset, token_offset + n, dtype=np.uint32)[:, None], (n, k))
    mask = values > 0
    if keep is not None:
        mask &= keep[:, None]
    return indices[mask].astype(np.int32), tokens[mask], values[mask]


def write_part(path: Path, latents: np.ndarray, tokens: np.ndarray, values: np.ndarray, num_latents: int) -> None:
    """Store one batch sorted by (latent, token) with its per-latent counts."""
    order = np.lexsort((tokens, latents))
    counts = np.bincount(latents, minlength=num_latents).astype(np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, tokens=tokens[order], values=values[order], counts=counts)


def merge_parts(coder_dir: Path, n_batches: int, num_latents: int) -> dict:
    """Merge the batch parts into CSR arrays; returns per-latent stats. Parts are merged in batch order,
    so each latent's token indices come out ascending."""
    parts = [coder_dir / layout.PARTS / f"batch-{b:07d}.npz" for b in range(n_batches)]
    counts = np.zeros(num_latents, dtype=np.int64)
    for part in parts:
        with np.load(part) as data:
            counts += data["counts"]
    indptr = np.zeros(num_latents + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    staging = coder_dir / "merge.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    token_index = np.lib.format.open_memmap(staging / layout.TOKEN_INDEX, mode="w+", dtype=np.uint32, shape=(nnz,))
    values = np.lib.format.open_memmap(staging / layout.VALUES, mode="w+", dtype=np.float16, shape=(nnz,))
    cursor = indptr[:-1].copy()
    for part in parts:
        with np.load(part) as data:
            part_counts = data["counts"]
            part_tokens, part_values = data["tokens"], data["values"]
        part_starts = np.concatenate([[0], np.cumsum(part_counts)[:-1]])
        dest = np.repeat(cursor - part_starts, part_counts) + np.arange(len(part_tokens))
        token_index[dest] = part_tokens
        values[dest] = part_values
        cursor += part_counts
    token_index.flush()
    values.flush()
    del token_index, values
    maxima = np.zeros(num_latents, dtype=np.float32)
    vals = np.load(staging / layout.VALUES, mmap_mode="r")
    nonempty = counts > 0
    if nnz:
        maxima[nonempty] = np.maximum.reduceat(vals.astype(np.float32), indptr[:-1][nonempty])
    for name in (layout.TOKEN_INDEX, layout.VALUES):
        (staging / name).replace(coder_dir / name)
    write_npy(coder_dir / layout.INDPTR, indptr)
    with atomic_path(coder_dir / layout.STATS) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, count=counts, max=maxima)
    shutil.rmtree(staging)
    return {"nnz": nnz, "alive_latents": int(nonempty.sum())}


def save_tokens(cache_dir: Path, tokens: np.ndarray, doc_ids: np.ndarray) -> None:
    write_npy(Path(cache_dir) / layout.TOKENS, tokens.astype(np.int32))
    write_npy(Path(cache_dir) / layout.DOC_IDS, doc_ids.astype(np.int32))


def finish(coder_dir: Path, manifest: dict) -> None:
    """The manifest is written last: its presence means the cache is complete."""
    write_json(coder_dir / layout.MANIFEST, manifest)
    shutil.rmtree(coder_dir / layout.PARTS, ignore_errors=True)


def cacheable_positions(n: int, seq_len: int, token_offset: int) -> np.ndarray:
    """Mask of positions to cache: every position but the BOS at the start of each sequence, whose huge
    residual norm would otherwise dominate the top activations of many latents."""
    positions = (np.arange(token_offset, token_offset + n) % seq_len)
    return positions != 0

