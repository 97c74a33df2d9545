"""Merging the score partitions into the run directory. Each per-latent table is concatenated; then the rows only
the whole stage can make (latents whose explanations all failed, rows pooled over latents) are appended, so the
tables read as one pass over every latent would have written them."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lantern.executors import partitions
from lantern.io import write_parquet
from lantern.pipeline.files import SCORES
from lantern.pipeline.pooled_rows import pooled_rows, pooling_resamples
from lantern.pipeline.score_tables import SCORES_BY_DECILE, SCORES_BY_SOURCE, STAGE_FILES, unexplained_rows, uniform
from lantern.score.base import Scorer


def merge_scores(run_dir: Path, n_partitions: int, every_explanation: list[dict], scorers: list[Scorer]) -> list[dict]:
    """Merge the `score` partitions and drop their folders; returns the partitions' records.
    `every_explanation`: the explain stage's rows, failed ones included (they become unexplained rows)."""
    merged = partitions.merge(run_dir, "score", n_partitions, STAGE_FILES)
    partitions.end(run_dir, "score")
    _append(run_dir / SCORES, unexplained_rows(every_explanation, scorers))
    by_decile, by_source = pooled_rows(_read(run_dir / SCORES_BY_DECILE), _read(run_dir / SCORES_BY_SOURCE),
                                       pooling_resamples(scorers))
    _append(run_dir / SCORES_BY_DECILE, by_decile)
    _append(run_dir / SCORES_BY_SOURCE, by_source)
    return merged


def _read(path: Path) -> list[dict]:
    """A merged table's rows (none where no partition wrote the file)."""
    return pq.read_table(path).to_pylist() if path.exists() else []


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows to a merged per-latent table, giving old and new rows the same columns."""
    write_parquet(path, uniform(_read(path) + rows))
