"""From a coder's sparse output to (latent, token, value) triplets ready for the sorted runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lantern.cache import layout
from lantern.cache.shards import from_stored, to_stored
from lantern.coders.base import SparseActs
from lantern.errors import LanternError
from lantern.io import write_npy


def sparse_to_triplets(acts: SparseActs, token_offset: int, keep: np.ndarray | None = None,
                       value_dtype: str = "float16"):
    """Flatten [n, k] sparse codes to (latent, token, stored value) triplets of strictly positive activations."""
    # Filtered at the stored precision: a tiny value that rounds to 0 in 16 bits is no activation.
    stored = to_stored(acts.values.float().numpy(), value_dtype)
    as_float = from_stored(stored, value_dtype)
    if np.isinf(as_float).any():
        raise LanternError(f"activations above {np.finfo(np.float16).max:.0f} do not fit the float16 cache "
                           f"(largest: {float(acts.values.max()):.3g}); cache with --value-dtype bfloat16")
    indices = acts.indices.numpy()
    n, k = stored.shape
    tokens = np.broadcast_to(np.arange(token_offset, token_offset + n, dtype=np.uint32)[:, None], (n, k))
    mask = as_float > 0
    if keep is not None:
        mask &= keep[:, None]
    return indices[mask].astype(np.int32), tokens[mask], stored[mask]


def save_tokens(cache_dir: Path, tokens: np.ndarray, doc_ids: np.ndarray) -> None:
    write_npy(Path(cache_dir) / layout.TOKENS, tokens.astype(np.int32))
    write_npy(Path(cache_dir) / layout.DOC_IDS, doc_ids.astype(np.int32))


def cacheable_positions(n: int, seq_len: int, token_offset: int) -> np.ndarray:
    """Mask of positions to cache: every position but the BOS at the start of each sequence, whose huge
    residual norm would otherwise dominate the top activations of many latents."""
    positions = (np.arange(token_offset, token_offset + n) % seq_len)
    return positions != 0


def encode_triplets(coder, x: torch.Tensor, token_offset: int, keep: np.ndarray, value_dtype: str,
                    source: str = "the model"):
    """Encode one batch of hookpoint activations ([batch, seq, d], or token ids [batch, seq] for coders reading
    `embed_tokens:input`) and return the kept (latent, token, value) triplets; the cache build and its repair share it."""
    if x.dim() == 2:  # token ids: one feature per token
        x = x.unsqueeze(-1)
    if x.shape[-1] != coder.d_in:
        raise LanternError(f"coder {coder.name!r} expects d_in={coder.d_in} but hookpoint {coder.hookpoint!r} of "
                           f"{source} has width {x.shape[-1]}")
    with torch.inference_mode():
        sparse = coder.encode(x.reshape(-1, x.shape[-1]))
    return sparse_to_triplets(sparse, token_offset, keep, value_dtype)

