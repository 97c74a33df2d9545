"""Sampling strategies (the paper's Fig. 3): how often the scorer's verdict is right on test windows of each
activation decile, for explanations made from top, random or quantile (stratified) explain samples.

One run has one explain sampling (`records.explain_sampling`), so the strategies come from several runs:
`lantern analyse RUN --compare RUN_B --compare RUN_C`, typically runs that share the model, corpus, coders and
cache and differ only in the records' explain sampling. Every run's curve is drawn; settings other than the
sampling that differ between the runs are listed in the notes."""
from __future__ import annotations

import numpy as np

from lantern.analysis.common import Analysed, Context, Skip, number, read_rows, subplots, write_figure, write_table
from lantern.analysis.stats import mean_ci
from lantern.config import RunConfig
from lantern.pipeline.score_tables import SCORES_BY_DECILE

NAME = "sampling_strategies"
TITLE = "Accuracy per activation decile by explain sampling"
DESCRIPTION = ("Mean over latents of each latent's accuracy on its test windows of each activation decile "
               "(10 = strongest; 0 = non-activating windows), per explain sampling strategy (one run each), with "
               "95% bootstrap intervals over latents.")
COMPARED = ("model", "corpus", "coders", "layer", "tokens", "latents", "scorers", "explainer", "llm")


def _label(cfg: RunConfig, runs: list[RunConfig]) -> str:
    sampling = cfg.records.explain_sampling
    same = [r for r in runs if r.records.explain_sampling == sampling]
    return sampling if len(same) == 1 else f"{sampling} ({cfg.path.name})"


def _differences(runs: list[RunConfig]) -> list[str]:
    notes = []
    base = runs[0]
    for other in runs[1:]:
        for key in COMPARED:
            a, b = getattr(base, key), getattr(other, key)
            if key == "llm":
                a, b = (a.url, a.model, a.backend), (b.url, b.model, b.backend)
            if a != b:
                notes.append(f"{other.path.name} differs from {base.path.name} in {key}: {b!r} vs {a!r}")
    records = [r.records.__dict__ | {"explain_sampling": None, "seed": None} for r in runs]
    if any(r != records[0] for r in records[1:]):
        notes.append("the runs' record settings differ in more than explain_sampling")
    return notes


def run(ctx: Context) -> Analysed:
    runs = [ctx.cfg] + ctx.compare
    result = Analysed(notes=_differences(runs))
    out = []
    for cfg in runs:
        rows = [r for r in read_rows(cfg.path / SCORES_BY_DECILE) if r["latent"] is not None]
        if not rows:
            result.notes.append(f"{cfg.path} has no {SCORES_BY_DECILE} (run `lantern score` there)")
            continue
        label = _label(cfg, runs)
        for coder in ["all"] + sorted({r["coder"] for r in rows}):
            mine = [r for r in rows if coder == "all" or r["coder"] == coder]
            for scorer in sorted({r["scorer"] for r in mine}):
                for decile in sorted({r["decile"] for r in mine if r["scorer"] == scorer}):
                    cell = [r for r in mine if r["scorer"] == scorer and r["decile"] == decile]
                    m = mean_ci([number(r.get("accuracy")) for r in cell], ctx.resamples, ctx.seed)
                    out.append({"run": str(cfg.path), "sampling": cfg.records.explain_sampling, "label": label,
                                "coder": coder, "scorer": scorer, "decile": int(decile), "latents": m.n,
                                "windows": int(sum(r["n"] or 0 for r in cell)), "accuracy": m.value,
                                "ci_low": m.ci_low, "ci_high": m.ci_high})
    if not any(np.isfinite(r["accuracy"]) for r in out):
        raise Skip(f"no run has per-decile accuracies ({SCORES_BY_DECILE} with readable verdicts): "
                   f"run `lantern score` with detection or fuzzing")
    strategies = sorted({r["sampling"] for r in out})
    if len(strategies) == 1:
        result.notes.append(f"one explain sampling only ({strategies[0]}): compare strategies with "
                            f"`lantern analyse RUN --compare OTHER_RUN` (records.explain_sampling top, random, "
                            f"quantiles)")
    write_table(ctx, NAME, out, result)
    _plot(ctx, [r for r in out if r["coder"] == "all"], result)
    result.n = max(r["latents"] for r in out)
    return result


def _plot(ctx: Context, rows: list[dict], result: Analysed) -> None:
    scorers = sorted({r["scorer"] for r in rows if np.isfinite(r["accuracy"])})
    fig, axes = subplots(len(scorers))
    for ax, scorer in zip(axes, scorers):
        for label in dict.fromkeys(r["label"] for r in rows):
            mine = sorted((r for r in rows if r["scorer"] == scorer and r["label"] == label
                           and np.isfinite(r["accuracy"])), key=lambda r: r["decile"])
            if not mine:
                continue
            x = np.array([r["decile"] for r in mine])
            y = np.array([r["accuracy"] for r in mine])
            low = np.array([r["ci_low"] for r in mine])
            high = np.array([r["ci_high"] for r in mine])
            err = np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xticks(range(11), ["neg"] + [str(d) for d in range(1, 11)])
        ax.set_xlabel("activation decile (neg = non-activating)")
        ax.set_ylabel("accuracy (mean over latents)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(scorer)
        ax.legend(title="explain sampling", fontsize=8)
    write_figure(ctx, NAME, fig, result)
