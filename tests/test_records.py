"""Latent records from real caches: disjoint explain/test windows, verified negatives, deciles, positions."""

from __future__ import annotations

import numpy as np
import pytest

from lantern.cache import layout
from lantern.cache.reader import LatentCache
from lantern.cache.writer import finish, merge_parts, save_tokens, write_part
from lantern.errors import LanternError
from lantern.records.build import N_DECILES, RecordConfig, build_records, candidate_order, latent_examples
from lantern.records.windows import activating_windows, random_negative_windows, window_activations

CFG = RecordConfig(ctx_len=12, tokens_before=6, n_explain=8, n_test_per_decile=2, n_negatives=6, min_windows=20)


def dense_latent(cache: LatentCache, latent: int) -> np.ndarray:
    """The latent's activation at every flat token position, rebuilt from its CSR slice."""
    out = np.zeros(cache.tokens.size, dtype=np.float32)
    token_index, values = cache.activations(latent)
    out[token_index] = values
    return out


def flat_range(row: dict) -> range:
    return range(row["start"], row["start"] + len(row["tokens"]))


def check_latent_rows(cache: LatentCache, latent: int, rows: list[dict], cfg: RecordConfig) -> None:
    seq_len = cache.seq_len
    tokens_flat = np.asarray(cache.tokens).reshape(-1)
    dense = dense_latent(cache, latent)
    explain = [r for r in rows if r["split"] == "explain"]
    test_pos = [r for r in rows if r["split"] == "test" and r["kind"] == "activating"]
    negatives = [r for r in rows if r["kind"] == "negative"]
    assert len(explain) == cfg.n_explain
    assert all(r["kind"] == "activating" for r in explain)
    assert all(r["split"] == "test" for r in negatives)
    assert 0 < len(test_pos) <= cfg.n_test_per_decile * N_DECILES
    assert len(explain) + len(test_pos) + len(negatives) == len(rows)

    # Explain and test never share a token; no two windows of this latent overlap at all.
    explain_tokens = {t for r in explain for t in flat_range(r)}
    test_tokens = {t for r in test_pos + negatives for t in flat_range(r)}
    assert not explain_tokens & test_tokens
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
    for r in explain + test_pos:
        assert 1 <= r["decile"] <= N_DECILES and r["max_activation"] > 0
    # Deciles rank the windows by their maximum.
    by_decile = sorted(explain + test_pos, key=lambda r: r["decile"])
    for lower, higher in zip(by_decile, by_decile[1:]):
        if lower["decile"] < higher["decile"]:
            assert lower["max_activation"] <= higher["max_activation"]
    if cfg.explain_sampling == "top":
        assert min(r["max_activation"] for r in explain) >= max(r["max_activation"] for r in test_pos)


@pytest.mark.parametrize("sampling", ["top", "quantiles", "random"])
@pytest.mark.parametrize("coder", ["sae", "neurons-topk16"])
def test_records_of_a_real_cache(built_cache, coder, sampling):
    cache_dir, _, _ = built_cache
    cache = LatentCache(cache_dir, coder)
    cfg = RecordConfig(**{**CFG.__dict__, "explain_sampling": sampling,
                          "n_explain": 10 if sampling == "quantiles" else CFG.n_explain})
    rows, summary = build_records(cache, cfg, n_latents=6)
    by_latent: dict[int, list[dict]] = {}
    for r in rows:
        by_latent.setdefault(r["latent"], []).append(r)
    assert len(by_latent) == 6 == sum(s["has_record"] for s in summary)
    assert {s["latent"] for s in summary if s["has_record"]} == set(by_latent)
    assert [s["latent"] for s in summary] == candidate_order(cache, cfg)[:len(summary)].tolist()
    for latent, latent_rows in by_latent.items():
        check_latent_rows(cache, latent, latent_rows, cfg)
        assert sum(r["kind"] == "negative" for r in latent_rows) == cfg.n_negatives
    for s in summary:
        assert s["count"] == cache.counts[s["latent"]] >= cfg.min_windows
        assert s["max"] == pytest.approx(float(cache.maxima[s["latent"]]))


def test_dense_neurons_get_only_verified_negatives(built_cache):
    """Raw neurons fire on about half the tokens: few all-zero windows exist, and none may be faked."""
    cache_dir, _, _ = built_cache
    cache = LatentCache(cache_dir, "neurons")
    rows, summary = build_records(cache, CFG, n_latents=4)
    assert sum(s["has_record"] for s in summary) == 4
    for latent in {r["latent"] for r in rows}:
        check_latent_rows(cache, latent, [r for r in rows if r["latent"] == latent], CFG)


