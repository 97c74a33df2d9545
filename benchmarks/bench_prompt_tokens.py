"""Prompt tokens per latent for explain + detection + fuzzing, counted with the Gemma tokenizer on real records.

Builds exactly the requests the stages send (default explainer; detection and fuzzing of the test split) for
the recorded latents of a run directory, with a fixed 9-word explanation standing in for the LLM's answer
(the default run's explanations average about that length), and counts their tokens (+1 BOS each). Also
reports the longest prefix every prompt of a kind shares byte for byte (what a server's prefix cache reuses).

    lantern cache --run-dir /tmp/ptok --coders sae && lantern records --run-dir /tmp/ptok
    python benchmarks/bench_prompt_tokens.py /tmp/ptok

delphi's own prompt builders, counted by ../shared/baselines/delphi (same tokenizer): 41 calls and 35,389 prompt
tokens per latent with its CLI default of 5 examples per scorer prompt; 201 calls and 137,709 with 1.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from lantern.config import RunConfig
from lantern.explain.registry import explainer_for
from lantern.models.loading import load_tokenizer
from lantern.pipeline.explain_stage import gather_evidence
from lantern.pipeline.common import examples_by_latent
from lantern.pipeline.files import records_file
from scorer_prompts import scorer_items as _items, scorer_request as _request

EXPLANATION = "the word \"of\" linking a noun to a following noun phrase"
DELPHI = {"calls": 41, "prompt_tokens": 35_389}


def shared_prefix_tokens(tokenizer, prompts: list[str]) -> int:
    prefix = os.path.commonprefix(prompts)
    return len(tokenizer(prefix, add_special_tokens=False).input_ids) if prefix else 0


def main(run_dir: str) -> None:
    cfg = RunConfig.load(run_dir)
    tokenizer = load_tokenizer(cfg.model)
    count = lambda prompt: 1 + len(tokenizer(prompt, add_special_tokens=False).input_ids)  # noqa: E731
    explainer = explainer_for(cfg.explainer)
    evidence = gather_evidence(cfg)
    per_stage = {"explain": [], "detection": [], "fuzzing": []}
    prompts = {"explain": [], "detection": [], "fuzzing": []}
    for e in evidence:
        rows = examples_by_latent(records_file(cfg.path, e.coder))[e.latent]
        explain = [r.prompt for r in explainer.requests(tokenizer, e, cfg.explainer)]
        per_stage["explain"].append((len(explain), sum(map(count, explain))))
        prompts["explain"] += explain
        for scorer in ("detection", "fuzzing"):
            scored = [_request(scorer, tokenizer, EXPLANATION, item).prompt for item in _items(scorer, rows, cfg)]
            per_stage[scorer].append((len(scored), sum(map(count, scored))))
            prompts[scorer] += scored
    out = {"latents": len(evidence), "stages": {}}
    for stage, values in per_stage.items():
        calls, tokens = np.array(values).T
        out["stages"][stage] = {"calls_per_latent": float(calls.mean()), "prompt_tokens_per_latent": float(tokens.mean()),
                                "shared_prefix_tokens": shared_prefix_tokens(tokenizer, prompts[stage])}
    total_calls = sum(s["calls_per_latent"] for s in out["stages"].values())
    total_tokens = sum(s["prompt_tokens_per_latent"] for s in out["stages"].values())
    out["total"] = {"calls_per_latent": total_calls, "prompt_tokens_per_latent": total_tokens,
                    "vs_delphi_cli_default": round(total_tokens / DELPHI["prompt_tokens"], 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
