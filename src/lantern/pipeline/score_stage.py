"""Stage 4: every explanation scored by every configured scorer (score/registry.py). All scorers' requests for
all latents go through one queue; each scorer then reads its own answers. Writes scores.parquet (one row per
latent and scorer), examples.parquet (per example), scores_by_decile.parquet and scores_by_source.parquet (the
same figures per activation decile and per negative source), and usage/score.parquet (per call)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors import partitions, resources
from lantern.executors.base import Executor, split_ranges
from lantern.executors.local import LocalExecutor
from lantern.io import write_parquet
from lantern.llm.base import LLMClient, Response
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXAMPLES, EXPLANATIONS, SCORES, SELECTION, records_file
from lantern.pipeline.usage import write_usage
from lantern.score import detection, fuzzing
from lantern.score.answers import yes_probability
from lantern.score.base import LatentResult, LatentTask, Plan, ScoreContext, Scorer, check_needs
from lantern.score.metrics import classification_metrics, group_rows, pool_latent_rows
from lantern.score.registry import get_scorer

SCORES_BY_DECILE = "scores_by_decile.parquet"
SCORES_BY_SOURCE = "scores_by_source.parquet"


def _items(scorer: str, examples: list[dict], cfg: RunConfig) -> list[dict]:
    """Detection / fuzzing items of the test split (kept for benchmarks/bench_prompt_tokens.py)."""
    if scorer == "detection":
        return detection.items(examples)
    return fuzzing.items(examples, cfg.explainer.mark_threshold, cfg.seed)


def _request(scorer: str, tokenizer, explanation: str, item: dict):
    return (detection if scorer == "detection" else fuzzing).request(tokenizer, explanation, item)


def choose_candidates(cfg: RunConfig, client: LLMClient, tokenizer, explanations: list[dict],
                      records: dict[str, dict[int, list[dict]]], out: Path | None = None) -> list[dict]:
    """Best-of-k: where a latent has several candidate explanations, keep the one whose detection balanced
    accuracy on the validation split is highest (ties: AUROC, then the earlier candidate). The validation
    windows and negatives are disjoint from the test split the reported scores use. Writes selection.parquet
    and usage/select.parquet into `out` (default: the run directory)."""
    out = cfg.path if out is None else out
    by_latent: dict[tuple[str, int], list[dict]] = {}
    for row in explanations:
        by_latent.setdefault((row["coder"], row["latent"]), []).append(row)
    if all(len(rows) == 1 for rows in by_latent.values()):
        return explanations
    if not cfg.records.n_validation_per_decile:
        raise LanternError("choosing among several candidate explanations needs validation windows: rebuild the "
                           "records with n_validation_per_decile >= 1 (`lantern run --candidates K` sets it)")
    jobs, requests = [], []
    for (coder, latent), rows in by_latent.items():
        if len(rows) == 1:
            continue
        for row in rows:
            for item in detection.items(records[coder][latent], split="validation"):
                jobs.append((coder, latent, row, item))
                requests.append(detection.request(tokenizer, row["explanation"], item))
    responses = complete_all(client, requests, "select")
    write_usage(out, "select", [{"coder": c, "latent": l, "task": "detection-validation"}
                                     for c, l, _, _ in jobs], responses)
    outcomes: dict[int, list] = {}
    for (_, _, row, item), response in zip(jobs, responses):
        outcomes.setdefault(id(row), []).append((item["label"], yes_probability(response)[0]))
    selection, chosen = [], []
    for (coder, latent), rows in by_latent.items():
        if len(rows) == 1:
            chosen.append(rows[0])
            continue
        metrics = {id(r): classification_metrics(*map(list, zip(*outcomes.get(id(r), [])))) if outcomes.get(id(r))
                   else {"balanced_accuracy": float("nan"), "auroc": float("nan"), "n": 0} for r in rows}

        def rank(r):
            m = metrics[id(r)]
            score = lambda v: -1.0 if v is None or v != v else v  # noqa: E731 - nan/None rank last
            return (score(m["balanced_accuracy"]), score(m["auroc"]), -r.get("candidate", 0))

        best = max(rows, key=rank)
        chosen.append(best)
        for r in rows:
            selection.append({"coder": coder, "latent": latent, "candidate": r.get("candidate", 0),
                              "explanation": r["explanation"], "chosen": r is best,
                              "validation_balanced_accuracy": metrics[id(r)]["balanced_accuracy"],
                              "validation_auroc": metrics[id(r)]["auroc"], "validation_n": metrics[id(r)]["n"]})
    write_parquet(out / SELECTION, selection)
    return chosen


@dataclass
class ScoreOutput:
    """Everything one scoring pass found, before it is written."""

    scores: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    by_decile: list[dict] = field(default_factory=list)
    by_source: list[dict] = field(default_factory=list)
    usage_tags: list[dict] = field(default_factory=list)
    usage: list[Response] = field(default_factory=list)


def _score_row(task: LatentTask, scorer: Scorer, result: LatentResult, calls: list[Response]) -> dict:
    """The per-latent row: the scorer's metrics, its headline as `metric`/`score`, and what it cost."""
    m = result.metrics
    return {"coder": task.coder, "latent": task.latent, "scorer": scorer.name, **m,
            "metric": scorer.headline, "score": m.get(scorer.headline),
            "score_ci_low": m.get(f"{scorer.headline}_ci_low"), "score_ci_high": m.get(f"{scorer.headline}_ci_high"),
            "prompt_tokens": int(sum(r.prompt_tokens for r in calls)),
            "completion_tokens": int(sum(r.completion_tokens for r in calls))}


