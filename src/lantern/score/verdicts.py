"""Scorers whose every item is one yes/no question (detection, fuzzing): P(yes) per item, classification
metrics per latent. Items and prompts come from the scorer's own module."""
from __future__ import annotations

from lantern.llm.base import Request, Response
from lantern.score.answers import yes_probability
from lantern.score.base import LatentResult, LatentTask, Plan, Scorer, example_row
from lantern.score.metrics import Outcome, classification_metrics


class VerdictScorer(Scorer):
    headline = "balanced_accuracy"

    def items(self, task: LatentTask) -> list[dict]:
        raise NotImplementedError

    def request(self, explanation: str, item: dict) -> Request:
        raise NotImplementedError

    def negative_source(self, item: dict) -> str:
        """How a label-0 item is grouped in the per-source table."""
        return item["example"]["source"]

    def plan(self, task: LatentTask) -> Plan:
        items = self.items(task)
        return Plan(task, [self.request(task.explanation, item) for item in items], items)

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        examples, outcomes, labels, probabilities = [], [], [], []
        for item, response in zip(plan.state, responses):
            p_yes, read_as = yes_probability(response)
            prediction = None if p_yes is None else int(p_yes >= 0.5)
            ex = item["example"]
            examples.append(example_row(plan.task, self.name, ex, [response], variant=item["variant"],
                                        label=item["label"], p_yes=p_yes, prediction=prediction, read_as=read_as,
                                        value=p_yes, correct=None if prediction is None else prediction == item["label"]))
            outcomes.append(Outcome(decile=ex["decile"], failed=p_yes is None, label=item["label"], score=p_yes,
                                    source=self.negative_source(item) if item["label"] == 0 else ex["source"],
                                    correct=None if prediction is None else prediction == item["label"]))
            labels.append(item["label"])
            probabilities.append(p_yes)
        metrics = classification_metrics(labels, probabilities, n_resamples=self.settings.bootstrap_resamples)
        return LatentResult(metrics, examples, outcomes)
