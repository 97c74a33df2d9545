"""MLP neurons as a coder: the paper's baseline, raw or top-k sparsified.

A neuron's activation is the input of the MLP's down projection (act(gate) * up for gated MLPs). Its sign
is arbitrary, so, as for SAE latents, only positive values count as activations.
"""
from __future__ import annotations

import torch

from lantern.coders.base import SparseActs, SparseCoder


class NeuronCoder(SparseCoder):
    """Identity (raw) or top-k over an MLP layer's neurons, read at `layers.N.mlp.down_proj:input`."""

    def __init__(self, layer: int, width: int, k: int | None = None, down_proj: torch.Tensor | None = None):
        """`down_proj` is the MLP's down projection weight [d_model, width], if decoder directions are wanted."""
        if down_proj is not None and down_proj.shape[-1] != width:
            raise ValueError(f"down_proj weight {tuple(down_proj.shape)} does not take {width} neurons")
        self.down_proj = down_proj
        self.layer = layer
        self.hookpoint = f"layers.{layer}.mlp.down_proj:input"
        self.d_in = width
        self.num_latents = width
        self.k = k
        self.kind = "neurons" if k is None else "neurons-topk"
        self.name = "neurons" if k is None else f"neurons-topk{k}"

    def encode(self, x: torch.Tensor) -> SparseActs:
        x = torch.relu(x.float())
        if self.k is None:
            indices = torch.arange(self.num_latents, dtype=torch.int32).expand(x.shape[0], -1)
            return SparseActs(indices=indices, values=x)
        values, indices = x.topk(self.k, dim=-1, sorted=False)
        return SparseActs(indices=indices, values=values)

    def decoder_directions(self) -> torch.Tensor | None:
        """Neuron i writes column i of the down projection."""
        return None if self.down_proj is None else self.down_proj.detach().float().T

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k}