def score_latents(client: LLMClient, scorers: list[Scorer], context: ScoreContext, tasks: list[LatentTask],
                  description: str = "score", pooled: bool = True) -> ScoreOutput:
    """Score every task with every scorer: plan all, answer all requests through ONE queue, evaluate each.
    (`lantern validate` reuses this with true, shuffled and random explanations.) `pooled`: add the rows
    pooled over each coder's latents (a partition leaves them to the merge, which sees every latent)."""
    check_needs(scorers, client.capabilities, client.backend)
    if not context.explanations:
        context.explanations = {(task.coder, task.latent): task.explanation for task in tasks}
    for scorer in scorers:
        scorer.setup(context)
    plans: list[tuple[Scorer, Plan]] = [(scorer, scorer.plan(task)) for task in tasks for scorer in scorers]
    requests = [r for _, plan in plans for r in plan.requests]
    responses = complete_all(client, requests, description) if requests else []
    out = ScoreOutput()
    position = 0
    for scorer, plan in plans:
        answers = responses[position:position + len(plan.requests)]
        position += len(plan.requests)
        result = scorer.evaluate(plan, answers)
        task = plan.task
        tag = {"coder": task.coder, "latent": task.latent, "task": scorer.name}
        out.usage_tags += [tag] * (len(answers) + len(result.usage))
        out.usage += list(answers) + result.usage
        out.scores.append(_score_row(task, scorer, result, list(answers) + result.usage))
        out.examples += result.examples
        resamples = scorer.settings.bootstrap_resamples
        deciles, sources = group_rows(result.outcomes, resamples)
        key = {"coder": task.coder, "latent": task.latent, "scorer": scorer.name}
        out.by_decile += [{**key, "interval_unit": "windows", **row} for row in deciles]
        out.by_source += [{**key, "interval_unit": "windows", **row} for row in sources]
    if pooled:
        by_decile, by_source = pooled_rows(out.by_decile, out.by_source, _resamples(scorers))
        out.by_decile += by_decile
        out.by_source += by_source
    return out


def pooled_rows(by_decile: list[dict], by_source: list[dict], resamples: int) -> tuple[list[dict], list[dict]]:
    """Per-decile and per-source rows pooled over each coder's latents (latent is null), per scorer, made from
    the per-latent rows (`pool_latent_rows`: means over latents, intervals from resampling latents), in the order
    the (coder, scorer) pairs first appear."""
    pooled = []
    for rows, key in ((by_decile, "decile"), (by_source, "source")):
        grouped: dict[tuple, list[dict]] = {}
        for row in rows:
            if row.get("latent") is not None:
                grouped.setdefault((row["coder"], row["scorer"], row[key]), []).append(row)
        pooled.append([{"coder": coder, "latent": None, "scorer": scorer, key: group,
                        **pool_latent_rows(members, resamples)}
                       for (coder, scorer, group), members in sorted(
                           grouped.items(), key=lambda item: (_first_seen(rows, item[0][:2]), item[0][2]))])
    return pooled[0], pooled[1]


