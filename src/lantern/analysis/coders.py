"""SAE latents vs neurons: each scorer's score distribution per coder side by side (all coders of a run are cached
on the same tokens and scored the same way), and for every two coders the two-sided Mann-Whitney U test (the
latents of two coders are independent samples, not pairs), with Holm's correction over the pairs of a scorer."""
from __future__ import annotations

import itertools

import numpy as np

from lantern.analysis.common import Analysed, Context, Skip, headline, read_rows, subplots, write_figure, write_table
from lantern.analysis.stats import holm, mann_whitney, mean_ci
from lantern.pipeline.files import SCORES

NAME = "coder_comparison"
TESTS = "coder_comparison_tests"
TITLE = "SAE latents vs neurons"
DESCRIPTION = ("Score distributions per coder (e.g. sae, neurons, neurons-topk) for each scorer, with mean and 95% "
               "bootstrap CI, and a two-sided Mann-Whitney U test for every two coders (Holm-adjusted p, and "
               "P(a > b) as effect size). Basis: each coder's scored latents whose headline score is defined; "
               "`latents_lost` and `lost_because` say how many of a coder's latents had none, and why (raw neurons "
               "often get no verified negatives, so their detection score is undefined).")


def lost_because(row: dict) -> str:
    """Why a latent's headline score is undefined."""
    if str(row.get("note") or "").startswith("not scored"):
        return "explanation failed"
    if not row.get("n"):
        return "every answer failed" if row.get("n_failed") else "nothing to score"
    if row.get("n_neg") == 0:
        return "no negatives"
    if row.get("n_pos") == 0:
        return "no positives"
    return "score undefined"


def run(ctx: Context) -> Analysed:
    rows = read_rows(ctx.run_dir / SCORES)
    if not rows:
        raise Skip(f"no {SCORES}: run `lantern score` first")
    values: dict[tuple[str, str], list[float]] = {}
    metrics: dict[str, str] = {}
    lost: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        if r.get("latent") is None:
            continue
        v, metric = headline(r)
        if np.isfinite(v):
            values.setdefault((r["scorer"], r["coder"]), []).append(v)
            metrics.setdefault(r["scorer"], metric)
        else:
            why = lost_because(r)
            reasons = lost.setdefault((r["scorer"], r["coder"]), {})
            reasons[why] = reasons.get(why, 0) + 1
    for scorer, _ in lost:  # a scorer whose every latent was lost still has a metric name
        metrics.setdefault(scorer, next(headline(r)[1] for r in rows if r["scorer"] == scorer))
    scorers = sorted(s for s in metrics if sum(1 for (sc, _) in values if sc == s) >= 2)
    if not scorers:
        raise Skip(f"needs scores of two coders or more under one scorer; the run's coders with usable scores: "
                   f"{sorted({c for _, c in values}) or 'none'} "
                   f"(cache several, e.g. --coders sae,neurons,neurons-topk)")
    result = Analysed()
    summary, tests = [], []
    for scorer in scorers:
        coders = sorted(c for s, c in values if s == scorer)
        for coder in sorted({c for s, c in [*values, *lost] if s == scorer}):
            reasons = lost.get((scorer, coder), {})
            mine = values.get((scorer, coder), [])
            m = mean_ci(mine, ctx.resamples, ctx.seed) if mine else None
            summary.append({"scorer": scorer, "metric": metrics[scorer], "coder": coder, "latents": len(mine),
                            "latents_lost": sum(reasons.values()),
                            "lost_because": "; ".join(f"{n} {why}" for why, n in sorted(reasons.items())),
                            "mean": m.value if m else np.nan, "ci_low": m.ci_low if m else np.nan,
                            "ci_high": m.ci_high if m else np.nan,
                            "median": float(np.median(mine)) if mine else np.nan})
        mine = []
        for a, b in itertools.combinations(coders, 2):
            d = mann_whitney(values[(scorer, a)], values[(scorer, b)])
            mine.append({"scorer": scorer, "metric": metrics[scorer], "coder_a": a, "coder_b": b, "n_a": d.n_a,
                         "n_b": d.n_b, "median_a": float(np.median(values[(scorer, a)])),
                         "median_b": float(np.median(values[(scorer, b)])), "test": "mann-whitney-u two-sided",
                         "u": d.u, "p_value": d.p_value, "p_holm": np.nan, "p_a_greater": d.auc})
        for row, p in zip(mine, holm([r["p_value"] for r in mine])):
            row["p_holm"] = float(p)
        tests += mine
    write_table(ctx, NAME, summary, result)
    write_table(ctx, TESTS, tests, result)
    _plot(ctx, scorers, metrics, values, result)
    result.n = len({(r["coder"], r["latent"]) for r in rows if np.isfinite(headline(r)[0])})
    return result


def _plot(ctx: Context, scorers, metrics, values, result: Analysed) -> None:
    fig, axes = subplots(len(scorers))
    rng = np.random.default_rng(ctx.seed)
    for ax, scorer in zip(axes, scorers):
        coders = sorted(c for s, c in values if s == scorer)
        data = [values[(scorer, c)] for c in coders]
        ax.boxplot(data, showfliers=False)
        for i, v in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=10, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(coders) + 1), [f"{c}\n(n={len(v)})" for c, v in zip(coders, data)], fontsize=8)
        ax.set_xlabel("coder")
        ax.set_ylabel(f"{scorer} score ({metrics[scorer]})")
        ax.set_title(scorer)
    write_figure(ctx, NAME, fig, result)
