"""The scorer interface on real records of the tiny Gemma 3's SAE: every scorer's requests for every latent go
through one queue; needs a backend lacks are refused before any call; detection and fuzzing keep their
columns; per-decile and per-source tables and per-latent token counts are written; `--scorers` on the CLI."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

import lantern.pipeline.score_stage as score_stage
from lantern.config import CONFIG_FILE, RunConfig
from lantern.errors import LanternError
from lantern.io import read_json, write_json
from lantern.llm.base import Request, Response
from lantern.models.loading import SubjectModel
from lantern.pipeline.score_stage import run_score
from lantern.score.registry import SCORERS, get_scorer, parse_scorers
from lantern.score.settings import ScorerConfig
from scorer_runs import ScriptedLLM, make_run, read

ALL = ["detection", "fuzzing", "simulation", "surprisal", "embedding", "intruder"]
DETECTION_SCORE_COLUMNS = {"coder", "latent", "scorer", "n", "n_pos", "n_neg", "n_failed", "accuracy",
                           "balanced_accuracy", "precision", "recall", "f1", "auroc", "balanced_accuracy_ci_low",
                           "balanced_accuracy_ci_high", "prompt_tokens"}
DETECTION_EXAMPLE_COLUMNS = {"coder", "latent", "scorer", "start", "kind", "source", "decile", "variant", "label",
                             "p_yes", "prediction", "read_as", "error", "prompt_tokens", "completion_tokens", "seconds",
                             "attempts", "cached"}


def anything(request: Request) -> Response:
    """A plausible answer to any scorer's prompt: an echo with digits at every position, or one token that
    could be yes/no or a digit."""
    if request.prompt_logprobs:
        pieces = re.findall(r"\t|\n|[^\t\n]+", request.prompt)
        entries = [[piece, -1.0, {str(i % 10): 0.0}] for i, piece in enumerate(pieces)]
        return Response(text="0", prompt_tokens=len(entries), completion_tokens=1, extra={"prompt": entries})
    size = len(request.prompt)
    logprobs = {" yes": math.log(0.3 + 0.4 * (size % 2)), " no": math.log(0.7 - 0.4 * (size % 2)),
                str(1 + size % 3): math.log(0.5), str(1 + size % 4): math.log(0.5)}
    return Response(text=" yes", first_token_logprobs=logprobs, prompt_tokens=size // 4, completion_tokens=1)


def test_all_scorers_share_one_queue_and_report_what_they_cost(tmp_path, built_cache, tokenizer, tiny_model, bos,
                                                               monkeypatch):
    cfg, rows = make_run(tmp_path, built_cache, ALL)
    queues = []
    real = score_stage.complete_all

    def counted(client, requests, description):
        queues.append((description, requests))
        return real(client, requests, description)

    monkeypatch.setattr(score_stage, "complete_all", counted)
    client = ScriptedLLM(anything)
    result = run_score(cfg, client, tokenizer, subject=SubjectModel(tiny_model, tokenizer, "tiny", bos))
    assert [d for d, _ in queues] == ["score"] and len(queues[0][1]) == len(client.requests)
    scores = read(cfg, "scores.parquet")
    assert sorted((s["latent"], s["scorer"]) for s in scores) == sorted(
        (latent, name) for latent in {r["latent"] for r in rows} for name in ALL)
    assert result["scored"] == len(scores) == 3 * len(ALL)
    usage = read(cfg, "usage/score.parquet")
    for s in scores:
        mine = [u for u in usage if (u["latent"], u["task"]) == (s["latent"], s["scorer"])]
        assert mine and s["prompt_tokens"] == sum(u["prompt_tokens"] for u in mine) > 0
        assert s["completion_tokens"] == sum(u["completion_tokens"] for u in mine)
        assert s["metric"] == SCORERS[s["scorer"]].headline
        assert s["score"] == s[s["metric"]] and not math.isnan(s["score"])
    assert DETECTION_SCORE_COLUMNS <= set(scores[0])
    examples = read(cfg, "examples.parquet")
    assert DETECTION_EXAMPLE_COLUMNS <= set(examples[0]) and {e["scorer"] for e in examples} == set(ALL)
    for s in scores:  # every example is counted, read or failed
        assert s["n"] + s["n_failed"] == sum((e["latent"], e["scorer"]) == (s["latent"], s["scorer"]) for e in examples)
    by_decile, by_source = read(cfg, "scores_by_decile.parquet"), read(cfg, "scores_by_source.parquet")
    assert {r["scorer"] for r in by_decile} == set(ALL)
    assert {r["scorer"] for r in by_source} == set(ALL) - {"intruder"}
    detection = [r for r in by_decile if r["scorer"] == "detection" and r["latent"] is not None]
    assert {r["decile"] for r in detection} >= {0} and max(r["decile"] for r in detection) >= 8
    sources = {r["source"] for r in by_source if r["scorer"] == "detection"}
    assert {"random", "neighbour-cooccurrence"} <= sources
    for row in by_decile + by_source:
        assert row["n"] >= 0 and row["n_failed"] >= 0
        assert row["interval_unit"] == ("latents" if row["latent"] is None else "windows")
        for name in ("accuracy", "auroc", "pearson"):
            one_latent = row["latent"] is None and row["n_latents"] < 2  # no latents to resample
            if row[name] is not None and not math.isnan(row[name]) and not one_latent:
                assert row[f"{name}_ci_low"] <= row[name] + 1e-9 and row[name] <= row[f"{name}_ci_high"] + 1e-9
    pooled = [r for r in by_decile if r["latent"] is None and r["scorer"] == "detection"]
    for row in pooled:  # pooled rows hold the latents' rows together
        assert row["n"] == sum(r["n"] for r in detection if r["decile"] == row["decile"])


@pytest.mark.parametrize("scorers, settings, needle", [
    (["surprisal"], {}, "surprisal scorer needs prompt log-probs"),
    (["simulation"], {"simulation_mode": "prompt-logprobs"}, "simulation scorer needs prompt log-probs"),
])
def test_needs_the_backend_lacks_are_refused_before_any_call(tmp_path, built_cache, tokenizer, scorers, settings,
                                                             needle):
    cfg, _ = make_run(tmp_path, built_cache, ["detection"] + scorers, **settings)
    client = ScriptedLLM(anything, prompt_logprobs=False)
    with pytest.raises(LanternError, match=needle + ".*(vllm|transformers)"):
        run_score(cfg, client, tokenizer)
    assert not client.requests


def test_simulation_without_prompt_logprobs_falls_back_to_one_call_per_token(tmp_path, built_cache, tokenizer):
    cfg, rows = make_run(tmp_path, built_cache, ["simulation"], n_latents=2, explained=1, few=True)
    client = ScriptedLLM(anything, prompt_logprobs=False)
    run_score(cfg, client, tokenizer)
    [s] = read(cfg, "scores.parquet")
    assert s["mode"] == "per-token" and len(client.requests) == 4 * 12


def test_names_and_settings_are_checked():
    assert parse_scorers("simulation, detection,simulation") == ["simulation", "detection"]
    with pytest.raises(LanternError, match="unknown scorer 'simulaton'; available: detection, fuzzing, simulation"):
        parse_scorers("detection,simulaton")
    with pytest.raises(LanternError, match="at least one"):
        parse_scorers(" , ")
    with pytest.raises(LanternError, match="simulation_mode"):
        ScorerConfig(simulation_mode="echo").check()
    assert get_scorer("intruder", ScorerConfig(intruder_explanation=True)).uses_explanation
    assert not get_scorer("intruder").uses_explanation and get_scorer("surprisal").uses_explanation


def test_scorer_settings_are_saved_and_old_runs_still_load(tmp_path):
    cfg = RunConfig(run_dir=str(tmp_path), scorers=["simulation"], scoring=ScorerConfig(top_logprobs=5))
    cfg.save()
    assert RunConfig.load(tmp_path).scoring == ScorerConfig(top_logprobs=5)
    saved = read_json(tmp_path / CONFIG_FILE)
    del saved["scoring"]
    write_json(tmp_path / CONFIG_FILE, saved)
    assert RunConfig.load(tmp_path).scoring == ScorerConfig()


def _lantern(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lantern.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_scorers_option(tmp_path, built_cache, model_dir):
    cfg, _ = make_run(tmp_path, built_cache, ["detection"], n_latents=2, explained=1, few=True, model=str(model_dir),
                      intruder_windows=1)
    cfg.save()
    from typer.testing import CliRunner

    from lantern.cli import app

    refused = CliRunner().invoke(app, ["score", "--run-dir", str(cfg.path), "--scorers", "detection,bogus"])
    assert refused.exit_code == 2 and "unknown scorer 'bogus'" in refused.output
    assert RunConfig.load(cfg.path).scorers == ["detection"]  # nothing saved
    refused = CliRunner().invoke(app, ["score", "--run-dir", str(cfg.path), "--intervention-kl", "1,x"])
    assert refused.exit_code == 2 and "--intervention-kl takes comma-separated numbers" in refused.output
    refused = CliRunner().invoke(app, ["score", "--run-dir", str(cfg.path), "--intervention-kl", "0"])
    assert refused.exit_code == 2 and "intervention_targets must be positive" in refused.output
    assert RunConfig.load(cfg.path).scoring.intervention_targets == (0.5, 1.0, 3.0)  # nothing saved
    done = _lantern("score", "--run-dir", str(cfg.path), "--llm-model", str(model_dir),
                    "--scorers", "detection,surprisal,embedding,intruder")
    assert done.returncode == 0, done.stderr[-3000:]
    assert RunConfig.load(cfg.path).scorers == ["detection", "surprisal", "embedding", "intruder"]
    scores = read(cfg, "scores.parquet")
    assert {s["scorer"] for s in scores} == {"detection", "surprisal", "embedding", "intruder"}
    out = done.stdout + done.stderr
    assert all(name in out for name in ("surprisal", "embedding", "intruder", "accuracy"))
