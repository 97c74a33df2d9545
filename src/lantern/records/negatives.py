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
Sources draw one after another (`NegativeDraw` holds what they share): each returns its `Picks`, and the
caller adds them to the taken keys the next source sees, so no cell is picked twice for a latent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lantern.records.cells import Grid, rank_within, sorted_unique

NEGATIVE_SOURCES = ("neighbour-cooccurrence", "neighbour-decoder", "random", "similar")  # sorted


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


@dataclass(frozen=True)
class NegativeDraw:
    """What every negative source of one latent block shares, passed explicitly (no state in closures)."""

    latents: np.ndarray       # the block-local ids of the sampled latents, sorted
    first_latent: int         # global id of block-local latent 0
    n_local: int              # latents in the block
    n_splits: int             # scored splits, which share a source's negatives between them
    grid: Grid
    rng: np.random.Generator  # the block's generator: sources draw from it in a fixed order

    def wanted(self, count: int, split: str) -> int:
        """Negatives per latent: `count` for each scored split, or `count` for a forced split."""
        return count * (1 if split else self.n_splits)


@dataclass(frozen=True)
class Candidates:
    """Cells a source proposes, per latent; lower preference is better."""

    latent: np.ndarray
    cell: np.ndarray
    preference: np.ndarray
    neighbour: np.ndarray | None = None


@dataclass(frozen=True)
class Picks:
    """The negatives one source chose, ordered by (latent, preference)."""

    latent: np.ndarray
    cell: np.ndarray
    source: str
    split: str                # '' = shared between the scored splits; else the split they are forced into
    neighbour: np.ndarray     # the neighbour latent that fires there, -1 for other sources


def choose(draw: NegativeDraw, taken: np.ndarray, candidates: Candidates, count: int, source: str,
           split: str = "") -> Picks:
    """Each latent's most preferred candidates whose keys are not taken (blocked or picked before)."""
    c = candidates
    wanted = np.full(draw.n_local, draw.wanted(count, split))
    idx = first_per_latent(c.latent, c.cell, c.preference, wanted, draw.grid, taken)
    neighbour = c.neighbour[idx] if c.neighbour is not None else np.full(len(idx), -1, np.int64)
    return Picks(c.latent[idx], c.cell[idx], source, split, neighbour)


def with_picks(taken: np.ndarray, picks: Picks, grid: Grid) -> np.ndarray:
    """The taken keys and a source's picks: later sources must not pick the same cell again."""
    return sorted_unique(np.concatenate([taken, picks.latent * grid.n_cells + picks.cell]))


def random_negatives(draw: NegativeDraw, taken: np.ndarray, count: int, split: str = "") -> Picks:
    """Uniformly drawn cells, over-drawn fourfold so that blocked ones can be skipped."""
    latent, cell = random_cells(draw.latents, 4 * draw.wanted(count, split) + 8, draw.grid, draw.rng)
    return choose(draw, taken, Candidates(latent, cell, draw.rng.random(len(cell))), count, "random", split)


def similar_negatives(draw: NegativeDraw, taken: np.ndarray, query: np.ndarray, cell_embeddings: np.ndarray,
                      count: int, split: str = "") -> Picks:
    """The free full cells most similar to each latent's query vector (query: [n_local, dim] unit rows)."""
    latent, cell, sim = similar_cells(query[draw.latents], draw.latents, cell_embeddings, draw.grid.full_cells(),
                                      draw.wanted(count, split), taken, draw.grid)
    return choose(draw, taken, Candidates(latent, cell, -sim), count, "similar", split)


def neighbour_negatives(draw: NegativeDraw, taken: np.ndarray, source: str, neighbours: np.ndarray,
                        top_cells: np.ndarray, count: int) -> Picks:
    """Full cells among the neighbours' top cells, nearest neighbour and its strongest cells first.

    neighbours: [num_latents, k] global ids, -1 padded; top_cells: [num_latents, n] cells, -1 padded."""
    nb = neighbours[draw.latents + draw.first_latent]                # [s, k]
    cells = top_cells[np.maximum(nb, 0)]                             # [s, k, n]
    valid = (nb[:, :, None] >= 0) & (cells >= 0)
    latent = np.broadcast_to(draw.latents[:, None, None], cells.shape)[valid]
    neighbour = np.broadcast_to(nb[:, :, None], cells.shape)[valid]
    preference = np.broadcast_to(np.arange(cells[0].size).reshape(cells.shape[1:]), cells.shape)[valid]
    cell = cells[valid]
    full = draw.grid.is_full(cell)
    return choose(draw, taken, Candidates(latent[full], cell[full], preference[full], neighbour[full]), count, source)


@dataclass(frozen=True)
class Negatives:
    """Every negative of a block: the sources' picks as columns, in the order the sources drew."""

    latent: np.ndarray
    cell: np.ndarray
    source: np.ndarray     # object
    neighbour: np.ndarray
    forced: np.ndarray     # object: the split a pick is forced into, '' to share it between scored splits

    @classmethod
    def of(cls, picks: list[Picks]) -> "Negatives":
        return cls(_concat([p.latent for p in picks], np.int64), _concat([p.cell for p in picks], np.int64),
                   _concat([np.full(len(p.cell), p.source, object) for p in picks], object),
                   _concat([p.neighbour for p in picks], np.int64),
                   _concat([np.full(len(p.cell), p.split, object) for p in picks], object))

    def splits(self, scored_splits: list[str]) -> np.ndarray:
        """Each latent's negatives of one source alternate between the scored splits (unless forced)."""
        source_code = np.searchsorted(np.array(NEGATIVE_SOURCES), self.source.astype(str))
        order_in_source = rank_within(self.latent * len(NEGATIVE_SOURCES) + source_code, np.arange(len(self.latent)))
        splits = np.array(scored_splits, dtype=object)
        return np.where(self.forced != "", self.forced, splits[order_in_source % len(splits)])


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype) for p in parts]) if parts else np.zeros(0, dtype)
