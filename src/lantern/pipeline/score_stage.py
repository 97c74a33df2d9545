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
from lantern.pipeline.files import EXAMPLES, EXPLANATIONS, SCORES, records_file
from lantern.pipeline.usage import write_usage
from lantern.score import detection, fuzzing
from lantern.score.answers import yes_probability
from lantern.score.metrics import classification_metrics

SCORERS = ("detection", "fuzzing")


def _items(scorer: str, examples: list[dict], cfg: RunConfig) -> list[dict]:
    if scorer == "detection":
        return detection.items(examples)
    return fuzzing.items(examples, cfg.explainer.mark_threshold, cfg.seed)


def _request(scorer: str, tokenizer, explanation: str, item: dict):
    return (detection if scorer == "detection" else fuzzing).request(tokenizer, explanation, item)


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
    jobs, requests = [], []
    for row in explanations:
        coder, latent = row["coder"], row["latent"]
        if coder not in records:
            records[coder] = examples_by_latent(records_file(cfg.path, coder))
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
