"""Write the report: index.html (the latent table rendered in the browser from data/latents.js, paginated), one
static page per latent, the analyses' figures. Built in a staging folder beside the old report and swapped in
at the end, so a failed build leaves the previous report as it was."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import jinja2

from lantern.errors import LanternError
from lantern.io import read_json
from lantern.pipeline.files import SUMMARY
from lantern.report.data import RunData, load_run
from lantern.report.latent_page import PieceTable, chosen_candidate, finite, fmt, latent_view
from lantern.progress import progress_bar

REPORT = "report"
INDEX_DATA = "data/latents.js"
INDEX_GLOBAL = "LANTERN_INDEX"
"""The table data is a script assigning this global (browsers block fetch() of local files under file://)."""
STATIC = ("report.css", "index.js")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("lantern.report", "templates"),
                             autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def page_path(coder: str, latent: int) -> str:
    """A latent page's path inside the report (coder names may hold characters a file name should not)."""
    return f"latents/{re.sub(r'[^A-Za-z0-9._-]', '_', coder)}/{int(latent)}.html"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _chosen_explanation(rows: list[dict], selection: list[dict]) -> str | None:
    chosen = chosen_candidate(rows, selection)
    return next((r.get("explanation") for r in rows if (r.get("candidate") or 0) == chosen), None)


def index_rows(data: RunData) -> tuple[list[dict], dict]:
    """One row per latent of every coder (the sampled latents, and any other with results), and the table
    data written to data/latents.js: columns kept as arrays, one array per latent."""
    rows, table = [], []
    for ci, coder in enumerate(data.coders):
        summaries = {s["latent"]: s for s in data.latents.get(coder, [])}
        with_results = {key[1] for grouped in (data.explanations, data.scores)
                        for key in grouped.keys_present() if key[0] == coder}
        for latent in sorted(set(summaries) | with_results):
            summary = summaries.get(latent, {})
            scores = {r["scorer"]: r for r in data.scores.rows(coder, latent)}
            has_page = bool(summary.get("has_record", True)) or latent in with_results
            explanation = _chosen_explanation(data.explanations.rows(coder, latent),
                                              data.selection.rows(coder, latent))
            rows.append({"coder": coder, "latent": latent, "summary": summary, "has_page": has_page})
            table.append([ci, int(latent), explanation, _json_safe(summary.get("firing_rate")),
                          _json_safe(summary.get("max")), page_path(coder, latent) if has_page else None,
                          [_json_safe([scores[s].get("score"), scores[s].get("score_ci_low"),
                                       scores[s].get("score_ci_high")]) if s in scores else None
                           for s in data.scorers]])
    metrics = {}
    for coder, latent in data.scores.keys_present():
        for r in data.scores.rows(coder, latent):
            metrics.setdefault(r["scorer"], r.get("metric"))
        if len(metrics) == len(data.scorers):
            break
    payload = {"coders": data.coders, "scorers": [{"name": s, "metric": metrics.get(s)} for s in data.scorers],
               "columns": ["coder", "latent", "explanation", "firing_rate", "max", "href", "scores"], "rows": table}
    return rows, payload


def _run_facts(data: RunData) -> list[tuple[str, str]]:
    cfg = data.config
    llm = cfg.llm.model or ("the subject model, in-process" if not cfg.llm.url else "default")
    return [("run directory", str(data.run_dir.resolve())), ("model", cfg.model), ("corpus", cfg.corpus),
            ("tokens", fmt(cfg.tokens)), ("coders", ", ".join(data.coders) or "–"),
            ("explainer", f"{cfg.explainer.kind} ({cfg.explainer.candidates} candidate(s) per latent)"),
            ("scorers", ", ".join(data.scorers) or "none yet"),
            ("LLM", llm + (f" at {cfg.llm.url}" if cfg.llm.url else ""))]


def _summary_rows(data: RunData) -> list[dict]:
    path = data.run_dir / SUMMARY
    if not path.exists():
        return []
    out = []
    for r in read_json(path).get("rows", []):
        half = r.get("score_ci95")
        out.append({"coder": r.get("coder"), "scorer": r.get("scorer"), "metric": r.get("metric") or "",
                    "latents": fmt(r.get("latents")),
                    "score": fmt(r.get("score")) + (f" ± {fmt(half)}" if finite(half) else ""),
                    "failed": fmt(r.get("failed_answers"))})
    return out


def _analyses(data: RunData) -> list[dict]:
    out = []
    for entry in data.analyses:
        images, tables = [], []
        for path in entry["files"]:
            link = Path("..") / path.relative_to(data.run_dir)  # the report sits in the run directory
            (images if path.suffix.lower() in (".png", ".svg") else tables).append(
                {"href": link.as_posix(), "name": path.name})
        # one picture per figure: the PNG where both formats exist, the SVG linked beside it
        stems = {Path(i["name"]).stem for i in images if i["name"].lower().endswith(".png")}
        shown = [i for i in images if i["name"].lower().endswith(".png") or Path(i["name"]).stem not in stems]
        linked = [i for i in images if i not in shown]
        out.append({**entry, "images": shown, "links": linked + tables})
    return out


class _VocabPieces:
    """A tokenizer.json read with `tokenizers` alone: ids to pieces is all the report needs, and this loads in a
    fraction of the time transformers takes for a 262k vocabulary."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) or "" for i in ids]


def load_report_tokenizer(model: str):
    """The run model's vocabulary: its tokenizer.json where the model is a local folder (or the embedded one),
    else the tokenizer transformers loads."""
    if model == "embedded":
        from lantern.models.loading import embedded_model_dir

        folder = embedded_model_dir()
    else:
        folder = Path(model)
    if (folder / "tokenizer.json").is_file():
        return _VocabPieces(folder / "tokenizer.json")
    from lantern.models.loading import load_tokenizer

    try:
        return load_tokenizer(model)
    except (OSError, ValueError) as err:
        raise LanternError(f"cannot load the tokenizer of model {model!r} to show the tokens of the records: "
                           f"{str(err).splitlines()[0]}") from err


def build_report(run_dir: str | Path, tokenizer=None) -> dict:
    """Write RUN_DIR/report/. `tokenizer`: the run model's tokenizer (loaded from the run's config if not given).
    Returns the index path, the latent count and the seconds taken."""
    started = time.perf_counter()
    data = load_run(Path(run_dir))
    rows, payload = index_rows(data)
    if tokenizer is None and any(r["has_page"] for r in rows):
        tokenizer = load_report_tokenizer(data.config.model)
    pieces = PieceTable(tokenizer)
    env = _env()
    target = data.run_dir / REPORT
    staging = Path(tempfile.mkdtemp(prefix=f".{REPORT}-", dir=data.run_dir))
    staging.chmod(_DIR_MODE)  # mkdtemp's 0700 would make the report private
    try:
        (staging / "data").mkdir()
        (staging / "static").mkdir()
        for name in STATIC:
            asset = resources.files("lantern.report").joinpath("static", name)
            (staging / "static" / name).write_bytes(asset.read_bytes())
        (staging / INDEX_DATA).write_text(f"window.{INDEX_GLOBAL} = " + json.dumps(payload, separators=(",", ":"))
                                          + ";\n", encoding="utf-8")
        index = env.get_template("index.html.j2").render(
            facts=_run_facts(data), summary=_summary_rows(data), analyses=_analyses(data),
            n_latents=len(rows), scorers=payload["scorers"], coders=data.coders, data_file=INDEX_DATA, root="")
        (staging / "index.html").write_text(index, encoding="utf-8")
        latent_template = env.get_template("latent.html.j2")
        with progress_bar() as bar:
            pages = [row for row in rows if row["has_page"]]
            task = bar.add_task("report pages", total=len(pages))
            for row in pages:
                view = latent_view(data, row["coder"], row["latent"], pieces, row["summary"])
                path = staging / page_path(row["coder"], row["latent"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(latent_template.render(v=view, root="../../"), encoding="utf-8")
                bar.advance(task)
        _swap_in(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return {"index": target / "index.html", "latents": len(rows), "pages": sum(r["has_page"] for r in rows),
            "seconds": time.perf_counter() - started}


def _dir_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


_DIR_MODE = _dir_mode()


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the old report by the new one: two renames (the old one is deleted only after)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{time.time_ns()}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old)
