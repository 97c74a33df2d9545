"""The summary a run prints and saves: per coder and scorer, mean scores over latents with intervals."""
from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
from rich import box
from rich.console import Console
from rich.table import Table

from lantern.config import RunConfig
from lantern.intervals import t_interval
from lantern.io import write_json, write_parquet
from lantern.pipeline.files import EXPLANATIONS, SCORES, SUMMARY, USAGE_PER_LATENT
from lantern.pipeline.usage import usage_per_latent


def summarise(cfg: RunConfig, stage_seconds: dict[str, float]) -> dict:
    scores = pq.read_table(cfg.path / SCORES).to_pylist() if (cfg.path / SCORES).exists() else []
    explanations = pq.read_table(cfg.path / EXPLANATIONS).to_pylist() if (cfg.path / EXPLANATIONS).exists() else []
    rows = []
    for coder in dict.fromkeys(r["coder"] for r in explanations):
        explained = [r for r in explanations if r["coder"] == coder]
        for scorer in cfg.scorers:
            listed = [r for r in scores if r["coder"] == coder and r["scorer"] == scorer]
            mine = [r for r in listed if not str(r.get("note") or "").startswith("not scored")]
            ba, ba_ci = t_interval([r.get("balanced_accuracy") for r in mine])
            auroc, auroc_ci = t_interval([r.get("auroc") for r in mine])
            calibrated, calibrated_ci = t_interval([r.get("balanced_accuracy_calibrated") for r in mine])
            score, score_ci = t_interval([r.get("score") for r in mine])
            rows.append({"coder": coder, "scorer": scorer, "latents": len(mine), "not_scored": len(listed) - len(mine),
                         "explanations_failed": sum(r["failed"] for r in explained),
                         "balanced_accuracy": ba, "balanced_accuracy_ci95": ba_ci, "auroc": auroc,
                         "auroc_ci95": auroc_ci, "balanced_accuracy_calibrated": calibrated,
                         "balanced_accuracy_calibrated_ci95": calibrated_ci, "metric": mine[0].get("metric") if mine else None,
                         "score": score, "score_ci95": score_ci, "mode": mine[0].get("mode") if mine else None,
                         "examples": sum(r["n"] for r in mine),
                         "examples_per_latent": sum(r["n"] for r in mine) / len(mine) if mine else 0.0,
                         "failed_answers": sum(r["n_failed"] for r in mine),
                         "prompt_tokens_per_latent": float(np.mean([r["prompt_tokens"] for r in mine])) if mine else 0.0,
                         "completion_tokens_per_latent": float(np.mean([r.get("completion_tokens") or 0 for r in mine]))
                         if mine else 0.0,
                         "explain_prompt_tokens_per_latent": float(np.mean([r["prompt_tokens"] for r in explained]))
                         if explained else 0.0})
    summary = {"run_dir": str(cfg.path), "stage_seconds": stage_seconds, "rows": rows, "llm": _llm_usage(cfg)}
    write_json(cfg.path / SUMMARY, summary)
    return summary


def _llm_usage(cfg: RunConfig) -> list[dict]:
    """Per stage: calls, cache hits, failures, retries, tokens per latent (all and paid by this run), LLM time."""
    per_latent = usage_per_latent(cfg.path)
    if per_latent is None:
        return []
    write_parquet(cfg.path / USAGE_PER_LATENT, per_latent)
    out = []
    rows = per_latent.to_pylist()
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage]
        total = {key: int(sum(r[key] for r in mine)) for key in
                 ("calls", "cache_hits", "failed", "retries", "prompt_tokens", "completion_tokens",
                  "paid_prompt_tokens", "paid_completion_tokens", "evaluated_prompt_tokens")
                 if key in mine[0]}
        out.append({"stage": stage, "latents": len(mine), **total,
                    "prompt_tokens_per_latent": total["prompt_tokens"] / len(mine),
                    "completion_tokens_per_latent": total["completion_tokens"] / len(mine),
                    "llm_seconds": float(sum(r["seconds"] for r in mine))})
    return out


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" + ("" if math.isnan(half) else f"±{half:.3f}")


SUMMARY_WIDTH = 100
"""The summary fits a terminal of this many columns (wider terminals get their width)."""


SHORT_METRIC = {"balanced_accuracy": "BA", "accuracy": "acc.", "auroc": "AUROC", "pearson": "r", "spearman": "ρ"}


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console(width=max(SUMMARY_WIDTH, Console().width))
    table = Table(title="lantern: mean over latents ± 95% CI", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="latents: scored (of recorded, where an explanation failed); BA: balanced accuracy at "
                          "P(yes) 0.5; BA*: at the set's base rate (as many yes as positives); ex.: examples per "
                          "latent")
    table.add_column("coder", no_wrap=True)
    for column in ("scorer", "latents", "headline", "AUROC", "BA*", "ex.", "failed"):
        table.add_column(column, no_wrap=True)
    for r in summary["rows"]:
        metric = SHORT_METRIC.get(r.get("metric") or "", r.get("metric") or "")
        headline = f"{metric} {_fmt(r.get('score', float('nan')), r.get('score_ci95', float('nan')))}".strip()
        headline += f" ({r['mode']})" if r.get("mode") else ""
        latents = str(r["latents"]) + (f" of {r['latents'] + r['not_scored']}" if r.get("not_scored") else "")
        table.add_row(r["coder"], r["scorer"], latents, headline, _fmt(r["auroc"], r["auroc_ci95"]),
                      _fmt(r.get("balanced_accuracy_calibrated", float("nan")),
                           r.get("balanced_accuracy_calibrated_ci95", float("nan"))),
                      f"{r.get('examples_per_latent', 0):.0f}", str(r["failed_answers"]))
    console.print(table)
    failed = {r["coder"]: r["explanations_failed"] for r in summary["rows"]}
    if any(failed.values()):
        console.print("failed explanations: " + ", ".join(f"{coder} {n}" for coder, n in failed.items()))
    tokens = {(r["coder"]): (r["prompt_tokens_per_latent"], r["explain_prompt_tokens_per_latent"])
              for r in summary["rows"]}
    console.print("prompt tokens per latent (score + explain): " + ", ".join(
        f"{coder} {score:.0f} + {explain:.0f}" for coder, (score, explain) in tokens.items()))
    if summary.get("llm"):
        usage = Table(title="LLM calls per stage", box=box.SIMPLE_HEAD,
                      caption="prompt, completion: tokens per latent; paid: prompt tokens not from the response "
                              "cache; evaluated: prompt tokens not from the KV cache of the previous prompt")
        for column in ("stage", "latents", "calls", "cached", "failed", "retries", "prompt", "completion", "paid",
                       "evaluated"):
            usage.add_column(column, no_wrap=True)
        for u in summary["llm"]:
            usage.add_row(u["stage"], str(u["latents"]), str(u["calls"]), str(u["cache_hits"]), str(u["failed"]),
                          str(u["retries"]), f"{u['prompt_tokens_per_latent']:.0f}",
                          f"{u['completion_tokens_per_latent']:.0f}", str(u["paid_prompt_tokens"]),
                          str(u.get("evaluated_prompt_tokens", "–")))
        console.print(usage)
    times = ", ".join(f"{k} {v:.0f}s" for k, v in summary["stage_seconds"].items())
    if times:
        console.print(f"stage times: {times}")
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")
