"""The one interface every coder implements, so caching and analyses never special-case a coder."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch


class SparseActs(NamedTuple):
    """Top-k style sparse output of a coder for n input vectors."""

    indices: torch.Tensor
    """[n, k] int latent ids; entries whose value is not > 0 are padding, not activations."""
    values: torch.Tensor
    """[n, k] activation values."""


class SparseCoder(ABC):
    """Maps activations read at `hookpoint` ([n, d_in]) to sparse latent activations."""

    name: str
    """Short unique name used for folders and tables (e.g. `sae`, `neurons`, `neurons-topk32`)."""
    hookpoint: str
    """Where its input is read, in any spelling `resolve_hookpoint` accepts."""
    d_in: int
    num_latents: int
    kind: str
    """Family, for reports: `sae`, `transcoder`, `neurons`, `neurons-topk`."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> SparseActs:
        """Encode [n, d_in] activations."""

    def describe(self) -> dict:
        """What goes into the cache manifest."""
        return {"name": self.name, "kind": self.kind, "hookpoint": self.hookpoint,
                "d_in": self.d_in, "num_latents": self.num_latents}
