"""`lantern sweep`: every variant of a grid in its own run directory under the sweep, over one activation cache and
one response cache, sharing records and explanations where the varied settings leave them unchanged.

Layout: SWEEP/sweep.json (the grid, each variant's status and seconds per stage), SWEEP/cache (the shared
activation cache), SWEEP/llm_cache.sqlite (the shared response cache), SWEEP/records/<key>/ (one record set per
group of equal record settings), SWEEP/variants/<name>/ (a normal run directory: `lantern score`, `report` and
`analyse` work on it; its `cache`, `records` and `llm_cache.sqlite` are links to the shared ones).
Resumable: a rerun skips the stages sweep.json marks done; a variant that fails is recorded with its error and
the others go on."""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from lantern.config import CONFIG_FILE, RunConfig
from lantern.errors import LanternError
from lantern.io import read_json, write_json
from lantern.llm.factory import RESPONSE_CACHE
from lantern.pipeline.files import CACHE, EXPLANATIONS, RECORDS
from lantern.pipeline.usage import usage_totals
from lantern.sweep.grid import Grid, Variant, apply_variant
from lantern.sweep.plan import Cost, explain_key, records_key

SWEEP_FILE = "sweep.json"
VARIANTS = "variants"
STAGES = ("cache", "records", "explain", "score")
console = Console(stderr=True)


@dataclass
class VariantState:
    """One variant's progress, as saved in sweep.json."""

    name: str
    settings: dict[str, str]
    run_dir: str
    done: list[str] = field(default_factory=list)
    """Stages finished (made here or reused from the variant that made the shared artefact)."""
    reused: list[str] = field(default_factory=list)
    """Stages whose artefact came from another variant of the sweep."""
    seconds: dict[str, float] = field(default_factory=dict)
    saved_seconds: dict[str, float] = field(default_factory=dict)
    """Per reused stage, the seconds the variant that made it spent on it: what sharing saved this variant."""
    usage: dict[str, float] = field(default_factory=dict)
    """LLM calls, response-cache hits and tokens of this variant's own stages (usage/*.parquet)."""
    error: str | None = None
    pinned: bool | None = None
    """Whether the variant explains the first variant's latents (records.latents_from); decided once and saved, so
    a resumed sweep never relinks a variant's finished records to another record set (None: not decided yet)."""

    @property
    def status(self) -> str:
        return "failed" if self.error else "done" if "score" in self.done else "pending"


@dataclass
class Sweep:
    """A sweep directory: the base config, the grid and the state of every variant."""

    path: Path
    base: RunConfig
    grid: Grid
    variants: list[VariantState]
    cost: Cost | None = None
    only: list[str] | None = None
    """The variants to run now (`--only`; not saved: the others stay pending for a later run)."""

    def save(self) -> None:
        write_json(self.path / SWEEP_FILE, {
            "grid": self.grid.saved(), "base_run": self.base_json(), "cost": self.cost.__dict__ if self.cost else None,
            "totals": self.totals(),
            "variants": [v.__dict__ | {"status": v.status, "run_dir": os.path.relpath(v.run_dir, self.path)}
                         for v in self.variants]})

    def totals(self) -> dict[str, float]:
        """The whole sweep: wall seconds of every stage run, seconds saved by shared artefacts, LLM calls and
        cache hits."""
        out = {"seconds": sum(sum(v.seconds.values()) for v in self.variants),
               "saved_seconds": sum(sum(v.saved_seconds.values()) for v in self.variants)}
        for v in self.variants:
            for key, value in v.usage.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def base_json(self) -> dict:
        """The base config as sweep.json holds it (tuples as lists), to tell a resumed sweep from another one."""
        import dataclasses
        import json

        return json.loads(json.dumps(dataclasses.asdict(self.base) | {"run_dir": None}))

    def config(self, state: VariantState) -> RunConfig:
        """The variant's config; one whose record settings differ from the first variant's explains the first
        variant's latents (records.latents_from), so every variant is paired on the same latents."""
        cfg = apply_variant(self.base, Variant(tuple(state.settings.items())), Path(state.run_dir))
        if state.pinned is None:
            state.pinned = self._pin(state, cfg)
        if state.pinned:
            cfg.records = dataclasses.replace(cfg.records, latents_from=f"../{self.variants[0].name}")
        return cfg

    def _pin(self, state: VariantState, cfg: RunConfig) -> bool:
        """Pin a variant whose record settings differ from the first variant's (same seed: a variant of another
        seed is meant to draw another sample). A variant whose records were built before the decision was saved
        keeps what its run's saved config says they were built with."""
        if state.name == self.variants[0].name:
            return False
        built = Path(state.run_dir) / CONFIG_FILE
        if "records" in state.done and built.exists():
            return bool(read_json(built)["records"].get("latents_from"))
        anchor = self._first_records
        return cfg.records.seed == anchor.seed and cfg.records != anchor

    @functools.cached_property
    def _first_records(self):
        """The first variant's record settings (what every other variant's are compared with, once)."""
        first = self.variants[0]
        return apply_variant(self.base, Variant(tuple(first.settings.items())), Path(first.run_dir)).records


