"""The embedded 1.5B and 0.5B instruct models as explainers of the same SAE latents and windows, each scored by
both models as judges: does the bigger explainer win, by how much, at what cost?

One run directory holds the cache and records (built once); each explainer's explanations are kept as
`compare/<explainer>.explanations.parquet` and each (explainer, judge) pair's scores as
`compare/<explainer>.by-<judge>.scores.parquet`. Prints per pair the mean detection AUROC and balanced accuracy
over latents with a 95% t-interval, and per explainer seconds and tokens per latent.

    python benchmarks/compare_explainers.py --run-dir runs/compare-explainers --latents 8

`--models A,B` compares other LLMs (any `--llm-model` value; files are named after each one's last path part),
e.g. at the smallest size: `--latents 1 --tokens 2048 --models DIR_A,DIR_B` with two tiny Hugging Face models.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lantern.config import LLMConfig, RunConfig
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.pipeline.cache_stage import run_cache
from lantern.pipeline.explain_stage import run_explain
from lantern.pipeline.files import EXPLANATIONS, SCORES
from lantern.pipeline.records_stage import run_records
from lantern.pipeline.score_stage import run_score
from lantern.validate.report import mean_interval

MODELS = ("embedded", "embedded-0.5b")


def label(model: str) -> str:
    """A model's name in file names and tables: an embedded LLM's name, or a path's last part."""
    return Path(model).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/compare-explainers"))
    parser.add_argument("--latents", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--scorers", default="detection")
    parser.add_argument("--models", default=",".join(MODELS), help="the LLMs compared, each as explainer and judge")
    args = parser.parse_args()
    models = args.models.split(",")
    names = {model: label(model) for model in models}
    if len(set(names.values())) != len(models):
        parser.error(f"--models need distinct names: {sorted(names.values())}")
    subject = load_subject_model("embedded")
    if (args.run_dir / "config.json").exists():
        cfg = RunConfig.load(args.run_dir)
    else:
        cfg = RunConfig(run_dir=str(args.run_dir), coders=["sae"], latents=args.latents, tokens=args.tokens,
                        scorers=args.scorers.split(","))
        cfg.save()
    run_cache(cfg, subject)
    run_records(cfg)
    out = cfg.path / "compare"
    out.mkdir(exist_ok=True)
    for explainer in models:
        saved = out / f"{names[explainer]}.explanations.parquet"
        if not saved.exists():
            cfg.llm = LLMConfig(model=explainer)
            client = make_client(cfg.llm, cfg.path)
            run_explain(cfg, client, subject.tokenizer, subject)
            client.close()
            shutil.copyfile(cfg.path / EXPLANATIONS, saved)
    for judge in models:
        cfg.llm = LLMConfig(model=judge)
        client = make_client(cfg.llm, cfg.path)
        for explainer in models:
            saved = out / f"{names[explainer]}.by-{names[judge]}.scores.parquet"
            if saved.exists():
                continue
            shutil.copyfile(out / f"{names[explainer]}.explanations.parquet", cfg.path / EXPLANATIONS)
            run_score(cfg, client, subject.tokenizer, subject)
            shutil.copyfile(cfg.path / SCORES, saved)
        client.close()
    shown = [names[m] for m in models]
    print("| explainer | judge | scorer | AUROC (95% CI) | balanced acc. (95% CI) | latents scored | failed expl. |")
    print("|---|---|---|---|---|---|---|")
    for explainer in shown:
        explained = pq.read_table(out / f"{explainer}.explanations.parquet").to_pylist()
        for judge in shown:
            rows = pq.read_table(out / f"{explainer}.by-{judge}.scores.parquet").to_pylist()
            for scorer in cfg.scorers:
                mine = [r for r in rows if r["scorer"] == scorer]
                cells = []
                for metric in ("auroc", "balanced_accuracy"):
                    m, lo, hi = mean_interval([r[metric] for r in mine if r.get(metric) is not None
                                               and np.isfinite(r[metric])])
                    cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}]")
                print(f"| {explainer} | {judge} | {scorer} | {cells[0]} | {cells[1]} | {len(mine)} | "
                      f"{sum(r['failed'] for r in explained)} |")
    print("\n| explainer | s/latent | prompt tok./latent | completion tok./latent |")
    print("|---|---|---|---|")
    for explainer in shown:
        explained = [r for r in pq.read_table(out / f"{explainer}.explanations.parquet").to_pylist()]
        print(f"| {explainer} | {np.mean([r['seconds'] for r in explained]):.1f} | "
              f"{np.mean([r['prompt_tokens'] for r in explained]):.0f} | "
              f"{np.mean([r['completion_tokens'] for r in explained]):.0f} |")
    print(f"\nexplanations (latent: {' | '.join(shown)}):")
    by = {m: {r["latent"]: r["explanation"] for r in pq.read_table(out / f"{m}.explanations.parquet").to_pylist()}
          for m in shown}
    for latent in sorted(by[shown[0]]):
        print(f"  {latent}: " + " | ".join(str(by[m].get(latent)) for m in shown))


if __name__ == "__main__":
    main()
