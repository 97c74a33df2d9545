"""Latent records from real caches: disjoint explain/test windows, verified negatives, deciles, positions."""

from __future__ import annotations

import numpy as np
import pytest

from lantern.cache import layout
from lantern.cache.build import CacheOptions, merge_coder
from lantern.cache.reader import LatentCache
from lantern.cache.runs import RunWriter
from lantern.cache.writer import save_tokens
from lantern.errors import LanternError
from lantern.io import write_json
from lantern.pipeline.records_stage import load_extras
from lantern.records.build import N_DECILES, RecordConfig, build_records

CFG = RecordConfig(ctx_len=12, tokens_before=6, n_explain=8, n_test_per_decile=2, n_negatives=6, min_windows=20)


def dense_latent(cache: LatentCache, latent: int) -> np.ndarray:
    """The latent's activation at every flat token position, rebuilt from its CSR slice."""
    out = np.zeros(cache.tokens.size, dtype=np.float32)
    token_index, values = cache.activations(latent)
    out[token_index] = values
    return out


def flat_range(row: dict) -> range:
    return range(row["start"], row["start"] + len(row["tokens"]))


def group(table) -> dict[int, list[dict]]:
    by_latent: dict[int, list[dict]] = {}
    for r in table.to_pylist():
        by_latent.setdefault(r["latent"], []).append(r)
    return by_latent


def check_latent_rows(cache: LatentCache, latent: int, rows: list[dict], cfg: RecordConfig) -> None:
    seq_len = cache.seq_len
    tokens_flat = np.asarray(cache.tokens).reshape(-1)
    dense = dense_latent(cache, latent)
    explain = [r for r in rows if r["split"] == "explain" and r["kind"] == "activating"]
    scored_pos = [r for r in rows if r["split"] != "explain" and r["kind"] == "activating"]
    negatives = [r for r in rows if r["kind"] == "negative"]
    assert len(explain) == cfg.n_explain
    assert {r["split"] for r in negatives} <= set(cfg.scored_splits) | ({"explain"} if cfg.n_explain_negatives else set())
    assert sum(r["split"] == "explain" for r in negatives) <= cfg.n_explain_negatives  # fewer if zero cells run out
    assert {r["source"] for r in negatives} <= {"random", "similar", "neighbour-cooccurrence", "neighbour-decoder"}
    assert 0 < len([r for r in scored_pos if r["split"] == "test"]) <= cfg.n_test_per_decile * N_DECILES
    assert len(explain) + len(scored_pos) + len(negatives) == len(rows)

    # No two windows of this latent share a token, so explain, test and validation never do.
    every = [t for r in rows for t in flat_range(r)]
    assert len(every) == len(set(every))

    for r in rows:
        assert r["latent"] == latent and len(r["tokens"]) == len(r["activations"]) == cfg.ctx_len
        pos = r["start"] % seq_len
        assert pos >= 1, "a window shows the BOS position"
        assert pos + cfg.ctx_len <= seq_len, "a window crosses into the next sequence"
        assert r["tokens"] == tokens_flat[r["start"]:r["start"] + cfg.ctx_len].tolist()
        # Activations are the cache's, recomputed here token by token.
        np.testing.assert_array_equal(r["activations"], dense[r["start"]:r["start"] + cfg.ctx_len])
        assert r["max_activation"] == max(r["activations"])
    for r in negatives:
        assert r["decile"] == 0 and r["max_activation"] == 0.0
        assert not dense[r["start"]:r["start"] + cfg.ctx_len].any()
        if r["source"].startswith("neighbour"):
            other = dense_latent(cache, r["neighbour"])
            assert other[r["start"]:r["start"] + cfg.ctx_len].any(), "the neighbour does not fire there"
    for r in explain + scored_pos:
        assert 1 <= r["decile"] <= N_DECILES and r["max_activation"] > 0
    # Deciles rank the windows by their maximum.
    by_decile = sorted(explain + scored_pos, key=lambda r: r["decile"])
    for lower, higher in zip(by_decile, by_decile[1:]):
        if lower["decile"] < higher["decile"]:
            assert lower["max_activation"] <= higher["max_activation"]
    # Test windows are drawn first from every decile, whatever the explain sampling (the strongest included).
    assert {r["decile"] for r in scored_pos if r["split"] == "test"} == set(range(1, N_DECILES + 1))


