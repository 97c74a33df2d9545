"""Simulation on real records of the tiny Gemma 3's SAE: a scripted simulator that knows the true activations
must score a correlation of 1 in both modes (one call per window with prompt log-probs, one call per token
without); failed reads are counted, never dropped silently; the real in-process model runs the one-call path."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lantern.llm.base import Request, Response
from lantern.llm.transformers_client import TransformersClient
from lantern.pipeline.score_stage import run_score
from lantern.score.echo import covering, token_spans
from lantern.score.simulation import SLOT, TOKEN_PROMPT_HEAD, shown_token, token_prompt, window_prompt
from lantern.text import token_strings
from scorer_runs import ScriptedLLM, digit_logprobs, latent_of, make_run, read, scored_rows


class PerfectSimulator:
    """Answers simulation prompts with the true activations scaled to 0-9 (per latent maximum)."""

    def __init__(self, rows: list[dict], tokenizer, echo_fails_for: set[tuple] = frozenset()):
        self.by_window, self.by_token = {}, {}
        self.echo_fails_for = echo_fails_for
        peak = {}
        for r in scored_rows(rows):
            peak[r["latent"]] = max(peak.get(r["latent"], 0.0), max(r["activations"]))
        for r in scored_rows(rows):
            values = [9 * a / peak[r["latent"]] for a in r["activations"]]
            shown = tuple(shown_token(p) for p in token_strings(tokenizer, r["tokens"]))
            self.by_window[(r["latent"], shown)] = values
            for i, value in enumerate(values):
                marked = token_prompt(tokenizer, f"latent-{r['latent']}", r["tokens"], i).rsplit("Text: ", 1)[1]
                self.by_token[(r["latent"], marked)] = value

    def __call__(self, request: Request) -> Response:
        latent = latent_of(request.prompt.rsplit("Feature: ", 1)[1].split("\n", 1)[0])
        if not request.prompt_logprobs:
            value = self.by_token[(latent, request.prompt.rsplit("Text: ", 1)[1])]
            return Response(text=str(round(value)), first_token_logprobs=digit_logprobs(value), prompt_tokens=50,
                            completion_tokens=1)
        target = request.prompt.rindex("Token\tactivation\n") + len("Token\tactivation\n")
        lines = request.prompt[target:].splitlines()
        shown = tuple(line.rsplit("\t", 1)[0] for line in lines)
        if (latent, shown) in self.echo_fails_for:
            return Response(text="0", prompt_tokens=50, completion_tokens=1)  # a server that did not echo
        values = iter(self.by_window[(latent, shown)])
        entries, offset = [], 0
        for piece in re.findall(r"\t|\n|[^\t\n]+", request.prompt):
            slot = offset >= target and piece == SLOT
            entries.append([piece, -1.0, digit_logprobs(next(values)) if slot else {piece: 0.0}])
            offset += len(piece)
        return Response(text="0", prompt_tokens=len(entries), completion_tokens=1, extra={"prompt": entries})


@pytest.mark.parametrize("prompt_logprobs", [True, False], ids=["one-call-per-window", "one-call-per-token"])
def test_a_perfect_simulator_correlates_perfectly(tmp_path, built_cache, tokenizer, prompt_logprobs):
    cfg, rows = make_run(tmp_path, built_cache, ["simulation"], explained=1 if not prompt_logprobs else None)
    client = ScriptedLLM(PerfectSimulator(rows, tokenizer), prompt_logprobs=prompt_logprobs)
    run_score(cfg, client, tokenizer)
    scores = read(cfg, "scores.parquet")
    mode = "prompt-logprobs" if prompt_logprobs else "per-token"
    windows = {s["latent"]: scored_rows(rows, s["latent"]) for s in scores}
    assert len(client.requests) == sum(len(w) * (1 if prompt_logprobs else 12) for w in windows.values())
    assert all(r.prompt_logprobs == prompt_logprobs and r.max_tokens == 1 for r in client.requests)
    for s in scores:
        assert s["mode"] == mode and s["metric"] == "pearson"
        assert s["pearson"] == pytest.approx(1.0) and s["score"] == pytest.approx(1.0)
        assert s["spearman"] == pytest.approx(1.0)
        assert s["pearson_ci_low"] <= 1.0 + 1e-9 and s["pearson_ci_low"] > 0.99
        assert s["n"] == len(windows[s["latent"]]) and s["n_failed"] == 0 and s["n_tokens_failed"] == 0
        assert 0 < s["n_neg"] < s["n"] and s["auroc"] == pytest.approx(1.0)  # peaks of negatives are 0
    examples = read(cfg, "examples.parquet")
    assert {e["read_as"] for e in examples} == {mode}
    assert all(len(e["predicted"]) == 12 for e in examples)
    usage = read(cfg, "usage/score.parquet")
    assert {u["task"] for u in usage} == {"simulation"} and len(usage) == len(client.requests)
    for s in scores:
        assert s["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage if u["latent"] == s["latent"])
        assert s["completion_tokens"] == sum(u["completion_tokens"] for u in usage if u["latent"] == s["latent"]) > 0


def test_unreadable_windows_are_counted_not_dropped(tmp_path, built_cache, tokenizer):
    cfg, rows = make_run(tmp_path, built_cache, ["simulation"], explained=1)
    latent = min(r["latent"] for r in rows)
    lost = [r for r in scored_rows(rows, latent)][:3]
    fails = {(latent, tuple(shown_token(p) for p in token_strings(tokenizer, r["tokens"]))) for r in lost}
    run_score(cfg, ScriptedLLM(PerfectSimulator(rows, tokenizer, echo_fails_for=fails)), tokenizer)
    [s] = read(cfg, "scores.parquet")
    assert s["n_failed"] == 3 and s["n_tokens_failed"] == 3 * 12
    assert s["n"] + s["n_failed"] == len(scored_rows(rows, latent))
    assert s["pearson"] == pytest.approx(1.0)  # the rest still read
    failed = [e for e in read(cfg, "examples.parquet") if e["read_as"] == "failed"]
    assert len(failed) == 3 and all(p is None for e in failed for p in e["predicted"])
    by_decile = [r for r in read(cfg, "scores_by_decile.parquet") if r["latent"] == latent]
    assert sum(r["n_failed"] for r in by_decile) == 3


def test_the_one_call_mode_through_the_real_in_process_model(tmp_path, built_cache, tokenizer, tiny_model):
    """The tiny model is random, so its digits mean nothing; what is checked is the real path: one echoed call
    per window, every slot found among the real tokens, readings in range, failures accounted for."""
    cfg, rows = make_run(tmp_path, built_cache, ["simulation"], n_latents=2, explained=1, few=True)
    client = TransformersClient(tiny_model, tokenizer, "tiny-gemma3", batch_size=4)
    run_score(cfg, client, tokenizer)
    [s] = read(cfg, "scores.parquet")
    windows = scored_rows(rows, s["latent"])
    assert s["mode"] == "prompt-logprobs" and s["n"] + s["n_failed"] == len(windows)
    assert len(read(cfg, "usage/score.parquet")) == len(windows)
    examples = read(cfg, "examples.parquet")
    values = [p for e in examples for p in e["predicted"] if p is not None]
    assert all(0.0 <= p <= 9.0 for p in values)
    assert s["n_tokens_failed"] == sum(p is None for e in examples for p in e["predicted"])

    prompt, slots = window_prompt(tokenizer, "latent-x", windows[0]["tokens"])
    [response] = client.complete([Request(prompt=prompt, max_tokens=1, top_logprobs=5, prompt_logprobs=True, stop=())])
    entries = response.extra["prompt"]
    spans = token_spans(prompt, [e[0] for e in entries])
    located = [covering(spans, offset) for offset in slots]
    assert None not in located and all(entries[i][0] == SLOT for i in located)
    assert all(len(entries[i][2]) == 5 and all(math.isfinite(v) for v in entries[i][2].values()) for i in located)


def test_prompts_are_shared_up_to_the_latent(tokenizer):
    """Everything before the explanation is the same for every latent (a server's prefix cache serves it)."""
    a, _ = window_prompt(tokenizer, "one", [100, 200])
    b, _ = window_prompt(tokenizer, "two", [300])
    assert a[:a.index("Feature: one")] == b[:b.index("Feature: two")]
    assert token_prompt(tokenizer, "x", [100, 200], 1).startswith(TOKEN_PROMPT_HEAD)
    assert "<<" in token_prompt(tokenizer, "x", [100, 200], 1).rsplit("Text: ", 1)[1]
    assert np.all(np.diff(window_prompt(tokenizer, "x", [100, 200, 300])[1]) > 0)
