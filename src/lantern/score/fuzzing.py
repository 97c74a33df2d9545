"""Fuzzing: the same activating windows shown twice, once with the truly activating tokens marked and
once with marks of the same span structure on tokens where the latent is zero; does the marking fit the
explanation? One marked
window per prompt with a one-token answer, or with `examples_per_prompt` > 1 several answered by one list."""
from __future__ import annotations

import numpy as np

from lantern.explain.format import activation_marks, marked_text
from lantern.llm.base import Request
from lantern.score.base import LatentTask
from lantern.score.judge_prompts import JUDGE_FORM, fuzzing_messages, word_list
from lantern.score.verdicts import VerdictScorer, list_verdicts_request

PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "In the text below some tokens are marked like <<this>>.\n"
    "Text: {text}\n"
    "Are the marked tokens the ones the description is about? Answer yes or no.\n"
    "Answer:"
)

LIST_PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "In each of the {count} numbered texts below some tokens are marked like <<this>>.\n"
    "{texts}"
    "Reply with {count} digits in text order, separated by commas: 1 where the marked tokens are the ones the "
    "description is about, 0 where they are not.\n"
    "Answer: ["
)


def spans(marks: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of consecutive marked tokens."""
    out, start = [], None
    for i, marked in enumerate([*marks, False]):
        if marked and start is None:
            start = i
        elif not marked and start is not None:
            out.append((start, i - start))
            start = None
    return out


LAYOUT_TRIES = 20
"""Random layouts tried for a window's wrong marks before it counts as having no room (placing spans one by one
can block a later span where another layout fits)."""


def wrong_marks(activations: list[float], right: list[bool], rng: np.random.Generator) -> list[bool] | None:
    """Marks with the same span structure as `right` (as many runs, of the same lengths, none touching another)
    on tokens where the latent is exactly zero; None if no layout was found in `LAYOUT_TRIES` tries.

    Why the structure: marks on neighbouring tokens are shown as one span, so k scattered wrong marks against
    1-2 true spans would be a cue a judge could answer from without reading the explanation."""
    silent = np.asarray(activations) == 0
    n = len(activations)
    lengths = sorted((length for _, length in spans(right)), reverse=True)  # longest first: they need most room
    for _ in range(LAYOUT_TRIES):
        marks = [False] * n
        for length in lengths:
            starts = [s for s in range(n - length + 1)
                      if silent[s:s + length].all() and not any(marks[max(s - 1, 0):s + length + 1])]
            if not starts:
                break
            start = int(rng.choice(starts))
            marks[start:start + length] = [True] * length
        else:
            return marks
    return None


def items(examples: list[dict], mark_threshold: float, seed: int, split: str = "test") -> list[dict]:
    """A pair per activating window: its true marks and wrong marks of the same span structure. A window with no
    room for the wrong copy (a dense latent fires almost everywhere in it) is left out, so every latent is
    scored on pairs and a judge that reads only the marks' shape stays at chance."""
    out = []
    for ex in examples:
        if ex["split"] != split or ex["kind"] != "activating":
            continue
        right = activation_marks(ex["activations"], mark_threshold)
        rng = np.random.default_rng([seed, ex["latent"], ex["start"]])
        wrong = wrong_marks(ex["activations"], right, rng)
        if wrong is None:
            continue  # no room for a wrong copy: shown alone, its true marks' shape could again be a cue
        out.append({"example": ex, "label": 1, "variant": "true-marks", "marks": right})
        out.append({"example": ex, "label": 0, "variant": "wrong-marks", "marks": wrong})
    return out


def text(tokenizer, item: dict) -> str:
    return marked_text(tokenizer, item["example"]["tokens"], item["marks"])


def request(tokenizer, explanation: str, item: dict, form: str = JUDGE_FORM) -> Request:
    shown = text(tokenizer, item)
    words = word_list(tokenizer, item["example"]["tokens"], item["marks"])
    return Request(prompt=PROMPT.format(explanation=explanation, text=shown), max_tokens=1, top_logprobs=20, stop=(),
                   messages=fuzzing_messages(form, explanation, shown, words))


def list_request(tokenizer, explanation: str, items: list[dict], per_prompt: int) -> Request:
    return list_verdicts_request(LIST_PROMPT, explanation, [text(tokenizer, item) for item in items], per_prompt)


class FuzzingScorer(VerdictScorer):
    name = "fuzzing"

    def items(self, task: LatentTask) -> list[dict]:
        return items(task.rows, self.context.mark_threshold, self.context.seed)

    def request(self, explanation: str, item: dict) -> Request:
        return request(self.context.tokenizer, explanation, item)

    def list_request(self, explanation: str, items: list[dict]) -> Request:
        return list_request(self.context.tokenizer, explanation, items, self.settings.examples_per_prompt)

    def negative_source(self, item: dict) -> str:
        return item["variant"]  # the negatives are the latent's own windows with misplaced marks
