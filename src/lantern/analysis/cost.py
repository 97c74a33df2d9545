"""Explanation cost: LLM tokens and time per latent per stage, from `usage/<stage>.parquet` (one row per call)
summed per latent (`usage_per_latent.parquet`, or the same sums computed here when a run predates it). LLM
seconds are summed call latencies (calls overlap, so they exceed wall time under concurrency); wall seconds per
latent come from the stage times in summary.json where the run recorded them."""
from __future__ import annotations

import numpy as np

from lantern.analysis.common import Analysed, Context, Skip, read_rows, subplots, write_figure, write_table
from lantern.analysis.stats import mean_ci
from lantern.io import read_json
from lantern.pipeline.files import SUMMARY, USAGE_PER_LATENT
from lantern.pipeline.usage import usage_per_latent

NAME = "explanation_cost"
TITLE = "Explanation cost per latent"
DESCRIPTION = ("LLM prompt and completion tokens, tokens paid (not from the response cache), calls and LLM seconds "
               "per latent for each stage, mean with 95% bootstrap CI and median; wall seconds per latent where the "
               "run recorded stage times.")
FIELDS = ("prompt_tokens", "completion_tokens", "paid_prompt_tokens", "paid_completion_tokens", "calls", "seconds")


def run(ctx: Context) -> Analysed:
    path = ctx.run_dir / USAGE_PER_LATENT
    if path.exists():
        rows = read_rows(path)
    else:
        table = usage_per_latent(ctx.run_dir)
        rows = table.to_pylist() if table is not None else []
    if not rows:
        raise Skip("no LLM usage recorded (usage/<stage>.parquet): run `lantern explain` / `lantern score`")
    wall = {}
    if (ctx.run_dir / SUMMARY).exists():
        wall = read_json(ctx.run_dir / SUMMARY).get("stage_seconds") or {}
    result = Analysed()
    out = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        for coder in ["all"] + sorted({r["coder"] for r in rows if r["stage"] == stage}):
            mine = [r for r in rows if r["stage"] == stage and (coder == "all" or r["coder"] == coder)]
            row = {"stage": stage, "coder": coder, "latents": len(mine)}
            for name in FIELDS:
                values = np.array([r[name] or 0 for r in mine], dtype=float)
                m = mean_ci(values, ctx.resamples, ctx.seed)
                row.update({f"{name}_per_latent": m.value, f"{name}_ci_low": m.ci_low, f"{name}_ci_high": m.ci_high,
                            f"{name}_median": float(np.median(values)), f"{name}_total": float(values.sum())})
            latents_in_stage = len({(r["coder"], r["latent"]) for r in rows if r["stage"] == stage})
            row["wall_seconds_per_latent"] = (float(wall[stage]) / latents_in_stage
                                              if coder == "all" and stage in wall and latents_in_stage else np.nan)
            out.append(row)
    write_table(ctx, NAME, out, result)
    _plot(ctx, [r for r in out if r["coder"] == "all"], result)
    result.n = len({(r["coder"], r["latent"]) for r in rows})
    return result


def _plot(ctx: Context, rows: list[dict], result: Analysed) -> None:
    fig, (ax_t, ax_s) = subplots(2, width=4.6, height=3.6)
    stages = [r["stage"] for r in rows]
    x = np.arange(len(rows))
    prompt = np.array([r["prompt_tokens_per_latent"] for r in rows])
    completion = np.array([r["completion_tokens_per_latent"] for r in rows])
    ax_t.bar(x, prompt, label="prompt")
    ax_t.bar(x, completion, bottom=prompt, label="completion")
    ax_t.set_xticks(x, stages)
    ax_t.set_xlabel("stage")
    ax_t.set_ylabel("LLM tokens per latent (mean)")
    ax_t.legend(fontsize=8)
    ax_t.set_title("Tokens per latent")
    llm = np.array([r["seconds_per_latent"] for r in rows])
    wall = np.array([r["wall_seconds_per_latent"] for r in rows])
    ax_s.bar(x - 0.2, llm, width=0.4, label="LLM call seconds (summed)")
    ax_s.bar(x + 0.2, np.nan_to_num(wall), width=0.4, label="wall seconds (stage time / latents)")
    ax_s.set_xticks(x, stages)
    ax_s.set_xlabel("stage")
    ax_s.set_ylabel("seconds per latent")
    ax_s.legend(fontsize=8)
    ax_s.set_title("Time per latent")
    write_figure(ctx, NAME, fig, result)
