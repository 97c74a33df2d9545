"""Hookpoint names as users write them, resolved to modules of a Hugging Face causal LM.

Accepted spellings (all relative to the decoder trunk, e.g. `model.model` of Gemma3ForCausalLM):
- sparsify's: `layers.6` (residual stream after block 6), `layers.6.mlp` (MLP output), `embed_tokens`;
- TransformerLens/SAELens: `blocks.6.hook_resid_post`, `blocks.6.hook_mlp_out`, `hook_embed`;
- plain module paths, relative to the trunk or the whole model: `model.layers.6.mlp.down_proj`;
- a `:input` suffix reads a module's input instead of its output (`layers.6.mlp.down_proj:input` = the
  MLP's neuron activations; `layers.6.mlp:input` = the normed residual the MLP reads, where transcoders read).
  TransformerLens's `blocks.6.ln2.hook_normalized` and `blocks.6.hook_mlp_in` both map there: transcoders
  saved by SAELens name their input so. (Strictly, TransformerLens's `hook_mlp_in` is taken before ln2 and,
  with folded norms, `hook_normalized` lacks the norm's scale; the module input is what the MLP really reads.)
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import torch

from lantern.errors import LanternError

_TL_PATTERNS = [
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), r"layers.\1"),
    (re.compile(r"^blocks\.(\d+)\.hook_mlp_out$"), r"layers.\1.mlp"),
    (re.compile(r"^blocks\.(\d+)\.hook_attn_out$"), r"layers.\1.self_attn"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$"), r"layers.\1.mlp.down_proj:input"),
    (re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$"), r"layers.\1.mlp:input"),
    (re.compile(r"^blocks\.(\d+)\.hook_mlp_in$"), r"layers.\1.mlp:input"),
    (re.compile(r"^hook_embed$"), "embed_tokens"),
]


@dataclass(frozen=True)
class Hookpoint:
    """A resolved hookpoint: the name the user gave, the module path in the model, and which side to read."""

    name: str
    module_path: str
    read: str  # "output" or "input"
    layer: int | None  # index of the decoder block it lives in (for early stopping), None for embeddings


def trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack inside a CausalLM (the module that owns `layers`)."""
    for candidate in ("model", "transformer", "gpt_neox"):
        inner = getattr(model, candidate, None)
        if inner is not None and hasattr(inner, "layers" if candidate != "transformer" else "h"):
            return inner
    if hasattr(model, "layers"):
        return model
    raise LanternError(f"cannot find the decoder layers of {type(model).__name__}")


def _canonical(name: str) -> tuple[str, str]:
    read = "output"
    if name.endswith(":input"):
        name, read = name[: -len(":input")], "input"
    for pattern, replacement in _TL_PATTERNS:
        if pattern.match(name):
            name = pattern.sub(replacement, name)
            if name.endswith(":input"):
                name, read = name[: -len(":input")], "input"
            break
    return name, read


def resolve_hookpoint(model: torch.nn.Module, name: str) -> Hookpoint:
    """Map a user's hookpoint name to a module; an unknown name lists the valid ones."""
    path, read = _canonical(name.strip())
    body = trunk(model)
    body_prefix = next(n for n, m in model.named_modules() if m is body)
    modules = dict(body.named_modules())
    if path.startswith(body_prefix + ".") and path[len(body_prefix) + 1:] in modules:
        path = path[len(body_prefix) + 1:]
    if path not in modules or path == "":
        n_layers = len(body.layers)
        close = difflib.get_close_matches(name.strip(), _spellings(modules, n_layers), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise LanternError(
            f"hookpoint {name!r} does not exist in {type(model).__name__}.{hint} Valid: embed_tokens, "
            f"layers.N (residual), layers.N.mlp, layers.N.mlp:input (MLP input, for transcoders), "
            f"layers.N.self_attn, layers.N.mlp.down_proj:input (neurons) "
            f"for N in 0..{n_layers - 1}, or any module path such as {next(iter(_some_paths(modules)))}"
        )
    match = re.match(r"^layers\.(\d+)(\.|$)", path)
    layer = int(match.group(1)) if match else None
    return Hookpoint(name=name, module_path=path, read=read, layer=layer)


def _spellings(modules: dict, n_layers: int) -> list[str]:
    """Every name a user could have meant: module paths and the sparsify/TransformerLens shorthands."""
    names = [p for p in modules if p] + ["hook_embed"]
    for n in range(n_layers):
        names += [f"layers.{n}.mlp:input", f"layers.{n}.mlp.down_proj:input", f"blocks.{n}.hook_resid_post",
                  f"blocks.{n}.hook_mlp_out", f"blocks.{n}.hook_attn_out", f"blocks.{n}.mlp.hook_post",
                  f"blocks.{n}.ln2.hook_normalized", f"blocks.{n}.hook_mlp_in"]
    return names


def _some_paths(modules: dict) -> list[str]:
    return [p for p in modules if p.startswith("layers.0.")][:3] or list(modules)[1:4]


def module_of(model: torch.nn.Module, hookpoint: Hookpoint) -> torch.nn.Module:
    return trunk(model).get_submodule(hookpoint.module_path)
