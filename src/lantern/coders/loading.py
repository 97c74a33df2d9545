"""Turn a coder spec from the command line into SparseCoders.

Specs:
- `sae`: the SAE lantern ships for the embedded model;
- `neurons`, `neurons-topk[:K]`: raw or top-k (K=32) MLP neurons of `--layer`;
- `random[:N[:K]]`: N (4096) random unit directions at the `--layer` residual, top-K (32) kept (a control);
- `planted`: latents that follow known rules on the token ids, with their true explanations (`lantern validate`);
- a folder path: a sparsify folder (`cfg.json` + `sae.safetensors`; the folder name is the hookpoint), a SAELens
  folder (`cfg.json` + `sae_weights.safetensors`; the hook is in cfg.json), or a directory of sparsify folders,
  one per hookpoint (`layers.6/`, `layers.7/`, ... as sparsify saves them), which loads them all.
  `PATH:HOOK` picks the subfolder HOOK of such a directory, or overrides the hookpoint of a single folder.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import torch

from lantern.coders.base import SparseCoder, safe_name
from lantern.coders.neurons import NeuronCoder
from lantern.coders.random import DEFAULT_K, DEFAULT_LATENTS, RandomCoder
from lantern.coders.saelens import SAELensCoder, is_saelens_folder
from lantern.coders.sparsify import SparsifyCoder, is_sparsify_folder
from lantern.errors import LanternError

EMBEDDED_SAE_LAYER = 6
KNOWN_FORMATS = ("sparsify (cfg.json + sae.safetensors), SAELens (cfg.json + sae_weights.safetensors), or a "
                 "directory of sparsify/SAELens folders, one per hookpoint (e.g. layers.6/cfg.json + "
                 "layers.6/sae.safetensors)")
SPECS = "sae, sae-l8, sae-w2048, neurons, neurons-topk[:K], random[:N[:K]], planted, or a coder folder path"


EMBEDDED_SAES = {"sae": "layers.6", "sae-l8": "layers.8", "sae-w2048": "layers.6"}
"""The TopK SAEs lantern trains for the embedded Gemma 3 270M (scripts/train_embedded_sae.py, benchmarks/RESULTS.md),
each in assets/<name>/<hookpoint>/: `sae` (4,096 latents after layers.6), `sae-l8` (4,096 after layers.8, for the
cross-layer overlap) and `sae-w2048` (2,048 after layers.6, for the width ablation), all k = 32; a name whose folder
is missing (an installation without the assets) is a clear error."""


def embedded_sae_dir(name: str = "sae") -> Path:
    """The folder of an embedded SAE by name (see EMBEDDED_SAES)."""
    return Path(str(resources.files("lantern") / "assets" / name / EMBEDDED_SAES[name]))


def _layer_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    from lantern.models.hookpoints import trunk

    layers = trunk(model).layers
    if not 0 <= layer < len(layers):
        raise LanternError(f"--layer {layer} does not exist: the model has layers 0..{len(layers) - 1}")
    return layers[layer]


def _neurons(model: torch.nn.Module, layer: int, k: int | None) -> NeuronCoder:
    down_proj = _layer_module(model, layer).mlp.down_proj
    return NeuronCoder(layer, down_proj.in_features, k=k, down_proj=down_proj.weight)


def _int_parts(spec: str, parts: list[str], usage: str) -> list[int]:
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise LanternError(f"coder {spec!r}: expected {usage} with whole numbers") from None


def _random(spec: str, model: torch.nn.Module, layer: int) -> RandomCoder:
    args = _int_parts(spec, spec.split(":")[1:], "random[:N[:K]]")
    if len(args) > 2:
        raise LanternError(f"coder {spec!r}: expected random[:N[:K]]")
    num_latents = args[0] if args else DEFAULT_LATENTS
    k = args[1] if len(args) > 1 else min(DEFAULT_K, num_latents)
    _layer_module(model, layer)
    from lantern.models.hookpoints import trunk

    d_model = trunk(model).get_input_embeddings().embedding_dim
    return RandomCoder(f"layers.{layer}", d_model, num_latents=num_latents, k=k)


def _planted(model: torch.nn.Module):
    """The planted coder needs the vocabulary: the tokenizer saved beside the model (every model lantern loads
    comes from a directory or hub id that holds one)."""
    from transformers import AutoTokenizer

    from lantern.coders.planted import PlantedCoder

    source = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise LanternError(f"the planted coder reads the tokenizer's vocabulary, but no tokenizer loads from the "
                           f"model's source {source!r}: {str(err).splitlines()[0] if str(err) else err}") from None
    return PlantedCoder(tokenizer, model=model)


def coder_format(folder: Path) -> str | None:
    """`sparsify`, `saelens` or None, from the files a folder holds."""
    if is_sparsify_folder(folder):
        return "sparsify"
    if is_saelens_folder(folder):
        return "saelens"
    return None


def _guess_from_cfg(folder: Path) -> str | None:
    """A folder with cfg.json but no weights: whose cfg is it (so the error names the missing weights file)?"""
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    if {"d_sae", "architecture", "metadata", "hook_name", "hook_point"} & cfg.keys():
        return "saelens"
    if {"expansion_factor", "num_latents", "transcode"} & cfg.keys():
        return "sparsify"
    return None


def _one(folder: Path, name: str, hookpoint: str | None) -> SparseCoder:
    fmt = coder_format(folder) or (_guess_from_cfg(folder) if (folder / "cfg.json").is_file() else None)
    if fmt == "sparsify":
        return SparsifyCoder(folder, name=name, hookpoint=hookpoint)
    if fmt == "saelens":
        return SAELensCoder(folder, name=name, hookpoint=hookpoint)
    raise _unknown_format(folder)


def _unknown_format(folder: Path) -> LanternError:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "") if entries else "nothing"
    return LanternError(f"{folder} is not a coder folder lantern knows (it holds: {shown}). "
                        f"Known formats: {KNOWN_FORMATS}")


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def hookpoint_folders(folder: Path) -> list[Path]:
    """The subfolders of a multi-hookpoint directory that hold a coder, in layer order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and coder_format(p)), key=_natural_key)


