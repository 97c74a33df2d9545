"""Scorers whose every item is one yes/no question (detection, fuzzing): P(yes) per item, classification
metrics per latent. Items and prompts come from the scorer's own module.

Two ways to ask (`ScorerConfig.examples_per_prompt`): one item per prompt answered by one token, whose P(yes)
comes from log-probs where the backend has them; or several items per prompt, shuffled into groups, answered by
one generated list of 0/1 verdicts (fewer, longer calls; a verdict is 0 or 1, never a probability)."""
from __future__ import annotations

import numpy as np

from lantern.llm.base import Request, Response
from lantern.score.answers import read_yes_no, verdict_list
from lantern.score.base import LatentResult, LatentTask, Plan, Scorer, example_row
from lantern.score.metrics import Outcome, classification_metrics


LIST_CHAT_FORMAT = ("Reply with the list only, in square brackets, one digit per text in text order, e.g. "
                    "[1, 0, 0, 1]. No other words.")


def list_verdicts_request(template: str, explanation: str, texts: list[str], per_prompt: int) -> Request:
    """One prompt of numbered texts whose answer is a list (the template ends in `[`). Room for `per_prompt`
    entries of up to 3 tokens (`, 1`) and the brackets; generation stops at `]` or a newline. The chat form is
    the same task with the answer's format spelled out (a chat answer opens its own `[`, which is accepted)."""
    numbered = "".join(f"Text {number}: {text}\n" for number, text in enumerate(texts, 1))
    prompt = template.format(explanation=explanation, count=len(texts), texts=numbered)
    task = prompt[: prompt.rindex("Answer:")].rstrip()
    return Request(prompt=prompt, max_tokens=3 * per_prompt + 2, stop=("]", "\n"),
                   messages=(("user", f"{task}\n{LIST_CHAT_FORMAT}"),))


class VerdictScorer(Scorer):
    headline = "balanced_accuracy"

    def items(self, task: LatentTask) -> list[dict]:
        raise NotImplementedError

    def request(self, explanation: str, item: dict) -> Request:
        raise NotImplementedError

    def list_request(self, explanation: str, items: list[dict]) -> Request:
        raise NotImplementedError

    def negative_source(self, item: dict) -> str:
        """How a label-0 item is grouped in the per-source table."""
        return item["example"]["source"]

    def groups(self, task: LatentTask, items: list[dict]) -> list[list[dict]]:
        """Items shuffled (seeded per latent, so positives and negatives mix) into prompts of
        `examples_per_prompt`; the last one may hold fewer."""
        k = self.settings.examples_per_prompt
        order = np.random.default_rng([self.context.seed, task.latent, k]).permutation(len(items))
        shuffled = [items[i] for i in order]
        return [shuffled[lo:lo + k] for lo in range(0, len(shuffled), k)]

    def plan(self, task: LatentTask) -> Plan:
        items = self.items(task)
        if self.settings.examples_per_prompt == 1:
            return Plan(task, [self.request(task.explanation, item) for item in items], items)
        groups = self.groups(task, items)
        return Plan(task, [self.list_request(task.explanation, group) for group in groups], groups)

    def _answers(self, plan: Plan, responses: list[Response]):
        """(item, response, P(yes) or None, how it was read, extra example columns) per item."""
        if self.settings.examples_per_prompt == 1:
            for item, response in zip(plan.state, responses):
                answer = read_yes_no(response)
                yield (item, response, answer.p_yes, answer.read_as, {"answer_mass": answer.mass})
            return
        for index, (group, response) in enumerate(zip(plan.state, responses)):
            verdicts, problem = verdict_list(response, len(group))
            for position, (item, verdict) in enumerate(zip(group, verdicts)):
                extra = {"prompt_index": index, "position": position + 1, "answer": response.text,
                         "answer_problem": problem}
                yield (item, response, None if verdict is None else float(verdict),
                       "failed" if verdict is None else "list", extra)

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        examples, outcomes, labels, probabilities = [], [], [], []
        for item, response, p_yes, read_as, extra in self._answers(plan, responses):
            prediction = None if p_yes is None else int(p_yes >= 0.5)
            ex = item["example"]
            row = example_row(plan.task, self.name, ex, [response], variant=item["variant"], label=item["label"],
                              p_yes=p_yes, prediction=prediction, read_as=read_as, value=p_yes,
                              correct=None if prediction is None else prediction == item["label"], **extra)
            if extra.get("position", 1) > 1:  # a shared call is counted once, on its prompt's first item
                row.update(prompt_tokens=0, completion_tokens=0, seconds=0.0, attempts=0)
            examples.append(row)
            outcomes.append(Outcome(decile=ex["decile"], failed=p_yes is None, label=item["label"], score=p_yes,
                                    source=self.negative_source(item) if item["label"] == 0 else ex["source"],
                                    correct=None if prediction is None else prediction == item["label"]))
            labels.append(item["label"])
            probabilities.append(p_yes)
        metrics = classification_metrics(labels, probabilities, n_resamples=self.settings.bootstrap_resamples)
        masses = [row["answer_mass"] for row in examples if row.get("answer_mass") is not None]
        metrics["answer_mass"] = float(np.mean(masses)) if masses else float("nan")
        metrics["n_low_mass"] = sum(row["read_as"] == "low-mass" for row in examples)
        metrics["examples_per_prompt"] = self.settings.examples_per_prompt
        if self.settings.examples_per_prompt > 1:  # shown beside the headline in the summary
            metrics["mode"] = f"{self.settings.examples_per_prompt} per prompt, list answers"
        return LatentResult(metrics, examples, outcomes)
