"""Read a run directory's result files once, grouped by latent, so each latent's page costs a slice of each table
(not a scan). Every file is optional except config.json: a report can be made after any stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern.config import RunConfig
from lantern.configure import load_run as load_config
from lantern.errors import LanternError
from lantern.io import read_json
from lantern.pipeline.files import CACHE, EXAMPLES, EXPLANATIONS, RECORDS, SCORES, SELECTION, records_file
from lantern.pipeline.score_tables import SCORES_BY_DECILE, SCORES_BY_SOURCE

ANALYSIS_INDEX = Path("analysis") / "index.json"
"""Written by `lantern analyse`: a list of analyses (name, title, description, files)."""


class Grouped:
    """A table's rows by key (latent, or coder and latent): sorted once, sliced per key on demand."""

    def __init__(self, table: pa.Table | None, keys: tuple[str, ...], source: str = "table"):
        self._spans: dict[tuple, tuple[int, int]] = {}
        self._table = table
        if table is None or table.num_rows == 0:
            return
        missing = [k for k in keys if k not in table.column_names]
        if missing:
            raise LanternError(f"{source} lacks the column(s) {', '.join(missing)}; rerun the stage that writes it")
        table = table.filter(pc.is_valid(table.column("latent")))  # pooled rows (latent null) belong to analyses
        columns = [table.column(k).combine_chunks() for k in keys]
        codes = [np.asarray(pc.dictionary_encode(c).indices) if pa.types.is_string(c.type) or
                 pa.types.is_large_string(c.type) else c.to_numpy(zero_copy_only=False) for c in columns]
        order = np.lexsort(codes[::-1])
        self._table = table.take(pa.array(order))
        sorted_codes = np.stack([c[order] for c in codes]) if codes else np.zeros((0, 0))
        if not len(order):
            return
        change = np.flatnonzero((sorted_codes[:, 1:] != sorted_codes[:, :-1]).any(axis=0)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(order)]])
        key_values = [self._table.column(k).take(pa.array(starts)).to_pylist() for k in keys]
        for i, (lo, hi) in enumerate(zip(starts, ends)):
            self._spans[tuple(values[i] for values in key_values)] = (int(lo), int(hi))

    def rows(self, *key) -> list[dict]:
        span = self._spans.get(tuple(key))
        if span is None:
            return []
        return self._table.slice(span[0], span[1] - span[0]).to_pylist()

    def keys_present(self) -> list[tuple]:
        return list(self._spans)


def _read(path: Path) -> pa.Table | None:
    if not path.exists():
        return None
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise LanternError(f"{path} is not a readable Parquet file ({err}); rerun the stage that writes it") from err


@dataclass
class RunData:
    """What the report shows, read from one run directory."""

    run_dir: Path
    config: RunConfig
    coders: list[str]
    """Coder names in the order of their cache manifests (else of their records files)."""
    manifests: dict[str, dict]
    latents: dict[str, list[dict]]
    """Per coder, the summary row of each sampled latent (records/<coder>.latents.parquet)."""
    explanations: Grouped
    selection: Grouped
    scores: Grouped
    by_decile: Grouped
    by_source: Grouped
    examples: Grouped
    scorers: list[str]
    """Scorers with results, config order first."""
    analyses: list[dict] = field(default_factory=list)

    def records(self, coder: str) -> Grouped:
        """Records of one coder (read on first use: the largest files of a run)."""
        cached = self._records.get(coder)
        if cached is None:
            path = records_file(self.run_dir, coder)
            cached = self._records[coder] = Grouped(_read(path), ("latent",), str(path))
        return cached

    def __post_init__(self):
        self._records: dict[str, Grouped] = {}



def _scorers(config: RunConfig, scores: pa.Table | None) -> list[str]:
    if scores is None or "scorer" not in scores.column_names:
        return []
    found = {v for v in pc.unique(scores.column("scorer")).to_pylist() if v is not None}
    ordered = [s for s in config.scorers if s in found]
    return ordered + sorted(found - set(ordered))


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    manifests = {}
    for path in sorted((run_dir / CACHE).glob("*/manifest.json")):
        manifest = read_json(path)
        manifests[manifest["coder"]["name"]] = manifest
    coders = list(manifests)
    coders += sorted(p.name[:-len(".parquet")] for p in (run_dir / RECORDS).glob("*.parquet")
                     if not p.name.endswith(".latents.parquet") and p.name[:-len(".parquet")] not in manifests)
    latents = {}
    for coder in coders:
        table = _read(run_dir / RECORDS / f"{coder}.latents.parquet")
        latents[coder] = table.to_pylist() if table is not None else []
    scores = _read(run_dir / SCORES)
    def grouped(name: str, table: pa.Table | None = None) -> Grouped:
        table = _read(run_dir / name) if table is None else table
        return Grouped(table, ("coder", "latent"), str(run_dir / name))

    data = RunData(run_dir=run_dir, config=config, coders=coders, manifests=manifests, latents=latents,
                   explanations=grouped(EXPLANATIONS), selection=grouped(SELECTION), scores=grouped(SCORES, scores),
                   by_decile=grouped(SCORES_BY_DECILE), by_source=grouped(SCORES_BY_SOURCE),
                   examples=grouped(EXAMPLES), scorers=_scorers(config, scores), analyses=_analyses(run_dir))
    for coder in {key[0] for key in data.explanations.keys_present()} - set(coders):
        coders.append(coder)  # explained latents of a coder whose cache and records are gone
    return data


def _analyses(run_dir: Path) -> list[dict]:
    """The analyses' index, if `lantern analyse` has run; files that are missing are left out, not fatal."""
    path = run_dir / ANALYSIS_INDEX
    if not path.exists():
        return []
    try:
        index = read_json(path)
    except ValueError as err:
        raise LanternError(f"{path} is not valid JSON ({err}); rerun `lantern analyse`") from err
    entries = index.get("analyses", []) if isinstance(index, dict) else index
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        files = []
        for f in entry.get("files", []):
            name = f.get("path") if isinstance(f, dict) else f
            if not isinstance(name, str):
                continue
            # paths relative to analysis/ (or to the run directory)
            found = next((p for p in (path.parent / name, run_dir / name) if p.is_file()), None)
            if found is not None:
                files.append(found)
        out.append({"name": entry["name"], "title": entry.get("title") or entry["name"],
                    "description": entry.get("description", ""), "files": files,
                    "status": entry.get("status", "done"), "reason": entry.get("reason") or ""})
    return out
