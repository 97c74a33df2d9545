"""Latents of one coder chosen to match another coder's sampled latents by decoder direction
(`records.match_latents_to`): with a few dozen latents sampled at random from each of two layers' SAEs, a latent's
counterpart is almost never in the other sample, so comparing their explanations says nothing; matched pairs make
the cross-layer comparison a paired one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from lantern.cache import layout
from lantern.errors import LanternError
from lantern.io import write_json

MATCHED_SUFFIX = ".matched.json"


def decoder_directions(coder_dir: Path, name: str) -> np.ndarray:
    """A cached coder's unit decoder directions [num_latents, d] (float32), from its cache folder."""
    path = coder_dir / layout.DECODER_DIRECTIONS
    if not path.exists():
        raise LanternError(f"coder {name!r} has no decoder directions in the cache ({path}): it has no decoder "
                           f"(e.g. planted latents), or its cache was built before lantern stored them; "
                           f"records.match_latents_to needs both, so cache into a new run directory")
    return np.load(path).astype(np.float32)


def match_latents(anchor: np.ndarray, candidates: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor direction (rows of `anchor`, in order), one distinct eligible latent of the other coder with
    the most similar decoder direction, maximising the summed cosine (Hungarian). Returns (anchor row indices,
    matched latents) for the pairs made: all anchors when there are at least as many eligible latents."""
    if anchor.shape[1] != candidates.shape[1]:
        raise LanternError(f"records.match_latents_to: decoder directions of width {anchor.shape[1]} and "
                           f"{candidates.shape[1]} are not in one space; match coders that write to the same stream")
    if len(anchor) == 0 or len(eligible) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    similarity = anchor @ candidates[eligible].T
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    order = np.argsort(rows)
    return rows[order], eligible[cols[order]]


def write_pairs(path: Path, anchor_name: str, anchor_latents, latents, cosines) -> None:
    write_json(path, {"matched_to": anchor_name,
                      "pairs": [{"anchor_latent": int(a), "latent": int(b), "decoder_cosine": round(float(c), 6)}
                                for a, b, c in zip(anchor_latents, latents, cosines)]})
