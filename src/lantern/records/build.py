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

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import numpy as np
import pyarrow as pa

from lantern.cache.reader import LatentCache
from lantern.cache.shards import plan_shards
from lantern.errors import LanternError
from lantern.records.cells import (Grid, WindowTable, active_cells, find_windows, rank_within, window_max,
                                   window_values)
from lantern.records.negatives import (NEGATIVE_SOURCES, NegativeDraw, Negatives, Picks, blocked_keys,
                                       neighbour_negatives, random_negatives, similar_negatives, with_picks)
from lantern.records.neighbours import cooccurrence_neighbours

N_DECILES = 10
KEEP_WINDOWS = 20_000_000
"""Windows the survey keeps in memory for pass 2 (~40 bytes each) instead of finding them again."""
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
    match_latents_to: str = ""
    """A coder of the run: every other coder explains, for each latent sampled from that one, its own eligible
    latent with the closest decoder direction (one-to-one), so two layers' explanations can be compared pair by
    pair (cross-layer overlap). Empty: each coder samples its latents on its own."""
    latents_from: str = ""
    """A run directory (relative to this run's) whose sampled latents (per coder) this run explains, those still
    eligible here, instead of its own sample. A sweep sets it to its first variant for every variant whose record
    settings differ: a setting that changes which latents are eligible (context length, windows needed) would
    otherwise draw another sample, and a paired comparison needs the same latents."""
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


def cache_grid(cache: LatentCache, ctx_len: int) -> Grid:
    """The cell grid of a cache's tokens (the same one in pass 1, pass 2 and the window index lookups)."""
    return Grid(int(cache.tokens.shape[0]), cache.seq_len, ctx_len)


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


@dataclass(frozen=True)
class Block:
    """One block of latents [lo, hi) of the cache, as CSR arrays with block-local latent ids."""

    lo: int
    indptr: np.ndarray
    tokens: np.ndarray
    values: np.ndarray

    @property
    def n_latents(self) -> int:
        return len(self.indptr) - 1


def _explain_query(explain: WindowTable, window_index, draw: NegativeDraw) -> np.ndarray:
    """[n_local, dim] unit mean embedding of each latent's explain windows: what similar negatives look like."""
    explain = explain.take(np.isin(explain.latent, draw.latents))
    emb = window_index.embed(explain.start, draw.grid.seq_len, draw.grid.ctx_len)
    query = np.zeros((draw.n_local, emb.shape[1]), np.float32)
    np.add.at(query, explain.latent, emb)
    return query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-6)


def _neighbour_sources(survey_: Survey, extras: Extras) -> list[tuple[str, np.ndarray]]:
    sources = [("neighbour-cooccurrence", survey_.neighbours)]
    if extras.decoder_neighbours is not None:
        sources.append(("neighbour-decoder", extras.decoder_neighbours))
    return sources


NegativeStep = Callable[[NegativeDraw, np.ndarray], Picks]
"""One negative source with its settings bound: (draw, taken keys) -> its picks."""


