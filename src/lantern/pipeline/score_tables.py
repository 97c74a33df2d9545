"""The score stage's tables: their file names, and their rows built from what each scorer returned for a latent.
Kept apart from the stage so a partition, the merge and `lantern validate` build the same rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lantern.io import write_parquet
from lantern.llm.base import Response
from lantern.pipeline.files import EXAMPLES, SCORES
from lantern.pipeline.usage import write_usage
from lantern.score.base import LatentResult, LatentTask, Plan, Scorer
from lantern.score.metrics import group_rows

SCORES_BY_DECILE = "scores_by_decile.parquet"
SCORES_BY_SOURCE = "scores_by_source.parquet"
STAGE_FILES = [EXAMPLES, SCORES, SCORES_BY_DECILE, SCORES_BY_SOURCE, "usage/score.parquet"]


@dataclass
class ScoreOutput:
    """Everything one scoring pass found, before it is written."""

    scores: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    by_decile: list[dict] = field(default_factory=list)
    by_source: list[dict] = field(default_factory=list)
    usage_tags: list[dict] = field(default_factory=list)
    usage: list[Response] = field(default_factory=list)

    def add(self, scorer: Scorer, plan: Plan, answers: list[Response], result: LatentResult) -> None:
        """One scorer's result for one latent: its calls, score row, examples and per-decile/per-source rows."""
        task = plan.task
        calls = list(answers) + result.usage
        self.usage_tags += [{"coder": task.coder, "latent": task.latent, "task": scorer.name}] * len(calls)
        self.usage += calls
        self.scores.append(_score_row(task, scorer, result, calls))
        self.examples += result.examples
        deciles, sources = group_rows(result.outcomes, scorer.settings.bootstrap_resamples)
        key = {"coder": task.coder, "latent": task.latent, "scorer": scorer.name}
        self.by_decile += [{**key, "interval_unit": "windows", **row} for row in deciles]
        self.by_source += [{**key, "interval_unit": "windows", **row} for row in sources]

    def write(self, folder: Path) -> None:
        """The stage's files (STAGE_FILES) into `folder`, a partition's or the run directory."""
        write_usage(folder, "score", self.usage_tags, self.usage)
        write_parquet(folder / EXAMPLES, uniform(self.examples))
        write_parquet(folder / SCORES, uniform(self.scores))
        write_parquet(folder / SCORES_BY_DECILE, uniform(self.by_decile))
        write_parquet(folder / SCORES_BY_SOURCE, uniform(self.by_source))


def _score_row(task: LatentTask, scorer: Scorer, result: LatentResult, calls: list[Response]) -> dict:
    """The per-latent row: the scorer's metrics, its headline as `metric`/`score`, and what it cost."""
    m = result.metrics
    return {"coder": task.coder, "latent": task.latent, "scorer": scorer.name, **m,
            "metric": scorer.headline, "score": m.get(scorer.headline),
            "score_ci_low": m.get(f"{scorer.headline}_ci_low"), "score_ci_high": m.get(f"{scorer.headline}_ci_high"),
            "prompt_tokens": int(sum(r.prompt_tokens for r in calls)),
            "completion_tokens": int(sum(r.completion_tokens for r in calls))}


def unexplained_rows(explanations: list[dict], scorers: list[Scorer]) -> list[dict]:
    """A score row (no score, n = 0, the reason in `note`) per scorer for each latent whose every explanation
    failed: the latent is accounted for, not silently missing from the table."""
    failed: dict[tuple[str, int], list[dict]] = {}
    for row in explanations:
        failed.setdefault((row["coder"], row["latent"]), []).append(row)
    return [{"coder": coder, "latent": latent, "scorer": scorer.name, "metric": scorer.headline,
             "score": float("nan"), "n": 0, "n_failed": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "note": "not scored: explanation failed (" + "; ".join(sorted({str(r.get("error")) for r in rows})) + ")"}
            for (coder, latent), rows in failed.items() if all(r["failed"] for r in rows) for scorer in scorers]


def uniform(rows: list[dict]) -> list[dict]:
    """Rows of different scorers carry different columns: give every row every column (null where absent)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: row.get(key) for key in columns} for row in rows]
