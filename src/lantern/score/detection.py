"""Detection: given the explanation and an unmarked window, does the latent fire somewhere in it?

Positives are test windows from every activation decile; negatives are windows verified to be all zero.
One window per prompt, answered with one token, so P(yes) comes from log-probs where the backend has them; or,
with `examples_per_prompt` > 1, several numbered windows per prompt answered by one list of 0/1 verdicts.
"""
from __future__ import annotations

from lantern.explain.format import plain_text
from lantern.llm.base import Request
from lantern.score.base import LatentTask
from lantern.score.judge_prompts import JUDGE_FORM, detection_messages, word_list
from lantern.score.verdicts import VerdictScorer, list_verdicts_request

PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "Decide whether the feature is active anywhere in the text below.\n"
    "Text: {text}\n"
    "Is the feature active in this text? Answer yes or no.\n"
    "Answer:"
)

LIST_PROMPT = (
    "A feature inside a language model has this description: {explanation}\n"
    "Below are {count} numbered texts. For each one, decide whether the feature is active anywhere in it.\n"
    "{texts}"
    "Reply with {count} digits in text order, separated by commas: 1 where the feature is active, 0 where it "
    "is not.\n"
    "Answer: ["
)


def items(examples: list[dict], split: str = "test") -> list[dict]:
    """The scored items: every example of `split`, labelled 1 if it activates the latent."""
    return [{"example": ex, "label": int(ex["kind"] == "activating"), "variant": "plain"}
            for ex in examples if ex["split"] == split]


def text(tokenizer, item: dict) -> str:
    return plain_text(tokenizer, item["example"]["tokens"])


def request(tokenizer, explanation: str, item: dict, form: str = JUDGE_FORM) -> Request:
    shown = text(tokenizer, item)
    messages = detection_messages(form, explanation, shown, word_list(tokenizer, item["example"]["tokens"]))
    return Request(prompt=PROMPT.format(explanation=explanation, text=shown), max_tokens=1, top_logprobs=20, stop=(),
                   messages=messages)


def list_request(tokenizer, explanation: str, items: list[dict], per_prompt: int) -> Request:
    """Several items in one prompt; `per_prompt` (not len(items)) sizes the answer so every prompt of a run
    shares its sampling settings (a backend batches those together)."""
    return list_verdicts_request(LIST_PROMPT, explanation, [text(tokenizer, item) for item in items], per_prompt)


class DetectionScorer(VerdictScorer):
    name = "detection"

    def items(self, task: LatentTask) -> list[dict]:
        return items(task.rows)

    def request(self, explanation: str, item: dict) -> Request:
        return request(self.context.tokenizer, explanation, item)

    def list_request(self, explanation: str, items: list[dict]) -> Request:
        return list_request(self.context.tokenizer, explanation, items, self.settings.examples_per_prompt)
