"""Intruder: a few activating windows of the latent (marks on its activating tokens) and one activating window
of another latent of the same coder, in random order; the LLM names the odd one out with one digit, whose
probabilities come from log-probs. If the latent's windows share something visible, the intruder stands out:
accuracy against chance 1 / (windows + 1).

Trials cut the latent's activating test windows, ordered by decile (strongest first), into disjoint groups, so
each trial shows windows of neighbouring deciles and each window is in one trial only: trials are independent
units for the binomial test and the interval. Each trial's intruder is a different window, taken from the same
decile of another latent where one exists, and checked against the run's cache to be silent for the scored
latent (an intruder on which the scored latent fires is not odd at all). The explanation is not shown unless
`intruder_explanation` is set."""
from __future__ import annotations

import numpy as np

from lantern.errors import LanternError
from lantern.explain.format import activation_marks, marked_text
from lantern.llm.base import Request, Response
from lantern.score.answers import digit_choice
from lantern.score.base import LatentResult, LatentTask, Plan, ScoreContext, Scorer, example_row
from lantern.score.metrics import Outcome, accuracy_vs_chance

_HEAD = ("Below are {count} passages. In each, some tokens are marked like <<this>>. In all but one passage the "
         "marks come from the same feature of a language model; in the remaining passage they come from a different "
         "feature.\n")
_EXPLAINED = "The shared feature has this description: {explanation}\n"
_TAIL = "Which passage is the odd one out? Answer with its number.\nThe odd one out is passage ["


_CHAT_TASK = ("You find the odd one out among passages. In each passage some tokens are marked like <<this>>. In all "
              "but one passage the marks come from the same feature of a language model; in the remaining passage "
              "they come from a different feature. Answer with the number of the odd passage only.")
_CHAT_QUESTION = "Which passage is the odd one out? Answer with its number only."


def _activating_test(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["split"] == "test" and r["kind"] == "activating"]


