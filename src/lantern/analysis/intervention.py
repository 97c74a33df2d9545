"""Intervention (the paper's Fig. 4): per target KL, the intervention scores of the latents' own explanations
against two controls (a random direction steered to the same KL on its own; another latent's explanation), and
the intervention score of each latent against its fuzzing score, with the least-squares line and Pearson's r.

A latent's score at one target KL is the mean over neutral prompts of its examples' `value`
(Δ steered − Δ clean, nats/token); the controls are compared with the latent's own score on the same latents by
the Wilcoxon signed-rank test (paired)."""
from __future__ import annotations

import numpy as np

from lantern.analysis.common import (Analysed, Context, Skip, headline, number, read_rows, subplots, write_figure,
                                     write_table)
from lantern.analysis.stats import fit_line, mean_ci, signed_rank_p
from lantern.pipeline.files import EXAMPLES, SCORES

NAME = "intervention"
SCATTER = "intervention_vs_fuzzing"
TITLE = "Intervention scores against controls, and against fuzzing"
DESCRIPTION = ("Per target KL, latents' intervention scores (nats/token) with their own explanation vs a random "
               "direction vs a shuffled explanation (mean, 95% bootstrap CI, paired Wilcoxon p); and intervention "
               "vs fuzzing score per latent with the least-squares line and Pearson r (Fisher-z 95% CI).")
VARIANTS = ("latent", "random-direction", "shuffled-explanation")
SCORE_COLUMNS = {"latent": "score", "random-direction": "random_direction_score",
                 "shuffled-explanation": "shuffled_explanation_score"}
ALL_KL = "all"


def per_latent(examples: list[dict], scores: list[dict]) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """{(target KL, variant): {(coder, latent): score}}: per target KL from the examples (mean over prompts of
    readable values), and over all KLs from scores.parquet's columns."""
    values: dict[tuple[str, str, str, int], list[float]] = {}
    for e in examples:
        if e.get("error") is None and e.get("value") is not None and e.get("variant") in VARIANTS:
            key = (f"{float(e['target_kl']):g}", e["variant"], e["coder"], e["latent"])
            values.setdefault(key, []).append(float(e["value"]))
    out: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    for (kl, variant, coder, latent), vs in values.items():
        out.setdefault((kl, variant), {})[(coder, latent)] = float(np.mean(vs))
    for s in scores:
        for variant, column in SCORE_COLUMNS.items():
            out.setdefault((ALL_KL, variant), {})[(s["coder"], s["latent"])] = number(s.get(column))
    return out


def run(ctx: Context) -> Analysed:
    scores = [r for r in read_rows(ctx.run_dir / SCORES) if r["scorer"] == "intervention"]
    examples = [r for r in read_rows(ctx.run_dir / EXAMPLES) if r["scorer"] == "intervention"]
    if not scores and not examples:
        raise Skip("no intervention scores in this run: score with `lantern score --scorers intervention,...`")
    result = Analysed()
    table = per_latent(examples, scores)
    kls = sorted({kl for kl, _ in table if kl != ALL_KL}, key=float) + [ALL_KL]
    out = []
    for kl in kls:
        own = table.get((kl, "latent"), {})
        for variant in VARIANTS:
            mine = table.get((kl, variant), {})
            m = mean_ci(list(mine.values()), ctx.resamples, ctx.seed)
            row = {"target_kl": kl, "variant": variant, "latents": m.n, "mean": m.value, "ci_low": m.ci_low,
                   "ci_high": m.ci_high, "median": float(np.nanmedian(list(mine.values()))) if m.n else np.nan,
                   "wilcoxon_p_vs_latent": np.nan, "paired_latents": 0}
            if variant != "latent":
                pairs = np.array([(own[k], v) for k, v in mine.items() if k in own and np.isfinite(own[k])
                                  and np.isfinite(v)]).reshape(-1, 2)
                row["paired_latents"] = len(pairs)
                row["wilcoxon_p_vs_latent"] = signed_rank_p(pairs[:, 1] - pairs[:, 0])
            out.append(row)
    write_table(ctx, NAME, out, result)
    _distributions(ctx, table, kls, result)
    result.n = len(table.get((ALL_KL, "latent"), {})) or max(len(v) for v in table.values())
    _scatter(ctx, scores, result)
    return result


