"""LLM accounting: every call's tokens, latency, cache hit, retries and failure, per stage, summed per latent.

`usage/<stage>.parquet` holds one row per call; `usage_per_latent()` sums them per (coder, latent, stage) for
the summary and reports. Tokens of cache hits are counted apart: they are what the answer cost once, not
what this run paid. `evaluated_prompt_tokens` is what the engine actually computed: an in-process llama.cpp
reuses the KV cache of the prefix a prompt shares with the one before and says how many it evaluated; for other
backends every paid prompt token counts as evaluated (a server's own prefix cache is not visible here).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern.io import write_parquet
from lantern.llm.base import Response

USAGE = "usage"


def usage_file(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / USAGE / f"{stage}.parquet"


def write_usage(run_dir: Path, stage: str, tags: list[dict], responses: list[Response]) -> None:
    """One row per call: the caller's tags (coder, latent, task) and what the call cost."""
    rows = []
    for tag, r in zip(tags, responses):
        rows.append({"stage": stage, "coder": tag["coder"], "latent": int(tag["latent"]), "task": tag["task"],
                     "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                     "evaluated_prompt_tokens": 0 if r.cached else int(r.extra.get("evaluated_tokens", r.prompt_tokens)),
                     "seconds": float(r.seconds), "cached": bool(r.cached), "attempts": int(r.attempts),
                     "retry_reasons": "; ".join(r.retry_reasons), "failed": r.error is not None, "error": r.error})
    write_parquet(usage_file(run_dir, stage), rows)


def usage_per_latent(run_dir: Path) -> pa.Table | None:
    """Sums per (coder, latent, stage): calls, cache hits, tokens paid and cached, seconds (`seconds` counts a cache
    hit at what its answer once took; `cached_seconds` is that part: LLM time the response cache saved), retries,
    failures."""
    files = sorted((Path(run_dir) / USAGE).glob("*.parquet"))
    if not files:
        return None
    calls = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    paid = pc.invert(calls.column("cached"))
    if "evaluated_prompt_tokens" not in calls.column_names:  # usage written before the column existed
        calls = calls.append_column("evaluated_prompt_tokens", pc.if_else(paid, calls.column("prompt_tokens"), 0))
    else:
        calls = calls.set_column(calls.column_names.index("evaluated_prompt_tokens"), "evaluated_prompt_tokens",
                                 pc.fill_null(calls.column("evaluated_prompt_tokens"),
                                              pc.if_else(paid, calls.column("prompt_tokens"), 0)))
    calls = calls.append_column("paid_prompt_tokens", pc.if_else(paid, calls.column("prompt_tokens"), 0))
    calls = calls.append_column("paid_completion_tokens", pc.if_else(paid, calls.column("completion_tokens"), 0))
    calls = calls.append_column("retries", pc.subtract(calls.column("attempts"), 1))
    calls = calls.append_column("cached_seconds", pc.if_else(paid, 0.0, calls.column("seconds")))
    sums = {"calls": ("task", "count"), "cache_hits": ("cached", "sum"), "prompt_tokens": ("prompt_tokens", "sum"),
            "completion_tokens": ("completion_tokens", "sum"), "paid_prompt_tokens": ("paid_prompt_tokens", "sum"),
            "paid_completion_tokens": ("paid_completion_tokens", "sum"),
            "evaluated_prompt_tokens": ("evaluated_prompt_tokens", "sum"), "seconds": ("seconds", "sum"),
            "cached_seconds": ("cached_seconds", "sum"), "retries": ("retries", "sum"), "failed": ("failed", "sum")}
    keys = ["coder", "latent", "stage"]
    grouped = calls.group_by(keys).aggregate(list(sums.values()))
    return grouped.select(keys + [f"{col}_{fn}" for col, fn in sums.values()]).rename_columns(keys + list(sums))


USAGE_TOTALS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "paid_prompt_tokens",
                "paid_completion_tokens", "seconds", "cached_seconds")


def usage_totals(run_dir: Path) -> dict[str, float]:
    """The run's LLM calls summed over latents and stages (USAGE_TOTALS); empty when it made none."""
    table = usage_per_latent(run_dir)
    if table is None:
        return {}
    return {name: float(sum(v or 0 for v in table.column(name).to_pylist())) for name in USAGE_TOTALS}
