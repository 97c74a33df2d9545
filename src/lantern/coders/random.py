"""Random directions as a coder: a control that says how well explanations do on latents that mean nothing.

Each latent is a seeded random unit direction in the residual stream; its activation is the positive part of
the projection onto it, kept for the k largest per token (the same sparsity a TopK SAE has).
"""
from __future__ import annotations

import torch

from lantern.coders.base import SparseActs, SparseCoder
from lantern.errors import LanternError

DEFAULT_LATENTS = 4096
DEFAULT_K = 32


class RandomCoder(SparseCoder):
    """`num_latents` seeded random unit directions read at `hookpoint`; encode = top-k of relu(x @ D.T)."""

    def __init__(self, hookpoint: str, d_in: int, num_latents: int = DEFAULT_LATENTS, k: int = DEFAULT_K,
                 seed: int = 0, name: str = "random"):
        if num_latents < 1 or not 1 <= k <= num_latents:
            raise LanternError(f"random coder needs num_latents >= 1 and 1 <= k <= num_latents "
                             f"(got {num_latents}, {k})")
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(num_latents, d_in, generator=generator)
        self.directions = directions / directions.norm(dim=-1, keepdim=True)
        self.hookpoint = hookpoint
        self.d_in = d_in
        self.num_latents = num_latents
        self.k = k
        self.seed = seed
        self.name = name
        self.kind = "random"

    def encode(self, x: torch.Tensor) -> SparseActs:
        proj = torch.relu(x.to(self.directions.device, torch.float32) @ self.directions.T)
        values, indices = proj.topk(self.k, dim=-1, sorted=False)
        return SparseActs(indices=indices, values=values)

    def decoder_directions(self) -> torch.Tensor:
        return self.directions

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k, "seed": self.seed}