def _first_seen(rows: list[dict], pair: tuple[str, str]) -> int:
    return next(i for i, r in enumerate(rows) if (r["coder"], r["scorer"]) == pair)


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


def _resamples(scorers: list[Scorer]) -> int:
    return max((scorer.settings.bootstrap_resamples for scorer in scorers), default=1000)


def _uniform(rows: list[dict]) -> list[dict]:
    """Rows of different scorers carry different columns: give every row every column (null where absent)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: row.get(key) for key in columns} for row in rows]


def scorers_for(cfg: RunConfig) -> list[Scorer]:
    cfg.scoring.check()
    if not cfg.scorers:
        raise LanternError("no scorer configured: pass --scorers (e.g. detection,fuzzing)")
    return [get_scorer(name, cfg.scoring) for name in cfg.scorers]


STAGE_FILES = [EXAMPLES, SCORES, SCORES_BY_DECILE, SCORES_BY_SOURCE, "usage/score.parquet"]


CHOSEN = "chosen.parquet"
"""A selection partition's chosen explanation rows (read by the stage, not kept in the run directory)."""


def select_partition(cfg: RunConfig, index: int, explanations: list[dict], coders: list[str]) -> dict:
    """Best-of-k for some latents (a Ray task, or a call in this process) into a `select` partition folder."""
    def write(folder):
        records = {coder: examples_by_latent(records_file(cfg.path, coder)) for coder in coders}
        chosen = choose_candidates(cfg, resources.llm_client(cfg), resources.tokenizer(cfg), explanations, records,
                                   out=folder)
        write_parquet(folder / CHOSEN, chosen)
        return {"chosen": len(chosen)}

    return partitions.write_partition(cfg.path, "select", index, write)


def _select(cfg: RunConfig, executor: Executor, groups: list[list[dict]], coders: list[str]) -> list[list[dict]]:
    """Choose every latent's candidate before any is scored, so the scoring partitions see the chosen
    explanations of all latents (the shuffled-explanation baseline borrows another latent's chosen one, not its
    first candidate). Returns the groups with one explanation per latent."""
    partitions.begin(cfg.path, "select")
    executor.map(select_partition, [(cfg, i, group, coders) for i, group in enumerate(groups)], "select")
    folders = partitions.finished(cfg.path, "select", len(groups))
    chosen = [pq.read_table(f / CHOSEN).to_pylist() for f in folders]
    partitions.merge(cfg.path, "select", len(groups), [SELECTION, "usage/select.parquet"])
    partitions.end(cfg.path, "select")
    return chosen


def _first_explanations(explanations: list[dict]) -> dict[tuple[str, int], str]:
    """Each latent's explanation (the chosen one, after best-of-k), over the whole stage and not only a
    partition's latents, so a scorer that borrows another latent's explanation (the intervention's shuffled
    baseline) chooses the same one whatever the partitioning."""
    out: dict[tuple[str, int], str] = {}
    for row in explanations:
        out.setdefault((row["coder"], row["latent"]), row["explanation"])
    return out


