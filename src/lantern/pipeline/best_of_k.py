"""Best-of-k: where the explainer wrote several candidate explanations for a latent, keep the one that detects
the latent best on the validation split. It runs as the score stage's `select` pass, over every latent before any
is scored, so scorers that borrow another latent's explanation see the chosen one."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors import partitions, resources
from lantern.executors.base import Executor
from lantern.io import write_parquet
from lantern.llm.base import LLMClient
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import SELECTION, records_file
from lantern.pipeline.usage import write_usage
from lantern.score import detection
from lantern.score.answers import yes_probability
from lantern.score.metrics import classification_metrics

CHOSEN = "chosen.parquet"
"""A selection partition's chosen explanation rows (read by the stage, not kept in the run directory)."""


def has_candidates(groups: list[list[dict]]) -> bool:
    """Whether any latent of the partition groups has more than one explanation to choose from."""
    return any(len(group) > len({(r["coder"], r["latent"]) for r in group}) for group in groups)


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
        metrics = {id(r): _validation_metrics(outcomes.get(id(r))) for r in rows}
        best = max(rows, key=lambda r: _rank(metrics[id(r)], r))
        chosen.append(best)
        for r in rows:
            selection.append({"coder": coder, "latent": latent, "candidate": r.get("candidate", 0),
                              "explanation": r["explanation"], "chosen": r is best,
                              "validation_balanced_accuracy": metrics[id(r)]["balanced_accuracy"],
                              "validation_auroc": metrics[id(r)]["auroc"], "validation_n": metrics[id(r)]["n"]})
    write_parquet(out / SELECTION, selection)
    return chosen


def _validation_metrics(outcomes: list[tuple] | None) -> dict:
    """One candidate's detection metrics from its (label, P(yes)) pairs; none read: nan, n = 0."""
    if not outcomes:
        return {"balanced_accuracy": float("nan"), "auroc": float("nan"), "n": 0}
    return classification_metrics(*map(list, zip(*outcomes)))


def _rank(metrics: dict, row: dict) -> tuple:
    """Higher is better: balanced accuracy, then AUROC (nan/None rank last), then the earlier candidate."""
    def score(v):
        return -1.0 if v is None or v != v else v

    return score(metrics["balanced_accuracy"]), score(metrics["auroc"]), -row.get("candidate", 0)


def select_partition(cfg: RunConfig, index: int, explanations: list[dict], coders: list[str]) -> dict:
    """Best-of-k for some latents (a Ray task, or a call in this process) into a `select` partition folder."""
    def write(folder):
        records = {coder: examples_by_latent(records_file(cfg.path, coder)) for coder in coders}
        chosen = choose_candidates(cfg, resources.llm_client(cfg), resources.tokenizer(cfg), explanations, records,
                                   out=folder)
        write_parquet(folder / CHOSEN, chosen)
        return {"chosen": len(chosen)}

    return partitions.write_partition(cfg.path, "select", index, write)


def select_candidates(cfg: RunConfig, executor: Executor, groups: list[list[dict]],
                      coders: list[str]) -> list[list[dict]]:
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
