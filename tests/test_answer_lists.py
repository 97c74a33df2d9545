"""Detection and fuzzing with several texts per prompt (`examples_per_prompt`): the strict reading of list
answers, the mode on real records with a scripted judge that knows the truth (both modes agree with it, and a
short or malformed list fails only the texts it lacks), and the mode through the tiny real model's generate."""
from __future__ import annotations

import math
import re

import pytest

from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.llm.base import Request, Response
from lantern.llm.transformers_client import TransformersClient
from lantern.pipeline.score_stage import run_score
from lantern.score import detection, fuzzing
from lantern.score.answers import verdict_list
from lantern.score.settings import ScorerConfig
from scorer_runs import ScriptedLLM, latent_of, make_run, read, scored_rows

SCORE_FILES = ("scores.parquet", "examples.parquet", "usage/score.parquet")

# --- reading a list answer -------------------------------------------------------------------------


@pytest.mark.parametrize("text, count, verdicts, problem", [
    ("1, 0, 0, 1, 1", 5, [1, 0, 0, 1, 1], None),
    ("1,0,0,1,1]", 5, [1, 0, 0, 1, 1], None),
    (" [0, 1, 1]\nmore text", 3, [0, 1, 1], None),  # a chat model repeats the bracket; text after ] is ignored
    ("1, 0, 1, 0,", 4, [1, 0, 1, 0], None),  # one trailing comma (cut before the bracket)
    ("1, 0, 1", 5, [1, 0, 1, None, None], "3 of 5 answers read"),  # short: the rest fail, never "no"
    ("1, 0]", 5, [1, 0, None, None, None], "2 of 5 answers read"),
    ("1, yes, 0, 1, 1", 5, [1, None, None, None, None], "1 of 5 answers read"),  # malformed: nothing after it
    ("1, 0, 2, 1, 1", 5, [1, 0, None, None, None], "2 of 5 answers read"),
    ("1, 0, 0, 1, 1 because", 5, [1, 0, 0, 1, None], "4 of 5 answers read"),
    ("1., 0, 0", 3, [None, None, None], "no list"),
    ("1, 0, 0, 1, 1, 0", 5, [None] * 5, "6 entries for 5 texts"),  # too many: cannot be matched to the texts
    ("0, 0, 0, 0, 0, x", 5, [None] * 5, "6 entries for 5 texts"),
    ("", 2, [None, None], "no list"),
    ("yes", 1, [None], "no list"),
    (",", 2, [None, None], "no list"),
])
def test_verdict_list(text, count, verdicts, problem):
    assert verdict_list(Response(text=text), count) == (verdicts, problem)


def test_a_failed_call_fails_every_text():
    assert verdict_list(Response(text="1, 1", error="HTTP 500"), 2) == ([None, None], "call failed")


def test_examples_per_prompt_is_checked():
    ScorerConfig(examples_per_prompt=5).check()
    for bad in (0, 21):
        with pytest.raises(LanternError, match="examples_per_prompt must be 1..20"):
            ScorerConfig(examples_per_prompt=bad).check()


def test_cli_option_is_checked_before_anything_loads_and_saved(tmp_path):
    from typer.testing import CliRunner

    from lantern.cli import app
    from lantern.configure import apply_scorers

    cfg = RunConfig(run_dir=str(tmp_path), scorers=["detection"])
    cfg.save()
    refused = CliRunner().invoke(app, ["score", "--run-dir", str(tmp_path), "--examples-per-prompt", "0"])
    assert refused.exit_code == 2 and "examples_per_prompt must be 1..20" in refused.output
    assert RunConfig.load(tmp_path).scoring.examples_per_prompt == 1  # nothing saved
    apply_scorers(cfg, "detection,fuzzing", examples_per_prompt=5)
    cfg.save()
    assert RunConfig.load(tmp_path).scoring == ScorerConfig(examples_per_prompt=5)


