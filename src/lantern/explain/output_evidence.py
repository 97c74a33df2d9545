"""What a latent writes, read from the subject model: logit lens and steering over its decoder direction.

- Logit lens: the decoder direction put through the model's final norm (its per-dimension scale; its division
  by the RMS only rescales all logits alike) and the unembedding, as if it were the whole residual stream.
  Directions written at an MLP's output pass that block's post-MLP norm first where the model has one
  (Gemma 2/3), as the real MLP output does.
- Steering: the latent is switched on at its own strength: its decoder direction times an activation it
  really reaches (the stage uses the largest activation in its explain windows) is added at the site where
  the coder writes (write_site), on every token after the BOS of a few fixed neutral sentences. The tokens
  whose mean next-token log-prob rises most over the unsteered pass are what the latent promotes in context.
  (Scaling to the mean token norm at the site instead is far too strong for models with massive activations:
  on the embedded Gemma 3 270M that norm is ~3,800 at layers.6, mostly a few dimensions, and steering with it
  raised unrelated tokens by 20+ nats; the latents' own top activations there are ~100-500.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from lantern.coders.base import SparseCoder
from lantern.errors import LanternError
from lantern.explain.base import OutputEvidence, TokenScore
from lantern.explain.steering import steering_deltas
from lantern.models.hookpoints import module_of, resolve_hookpoint, trunk
from lantern.text import token_strings

NEUTRAL_PROMPTS = (
    "The weather was mild and the streets were quiet.",
    "She put the book back on the shelf and",
    "After lunch we walked down to the",
    "It is a simple idea, and most people",
    "The report was finished on time, so",
    "He looked out of the window at the",
    "There are many ways to",
    "In the end, the answer was",
)
"""Plain sentences of our own, with no topic that would favour any latent; read with one BOS first."""


@dataclass
class WriteSite:
    """Where a coder's decoder directions live in the model: a module's output (or input) activations."""

    module: torch.nn.Module
    side: str  # "output" or "input"
    name: str
    post_norm: torch.nn.Module | None = None
    """A norm applied to this module's output before it joins the residual stream (Gemma's post-MLP norm)."""


def write_site(model: torch.nn.Module, coder: SparseCoder) -> WriteSite:
    """The coder's output site. An SAE (or the random control) reconstructs what it reads, so it writes where
    it reads; a transcoder reads the MLP's input (`layers.N.mlp:input`) and predicts its output; neurons are
    read at the down projection's input and write through it, i.e. into the MLP output. In each case that
    is the hookpoint module's output, except for an SAE trained on some module's input."""
    if coder.write_hookpoint is not None:
        hp = resolve_hookpoint(model, coder.write_hookpoint)
        return WriteSite(module=module_of(model, hp), side=hp.read, name=f"{hp.module_path} ({hp.read})")
    hp = resolve_hookpoint(model, coder.hookpoint)
    module = module_of(model, hp)
    side = "input" if hp.read == "input" and coder.kind in ("sae", "random") else "output"
    post_norm = None
    mlp = re.fullmatch(r"layers\.(\d+)\.mlp(\.down_proj)?", hp.module_path)
    if side == "output" and mlp:
        post_norm = getattr(trunk(model).layers[int(mlp.group(1))], "post_feedforward_layernorm", None)
    return WriteSite(module=module, side=side, name=f"{hp.module_path} ({side})", post_norm=post_norm)


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    body = trunk(model)
    for name in ("norm", "final_layernorm", "final_layer_norm", "ln_f"):
        module = getattr(body, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise LanternError(f"cannot find the final norm of {type(model).__name__} (looked for norm, ln_f, "
                       f"final_layer_norm); the logit lens needs it")


def banned_tokens(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    """[vocab] bool: special and reserved tokens, and rows of the unembedding past the tokenizer's vocabulary,
    which would otherwise crowd the lists with `<unused…>` entries."""
    vocab = model.get_output_embeddings().weight.shape[0]
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[min(len(tokenizer), vocab):] = True
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    banned[[i for i in special if i < vocab]] = True
    return banned


def top_tokens(tokenizer, scores: torch.Tensor, banned: torch.Tensor, k: int) -> list[list[TokenScore]]:
    """The k best-scoring readable tokens of each row of [n, vocab] scores."""
    scores = scores.float().cpu().masked_fill(banned, float("-inf"))
    values, ids = scores.topk(min(4 * k, scores.shape[-1]), dim=-1)
    out = []
    for row_values, row_ids in zip(values.tolist(), ids.tolist()):
        kept = []
        for value, token_id in zip(row_values, row_ids):
            text = token_strings(tokenizer, [token_id])[0]
            if text and value != float("-inf"):
                kept.append(TokenScore(token=text, score=round(float(value), 4)))
            if len(kept) == k:
                break
        out.append(kept)
    return out


def to_residual(site: WriteSite, directions: torch.Tensor) -> torch.Tensor:
    return site.post_norm(directions) if site.post_norm is not None else directions


@torch.inference_mode()
def logit_lens(model: torch.nn.Module, directions: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """[n, vocab] logits of each residual-space direction through the final norm and the unembedding."""
    param = next(model.parameters())
    norm, unembed = final_norm(model), model.get_output_embeddings()
    out = [unembed(norm(directions[lo:lo + chunk].to(param.device, param.dtype))).float().cpu()
           for lo in range(0, directions.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, unembed.weight.shape[0])


def latent_directions(model: torch.nn.Module, coder: SparseCoder, latents: list[int]) -> torch.Tensor:
    directions = coder.decoder_directions()
    if directions is None:
        raise LanternError(f"coder {coder.name} ({coder.kind}) has no decoder directions, so nothing says what its "
                           f"latents write; output-centric explainers need them")
    width = trunk(model).get_input_embeddings().embedding_dim
    if directions.shape[-1] != width:
        raise LanternError(f"coder {coder.name} writes vectors of width {directions.shape[-1]}, but the model's "
                           f"residual stream has width {width}; its output cannot be read through the model")
    return directions[torch.as_tensor(latents, dtype=torch.long)].float()


def output_evidence(model: torch.nn.Module, tokenizer, coder: SparseCoder, strengths: dict[int, float],
                    top_k: int = 10) -> dict[int, OutputEvidence]:
    """Logit-lens and steering evidence for each latent of `strengths`, which maps it to the activation it is
    steered with."""
    if tokenizer.bos_token_id is None:
        raise LanternError("the tokenizer has no BOS token; steering prompts start with one")
    latents = list(strengths)
    directions = latent_directions(model, coder, latents)
    site = write_site(model, coder)
    banned = banned_tokens(model, tokenizer)
    with torch.inference_mode():
        lens = top_tokens(tokenizer, logit_lens(model, to_residual(site, directions)), banned, top_k)
    prompts = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False).input_ids for p in NEUTRAL_PROMPTS]
    pushes = directions * torch.tensor([float(strengths[latent]) for latent in latents])[:, None]
    deltas = steering_deltas(model, site.module, site.side, prompts, pushes, pad_id=tokenizer.pad_token_id or 0)
    steer = top_tokens(tokenizer, deltas, banned, top_k)
    norms = pushes.norm(dim=-1).tolist()
    return {latent: OutputEvidence(logit_lens=lens[i], steering=steer[i], site=site.name,
                                   steering_norm=round(norms[i], 4)) for i, latent in enumerate(latents)}
