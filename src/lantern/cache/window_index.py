"""One shared embedding index over every window of the corpus, for hard negatives.

While caching, the residual stream at the shallowest coder layer is already computed; each token's vector
is scaled to unit norm (the BOS and a few outlier dimensions would otherwise dominate), averaged over blocks
of BLOCK tokens and projected to DIM dimensions with a fixed random Gaussian matrix (Johnson-Lindenstrauss:
cosine similarities survive). A window's embedding is the mean of the blocks it covers. The index is
n_tokens / BLOCK * DIM * 2 bytes (40 MB for 10 M tokens) and serves every latent of every coder, where
delphi builds a FAISS index per latent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lantern.cache import layout
from lantern.io import read_json, write_json, write_npy

BLOCK = 16
DIM = 64
SEED = 1234
EMBEDDINGS, META, PARTS = "embeddings.npy", "meta.json", "parts"


def n_blocks(seq_len: int) -> int:
    """Blocks cover positions 1..seq_len-1 (the BOS is never in a window); the last may be shorter."""
    return -(-(seq_len - 1) // BLOCK)


def projection(d_model: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randn(d_model, DIM, generator=generator) / DIM ** 0.5


def block_embeddings(hidden: torch.Tensor, proj: torch.Tensor) -> np.ndarray:
    """[batch, seq_len, d] hidden states → [batch, n_blocks, DIM] float16 block embeddings."""
    x = hidden[:, 1:].float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    batch, length, d = x.shape
    blocks = n_blocks(length + 1)
    padded = torch.zeros(batch, blocks * BLOCK, d)
    padded[:, :length] = x
    weights = torch.zeros(blocks * BLOCK)
    weights[:length] = 1
    sums = padded.reshape(batch, blocks, BLOCK, d).sum(2)
    means = sums / weights.reshape(blocks, BLOCK).sum(1)[None, :, None]
    return (means @ proj).numpy().astype(np.float16)


def part_path(cache_dir: Path, batch: int) -> Path:
    return Path(cache_dir) / layout.WINDOWS / PARTS / f"batch-{batch:07d}.npy"


def is_finished(cache_dir: Path) -> bool:
    return (Path(cache_dir) / layout.WINDOWS / META).exists()


def merge(cache_dir: Path, n_batches: int, hookpoint: str) -> None:
    folder = Path(cache_dir) / layout.WINDOWS
    parts = [np.load(part_path(cache_dir, b)) for b in range(n_batches)]
    write_npy(folder / EMBEDDINGS, np.concatenate(parts))
    write_json(folder / META, {"hookpoint": hookpoint, "block": BLOCK, "dim": DIM, "seed": SEED,
                               "normalisation": "unit-norm tokens, block mean, gaussian projection"})
    for b in range(n_batches):
        part_path(cache_dir, b).unlink()


class WindowIndex:
    """Reads the block embeddings and embeds arbitrary windows."""

    def __init__(self, cache_dir: Path):
        folder = Path(cache_dir) / layout.WINDOWS
        if not (folder / META).exists():
            raise FileNotFoundError(f"{folder} has no window index (cache built without one)")
        self.meta = read_json(folder / META)
        self.blocks = np.load(folder / EMBEDDINGS, mmap_mode="r")  # [n_seq, n_blocks, DIM]

    def embed(self, flat_starts: np.ndarray, seq_len: int, ctx_len: int) -> np.ndarray:
        """[n, DIM] float32 unit vectors: the mean of the blocks whose first token lies in each window."""
        seqs, pos = np.divmod(np.asarray(flat_starts, dtype=np.int64), seq_len)
        first = (pos - 1 + BLOCK - 1) // BLOCK
        last = np.maximum(first, (pos - 1 + ctx_len - 1) // BLOCK)
        n_b = self.blocks.shape[1]
        span = int((last - first).max()) + 1 if len(first) else 1
        idx = np.minimum(first[:, None] + np.arange(span)[None, :], n_b - 1)
        valid = (first[:, None] + np.arange(span)[None, :]) <= last[:, None]
        vecs = np.asarray(self.blocks[seqs[:, None], idx], dtype=np.float32) * valid[..., None]
        emb = vecs.sum(1)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-6)
