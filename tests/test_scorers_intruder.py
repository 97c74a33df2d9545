"""Intruder on real records of the tiny Gemma 3's SAE: a chooser that knows which latent each window belongs to
finds every intruder (accuracy 1, far above chance 1/5); one that always answers 1 sits near chance; answers
that cannot be read are counted; a coder with a single latent is a clear error."""
from __future__ import annotations

import math

import pytest

from lantern.errors import LanternError
from lantern.explain.format import activation_marks, marked_text
from lantern.llm.base import Request, Response
from lantern.pipeline.score_stage import run_score
from scorer_runs import ScriptedLLM, make_run, read, scored_rows


def passages(prompt: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in prompt.splitlines() if line.startswith("[") and "] " in line]


class KnowingChooser:
    """Knows which latent marked each passage; answers with the one whose latent is in the minority."""

    def __init__(self, rows, tokenizer, threshold=0.3):
        self.owner: dict[str, set[int]] = {}
        for r in scored_rows(rows):
            if r["kind"] == "activating":
                text = marked_text(tokenizer, r["tokens"], activation_marks(r["activations"], threshold))
                self.owner.setdefault(text, set()).add(r["latent"])

    def __call__(self, request: Request) -> Response:
        shown = passages(request.prompt)
        owners = [self.owner[text] for text in shown]
        counts = {}
        for latents in owners:
            for latent in latents:
                counts[latent] = counts.get(latent, 0) + 1
        majority = max(counts, key=counts.get)
        odd = next(i for i, latents in enumerate(owners, 1) if majority not in latents)
        logprobs = {str(n): math.log(0.9 if n == odd else 0.025) for n in range(1, len(shown) + 1)}
        return Response(text=str(odd), first_token_logprobs=logprobs, prompt_tokens=100, completion_tokens=1)


def test_a_knowing_chooser_finds_every_intruder(tmp_path, built_cache, tokenizer):
    cfg, rows = make_run(tmp_path, built_cache, ["intruder"])
    client = ScriptedLLM(KnowingChooser(rows, tokenizer))
    run_score(cfg, client, tokenizer)
    scores = read(cfg, "scores.parquet")
    assert len(scores) == 3
    for s in scores:
        n_windows = sum(r["kind"] == "activating" for r in scored_rows(rows, s["latent"]))
        # disjoint trials (each window in one), as many as silent intruders of the 2 other latents allow
        assert 1 <= s["n"] <= n_windows // 4 and s["n_failed"] == 0
        assert s["accuracy"] == 1.0 and s["score"] == 1.0 and s["chance"] == pytest.approx(0.2)
        assert s["p_value"] == pytest.approx(0.2 ** s["n"])  # exact binomial: every one of n right by chance
        assert s["with_explanation"] is False
    assert all(len(passages(r.prompt)) == 5 and "description" not in r.prompt for r in client.requests)
    answers = [e["label"] for e in read(cfg, "examples.parquet")]
    assert len(set(answers)) > 2  # the intruder's place varies
    assert {u["task"] for u in read(cfg, "usage/score.parquet")} == {"intruder"}
    by_decile = [r for r in read(cfg, "scores_by_decile.parquet") if r["latent"] is None]
    assert by_decile and all(r["accuracy"] == 1.0 for r in by_decile)


def test_always_answering_one_sits_near_chance_and_unreadable_answers_are_counted(tmp_path, built_cache, tokenizer):
    cfg, rows = make_run(tmp_path, built_cache, ["intruder"], intruder_explanation=True)
    seen = []

    def answer(request: Request) -> Response:
        seen.append(request)
        if len(seen) % 5 == 0:
            return Response(text="I cannot tell", first_token_logprobs={" I": 0.0})
        return Response(text="1", first_token_logprobs={"1": math.log(0.6), "2": math.log(0.4)})

    run_score(cfg, ScriptedLLM(answer), tokenizer)
    scores = read(cfg, "scores.parquet")
    assert sum(s["n_failed"] for s in scores) == len(seen) // 5
    assert sum(s["n"] + s["n_failed"] for s in scores) == len(seen)
    assert all(s["accuracy"] <= 0.6 and s["with_explanation"] for s in scores)
    assert all("The shared feature has this description: latent-" in r.prompt for r in seen)
    examples = read(cfg, "examples.parquet")
    assert sum(e["read_as"] == "failed" for e in examples) == len(seen) // 5
    assert all(e["correct"] is None for e in examples if e["read_as"] == "failed")  # failed is not "wrong"


def test_a_coder_with_one_latent_is_skipped_with_a_reason(tmp_path, built_cache, tokenizer):
    """Audit defect: `--latents 1` made the intruder scorer raise and abort the whole score stage."""
    cfg, _ = make_run(tmp_path, built_cache, ["intruder"], n_latents=1)
    client = ScriptedLLM(lambda r: Response(text="1"))
    run_score(cfg, client, tokenizer)
    (score,) = read(cfg, "scores.parquet")
    assert score["n"] == 0 and math.isnan(score["accuracy"]) and "record more latents" in score["note"]
    assert not client.requests


def test_every_intruder_is_silent_for_the_scored_latent_and_used_once(tmp_path, built_cache, tokenizer):
    """Audit defect: the intruding window was never checked against the scored latent, and trials overlapped."""
    from lantern.cache.reader import LatentCache

    cfg, rows = make_run(tmp_path, built_cache, ["intruder"])
    run_score(cfg, ScriptedLLM(KnowingChooser(rows, tokenizer)), tokenizer)
    examples = read(cfg, "examples.parquet")
    coder = examples[0]["coder"]
    cache = LatentCache(cfg.path / "cache", coder)
    ctx = cfg.records.ctx_len
    for latent in {e["latent"] for e in examples}:
        trials = [e for e in examples if e["latent"] == latent]
        assert trials
        starts = [e["start"] for e in trials]
        assert len(starts) == len(set(starts))  # each intruder once per latent
        tokens, _ = cache.activations(latent)
        for start in starts:
            assert not ((tokens >= start) & (tokens < start + ctx)).any()
