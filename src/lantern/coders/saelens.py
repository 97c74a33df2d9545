"""SAELens's on-disk format: a folder with `cfg.json` and `sae_weights.safetensors` (what `SAE.save_model` writes).

Weights: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`, plus `threshold [d_sae]`
(JumpReLU; older files store `log_threshold`) and `W_skip [d_out, d_in]` (skip transcoders). The hook comes from
`metadata.hook_name` (SAELens >= 6) or a top-level `hook_name`/`hook_point` (older files), in TransformerLens
spelling, which `resolve_hookpoint` maps onto Hugging Face modules. Encoding follows SAELens's own `encode` so
that a checkpoint's latents mean here what they meant where it was trained.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lantern.coders.base import SparseActs, SparseCoder, dense_to_sparse, scatter_dense
from lantern.errors import LanternError

REQUIRED_FILES = ("cfg.json", "sae_weights.safetensors")


@dataclass(frozen=True)
class _Arch:
    activation: str  # "relu", "jumprelu" or "topk"
    transcoder: bool
    skip: bool


ARCHITECTURES = {
    "standard": _Arch("relu", False, False),
    "jumprelu": _Arch("jumprelu", False, False),
    "topk": _Arch("topk", False, False),
    "transcoder": _Arch("relu", True, False),
    "skip_transcoder": _Arch("relu", True, True),
    "jumprelu_transcoder": _Arch("jumprelu", True, False),
    "jumprelu_skip_transcoder": _Arch("jumprelu", True, True),
}
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
LAYER_NORM_EPS = 1e-5  # SAELens's run-time layer norm: (x - mean) / (std + eps)


def is_saelens_folder(folder: Path) -> bool:
    return all((folder / f).is_file() for f in REQUIRED_FILES)


def _architecture(cfg: dict, where: Path) -> str:
    """The architecture name; files from before SAELens 6 have none (standard, or topk via `activation_fn`)."""
    activation_fn = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    if activation_fn not in (None, "relu", "topk"):
        raise LanternError(f"{where}: activation_fn {activation_fn!r} is not supported (relu or topk)")
    arch = cfg.get("architecture")
    if arch is None:
        arch = "topk" if activation_fn == "topk" else "standard"
    if arch not in ARCHITECTURES:
        raise LanternError(f"{where}: SAELens architecture {arch!r} is not supported "
                           f"(supported: {', '.join(ARCHITECTURES)})")
    return arch


def _normalization(cfg: dict, where: Path) -> str:
    norm = cfg.get("normalize_activations", "none")
    if isinstance(norm, bool):  # pre-6 files: True meant expected_average_only_in
        norm = "expected_average_only_in" if norm else "none"
    if norm is None:
        norm = "none"
    if norm not in NORMALIZATIONS:
        raise LanternError(f"{where}: normalize_activations {norm!r} is not supported "
                           f"(supported: {', '.join(NORMALIZATIONS)}); fold it into the weights first")
    return norm


def _hook_name(cfg: dict) -> str | None:
    metadata = cfg.get("metadata") or {}
    return metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")


class SAELensCoder(SparseCoder):
    """An SAE or transcoder saved by SAELens: standard (ReLU), JumpReLU, TopK and (skip) transcoders."""

    def __init__(self, folder: str | Path, name: str | None = None, hookpoint: str | None = None,
                 max_active: int | None = None):
        folder = Path(folder)
        for required in REQUIRED_FILES:
            if not (folder / required).is_file():
                raise LanternError(f"SAELens coder folder {folder} lacks {required} (needs {', '.join(REQUIRED_FILES)})")
        cfg = json.loads((folder / "cfg.json").read_text())
        self.cfg = cfg
        self.folder = folder
        self.architecture = _architecture(cfg, folder)
        arch = ARCHITECTURES[self.architecture]
        self.activation, self.transcoder, self.skip = arch.activation, arch.transcoder, arch.skip
        self.normalization = _normalization(cfg, folder)
        if cfg.get("reshape_activations", "none") not in ("none", None):
            raise LanternError(f"{folder}: reshape_activations {cfg['reshape_activations']!r} (attention hook_z) "
                               f"is not supported")
        # SAELens refuses apply_b_dec_to_input for transcoders (b_dec lives in the output space).
        self.apply_b_dec_to_input = bool(cfg.get("apply_b_dec_to_input", True)) and not self.transcoder
        self.k: int | None = None
        self.rescale_by_decoder_norm = False
        if self.activation == "topk":
            k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
            if k is None:
                raise LanternError(f"{folder}: a topk SAE's cfg.json needs k")
            self.k = int(k)
            self.rescale_by_decoder_norm = bool(cfg.get("rescale_acts_by_decoder_norm", False))
        self.max_active = max_active
        self._load_weights(folder / "sae_weights.safetensors")

        hook_name = _hook_name(cfg)
        if hookpoint is None and hook_name is None:
            raise LanternError(f"{folder}/cfg.json names no hook (metadata.hook_name or hook_name): "
                               f"give the hookpoint after the path, e.g. {folder}:layers.6")
        self.hook_name = hook_name
        self.hookpoint = hookpoint or hook_name
        self.name = name or "sae"
        self.kind = "transcoder" if self.transcoder else "sae"

    def _load_weights(self, path: Path) -> None:
        weights = load_file(path)
        if "threshold" not in weights and "log_threshold" in weights:
            weights["threshold"] = weights["log_threshold"].float().exp()
        needed = ["W_enc", "b_enc", "W_dec", "b_dec"]
        needed += ["threshold"] if self.activation == "jumprelu" else []
        needed += ["W_skip"] if self.skip else []
        for key in needed:
            if key not in weights:
                raise LanternError(f"{path} lacks tensor {key!r} (needed by architecture {self.architecture!r})")
        self.W_enc, self.b_enc = weights["W_enc"].float(), weights["b_enc"].float()
        self.W_dec, self.b_dec = weights["W_dec"].float(), weights["b_dec"].float()
        self.threshold = weights["threshold"].float() if self.activation == "jumprelu" else None
        self.W_skip = weights["W_skip"].float() if self.skip else None
        self.d_in, self.num_latents = self.W_enc.shape
        self.d_out = self.W_dec.shape[1]
        shapes = {"b_enc": (self.b_enc, (self.num_latents,)), "W_dec": (self.W_dec, (self.num_latents, self.d_out)),
                  "b_dec": (self.b_dec, (self.d_out,))}
        if self.threshold is not None:
            shapes["threshold"] = (self.threshold, (self.num_latents,))
        if self.W_skip is not None:
            shapes["W_skip"] = (self.W_skip, (self.d_out, self.d_in))
        for key, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise LanternError(f"{path}: {key} has shape {tuple(tensor.shape)}, expected {shape} "
                                   f"from W_enc {tuple(self.W_enc.shape)}")
        for key, actual in (("d_in", self.d_in), ("d_sae", self.num_latents), ("d_out", self.d_out)):
            if key in self.cfg and int(self.cfg[key]) != actual:
                raise LanternError(f"{path.parent}: cfg {key} {self.cfg[key]} != {actual} in the weights")

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """SAELens's run-time input normalization, and the (scale, shift) that undoes it on the output."""
        if self.normalization == "constant_norm_rescale":
            coeff = math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
            return x * coeff, (1 / coeff, torch.zeros_like(coeff))
        if self.normalization == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            std = (x - mu).std(dim=-1, keepdim=True)
            return (x - mu) / (std + LAYER_NORM_EPS), (std, mu)
        return x, None

    def _pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._normalize(x.to(self.W_enc.device, torch.float32))
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.rescale_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def encode(self, x: torch.Tensor) -> SparseActs:
        pre = self._pre_activations(x)
        if self.k is not None:
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
            return SparseActs(indices=indices, values=torch.relu(values))
        acts = torch.relu(pre)
        if self.threshold is not None:
            acts = acts * (pre > self.threshold)
        return dense_to_sparse(acts, self.max_active)

    def decode(self, acts: SparseActs, x: torch.Tensor | None = None) -> torch.Tensor:
        """What SAELens's forward returns for these latents; normalization and skip connections need the input x."""
        if x is None and (self.skip or (self.normalization != "none" and not self.transcoder)):
            raise LanternError(f"{self.folder}: decoding this {self.architecture} SAE needs its input x")
        out = scatter_dense(acts, self.num_latents) @ self.decoder_directions() + self.b_dec
        if self.transcoder:
            if self.W_skip is not None:
                out = out + x.float() @ self.W_skip.T
            return out
        _, undo = self._normalize(x.float()) if x is not None else (None, None)
        if undo is not None:
            scale, shift = undo
            out = out * scale + shift
        return out

    def decoder_directions(self) -> torch.Tensor:
        # With rescale_acts_by_decoder_norm the activations already carry the decoder norms.
        if self.rescale_by_decoder_norm:
            return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        return self.W_dec

    def describe(self) -> dict:
        info = {**super().describe(), "format": "saelens", "path": str(self.folder),
                "architecture": self.architecture, "d_out": self.d_out, "hook_name": self.hook_name,
                "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": self.normalization}
        if self.k is not None:
            info.update(k=self.k, rescale_acts_by_decoder_norm=self.rescale_by_decoder_norm)
        else:
            info["max_active"] = self.max_active
        if self.skip:
            info["skip"] = True
        return info
