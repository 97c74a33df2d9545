"""Detection: given the explanation and an unmarked window, does the latent fire somewhere in it?

Positives are test windows from every activation decile; negatives are windows verified to be all zero.
One window per prompt, answered with one token, so P(yes) comes from log-probs where the backend has them.
"""
from __future__ import annotations

from lantern.explain.format import plain_text
from lantern.llm.base import Request
from lantern.score.base import LatentTask
from lantern.score.verdicts import VerdictScorer

PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "Decide whether the feature is active anywhere in the text below.\n"
    "Text: {text}\n"
    "Is the feature active in this text? Answer yes or no.\n"
    "Answer:"
)


def items(examples: list[dict], split: str = "test") -> list[dict]:
    """The scored items: every example of `split`, labelled 1 if it activates the latent."""
    return [{"example": ex, "label": int(ex["kind"] == "activating"), "variant": "plain"}
            for ex in examples if ex["split"] == split]


def request(tokenizer, explanation: str, item: dict) -> Request:
    text = plain_text(tokenizer, item["example"]["tokens"])
    return Request(prompt=PROMPT.format(explanation=explanation, text=text), max_tokens=1, top_logprobs=20, stop=())


class DetectionScorer(VerdictScorer):
    name = "detection"

    def items(self, task: LatentTask) -> list[dict]:
        return items(task.rows)

    def request(self, explanation: str, item: dict) -> Request:
        return request(self.context.tokenizer, explanation, item)