def open_sweep(path: Path, base: RunConfig, grid: Grid, variants: list[Variant]) -> Sweep:
    """A new sweep, or the saved one at `path` (whose grid must be the same: its variants' artefacts were made
    with it)."""
    saved = read_json(path / SWEEP_FILE) if (path / SWEEP_FILE).exists() else None
    states = {v["name"]: VariantState(**{k: v[k] for k in VariantState.__dataclass_fields__ if k in v})
              for v in (saved or {}).get("variants", [])}
    if saved is not None and saved["grid"] != grid.saved():
        raise LanternError(f"{path} is a sweep of another grid ({saved['grid']}); use another --sweep-dir")
    fresh = [VariantState(v.name, v.as_dict(), str(path / VARIANTS / v.name)) for v in variants]
    for state in states.values():  # saved relative to the sweep, so the sweep works from any directory
        state.run_dir = str(path / VARIANTS / state.name)
    return Sweep(path, base, grid, [states.get(v.name, v) for v in fresh])


def _link(target: Path, link: Path) -> None:
    """`link` → `target` (relative); an old link is replaced, anything else there is refused (never deleted)."""
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.exists():
        raise LanternError(f"{link} exists and is not the sweep's shared {target.name}; remove it or use another "
                           f"--sweep-dir")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


