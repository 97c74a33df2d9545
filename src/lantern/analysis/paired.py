"""Paired comparison of the variants of one experiment (`lantern compare`): a sweep scores the same latents under
different settings, one run directory per variant, so each latent is its own control. Every variant is compared
with a baseline on the latents both scored: mean difference with a bootstrap interval over latents, a Wilcoxon
signed-rank p-value and Holm's correction over the variant's rows, plus counts of what could not be paired."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lantern.analysis.common import number, read_rows, write_figure_in, write_table_in  # noqa: E402
from lantern.analysis.stats import holm, signed_rank_p  # noqa: E402
from lantern.coders.base import safe_name  # noqa: E402
from lantern.errors import LanternError  # noqa: E402
from lantern.intervals import bootstrap_mean_interval  # noqa: E402
from lantern.io import atomic_path, write_json  # noqa: E402
from lantern.pipeline.files import SCORES  # noqa: E402
from lantern.pipeline.score_tables import SCORES_BY_DECILE  # noqa: E402
from lantern.pipeline.usage import usage_totals  # noqa: E402

METRICS = ("auroc", "balanced_accuracy", "balanced_accuracy_calibrated", "f1", "accuracy")
HEADLINE = "score"
"""A scorer's own headline (`score`, named by its `metric`) where it is none of METRICS: simulation's correlation,
intervention's score, embedding's AUROC-like score."""
DECILE_METRIC = "accuracy"
ALL = "all"
"""The coder that pools every coder's latents, so one row answers "did the setting help overall"."""

Values = dict[tuple, dict[tuple, float]]
"""(coder, scorer, metric or decile) -> (coder, latent) -> value; the latent key keeps its coder so that the
pooled coder `all` pairs a latent only with the same coder's latent."""


@dataclass
class PairedRow:
    """One variant against the baseline on one (coder, scorer, metric): only latents both runs scored count."""

    variant: str
    coder: str
    scorer: str
    metric: str
    n: int
    baseline_mean: float
    variant_mean: float
    difference: float
    """Mean of (variant - baseline) over the paired latents."""
    ci_low: float
    ci_high: float
    """95% percentile bootstrap interval of `difference`, latents resampled."""
    p_value: float
    """Wilcoxon signed-rank, two-sided (1.0 when every difference is 0, nan with fewer than 2 pairs)."""
    p_holm: float
    """Holm-adjusted over this variant's rows of the same coder in the same table."""
    missing_in_variant: int
    missing_in_baseline: int
    unpaired_nan: int
    """Latents in both runs left out because one of the two values is not a number."""


@dataclass
class DecilePairedRow(PairedRow):
    """The paired difference of one activation decile's accuracy (decile 0: the non-activating examples)."""

    decile: int = 0


@dataclass
class Comparison:
    """What `compare_variants` found and wrote."""

    baseline: str
    labels: list[str]
    varied: dict[str, str]
    rows: list[PairedRow] = field(default_factory=list)
    by_decile: list[DecilePairedRow] = field(default_factory=list)
    by_setting: list[PairedRow] = field(default_factory=list)
    """One varied setting at a time (grids of two or more settings; paired_by_setting.py)."""
    files: list[str] = field(default_factory=list)
    """File names under out_dir."""
    notes: list[str] = field(default_factory=list)
    """Variants left out and why."""
    cost: list[dict] = field(default_factory=list)
    """Per variant: its LLM calls, response-cache hits, tokens and seconds (and, in a sweep, its stages' wall
    seconds and what the artefacts it reused had cost)."""


def compare_variants(runs: dict[str, Path], baseline: str, out_dir: Path, resamples: int = 2000, seed: int = 0,
                     varied: dict[str, str] | None = None,
                     settings: dict[str, dict[str, str]] | None = None,
                     stages: dict[str, dict] | None = None, notes: list[str] | None = None) -> Comparison:
    """Compare every variant in `runs` (label -> run directory) with `baseline` and write the tables, one figure
    per variant, summary.md and comparison.json into `out_dir`. `settings` (label -> the grid's settings of that
    variant) adds the comparison of one varied setting at a time, with one figure per setting; `stages` (label ->
    a sweep's wall seconds, seconds saved by reuse and reused stages) joins each variant's LLM usage in the cost
    table. `notes`: what the caller already left out (a variant still running), said with the comparison's own."""
    if not runs:
        raise LanternError("compare needs at least one run directory: none given")
    if baseline not in runs:
        raise LanternError(f"baseline {baseline!r} is not one of the variants: {sorted(runs)}")
    if not (Path(runs[baseline]) / SCORES).exists():
        scored = [label for label, run in runs.items() if (Path(run) / SCORES).exists()]
        raise LanternError(f"the baseline {baseline!r} has no {SCORES} in {runs[baseline]}: nothing to compare with; "
                           f"choose one that has (--baseline NAME): {', '.join(scored) or 'none has'}")
    result = Comparison(baseline=baseline, labels=list(runs), varied=dict(varied or {}), notes=list(notes or []))
    base_scores, base_deciles = score_values(Path(runs[baseline])), decile_values(Path(runs[baseline]))
    for label, run_dir in runs.items():
        if label == baseline:
            continue
        if not (Path(run_dir) / SCORES).exists():
            result.notes.append(f"variant {label} has no {SCORES}: not compared")
            continue
        rows = paired_rows(label, base_scores, score_values(Path(run_dir)), resamples, seed)
        if not rows:
            result.notes.append(f"variant {label}: no latent has a score in both runs (every answer failed, or "
                                f"no latent in common): not compared")
        result.rows += rows
        result.by_decile += paired_rows(label, base_deciles, decile_values(Path(run_dir)), resamples, seed,
                                        decile=True)
    result.cost = [{"variant": label, **(stages or {}).get(label, {}), **usage_totals(Path(run_dir))}
                   for label, run_dir in runs.items()]
    if settings:
        from lantern.analysis.paired_by_setting import setting_rows

        result.by_setting = setting_rows(runs, settings, baseline, resamples, seed)
    write_outputs(result, Path(out_dir))
    return result


