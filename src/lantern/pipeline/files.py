"""Paths inside a run directory."""
from pathlib import Path

CACHE = "cache"
RECORDS = "records"
EXPLANATIONS = "explanations.parquet"
SCORES = "scores.parquet"
EXAMPLES = "examples.parquet"
SUMMARY = "summary.json"
SELECTION = "selection.parquet"
USAGE_PER_LATENT = "usage_per_latent.parquet"


def records_file(run_dir: Path, coder: str) -> Path:
    return Path(run_dir) / RECORDS / f"{coder}.parquet"


def latents_file(run_dir: Path, coder: str) -> Path:
    return Path(run_dir) / RECORDS / f"{coder}.latents.parquet"
