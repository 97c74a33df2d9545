"""The validation table: per scorer and variant, the mean of the scorer's main metric over planted latents
with a 95% t-interval, and per scorer a verdict (TRUE above SHUFFLED with separated intervals, RANDOM's
interval containing chance). The metric is read generically from the score rows (`metric` / `score`), so
any scorer the registry adds is reported without changes here."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from lantern.intervals import t_interval

CHANCE_BY_METRIC = {"balanced_accuracy": 0.5, "balanced_accuracy_calibrated": 0.5, "auroc": 0.5, "pearson": 0.0, "spearman": 0.0}
RANGE_BY_METRIC = {"balanced_accuracy": (0.0, 1.0), "balanced_accuracy_calibrated": (0.0, 1.0), "auroc": (0.0, 1.0), "accuracy": (0.0, 1.0),
                   "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0)}


@dataclass(frozen=True)
class Cell:
    """One scorer and variant: mean over latents, its 95% t-interval (nan with fewer than two), n."""

    scorer: str
    metric: str | None
    variant: str
    mean: float
    low: float
    high: float
    n: int
    missing: int = 0
    """Latents scored but without a value (every answer failed or unreadable: counted, never dropped)."""
    group: str = "all"
    """`all` planted rules, the `tuned` ones (seen while the prompts were tuned) or the `held-out` ones."""


@dataclass(frozen=True)
class Verdict:
    scorer: str
    metric: str | None
    chance: float | None
    true_beats_shuffled: bool | None
    """TRUE's interval lies wholly above SHUFFLED's (None: an interval is missing)."""
    random_at_chance: bool | None
    """RANDOM's interval contains chance (None: no interval, or chance unknown for this metric)."""
    passed: bool | None
    note: str = ""
    group: str = "all"
    true_above_partial: bool | None = None
    """TRUE's mean above PARTIAL's (an explanation naming only part of what fires should score lower)."""
    true_above_overbroad: bool | None = None
    """TRUE's mean above OVERBROAD's (the truth plus something unrelated should score lower)."""


@dataclass
class LatentStatus:
    """What happened to one planted latent before scoring."""

    latent: int
    rule: str
    explanation: str
    firing_tokens: int
    status: str
    """`scored`, `no records`, `no negatives` or `not chosen` (left out by `--rules`)."""
    note: str = ""


@dataclass
class Report:
    cells: list[Cell]
    verdicts: list[Verdict]
    latents: list[LatentStatus]
    per_latent: list[dict] = field(default_factory=list)
    """latent, scorer, variant, explanation, score: the numbers behind each cell."""
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain JSON (nan as null)."""
        return _no_nan({"settings": self.settings, "cells": [asdict(c) for c in self.cells],
                        "verdicts": [asdict(v) for v in self.verdicts], "latents": [asdict(s) for s in self.latents],
                        "per_latent": self.per_latent})


def _no_nan(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {key: _no_nan(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(value) for value in obj]
    return obj


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over latents as (mean, low, high), the bounds a verdict compares; (nan, nan, nan)
    for none, (mean, nan, nan) for one."""
    mean, half = t_interval(values)
    return mean, mean - half, mean + half


def _value(row: dict, metric: str) -> float | None:
    """The row's `metric`; the headline is read from `score` (what the score stage names it)."""
    value = row.get("score") if metric == row.get("metric") else row.get(metric)
    if value is None and metric == row.get("metric"):
        value = row.get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def metrics_of(rows: list[dict]) -> list[str]:
    """The scorer's headline metric, then AUROC where its rows also have one (a verdict that needs no
    threshold: a model that answers "yes" to everything has balanced accuracy 0.5 whatever it ranks), then
    balanced accuracy at the set's base rate where the rows have it (the judge's ranking read as yes/no)."""
    headline = next((r.get("metric") for r in rows if r.get("metric")), None)
    out = [headline] if headline else []
    for extra in ("auroc", "balanced_accuracy_calibrated"):
        if headline != extra and any(r.get(extra) is not None for r in rows):
            out.append(extra)
    return out


def cell(scorer: str, variant: str, rows: list[dict], metric: str, group: str = "all") -> Cell:
    """The t-interval is clipped to the metric's range where it is known (it is symmetric, the metric bounded)."""
    values = [v for v in (_value(r, metric) for r in rows) if v is not None]
    mean, low, high = mean_interval(values)
    if metric in RANGE_BY_METRIC and not math.isnan(low):
        lo, hi = RANGE_BY_METRIC[metric]
        low, high = max(low, lo), min(high, hi)
    return Cell(scorer, metric, variant, mean, low, high, len(values), len(rows) - len(values), group)


