"""Explainers: prompts built from real records, parsers on realistic answers, output evidence on the real tiny
Gemma 3, best-of-k candidates, and the explain stage end to end with the tiny model as the LLM.

Fixed answer texts stand in for the LLM only in the parser tests."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY_HIDDEN, TINY_MLP, write_sparsify_folder
from lantern.coders.neurons import NeuronCoder
from lantern.coders.sparsify import SparsifyCoder
from lantern.config import LLMConfig, RunConfig
from lantern.errors import LanternError
from lantern.explain.base import LatentEvidence
from lantern.explain.format import activation_marks, marked_text, plain_text
from lantern.explain.output_evidence import banned_tokens, logit_lens, output_evidence, top_tokens, write_site
from lantern.explain.registry import EXPLAINERS, explainer_for, get_explainer
from lantern.explain.settings import ExplainerConfig
from lantern.llm.base import Response
from lantern.llm.response_cache import request_key
from lantern.models.loading import SubjectModel
from lantern.pipeline.files import EXPLANATIONS
from lantern.records.build import RecordConfig
from lantern.text import token_strings

RECORDS = RecordConfig(ctx_len=16, tokens_before=8, n_explain=5, n_test_per_decile=1, n_negatives=2,
                       n_similar_negatives=1, n_neighbour_negatives=1, n_explain_negatives=3, min_windows=16)


@pytest.fixture(scope="module")
def subject(tiny_model, tokenizer, model_dir) -> SubjectModel:
    return SubjectModel(model=tiny_model, tokenizer=tokenizer, name=str(model_dir), bos_id=tokenizer.bos_token_id)


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, subject) -> RunConfig:
    """A real run directory: cache and records of an SAE at layers.1 and top-16 neurons of layer 2, over the
    embedded corpus, on the tiny model; its LLM is the tiny model itself, in-process."""
    from lantern.pipeline.cache_stage import run_cache
    from lantern.pipeline.records_stage import run_records

    root = tmp_path_factory.mktemp("explainers")
    write_sparsify_folder(root / "coders" / "layers.1", TINY_HIDDEN, 96, 8)
    cfg = RunConfig(run_dir=str(root / "run"), model=subject.name, coders=[str(root / "coders" / "layers.1"),
                    "neurons-topk:16"], layer=2, tokens=4096, seq_len=64, batch_size=16, latents=2,
                    records=RECORDS, llm=LLMConfig(model=subject.name, batch_size=8))
    cfg.save()
    run_cache(cfg, subject)
    run_records(cfg)
    return cfg


@pytest.fixture(scope="module")
def evidence(run_cfg, subject) -> list[LatentEvidence]:
    from lantern.pipeline.explain_stage import attach_output_evidence, gather_evidence

    return attach_output_evidence(run_cfg, gather_evidence(run_cfg), subject)


@pytest.fixture(scope="module")
def client(run_cfg, subject):
    from lantern.llm.factory import make_client

    made = make_client(run_cfg.llm, run_cfg.path, subject)
    yield made
    made.close()


# --- registry ------------------------------------------------------------------------------------------

def test_unknown_explainer_lists_the_names():
    with pytest.raises(LanternError) as err:
        get_explainer("telepathy")
    for name in ("default", "activations", "cot", "contrastive", "output", "ensemble"):
        assert name in str(err.value)


def test_show_activations_still_selects_the_activation_prompt():
    assert explainer_for(ExplainerConfig()).name == "default"
    assert explainer_for(ExplainerConfig(show_activations=True)).name == "activations"


# --- prompts -------------------------------------------------------------------------------------------

def test_evidence_comes_from_the_explain_split(evidence):
    assert len(evidence) == 4 and {e.coder for e in evidence} == {"layers_1", "neurons-topk16"}
    for e in evidence:
        assert len(e.windows) == RECORDS.n_explain and all(max(w.activations) > 0 for w in e.windows)
        assert 0 < len(e.negatives) <= RECORDS.n_explain_negatives
        assert all(not any(w.activations) for w in e.negatives)
        assert e.latent_max == max(max(w.activations) for w in e.windows)
        assert e.output is not None and len(e.output.logit_lens) == len(e.output.steering) == 10


def _fixed_part(prompt: str) -> str:
    return prompt[:prompt.rindex("Feature C\n") + len("Feature C\n")]


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_prompts_share_a_byte_identical_prefix(name, evidence, tokenizer):
    explainer = get_explainer(name)
    prompts = [explainer.prompt(tokenizer, e, ExplainerConfig()) for e in evidence]
    assert len(set(prompts)) == len(prompts)
    prefixes = {_fixed_part(p) for p in prompts}
    assert len(prefixes) == 1 and len(prefixes.pop()) > 400


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_prompts_show_their_evidence(name, evidence, tokenizer):
    explainer = get_explainer(name)
    cfg = ExplainerConfig()
    for e in evidence:
        own = explainer.prompt(tokenizer, e, cfg)[len(_fixed_part(explainer.prompt(tokenizer, e, cfg))):]
        marked = [marked_text(tokenizer, w.tokens, activation_marks(w.activations, cfg.mark_threshold))
                  for w in e.windows]
        shows_windows = name != "output"
        for text in marked:
            assert (text in own) == shows_windows
        if shows_windows:
            assert "<<" in own and ">>" in own
        assert ("Activations: " in own) == (name == "activations")
        for w in e.negatives:
            assert (plain_text(tokenizer, w.tokens) in own) == (name == "contrastive")
        assert ("NOT active 1: " in own) == (name == "contrastive")
        if explainer.needs_output_evidence:
            for entry in e.output.logit_lens + e.output.steering:
                assert f'"{entry.token}"' in own.replace("\u21b5", "\n")
            assert f"({e.output.steering[0].score:+.1f})" in own
        assert own.endswith("Thinking:" if name == "cot" else "Explanation:")


def test_contrastive_without_negatives_explains_and_says_so(evidence, tokenizer):
    explainer = get_explainer("contrastive")
    bare = replace(evidence[0], negatives=[])
    own = explainer.prompt(tokenizer, bare, ExplainerConfig())[len(_fixed_part(explainer.prompt(tokenizer, bare,
                                                                                               ExplainerConfig()))):]
    assert "Active 1: " in own and "NOT active" not in own
    assert explainer.describe(bare)["negatives_shown"] == 0 and "without contrast" in explainer.describe(bare)["note"]
    assert explainer.describe(evidence[0])["negatives_shown"] == len(evidence[0].negatives)


def test_output_explainers_refuse_to_run_without_output_evidence(evidence, tokenizer):
    for name in ("output", "ensemble"):
        with pytest.raises(LanternError, match="no output evidence"):
            get_explainer(name).prompt(tokenizer, replace(evidence[0], output=None), ExplainerConfig())


# --- parsers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, answer, expected", [
    ("cot", " The marked tokens are Thames, Nile and Rhine. All are rivers.\nExplanation: names of rivers\n",
     "names of rivers"),
    ("cot", "Marked: 'in', 'into'.\nExplanation: a first guess\nOn second thought, only motion verbs.\n"
     "Explanation: prepositions after verbs of motion.", "prepositions after verbs of motion"),
    ("cot", "**Thinking:** digits follow each mark.\n\n**Explanation:** currency signs before numbers",
     "currency signs before numbers"),
    ("cot", " The marked tokens are all rivers, so the feature is about rivers.", None),  # no final line
    ("cot", " The marks fall on names.\nExplanation:", None),
    ("cot", "Explanation: ...\n", None),
    ("cot", "", None),
    ("contrastive", " names of lakes, not other places\nFeature D", "names of lakes, not other places"),
    ("contrastive", " names of rivers, not other places", None),  # the worked example's answer, copied
    ("default", " currency symbols written before an amount of money.", None),  # copied from the prompt
    ("default", "Feature A", None),  # a bare layout label
    ("default", 'Common word: "by"', 'the word "by"'),  # a chat model's label before its phrase
    ("default", "Common feature: argument placeholders", "argument placeholders"),
    ("default", "Commonality: punctuation, punctuation, punctuation, punctuation, punctuation, punctuation", None),
    ("default", "the word \"and\" and the word \"or\" between two nouns", 'the word "and" and the word "or" between '
                                                                          'two nouns'),
    ("default", "Passage 3:", None),
    ("contrastive", "Sure.\n\nExplanation: the verb \"had\" as a helper", 'the verb "had" as a helper'),
    ("contrastive", " Active 6: The <<Nile>> floods each year.", None),
    ("contrastive", "NOT active 3: the road runs on", None),
    ("contrastive", " 12 34", None),
    ("output", " words for amounts of money", "words for amounts of money"),
    ("output", ' Direct: " the", " a"', None),
    ("output", "Steered: \" to\" (+1.2)", None),
    ("output", "Explanation:", None),
    ("ensemble", " the word \"according\", followed by \"to\"", 'the word "according", followed by "to"'),
    ("ensemble", " Passage 4: the <<$>>5 fee", None),
    ("ensemble", "?!", None),
    ("default", " currency symbols before an amount", "currency symbols before an amount"),
])
def test_parsers(name, answer, expected):
    assert get_explainer(name).parse([Response(text=answer)]) == [expected]


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_a_failed_call_is_never_parsed(name):
    failed = Response(text="Explanation: names of rivers", error="HTTP 500")
    assert get_explainer(name).parse([failed, Response(text="Explanation: names of rivers")]) == [
        None, "names of rivers"]


# --- best of k -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_candidates_are_distinct_sampled_requests(name, evidence, tokenizer):
    explainer = get_explainer(name)
    single = explainer.requests(tokenizer, evidence[0], ExplainerConfig())
    assert len(single) == 1 and single[0].seed is None and single[0].temperature == 0.0
    several = explainer.requests(tokenizer, evidence[0], ExplainerConfig(candidates=3))
    assert [r.seed for r in several] == [0, 1, 2]
    assert {r.prompt for r in several} == {single[0].prompt}
    assert all(r.temperature == 0.7 for r in several)
    assert len({request_key("b", "m", r) for r in several}) == 3
    assert explainer.requests(tokenizer, evidence[0], ExplainerConfig(candidates=2, temperature=0.3))[0].temperature == 0.3


def test_cot_gets_a_generous_budget(evidence, tokenizer):
    assert get_explainer("cot").requests(tokenizer, evidence[0], ExplainerConfig())[0].max_tokens >= 256
    assert get_explainer("default").requests(tokenizer, evidence[0], ExplainerConfig())[0].max_tokens == 48


def test_zero_candidates_is_refused():
    with pytest.raises(LanternError, match="candidates"):
        ExplainerConfig(candidates=0).check()


# --- output evidence -----------------------------------------------------------------------------------

def test_logit_lens_is_the_final_norm_and_unembedding(tiny_model, tokenizer, tmp_path):
    model = copy.deepcopy(tiny_model)  # the shared model is read-only; give this one a non-trivial final norm
    norm = model.model.norm
    with torch.no_grad():
        norm.weight.copy_(torch.randn(TINY_HIDDEN, generator=torch.Generator().manual_seed(1)))
    coder = SparsifyCoder(_sae(tmp_path, "layers.1"), name="sae")
    d = coder.decoder_directions()[:7]
    direct = (d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight)) @ model.lm_head.weight.T
    lens = logit_lens(model, d)
    torch.testing.assert_close(lens, direct, rtol=1e-4, atol=1e-4)
    banned = banned_tokens(model, tokenizer)
    best = direct.masked_fill(banned, float("-inf")).topk(1)
    for row, value, token_id in zip(top_tokens(tokenizer, lens, banned, 5), best.values[:, 0], best.indices[:, 0]):
        assert len(row) == 5 and all(a.score >= b.score for a, b in zip(row, row[1:]))
        assert row[0].score == pytest.approx(float(value), abs=1e-3)
        assert row[0].token == token_strings(tokenizer, [int(token_id)])[0]


def _sae(tmp_path: Path, hookpoint: str, rows: dict[int, torch.Tensor] | None = None, **kwargs) -> Path:
    folder = tmp_path / hookpoint
    tensors = write_sparsify_folder(folder, TINY_HIDDEN, 16, 4, **kwargs)
    for latent, row in (rows or {}).items():
        tensors["W_dec"][latent] = row
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae.safetensors"))
    return folder


def test_write_sites(tiny_model, tmp_path):
    layers = tiny_model.model.layers
    sae = write_site(tiny_model, SparsifyCoder(_sae(tmp_path / "a", "layers.1")))
    assert (sae.module, sae.side, sae.post_norm) == (layers[1], "output", None)
    transcoder = SparsifyCoder(_sae(tmp_path / "b", "layers.1.mlp", transcode=True))
    assert transcoder.hookpoint == "layers.1.mlp:input"
    site = write_site(tiny_model, transcoder)
    assert (site.module, site.side, site.post_norm) == (layers[1].mlp, "output", layers[1].post_feedforward_layernorm)
    site = write_site(tiny_model, NeuronCoder(2, TINY_MLP, down_proj=layers[2].mlp.down_proj.weight))
    assert (site.module, site.side) == (layers[2].mlp.down_proj, "output")
    assert site.post_norm is layers[2].post_feedforward_layernorm


@pytest.mark.parametrize("hookpoint", ["layers.1", "layers.3"])
def test_steering_along_a_token_row_promotes_that_token(hookpoint, tiny_model, tokenizer, tmp_path):
    """The unembedding row of " river" as a decoder direction: steering with it (at a middle and at the last
    layer) makes " river" the most promoted token, and the logit lens agrees; the model is unchanged after."""
    river = tokenizer(" river", add_special_tokens=False).input_ids[0]
    coder = SparsifyCoder(_sae(tmp_path, hookpoint, {0: tiny_model.lm_head.weight[river].clone()}))
    ids = torch.tensor([[tokenizer.bos_token_id, 1000, 2000]])
    before = tiny_model(input_ids=ids).logits
    row_norms = coder.decoder_directions().norm(dim=-1)
    strengths = {0: 16 / float(row_norms[0]), 3: 16 / float(row_norms[3])}  # about the residual's own norm
    found = output_evidence(tiny_model, tokenizer, coder, strengths, top_k=5)
    assert found[0].steering[0].token == " river" and found[0].steering[0].score > 0
    assert found[0].logit_lens[0].token == " river"
    assert " river" not in [t.token for t in found[3].steering]
    assert found[0].site == f"{hookpoint} (output)" and found[0].steering_norm == pytest.approx(16, rel=1e-3)
    torch.testing.assert_close(tiny_model(input_ids=ids).logits, before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_model.modules())


def test_coder_without_decoder_directions_is_a_clear_error(tiny_model, tokenizer):
    with pytest.raises(LanternError, match="no decoder directions"):
        output_evidence(tiny_model, tokenizer, NeuronCoder(2, TINY_MLP), {0: 1.0})


# --- the stage -----------------------------------------------------------------------------------------

COLUMNS = {"coder", "latent", "explainer", "candidate", "explanation", "failed", "error", "raw_answer", "prompt",
           "prompt_tokens", "completion_tokens", "seconds", "attempts", "cached", "llm", "evidence"}


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_explain_stage_runs_each_explainer(name, run_cfg, subject, client):
    from lantern.pipeline.explain_stage import run_explain

    run_cfg.explainer = ExplainerConfig(kind=name)
    result = run_explain(run_cfg, client, subject=subject)
    rows = pq.read_table(run_cfg.path / EXPLANATIONS).to_pylist()
    assert set(rows[0]) == COLUMNS
    assert len(rows) == 4 and {r["explainer"] for r in rows} == {name} and {r["candidate"] for r in rows} == {0}
    assert result["explained"] + result["failed"] == 4
    usage = pq.read_table(run_cfg.path / "usage" / "explain.parquet").to_pylist()
    assert [u["task"] for u in usage] == [f"{name}:0"] * 4
    for r in rows:
        assert r["prompt_tokens"] > 0 and r["failed"] == (r["explanation"] is None)
        shown = json.loads(r["evidence"])
        assert shown["windows"] == RECORDS.n_explain
        if name in ("output", "ensemble"):
            assert len(shown["logit_lens"]) == 10 and len(shown["steering"]) == 10
            assert shown["logit_lens"][0]["token"] in r["prompt"]
        if name == "contrastive":
            assert shown["negatives_shown"] > 0


def test_explain_stage_writes_every_candidate(run_cfg, subject, client):
    from lantern.pipeline.explain_stage import run_explain

    run_cfg.explainer = ExplainerConfig(kind="default", candidates=2)
    result = run_explain(run_cfg, client, subject=subject)
    rows = pq.read_table(run_cfg.path / EXPLANATIONS).to_pylist()
    assert result["candidates"] == len(rows) == 8
    by_latent: dict = {}
    for r in rows:
        by_latent.setdefault((r["coder"], r["latent"]), []).append(r)
    for group in by_latent.values():
        assert sorted(r["candidate"] for r in group) == [0, 1]
        assert len({r["prompt"] for r in group}) == 1


def test_cli_sets_the_explainer_and_refuses_unknown_ones(run_cfg):
    from typer.testing import CliRunner

    from lantern.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["explain", "--run-dir", str(run_cfg.path), "--explainer", "nope"])
    assert done.exit_code == 2 and "unknown explainer 'nope'" in done.output and "ensemble" in done.output
    done = runner.invoke(app, ["explain", "--run-dir", str(run_cfg.path), "--candidates", "0"])
    assert done.exit_code == 2 and "candidates must be at least 1" in done.output
    done = runner.invoke(app, ["explain", "--run-dir", str(run_cfg.path), "--explainer", "activations",
                               "--candidates", "2"])
    assert done.exit_code == 0, done.output
    saved = RunConfig.load(run_cfg.path).explainer
    assert (saved.kind, saved.candidates) == ("activations", 2)
    rows = pq.read_table(run_cfg.path / EXPLANATIONS).to_pylist()
    assert len(rows) == 8 and {r["explainer"] for r in rows} == {"activations"}


def test_run_asks_the_records_for_what_the_explainer_needs(tmp_path):
    from lantern.configure import apply_explainer

    cfg = RunConfig(run_dir=str(tmp_path))
    apply_explainer(cfg, "contrastive", 3, records_pending=True)
    assert (cfg.explainer.kind, cfg.explainer.candidates) == ("contrastive", 3)
    assert cfg.records.n_explain_negatives > 0 and cfg.records.n_validation_per_decile == 1
    kept = RunConfig(run_dir=str(tmp_path))
    apply_explainer(kept, "contrastive", 3, records_pending=False)  # `explain`: the records exist already
    assert kept.records == RecordConfig()
    plain = RunConfig(run_dir=str(tmp_path))
    apply_explainer(plain, None, None, records_pending=True)
    assert plain.explainer == ExplainerConfig() and plain.records == RecordConfig()


def test_a_prompt_too_long_for_the_context_drops_windows_never_instructions(evidence, tokenizer):
    from lantern.explain.base import fit_to_context

    explainer = get_explainer("default")
    whole = evidence[0]
    size = len(explainer.prompt(tokenizer, whole, ExplainerConfig()))
    fitted = fit_to_context(explainer, tokenizer, whole, ExplainerConfig(), max_chars=size - 1)
    assert 0 < len(fitted.windows) < len(whole.windows)
    assert fitted.dropped_windows == len(whole.windows) - len(fitted.windows)
    prompt = explainer.prompt(tokenizer, fitted, ExplainerConfig())
    assert len(prompt) <= size - 1 and prompt.startswith(explainer.prompt(tokenizer, whole, ExplainerConfig())[:400])
    assert fit_to_context(explainer, tokenizer, whole, ExplainerConfig()) == whole  # fits: unchanged
