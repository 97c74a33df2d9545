"""sparsify's on-disk format: a folder `<hookpoint>/` with `cfg.json` and `sae.safetensors`.

Weights: `encoder.weight [M, D]`, `encoder.bias [M]`, `W_dec [M, D]`, `b_dec [D]`, optional `W_skip`.
Encode is top-k of relu(W (x - b_dec) + b); transcoders (`transcode: true`) do not subtract b_dec.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from lantern.coders.base import SparseActs, SparseCoder
from lantern.errors import LanternError

REQUIRED_FILES = ("cfg.json", "sae.safetensors")


class SparsifyCoder(SparseCoder):
    """A TopK SAE or transcoder saved by sparsify (or by lantern's trainer, which writes the same format)."""

    def __init__(self, folder: str | Path, name: str | None = None, hookpoint: str | None = None):
        folder = Path(folder)
        for required in REQUIRED_FILES:
            if not (folder / required).is_file():
                raise LanternError(f"sparsify coder folder {folder} lacks {required} (needs {', '.join(REQUIRED_FILES)})")
        self.cfg = json.loads((folder / "cfg.json").read_text())
        if self.cfg.get("activation", "topk") != "topk":
            raise LanternError(f"{folder}: activation {self.cfg.get('activation')!r} is not supported yet (topk only)")
        weights = load_file(folder / "sae.safetensors")
        for key in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
            if key not in weights:
                raise LanternError(f"{folder}/sae.safetensors lacks tensor {key!r}")
        self.W_enc = weights["encoder.weight"].float()
        self.b_enc = weights["encoder.bias"].float()
        self.W_dec = weights["W_dec"].float()
        self.b_dec = weights["b_dec"].float()
        self.k = int(self.cfg["k"])
        self.transcode = bool(self.cfg.get("transcode", False))
        self.num_latents, self.d_in = self.W_enc.shape
        if "d_in" in self.cfg and int(self.cfg["d_in"]) != self.d_in:
            raise LanternError(f"{folder}: cfg d_in {self.cfg['d_in']} != encoder width {self.d_in}")
        self.hookpoint = hookpoint or folder.name
        self.name = name or "sae"
        self.kind = "transcoder" if self.transcode else "sae"
        self.folder = folder

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if not self.transcode:
            x = x - self.b_dec
        return torch.relu(x @ self.W_enc.T + self.b_enc)

    def encode(self, x: torch.Tensor) -> SparseActs:
        values, indices = self.pre_activations(x).topk(self.k, dim=-1, sorted=False)
        return SparseActs(indices=indices, values=values)

    def decode(self, acts: SparseActs) -> torch.Tensor:
        dense = torch.zeros(acts.values.shape[0], self.num_latents, dtype=torch.float32)
        dense.scatter_(1, acts.indices.long(), acts.values.float())
        return dense @ self.W_dec + self.b_dec

    def describe(self) -> dict:
        return {**super().describe(), "format": "sparsify", "path": str(self.folder), "k": self.k,
                "transcode": self.transcode}
