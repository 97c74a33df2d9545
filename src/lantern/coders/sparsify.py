"""sparsify's on-disk format: a folder `<hookpoint>/` with `cfg.json` and `sae.safetensors`.

Weights: `encoder.weight [M, D]`, `encoder.bias [M]`, `W_dec [M, D]`, `b_dec [D]`, and `W_skip [D, D]` when
`skip_connection` is true. Encode is top-k of relu(W (x - b_dec) + b); transcoders (`transcode: true`) do not
subtract b_dec. sparsify hooks a transcoder's module and trains it on that module's *input* (predicting its
output), so a transcoder saved as `layers.3.mlp` reads `layers.3.mlp:input`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from lantern.coders.base import SparseActs, SparseCoder, scatter_dense
from lantern.errors import LanternError

REQUIRED_FILES = ("cfg.json", "sae.safetensors")
SUPPORTED_ACTIVATIONS = ("topk",)


def is_sparsify_folder(folder: Path) -> bool:
    return all((folder / f).is_file() for f in REQUIRED_FILES)


class SparsifyCoder(SparseCoder):
    """A TopK SAE or (skip) transcoder saved by sparsify (or by lantern's trainer, which writes the same format)."""

    def __init__(self, folder: str | Path, name: str | None = None, hookpoint: str | None = None):
        folder = Path(folder)
        for required in REQUIRED_FILES:
            if not (folder / required).is_file():
                raise LanternError(f"sparsify coder folder {folder} lacks {required} (needs {', '.join(REQUIRED_FILES)})")
        self.cfg = json.loads((folder / "cfg.json").read_text())
        activation = self.cfg.get("activation", "topk")
        if activation not in SUPPORTED_ACTIVATIONS:
            raise LanternError(f"{folder}: sparsify activation {activation!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
        self.skip = bool(self.cfg.get("skip_connection", False))
        weights = load_file(folder / "sae.safetensors")
        needed = ("encoder.weight", "encoder.bias", "W_dec", "b_dec") + (("W_skip",) if self.skip else ())
        for key in needed:
            if key not in weights:
                raise LanternError(f"{folder}/sae.safetensors lacks tensor {key!r}")
        self.W_enc = weights["encoder.weight"].float()
        self.b_enc = weights["encoder.bias"].float()
        self.W_dec = weights["W_dec"].float()
        self.b_dec = weights["b_dec"].float()
        self.W_skip = weights["W_skip"].float() if self.skip else None
        self.k = int(self.cfg["k"])
        self.transcode = bool(self.cfg.get("transcode", False))
        self.num_latents, self.d_in = self.W_enc.shape
        if "d_in" in self.cfg and int(self.cfg["d_in"]) != self.d_in:
            raise LanternError(f"{folder}: cfg d_in {self.cfg['d_in']} != encoder width {self.d_in}")
        if self.W_dec.shape[0] != self.num_latents:
            raise LanternError(f"{folder}: W_dec has {self.W_dec.shape[0]} rows but the encoder has "
                               f"{self.num_latents} latents")
        if hookpoint is None:
            hookpoint = folder.name
            if self.transcode and not hookpoint.endswith(":input"):
                hookpoint += ":input"
        self.hookpoint = hookpoint
        self.name = name or "sae"
        self.kind = "transcoder" if self.transcode or self.skip else "sae"
        self.folder = folder

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.device, torch.float32)
        if not self.transcode:
            x = x - self.b_dec
        return torch.relu(x @ self.W_enc.T + self.b_enc)

    def encode(self, x: torch.Tensor) -> SparseActs:
        values, indices = self.pre_activations(x).topk(self.k, dim=-1, sorted=False)
        return SparseActs(indices=indices, values=values)

    def decode(self, acts: SparseActs, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction (or, for a transcoder, prediction); a skip connection also needs the input `x`."""
        out = scatter_dense(acts, self.num_latents) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise LanternError(f"{self.folder}: a skip transcoder's decode needs its input x")
            out = out + x.float() @ self.W_skip.T
        return out

    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec

    def describe(self) -> dict:
        return {**super().describe(), "format": "sparsify", "path": str(self.folder), "k": self.k,
                "transcode": self.transcode,
                # Only when set, so the manifests (and cache fingerprints) of plain coders stay as they were.
                **({"skip": True} if self.skip else {})}
