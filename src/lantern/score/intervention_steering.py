"""Steering for the intervention scorer: how strongly to push a direction so the next-token distribution moves
by a target KL divergence, and what the model writes while it is pushed.

The strength is calibrated per direction, not fixed: decoder directions differ in norm and in how much the
model cares about them, so the same scale would be invisible for one latent and wreck the text for another.
KL(clean ‖ steered) of the next-token distribution is averaged over every real position after the BOS of the
neutral prompts (the BOS is never steered, as in explain/steering.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from lantern.explain.steering import activation_hook, right_padded
from lantern.models.padding import padded

MAX_DOUBLINGS = 40
"""Scales tried on each side of the start before a target is declared out of reach (2^40 ≈ 10^12)."""


@dataclass(frozen=True)
class Calibration:
    target_kl: float
    scale: float
    """Norm of the added vector (the direction is unit length)."""
    achieved_kl: float
    evaluations: int
    reached: bool
    """False when no scale gave a KL within tolerance (a saturated or dead direction): the scale is then the
    one that came closest and the caller should report the target as failed."""


class KLProbe:
    """The neutral prompts' clean next-token log-probs, kept to measure any push against them."""

    def __init__(self, model: torch.nn.Module, module: torch.nn.Module, side: str, prompts: list[list[int]],
                 pad_id: int = 0):
        self.model, self.module, self.side = model, module, side
        param = next(model.parameters())
        self.ids, self.mask, self.steered = right_padded(prompts, pad_id, param.device)
        self.weights = self.steered.float()
        with torch.inference_mode():
            self.clean = self._logprobs()

    def _logprobs(self) -> torch.Tensor:
        logits = self.model(input_ids=self.ids, attention_mask=self.mask, use_cache=False).logits.float()
        return torch.log_softmax(logits, dim=-1)

    @torch.inference_mode()
    def kl(self, push: torch.Tensor) -> float:
        """Mean KL(clean ‖ steered) in nats over the steered positions, with `push` ([d]) added at each."""
        rows = push.to(self.ids.device, torch.float32)[None, None, :] * self.weights[..., None]
        with activation_hook(self.module, self.side, lambda acts: acts + rows.to(acts.dtype)):
            steered = self._logprobs()
        per_position = (self.clean.exp() * (self.clean - steered)).sum(-1)
        return float((per_position * self.weights).sum() / self.weights.sum())


def calibrate(kl_at: Callable[[float], float], targets: tuple[float, ...], tolerance: float = 0.05,
              max_steps: int = 30, start: float = 1.0) -> list[Calibration]:
    """For each target KL, the scale whose KL is within `tolerance` (relative) of it: bracket by doubling or
    halving from `start`, then bisect in log-space. Every evaluated scale is remembered and shared between
    targets, so calibrating three targets costs little more than one."""
    seen: dict[float, float] = {}

    def evaluate(scale: float) -> float:
        if scale not in seen:
            value = kl_at(scale)
            seen[scale] = value if math.isfinite(value) else math.inf
        return seen[scale]

    out = []
    for target in targets:
        before = len(seen)
        evaluate(start)
        for _ in range(MAX_DOUBLINGS):  # bracket: some scale below the target and some above
            below = [s for s, v in seen.items() if v < target]
            above = [s for s, v in seen.items() if v >= target]
            if below and above:
                break
            evaluate(max(seen) * 2 if not above else min(seen) / 2)
        best = min(seen, key=lambda s: abs(seen[s] - target))
        below = [s for s, v in seen.items() if v < target]
        above = [s for s, v in seen.items() if v >= target]
        if below and above:
            low, high = max(below), min(above)
            for _ in range(max_steps):
                if abs(seen[best] - target) <= tolerance * target:
                    break
                middle = math.sqrt(low * high)
                if evaluate(middle) < target:
                    low = middle
                else:
                    high = middle
                best = min(seen, key=lambda s: abs(seen[s] - target))
        out.append(Calibration(target_kl=target, scale=best, achieved_kl=seen[best],
                               evaluations=len(seen) - before,
                               reached=abs(seen[best] - target) <= tolerance * target))
    return out


@torch.inference_mode()
def generate_steered(model: torch.nn.Module, module: torch.nn.Module, side: str, prompts: list[list[int]],
                     pushes: torch.Tensor, max_new_tokens: int, pad_id: int = 0) -> list[list[list[int]]]:
    """Greedy continuations of every prompt under every row of `pushes` ([rows, d]; a zero row is the clean
    text): out[prompt][row] = new token ids. The row's vector is added at every position after the BOS,
    generated tokens included. All prompt × row sequences go through one `generate` call, left-padded (one
    pass over the weights per new token instead of one per prompt: on CPU each step is bound by reading the
    weights, not by the batch)."""
    param = next(model.parameters())
    rows = pushes.shape[0]
    sequences = [prompt for prompt in prompts for _ in range(rows)]
    ids, mask = padded(sequences, pad_id, "left")
    width = ids.shape[1]
    steered = mask.clone()
    steered[torch.arange(len(sequences)), width - torch.tensor([len(s) for s in sequences])] = 0  # the BOS
    vectors = pushes.to(param.device, torch.float32).repeat(len(prompts), 1)[:, None, :]
    prompt_weight = steered.to(param.device, torch.float32)[..., None]

    def add(acts: torch.Tensor) -> torch.Tensor:
        weight = prompt_weight if acts.shape[1] == width else 1.0
        return acts + (vectors * weight).to(acts.dtype)

    with activation_hook(module, side, add):
        out = model.generate(input_ids=ids.to(param.device), attention_mask=mask.to(param.device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id, top_p=None, top_k=None)
    new = out[:, width:].tolist()
    return [new[p * rows:(p + 1) * rows] for p in range(len(prompts))]