def _negative_steps(cfg: RecordConfig, survey_: Survey, extras: Extras, query: np.ndarray | None) -> list[NegativeStep]:
    """The sources in the order they draw: an earlier source has the first choice of cells (and of the rng)."""
    steps: list[NegativeStep] = []
    if cfg.n_negatives:
        steps.append(partial(random_negatives, count=cfg.n_negatives))
    similar = partial(similar_negatives, query=query, cell_embeddings=extras.cell_embeddings)
    if cfg.n_similar_negatives and query is not None:
        steps.append(partial(similar, count=cfg.n_similar_negatives))
    if cfg.n_neighbour_negatives:
        sources = _neighbour_sources(survey_, extras)
        per_source = -(-cfg.n_neighbour_negatives // len(sources))
        steps += [partial(neighbour_negatives, source=source, neighbours=neighbours, top_cells=survey_.top_cells,
                          count=per_source) for source, neighbours in sources]
    if cfg.n_explain_negatives:  # similar ones where the window index exists, else random
        explain_source = similar if query is not None else random_negatives
        steps.append(partial(explain_source, count=cfg.n_explain_negatives, split="explain"))
    return steps


def _negatives(draw: NegativeDraw, blocked: np.ndarray, explain: WindowTable, survey_: Survey, extras: Extras,
               cfg: RecordConfig) -> Negatives:
    """Every source's picks; each step sees the keys blocked and taken by the steps before it."""
    query = None
    if extras.cell_embeddings is not None and (cfg.n_similar_negatives or cfg.n_explain_negatives):
        query = _explain_query(explain, extras.window_index, draw)
    taken, picks = blocked, []
    for step in _negative_steps(cfg, survey_, extras, query):
        picks.append(step(draw, taken))
        taken = with_picks(taken, picks[-1], draw.grid)
    return Negatives.of(picks)


def _block_windows(block: Block, latents: np.ndarray, survey_: Survey, cfg: RecordConfig, grid: Grid) -> WindowTable:
    """The sampled latents' windows (the survey's where kept), each with the strongest activation it shows,
    which may be a neighbouring cell's peak rather than its own: deciles and top sampling rank by it."""
    table = survey_.tables.get(block.lo) or find_windows(block.indptr, block.tokens, block.values, grid,
                                                         cfg.tokens_before, cfg.centred)
    table = table.take(np.isin(table.latent, latents))
    return replace(table, max=window_max(block.indptr, block.tokens, block.values, table, cfg.ctx_len, grid.n_tokens))


def _blocked(block: Block, latents: np.ndarray, grid: Grid) -> np.ndarray:
    """Keys of the cells where the sampled latents fire, and of the cells beside them."""
    latent, cell = active_cells(block.indptr, block.tokens, grid)
    chosen = np.isin(latent, latents)
    return blocked_keys(latent[chosen], cell[chosen], grid)


def _columns(table: WindowTable, split: np.ndarray, decile: np.ndarray, negatives: Negatives, cfg: RecordConfig,
             grid: Grid, lo: int) -> dict[str, np.ndarray]:
    """Example columns without activations: the windows that went to a split, then the negatives."""
    used = split != ""
    act, act_split = table.take(used), split[used]
    n_act, n_neg = len(act.start), len(negatives.cell)
    return {
        "latent": np.concatenate([act.latent, negatives.latent]) + lo,
        "split": np.concatenate([act_split, negatives.splits(cfg.scored_splits)]).astype(str),
        "kind": np.array(["activating"] * n_act + ["negative"] * n_neg),
        "source": np.concatenate([np.where(act_split == "explain", cfg.explain_sampling, "quantiles"),
                                  negatives.source]).astype(str),
        "neighbour": np.concatenate([np.full(n_act, -1), negatives.neighbour]).astype(np.int64),
        "decile": np.concatenate([decile[used], np.zeros(n_neg, np.int64)]).astype(np.int64),
        "start": np.concatenate([act.start, grid.cell_start(negatives.cell)]).astype(np.int64),
    }


def _add_activations(columns: dict[str, np.ndarray], block: Block, cfg: RecordConfig,
                     grid: Grid) -> dict[str, np.ndarray]:
    """The cache's activations of every window, failing loudly if a negative is not all zero."""
    acts = window_values(block.indptr, block.tokens, block.values, columns["latent"] - block.lo, columns["start"],
                         cfg.ctx_len, grid.n_tokens)
    negative = columns["kind"] == "negative"
    if acts[negative].any():
        bad = int(columns["latent"][negative][acts[negative].any(axis=1)][0])
        raise AssertionError(f"latent {bad}: a negative window has a non-zero activation")
    max_activation = acts.max(axis=1) if len(acts) else np.zeros(0, np.float32)
    return {**columns, "activations": acts, "max_activation": max_activation}


def build_block(cache: LatentCache, lo: int, hi: int, selected: np.ndarray, cfg: RecordConfig, grid: Grid,
                survey_: Survey, extras: Extras) -> dict[str, np.ndarray]:
    """Example columns of the selected latents (global ids) inside latents [lo, hi)."""
    block = Block(lo, *cache.latent_block(lo, hi))
    draw = NegativeDraw(np.sort(selected - lo), lo, block.n_latents, len(cfg.scored_splits), grid,
                        np.random.default_rng([cfg.seed, lo]))
    table = _block_windows(block, draw.latents, survey_, cfg, grid)
    split, decile = _split_activating(table, cfg, draw.rng)
    negatives = _negatives(draw, _blocked(block, draw.latents, grid), table.take(split == "explain"), survey_,
                           extras, cfg)
    return _add_activations(_columns(table, split, decile, negatives, cfg, grid, lo), block, cfg, grid)


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


def plan_records(cache: LatentCache, cfg: RecordConfig, n_latents: int | None,
                 choose=None) -> tuple[Grid, Survey, np.ndarray, list]:
    """Pass 1 over every latent: (grid, survey, sampled latents, [(lo, hi, sampled latents inside)] per block
    holding any). The blocks are independent: pass 2 may build them in any process (`build_blocks`).
    `choose(eligible latents) -> latents` replaces the random sample (latents matched to another coder's)."""
    check_window_fits(cfg, cache.seq_len)
    grid = cache_grid(cache, cfg.ctx_len)
    survey_ = survey(cache, cfg, grid)
    if choose is None:
        selected = sample_latents(survey_, cfg, n_latents)
    else:
        selected = np.asarray(choose(np.flatnonzero(survey_.n_windows >= cfg.windows_needed)), dtype=np.int64)
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
