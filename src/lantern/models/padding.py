"""Token sequences of different lengths as one batch: the one place that pads.

Right padding keeps every real token at its own position (a steered pass over a padded row equals the unpadded
one); left padding puts every row's last token in the last column, where the next token is read and `generate`
continues.
"""
from __future__ import annotations

from typing import Literal

import torch


def padded(sequences: list[list[int]], pad_id: int, side: Literal["left", "right"]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, longest] token ids filled with `pad_id` on `side`, and the attention mask (1 on real tokens); CPU,
    int64."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        real = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, real] = torch.tensor(seq)
        mask[row, real] = 1
    return ids, mask
