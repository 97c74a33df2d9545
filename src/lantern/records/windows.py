"""Non-overlapping activating windows and verified non-activating windows of one latent."""
from __future__ import annotations

import numpy as np


def window_start(centre_pos: np.ndarray, seq_len: int, ctx_len: int, tokens_before: int) -> np.ndarray:
    """Start position of a window that puts `tokens_before` tokens before the centre, kept inside the
    sequence and after its BOS (position 0 is never shown)."""
    return np.clip(centre_pos - tokens_before, 1, seq_len - ctx_len)


def window_activations(token_index: np.ndarray, values: np.ndarray, starts: np.ndarray, ctx_len: int) -> np.ndarray:
    """[n_windows, ctx_len] activations of the latent, looked up in its sorted CSR slice."""
    positions = starts[:, None].astype(np.int64) + np.arange(ctx_len)[None, :]
    if len(token_index) == 0:
        return np.zeros(positions.shape, dtype=np.float32)
    found = np.searchsorted(token_index, positions)
    found_clipped = np.minimum(found, len(token_index) - 1)
    hit = token_index[found_clipped] == positions
    return np.where(hit, values[found_clipped], 0.0).astype(np.float32)


def activating_windows(token_index: np.ndarray, values: np.ndarray, seq_len: int, ctx_len: int,
                       tokens_before: int) -> np.ndarray:
    """Flat start indices of pairwise disjoint windows, greedily centred on the strongest activations first.

    Disjointness makes any split of these windows token-disjoint too, so explain and test never share text.
    """
    order = np.argsort(-values, kind="stable")
    centres = token_index[order].astype(np.int64)
    seqs, pos = np.divmod(centres, seq_len)
    starts = window_start(pos, seq_len, ctx_len, tokens_before)
    taken: dict[int, list[int]] = {}
    chosen: list[int] = []
    for seq, start in zip(seqs.tolist(), starts.tolist()):
        others = taken.setdefault(seq, [])
        if all(abs(start - other) >= ctx_len for other in others):
            others.append(start)
            chosen.append(seq * seq_len + start)
    return np.asarray(chosen, dtype=np.int64)


def random_negative_windows(token_index: np.ndarray, n_sequences: int, seq_len: int, ctx_len: int, count: int,
                            rng: np.random.Generator, exclude_starts: np.ndarray, max_tries: int = 20) -> np.ndarray:
    """Flat starts of `count` random windows where the latent is exactly zero on every token (checked
    against the cache), disjoint from each other and from `exclude_starts`."""
    chosen: list[int] = []
    blocked = [int(s) for s in exclude_starts]
    for _ in range(max_tries):
        need = count - len(chosen)
        if need <= 0:
            break
        seqs = rng.integers(0, n_sequences, size=4 * need)
        starts = seqs * seq_len + rng.integers(1, seq_len - ctx_len + 1, size=4 * need)
        acts = window_activations(token_index, np.ones(len(token_index), np.float32), starts, ctx_len)
        for start in starts[acts.sum(axis=1) == 0].tolist():
            if len(chosen) == count:
                break
            if all(abs(start - other) >= ctx_len for other in blocked):
                chosen.append(start)
                blocked.append(start)
    return np.asarray(chosen, dtype=np.int64)
