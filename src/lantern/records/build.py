"""Latent records for many latents at once: explain / test / validation windows and typed negatives.

Two vectorised passes over the cache (numpy on CSR blocks, no Python loop per latent):
1. survey every latent: its disjoint activating windows (cells.py), its strongest cells, and which latents
   co-occur with it; the latents with enough windows are eligible, and a seeded random sample is drawn;
2. for the sampled latents: deciles, the explain sample (top / quantiles / random), test and validation
   windows per decile from the rest, then negatives of each source for each scored split.
Splits are disjoint by construction (each window goes to one split; windows never overlap); every negative
is re-checked against the cache and the build fails loudly if one is not all zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from lantern.cache.reader import LatentCache
from lantern.cache.shards import plan_shards
from lantern.errors import LanternError
from lantern.records.cells import (Grid, WindowTable, active_cells, find_windows, rank_within, sorted_unique,
                                   window_max, window_values)
from lantern.records.negatives import blocked_keys, first_per_latent, random_cells, similar_cells
from lantern.records.neighbours import cooccurrence_neighbours

N_DECILES = 10
KEEP_WINDOWS = 20_000_000
"""Windows the survey keeps in memory for pass 2 (~40 bytes each) instead of finding them again."""
NEGATIVE_SOURCES = ("neighbour-cooccurrence", "neighbour-decoder", "random", "similar")  # sorted
TOP_CELLS = 16
"""Cells kept per latent in the survey, its strongest and as many at random: where its neighbours look for
neighbour negatives (a co-occurring neighbour's strongest cells are often this latent's too)."""


@dataclass(frozen=True)
class RecordConfig:
    """How examples are drawn for each latent."""

    ctx_len: int = 32
    """Tokens per window."""
    tokens_before: int = 16
    """Tokens shown before the activating token of a centred window (16 of 32 centres it)."""
    centred: bool = True
    """Centre windows on their strongest token; False: windows are fixed cells of the sequence."""
    n_explain: int = 20
    """Activating windows shown to the explainer."""
    explain_sampling: str = "top"
    """`top` (strongest windows), `quantiles` (equal numbers per decile) or `random`."""
    n_test_per_decile: int = 1
    """Activating test windows drawn from each activation decile (before the explain windows are chosen)."""
    n_validation_per_decile: int = 0
    """Activating validation windows per decile (for choosing among explanations), disjoint from test."""
    n_negatives: int = 6
    """Random windows, verified all zero, per scored split."""
    n_similar_negatives: int = 4
    """Hard negatives per scored split: zero windows most similar to the explain windows (window index)."""
    n_neighbour_negatives: int = 4
    """Zero windows where a co-occurring or decoder-similar neighbour latent fires, per scored split."""
    n_explain_negatives: int = 0
    """Zero windows shown to a contrastive explainer beside the activating ones (similar ones where the window
    index exists, else random); disjoint from every scored negative."""
    n_neighbours: int = 8
    """Neighbours kept per latent."""
    cooccurrence_tokens: int = 8192
    """Tokens (whole sequences spread over the corpus) on which co-occurrence is counted: the cost grows with
    tokens x (active latents per token)^2, so it is sampled; neighbour ranks need only the strong overlaps."""
    min_windows: int = 30
    """Latents with fewer disjoint activating windows are not explained."""
    seed: int = 0

    @property
    def windows_needed(self) -> int:
        return max(self.min_windows,
                   self.n_explain + (self.n_test_per_decile + self.n_validation_per_decile) * N_DECILES)

    @property
    def scored_splits(self) -> list[str]:
        return ["test"] + (["validation"] if self.n_validation_per_decile else [])


def check_window_fits(cfg: RecordConfig, seq_len: int) -> None:
    """A window must hold its centre and fit in a sequence after the BOS (which is never shown)."""
    if not 0 <= cfg.tokens_before < cfg.ctx_len < seq_len:
        raise LanternError(
            f"windows of ctx_len={cfg.ctx_len} with tokens_before={cfg.tokens_before} do not fit sequences of "
            f"seq_len={seq_len}: need 0 <= tokens_before < ctx_len < seq_len (position 0 is the BOS)")
    if cfg.explain_sampling not in ("top", "quantiles", "random"):
        raise LanternError(f"unknown explain_sampling {cfg.explain_sampling!r}: use top, quantiles or random")


def latent_blocks(cache: LatentCache, max_latents: int = 4096, max_nnz: int = 4 << 20):
    """Contiguous latent ranges inside one shard, bounded in latents and non-zeros (bounded memory)."""
    for meta in cache.shard_meta:
        lo, hi = meta["latents"]
        for a, b in plan_shards(cache.counts[lo:hi], max_nnz, max_latents):
            if b > a:
                yield lo + a, lo + b


@dataclass
class Survey:
    """Pass 1 over every latent of a coder."""

    n_windows: np.ndarray      # [num_latents] disjoint activating windows
    top_cells: np.ndarray      # [num_latents, 2 * TOP_CELLS] strongest then random cells, -1 padded
    neighbours: np.ndarray     # [num_latents, n_neighbours] by co-occurrence on the same tokens, -1 padded
    neighbour_similarity: np.ndarray
    tables: dict[int, WindowTable]
    """Window tables by first latent of their block, kept for pass 2 while they fit KEEP_WINDOWS."""


def survey(cache: LatentCache, cfg: RecordConfig, grid: Grid) -> Survey:
    n = cache.num_latents
    n_windows = np.zeros(n, np.int64)
    top_cells = np.full((n, 2 * TOP_CELLS), -1, np.int32)
    rng = np.random.default_rng([cfg.seed, 7])
    # co-occurrence on the tokens of every `stride`-th sequence (about cfg.cooccurrence_tokens of them)
    stride = max(1, grid.n_seq * grid.seq_len // max(cfg.cooccurrence_tokens, 1))
    pair_latent, pair_token = [], []
    tables: dict[int, WindowTable] = {}
    kept = 0
    for lo, hi in latent_blocks(cache):
        indptr, tokens, values = cache.latent_block(lo, hi)
        table = find_windows(indptr, tokens, values, grid, cfg.tokens_before, cfg.centred)
        n_windows[lo:hi] = table.counts()
        kept += len(table.start)
        if kept <= KEEP_WINDOWS:
            tables[lo] = table
        rank = rank_within(table.latent, -table.max)
        top = rank < TOP_CELLS
        top_cells[lo + table.latent[top], rank[top]] = table.cell[top]
        rest = np.flatnonzero(~top)
        rank = rank_within(table.latent[rest], rng.random(len(rest)))
        pick = rest[rank < TOP_CELLS]
        top_cells[lo + table.latent[pick], TOP_CELLS + rank[rank < TOP_CELLS]] = table.cell[pick]
        latent = np.repeat(np.arange(hi - lo), np.diff(indptr))
        seq, pos = np.divmod(tokens, grid.seq_len)
        sampled = seq % stride == 0
        pair_latent.append(latent[sampled] + lo)
        pair_token.append((seq[sampled] // stride) * grid.seq_len + pos[sampled])
    n_sampled = -(-grid.n_seq // stride) * grid.seq_len
    neighbours, similarity = cooccurrence_neighbours(
        np.concatenate(pair_latent) if pair_latent else np.zeros(0, np.int64),
        np.concatenate(pair_token) if pair_token else np.zeros(0, np.int64), n, n_sampled, cfg.n_neighbours)
    return Survey(n_windows, top_cells, neighbours, similarity, tables)


def sample_latents(survey_: Survey, cfg: RecordConfig, n_latents: int | None) -> np.ndarray:
    """A seeded random sample of the eligible latents (taking the first ids would bias the sample)."""
    eligible = np.flatnonzero(survey_.n_windows >= cfg.windows_needed)
    order = np.random.default_rng(cfg.seed).permutation(eligible)
    return order if n_latents is None else order[:n_latents]


@dataclass
class Extras:
    """Optional evidence for negatives: the shared window index and decoder neighbours."""

    cell_embeddings: np.ndarray | None = None  # [n_full_cells, dim] unit vectors of grid.full_cells()
    window_index: object | None = None         # lantern.cache.window_index.WindowIndex
    decoder_neighbours: np.ndarray | None = None  # [num_latents, k]


def _split_activating(table: WindowTable, cfg: RecordConfig, rng: np.random.Generator):
    """(split name per window or '', decile per window).

    Test and validation windows are drawn first, `n_test_per_decile` (then `n_validation_per_decile`) at random
    from each activation decile of each latent, and the explain windows from what is left: drawing the explain
    windows first took the strongest ones under `top` sampling, so a latent with fewer than ~220 windows was
    tested only on its weaker deciles. A decile with too few windows gives what it has (`deciles_tested` in the
    latent summary says how many deciles were tested)."""
    counts = table.counts()
    rank_up = rank_within(table.latent, table.max)
    decile = 1 + rank_up * N_DECILES // np.maximum(counts[table.latent], 1)
    rank = rank_within(table.latent * (N_DECILES + 1) + decile, rng.random(len(table.latent)))
    n_test, n_scored = cfg.n_test_per_decile, cfg.n_test_per_decile + cfg.n_validation_per_decile
    split = np.full(len(table.latent), "", dtype=object)
    split[rank < n_test] = "test"
    split[(rank >= n_test) & (rank < n_scored)] = "validation"
    free = np.flatnonzero(rank >= n_scored)
    latent = table.latent[free]
    noise = rng.random(len(free))
    if cfg.explain_sampling == "top":
        explain = rank_within(latent, -table.max[free]) < cfg.n_explain  # the strongest windows left
    elif cfg.explain_sampling == "random":
        explain = rank_within(latent, noise) < cfg.n_explain
    else:
        per = max(1, cfg.n_explain // N_DECILES)
        explain = rank_within(latent * (N_DECILES + 1) + decile[free], noise) < per
    split[free[explain]] = "explain"
    return split, decile


def _negatives(selected_local: np.ndarray, global_ids: np.ndarray, table: WindowTable, blocked: np.ndarray,
               survey_: Survey, extras: Extras, cfg: RecordConfig, grid: Grid, rng: np.random.Generator):
    """(local latent, cell, source, neighbour) of every negative, in order of preference within a source."""
    n_splits = len(cfg.scored_splits)
    out = []
    excluded = blocked
    n_local = table.n_latents

    def keep(latent, cell, preference, count, source, neighbour, split=""):
        nonlocal excluded
        per_latent = count * (n_splits if not split else 1)
        idx = first_per_latent(latent, cell, preference, np.full(n_local, per_latent), grid, excluded)
        out.append((latent[idx], cell[idx], np.full(len(idx), source, dtype=object),
                    neighbour[idx] if neighbour is not None else np.full(len(idx), -1, np.int64),
                    np.full(len(idx), split, dtype=object)))
        excluded = sorted_unique(np.concatenate([excluded, latent[idx] * grid.n_cells + cell[idx]]))

    if cfg.n_negatives:
        latent, cell = random_cells(selected_local, 4 * cfg.n_negatives * n_splits + 8, grid, rng)
        keep(latent, cell, rng.random(len(cell)), cfg.n_negatives, "random", None)
    query = None
    if extras.cell_embeddings is not None and (cfg.n_similar_negatives or cfg.n_explain_negatives):
        explain = table.take(np.isin(table.latent, selected_local))
        emb = extras.window_index.embed(explain.start, grid.seq_len, grid.ctx_len)
        query = np.zeros((n_local, emb.shape[1]), np.float32)
        np.add.at(query, explain.latent, emb)
        query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-6)

    def similar(count, split=""):
        wanted = count * (n_splits if not split else 1)
        latent, cell, sim = similar_cells(query[selected_local], selected_local, extras.cell_embeddings,
                                          grid.full_cells(), wanted, excluded, grid)
        keep(latent, cell, -sim, count, "similar", None, split)

    if cfg.n_similar_negatives and query is not None:
        similar(cfg.n_similar_negatives)
    if cfg.n_neighbour_negatives:
        sources = [("neighbour-cooccurrence", survey_.neighbours)]
        if extras.decoder_neighbours is not None:
            sources.append(("neighbour-decoder", extras.decoder_neighbours))
        per_source = -(-cfg.n_neighbour_negatives // len(sources))
        for source, neighbours in sources:
            nb = neighbours[global_ids[selected_local]]                     # [s, k]
            cells = survey_.top_cells[np.maximum(nb, 0)]                    # [s, k, TOP_CELLS]
            valid = (nb[:, :, None] >= 0) & (cells >= 0)
            latent = np.broadcast_to(selected_local[:, None, None], cells.shape)[valid]
            neighbour = np.broadcast_to(nb[:, :, None], cells.shape)[valid]
            preference = np.broadcast_to(np.arange(cells[0].size).reshape(cells.shape[1:]), cells.shape)[valid]
            cell = cells[valid]
            full = grid.is_full(cell)
            keep(latent[full], cell[full], preference[full], per_source, source, neighbour[full])
    if cfg.n_explain_negatives:
        if query is not None:
            similar(cfg.n_explain_negatives, "explain")
        else:
            latent, cell = random_cells(selected_local, 4 * cfg.n_explain_negatives + 8, grid, rng)
            keep(latent, cell, rng.random(len(cell)), cfg.n_explain_negatives, "random", None, "explain")
    latent, cell, source, neighbour, split = (np.concatenate([o[i] for o in out]) if out else np.zeros(0)
                                              for i in range(5))
    return latent.astype(np.int64), cell.astype(np.int64), source, neighbour.astype(np.int64), split


def build_block(cache: LatentCache, lo: int, hi: int, selected: np.ndarray, cfg: RecordConfig, grid: Grid,
                survey_: Survey, extras: Extras) -> dict[str, np.ndarray]:
    """Example columns of the selected latents (global ids) inside latents [lo, hi)."""
    indptr, tokens, values = cache.latent_block(lo, hi)
    rng = np.random.default_rng([cfg.seed, lo])
    selected_local = np.sort(selected - lo)
    global_ids = np.arange(lo, hi)
    table = survey_.tables.get(lo) or find_windows(indptr, tokens, values, grid, cfg.tokens_before, cfg.centred)
    table = table.take(np.isin(table.latent, selected_local))
    # deciles and top sampling rank a window by the strongest activation it shows, which may be a
    # neighbouring cell's peak rather than its own
    table.max = window_max(indptr, tokens, values, table, cfg.ctx_len, grid.n_tokens)
    split, decile = _split_activating(table, cfg, rng)
    used = split != ""
    act = table.take(used)
    act_split, act_decile = split[used], decile[used]
    latent, cell = active_cells(indptr, tokens, grid)
    chosen = np.isin(latent, selected_local)
    blocked = blocked_keys(latent[chosen], cell[chosen], grid)
    neg_latent, neg_cell, neg_source, neg_neighbour, neg_forced = _negatives(
        selected_local, global_ids, table.take(split == "explain"), blocked, survey_, extras, cfg, grid, rng)
    # alternate each latent's negatives of one source between the scored splits
    source_code = np.searchsorted(np.array(NEGATIVE_SOURCES), neg_source.astype(str))
    order_in_source = rank_within(neg_latent * len(NEGATIVE_SOURCES) + source_code, np.arange(len(neg_latent)))
    splits = np.array(cfg.scored_splits, dtype=object)
    neg_split = np.where(neg_forced != "", neg_forced, splits[order_in_source % len(splits)])

    n_act, n_neg = len(act.start), len(neg_cell)
    columns = {
        "latent": np.concatenate([act.latent, neg_latent]) + lo,
        "split": np.concatenate([act_split, neg_split]).astype(str),
        "kind": np.array(["activating"] * n_act + ["negative"] * n_neg),
        "source": np.concatenate([np.where(act_split == "explain", cfg.explain_sampling, "quantiles"),
                                  neg_source]).astype(str),
        "neighbour": np.concatenate([np.full(n_act, -1), neg_neighbour]).astype(np.int64),
        "decile": np.concatenate([act_decile, np.zeros(n_neg, np.int64)]).astype(np.int64),
        "start": np.concatenate([act.start, grid.cell_start(neg_cell)]).astype(np.int64),
    }
    acts = window_values(indptr, tokens, values, columns["latent"] - lo, columns["start"], cfg.ctx_len, grid.n_tokens)
    if acts[n_act:].any():
        bad = int(columns["latent"][n_act:][acts[n_act:].any(axis=1)][0])
        raise AssertionError(f"latent {bad}: a negative window has a non-zero activation")
    columns["activations"] = acts
    columns["max_activation"] = acts.max(axis=1) if len(acts) else np.zeros(0, np.float32)
    return columns


def _table(parts: list[dict[str, np.ndarray]], tokens_flat: np.ndarray, ctx_len: int) -> pa.Table:
    names = ["latent", "split", "kind", "source", "neighbour", "decile", "start", "activations", "max_activation"]
    if not parts:
        cols = {n: np.zeros(0) for n in names}
        cols["activations"] = np.zeros((0, ctx_len), np.float32)
    else:
        cols = {n: np.concatenate([p[n] for p in parts]) for n in names}
    order = np.lexsort((cols["start"], -cols["decile"], cols["kind"], cols["split"], cols["latent"]))
    cols = {n: c[order] for n, c in cols.items()}
    window_tokens = tokens_flat[cols["start"].astype(np.int64)[:, None] + np.arange(ctx_len)[None, :]]
    as_list = lambda a, t: pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), t), ctx_len).cast(pa.list_(t))  # noqa: E731
    return pa.table({
        "latent": pa.array(cols["latent"].astype(np.int64)), "split": pa.array(cols["split"].astype(str)),
        "kind": pa.array(cols["kind"].astype(str)), "source": pa.array(cols["source"].astype(str)),
        "neighbour": pa.array(cols["neighbour"].astype(np.int64)), "decile": pa.array(cols["decile"].astype(np.int64)),
        "start": pa.array(cols["start"].astype(np.int64)),
        "tokens": as_list(window_tokens.astype(np.int32), pa.int32()),
        "activations": as_list(cols["activations"].astype(np.float32), pa.float32()),
        "max_activation": pa.array(cols["max_activation"].astype(np.float32)),
    })


def plan_records(cache: LatentCache, cfg: RecordConfig, n_latents: int | None) -> tuple[Grid, Survey, np.ndarray, list]:
    """Pass 1 over every latent: (grid, survey, sampled latents, [(lo, hi, sampled latents inside)] per block
    holding any). The blocks are independent: pass 2 may build them in any process (`build_blocks`)."""
    check_window_fits(cfg, cache.seq_len)
    grid = Grid(int(cache.tokens.shape[0]), cache.seq_len, cfg.ctx_len)
    survey_ = survey(cache, cfg, grid)
    selected = sample_latents(survey_, cfg, n_latents)
    blocks = []
    for lo, hi in latent_blocks(cache):
        inside = selected[(selected >= lo) & (selected < hi)]
        if len(inside):
            blocks.append((lo, hi, inside))
    return grid, survey_, selected, blocks


def build_blocks(cache: LatentCache, cfg: RecordConfig, grid: Grid, survey_: Survey, blocks: list, extras: Extras,
                 on_block: Callable[[int], None] | None = None) -> pa.Table:
    """Pass 2 for some blocks: their example rows, sorted by latent first, so tables of consecutive block
    ranges concatenate into the table of all of them."""
    parts = []
    for lo, hi, inside in blocks:
        parts.append(build_block(cache, lo, hi, inside, cfg, grid, survey_, extras))
        if on_block is not None:
            on_block(len(inside))
    return _table(parts, np.asarray(cache.tokens).reshape(-1), cfg.ctx_len)


def build_records(cache: LatentCache, cfg: RecordConfig, n_latents: int | None, extras: Extras | None = None,
                  on_block: Callable[[int], None] | None = None) -> tuple[pa.Table, list[dict]]:
    """Example rows of up to `n_latents` sampled eligible latents (all of them with None), and one summary
    row per sampled latent (how many windows it had, how many test positives and negatives it got)."""
    grid, survey_, selected, blocks = plan_records(cache, cfg, n_latents)
    table = build_blocks(cache, cfg, grid, survey_, blocks, extras or Extras(), on_block)
    return table, records_summary(table, selected, survey_, cache, cfg)


def records_summary(table: pa.Table, selected: np.ndarray, survey_: Survey, cache: LatentCache,
                    cfg: RecordConfig) -> list[dict]:
    latent = table.column("latent").to_numpy()
    split = table.column("split").to_numpy(zero_copy_only=False)
    kind = table.column("kind").to_numpy(zero_copy_only=False)
    source = table.column("source").to_numpy(zero_copy_only=False)
    n = cache.num_latents
    test = split == "test"
    count = lambda mask: np.bincount(latent[mask], minlength=n)  # noqa: E731
    n_test_activating = count(test & (kind == "activating"))
    decile = table.column("decile").to_numpy()
    tested = test & (kind == "activating")
    deciles_tested = np.bincount(np.unique(latent[tested] * (N_DECILES + 1) + decile[tested]) // (N_DECILES + 1),
                                 minlength=n)
    n_negatives = count(test & (kind == "negative"))
    by_source = {s: count(test & (kind == "negative") & (source == s))
                 for s in NEGATIVE_SOURCES}
    rows = []
    for l in selected.tolist():  # noqa: E741 - one summary row per sampled latent
        rows.append({
            "latent": l, "count": int(cache.counts[l]), "max": float(cache.maxima[l]),
            "firing_rate": float(cache.stats["firing_rate"][l]), "n_windows": int(survey_.n_windows[l]),
            "has_record": True, "n_test_activating": int(n_test_activating[l]),
            "deciles_tested": int(deciles_tested[l]), "n_negatives": int(n_negatives[l]),
            **{f"n_negatives_{s}": int(c[l]) for s, c in by_source.items()},
        })
    return rows