# --- the mode on real records -------------------------------------------------------------------------


def truth(tokenizer, cfg: RunConfig, rows: list[dict]) -> dict[tuple[int, str], int]:
    """What a perfect judge would answer for each (latent, text) either scorer can show (plain or marked)."""
    out = {}
    for latent in {r["latent"] for r in rows}:
        examples = scored_rows(rows, latent)
        for item in detection.items(examples):
            out[latent, detection.text(tokenizer, item)] = item["label"]
        for item in fuzzing.items(examples, cfg.explainer.mark_threshold, cfg.seed):
            out[latent, fuzzing.text(tokenizer, item)] = item["label"]
    return out


def judge(known: dict[tuple[int, str], int], spoil=lambda entries: entries):
    """One-token prompts get P(yes) from log-probs; list prompts get the true 0/1 list, passed through `spoil`.
    The explanation (`latent-N`) tells the judge which latent it is about."""
    def answer(request: Request) -> Response:
        latent = latent_of(re.search(r"description: (\S+)", request.prompt).group(1))
        listed = re.findall(r"^Text \d+: (.*)$", request.prompt, flags=re.M)
        if listed:
            entries = spoil([str(known[latent, text]) for text in listed])
            return Response(text=", ".join(entries) + "]", prompt_tokens=len(request.prompt) // 4,
                            completion_tokens=3 * len(entries))
        [text] = re.findall(r"^Text: (.*)$", request.prompt, flags=re.M)
        yes = 0.9 if known[latent, text] else 0.1
        return Response(text=" yes", first_token_logprobs={" yes": math.log(yes), " no": math.log(1 - yes)},
                        prompt_tokens=len(request.prompt) // 4, completion_tokens=1)
    return answer


def _by_item(examples: list[dict]) -> dict[tuple, dict]:
    return {(e["scorer"], e["latent"], e["start"], e["variant"]): e for e in examples}


def test_lists_and_one_token_answers_agree_with_a_perfect_judge(tmp_path, built_cache, tokenizer):
    results = {}
    for k in (1, 5):
        cfg, rows = make_run(tmp_path / str(k), built_cache, ["detection", "fuzzing"], examples_per_prompt=k)
        client = ScriptedLLM(judge(truth(tokenizer, cfg, rows)))
        run_score(cfg, client, tokenizer)
        scores, examples, usage = (read(cfg, name) for name in SCORE_FILES)
        results[k] = client, scores, examples
        for s in scores:
            mine = [e for e in examples if (e["latent"], e["scorer"]) == (s["latent"], s["scorer"])]
            assert s["balanced_accuracy"] == 1.0 and s["n_failed"] == 0 and s["n"] == len(mine)
            assert s["examples_per_prompt"] == k
            calls = [u for u in usage if (u["latent"], u["task"]) == (s["latent"], s["scorer"])]
            assert len(calls) == (len(mine) if k == 1 else math.ceil(len(mine) / 5))
            # per-example rows carry each call once, so they add up to the calls
            assert sum(e["prompt_tokens"] for e in mine) == sum(u["prompt_tokens"] for u in calls) == s["prompt_tokens"]
    one, five = results[1], results[5]
    assert {e["read_as"] for e in one[2]} == {"logprobs"} and {e["read_as"] for e in five[2]} == {"list"}
    lists = [r for r in five[0].requests]
    assert all(r.prompt.endswith("Answer: [") and r.stop == ("]", "\n") and r.max_tokens == 17 for r in lists)
    assert max(len(re.findall(r"^Text \d+: ", r.prompt, flags=re.M)) for r in lists) == 5
    # each latent's prompts mix positives and negatives (items are shuffled before they are grouped)
    labels_per_prompt = [{e["label"] for e in five[2] if (e["scorer"], e["latent"], e["prompt_index"]) == key}
                         for key in {(e["scorer"], e["latent"], e["prompt_index"]) for e in five[2]}]
    assert any(len(labels) == 2 for labels in labels_per_prompt)
    a, b = _by_item(one[2]), _by_item(five[2])
    assert a.keys() == b.keys() and all(a[key]["prediction"] == b[key]["prediction"] for key in a)
    assert len(five[0].requests) < len(one[0].requests) / 3


SPOILERS = {
    "short": lambda entries: entries[:3],
    "malformed": lambda entries: entries[:3] + ["maybe"] + entries[4:] if len(entries) > 3 else entries,
    "long": lambda entries: entries + ["0"],
}


@pytest.mark.parametrize("spoiler", SPOILERS)
def test_short_malformed_or_long_lists_fail_only_what_they_lack(tmp_path, built_cache, tokenizer, spoiler):
    cfg, rows = make_run(tmp_path, built_cache, ["detection"], examples_per_prompt=5, n_latents=2)
    run_score(cfg, ScriptedLLM(judge(truth(tokenizer, cfg, rows), SPOILERS[spoiler])), tokenizer)
    scores, examples = read(cfg, "scores.parquet"), read(cfg, "examples.parquet")
    for s in scores:
        mine = [e for e in examples if e["latent"] == s["latent"]]
        read_ok = [e for e in mine if e["read_as"] == "list"]
        failed = [e for e in mine if e["read_as"] == "failed"]
        size = {e["prompt_index"]: max(f["position"] for f in mine if f["prompt_index"] == e["prompt_index"])
                for e in mine}
        assert s["n"] == len(read_ok) and s["n_failed"] == len(failed) > 0
        assert all(e["prediction"] is None and e["p_yes"] is None for e in failed)  # failed, not "no"
        assert all(e["correct"] for e in read_ok)
        if spoiler == "long":  # more entries than texts: nothing can be matched, nothing is read
            assert not read_ok and math.isnan(s["balanced_accuracy"])
            assert all(e["answer_problem"] == f"{size[e['prompt_index']] + 1} entries for {size[e['prompt_index']]} "
                                              f"texts" for e in failed)
            continue
        assert all(e["position"] <= 3 for e in read_ok) and all(e["position"] > 3 for e in failed)
        assert all(e["answer_problem"] == f"3 of {size[e['prompt_index']]} answers read" for e in failed)


def test_lists_through_the_tiny_models_generate(tmp_path, built_cache, tokenizer, tiny_model):
    """The real generate path (stop strings, token counts, list parsing of whatever a random model says)."""
    cfg, rows = make_run(tmp_path, built_cache, ["detection", "fuzzing"], examples_per_prompt=3, n_latents=2,
                         explained=1, few=True)
    client = TransformersClient(tiny_model, tokenizer, "tiny", batch_size=8)
    result = run_score(cfg, client, tokenizer)
    scores, examples, usage = (read(cfg, name) for name in SCORE_FILES)
    assert {s["scorer"] for s in scores} == {"detection", "fuzzing"}
    assert result["failed_answers"] == sum(e["read_as"] == "failed" for e in examples)
    for s in scores:
        mine = [e for e in examples if e["scorer"] == s["scorer"]]
        assert s["n"] + s["n_failed"] == len(mine) and s["mode"] == "3 per prompt, list answers"
        assert len([u for u in usage if u["task"] == s["scorer"]]) == math.ceil(len(mine) / 3)
    for u in usage:
        assert u["prompt_tokens"] > 50 and 1 <= u["completion_tokens"] <= 3 * 3 + 2
    for e in examples:
        assert e["read_as"] in ("list", "failed") and 1 <= e["position"] <= 3
        assert (e["prediction"] is None) == (e["p_yes"] is None) == (e["read_as"] == "failed")
        assert e["read_as"] == "list" or e["answer_problem"] is not None
    # what the model said is kept, so a failure can be inspected
    texts = {e["answer"] for e in examples}
    assert all(isinstance(t, str) and "]" not in t and "\n" not in t for t in texts)