def chance_level(scorer, metric: str | None) -> float | None:
    """What a scorer scores with an explanation that says nothing: its own `chance` if it declares one, else
    by metric (0.5 for balanced accuracy and AUROC, 0 for correlations, 1/(windows+1) for intruder accuracy)."""
    declared = getattr(scorer, "chance", None)
    if isinstance(declared, (int, float)):
        return float(declared)
    if metric in CHANCE_BY_METRIC:
        return CHANCE_BY_METRIC[metric]
    if getattr(scorer, "name", None) == "intruder" and metric == "accuracy":
        return 1.0 / (scorer.settings.intruder_windows + 1)
    return None


def _above(true: Cell, other: Cell | None) -> bool | None:
    if other is None or math.isnan(true.mean) or math.isnan(other.mean):
        return None
    return true.mean > other.mean


def verdict(scorer, cells: dict[str, Cell]) -> Verdict:
    true, shuffled, random = cells["true"], cells["shuffled"], cells["random"]
    metric = true.metric or shuffled.metric or random.metric
    chance = chance_level(scorer, metric)
    notes = []
    separated = None
    if not any(math.isnan(x) for x in (true.low, shuffled.high)):
        separated = true.low > shuffled.high
    else:
        notes.append("fewer than two latents with a score: no interval")
    at_chance = None
    if chance is None:
        notes.append(f"chance level of {metric!r} unknown")
    elif not any(math.isnan(x) for x in (random.low, random.high)):
        at_chance = random.low <= chance <= random.high
    if not getattr(scorer, "uses_explanation", True):
        separated = None  # not a test of this scorer: the variants differ only in what it never reads
        notes.append("this scorer does not read the explanation: TRUE, SHUFFLED and RANDOM cannot differ")
    passed = None if separated is None or at_chance is None else separated and at_chance
    return Verdict(scorer.name, metric, chance, separated, at_chance, passed, "; ".join(notes), true.group,
                   _above(true, cells.get("partial")), _above(true, cells.get("overbroad")))


def _num(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def _interval(c: Cell) -> str:
    return "–" if math.isnan(c.low) else f"[{c.low:.3f}, {c.high:.3f}]"


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "no")


def markdown(report: Report) -> str:
    lines = ["| rules | scorer | metric | variant | mean | 95% CI | n | no score |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.group} | {c.scorer} | {c.metric or '–'} | {c.variant.upper()} | {_num(c.mean)} | {_interval(c)} | "
              f"{c.n} | {c.missing} |" for c in report.cells]
    lines += ["", "| rules | scorer | metric | chance | TRUE > SHUFFLED (intervals apart) | RANDOM at chance | verdict "
              "| TRUE > PARTIAL | TRUE > OVERBROAD | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for v in report.verdicts:
        verdict_text = {True: "pass", False: "fail", None: "–"}[v.passed]
        lines.append(f"| {v.group} | {v.scorer} | {v.metric or '–'} | {_num(v.chance)} | "
                     f"{_yes_no(v.true_beats_shuffled)} | {_yes_no(v.random_at_chance)} | {verdict_text} | "
                     f"{_yes_no(v.true_above_partial)} | {_yes_no(v.true_above_overbroad)} | {v.note} |")
    lines += ["", "| latent | rule | fires on (tokens) | status |", "|---|---|---|---|"]
    lines += [f"| {s.latent} | {s.rule} | {s.firing_tokens} | {s.status}{': ' + s.note if s.note else ''} |"
              for s in report.latents]
    return "\n".join(lines) + "\n"


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console(width=max(170, Console().width))
    table = Table(title="lantern validate: planted latents, mean over latents (95% t-interval)")
    for column in ("rules", "scorer", "metric", "variant", "mean", "95% CI", "n", "no score"):
        table.add_column(column)
    for c in report.cells:
        table.add_row(c.group, c.scorer, c.metric or "–", c.variant.upper(), _num(c.mean), _interval(c), str(c.n),
                      str(c.missing))
    console.print(table)
    verdicts = Table(title="verdict per scorer and metric (> PARTIAL / > OVERBROAD: TRUE's mean ranks above)")
    for column in ("rules", "scorer", "metric", "chance", "TRUE > SHUFFLED", "RANDOM at chance", "verdict",
                   "> PARTIAL", "> OVERBROAD", "note"):
        verdicts.add_column(column, overflow="fold")
    for v in report.verdicts:
        shown = {True: "[green]pass[/green]", False: "[red]fail[/red]", None: "–"}[v.passed]
        verdicts.add_row(v.group, v.scorer, v.metric or "–", _num(v.chance), _yes_no(v.true_beats_shuffled),
                         _yes_no(v.random_at_chance), shown, _yes_no(v.true_above_partial),
                         _yes_no(v.true_above_overbroad), v.note)
    console.print(verdicts)
    skipped = [s for s in report.latents if s.status != "scored"]
    for s in skipped:
        console.print(f"latent {s.latent} ({s.rule}): {s.status}{' - ' + s.note if s.note else ''}")
