"""Steering: add vectors to a module's activations and measure how next-token log-probs move.

The BOS position is never steered (many models keep an outsized, fixed activation there that later layers
rely on). Padding is on the right, so every real token keeps its position and padded rows equal unpadded ones.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from lantern.models.padding import padded


def _replace_first(value, new: torch.Tensor):
    """`value` (a tensor, or a tuple whose first item is one) with that tensor replaced by `new`."""
    return new if isinstance(value, torch.Tensor) else (new, *value[1:])


def _first(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value[0]


@contextmanager
def activation_hook(module: torch.nn.Module, side: str, fn):
    """Run `fn(activations) -> replacement or None` on the module's output (or first input) in each pass."""
    if side == "output":
        def on_output(mod, args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        handle = module.register_forward_hook(on_output)
    else:
        def on_input(mod, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = module.register_forward_pre_hook(on_input, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def right_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, the attention mask, and the mask of steered positions (real tokens after the BOS)."""
    ids, mask = padded(prompts, pad_id, "right")
    steered = mask.clone()
    steered[:, 0] = 0
    return ids.to(device), mask.to(device), steered.to(device)


def _mean_logprobs(model, ids, mask, steered) -> torch.Tensor:
    """[rows, vocab] log-probs of the next token, averaged over each row's steered positions."""
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), dim=-1)
    weights = steered.float()
    return (logprobs * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)


@torch.inference_mode()
def steering_deltas(model: torch.nn.Module, module: torch.nn.Module, side: str, prompts: list[list[int]],
                    pushes: torch.Tensor, pad_id: int = 0, max_logits: int = 1 << 25) -> torch.Tensor:
    """[n, vocab]: for each of the [n, d] vectors, the mean next-token log-prob change when it is added to
    the module's activations at every token after the BOS.

    Each vector is run on every prompt; vectors are batched so that one pass holds at most `max_logits`
    logits."""
    param = next(model.parameters())
    ids, mask, steered = right_padded(prompts, pad_id, param.device)
    base = _mean_logprobs(model, ids, mask, steered).mean(0)
    n_prompts, vocab = len(prompts), base.shape[-1]
    per_pass = max(1, max_logits // (n_prompts * ids.shape[1] * vocab))
    deltas = []
    for lo in range(0, len(pushes), per_pass):
        chunk = pushes[lo:lo + per_pass].to(param.device, torch.float32)
        rows = chunk.repeat_interleave(n_prompts, dim=0)[:, None, :] * steered.repeat(len(chunk), 1)[..., None]
        with activation_hook(module, side, lambda acts: acts + rows.to(acts.dtype)):
            steered_lp = _mean_logprobs(model, ids.repeat(len(chunk), 1), mask.repeat(len(chunk), 1),
                                        steered.repeat(len(chunk), 1))
        deltas.append((steered_lp.view(len(chunk), n_prompts, vocab).mean(1) - base).cpu())
    return torch.cat(deltas)
