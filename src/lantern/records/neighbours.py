"""Neighbour latents, computed sparsely (never a dense n_latents² matrix).

- co-occurrence: Jaccard similarity of the sets of tokens where two latents fire (on a sample of tokens), from
  a sparse product of the latent × token incidence matrix, one block of rows at a time;
- decoder: cosine similarity of decoder directions, one block of rows at a time against all.
Both return the top `k` neighbours of each latent ([n_latents, k], -1 where fewer exist) and the similarities.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lantern.records.cells import rank_within


def _top_k_rows(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, n_rows: int, k: int,
                row_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    neighbours = np.full((n_rows, k), -1, np.int64)
    similarity = np.zeros((n_rows, k), np.float32)
    rank = rank_within(rows, -sims)
    keep = rank < k
    neighbours[rows[keep] - row_offset, rank[keep]] = cols[keep]
    similarity[rows[keep] - row_offset, rank[keep]] = sims[keep]
    return neighbours, similarity


def cooccurrence_neighbours(latent: np.ndarray, unit: np.ndarray, n_latents: int, n_units: int, k: int,
                            block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k latents by Jaccard overlap of the units (tokens or cells) where they fire; pairs must be unique."""
    incidence = sp.csr_matrix((np.ones(len(latent), np.float32), (latent, unit)), shape=(n_latents, n_units))
    degree = np.asarray(incidence.sum(axis=1)).ravel()
    transposed = incidence.T.tocsc()
    parts = []
    for lo in range(0, n_latents, block):
        product = (incidence[lo:lo + block] @ transposed).tocoo()
        rows, cols, shared = product.row + lo, product.col, product.data
        other = rows != cols
        rows, cols, shared = rows[other], cols[other], shared[other]
        jaccard = shared / (degree[rows] + degree[cols] - shared)
        parts.append(_top_k_rows(rows, cols, jaccard.astype(np.float32), min(block, n_latents - lo), k, lo))
    if not parts:
        return np.full((0, k), -1, np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def decoder_neighbours(directions: torch.Tensor, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Top-k latents by cosine similarity of decoder directions ([n_latents, d])."""
    unit = torch.nn.functional.normalize(directions.float(), dim=1)
    n = unit.shape[0]
    k = min(k, max(n - 1, 0))
    neighbours = np.full((n, k), -1, np.int64)
    similarity = np.zeros((n, k), np.float32)
    for lo in range(0, n, block):
        sims = unit[lo:lo + block] @ unit.T
        sims[torch.arange(sims.shape[0]), torch.arange(lo, lo + sims.shape[0])] = -torch.inf
        top = sims.topk(k, dim=1)
        neighbours[lo:lo + block] = top.indices.numpy()
        similarity[lo:lo + block] = top.values.numpy()
    return neighbours, similarity