def prepare_variant(sweep: Sweep, state: VariantState, cfg: RunConfig) -> None:
    """The variant's run directory with its links to the shared cache, records and response cache."""
    run_dir = Path(state.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (sweep.path / CACHE).mkdir(parents=True, exist_ok=True)
    _link(sweep.path / CACHE, run_dir / CACHE)
    if not ("records" in state.done and (run_dir / RECORDS).is_symlink()):  # finished records stay where built
        shared_records = sweep.path / RECORDS / records_key(cfg)
        shared_records.mkdir(parents=True, exist_ok=True)
        _link(shared_records, run_dir / RECORDS)
    (sweep.path / RESPONSE_CACHE).touch(exist_ok=True)
    _link(sweep.path / RESPONSE_CACHE, run_dir / RESPONSE_CACHE)
    cfg.save()


def _made(state: VariantState) -> set[str]:
    return set(state.done) - set(state.reused)


def run_variant(sweep: Sweep, state: VariantState, pipeline_for) -> None:
    """The variant's stages, each skipped when done or reused from the variant that made it."""
    from lantern.pipeline.lock import run_lock

    cfg = sweep.config(state)
    Path(state.run_dir).mkdir(parents=True, exist_ok=True)
    with run_lock(state.run_dir):  # another command on this variant is refused while the sweep runs it
        prepare_variant(sweep, state, cfg)
        pipeline = pipeline_for(cfg)
        try:
            _stages(sweep, state, cfg, pipeline)
        finally:
            pipeline.release()  # e.g. the variant's own explainer model


def _stages(sweep: Sweep, state: VariantState, cfg: RunConfig, pipeline) -> None:
    """cache → records → explain → score; a stage whose artefact another variant of the sweep made (the cache
    always, records and explanations when their settings match) is reused, not redone."""
    shared_by = {"cache": lambda c: "one cache", "records": records_key, "explain": explain_key}
    copy_in = {"explain": lambda maker: _copy(Path(maker.run_dir) / EXPLANATIONS, Path(state.run_dir) / EXPLANATIONS)}
    for name, work in zip(STAGES, (pipeline.cache, pipeline.records, pipeline.explain, pipeline.score)):
        if name in state.done:
            continue
        key = shared_by.get(name)
        maker = None if key is None else next(
            (o for o in sweep.variants if o is not state and name in _made(o) and key(sweep.config(o)) == key(cfg)),
            None)
        started = time.perf_counter()
        if maker is None:
            work()
        else:
            copy_in.get(name, lambda _: None)(maker)  # cache and records: the variant's links already reach them
            state.reused.append(name)
            state.saved_seconds[name] = maker.seconds.get(name, 0.0)
        state.seconds[name] = round(time.perf_counter() - started, 3)
        state.done.append(name)
        state.usage = usage_totals(Path(state.run_dir))
        sweep.save()


def _copy(source: Path, target: Path) -> None:
    from lantern.io import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def run_sweep(sweep: Sweep, pipeline_for, on_variant=None) -> Sweep:
    """Every variant in grid order (those of `sweep.only` when set); `pipeline_for(cfg)` gives the Pipeline a
    variant runs on (sharing the loaded subject model and LLM client). A variant that fails with bad input is
    recorded and the sweep goes on."""
    sweep.save()
    for state in sweep.variants:
        if state.status == "done" or (sweep.only and state.name not in sweep.only):
            continue
        state.error = None
        if on_variant:
            on_variant(state)
        try:
            run_variant(sweep, state, pipeline_for)
        except LanternError as err:
            state.error = str(err)
            console.print(f"[red]variant {state.name} failed:[/red] {err}")
        sweep.save()
    return sweep


def sweep_stage_costs(path: Path) -> dict[str, dict]:
    """Per variant of the sweep at `path`: its status, wall seconds of the stages it ran and the seconds of those it
    reused (what the variant that made them spent), for the comparison's cost table; empty for plain run
    directories."""
    if not (Path(path) / SWEEP_FILE).exists():
        return {}
    return {v["name"]: {"status": v.get("status", "pending"), "stage_seconds": sum(v.get("seconds", {}).values()),
                        "saved_seconds": sum(v.get("saved_seconds", {}).values())}
            for v in read_json(Path(path) / SWEEP_FILE)["variants"]}


def comparison_inputs(paths: list[Path]) -> tuple[dict[str, Path], dict[str, str], dict[str, dict], Path]:
    """What `lantern compare` compares: a sweep's variants (label: the variant's name) or run directories (label:
    the directory's name), what each varied (as text and as settings), and the default output folder."""
    if len(paths) == 1 and (Path(paths[0]) / SWEEP_FILE).exists():
        saved = read_json(Path(paths[0]) / SWEEP_FILE)
        runs = {v["name"]: Path(paths[0]) / VARIANTS / v["name"] for v in saved["variants"]}
        grid = saved["grid"]["design"] == "grid"
        base = next((v for v in saved["variants"] if v["name"] == "base"), saved["variants"][0])["settings"]
        # a grid variant is named by all its settings; an ablation's by the one it changes from the base
        varied = {v["name"]: ", ".join(f"{k}={x}" for k, x in v["settings"].items() if grid or base.get(k) != x)
                  or "(the base)" for v in saved["variants"]}
        # an ablation's variants each change one setting from the base: the per-variant rows are per setting
        settings = {v["name"]: v["settings"] for v in saved["variants"]} if grid else {}
        return runs, varied, settings, Path(paths[0]) / "comparison"
    if len(paths) < 2:
        raise LanternError(f"{paths[0]} is not a sweep directory (no {SWEEP_FILE}); give a sweep, or two or more "
                           f"run directories to compare")
    runs: dict[str, Path] = {}
    for path in paths:
        label = Path(path).name
        runs[label if label not in runs else str(path)] = Path(path)
    return runs, {}, {}, Path(paths[0]) / "analysis" / "comparison"