@pytest.mark.parametrize("sampling", ["top", "quantiles", "random"])
@pytest.mark.parametrize("coder", ["sae", "neurons-topk16"])
def test_records_of_a_real_cache(built_cache, coder, sampling):
    cache_dir, _, _ = built_cache
    cache = LatentCache(cache_dir, coder)
    cfg = RecordConfig(**{**CFG.__dict__, "explain_sampling": sampling, "n_validation_per_decile": 1,
                          "n_similar_negatives": 3, "n_neighbour_negatives": 4, "n_explain_negatives": 2,
                          "n_explain": 10 if sampling == "quantiles" else CFG.n_explain})
    table, summary = build_records(cache, cfg, n_latents=6, extras=load_extras(cache, _run_cfg(cache_dir, cfg)))
    by_latent = group(table)
    assert len(by_latent) == 6 == len(summary)
    assert {s["latent"] for s in summary} == set(by_latent)
    sources, explain_negatives = set(), 0
    for latent, latent_rows in by_latent.items():
        check_latent_rows(cache, latent, latent_rows, cfg)
        splits = {(r["split"], r["kind"]) for r in latent_rows}
        assert ("validation", "activating") in splits and ("validation", "negative") in splits
        explain_negatives += ("explain", "negative") in splits
        sources |= {r["source"] for r in latent_rows if r["kind"] == "negative"}
    assert {"random", "similar", "neighbour-cooccurrence"} <= sources and explain_negatives > 0
    if coder == "sae":  # the neuron coders of these tests are made without the model's down projection
        assert cache.manifest["decoder_neighbours"] and "neighbour-decoder" in sources
    for s in summary:
        assert s["count"] == cache.counts[s["latent"]] and s["n_windows"] >= cfg.windows_needed
        assert s["max"] == pytest.approx(float(cache.maxima[s["latent"]]))
        assert s["n_negatives"] == sum(s[f"n_negatives_{k}"] for k in
                                       ("random", "similar", "neighbour-cooccurrence", "neighbour-decoder"))


def _run_cfg(cache_dir, records_cfg):
    from lantern.config import RunConfig

    return RunConfig(run_dir=str(cache_dir.parent), records=records_cfg)


def test_similar_negatives_are_closer_to_the_explain_windows_than_random_ones(built_cache):
    cache_dir, _, _ = built_cache
    cache = LatentCache(cache_dir, "sae")
    cfg = RecordConfig(**{**CFG.__dict__, "n_similar_negatives": 6})
    extras = load_extras(cache, _run_cfg(cache_dir, cfg))
    table, _ = build_records(cache, cfg, n_latents=30, extras=extras)
    gaps = []
    for latent, rows in group(table).items():
        explain = np.array([r["start"] for r in rows if r["split"] == "explain"])
        query = extras.window_index.embed(explain, cache.seq_len, cfg.ctx_len).mean(0)
        sim = {source: extras.window_index.embed(np.array([r["start"] for r in rows if r["source"] == source]),
                                                 cache.seq_len, cfg.ctx_len) @ query
               for source in ("similar", "random")}
        gaps.append(sim["similar"].mean() - sim["random"].mean())
    assert np.mean(gaps) > 0 and np.mean(np.array(gaps) > 0) >= 0.8


def test_dense_neurons_get_only_verified_negatives(built_cache):
    """Raw neurons fire on about half the tokens: few all-zero windows exist, and none may be faked."""
    cache_dir, _, _ = built_cache
    cache = LatentCache(cache_dir, "neurons")
    table, summary = build_records(cache, CFG, n_latents=4)
    assert len(summary) == 4
    for latent, rows in group(table).items():
        check_latent_rows(cache, latent, rows, CFG)


def test_build_records_takes_the_requested_number_when_enough_are_eligible(built_cache):
    cache = LatentCache(built_cache[0], "sae")
    for n in (1, 5, 12):
        table, summary = build_records(cache, CFG, n_latents=n)
        assert len(group(table)) == n == len(summary)
    table, everything = build_records(cache, CFG, n_latents=None)
    assert 12 < len(everything) < cache.num_latents  # every eligible latent, and some were not
    assert len(group(table)) == len(everything)
    # Seeded: the same seed gives the same records; another seed picks other latents.
    assert build_records(cache, CFG, 3)[0].equals(build_records(cache, CFG, 3)[0])
    other = RecordConfig(**{**CFG.__dict__, "seed": 1})
    assert [s["latent"] for s in build_records(cache, other, 3)[1]] != [s["latent"] for s in build_records(cache, CFG, 3)[1]]


# --- hand-made caches ----------------------------------------------------------------------------


