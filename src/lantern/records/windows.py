"""Look up one latent's activations over arbitrary windows (used to verify windows against the cache)."""
from __future__ import annotations

import numpy as np


def window_activations(token_index: np.ndarray, values: np.ndarray, starts: np.ndarray, ctx_len: int) -> np.ndarray:
    """[n_windows, ctx_len] activations of the latent, looked up in its sorted CSR slice."""
    positions = starts[:, None].astype(np.int64) + np.arange(ctx_len)[None, :]
    if len(token_index) == 0:
        return np.zeros(positions.shape, dtype=np.float32)
    found = np.searchsorted(token_index, positions)
    found_clipped = np.minimum(found, len(token_index) - 1)
    hit = token_index[found_clipped] == positions
    return np.where(hit, values[found_clipped], 0.0).astype(np.float32)
