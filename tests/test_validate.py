"""Planted latents and `lantern validate`.

The planted coder is checked against a direct re-implementation of its rules on the decoded tokens of real
text. The validate flow runs the real cache, records and score stages on the tiny Gemma 3 (loaded from a
saved directory, as `--model DIR` does) with a scripted judge that applies the rule an explanation names:
TRUE must separate from SHUFFLED and RANDOM sit at chance, which tests the bookkeeping and the verdicts, not
a model's judgement. One more small run goes through the real in-process TransformersClient."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lantern.coders.loading import load_coder
from lantern.coders import planted
from lantern.coders.planted import RULES, PlantedCoder
from lantern.config import LLMConfig
from lantern.errors import LanternError
from lantern.llm.base import LLMClient, Request, Response
from lantern.models.loading import load_subject_model
from lantern.validate import run_validation, validation_config
from lantern.validate.report import Cell, verdict
from lantern.validate.variants import RANDOM_PHRASES, VARIANTS, variant_explanations

KEYS = [r.key for r in RULES]
SENTENCE = ("In 1611, the word of God and the King's printers were running: 42 times! Then nothing? Thou "
            "sayest his father David lifted two hands (to the sheep) and cometh not; she said: import None]")


# --- the planted coder ------------------------------------------------------------------------------------

def expected_row(text: str, prev_text: str | None) -> dict[str, bool]:
    """The rules, written again on `tokenizer.decode([id])` of each token."""
    s = text.strip()
    bare = text[1:] if text.startswith(" ") else text
    return {
        "digits": re.fullmatch(r"[0-9]+", s) is not None,
        "after-of": prev_text is not None and prev_text.strip().lower() == "of",
        "capitalised": bare[:1].isalpha() and bare[:1] == bare[:1].upper() and bare[:1] != bare[:1].lower(),
        "the": s.lower() == "the",
        "colons": re.fullmatch(r"[;:]+", s) is not None,
        "nowhere": False,
        "everywhere": True,
        "and": s.lower() == "and",
        "ing": re.fullmatch(r"[^\W\d_]*ing", s, flags=re.IGNORECASE) is not None and len(s) >= 3,
        "family": s.lower() in planted.FAMILY,
        "closing-brackets": re.fullmatch(r"[)\]}]+", s) is not None,
        "number-words": s.lower() in planted.NUMBER_WORDS,
        "people": s.lower() in planted.PEOPLE,
        "python-keywords": s in planted.PYTHON_KEYWORDS,
        "body-parts": s.lower() in planted.BODY_PARTS,
        "divine-names": s.lower() in planted.DIVINE_NAMES,
        "negation": s.lower() in planted.NEGATIONS,
        "thou": s.lower() in planted.ARCHAIC_PRONOUNS,
        "speech-verbs": s.lower() in planted.SPEECH_VERBS,
        "pronouns": s.lower() in planted.PERSONAL_PRONOUNS,
    }


def test_planted_activations_follow_each_rule(tokenizer, corpus_tokens, bos):
    tokens, _ = corpus_tokens
    extra = [bos] + tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    extra = np.array(extra + [extra[-1]] * (tokens.shape[1] - len(extra)), dtype=tokens.dtype)
    tokens = np.vstack([tokens, extra[None]])
    coder = PlantedCoder(tokenizer)
    assert (coder.name, coder.hookpoint, coder.d_in) == ("planted", "embed_tokens:input", 1)
    assert coder.num_latents == len(RULES)
    assert coder.decoder_directions() is None
    assert coder.explanations() == {i: r.explanation for i, r in enumerate(RULES)}
    ids = torch.from_numpy(tokens.astype(np.int64))
    acts = coder.encode(ids.reshape(-1, 1))
    values = torch.zeros(ids.numel(), coder.num_latents).scatter_(1, acts.indices.long(), acts.values)
    values = values.reshape(*ids.shape, -1).numpy()
    fired = dict.fromkeys(KEYS, 0)
    for seq in range(tokens.shape[0]):
        texts = [tokenizer.decode([int(t)]) for t in tokens[seq]]
        for pos in range(1, tokens.shape[1]):  # position 0 is the BOS, never cached
            want = expected_row(texts[pos], texts[pos - 1])
            token, prev = int(tokens[seq, pos]), int(tokens[seq, pos - 1])
            magnitude = 1 + ((token * 2654435761 + (prev + 1) * 40503) % 1000) / 1000
            for latent, key in enumerate(KEYS):
                expected = magnitude if want[key] else 0.0
                assert values[seq, pos, latent] == pytest.approx(expected, abs=1e-6), (key, texts[pos - 1:pos + 1])
                fired[key] += want[key]
    assert all(fired[k] > 0 for k in KEYS if k != "nowhere") and fired["nowhere"] == 0, fired
    assert 1.0 <= values[values > 0].min() and values.max() < 2.0


def test_planted_spec_loads_the_tokenizer_beside_the_model(model_dir, tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    coder = load_coder("planted", model)
    assert coder.name == "planted" and coder.describe()["rules"] == KEYS
    with pytest.raises(LanternError, match="tokenizer's vocabulary"):
        load_coder("planted", tiny_model)  # built in memory: no directory to read a tokenizer from


def test_planted_latents_promote_their_own_tokens_before_the_final_norm(model_dir):
    from transformers import AutoModelForCausalLM

    from lantern.explain.output_evidence import logit_lens, write_site

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    coder = load_coder("planted", model)
    site = write_site(model, coder)
    assert site.module is model.model.layers[-1] and site.side == "output"
    directions = coder.decoder_directions()
    assert directions.shape == (len(RULES), model.config.hidden_size)
    lens = logit_lens(model, directions)[:, : coder.tables.shape[1]]
    for i, rule in enumerate(RULES):
        if rule.after or rule.always or rule.matches is None:
            assert float(directions[i].abs().max()) == 0.0, rule.key  # no token set: writes nothing
        else:  # its own tokens' logits rise above the average token's
            own = coder.tables[i]
            assert float(lens[i, own].mean()) > float(lens[i, ~own].mean()), rule.key


def test_planted_coder_refuses_ids_outside_its_vocabulary(tokenizer):
    with pytest.raises(LanternError, match="outside its tokenizer's vocabulary"):
        PlantedCoder(tokenizer).encode(torch.tensor([[len(tokenizer)]]))


# --- variants and verdicts --------------------------------------------------------------------------------

def test_shuffled_never_gives_a_latent_its_own_explanation():
    true = {i: r.explanation for i, r in enumerate(RULES)}
    texts = variant_explanations(true, [0, 1, 3, 7])
    assert texts["true"] == {i: true[i] for i in (0, 1, 3, 7)}
    assert all(texts["shuffled"][i] != true[i] and texts["shuffled"][i] in true.values() for i in (0, 1, 3, 7))
    assert sorted(texts["shuffled"].values()) == sorted(texts["true"].values())  # a permutation
    assert all(texts["random"][i] in RANDOM_PHRASES for i in (0, 1, 3, 7))
    assert variant_explanations(true, [2])["shuffled"][2] == true[3]


def test_verdict_needs_separated_intervals_and_random_at_chance():
    from lantern.score.registry import get_scorer

    detection = get_scorer("detection")
    cells = lambda t, s, r: {"true": Cell("detection", "balanced_accuracy", "true", *t, 5),  # noqa: E731
                             "shuffled": Cell("detection", "balanced_accuracy", "shuffled", *s, 5),
                             "random": Cell("detection", "balanced_accuracy", "random", *r, 5)}
    good = verdict(detection, cells((0.9, 0.85, 0.95), (0.6, 0.5, 0.7), (0.5, 0.45, 0.55)))
    assert good.passed and good.chance == 0.5
    overlap = verdict(detection, cells((0.9, 0.65, 0.95), (0.6, 0.5, 0.7), (0.5, 0.45, 0.55)))
    assert overlap.true_beats_shuffled is False and overlap.passed is False
    biased = verdict(detection, cells((0.9, 0.85, 0.95), (0.6, 0.5, 0.7), (0.3, 0.2, 0.4)))
    assert biased.random_at_chance is False and biased.passed is False
    nan = math.nan
    one = verdict(detection, cells((0.9, nan, nan), (0.6, nan, nan), (0.5, nan, nan)))
    assert one.passed is None and "no interval" in one.note
    blind = verdict(get_scorer("intruder"), {v: Cell("intruder", "accuracy", v, 0.2, 0.1, 0.3, 5)
                                             for v in ("true", "shuffled", "random")})
    assert blind.chance == pytest.approx(1 / 5) and blind.passed is None and "does not read" in blind.note


# --- the validate flow ------------------------------------------------------------------------------------

RULE_BY_EXPLANATION = {r.explanation: r.key for r in RULES}
TEXT_RULES = {  # does the rule hold somewhere in a window's text?
    "digits": r"[0-9]", "after-of": r"\bof\s+\S", "capitalised": r"[A-Z]", "the": r"\bthe\b",
    "colons": r"[;:]", "and": r"\band\b", "ing": r"ing\b", "everywhere": r".", "nowhere": r"(?!x)x",
    "family": planted.FAMILY, "closing-brackets": r"[)\]}]", "number-words": planted.NUMBER_WORDS,
    "people": planted.PEOPLE, "python-keywords": planted.PYTHON_KEYWORDS, "body-parts": planted.BODY_PARTS,
    "divine-names": planted.DIVINE_NAMES, "negation": planted.NEGATIONS, "thou": planted.ARCHAIC_PRONOUNS,
    "speech-verbs": planted.SPEECH_VERBS, "pronouns": planted.PERSONAL_PRONOUNS,
}
TEXT_RULES = {rule: pattern if isinstance(pattern, str) else r"\b(" + "|".join(sorted(pattern)) + r")\b"
              for rule, pattern in TEXT_RULES.items()}
MARK_RULES = {  # does a marked span fit the rule? (`before`: the text just before the mark)
    "digits": lambda m, before: re.fullmatch(r"[0-9]+", m) is not None,
    "after-of": lambda m, before: re.search(r"\bof\s*$", before, re.IGNORECASE) is not None,
    "capitalised": lambda m, before: m[:1].isupper(),
    "the": lambda m, before: m.lower() == "the",
    "colons": lambda m, before: re.fullmatch(r"[;:]+", m) is not None,
    "and": lambda m, before: m.lower() == "and",
    "ing": lambda m, before: m.lower().endswith("ing"),
    "closing-brackets": lambda m, before: re.fullmatch(r"[)\]}]+", m) is not None,
    **{rule: (lambda words: lambda m, before: m.lower() in {w.lower() for w in words})(words) for rule, words in (
        ("family", planted.FAMILY), ("number-words", planted.NUMBER_WORDS), ("people", planted.PEOPLE),
        ("python-keywords", planted.PYTHON_KEYWORDS), ("body-parts", planted.BODY_PARTS),
        ("divine-names", planted.DIVINE_NAMES), ("negation", planted.NEGATIONS),
        ("thou", planted.ARCHAIC_PRONOUNS), ("speech-verbs", planted.SPEECH_VERBS),
        ("pronouns", planted.PERSONAL_PRONOUNS))},
    "everywhere": lambda m, before: True, "nowhere": lambda m, before: False,
}


def judge_rule(prompt: str) -> bool | None:
    """The scripted judgement: None for an explanation that names no rule (it cannot tell)."""
    explanation = prompt.split("description: ", 1)[1].split("\n", 1)[0]
    text = prompt.split("Text: ", 1)[1].split("\n", 1)[0]
    rule = RULE_BY_EXPLANATION.get(explanation)
    if rule is None:
        return None
    if "<<" not in text:  # detection
        return re.search(TEXT_RULES[rule], text, flags=re.IGNORECASE if rule not in ("capitalised", "python-keywords") else 0) is not None
    marks = [(m.group(1), text[:m.start()]) for m in re.finditer(r"<<(.*?)>>", text)]
    return bool(marks) and all(MARK_RULES[rule](mark, before) for mark, before in marks)


class RuleJudge(LLMClient):
    """Answers detection and fuzzing prompts by applying the named rule to the text; P(yes) = 0.5 when the
    explanation names no rule."""

    backend, model_id = "scripted", "rule-judge"

    def __init__(self):
        self.prompts: list[str] = []

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        out = []
        for r in batch:
            self.prompts.append(r.prompt)
            yes = judge_rule(r.prompt)
            p = 0.5 if yes is None else (0.9 if yes else 0.1)
            out.append(Response(text=" yes" if p >= 0.5 else " no", prompt_tokens=len(r.prompt) // 4,
                                completion_tokens=1,
                                first_token_logprobs={" yes": math.log(p), " no": math.log(1 - p)}))
        return out


@pytest.fixture(scope="module")
def tiny_subject(model_dir):
    return load_subject_model(str(model_dir))


def test_validate_flow_separates_true_from_shuffled_with_a_rule_judge(tmp_path, model_dir, tiny_subject):
    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 16_384, LLMConfig(),
                            scorers=["detection", "fuzzing"])
    judge = RuleJudge()
    report = run_validation(cfg, judge, tiny_subject)
    status = {s.rule: s.status for s in report.latents}
    assert status["nowhere"] == "no records" and status["everywhere"] == "no negatives"
    scored = [s.latent for s in report.latents if s.status == "scored"]
    assert len(scored) >= 6, status
    for v in report.verdicts:
        assert v.passed, v
        assert v.true_beats_shuffled and v.random_at_chance
    by = {(c.scorer, c.metric, c.variant): c for c in report.cells if c.group == "all"}
    assert set(by) == {(s, m, v) for s in ("detection", "fuzzing") for m in ("balanced_accuracy", "auroc",
                                                                              "balanced_accuracy_calibrated")
                       for v in VARIANTS}
    assert [(v.scorer, v.group, v.metric) for v in report.verdicts] == [
        (s, g, m) for s in ("detection", "fuzzing") for g in ("all", "tuned", "held-out")
        for m in ("balanced_accuracy", "auroc", "balanced_accuracy_calibrated")]
    assert all(c.n == len(scored) for c in report.cells if c.group == "all")
    held_out = {s.latent for s in report.latents if RULES[s.latent].held_out} & set(scored)
    assert held_out and all(c.n == len(held_out) for c in report.cells if c.group == "held-out")
    # the rule judge cannot tell a PARTIAL or OVERBROAD explanation (it names no rule): P(yes) 0.5, below TRUE
    assert all(v.true_above_partial and v.true_above_overbroad for v in report.verdicts)
    assert by["detection", "auroc", "random"].mean == pytest.approx(0.5)
    assert by["detection", "balanced_accuracy", "true"].mean > 0.85 and all(c.high <= 1.0 for c in report.cells)
    out = cfg.path / "validate"
    for variant in VARIANTS:
        explained = pq.read_table(out / f"{variant}.explanations.parquet").to_pylist()
        texts = {r["latent"]: r["explanation"] for r in explained}
        assert sorted(texts) == scored
        assert all((texts[l] == RULES[l].explanation) == (variant == "true") for l in scored)  # noqa: E741
        scores = pq.read_table(out / f"{variant}.scores.parquet").to_pylist()
        assert sorted((r["scorer"], r["latent"]) for r in scores) == sorted(
            (s, l) for s in ("detection", "fuzzing") for l in scored)  # noqa: E741
    final = pq.read_table(cfg.path / "explanations.parquet").to_pylist()
    assert {r["explanation"] for r in final} == {RULES[l].explanation for l in scored}  # noqa: E741
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["per_latent"]) == 2 * len(VARIANTS) * len(scored)
    assert {v["scorer"] for v in summary["verdicts"]} == {"detection", "fuzzing"}
    assert "| all | detection | balanced_accuracy | TRUE |" in (out / "summary.md").read_text()
    assert "| held-out | detection | balanced_accuracy | OVERBROAD |" in (out / "summary.md").read_text()
    # a rerun reuses the cache, the records and every answer
    asked = len(judge.prompts)
    again = run_validation(validation_config(cfg.path, str(model_dir), "embedded", 16_384, LLMConfig()),
                           RuleJudge(), tiny_subject)
    assert [c.mean for c in again.cells] == [c.mean for c in report.cells] and asked > 0


def test_validate_refuses_a_run_directory_of_other_settings(tmp_path, model_dir, tiny_subject):
    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 16_384, LLMConfig())
    cfg.save()
    with pytest.raises(LanternError, match="other settings"):
        validation_config(tmp_path / "run", str(model_dir), "embedded", 8_192, LLMConfig())


def test_validate_through_the_real_in_process_client(tmp_path, model_dir, tiny_subject):
    """The real path: the tiny model answers through TransformersClient (no quality expected of it)."""
    from lantern.llm.transformers_client import TransformersClient

    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 8_192, LLMConfig(), scorers=["detection"])
    cfg.records = type(cfg.records)(**{**cfg.records.__dict__, "n_negatives": 4, "n_neighbour_negatives": 2})
    client = TransformersClient(tiny_subject.model, tiny_subject.tokenizer, "tiny-gemma3", batch_size=8)
    report = run_validation(cfg, client, tiny_subject)
    variants = [(c.scorer, c.variant) for c in report.cells][:3]
    assert variants == [("detection", v) for v in ("true", "shuffled", "random")]
    scored = sum(s.status == "scored" for s in report.latents)
    # a random tiny model rarely answers yes or no: latents whose every answer failed have no score, and
    # are counted as such, never dropped
    assert scored and all(c.n + c.missing == scored for c in report.cells if c.group == "all")
    assert all(c.n == 0 or 0.0 <= c.mean <= 1.0 for c in report.cells)
    examples = pq.read_table(cfg.path / "validate" / "true.examples.parquet").to_pylist()
    assert examples and {e["read_as"] for e in examples} <= {"logprobs", "text", "failed", "low-mass"}
    assert "| all | detection | balanced_accuracy | TRUE |" in (cfg.path / "validate" / "summary.md").read_text()


def test_validate_command(tmp_path, model_dir):
    """`lantern validate` wiring: the tiny model as subject and (in-process) LLM; a bad scorer is one clear line."""
    from typer.testing import CliRunner

    from lantern.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["validate", "--run-dir", str(tmp_path / "bad"), "--scorers", "nope"])
    assert done.exit_code == 2 and "unknown scorer" in done.output
    out = tmp_path / "run"
    done = runner.invoke(app, ["validate", "--run-dir", str(out), "--model", str(model_dir), "--llm-model",
                               str(model_dir), "--tokens", "8192", "--scorers", "detection"])
    assert done.exit_code == 0, done.output
    assert "TRUE > SHUFFLED" in done.output and (out / "validate" / "summary.json").exists()
    assert json.loads((out / "config.json").read_text())["coders"] == ["planted"]


def test_variants_can_be_chosen_but_the_verdicts_three_are_required():
    from lantern.validate.variants import parse_variants

    assert parse_variants("random, TRUE,shuffled") == ("true", "shuffled", "random")
    assert parse_variants(",".join(VARIANTS)) == VARIANTS
    for bad in ("true,shuffled", "true,shuffled,random,sideways"):
        with pytest.raises(LanternError, match="--variants"):
            parse_variants(bad)


def test_rules_left_out_of_a_smaller_sample_say_so(tmp_path, model_dir, tiny_subject):
    """With fewer latents than rules (e.g. a benchmark's --latents 2), a rule that was simply not sampled is not
    reported as lacking windows."""
    from lantern.pipeline.orchestrator import Pipeline
    from lantern.validate.flow import latent_statuses

    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 8_192, LLMConfig(), scorers=["detection"])
    cfg.latents = 2
    with Pipeline(cfg, subject=tiny_subject) as pipeline:
        pipeline.cache()
        pipeline.records()
    statuses = latent_statuses(cfg)
    assert sum(s.status == "scored" for s in statuses) <= 2
    unsampled = [s for s in statuses if s.note.startswith("not among the 2 latents sampled")]
    assert unsampled and not any("disjoint windows" in s.note for s in unsampled)


def test_rules_subset_scores_only_the_chosen_rules_after_a_full_run(tmp_path, model_dir, tiny_subject):
    """`--rules held-out` in a run directory that already scored every rule: only the held-out rules are asked
    about and reported; the others are listed as not chosen, and names or groups that do not exist are refused."""
    from lantern.validate.variants import parse_rules

    assert parse_rules(None) is None
    held = parse_rules("held-out")
    assert held == tuple(i for i, r in enumerate(RULES) if r.held_out)
    assert parse_rules("digits, the,held-out") == tuple(sorted({KEYS.index("digits"), KEYS.index("the"), *held}))
    with pytest.raises(LanternError, match="no planted rule 'sideways'"):
        parse_rules("digits,sideways")
    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 16_384, LLMConfig(), scorers=["detection"])
    full = run_validation(cfg, RuleJudge(), tiny_subject, variants=("true", "shuffled", "random"))
    judge = RuleJudge()
    subset = run_validation(validation_config(cfg.path, str(model_dir), "embedded", 16_384, LLMConfig()), judge,
                            tiny_subject, variants=("true", "shuffled", "random"), rules=held)
    chosen = {s.latent for s in subset.latents if s.status == "scored"}
    assert chosen and chosen <= set(held)
    assert {s.latent for s in full.latents if s.status == "scored"} - chosen == \
        {s.latent for s in subset.latents if s.status == "not chosen"}
    assert {r["latent"] for r in subset.per_latent} == chosen
    assert all(c.n == len(chosen) for c in subset.cells if c.group == "all")
    assert subset.settings["rules"] == [RULES[i].key for i in held]
