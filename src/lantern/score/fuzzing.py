"""Fuzzing: the same activating windows shown twice, once with the truly activating tokens marked and
once with as many marks on tokens where the latent is zero; does the marking fit the explanation?"""
from __future__ import annotations

import numpy as np

from lantern.explain.format import activation_marks, marked_text
from lantern.llm.base import Request
from lantern.score.base import LatentTask
from lantern.score.verdicts import VerdictScorer

PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "In the text below some tokens are marked like <<this>>.\n"
    "Text: {text}\n"
    "Are the marked tokens the ones the description is about? Answer yes or no.\n"
    "Answer:"
)


def wrong_marks(activations: list[float], n_marks: int, rng: np.random.Generator) -> list[bool] | None:
    """`n_marks` marks on tokens where the latent is exactly zero, or None if the window has too few."""
    zeros = np.flatnonzero(np.asarray(activations) == 0)
    if len(zeros) < n_marks:
        return None
    chosen = set(rng.choice(zeros, size=n_marks, replace=False).tolist())
    return [i in chosen for i in range(len(activations))]


def items(examples: list[dict], mark_threshold: float, seed: int, split: str = "test") -> list[dict]:
    out = []
    for ex in examples:
        if ex["split"] != split or ex["kind"] != "activating":
            continue
        right = activation_marks(ex["activations"], mark_threshold)
        rng = np.random.default_rng([seed, ex["latent"], ex["start"]])
        wrong = wrong_marks(ex["activations"], sum(right), rng)
        out.append({"example": ex, "label": 1, "variant": "true-marks", "marks": right})
        if wrong is not None:
            out.append({"example": ex, "label": 0, "variant": "wrong-marks", "marks": wrong})
    return out


def request(tokenizer, explanation: str, item: dict) -> Request:
    text = marked_text(tokenizer, item["example"]["tokens"], item["marks"])
    return Request(prompt=PROMPT.format(explanation=explanation, text=text), max_tokens=1, top_logprobs=20, stop=())


class FuzzingScorer(VerdictScorer):
    name = "fuzzing"

    def items(self, task: LatentTask) -> list[dict]:
        return items(task.rows, self.context.mark_threshold, self.context.seed)

    def request(self, explanation: str, item: dict) -> Request:
        return request(self.context.tokenizer, explanation, item)

    def negative_source(self, item: dict) -> str:
        return item["variant"]  # the negatives are the latent's own windows with misplaced marks
