"""Surprisal on real records of the tiny Gemma 3's SAE: a scripted base model that finds activating windows
less surprising after the right explanation gives AUROC 1 (and 0.5 after a useless one); through the real
in-process model the per-window losses equal the model's own loss on the window's text."""
from __future__ import annotations

import math
import re

import pytest
import torch

from lantern.errors import LanternError
from lantern.explain.format import plain_text
from lantern.llm.base import Request, Response
from lantern.llm.transformers_client import TransformersClient
from lantern.pipeline.score_stage import run_score
from lantern.score.surprisal import prompt_for, text_loss, window_text
from scorer_runs import ScriptedLLM, make_run, read, scored_rows


class ScriptedBaseModel:
    """Echoes the prompt word by word; the window's words cost 1 nat after an explanation `latent-N` when the
    window activates latent N, 2 nats otherwise."""

    def __init__(self, activating: dict[str, set[str]]):
        self.activating = activating

    def __call__(self, request: Request) -> Response:
        prefix, text = request.prompt.split("\n", 1)
        cost = 1.0 if text in self.activating.get(prefix, ()) else 2.0
        head = len(prefix) + 1
        entries, offset = [], 0
        for piece in re.findall(r"\s+|\S+", request.prompt):
            entries.append([piece, -cost if offset >= head else -0.5, {piece: 0.0}])
            offset += len(piece)
        return Response(text="", prompt_tokens=len(entries), completion_tokens=1, extra={"prompt": entries})


@pytest.mark.parametrize("right, expected", [(True, 1.0), (False, 0.5)], ids=["right", "useless"])
def test_the_loss_drop_separates_activating_windows_after_the_right_explanation(
        tmp_path, built_cache, tokenizer, right, expected):
    cfg, rows = make_run(tmp_path, built_cache, ["surprisal"],
                         explanation=lambda latent: f"latent-{latent}" if right else "useless")
    activating: dict[str, set[str]] = {}
    for r in scored_rows(rows):
        if r["kind"] == "activating":
            activating.setdefault(f"latent-{r['latent']}", set()).add(window_text(tokenizer, r["tokens"]))
    client = ScriptedLLM(ScriptedBaseModel(activating))
    run_score(cfg, client, tokenizer)
    scores = read(cfg, "scores.parquet")
    assert len(scores) == 3
    for s in scores:
        assert s["auroc"] == pytest.approx(expected) and s["metric"] == "auroc"
        assert s["n"] == len(scored_rows(rows, s["latent"])) and s["n_failed"] == 0
        assert s["auroc_ci_low"] <= s["auroc"] <= s["auroc_ci_high"]
    assert len(client.requests) == 2 * len(scored_rows(rows))  # explained + generic, per window
    assert sum(r.prompt.startswith("A passage of text.\n") for r in client.requests) == len(scored_rows(rows))
    examples = read(cfg, "examples.parquet")
    if right:
        assert {e["value"] for e in examples if e["kind"] == "activating"} == {1.0}
    assert {u["task"] for u in read(cfg, "usage/score.parquet")} == {"surprisal"}


def test_a_backend_without_prompt_logprobs_is_refused_with_a_way_out(tmp_path, built_cache, tokenizer):
    cfg, _ = make_run(tmp_path, built_cache, ["surprisal"])
    client = ScriptedLLM(lambda r: Response(text=""), prompt_logprobs=False)
    with pytest.raises(LanternError, match=r"surprisal scorer needs prompt log-probs.*--llm-backend transformers"):
        run_score(cfg, client, tokenizer)
    assert not client.requests


def test_answers_without_an_echo_are_failures():
    prompt, start = prompt_for("x", "some text")
    assert text_loss(prompt, start, Response(text="")) is None
    assert text_loss(prompt, start, Response(text="", error="HTTP 500", extra={"prompt": [["x", -1.0, {}]]})) is None


def test_losses_through_the_real_in_process_model_are_the_models_own(tmp_path, built_cache, tokenizer, tiny_model):
    cfg, rows = make_run(tmp_path, built_cache, ["surprisal"], explanation=lambda latent: "words about light",
                         n_latents=2, explained=1, few=True)
    run_score(cfg, TransformersClient(tiny_model, tokenizer, "tiny-gemma3", batch_size=4), tokenizer)
    [s] = read(cfg, "scores.parquet")
    windows = scored_rows(rows, s["latent"])
    assert s["n"] == len(windows) and s["n_failed"] == 0 and 0.0 <= s["auroc"] <= 1.0
    examples = read(cfg, "examples.parquet")
    for e in examples:
        assert e["read_as"] == "prompt-logprobs"
        assert e["value"] == pytest.approx(e["loss_generic"] - e["loss_explained"])
    # the loss, recomputed here: mean next-token NLL of the window's own tokens after the prefix
    window = next(w for w in windows if w["start"] == examples[0]["start"])
    prompt, start = prompt_for("words about light", window_text(tokenizer, window["tokens"]))
    head = tokenizer(prompt[:start], add_special_tokens=False).input_ids
    body = tokenizer(prompt[start:], add_special_tokens=False).input_ids
    assert tokenizer(prompt, add_special_tokens=False).input_ids == head + body  # the split is a token boundary
    ids = torch.tensor([[tokenizer.bos_token_id] + head + body])
    with torch.inference_mode():
        logprobs = torch.log_softmax(tiny_model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    nll = -logprobs[torch.arange(len(targets)), targets][-len(body):].mean().item()
    assert examples[0]["loss_explained"] == pytest.approx(nll, rel=1e-4)
    assert math.isfinite(examples[0]["loss_generic"])
    assert plain_text(tokenizer, window["tokens"])  # the window has text at all
