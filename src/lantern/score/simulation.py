"""Simulation: from the explanation alone, the LLM predicts how strongly the latent fires on every token of
a window; the score is the correlation of the predictions with the true activations, over activating and
non-activating windows together.

A prediction is the expected value of a 0-9 digit under the LLM's log-probs, so it is graded, not a guess.
0-9 and not 0-10: many tokenizers (Gemma's among them) split "10" into two tokens, and a value must be one
token to be read from one position; a correlation does not care about the scale's top.

Two ways to read the digits:
- `prompt-logprobs`: one call per window. The prompt lists the window's tokens one per line, each followed by
  a slot holding a placeholder; the backend echoes the prompt's log-probs, and the digits' probabilities at
  each slot are read from the alternatives the model had there (it sees only the text before the slot).
- `per-token`: one call per token: the window with that token marked, answered with one digit whose
  probabilities come from the first generated token's log-probs.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from lantern.explain.format import marked_text
from lantern.llm.base import Request, Response
from lantern.score.answers import expected_digit
from lantern.score.base import LatentResult, LatentTask, Needs, Plan, ScoreContext, Scorer, example_row
from lantern.score.echo import covering, prompt_entries, spelling, token_spans
from lantern.score.metrics import Outcome, auroc, auroc_interval, correlations
from lantern.text import flatten_whitespace, token_strings

SCALE = range(10)
SLOT = "?"
"""The placeholder in each slot of the one-call prompt; what is read is what the model expected there."""

_INTRO = ("A feature of a language model fires on some tokens of a text and stays silent on the others. From a "
          "description of the feature we estimate how strongly it fires on each token, from 0 (silent) to 9 (as "
          "strongly as it ever does). Most tokens get 0.\n\n")
_EXAMPLE_FEATURE = "names of days of the week"
_EXAMPLE = [(" We", 0), (" meet", 0), (" on", 0), (" Monday", 9), (" and", 0), (" again", 0), (" on", 0),
            (" Friday", 8), (".", 0)]

WINDOW_PROMPT_HEAD = (_INTRO + f"Feature: {_EXAMPLE_FEATURE}\nToken\tactivation\n"
                      + "".join(f'"{token}"\t{value}\n' for token, value in _EXAMPLE) + "\n")
TOKEN_PROMPT_HEAD = (
    _INTRO.replace("on each token", "on one marked token") + f"Feature: {_EXAMPLE_FEATURE}\n"
    "Text: We meet on <<Monday>> and again on Friday.\nActivation on the marked token:\n9\n\n"
    f"Feature: {_EXAMPLE_FEATURE}\nText: We <<meet>> on Monday and again on Friday.\nActivation on the marked "
    "token:\n0\n\n")


def shown_token(piece: str) -> str:
    """A token as one line shows it: quoted, so leading spaces stay visible, newlines as a mark."""
    return '"' + flatten_whitespace(piece) + '"'


def window_prompt(tokenizer, explanation: str, tokens: list[int]) -> tuple[str, list[int]]:
    """(the one-call prompt, the character offset of each token's slot)."""
    prompt = WINDOW_PROMPT_HEAD + f"Feature: {explanation}\nToken\tactivation\n"
    slots = []
    for piece in token_strings(tokenizer, tokens):
        prompt += shown_token(piece) + "\t"
        slots.append(len(prompt))
        prompt += SLOT + "\n"
    return prompt, slots


def token_prompt(tokenizer, explanation: str, tokens: list[int], position: int) -> str:
    marks = [i == position for i in range(len(tokens))]
    return (TOKEN_PROMPT_HEAD + f"Feature: {explanation}\nText: {marked_text(tokenizer, tokens, marks)}\n"
            "Activation on the marked token:\n")


def read_slots(prompt: str, slots: list[int], response: Response) -> list[tuple[float, float] | None]:
    """(expected digit, digit probability mass) at each slot, None where it cannot be read: no echoed prompt,
    a slot token merged with its neighbours, or no digit among the slot's alternatives."""
    entries = prompt_entries(response)
    if entries is None:
        return [None] * len(slots)
    spans = token_spans(prompt, [entry[0] for entry in entries])
    out = []
    for offset in slots:
        index = covering(spans, offset)
        if index is None or spelling(entries[index][0]).strip() != SLOT:
            out.append(None)
        else:
            out.append(expected_digit(entries[index][2], SCALE))
    return out


class SimulationScorer(Scorer):
    name = "simulation"
    headline = "pearson"

    def needs(self) -> Needs:
        return Needs(logprobs=True, prompt_logprobs=self.settings.simulation_mode == "prompt-logprobs")

    def setup(self, context: ScoreContext) -> None:
        super().setup(context)
        mode = self.settings.simulation_mode
        self.mode = mode if mode != "auto" else ("prompt-logprobs" if context.capabilities.prompt_logprobs
                                                 else "per-token")

    def plan(self, task: LatentTask) -> Plan:
        tokenizer, top = self.context.tokenizer, self.settings.top_logprobs
        requests, state = [], []
        for row in task.rows:
            if self.mode == "prompt-logprobs":
                prompt, slots = window_prompt(tokenizer, task.explanation, row["tokens"])
                requests.append(Request(prompt=prompt, max_tokens=1, top_logprobs=top, prompt_logprobs=True, stop=()))
                state.append((row, prompt, slots))
            else:
                for position in range(len(row["tokens"])):
                    requests.append(Request(prompt=token_prompt(tokenizer, task.explanation, row["tokens"], position),
                                            max_tokens=1, top_logprobs=top, stop=()))
                state.append((row, None, None))
        return Plan(task, requests, state)

    def _read(self, prompt: str | None, slots: list[int] | None, row: dict,
              answers: Iterator[Response]) -> tuple[list[tuple[float, float] | None], list[Response]]:
        """Each token's (expected digit, digit mass) or None, and the calls behind this window."""
        if self.mode == "prompt-logprobs":
            response = next(answers)
            return read_slots(prompt, slots, response), [response]
        responses = [next(answers) for _ in row["tokens"]]
        return [expected_digit(r.first_token_logprobs, SCALE) if r.ok else None for r in responses], responses

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        answers = iter(responses)
        examples, outcomes, masses = [], [], []
        tokens_failed = 0
        for row, prompt, slots in plan.state:
            read, used = self._read(prompt, slots, row, answers)
            predicted = [None if r is None else r[0] for r in read]
            masses += [r[1] for r in read if r is not None]
            failed = any(p is None for p in predicted)
            tokens_failed += sum(p is None for p in predicted)
            label = int(row["kind"] == "activating")
            peak = None if failed else max(predicted)
            outcomes.append(Outcome(decile=row["decile"], source=row["source"], failed=failed, label=label, score=peak,
                                    true=tuple(float(a) for a in row["activations"]),
                                    predicted=None if failed else tuple(predicted)))
            examples.append(example_row(plan.task, self.name, row, used, variant=self.mode, label=label,
                                        prediction=None, value=peak, predicted=predicted,
                                        read_as="failed" if failed else self.mode))
        read = [o for o in outcomes if not o.failed]
        metrics = correlations([np.asarray(o.true) for o in read], [np.asarray(o.predicted) for o in read],
                               self.settings.bootstrap_resamples)
        labels = np.asarray([o.label for o in read])
        peaks = np.asarray([o.score for o in read], dtype=float)
        low, high = auroc_interval(labels, peaks, self.settings.bootstrap_resamples)
        metrics.update(mode=self.mode, n=len(read), n_failed=len(outcomes) - len(read),
                       n_pos=int((labels == 1).sum()), n_neg=int((labels == 0).sum()),
                       n_tokens=sum(len(o.true) for o in read), n_tokens_failed=tokens_failed,
                       auroc=auroc(labels, peaks) if len(read) else float("nan"), auroc_ci_low=low, auroc_ci_high=high,
                       mean_digit_mass=float(np.mean(masses)) if masses else float("nan"))
        return LatentResult(metrics, examples, outcomes)