def write_cache(cache_dir, tokens: np.ndarray, activations: dict[int, list[tuple[int, float]]], num_latents: int,
                name: str = "hand"):
    """A real cache directory from (flat token, value) lists per latent, written by lantern's own writer:
    two sorted runs merged into shards of two latents."""
    save_tokens(cache_dir, tokens, np.zeros(len(tokens), np.int32))
    latents = np.array([l for l, acts in activations.items() for _ in acts], dtype=np.int32)
    toks = np.array([t for acts in activations.values() for t, _ in acts], dtype=np.uint32)
    vals = np.array([v for acts in activations.values() for _, v in acts], dtype=np.float16)
    order = np.argsort(toks, kind="stable")
    half = len(toks) // 2
    writer = RunWriter(layout.runs_dir(cache_dir, name), num_latents, budget_bytes=1)
    for batch, part in enumerate((order[:half], order[half:])):
        writer.add(batch, latents[part], toks[part], vals[part])
    options = CacheOptions(shard_latents=2)
    manifest = merge_coder(cache_dir, name, num_latents, 2, options)
    write_json(layout.coder_dir(cache_dir, name) / layout.MANIFEST,
               {"coder": {"name": name, "num_latents": num_latents}, "model": "hand", **manifest})
    return LatentCache(cache_dir, name)


def test_hand_made_cache_windows_deciles_and_edges(tmp_path):
    n_seq, seq_len, ctx = 40, 33, 8  # 32 positions after the BOS: 4 cells of 8 per sequence
    tokens = np.arange(n_seq * seq_len, dtype=np.int32).reshape(n_seq, seq_len) % 1000 + 3
    tokens[:, 0] = 2
    # Latent 0: one activation per sequence, value = sequence + 1, at the first, a middle or the last position.
    positions = [1, 16, seq_len - 1]
    acts0 = [(s * seq_len + positions[s % 3], float(s + 1)) for s in range(n_seq)]
    # Latent 1: fires on 2 tokens only (too few windows). Latent 2: never fires.
    acts1 = [(5, 1.0), (70, 2.0)]
    cache = write_cache(tmp_path, tokens, {0: acts0, 1: acts1}, num_latents=3)
    np.testing.assert_array_equal(cache.counts, [n_seq, 2, 0])
    np.testing.assert_array_equal(cache.maxima, [n_seq, 2.0, 0.0])
    token_index, values = cache.activations(0)
    np.testing.assert_array_equal(token_index, sorted(t for t, _ in acts0))

    cfg = RecordConfig(ctx_len=ctx, tokens_before=4, n_explain=10, n_test_per_decile=2, n_negatives=5,
                       n_similar_negatives=0, n_neighbour_negatives=0, min_windows=30)
    table, summary = build_records(cache, cfg, n_latents=5)
    assert [s["latent"] for s in summary] == [0]  # latents 1 and 2 have too few windows
    rows = group(table)[0]
    check_latent_rows(cache, 0, rows, cfg)
    expected_start = {1: 1, 16: 12, seq_len - 1: seq_len - ctx}  # clipped after BOS / before the end
    for r in rows:
        if r["kind"] == "activating":
            seq = r["start"] // seq_len
            assert r["start"] == seq * seq_len + expected_start[positions[seq % 3]]
    explain = [r for r in rows if r["split"] == "explain"]
    for r in rows:  # deciles are exact ranks of 40 maxima: 4 windows each
        if r["kind"] == "activating":
            assert r["decile"] == 1 + (int(r["max_activation"]) - 1) * N_DECILES // n_seq
    # Test windows come first, 2 from every decile (the strongest included); top sampling then explains with the
    # 10 strongest of the 20 windows left: the 2 left in each of deciles 6-10.
    test = [r for r in rows if r["split"] == "test" and r["kind"] == "activating"]
    assert sorted(r["decile"] for r in test) == [d for d in range(1, 11) for _ in range(2)]
    assert sorted(r["decile"] for r in explain) == [d for d in range(6, 11) for _ in range(2)]
    assert not {r["max_activation"] for r in explain} & {r["max_activation"] for r in test}
    assert summary[0]["deciles_tested"] == 10
    assert sum(r["kind"] == "negative" for r in rows) == 5


