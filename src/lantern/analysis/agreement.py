"""Scorer agreement (the paper's Table 1): Spearman's rho between every two scorers' headline scores over the
latents both scored, with n and a bootstrap interval; over all coders together and per coder."""
from __future__ import annotations

import itertools

import numpy as np

from lantern.analysis.common import Analysed, Context, Skip, headline, read_rows, subplots, write_figure, write_table
from lantern.analysis.stats import spearman_ci
from lantern.pipeline.files import SCORES

NAME = "scorer_agreement"
TITLE = "Scorer agreement"
DESCRIPTION = ("Spearman correlation between every two scorers' headline scores over latents, with n and a 95% "
               "bootstrap interval (latents resampled), over all coders and per coder.")


def score_table(rows: list[dict]) -> tuple[dict[tuple[str, int], dict[str, float]], dict[str, str]]:
    """{(coder, latent): {scorer: headline score}} and each scorer's headline metric name."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    metrics: dict[str, str] = {}
    for row in rows:
        value, metric = headline(row)
        table.setdefault((row["coder"], row["latent"]), {})[row["scorer"]] = value
        metrics.setdefault(row["scorer"], metric)
    return table, metrics


def run(ctx: Context) -> Analysed:
    rows = read_rows(ctx.run_dir / SCORES)
    if not rows:
        raise Skip(f"no {SCORES}: run `lantern score` first")
    table, metrics = score_table(rows)
    scorers = sorted(s for s in metrics if any(np.isfinite(v.get(s, np.nan)) for v in table.values()))
    if len(scorers) < 2:
        raise Skip(f"needs scores from two scorers or more; the run has usable scores from {scorers or 'none'} "
                   f"(add scorers with `lantern score --scorers detection,fuzzing,surprisal,...`)")
    result = Analysed()
    out = []
    scopes = ["all"] + sorted({coder for coder, _ in table})
    for scope in scopes:
        keys = [k for k in table if scope == "all" or k[0] == scope]
        for a, b in itertools.combinations(scorers, 2):
            x = [table[k].get(a, np.nan) for k in keys]
            y = [table[k].get(b, np.nan) for k in keys]
            c = spearman_ci(x, y, ctx.resamples, ctx.seed)
            if scope == "all" and c.n >= 3 and not np.isfinite(c.value):
                result.notes.append(f"{a} vs {b}: no rank correlation, one of them is constant over the {c.n} "
                                    f"latents both scored (e.g. a judge that says yes to everything)")
            out.append({"coder": scope, "scorer_a": a, "metric_a": metrics[a], "scorer_b": b, "metric_b": metrics[b],
                        "n": c.n, "spearman": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "p_value": c.p_value})
    write_table(ctx, NAME, out, result)
    _heatmap(ctx, scorers, [r for r in out if r["coder"] == "all"], result)
    result.n = sum(1 for v in table.values() if sum(np.isfinite(v.get(s, np.nan)) for s in scorers) >= 2)
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