def _split_path(spec: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH:SUFFIX` (the longest existing PATH wins, so a suffix may itself contain ':')."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    cuts = [i for i, ch in enumerate(spec) if ch == ":"]
    for cut in reversed(cuts):
        base = Path(spec[:cut]).expanduser()
        if spec[:cut] and base.exists():
            return base, spec[cut + 1:].strip() or None
    return path, None


def _from_path(spec: str) -> list[SparseCoder] | None:
    path, suffix = _split_path(spec)
    if not path.exists():
        return None
    if path.is_file():
        raise LanternError(f"coder {spec!r} is a file; give the folder that holds it ({path.parent})")
    if coder_format(path) or (path / "cfg.json").is_file():
        return [_one(path, safe_name(path.name), hookpoint=suffix)]
    subfolders = hookpoint_folders(path)
    if not subfolders:
        raise _unknown_format(path)
    if suffix is None:
        return [_one(sub, safe_name(sub.name), hookpoint=None) for sub in subfolders]
    chosen = path / suffix
    if not (chosen.is_dir() and coder_format(chosen)):
        raise LanternError(f"{path} has no coder folder {suffix!r}; it has: {', '.join(p.name for p in subfolders)}")
    return [_one(chosen, safe_name(chosen.name), hookpoint=None)]


def load_coders(spec: str, model: torch.nn.Module, layer: int = EMBEDDED_SAE_LAYER) -> list[SparseCoder]:
    """Every coder a spec names: one, except for a multi-hookpoint directory, which gives one per hookpoint."""
    spec = spec.strip()
    if spec in EMBEDDED_SAES:
        folder = embedded_sae_dir(spec)
        if not folder.is_dir():
            raise LanternError(f"the embedded SAE {spec!r} is not in this installation ({folder} is missing); "
                               f"train it with scripts/train_embedded_sae.py or reinstall lantern")
        return [SparsifyCoder(folder, name=spec)]
    if spec == "neurons":
        return [_neurons(model, layer, k=None)]
    if spec.startswith("neurons-topk"):
        match = re.fullmatch(r"neurons-topk(?::?(\d+))?", spec)  # also `neurons-topk32`, the coder's name
        if match is None:
            raise LanternError(f"coder {spec!r}: expected neurons-topk[:K] with a whole number K")
        return [_neurons(model, layer, k=int(match.group(1) or 32))]
    if spec == "random" or spec.startswith("random:"):
        return [_random(spec, model, layer)]
    if spec == "planted":
        return [_planted(model)]
    coders = _from_path(spec)
    if coders is None:
        raise LanternError(f"unknown coder {spec!r}: use {SPECS} (no such folder exists)")
    return coders


def load_coder(spec: str, model: torch.nn.Module, layer: int = EMBEDDED_SAE_LAYER) -> SparseCoder:
    """The single coder a spec names; a multi-hookpoint directory must be narrowed with `PATH:HOOK`."""
    coders = load_coders(spec, model, layer)
    if len(coders) != 1:
        raise LanternError(f"coder {spec!r} holds {len(coders)} coders ({', '.join(c.name for c in coders)}); "
                           f"pick one with {spec}:<hookpoint folder>, or load them all with load_coders")
    return coders[0]
