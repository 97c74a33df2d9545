"""The detection / fuzzing items and prompts a run's scorers send, rebuilt from records without a scorer context,
for the benchmarks that count prompt tokens (bench_prompt_tokens.py, bench_scale.py). Run those as scripts
(`python benchmarks/<name>.py`), which puts this folder on the import path."""
from __future__ import annotations

from lantern.config import RunConfig
from lantern.llm.base import Request
from lantern.score import detection, fuzzing


def scorer_items(scorer: str, examples: list[dict], cfg: RunConfig) -> list[dict]:
    """Detection / fuzzing items of the test split, as the scorer builds them."""
    if scorer == "detection":
        return detection.items(examples)
    return fuzzing.items(examples, cfg.explainer.mark_threshold, cfg.seed)


def scorer_request(scorer: str, tokenizer, explanation: str, item: dict) -> Request:
    """The judge request the scorer sends for one item."""
    return (detection if scorer == "detection" else fuzzing).request(tokenizer, explanation, item)
