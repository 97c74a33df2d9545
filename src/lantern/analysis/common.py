"""What every analysis shares: the run(s) it reads, where it writes (`RUN_DIR/analysis/`), tables as Parquet and
CSV, figures as PNG and SVG, and the way it says it has nothing to work on (`Skip`, recorded in index.json)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from lantern.config import RunConfig  # noqa: E402
from lantern.io import atomic_path, write_parquet  # noqa: E402

ANALYSIS = "analysis"
INDEX = "index.json"


class Skip(Exception):
    """The run lacks what this analysis reads; the message says what and how to get it."""


@dataclass
class Analysed:
    """What one analysis wrote."""

    files: list[str] = field(default_factory=list)
    """File names under RUN_DIR/analysis/."""
    n: int = 0
    """Latents (or latent pairs) the figures rest on."""
    notes: list[str] = field(default_factory=list)
    """Caveats a reader needs (a part left out and why, runs that differ in more than the compared setting)."""


@dataclass
class Context:
    """The run being analysed, runs to compare it with, and the shared settings."""

    cfg: RunConfig
    compare: list[RunConfig] = field(default_factory=list)
    resamples: int = 2000
    seed: int = 0
    pairs: list[tuple[str, str]] | None = None
    """Coder pairs for the cross-layer overlap (None: every pair of coders at different layers)."""
    _subject: object = None

    @property
    def run_dir(self) -> Path:
        return self.cfg.path

    @property
    def out_dir(self) -> Path:
        return self.cfg.path / ANALYSIS

    def subject(self):
        """The subject model, loaded once and only by analyses that need it (the embedder, neuron decoders)."""
        if self._subject is None:
            from lantern.models.loading import load_subject_model

            self._subject = load_subject_model(self.cfg.model)
        return self._subject


def read_rows(path: Path, columns: list[str] | None = None) -> list[dict]:
    """A Parquet file's rows ([] when it does not exist)."""
    if not Path(path).exists():
        return []
    table = pq.read_table(path)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table.to_pylist()


def number(value) -> float:
    """A cell as a float (None and missing as nan)."""
    return math.nan if value is None else float(value)


def headline(row: dict) -> tuple[float, str]:
    """A scores.parquet row's headline (value, metric name). Runs scored before scorers named a headline carry
    detection/fuzzing metrics only: their balanced accuracy is the headline those scorers have now."""
    if "score" in row or "metric" in row:
        return number(row.get("score")), row.get("metric") or "score"
    return number(row.get("balanced_accuracy")), "balanced_accuracy"


def write_table(ctx: Context, name: str, rows: list[dict], result: Analysed) -> None:
    """`name.parquet` and `name.csv` (the same rows; every row gets every column)."""
    result.files += write_table_in(ctx.out_dir, name, rows)


def write_table_in(out_dir: Path, name: str, rows: list[dict], columns: list[str] | None = None) -> list[str]:
    """`name.parquet` and `name.csv` in `out_dir` (`columns`: the header of an empty table); the file names."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows]) if rows else \
        pa.table({column: pa.array([], pa.null()) for column in columns})
    write_parquet(out_dir / f"{name}.parquet", table)
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        pacsv.write_csv(table, tmp)
    return [f"{name}.parquet", f"{name}.csv"]


def write_figure(ctx: Context, name: str, fig, result: Analysed) -> None:
    """`name.png` and `name.svg`, then the figure is closed."""
    result.files += write_figure_in(ctx.out_dir, name, fig)


def write_figure_in(out_dir: Path, name: str, fig) -> list[str]:
    """`name.png` and `name.svg` in `out_dir`, then the figure is closed; the file names."""
    try:
        fig.tight_layout()
        for fmt in ("png", "svg"):
            with atomic_path(out_dir / f"{name}.{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None)
    finally:
        plt.close(fig)
    return [f"{name}.png", f"{name}.svg"]


def subplots(n: int, width: float = 4.2, height: float = 3.4, ncols: int | None = None):
    """A row (or grid) of n axes, as a flat list."""
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