def _distributions(ctx: Context, table, kls: list[str], result: Analysed) -> None:
    fig, (ax,) = subplots(1, width=max(6.0, 1.8 * len(kls)), height=4.0)
    colours = ("tab:blue", "tab:grey", "tab:orange")
    width = 0.25
    for v, (variant, colour) in enumerate(zip(VARIANTS, colours)):
        data, positions = [], []
        for i, kl in enumerate(kls):
            values = np.array([x for x in table.get((kl, variant), {}).values() if np.isfinite(x)])
            if len(values):
                data.append(values)
                positions.append(i + (v - 1) * width)
        if data:
            parts = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
            for box in parts["boxes"]:
                box.set_facecolor(colour)
                box.set_alpha(0.6)
            for pos, values in zip(positions, data):
                jitter = np.random.default_rng(ctx.seed).uniform(-width / 4, width / 4, len(values))
                ax.scatter(pos + jitter, values, s=8, color=colour, zorder=3)
            ax.plot([], [], color=colour, linewidth=6, alpha=0.6, label=variant)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(kls)), [kl if kl == ALL_KL else f"{kl}" for kl in kls])
    ax.set_xlabel("target KL of the steering (nats; all = the latent's mean over target KLs)")
    ax.set_ylabel("intervention score (nats/token)")
    ax.set_title("Intervention scores: latent vs controls")
    ax.legend(fontsize=8)
    write_figure(ctx, NAME, fig, result)


def _scatter(ctx: Context, scores: list[dict], result: Analysed) -> None:
    fuzzing = {(r["coder"], r["latent"]): headline(r) for r in read_rows(ctx.run_dir / SCORES)
               if r["scorer"] == "fuzzing"}
    if not fuzzing:
        result.notes.append("no fuzzing scores in this run: the intervention vs fuzzing scatter is left out "
                            "(score with `--scorers fuzzing,intervention`)")
        return
    rows = [{"coder": s["coder"], "latent": s["latent"], "intervention": number(s.get("score")),
             "fuzzing": fuzzing[(s["coder"], s["latent"])][0], "fuzzing_metric": fuzzing[(s["coder"], s["latent"])][1]}
            for s in scores if (s["coder"], s["latent"]) in fuzzing]
    x = np.array([r["fuzzing"] for r in rows], dtype=float)
    y = np.array([r["intervention"] for r in rows], dtype=float)
    line = fit_line(x, y)
    for r in rows:
        r.update(slope=line.slope, intercept=line.intercept, pearson_r=line.r.value, r_ci_low=line.r.ci_low,
                 r_ci_high=line.r.ci_high, r_p_value=line.r.p_value, n=line.r.n)
    write_table(ctx, SCATTER, rows, result)
    fig, (ax,) = subplots(1, width=5.0, height=4.2)
    for coder in sorted({r["coder"] for r in rows}):
        mine = [r for r in rows if r["coder"] == coder]
        ax.scatter([r["fuzzing"] for r in mine], [r["intervention"] for r in mine], s=14, label=coder)
    finite = np.isfinite(x) & np.isfinite(y)
    if np.isfinite(line.slope) and finite.any():
        xs = np.linspace(x[finite].min(), x[finite].max(), 50)
        ax.plot(xs, line.slope * xs + line.intercept, color="black",
                label=f"fit: r = {line.r.value:.2f} [{line.r.ci_low:.2f}, {line.r.ci_high:.2f}], n = {line.r.n}")
    metric = rows[0]["fuzzing_metric"] if rows else "score"
    ax.set_xlabel(f"fuzzing score ({metric})")
    ax.set_ylabel("intervention score (nats/token)")
    ax.set_title("Intervention vs fuzzing per latent")
    ax.legend(fontsize=7)
    write_figure(ctx, SCATTER, fig, result)
