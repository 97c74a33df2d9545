"""The one interface every coder implements, so caching and analyses never special-case a coder."""
from __future__ import annotations

import re
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
    """Family, for reports: `sae`, `transcoder`, `neurons`, `neurons-topk`, `random`."""
    write_hookpoint: str | None = None
    """Where its decoder directions are added to the model (a module's output), when that is not decided by
    its hookpoint and kind (explain/output_evidence.write_site); the planted coder writes before the final norm."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> SparseActs:
        """Encode [n, d_in] activations."""

    def decoder_directions(self) -> torch.Tensor | None:
        """[num_latents, d_out] float32: what each latent writes per unit of activation (None if unknown).

        Analyses compare latents by these directions, so every coder that has them should expose them.
        """
        return None

    def describe(self) -> dict:
        """What goes into the cache manifest."""
        return {"name": self.name, "kind": self.kind, "hookpoint": self.hookpoint,
                "d_in": self.d_in, "num_latents": self.num_latents}


def dense_to_sparse(acts: torch.Tensor, max_active: int | None = None) -> SparseActs:
    """Keep the `max_active` largest entries per row of dense [n, M] activations.

    Dense-activation coders (ReLU, JumpReLU) have no fixed k; by default k is the largest number of
    non-zeros of any row in this batch, so nothing that fired is dropped. Kept values <= 0 are padding.
    """
    if max_active is None:
        max_active = int((acts > 0).sum(dim=-1).max()) if acts.shape[0] else 1
    k = max(1, min(max_active, acts.shape[-1]))
    values, indices = acts.topk(k, dim=-1, sorted=False)
    return SparseActs(indices=indices, values=values)


def scatter_dense(acts: SparseActs, num_latents: int) -> torch.Tensor:
    """The dense [n, num_latents] float32 matrix of sparse activations (padding contributes 0)."""
    dense = torch.zeros(acts.values.shape[0], num_latents, dtype=torch.float32, device=acts.values.device)
    dense.scatter_(1, acts.indices.long(), torch.relu(acts.values.float()))
    return dense


def safe_name(text: str) -> str:
    """A coder name usable as a folder and table key: `layers.6` -> `layers_6`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "coder"