def score_values(run_dir: Path) -> Values:
    """Each metric of scores.parquet, per coder and pooled."""
    values: Values = {}
    for row in read_rows(run_dir / SCORES):
        for metric in METRICS:
            add_value(values, row, metric, number(row.get(metric)))
        if row.get("metric") not in METRICS:
            add_value(values, row, HEADLINE, number(row.get("score")))
    return values


def decile_values(run_dir: Path) -> Values:
    """Per-latent decile accuracy of scores_by_decile.parquet (pooled rows, latent None, are left out)."""
    values: Values = {}
    for row in read_rows(run_dir / SCORES_BY_DECILE):
        add_value(values, row, row["decile"], number(row.get(DECILE_METRIC)))
    return values


def add_value(values: Values, row: dict, tail, value: float) -> None:
    if row.get("latent") is None:
        return
    for coder in (row["coder"], ALL):
        values.setdefault((coder, row["scorer"], tail), {})[(row["coder"], row["latent"])] = value


def group_order(group: tuple) -> tuple:
    coder, scorer, tail = group
    return coder != ALL, coder, scorer, (METRICS + (HEADLINE,)).index(tail) if isinstance(tail, str) else tail


def paired_rows(label: str, base: Values, variant: Values, resamples: int, seed: int,
                decile: bool = False) -> list:
    """A row per group where at least one latent has a number in both runs. Holm's family is one coder's rows
    (every scorer and metric, or decile): the pooled `all` rows repeat the coders' latents, so adjusting them
    together with the per-coder rows would count the same test twice."""
    rows = []
    for group in sorted(set(base) | set(variant), key=group_order):
        row = paired_row(label, group, base.get(group, {}), variant.get(group, {}), resamples, seed, decile)
        if row is not None:
            rows.append(row)
    for coder in {r.coder for r in rows}:
        family = [r for r in rows if r.coder == coder]
        for row, adjusted in zip(family, holm([r.p_value for r in family])):
            row.p_holm = float(adjusted)
    return rows


def paired_row(label: str, group: tuple, base: dict, variant: dict, resamples: int, seed: int,
               decile: bool) -> PairedRow | None:
    coder, scorer, tail = group
    both = [key for key in base if key in variant]
    paired = [key for key in both if math.isfinite(base[key]) and math.isfinite(variant[key])]
    if not paired:
        return None
    b = np.array([base[key] for key in paired])
    v = np.array([variant[key] for key in paired])
    low, high = bootstrap_mean_interval(v - b, resamples, seed)
    common = dict(variant=label, coder=coder, scorer=scorer, n=len(paired), baseline_mean=float(b.mean()),
                  variant_mean=float(v.mean()), difference=float((v - b).mean()), ci_low=low, ci_high=high,
                  p_value=signed_rank_p(v - b), p_holm=math.nan, missing_in_variant=len(base) - len(both),
                  missing_in_baseline=len(variant) - len(both), unpaired_nan=len(both) - len(paired))
    if decile:
        return DecilePairedRow(metric=DECILE_METRIC, decile=tail, **common)
    return PairedRow(metric=tail, **common)


def write_outputs(result: Comparison, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows, row_type in (("paired", result.rows, PairedRow),
                                 ("paired_by_decile", result.by_decile, DecilePairedRow),
                                 ("paired_by_setting", result.by_setting, PairedRow)):
        result.files += write_table_in(out_dir, name, [asdict(r) for r in rows], [f.name for f in fields(row_type)])
    names: set[str] = set()
    for label in result.labels:
        rows = [r for r in result.rows if r.variant == label and r.coder == ALL]
        if rows:
            name = unique(f"paired-{safe_name(label)}", names)
            result.files += write_figure_in(out_dir, name, difference_figure(label, rows, result))
    for key in dict.fromkeys(r.variant.split("=", 1)[0] for r in result.by_setting):
        rows = [r for r in result.by_setting if r.variant.startswith(f"{key}=") and r.coder == ALL]
        name = unique(f"setting-{safe_name(key)}", names)
        result.files += write_figure_in(out_dir, name, difference_figure(key, rows, result, by_setting=True))
    result.files.append("summary.md")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(result))
    result.files.append("comparison.json")
    write_json(out_dir / "comparison.json", dict(labels=result.labels, baseline=result.baseline,
                                                 varied=result.varied, files=result.files, notes=result.notes,
                                                 cost=result.cost))


def unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`... when two labels make the same file name."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}-{k}"
    taken.add(candidate)
    return candidate


def difference_figure(label: str, rows: list[PairedRow], result: Comparison, by_setting: bool = False):
    """Mean difference and its interval per scorer x metric (coder `all`; per value of the setting too when
    `by_setting`), with the no-change line at 0."""
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.32 * len(rows)))
    y = np.arange(len(rows))[::-1]
    diffs = np.array([r.difference for r in rows])
    low = np.nan_to_num(diffs - np.array([r.ci_low for r in rows]))
    high = np.nan_to_num(np.array([r.ci_high for r in rows]) - diffs)
    ax.errorbar(diffs, y, xerr=[low, high], fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, [(f"{r.variant.split(' vs ')[0]} · " if by_setting else "") + f"{r.scorer} · {r.metric} (n={r.n})"
                      for r in rows])
    if by_setting:
        ax.set_xlabel("difference from the baseline's value, other settings held equal (mean over latents, 95% CI)")
        ax.set_title(f"{label}: each value vs the baseline's")
        return fig
    ax.set_xlabel(f"{label} − {result.baseline} (mean over latents, 95% CI)")
    changed = result.varied.get(label)
    ax.set_title(f"{label} vs {result.baseline}" + (f": {changed}" if changed else ""))
    return fig


def summary_markdown(result: Comparison) -> str:
    """The coder `all` rows as one table, then the notes."""
    lines = [f"# Paired comparison against `{result.baseline}`", "",
             "Differences are variant − baseline over the latents both runs scored (all coders pooled); "
             "p: Wilcoxon signed-rank (Pratt), Holm p: adjusted over the variant's rows shown here (every scorer and "
             "metric, all coders pooled).", "",
             "| variant | varied | scorer | metric | n | baseline mean | variant mean | difference [95% CI] | p | "
             "Holm p |", "|---|---|---|---|---:|---:|---:|---|---:|---:|"]
    for r in (r for r in result.rows if r.coder == ALL):
        lines.append(f"| {r.variant} | {result.varied.get(r.variant, '')} | {r.scorer} | {r.metric} | {r.n} | "
                     f"{r.baseline_mean:.3f} | {r.variant_mean:.3f} | {r.difference:+.3f} [{r.ci_low:+.3f}, "
                     f"{r.ci_high:+.3f}] | {r.p_value:.3g} | {r.p_holm:.3g} |")
    setting_rows = [r for r in result.by_setting if r.coder == ALL]
    if setting_rows:
        lines += ["", "## One setting at a time", "",
                  "Each value of a varied setting against the baseline's value, paired over variants whose other "
                  "settings are equal (pooled over those combinations).", "",
                  "| setting | scorer | metric | n | baseline mean | variant mean | difference [95% CI] | p | Holm p |",
                  "|---|---|---|---:|---:|---:|---|---:|---:|"]
        lines += [f"| {r.variant} | {r.scorer} | {r.metric} | {r.n} | {r.baseline_mean:.3f} | {r.variant_mean:.3f} | "
                  f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {r.p_value:.3g} | {r.p_holm:.3g} |"
                  for r in setting_rows]
    lines += cost_markdown(result.cost)
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def cost_markdown(cost: list[dict]) -> list[str]:
    """What each variant cost and what sharing saved: wall seconds of its stages and seconds its reused artefacts
    had cost (sweeps only), LLM calls and tokens it paid for, and LLM seconds answered from the response cache; a
    variant that has run nothing yet is left out (the notes say it has no scores)."""
    sweep = any("stage_seconds" in row for row in cost)
    columns = {"stage_seconds": "stage s", "saved_seconds": "saved by reuse s"} if sweep else {}
    columns |= {"calls": "LLM calls", "cache_hits": "from cache", "paid_prompt_tokens": "paid prompt tokens",
                "paid_completion_tokens": "paid completion tokens", "cached_seconds": "saved by cache s"}
    ran = [row for row in cost if any(row.get(key) for key in columns)]
    if not ran:
        return []
    total = {key: sum(row.get(key, 0) or 0 for row in ran) for key in columns}
    lines = ["", "## Cost", "",
             ("Wall seconds of the variant's own stages; seconds of the stages it reused from another variant (what "
              "that variant spent on them); " if sweep else "") +
             "LLM calls, of them answered from the response cache, tokens paid (cache hits excluded), and LLM "
             "seconds the cache saved (what those answers once took).", "",
             "| variant | " + " | ".join(columns.values()) + " |", "|---|" + "---:|" * len(columns)]
    for row in [*ran, {"variant": "**all**", **total}]:
        lines.append(f"| {row['variant']} | " + " | ".join(f"{row.get(key, 0) or 0:,.0f}" for key in columns) + " |")
    return lines
