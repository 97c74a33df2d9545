"""Stage 4: every explanation scored by every configured scorer (score/registry.py). All scorers' requests for
all latents go through one queue; each scorer then reads its own answers. Writes scores.parquet (one row per
latent and scorer), examples.parquet (per example), scores_by_decile.parquet and scores_by_source.parquet (the
same figures per activation decile and per negative source), and usage/score.parquet (per call).

Here: the stage's entry point, one scoring pass and one partition of it. Its parts: best_of_k.py (the `select`
pass choosing among candidate explanations), latent_groups.py (partitions), score_tables.py (the rows and files),
pooled_rows.py (rows pooled over latents) and score_merge.py (partitions into the run directory). Tests replace
`get_scorer`, `complete_all` and `score_partition` on this module, so those are looked up here."""
from __future__ import annotations

import time

import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors import partitions, resources
from lantern.executors.base import Executor
from lantern.executors.local import LocalExecutor
from lantern.llm.base import LLMClient
from lantern.pipeline.best_of_k import has_candidates, select_candidates
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXPLANATIONS, records_file
from lantern.pipeline.latent_groups import first_explanations, latent_groups
from lantern.pipeline.pooled_rows import pooled_rows, pooling_resamples
from lantern.pipeline.score_merge import merge_scores
from lantern.pipeline.score_tables import ScoreOutput
from lantern.progress import progress_bar
from lantern.score.base import LatentTask, Plan, ScoreContext, Scorer, check_needs
from lantern.score.registry import get_scorer


def scorers_for(cfg: RunConfig) -> list[Scorer]:
    """The configured scorers, built fresh (each partition sets its own up), their settings checked first."""
    cfg.scoring.check()
    if not cfg.scorers:
        raise LanternError("no scorer configured: pass --scorers (e.g. detection,fuzzing)")
    return [get_scorer(name, cfg.scoring) for name in cfg.scorers]


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
    plans = _plans(scorers, tasks, description)
    requests = [r for _, plan in plans for r in plan.requests]
    responses = complete_all(client, requests, description) if requests else []
    out = ScoreOutput()
    position = 0
    for scorer, plan in plans:
        answers = responses[position:position + len(plan.requests)]
        position += len(plan.requests)
        out.add(scorer, plan, answers, scorer.evaluate(plan, answers))
    if pooled:
        by_decile, by_source = pooled_rows(out.by_decile, out.by_source, pooling_resamples(scorers))
        out.by_decile += by_decile
        out.by_source += by_source
    return out


def _plans(scorers: list[Scorer], tasks: list[LatentTask], description: str) -> list[tuple[Scorer, Plan]]:
    """Every task's plan from every scorer, in task order. A scorer that runs the subject model while planning
    (intervention steers each latent: 20-30 s per latent on CPU) gets a progress bar."""
    if not any(scorer.needs().subject_model for scorer in scorers):
        return [(scorer, scorer.plan(task)) for task in tasks for scorer in scorers]
    plans = []
    with progress_bar() as bar:
        progress = bar.add_task(f"{description}: plan (steering)", total=len(tasks))
        for task in tasks:
            plans += [(scorer, scorer.plan(task)) for scorer in scorers]
            bar.advance(progress)
    return plans


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
        out.write(folder)
        return {"scored": len(out.scores), "failed_answers": sum(r.get("read_as") == "failed" for r in out.examples)}

    return partitions.write_partition(cfg.path, "score", index, write)


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
    groups = latent_groups(explanations, executor)
    with resources.provided(cfg, subject=subject, client=client, tokenizer=tokenizer):
        if has_candidates(groups):
            groups = select_candidates(cfg, executor, groups, coders)
        first = first_explanations([r for group in groups for r in group])
        partitions.begin(cfg.path, "score")
        done = executor.map(score_partition, [(cfg, i, group, coders, first) for i, group in enumerate(groups)], "score")
    merged = merge_scores(cfg.path, len(groups), every_row, scorers)
    return {"seconds": time.perf_counter() - started, "scored": sum(d["scored"] for d in done),
            "failed_answers": sum(d["failed_answers"] for d in done), "partitions": merged}
