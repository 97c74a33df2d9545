"""Shared by tests/test_scorers_*.py: real records of the tiny Gemma 3's cached SAE, written into a run
directory with chosen explanations, and the pieces a scripted scorer LLM needs to know the truth."""
from __future__ import annotations

import math

import pyarrow.parquet as pq

from lantern.cache.reader import LatentCache
from lantern.config import RunConfig
from lantern.io import write_parquet
from lantern.llm.base import Capabilities, LLMClient, Request, Response
from lantern.pipeline.files import EXPLANATIONS, records_file
from lantern.records.build import RecordConfig, build_records
from lantern.score.settings import ScorerConfig

RECORDS = RecordConfig(ctx_len=12, tokens_before=6, n_explain=8, n_test_per_decile=1, n_negatives=4,
                       n_similar_negatives=0, n_neighbour_negatives=2, min_windows=20)


def make_run(tmp_path, built_cache, scorers: list[str], explanation=lambda latent: f"latent-{latent}",
             n_latents: int = 3, explained: int | None = None, few: bool = False, model: str = "tiny",
             **scoring) -> tuple[RunConfig, list[dict]]:
    """A run directory with real records of `n_latents` SAE latents and explanations for the first `explained`
    of them (all by default); `explanation(latent)` gives each one's text. `few`: keep only two activating and
    two negative test windows per latent (for tests that run the real model on every window)."""
    cache_dir, _, _ = built_cache
    cfg = RunConfig(run_dir=str(tmp_path / "run"), model=model, records=RECORDS, scorers=scorers,
                    scoring=ScorerConfig(**{"bootstrap_resamples": 200, **scoring}))
    table, _ = build_records(LatentCache(cache_dir, "sae"), RECORDS, n_latents=n_latents)
    rows = table.to_pylist()
    if few:
        rows = _two_of_each_kind(rows)
    write_parquet(records_file(cfg.path, "sae"), rows)
    (cfg.path / "cache").symlink_to(cache_dir, target_is_directory=True)  # the run's cache, as a real run has it
    latents = sorted({r["latent"] for r in rows})[:explained]
    write_parquet(cfg.path / EXPLANATIONS, [{"coder": "sae", "latent": latent, "explanation": explanation(latent),
                                             "candidate": 0, "failed": False, "prompt_tokens": 0} for latent in latents])
    return cfg, rows


def _two_of_each_kind(rows: list[dict]) -> list[dict]:
    kept, seen = [], {}
    for r in rows:
        key = (r["latent"], r["kind"])
        if r["split"] == "test":
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 2:
                continue
        kept.append(r)
    return kept


def scored_rows(rows: list[dict], latent: int | None = None) -> list[dict]:
    return [r for r in rows if r["split"] == "test" and (latent is None or r["latent"] == latent)]


def latent_of(explanation: str) -> int:
    return int(explanation.rsplit("-", 1)[1])


def digit_logprobs(value: float) -> dict[str, float]:
    """Log-probs over two neighbouring digits whose expected value is exactly `value` (0..9)."""
    low = min(int(math.floor(value)), 8)
    high_p = value - low
    out = {str(low): math.log(max(1 - high_p, 1e-300))}
    if high_p > 0:
        out[str(low + 1)] = math.log(high_p)
    return out


def read(cfg: RunConfig, name: str) -> list[dict]:
    return pq.read_table(cfg.path / name).to_pylist()


class ScriptedLLM(LLMClient):
    """A scripted scorer LLM: `answer(request)` gives each Response; it records every request it was sent."""

    backend, model_id = "scripted", "script"

    def __init__(self, answer, prompt_logprobs: bool = True, logprobs: bool = True):
        self.answer = answer
        self.capabilities = Capabilities(logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        self.requests: list[Request] = []

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        self.requests += batch
        return [self.answer(r) for r in batch]
