"""Surprisal: a good explanation makes the latent's windows less surprising to a base model. Each window's
text is scored twice, after the explanation and after a generic one ("A passage of text."); the drop in
mean per-token loss should be larger on activating windows than on windows where the latent is silent
(AUROC of the drop). Needs prompt log-probs: the loss is read from the echoed prompt."""
from __future__ import annotations

import numpy as np

from lantern.llm.base import Request, Response
from lantern.score.base import LatentResult, LatentTask, Needs, Plan, Scorer, example_row
from lantern.score.echo import prompt_entries, token_spans
from lantern.score.metrics import Outcome, auroc, auroc_interval
from lantern.text import token_strings


def window_text(tokenizer, tokens: list[int]) -> str:
    """The window as plain text (newlines kept: the base model reads it as text, not as a prompt line)."""
    return "".join(token_strings(tokenizer, tokens)).strip()


def prompt_for(prefix: str, text: str) -> tuple[str, int]:
    """(the prompt, the character offset where the window's text starts)."""
    head = prefix.strip() + "\n"
    return head + text, len(head)


def text_loss(prompt: str, text_start: int, response: Response) -> tuple[float, int] | None:
    """(mean negative log-prob of the tokens from `text_start` on, their count), or None when the echoed
    prompt is missing or the text's tokens cannot be found."""
    entries = prompt_entries(response)
    if entries is None:
        return None
    spans = token_spans(prompt, [entry[0] for entry in entries])
    first = next((i for i, span in enumerate(spans) if span is not None and span[0] >= text_start), None)
    if first is None:
        return None
    logprobs = [entry[1] for entry in entries[first:]]
    if any(lp is None for lp in logprobs):
        return None
    return -float(np.mean(logprobs)), len(logprobs)


class SurprisalScorer(Scorer):
    name = "surprisal"
    headline = "auroc"

    def needs(self) -> Needs:
        return Needs(prompt_logprobs=True)

    def plan(self, task: LatentTask) -> Plan:
        requests, state = [], []
        for row in task.rows:
            text = window_text(self.context.tokenizer, row["tokens"])
            pair = [prompt_for(task.explanation, text), prompt_for(self.settings.surprisal_prefix, text)]
            requests += [Request(prompt=prompt, max_tokens=1, prompt_logprobs=True, stop=()) for prompt, _ in pair]
            state.append((row, pair))
        return Plan(task, requests, state)

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        examples, outcomes = [], []
        for k, (row, pair) in enumerate(plan.state):
            used = responses[2 * k: 2 * k + 2]
            explained, generic = (text_loss(prompt, start, r) for (prompt, start), r in zip(pair, used))
            failed = explained is None or generic is None
            drop = None if failed else generic[0] - explained[0]
            label = int(row["kind"] == "activating")
            outcomes.append(Outcome(decile=row["decile"], source=row["source"], failed=failed, label=label, score=drop))
            examples.append(example_row(plan.task, self.name, row, used, variant="loss-drop", label=label,
                                        prediction=None, value=drop, read_as="failed" if failed else "prompt-logprobs",
                                        loss_explained=None if failed else explained[0],
                                        loss_generic=None if failed else generic[0]))
        read = [o for o in outcomes if not o.failed]
        labels = np.asarray([o.label for o in read])
        drops = np.asarray([o.score for o in read], dtype=float)
        low, high = auroc_interval(labels, drops, self.settings.bootstrap_resamples)
        nan = float("nan")
        metrics = {"auroc": auroc(labels, drops) if len(read) else nan, "auroc_ci_low": low, "auroc_ci_high": high,
                   "n": len(read), "n_failed": len(outcomes) - len(read), "n_pos": int((labels == 1).sum()),
                   "n_neg": int((labels == 0).sum()),
                   "mean_drop_activating": float(drops[labels == 1].mean()) if (labels == 1).any() else nan,
                   "mean_drop_negative": float(drops[labels == 0].mean()) if (labels == 0).any() else nan}
        return LatentResult(metrics, examples, outcomes)