class IntruderScorer(Scorer):
    name = "intruder"
    headline = "accuracy"

    @property
    def uses_explanation(self) -> bool:  # type: ignore[override]
        return self.settings.intruder_explanation

    def setup(self, context: ScoreContext) -> None:
        super().setup(context)
        self.pools = {coder: {latent: _activating_test(rows) for latent, rows in latents.items()}
                      for coder, latents in context.records.items()}
        self._caches: dict = {}
        self._firing: dict = {}

    def _fires_on(self, coder: str, latent: int, window: dict) -> bool:
        """Whether `latent` is non-zero anywhere in `window`, read from the run's cache."""
        if coder not in self._caches:
            from lantern.cache.reader import LatentCache
            from lantern.pipeline.files import CACHE

            if self.context.config is None:
                raise LanternError("the intruder scorer checks each intruder against the run's cache: it needs the "
                                   "run's config in its context")
            self._caches[coder] = LatentCache(self.context.config.path / CACHE, coder)
        if (coder, latent) not in self._firing:
            self._firing = {(coder, latent): self._caches[coder].activations(latent)[0]}  # one latent at a time
        tokens = self._firing[(coder, latent)]
        lo = np.searchsorted(tokens, window["start"])
        return lo < len(tokens) and tokens[lo] < window["start"] + len(window["tokens"])

    def _trials(self, windows: list[dict]) -> list[list[dict]]:
        k = self.settings.intruder_windows
        ordered = sorted(windows, key=lambda r: (-r["decile"], r["start"]))
        n_trials = len(ordered) // k
        # the windows left over are dropped from across the range, not all from the weak end
        kept = [ordered[int(i)] for i in np.round(np.linspace(0, len(ordered) - 1, n_trials * k))] if n_trials else []
        trials = [kept[s:s + k] for s in range(0, len(kept), k)]
        if self.settings.intruder_trials and len(trials) > self.settings.intruder_trials:
            keep = sorted({int(round(x)) for x in np.linspace(0, len(trials) - 1, self.settings.intruder_trials)})
            trials = [trials[i] for i in keep]
        return trials

    def _intruder(self, task: LatentTask, trial: list[dict], decile: int, rng: np.random.Generator,
                  used: set[tuple[int, int]]) -> dict | None:
        """A window of another latent, silent for this one and not yet used for it (None: there is none)."""
        pool = [r for latent, rows in self.pools.get(task.coder, {}).items() if latent != task.latent for r in rows
                if (r["latent"], r["start"]) not in used]
        shown = {tuple(r["tokens"]) for r in trial}
        pool = [r for r in pool if tuple(r["tokens"]) not in shown]
        same = [r for r in pool if r["decile"] == decile]
        for choices in (same, pool):
            for i in rng.permutation(len(choices)):
                if not self._fires_on(task.coder, task.latent, choices[i]):
                    return choices[i]
        return None

    def _passages(self, passages: list[dict]) -> str:
        tokenizer, threshold = self.context.tokenizer, self.context.mark_threshold
        return "".join(f"[{number}] {marked_text(tokenizer, row['tokens'], activation_marks(row['activations'], threshold))}\n"
                       for number, row in enumerate(passages, 1))

    def _prompt(self, task: LatentTask, passages: list[dict]) -> str:
        text = _HEAD.format(count=len(passages))
        if self.uses_explanation:
            text += _EXPLAINED.format(explanation=task.explanation)
        return text + self._passages(passages) + _TAIL

    def _messages(self, task: LatentTask, passages: list[dict]) -> tuple[tuple[str, str], ...]:
        head = _EXPLAINED.format(explanation=task.explanation) + "\n" if self.uses_explanation else ""
        return (("system", _CHAT_TASK), ("user", head + self._passages(passages) + "\n" + _CHAT_QUESTION))

    def plan(self, task: LatentTask) -> Plan:
        requests, state = [], []
        used: set[tuple[int, int]] = set()
        for t, trial in enumerate(self._trials(_activating_test(task.rows))):
            decile = int(np.median([r["decile"] for r in trial]))
            rng = np.random.default_rng([self.context.seed, task.latent, t])
            intruder = self._intruder(task, trial, decile, rng, used)
            if intruder is None:
                break  # no silent window of another latent left: fewer trials (the latent's n says how many)
            used.add((intruder["latent"], intruder["start"]))
            position = int(rng.integers(len(trial) + 1))
            passages = trial[:position] + [intruder] + trial[position:]
            requests.append(Request(prompt=self._prompt(task, passages), max_tokens=1,
                                    top_logprobs=self.settings.top_logprobs, stop=(),
                                    messages=self._messages(task, passages)))
            state.append((decile, intruder, position + 1, len(passages)))
        return Plan(task, requests, state)

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        examples, outcomes = [], []
        for (decile, intruder, answer, count), response in zip(plan.state, responses):
            probabilities, read_as = digit_choice(response, range(1, count + 1))
            failed = probabilities is None
            chosen = None if failed else max(probabilities, key=probabilities.get)
            p_correct = None if failed else probabilities.get(answer, 0.0)
            correct = None if failed else chosen == answer
            outcomes.append(Outcome(decile=decile, source="intruder", failed=failed, score=p_correct, correct=correct))
            examples.append(example_row(plan.task, self.name, None, [response], start=intruder["start"],
                                        kind="intruder-trial", source=f"latent {intruder['latent']}", decile=decile,
                                        variant=f"intruder at {answer} of {count}", label=answer, prediction=chosen,
                                        value=p_correct, correct=correct, read_as=read_as))
        verdicts = np.asarray([o.correct for o in outcomes if not o.failed], dtype=bool)
        chance = 1 / (self.settings.intruder_windows + 1)
        scores = [o.score for o in outcomes if not o.failed]
        note = "" if plan.state else (
            f"no trial: fewer than {self.settings.intruder_windows} activating test windows, or no window of another "
            f"latent of this coder that is silent for this one (record more latents)")
        metrics = {**accuracy_vs_chance(verdicts, chance, self.settings.bootstrap_resamples), "n": len(verdicts),
                   "note": note,
                   "n_failed": len(outcomes) - len(verdicts),
                   "mean_p_correct": float(np.mean(scores)) if scores else float("nan"),
                   "with_explanation": self.uses_explanation}
        return LatentResult(metrics, examples, outcomes)