def score_partition(cfg: RunConfig, index: int, explanations: list[dict], coders: list[str],
                    every_explanation: dict[tuple[str, int], str]) -> dict:
    """Score the explanations of some latents (a Ray task, or a call in this process) into a partition folder.
    `coders`: every coder the stage scores, whose records the context holds (the intruder borrows windows)."""
    def write(folder):
        scorers = scorers_for(cfg)
        client = resources.llm_client(cfg)
        check_needs(scorers, client.capabilities, client.backend)
        subject = resources.subject_model(cfg) if any(s.needs().subject_model for s in scorers) else None
        tokenizer = resources.tokenizer(cfg)
        records = {coder: examples_by_latent(records_file(cfg.path, coder)) for coder in coders}
        # one explanation per latent: best-of-k chose among candidates before the stage's scoring partitions
        tasks = [LatentTask(row["coder"], row["latent"], row["explanation"],
                            [r for r in records[row["coder"]][row["latent"]] if r["split"] == "test"])
                 for row in explanations]
        context = ScoreContext(settings=cfg.scoring, tokenizer=tokenizer, capabilities=client.capabilities,
                               backend=client.backend, records=records, mark_threshold=cfg.explainer.mark_threshold,
                               seed=cfg.seed, subject=subject, config=cfg,
                               explanations=every_explanation)
        out = score_latents(client, scorers, context, tasks, pooled=False)
        write_usage(folder, "score", out.usage_tags, out.usage)
        write_parquet(folder / EXAMPLES, _uniform(out.examples))
        write_parquet(folder / SCORES, _uniform(out.scores))
        write_parquet(folder / SCORES_BY_DECILE, _uniform(out.by_decile))
        write_parquet(folder / SCORES_BY_SOURCE, _uniform(out.by_source))
        return {"scored": len(out.scores), "failed_answers": sum(r.get("read_as") == "failed" for r in out.examples)}

    return partitions.write_partition(cfg.path, "score", index, write)


def _add_pooled(path: Path, pooled: list[dict]) -> None:
    """Append the pooled rows to a merged per-latent table, as one pass over every latent would have."""
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    write_parquet(path, _uniform(rows + pooled))


def run_score(cfg: RunConfig, client: LLMClient | None = None, tokenizer=None, subject=None,
              executor: Executor | None = None) -> dict:
    """`client`, `tokenizer`, `subject`: already loaded here, used by partitions that run in this process (a Ray
    worker builds its own from the config); the subject model is loaded only for scorers that need it."""
    started = time.perf_counter()
    scorers = scorers_for(cfg)
    if client is not None:
        check_needs(scorers, client.capabilities, client.backend)
    explanations_path = cfg.path / EXPLANATIONS
    if not explanations_path.exists():
        raise LanternError(f"{explanations_path} is missing: run `lantern explain` first")
    executor = executor or LocalExecutor()
    every_row = pq.read_table(explanations_path).to_pylist()
    explanations = [r for r in every_row if not r["failed"]]
    coders = sorted({r["coder"] for r in explanations})
    # partitions hold whole latents (all candidates of one latent stay together)
    latents = list(dict.fromkeys((r["coder"], r["latent"]) for r in explanations))
    groups = []
    for a, b in split_ranges(len(latents), executor.partitions(len(latents))):
        mine = set(latents[a:b])
        groups.append([r for r in explanations if (r["coder"], r["latent"]) in mine])
    with resources.provided(cfg, subject=subject, client=client, tokenizer=tokenizer):
        if any(len(group) > len({(r["coder"], r["latent"]) for r in group}) for group in groups):
            groups = _select(cfg, executor, groups, coders)
        first = _first_explanations([r for group in groups for r in group])
        partitions.begin(cfg.path, "score")
        done = executor.map(score_partition, [(cfg, i, group, coders, first) for i, group in enumerate(groups)], "score")
    merged = partitions.merge(cfg.path, "score", len(groups), STAGE_FILES)
    partitions.end(cfg.path, "score")
    _add_pooled(cfg.path / SCORES, unexplained_rows(every_row, scorers))
    by_decile, by_source = pooled_rows(*(pq.read_table(cfg.path / name).to_pylist() if (cfg.path / name).exists()
                                         else [] for name in (SCORES_BY_DECILE, SCORES_BY_SOURCE)),
                                       _resamples(scorers))
    _add_pooled(cfg.path / SCORES_BY_DECILE, by_decile)
    _add_pooled(cfg.path / SCORES_BY_SOURCE, by_source)
    return {"seconds": time.perf_counter() - started, "scored": sum(d["scored"] for d in done),
            "failed_answers": sum(d["failed_answers"] for d in done), "partitions": merged}