def test_uncentred_windows_are_the_cells(tmp_path):
    n_seq, seq_len, ctx = 30, 33, 8
    tokens = np.full((n_seq, seq_len), 9, np.int32)
    tokens[:, 0] = 2
    acts = [(s * seq_len + 1 + 8 * (s % 4) + 5, 1.0 + s) for s in range(n_seq)]
    cache = write_cache(tmp_path, tokens, {0: acts}, num_latents=1)
    cfg = RecordConfig(ctx_len=ctx, tokens_before=4, centred=False, n_explain=10, n_test_per_decile=1,
                       n_negatives=0, n_similar_negatives=0, n_neighbour_negatives=0, min_windows=20)
    rows = group(build_records(cache, cfg, n_latents=1)[0])[0]
    check_latent_rows(cache, 0, rows, cfg)
    for r in rows:
        assert (r["start"] % seq_len - 1) % ctx == 0  # the window is the cell: the activation is not centred


def test_neighbour_negatives_come_from_cooccurring_latents(tmp_path):
    """Latent 1 fires with latent 0 (on the same tokens) in sequences 0..29 and alone in 30..39: its
    co-occurrence neighbour is 0,
    and its neighbour negatives are the cells where 0 fires without it."""
    n_seq, seq_len = 60, 33
    tokens = np.full((n_seq, seq_len), 9, np.int32)
    tokens[:, 0] = 2
    acts0 = [(s * seq_len + 3, 1.0 + s % 7) for s in range(0, 30)] + [(s * seq_len + 20, 5.0) for s in range(40, 60)]
    acts1 = [(s * seq_len + 3, 1.0 + s % 5) for s in range(0, 40)]  # on the same tokens as latent 0
    cache = write_cache(tmp_path, tokens, {0: acts0, 1: acts1}, num_latents=2)
    cfg = RecordConfig(ctx_len=8, tokens_before=4, n_explain=10, n_test_per_decile=1, n_negatives=2,
                       n_similar_negatives=0, n_neighbour_negatives=4, min_windows=20, n_neighbours=1)
    table, _ = build_records(cache, cfg, n_latents=None)
    rows = group(table)[1]
    check_latent_rows(cache, 1, rows, cfg)
    neighbour_rows = [r for r in rows if r["source"] == "neighbour-cooccurrence"]
    assert len(neighbour_rows) == 4 and {r["neighbour"] for r in neighbour_rows} == {0}
    assert all(40 <= r["start"] // seq_len < 60 for r in neighbour_rows)


@pytest.mark.parametrize("ctx_len, tokens_before", [(16, 4), (20, 4), (8, 8)])
def test_windows_that_cannot_fit_are_a_clear_error(tmp_path, ctx_len, tokens_before):
    """A window must fit after the BOS (ctx_len < seq_len) and contain its centre (tokens_before < ctx_len)."""
    n_seq, seq_len = 4, 16
    tokens = np.full((n_seq, seq_len), 7, np.int32)
    tokens[:, 0] = 2
    acts = {0: [(s * seq_len + p, 1.0) for s in range(n_seq) for p in range(1, seq_len)]}
    cache = write_cache(tmp_path, tokens, acts, num_latents=1)
    cfg = RecordConfig(ctx_len=ctx_len, tokens_before=tokens_before, n_explain=1, n_test_per_decile=0,
                       n_negatives=1, min_windows=1)
    with pytest.raises(LanternError, match=f"ctx_len={ctx_len}"):
        build_records(cache, cfg, n_latents=1)


def test_each_negative_source_skips_what_earlier_sources_took():
    """Sources draw in turn from one NegativeDraw; the taken keys they pass on keep every pick distinct."""
    from lantern.records.cells import Grid
    from lantern.records.negatives import NegativeDraw, Negatives, random_negatives, with_picks

    grid = Grid(n_seq=4, seq_len=33, ctx_len=8)  # 16 full cells
    draw = NegativeDraw(np.array([0, 2]), 0, 3, 2, grid, np.random.default_rng(0))
    blocked = np.sort(np.array([0 * grid.n_cells + 1, 2 * grid.n_cells + 5]))
    first = random_negatives(draw, blocked, count=3)
    taken = with_picks(blocked, first, grid)
    second = random_negatives(draw, taken, count=2, split="explain")
    keys = [p.latent * grid.n_cells + p.cell for p in (first, second)]
    assert np.bincount(first.latent, minlength=3).tolist() == [6, 0, 6]   # count per scored split
    assert np.bincount(second.latent, minlength=3).tolist() == [2, 0, 2]  # count, forced into one split
    every = np.concatenate(keys)
    assert len(np.unique(every)) == len(every) and not np.isin(every, blocked).any()
    negatives = Negatives.of([first, second])
    splits = negatives.splits(["test", "validation"])
    assert (splits[len(first.cell):] == "explain").all()
    assert sorted(splits[:len(first.cell)].tolist()) == ["test"] * 6 + ["validation"] * 6
