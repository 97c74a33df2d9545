"""The report of a sweep: every variant's own report, and SWEEP/report/index.html with the variants, what each
reused, and the paired comparison (`lantern compare`) with its figures."""
from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from lantern.analysis.common import read_rows
from lantern.io import atomic_path, read_json
from lantern.pipeline.files import SCORES
from lantern.report.build import REPORT, STATIC, _env, build_report

COMPARISON = "comparison"


def build_sweep_report(sweep_dir: Path, on_variant=None) -> dict:
    """Build each scored variant's report, then the sweep's page; returns its path and the variants reported."""
    sweep_dir = Path(sweep_dir)
    saved = read_json(sweep_dir / "sweep.json")
    out = sweep_dir / REPORT
    (out / "static").mkdir(parents=True, exist_ok=True)
    for name in STATIC:
        (out / "static" / name).write_bytes(resources.files("lantern.report").joinpath("static", name).read_bytes())
    variants = []
    for state in saved["variants"]:
        run_dir = sweep_dir / "variants" / state["name"]
        report = None
        if (run_dir / SCORES).exists():
            if on_variant:
                on_variant(state["name"])
            report = os.path.relpath(build_report(run_dir)["index"], out)
        variants.append({**state, "seconds": sum(state.get("seconds", {}).values()),
                         "saved": sum(state.get("saved_seconds", {}).values()), "usage": state.get("usage") or {},
                         "report": report})
    comparison_dir = sweep_dir / COMPARISON
    rows = [r for r in read_rows(comparison_dir / "paired.parquet") if r["coder"] == "all"]
    meta = read_json(comparison_dir / "comparison.json") if (comparison_dir / "comparison.json").exists() else {}
    figures = []
    for name in meta.get("files", []):
        if name.endswith(".png"):
            (out / COMPARISON).mkdir(exist_ok=True)
            shutil.copyfile(comparison_dir / name, out / COMPARISON / name)
            figures.append(f"{COMPARISON}/{name}")
    page = _env().get_template("sweep.html.j2").render(
        name=sweep_dir.name, path=str(sweep_dir), grid=saved["grid"]["vary"], design=saved["grid"]["design"], variants=variants, comparison=rows,
        baseline=meta.get("baseline"), notes=meta.get("notes", []), figures=figures, root="")
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"index": out / "index.html", "variants": sum(v["report"] is not None for v in variants)}
