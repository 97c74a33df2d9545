"""Turn a coder spec from the command line into a SparseCoder.

Specs: `sae` (the SAE lantern ships for the embedded model), `neurons` (raw MLP neurons),
`neurons-topk` or `neurons-topk:K` (top-k sparsified neurons, K=32 by default), or a path to a
sparsify folder (`<dir>/cfg.json` + `<dir>/sae.safetensors`; the folder name is the hookpoint).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from lantern.coders.base import SparseCoder
from lantern.coders.neurons import NeuronCoder
from lantern.coders.sparsify import SparsifyCoder
from lantern.errors import LanternError

EMBEDDED_SAE_LAYER = 6


def embedded_sae_dir() -> Path:
    """The TopK SAE lantern trained on the embedded Gemma 3 270M at `layers.6` (see benchmarks/RESULTS.md)."""
    return Path(str(resources.files("lantern") / "assets" / "sae" / f"layers.{EMBEDDED_SAE_LAYER}"))


def _mlp_width(model: torch.nn.Module, layer: int) -> int:
    from lantern.models.hookpoints import trunk

    layers = trunk(model).layers
    if not 0 <= layer < len(layers):
        raise LanternError(f"--layer {layer} does not exist: the model has layers 0..{len(layers) - 1}")
    return layers[layer].mlp.down_proj.in_features


def load_coder(spec: str, model: torch.nn.Module, layer: int = EMBEDDED_SAE_LAYER) -> SparseCoder:
    spec = spec.strip()
    if spec == "sae":
        return SparsifyCoder(embedded_sae_dir(), name="sae")
    if spec == "neurons":
        return NeuronCoder(layer, _mlp_width(model, layer))
    if spec.startswith("neurons-topk"):
        k = int(spec.split(":", 1)[1]) if ":" in spec else 32
        return NeuronCoder(layer, _mlp_width(model, layer), k=k)
    path = Path(spec)
    if path.is_dir():
        return SparsifyCoder(path, name=path.name.replace(".", "_"))
    raise LanternError(f"unknown coder {spec!r}: use sae, neurons, neurons-topk[:K], or a sparsify folder path")
