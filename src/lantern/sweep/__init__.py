"""`lantern sweep`: the paper's ablations as one command (grid.py: the settings varied; plan.py: what is shared
and what it costs; run.py: running the variants)."""
from __future__ import annotations

from pathlib import Path

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors.base import ExecutorConfig
from lantern.sweep.grid import Grid, check_grid
from lantern.sweep.plan import estimate
from lantern.sweep.run import SWEEP_FILE, VARIANTS, Sweep, open_sweep, run_sweep


def plan_sweep(sweep_dir: Path, base: RunConfig, grid: Grid, budget_hours: float | None = None,
               only: list[str] | None = None) -> Sweep:
    """The sweep with every variant checked and the cost of what is left estimated; refused when the estimate
    exceeds the budget."""
    variants = check_grid(base, grid)
    sweep = open_sweep(sweep_dir, base, grid, variants)
    saved = sweep.path / SWEEP_FILE
    if saved.exists():
        from lantern.io import read_json

        before, now = read_json(saved).get("base_run"), sweep.base_json()
        if before is not None:  # a setting added to lantern since the sweep began counts as its default then
            before = with_defaults(before, Sweep(sweep.path, RunConfig(run_dir="unused"), grid, []).base_json())
        if before is not None and before != now:
            changed = sorted(k for k in before if before.get(k) != now.get(k))
            raise LanternError(f"{sweep_dir} is a sweep made with other base settings ({', '.join(changed)}); "
                               f"use another --sweep-dir")
    if only:
        names = [v.name for v in sweep.variants]
        unknown = [name for name in only if name not in names]
        if unknown:
            raise LanternError(f"--only: this sweep has no variant {'; '.join(map(repr, unknown))}; its variants "
                               f"(one whole name per --only): {'; '.join(names)}")
        sweep.only = list(only)
        first = sweep.variants[0]
        pinned = [v.name for v in sweep.variants if v.name in only and v.status != "done"
                  and sweep.config(v).records.latents_from]
        if pinned and first.name not in only and "records" not in first.done:
            raise LanternError(f"--only {'; '.join(pinned)}: these explain the latents of the first variant "
                               f"{first.name!r}, whose records are not built yet; add --only {first.name}")
    sweep.cost = estimate([sweep.config(v) for v in sweep.variants], [set(v.done) for v in sweep.variants],
                          None if not only else [v.name in only for v in sweep.variants])
    if budget_hours is not None and sweep.cost.hours > budget_hours:
        raise LanternError(f"this sweep would take {sweep.cost.describe()}, over --budget-hours {budget_hours:g}: "
                           f"vary fewer settings, or lower --latents")
    return sweep


def with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with every key it lacks (at any depth) taken from `defaults`."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = with_defaults(out[key], value)
    return out


def execute(sweep: Sweep, executor_cfg: ExecutorConfig, client=None) -> Sweep:
    """Run the sweep's variants over one executor, one subject model and one client per LLM (`client`: one
    already made, used by every variant)."""
    from lantern.executors.base import make_executor
    from lantern.llm.factory import make_client
    from lantern.pipeline.orchestrator import Pipeline

    executor = make_executor(executor_cfg)
    clients: dict[tuple, object] = {}
    shared = Pipeline(sweep.base, executor)

    def pipeline_for(cfg: RunConfig) -> Pipeline:
        if client is not None:
            return Pipeline(cfg, executor, subject=shared.load_subject(), client=client)
        made = None
        if executor.name == "local":
            key = (cfg.llm.url, cfg.llm.model, cfg.llm.backend, cfg.llm.api)
            if key not in clients:
                clients[key] = make_client(cfg.llm, sweep.path, shared.load_subject())
            made = clients[key]
        return Pipeline(cfg, executor, subject=shared.load_subject(), client=made)

    try:
        run_sweep(sweep, pipeline_for)
    finally:
        for made_client in clients.values():
            made_client.close()
        executor.close()
    return sweep


__all__ = ["plan_sweep", "execute", "Sweep", "VARIANTS"]
