"""Activating windows of many latents at once, vectorised over a CSR block (no Python loop per latent).

The positions after each sequence's BOS are cut into cells of `ctx_len` tokens (the last cell of a sequence
may be shorter). Each cell where a latent fires yields one candidate window: centred on the cell's strongest
token (`tokens_before` tokens before it) or, uncentred, the cell itself; both are clipped to stay inside the
sequence. A window spans at most its own cell and the two beside it, so two candidates can only overlap when
their cells are neighbours: of every overlapping pair of consecutive windows the weaker is dropped, repeated
until no two windows of a latent overlap. Every split drawn from what remains is token-disjoint by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """The cell grid of a token array [n_seq, seq_len] for windows of `ctx_len` tokens."""

    n_seq: int
    seq_len: int
    ctx_len: int

    @property
    def cells_per_seq(self) -> int:
        return -(-(self.seq_len - 1) // self.ctx_len)

    @property
    def n_cells(self) -> int:
        return self.n_seq * self.cells_per_seq

    @property
    def n_tokens(self) -> int:
        return self.n_seq * self.seq_len

    def cell_of(self, flat_tokens: np.ndarray) -> np.ndarray:
        seq, pos = np.divmod(flat_tokens.astype(np.int64), self.seq_len)
        return seq * self.cells_per_seq + (pos - 1) // self.ctx_len

    def cell_start(self, cells: np.ndarray) -> np.ndarray:
        """Flat start of the full-length window that a cell is (the last cell's is moved left to fit)."""
        seq, c = np.divmod(cells.astype(np.int64), self.cells_per_seq)
        return seq * self.seq_len + np.minimum(1 + c * self.ctx_len, self.seq_len - self.ctx_len)

    def is_full(self, cells: np.ndarray) -> np.ndarray:
        """Cells that are exactly a window (the shorter last cell is not: its window borrows tokens)."""
        return 1 + (cells % self.cells_per_seq + 1) * self.ctx_len <= self.seq_len

    def full_cells(self) -> np.ndarray:
        return np.flatnonzero(self.is_full(np.arange(self.n_cells)))


@dataclass
class WindowTable:
    """Disjoint activating windows of a block of latents, sorted by (latent, start)."""

    latent: np.ndarray  # index into the block (0..n_latents-1)
    start: np.ndarray   # flat start token
    cell: np.ndarray    # the cell the window was found in
    peak: np.ndarray    # flat token of the cell's strongest activation
    max: np.ndarray     # the window's maximum activation (= the peak's value)
    n_latents: int

    def counts(self) -> np.ndarray:
        return np.bincount(self.latent, minlength=self.n_latents)

    def take(self, mask: np.ndarray) -> "WindowTable":
        return WindowTable(self.latent[mask], self.start[mask], self.cell[mask], self.peak[mask], self.max[mask],
                           self.n_latents)


def sorted_unique(a: np.ndarray, presorted: bool = False) -> np.ndarray:
    """np.unique for integer keys by one sort (numpy 2's hash-based unique was the records' main cost)."""
    a = a if presorted else np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def active_cells(indptr: np.ndarray, tokens: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(latent, cell) of every cell where a latent of the block fires, sorted, unique."""
    latent = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    key = sorted_unique(latent * grid.n_cells + grid.cell_of(tokens), presorted=True)  # tokens ascend per latent
    return key // grid.n_cells, key % grid.n_cells


def find_windows(indptr: np.ndarray, tokens: np.ndarray, values: np.ndarray, grid: Grid, tokens_before: int,
                 centred: bool = True) -> WindowTable:
    n_latents = len(indptr) - 1
    if len(tokens) == 0:
        empty = np.zeros(0, np.int64)
        return WindowTable(empty, empty, empty, empty, np.zeros(0, np.float32), n_latents)
    latent = np.repeat(np.arange(n_latents), np.diff(indptr))
    key = latent * grid.n_cells + grid.cell_of(tokens)  # non-decreasing: tokens ascend within a latent
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lengths = np.diff(np.r_[starts, len(key)])
    cell_max = np.maximum.reduceat(values, starts)
    # the first entry of each (latent, cell) run that holds the run's maximum: no sort needed
    at_max = np.flatnonzero(values == np.repeat(cell_max, lengths))
    run_of = np.repeat(np.arange(len(starts)), lengths)[at_max]
    best = at_max[np.r_[True, run_of[1:] != run_of[:-1]]]
    cell = key[best] % grid.n_cells
    peak = tokens[best].astype(np.int64)
    seq, pos = np.divmod(peak, grid.seq_len)
    if centred:
        start_pos = pos - tokens_before
    else:
        start_pos = 1 + (cell % grid.cells_per_seq) * grid.ctx_len
    start = seq * grid.seq_len + np.clip(start_pos, 1, grid.seq_len - grid.ctx_len)
    table = WindowTable(latent[best], start, cell, peak, values[best].astype(np.float32), n_latents)
    return drop_overlaps(table, grid.ctx_len)


def drop_overlaps(table: WindowTable, ctx_len: int) -> WindowTable:
    """Drop the weaker window of every overlapping consecutive pair until none overlap."""
    while True:
        same = table.latent[1:] == table.latent[:-1]
        clash = same & (table.start[1:] - table.start[:-1] < ctx_len)
        if not clash.any():
            return table
        pairs = np.flatnonzero(clash)
        left_weaker = table.max[pairs] < table.max[pairs + 1]
        drop = np.zeros(len(table.start), bool)
        drop[pairs[left_weaker]] = True
        drop[pairs[~left_weaker] + 1] = True
        table = table.take(~drop)


def rank_within(group: np.ndarray, sort_key: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each element within its group, ordered by ascending `sort_key` (ties in any fixed
    order).

    One float64 sort of group * 2 + (sort_key scaled into [0, 1)) replaces a two-key lexsort: numpy's SIMD
    quicksort makes it about 10x faster, and the scaled key keeps groups apart for any group id below 2^50."""
    if len(group) == 0:
        return np.zeros(0, np.int64)
    key = np.asarray(sort_key, dtype=np.float64)
    low, span = key.min(), key.max() - key.min()
    unit = (key - low) / (span * (1 + 1e-9)) if span > 0 else np.zeros(len(key))
    order = np.argsort(np.asarray(group, dtype=np.float64) * 2.0 + unit)
    sorted_group = group[order]
    group_start = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    ranks_sorted = np.arange(len(order)) - np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    ranks = np.empty(len(order), np.int64)
    ranks[order] = ranks_sorted
    return ranks


def _ranges(indptr: np.ndarray, tokens: np.ndarray, latent: np.ndarray, start: np.ndarray, ctx_len: int,
            n_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each window, the range [lo, hi) of the block's sorted entries that fall inside it (two binary
    searches per window instead of one per token)."""
    keys = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)) * n_tokens + tokens.astype(np.int64)
    first = latent * n_tokens + start
    return np.searchsorted(keys, first), np.searchsorted(keys, first + ctx_len), keys


def window_values(indptr: np.ndarray, tokens: np.ndarray, values: np.ndarray, latent: np.ndarray,
                  start: np.ndarray, ctx_len: int, n_tokens: int) -> np.ndarray:
    """[n_windows, ctx_len] activations of each window's latent (block-local ids), in O(windows + their
    non-zeros)."""
    out = np.zeros((len(start), ctx_len), np.float32)
    if len(tokens) == 0 or len(start) == 0:
        return out
    lo, hi, keys = _ranges(indptr, tokens, latent, start, ctx_len, n_tokens)
    counts = hi - lo
    rows = np.repeat(np.arange(len(start)), counts)
    entries = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    out[rows, keys[entries] - (latent[rows] * n_tokens + start[rows])] = values[entries]
    return out


def window_max(indptr: np.ndarray, tokens: np.ndarray, values: np.ndarray, table: WindowTable, ctx_len: int,
               n_tokens: int) -> np.ndarray:
    """Maximum activation inside each window of a table of non-overlapping windows sorted by (latent, start)
    (every window holds at least its own peak)."""
    if len(table.start) == 0:
        return table.max
    lo, hi, _ = _ranges(indptr, tokens, table.latent, table.start, ctx_len, n_tokens)
    bounds = np.empty(2 * len(lo), np.int64)
    bounds[0::2], bounds[1::2] = lo, hi  # disjoint sorted ranges: reduce over [lo_i, hi_i) at the even slots
    padded = np.append(values.astype(np.float32), np.float32(0))
    return np.maximum.reduceat(padded, bounds)[0::2]
