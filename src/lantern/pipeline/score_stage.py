"""Stage 4: every explanation scored by every configured scorer (score/registry.py). All scorers' requests for
all latents go through one queue; each scorer then reads its own answers. Writes scores.parquet (one row per
latent and scorer), examples.parquet (per example), scores_by_decile.parquet and scores_by_source.parquet (the
same figures per activation decile and per negative source), and usage/score.parquet (per call)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.io import write_parquet
from lantern.llm.base import LLMClient, Response
from lantern.models.loading import load_tokenizer
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXAMPLES, EXPLANATIONS, SCORES, SELECTION, records_file
from lantern.pipeline.usage import write_usage
from lantern.score import detection, fuzzing
from lantern.score.answers import yes_probability
from lantern.score.base import LatentResult, LatentTask, Plan, ScoreContext, Scorer, check_needs
from lantern.score.metrics import classification_metrics, group_rows
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
                      records: dict[str, dict[int, list[dict]]]) -> list[dict]:
    """Best-of-k: where a latent has several candidate explanations, keep the one whose detection balanced
    accuracy on the validation split is highest (ties: AUROC, then the earlier candidate). The validation
    windows and negatives are disjoint from the test split the reported scores use. Writes selection.parquet."""
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
    write_usage(cfg.path, "select", [{"coder": c, "latent": l, "task": "detection-validation"}
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
    write_parquet(cfg.path / SELECTION, selection)
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
                  description: str = "score") -> ScoreOutput:
    """Score every task with every scorer: plan all, answer all requests through ONE queue, evaluate each.
    (`lantern validate` reuses this with true, shuffled and random explanations.)"""
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
    grouped: dict[tuple[str, str], list] = {}
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
        out.by_decile += [{**key, **row} for row in deciles]
        out.by_source += [{**key, **row} for row in sources]
        grouped.setdefault((task.coder, scorer.name), []).append((resamples, result.outcomes))
    for (coder, name), entries in grouped.items():  # pooled over the coder's latents: latent is null
        deciles, sources = group_rows([o for _, outcomes in entries for o in outcomes], entries[0][0])
        key = {"coder": coder, "latent": None, "scorer": name}
        out.by_decile += [{**key, **row} for row in deciles]
        out.by_source += [{**key, **row} for row in sources]
    return out


def _uniform(rows: list[dict]) -> list[dict]:
    """Rows of different scorers carry different columns: give every row every column (null where absent)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: row.get(key) for key in columns} for row in rows]


def scorers_for(cfg: RunConfig) -> list[Scorer]:
    cfg.scoring.check()
    if not cfg.scorers:
        raise LanternError("no scorer configured: pass --scorers (e.g. detection,fuzzing)")
    return [get_scorer(name, cfg.scoring) for name in cfg.scorers]


def run_score(cfg: RunConfig, client: LLMClient, tokenizer=None, subject=None) -> dict:
    """`subject`: the loaded subject model, for scorers that need it in-process (loaded here otherwise)."""
    started = time.perf_counter()
    scorers = scorers_for(cfg)
    check_needs(scorers, client.capabilities, client.backend)
    explanations_path = cfg.path / EXPLANATIONS
    if not explanations_path.exists():
        raise LanternError(f"{explanations_path} is missing: run `lantern explain` first")
    if subject is None and any(s.needs().subject_model for s in scorers):
        from lantern.models.loading import load_subject_model

        subject = load_subject_model(cfg.model)
    tokenizer = tokenizer or (subject.tokenizer if subject is not None else load_tokenizer(cfg.model))
    explanations = [r for r in pq.read_table(explanations_path).to_pylist() if not r["failed"]]
    records = {}
    for coder in {r["coder"] for r in explanations}:
        records[coder] = examples_by_latent(records_file(cfg.path, coder))
    explanations = choose_candidates(cfg, client, tokenizer, explanations, records)
    tasks = [LatentTask(row["coder"], row["latent"], row["explanation"],
                        [r for r in records[row["coder"]][row["latent"]] if r["split"] == "test"])
             for row in explanations]
    context = ScoreContext(settings=cfg.scoring, tokenizer=tokenizer, capabilities=client.capabilities,
                           backend=client.backend, records=records, mark_threshold=cfg.explainer.mark_threshold,
                           seed=cfg.seed, subject=subject, config=cfg)
    out = score_latents(client, scorers, context, tasks)
    write_usage(cfg.path, "score", out.usage_tags, out.usage)
    write_parquet(cfg.path / EXAMPLES, _uniform(out.examples))
    write_parquet(cfg.path / SCORES, _uniform(out.scores))
    write_parquet(cfg.path / SCORES_BY_DECILE, _uniform(out.by_decile))
    write_parquet(cfg.path / SCORES_BY_SOURCE, _uniform(out.by_source))
    return {"seconds": time.perf_counter() - started, "scored": len(out.scores),
            "failed_answers": sum(r.get("read_as") == "failed" for r in out.examples)}
