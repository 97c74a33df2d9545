"""Build the examples of each selected latent: explain windows, test windows by decile, verified negatives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lantern.cache.reader import LatentCache
from lantern.errors import LanternError
from lantern.records.windows import activating_windows, random_negative_windows, window_activations

N_DECILES = 10


@dataclass(frozen=True)
class RecordConfig:
    """How examples are drawn for each latent."""

    ctx_len: int = 32
    """Tokens per window."""
    tokens_before: int = 16
    """Tokens shown before the activating token (16 of 32 centres it)."""
    n_explain: int = 20
    """Activating windows shown to the explainer."""
    explain_sampling: str = "top"
    """`top` (strongest windows), `quantiles` (equal numbers per decile) or `random`."""
    n_test_per_decile: int = 1
    """Activating test windows drawn from each activation decile (after removing explain windows)."""
    n_negatives: int = 10
    """Random test windows on which the latent is verified to be zero everywhere."""
    min_windows: int = 30
    """Latents with fewer disjoint activating windows are not explained."""
    seed: int = 0


def eligible_latents(cache: LatentCache, cfg: RecordConfig) -> np.ndarray:
    """Latents that fire often enough to fill explain + test sets (cheap pre-filter on counts)."""
    return np.flatnonzero(cache.counts >= cfg.min_windows)


def candidate_order(cache: LatentCache, cfg: RecordConfig) -> np.ndarray:
    """Eligible latents in a seeded random order (taking the first N ids would bias the sample)."""
    return np.random.default_rng(cfg.seed).permutation(eligible_latents(cache, cfg))


def _deciles(maxima: np.ndarray) -> np.ndarray:
    """Decile 1 (weakest) .. 10 (strongest) of each window's max activation among this latent's windows."""
    ranks = np.argsort(np.argsort(maxima, kind="stable"), kind="stable")
    return 1 + (ranks * N_DECILES) // max(len(maxima), 1)


def _rows(latent: int, split: str, kind: str, source: str, starts: np.ndarray, acts: np.ndarray,
          deciles: np.ndarray, tokens_flat: np.ndarray, ctx_len: int) -> list[dict]:
    rows = []
    for start, act, decile in zip(starts.tolist(), acts, deciles.tolist()):
        rows.append({
            "latent": int(latent), "split": split, "kind": kind, "source": source, "decile": int(decile),
            "start": int(start), "tokens": tokens_flat[start:start + ctx_len].astype(np.int32).tolist(),
            "activations": act.astype(np.float32).tolist(), "max_activation": float(act.max()),
        })
    return rows


def check_window_fits(cfg: RecordConfig, seq_len: int) -> None:
    """A window must hold its centre and fit in a sequence after the BOS (which is never shown)."""
    if not 0 <= cfg.tokens_before < cfg.ctx_len < seq_len:
        raise LanternError(
            f"windows of ctx_len={cfg.ctx_len} with tokens_before={cfg.tokens_before} do not fit sequences of "
            f"seq_len={seq_len}: need 0 <= tokens_before < ctx_len < seq_len (position 0 is the BOS)")


def latent_examples(cache: LatentCache, latent: int, cfg: RecordConfig) -> list[dict] | None:
    """All example rows of one latent, or None if it has too few disjoint activating windows."""
    check_window_fits(cfg, cache.seq_len)
    token_index, values = cache.activations(latent)
    seq_len, n_seq = cache.seq_len, cache.tokens.shape[0]
    starts = activating_windows(token_index, values, seq_len, cfg.ctx_len, cfg.tokens_before)
    if len(starts) < max(cfg.min_windows, cfg.n_explain + cfg.n_test_per_decile * N_DECILES):
        return None
    acts = window_activations(token_index, values, starts, cfg.ctx_len)
    maxima = acts.max(axis=1)
    deciles = _deciles(maxima)
    rng = np.random.default_rng([cfg.seed, int(latent)])
    if cfg.explain_sampling == "top":
        explain = np.argsort(-maxima, kind="stable")[: cfg.n_explain]
    elif cfg.explain_sampling == "quantiles":
        per = max(1, cfg.n_explain // N_DECILES)
        explain = np.concatenate([rng.permutation(np.flatnonzero(deciles == d))[:per] for d in range(1, N_DECILES + 1)])
    elif cfg.explain_sampling == "random":
        explain = rng.choice(len(starts), size=cfg.n_explain, replace=False)
    else:
        raise ValueError(f"unknown explain_sampling {cfg.explain_sampling!r}")
    remaining = np.setdiff1d(np.arange(len(starts)), explain)
    test = np.concatenate([
        rng.permutation(remaining[deciles[remaining] == d])[: cfg.n_test_per_decile] for d in range(1, N_DECILES + 1)
    ]).astype(np.int64)
    assert not set(explain.tolist()) & set(test.tolist()), "explain and test windows overlap"
    negatives = random_negative_windows(token_index, n_seq, seq_len, cfg.ctx_len, cfg.n_negatives, rng, starts)
    neg_acts = window_activations(token_index, values, negatives, cfg.ctx_len)
    if neg_acts.any():
        raise AssertionError(f"latent {latent}: a negative window has a non-zero activation")
    tokens_flat = cache.tokens.reshape(-1)
    explain_source = cfg.explain_sampling
    return (
        _rows(latent, "explain", "activating", explain_source, starts[explain], acts[explain], deciles[explain],
              tokens_flat, cfg.ctx_len)
        + _rows(latent, "test", "activating", "quantiles", starts[test], acts[test], deciles[test], tokens_flat,
                cfg.ctx_len)
        + _rows(latent, "test", "negative", "random", negatives, neg_acts, np.zeros(len(negatives), np.int64),
                tokens_flat, cfg.ctx_len)
    )


def build_records(cache: LatentCache, cfg: RecordConfig, n_latents: int | None,
                  on_record: Callable[[], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Example rows of up to `n_latents` latents, and one summary row per attempted latent (with how many
    test positives and verified negatives it got: a dense latent may have fewer all-zero windows than asked)."""
    check_window_fits(cfg, cache.seq_len)
    rows: list[dict] = []
    summary: list[dict] = []
    for latent in candidate_order(cache, cfg).tolist():
        if n_latents is not None and sum(r["has_record"] for r in summary) >= n_latents:
            break
        examples = latent_examples(cache, latent, cfg)
        summary.append({"latent": latent, "count": int(cache.counts[latent]), "max": float(cache.maxima[latent]),
                        "firing_rate": float(cache.counts[latent]) / cache.tokens.size,
                        "has_record": examples is not None,
                        "n_test_activating": sum(e["split"] == "test" and e["kind"] == "activating" for e in examples or []),
                        "n_negatives": sum(e["kind"] == "negative" for e in examples or [])})
        rows.extend(examples or [])
        if examples is not None and on_record is not None:
            on_record()
    return rows, summary
