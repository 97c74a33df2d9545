"""Scorer agreement (the paper's Table 1): Spearman's rho between every two scorers' headline scores over the
latents both scored, with n and a bootstrap interval; over all coders together and per coder."""
from __future__ import annotations

import itertools

import numpy as np

from lantern.analysis.common import (Analysed, Context, Skip, headline, number, read_rows, subplots, write_figure,
                                     write_table)
from lantern.analysis.stats import spearman_ci
from lantern.pipeline.files import SCORES

PAPER_SPEARMAN = {("detection", "fuzzing"): 0.73, ("fuzzing", "simulation"): 0.70, ("detection", "simulation"): 0.44,
                  ("embedding", "simulation"): 0.41, ("simulation", "surprisal"): 0.30, ("embedding", "surprisal"): 0.20}
"""The paper's Table 1 (Paulo et al., 600 latents, Llama 3.1 70B explaining and scoring), by scorer pair in name
order: printed beside ours so a reader sees which orderings reproduce."""

NAME = "scorer_agreement"
TITLE = "Scorer agreement"
DESCRIPTION = ("Spearman correlation between every two scorers' headline scores over latents, with n and a 95% "
               "bootstrap interval (latents resampled), over all coders and per coder, beside the paper's Table 1 "
               "value (paper_spearman); scorer_agreement_auroc: the same on AUROC, which a yes-biased judge does not "
               "flatten.")


def score_table(rows: list[dict], metric: str | None = None) -> tuple[dict[tuple[str, int], dict[str, float]],
                                                                       dict[str, str]]:
    """{(coder, latent): {scorer: score}} and each scorer's metric name: the headline score, or `metric` (e.g.
    auroc) where the scorer reports it."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    metrics: dict[str, str] = {}
    for row in rows:
        value, name = headline(row) if metric is None else (number(row.get(metric)), metric)
        table.setdefault((row["coder"], row["latent"]), {})[row["scorer"]] = value
        metrics.setdefault(row["scorer"], name)
    return table, metrics


def usable(table: dict, metrics: dict[str, str]) -> list[str]:
    """The scorers with at least one finite score."""
    return sorted(s for s in metrics if any(np.isfinite(v.get(s, np.nan)) for v in table.values()))


def agreement_rows(table: dict, metrics: dict[str, str], scorers: list[str], ctx: Context,
                   notes: list[str], paper: bool = True) -> list[dict]:
    """Spearman's rho of every two scorers, over all coders and per coder (`paper`: with the paper's value beside
    the all-coders rows; its correlations are of headline scores over all latents)."""
    out = []
    for scope in ["all"] + sorted({coder for coder, _ in table}):
        keys = [k for k in table if scope == "all" or k[0] == scope]
        for a, b in itertools.combinations(scorers, 2):
            x = [table[k].get(a, np.nan) for k in keys]
            y = [table[k].get(b, np.nan) for k in keys]
            c = spearman_ci(x, y, ctx.resamples, ctx.seed)
            if scope == "all" and c.n >= 3 and not np.isfinite(c.value):
                notes.append(f"{a} vs {b} ({metrics[a]}, {metrics[b]}): no rank correlation, one of them is constant "
                             f"over the {c.n} latents both scored (e.g. a judge that says yes to everything)")
            out.append({"coder": scope, "scorer_a": a, "metric_a": metrics[a], "scorer_b": b, "metric_b": metrics[b],
                        "n": c.n, "spearman": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "p_value": c.p_value, "paper_spearman": PAPER_SPEARMAN.get(tuple(sorted((a, b))))
                        if paper and scope == "all" else None})
    return out


def run(ctx: Context) -> Analysed:
    rows = read_rows(ctx.run_dir / SCORES)
    if not rows:
        raise Skip(f"no {SCORES}: run `lantern score` first")
    table, metrics = score_table(rows)
    scorers = usable(table, metrics)
    if len(scorers) < 2:
        raise Skip(f"needs scores from two scorers or more; the run has usable scores from {scorers or 'none'} "
                   f"(add scorers with `lantern score --scorers detection,fuzzing,surprisal,...`)")
    result = Analysed()
    out = agreement_rows(table, metrics, scorers, ctx, result.notes)
    write_table(ctx, NAME, out, result)
    _heatmap(ctx, scorers, [r for r in out if r["coder"] == "all"], result)
    result.n = sum(1 for v in table.values() if sum(np.isfinite(v.get(s, np.nan)) for s in scorers) >= 2)
    # the same on AUROC, for scorers whose headline is a balanced accuracy at a fixed threshold: a judge that says
    # "yes" to most windows leaves that near 0.5 for every latent, so its correlations are noise; AUROC reads the
    # ranking the judge's P(yes) still carries
    ranked, auroc = score_table(rows, "auroc")
    ranked_scorers = usable(ranked, auroc)
    if len(ranked_scorers) >= 2 and any(metrics[s] != "auroc" for s in ranked_scorers):
        write_table(ctx, f"{NAME}_auroc", agreement_rows(ranked, auroc, ranked_scorers, ctx, result.notes,
                                                                     paper=False), result)
    return result


def _heatmap(ctx: Context, scorers: list[str], rows: list[dict], result: Analysed) -> None:
    k = len(scorers)
    rho = np.eye(k)
    labels = [["1"] * k for _ in range(k)]
    for r in rows:
        i, j = scorers.index(r["scorer_a"]), scorers.index(r["scorer_b"])
        rho[i, j] = rho[j, i] = r["spearman"]
        text = "–" if not np.isfinite(r["spearman"]) else f"{r['spearman']:.2f}"
        if np.isfinite(r["ci_low"]):
            text += f"\n[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        labels[i][j] = labels[j][i] = text + f"\nn={r['n']}"
    fig, (ax,) = subplots(1, width=1.6 * k + 2.5, height=1.4 * k + 1.5)
    image = ax.imshow(np.ma.masked_invalid(rho), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(k), scorers, rotation=30, ha="right")
    ax.set_yticks(range(k), scorers)
    ax.set_xlabel("scorer")
    ax.set_ylabel("scorer")
    ax.set_title("Spearman ρ between scorers over latents (95% CI, n)")
    fig.colorbar(image, ax=ax, label="Spearman ρ")
    write_figure(ctx, NAME, fig, result)