def test_build_records_takes_the_requested_number_when_enough_are_eligible(built_cache):
    cache = LatentCache(built_cache[0], "sae")
    for n in (1, 5, 12):
        rows, summary = build_records(cache, CFG, n_latents=n)
        assert len({r["latent"] for r in rows}) == n == sum(s["has_record"] for s in summary)
        assert summary[-1]["has_record"]  # it stops as soon as it has enough
    _, everything = build_records(cache, CFG, n_latents=None)
    assert len(everything) == (cache.counts >= CFG.min_windows).sum()  # every eligible latent was tried
    assert 12 < sum(s["has_record"] for s in everything) < len(everything)  # some had too few windows
    # Seeded: the same seed gives the same records; another seed picks other latents.
    assert build_records(cache, CFG, 3) == build_records(cache, CFG, 3)
    other = RecordConfig(**{**CFG.__dict__, "seed": 1})
    assert [s["latent"] for s in build_records(cache, other, 3)[1]] != [s["latent"] for s in build_records(cache, CFG, 3)[1]]


# --- hand-made caches ----------------------------------------------------------------------------


def write_cache(cache_dir, tokens: np.ndarray, activations: dict[int, list[tuple[int, float]]], num_latents: int,
                name: str = "hand"):
    """A real cache directory from (flat token, value) lists per latent, written by lantern's own writer."""
    save_tokens(cache_dir, tokens, np.zeros(len(tokens), np.int32))
    latents = np.array([l for l, acts in activations.items() for _ in acts], dtype=np.int32)
    toks = np.array([t for acts in activations.values() for t, _ in acts], dtype=np.uint32)
    vals = np.array([v for acts in activations.values() for _, v in acts], dtype=np.float16)
    cdir = layout.coder_dir(cache_dir, name)
    half = len(toks) // 2  # two parts, so merging is exercised too
    order = np.argsort(toks, kind="stable")
    first, second = order[:half], order[half:]
    assert toks[first].max() < toks[second].min()
    write_part(layout.part_path(cache_dir, name, 0), latents[first], toks[first], vals[first], num_latents)
    write_part(layout.part_path(cache_dir, name, 1), latents[second], toks[second], vals[second], num_latents)
    stats = merge_parts(cdir, 2, num_latents)
    finish(cdir, {"coder": {"name": name}, **stats})
    return LatentCache(cache_dir, name)


def test_hand_made_cache_windows_deciles_and_edges(tmp_path):
    n_seq, seq_len, ctx = 40, 32, 8
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
                       min_windows=30)
    starts = activating_windows(token_index, values, seq_len, ctx, cfg.tokens_before)
    assert len(starts) == n_seq
    expected_start = {1: 1, 16: 12, seq_len - 1: seq_len - ctx}  # clipped after BOS / before the end
    for s, start in zip(np.argsort(-values), starts):
        seq, pos = divmod(int(token_index[s]), seq_len)
        assert start == seq * seq_len + expected_start[pos]

    rows = latent_examples(cache, 0, cfg)
    check_latent_rows(cache, 0, rows, cfg)
    explain = [r for r in rows if r["split"] == "explain"]
    # Top sampling: the 10 strongest sequences (31..40); deciles are exact ranks of 40 maxima.
    assert sorted(r["max_activation"] for r in explain) == list(range(31, 41))
    for r in rows:
        if r["kind"] == "activating":
            assert r["decile"] == 1 + (int(r["max_activation"]) - 1) * N_DECILES // n_seq
    test_deciles = sorted(r["decile"] for r in rows if r["split"] == "test" and r["kind"] == "activating")
    assert test_deciles == [d for d in range(1, 9) for _ in range(2)]  # 31..40 (deciles 8-10) went to explain

    assert latent_examples(cache, 1, cfg) is None
    assert latent_examples(cache, 2, cfg) is None
    rows, summary = build_records(cache, cfg, n_latents=5)
    assert [s["latent"] for s in summary] == [0] and {r["latent"] for r in rows} == {0}


def test_negative_windows_avoid_every_activation(tmp_path):
    n_seq, seq_len, ctx = 6, 20, 5
    rng = np.random.default_rng(0)
    token_index = np.sort(rng.choice(np.arange(n_seq * seq_len), size=30, replace=False))
    token_index = token_index[token_index % seq_len != 0].astype(np.uint32)
    exclude = np.array([3, 45], dtype=np.int64)
    starts = random_negative_windows(token_index, n_seq, seq_len, ctx, 50, np.random.default_rng(1), exclude)
    assert len(starts) > 0
    acts = window_activations(token_index, np.ones(len(token_index), np.float32), starts, ctx)
    assert not acts.any()
    assert ((starts % seq_len) >= 1).all() and ((starts % seq_len) + ctx <= seq_len).all()
    spans = np.concatenate([starts, exclude])
    gaps = np.abs(spans[:, None] - spans[None, :]) + np.eye(len(spans), dtype=int) * ctx
    assert (gaps >= ctx).all()  # disjoint from each other and from the excluded windows


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
