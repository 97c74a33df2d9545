"""Embedding: the explanation as a query, the windows as documents; a good explanation is closer (cosine) to
the windows where the latent fires than to those where it is silent (AUROC of the similarity).

No LLM call: the embedder runs in this process (the subject model's hidden states by default, see
embedders.py); its tokens are reported as the scorer's prompt tokens."""
from __future__ import annotations

import time

import numpy as np

from lantern.llm.base import Response
from lantern.score.base import LatentResult, LatentTask, Needs, Plan, ScoreContext, Scorer, example_row
from lantern.score.embedders import Embedder, make_embedder
from lantern.score.metrics import Outcome, auroc, auroc_interval
from lantern.score.surprisal import window_text


class EmbeddingScorer(Scorer):
    name = "embedding"
    headline = "auroc"

    def __init__(self, settings=None, embedder: Embedder | None = None):
        super().__init__(settings)
        self.embedder = embedder

    def needs(self) -> Needs:
        return Needs(subject_model=self.embedder is None and self.settings.embedder == "subject")

    def setup(self, context: ScoreContext) -> None:
        super().setup(context)
        if self.embedder is None:
            self.embedder = make_embedder(self.settings.embedder, context.subject, self.settings.embedding_layer)

    def plan(self, task: LatentTask) -> Plan:
        return Plan(task, [], [row for row in task.rows])

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        rows = plan.state
        started = time.perf_counter()
        texts = [plan.task.explanation] + [window_text(self.context.tokenizer, row["tokens"]) for row in rows]
        vectors, n_tokens = self.embedder.embed(texts)
        call = Response(text="", prompt_tokens=n_tokens, completion_tokens=0, seconds=time.perf_counter() - started)
        similarity = vectors[1:] @ vectors[0]
        labels = np.asarray([int(row["kind"] == "activating") for row in rows])
        outcomes, examples = [], []
        for row, label, value in zip(rows, labels, similarity):
            outcomes.append(Outcome(decile=row["decile"], source=row["source"], label=int(label), score=float(value)))
            examples.append(example_row(plan.task, self.name, row, [], variant="cosine", label=int(label),
                                        prediction=None, value=float(value), read_as="embedding"))
        low, high = auroc_interval(labels, similarity, self.settings.bootstrap_resamples)
        nan = float("nan")
        metrics = {"auroc": auroc(labels, similarity) if len(rows) else nan, "auroc_ci_low": low,
                   "auroc_ci_high": high, "n": len(rows), "n_failed": 0, "n_pos": int((labels == 1).sum()),
                   "n_neg": int((labels == 0).sum()), "embedder": self.embedder.name,
                   "mean_similarity_activating": float(similarity[labels == 1].mean()) if (labels == 1).any() else nan,
                   "mean_similarity_negative": float(similarity[labels == 0].mean()) if (labels == 0).any() else nan}
        return LatentResult(metrics, examples, outcomes, usage=[call])
