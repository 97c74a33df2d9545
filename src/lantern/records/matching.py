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


def decoder_directions(coder_dir: Path, name: str, mmap: bool = False) -> np.ndarray:
    """A cached coder's unit decoder directions [num_latents, d] (float32; float16 on disk when `mmap`, for a
    shape check), from its cache folder."""
    path = coder_dir / layout.DECODER_DIRECTIONS
    if not path.exists():
        raise LanternError(f"coder {name!r} has no decoder directions in the cache ({path}): the coder exposes no "
                           f"decoder, or its cache was built before lantern stored them (cache into a new run "
                           f"directory); records.match_latents_to needs them for every coder")
    return np.load(path, mmap_mode="r") if mmap else np.load(path).astype(np.float32)


def check_widths(anchor: str, widths: dict[str, int]) -> None:
    """Matching compares decoder directions, so every coder must write to the anchor's space."""
    other = {name: width for name, width in widths.items() if width != widths[anchor]}
    if other:
        raise LanternError(f"records.match_latents_to={anchor!r}: its decoder directions have width "
                           f"{widths[anchor]}, but " + ", ".join(f"{n}'s have {w}" for n, w in sorted(other.items()))
                           + "; match coders that write to the same stream")


def match_latents(anchor: np.ndarray, candidates: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor direction (rows of `anchor`, in order), one distinct eligible latent of the other coder with
    the most similar decoder direction, maximising the summed cosine (Hungarian). Returns (anchor row indices,
    matched latents) for the pairs made: all anchors when there are at least as many eligible latents. The dense
    assignment is anchors × eligible: fine for the hundreds of latents an explained sample has, slow for tens of
    thousands (every latent of a wide coder)."""
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
