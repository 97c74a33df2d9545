"""Stage 4: detection and fuzzing of every explanation; per-latent metrics and per-example verdicts."""
from __future__ import annotations

import time

import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.io import write_parquet
from lantern.llm.base import LLMClient
from lantern.models.loading import load_tokenizer
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXAMPLES, EXPLANATIONS, SCORES, SELECTION, records_file
from lantern.pipeline.usage import write_usage
from lantern.score import detection, fuzzing
from lantern.score.answers import yes_probability
from lantern.score.metrics import classification_metrics

SCORERS = ("detection", "fuzzing")


def _items(scorer: str, examples: list[dict], cfg: RunConfig) -> list[dict]:
    """Scored items of the test split (validation windows only ever choose among candidates)."""
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


def run_score(cfg: RunConfig, client: LLMClient, tokenizer=None) -> dict:
    started = time.perf_counter()
    unknown = set(cfg.scorers) - set(SCORERS)
    if unknown:
        raise LanternError(f"unknown scorer(s) {sorted(unknown)}; available: {', '.join(SCORERS)}")
    explanations_path = cfg.path / EXPLANATIONS
    if not explanations_path.exists():
        raise LanternError(f"{explanations_path} is missing: run `lantern explain` first")
    tokenizer = tokenizer or load_tokenizer(cfg.model)
    explanations = [r for r in pq.read_table(explanations_path).to_pylist() if not r["failed"]]
    records = {}
    for coder in {r["coder"] for r in explanations}:
        records[coder] = examples_by_latent(records_file(cfg.path, coder))
    explanations = choose_candidates(cfg, client, tokenizer, explanations, records)
    jobs, requests = [], []
    for row in explanations:
        coder, latent = row["coder"], row["latent"]
        for scorer in cfg.scorers:
            for item in _items(scorer, records[coder][latent], cfg):
                jobs.append((coder, latent, scorer, item))
                requests.append(_request(scorer, tokenizer, row["explanation"], item))
    responses = complete_all(client, requests, "score")
    write_usage(cfg.path, "score", [{"coder": c, "latent": l, "task": s} for c, l, s, _ in jobs], responses)
    example_rows, grouped = [], {}
    for (coder, latent, scorer, item), response in zip(jobs, responses):
        p_yes, read_as = yes_probability(response)
        ex = item["example"]
        example_rows.append({
            "coder": coder, "latent": latent, "scorer": scorer, "start": ex["start"], "kind": ex["kind"],
            "source": ex["source"], "decile": ex["decile"], "variant": item["variant"], "label": item["label"],
            "p_yes": p_yes, "prediction": None if p_yes is None else int(p_yes >= 0.5), "read_as": read_as,
            "error": response.error, "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens, "seconds": response.seconds, "attempts": response.attempts,
            "cached": response.cached,
        })
        grouped.setdefault((coder, latent, scorer), []).append((item["label"], p_yes, response.prompt_tokens))
    score_rows = []
    for (coder, latent, scorer), entries in grouped.items():
        labels, probs, tokens = zip(*entries)
        score_rows.append({"coder": coder, "latent": latent, "scorer": scorer,
                           **classification_metrics(list(labels), list(probs)), "prompt_tokens": int(sum(tokens))})
    write_parquet(cfg.path / EXAMPLES, example_rows)
    write_parquet(cfg.path / SCORES, score_rows)
    return {"seconds": time.perf_counter() - started, "scored": len(score_rows),
            "failed_answers": sum(r["p_yes"] is None for r in example_rows)}
