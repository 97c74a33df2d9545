"""Non-activating windows of many latents at once, each with its source.

Every negative is a full cell (see cells.py) on which the latent is zero, and none of its neighbour cells
holds an activation either: an activating window spans at most its cell and the two beside it, so negatives
never share a token with this latent's activating windows. The caller re-checks every negative against the
cache. Sources:
- `random`: uniformly drawn cells;
- `similar`: the cells whose embedding (shared window index) is closest to the mean of the latent's explain
  windows: text that looks like what the latent fires on, yet it does not (hard negatives);
- `neighbour`: cells where a neighbour latent (co-occurring or decoder-similar) fires strongly but this one
  does not.
"""
from __future__ import annotations

import numpy as np

from lantern.records.cells import Grid, rank_within, sorted_unique


def blocked_keys(latent: np.ndarray, cell: np.ndarray, grid: Grid) -> np.ndarray:
    """Sorted keys latent * n_cells + cell of active cells and the cells beside them in the same sequence."""
    keys = [latent * grid.n_cells + cell]
    within = cell % grid.cells_per_seq
    for step, ok in ((-1, within > 0), (1, within < grid.cells_per_seq - 1)):
        keys.append(latent[ok] * grid.n_cells + cell[ok] + step)
    return sorted_unique(np.concatenate(keys))


def is_member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(query.shape, bool)
    found = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return sorted_keys[found] == query


def first_per_latent(latent: np.ndarray, cell: np.ndarray, preference: np.ndarray, counts: np.ndarray,
                     grid: Grid, excluded: np.ndarray) -> np.ndarray:
    """Indices of the candidates kept: per latent, its `counts[latent]` most preferred distinct cells whose
    key is not excluded, ordered by (latent, preference)."""
    key = latent * grid.n_cells + cell
    candidates = np.flatnonzero(~is_member(excluded, key))
    # among duplicates of a key keep the most preferred
    order = candidates[np.lexsort((preference[candidates], key[candidates]))]
    ordered_keys = key[order]
    candidates = order[np.r_[True, ordered_keys[1:] != ordered_keys[:-1]]] if len(order) else order
    keep = candidates[rank_within(latent[candidates], preference[candidates]) < counts[latent[candidates]]]
    return keep[np.lexsort((preference[keep], latent[keep]))]


def random_cells(latents: np.ndarray, n: int, grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` random full cells per latent (candidates; the caller filters blocked ones)."""
    full = grid.full_cells()
    latent = np.repeat(latents, n)
    return latent, full[rng.integers(0, len(full), size=len(latent))]


def similar_cells(query: np.ndarray, latents: np.ndarray, cell_embeddings: np.ndarray, cells: np.ndarray, n: int,
                  excluded: np.ndarray, grid: Grid, batch: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per latent, the `n` candidate cells most similar to its query vector, skipping excluded keys.

    query: [n_latents, dim] unit vectors; cell_embeddings: [n_cells_candidates, dim] unit vectors of `cells`.
    Returns (latent, cell, similarity)."""
    out_latent, out_cell, out_sim = [], [], []
    for lo in range(0, len(latents), batch):
        rows = latents[lo:lo + batch]
        sims = query[lo:lo + batch] @ cell_embeddings.T  # [b, n_candidates]
        take = min(n, sims.shape[1])
        # Look up exclusions only among the most similar few first; rows left short fall back to all cells.
        shortlist = min(sims.shape[1], 4 * n + 16)
        if take == 0:
            best = np.zeros((len(rows), 0), int)
        else:
            near = np.argpartition(-sims, shortlist - 1, axis=1)[:, :shortlist]
            near_sims = np.take_along_axis(sims, near, axis=1)
            near_sims[is_member(excluded, rows[:, None] * grid.n_cells + cells[near])] = -np.inf
            short = np.isfinite(near_sims).sum(axis=1) < take
            if short.any():
                keys = rows[short, None] * grid.n_cells + cells[None, :]
                full = sims[short]
                full[is_member(excluded, keys)] = -np.inf
                sims[short] = full
            sims_masked = np.full_like(sims, -np.inf)
            np.put_along_axis(sims_masked, near, near_sims, axis=1)
            sims_masked[short] = sims[short]
            sims = sims_masked
            best = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        best_sims = np.take_along_axis(sims, best, axis=1)
        finite = np.isfinite(best_sims)
        out_latent.append(np.repeat(rows, take)[finite.reshape(-1)])
        out_cell.append(cells[best][finite])
        out_sim.append(best_sims[finite])
    if not out_latent:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_latent), np.concatenate(out_cell), np.concatenate(out_sim)
