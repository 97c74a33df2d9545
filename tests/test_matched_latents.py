"""records.match_latents_to: a second coder explains the decoder matches of the first coder's sampled latents,
so two layers' explanations can be compared pair by pair (cross-layer overlap)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from conftest import SAE_K, SAE_LATENTS, TINY_HIDDEN, opts, write_sparsify_folder
from lantern.cache.build import build_cache
from lantern.coders.sparsify import SparsifyCoder
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.pipeline.files import latents_file, records_file
from lantern.pipeline.records_stage import run_records
from lantern.records.build import RecordConfig
from lantern.records.matching import MATCHED_SUFFIX

RECORDS = RecordConfig(ctx_len=12, tokens_before=6, n_explain=6, n_test_per_decile=1, n_negatives=4,
                       n_similar_negatives=0, n_neighbour_negatives=2, min_windows=16)


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory, tiny_model, corpus_tokens):
    """A run directory with the cache of an SAE at layers.1 and one at layers.2 whose latents are the first's,
    permuted (latent i of the second is latent perm[i] of the first): (run dir, perm)."""
    root = tmp_path_factory.mktemp("matched")
    first = write_sparsify_folder(root / "one" / "layers.1", TINY_HIDDEN, SAE_LATENTS, SAE_K, seed=3)
    perm = np.random.default_rng(0).permutation(SAE_LATENTS)
    second = root / "two" / "layers.2"
    second.mkdir(parents=True)
    shutil.copy(root / "one" / "layers.1" / "cfg.json", second / "cfg.json")
    index = torch.as_tensor(perm)
    save_file({"encoder.weight": first["encoder.weight"][index].contiguous(),
               "encoder.bias": first["encoder.bias"][index].contiguous(),
               "W_dec": first["W_dec"][index].contiguous(), "b_dec": first["b_dec"]}, str(second / "sae.safetensors"))
    coders = [SparsifyCoder(root / "one" / "layers.1", name="one"), SparsifyCoder(second, name="two")]
    tokens, doc_ids = corpus_tokens
    build_cache(root / "run" / "cache", tiny_model, "tiny-gemma3", coders, tokens, doc_ids, corpus_spec="embedded",
                options=opts(5))
    return root / "run", perm


def config(run_dir, anchor: str, latents: int = 6) -> RunConfig:
    return RunConfig(run_dir=str(run_dir), model="tiny-gemma3", coders=["one", "two"], latents=latents,
                     records=RecordConfig(**{**RECORDS.__dict__, "match_latents_to": anchor}))


def selected(run_dir, coder: str) -> list[int]:
    return pq.read_table(latents_file(run_dir, coder), columns=["latent"]).column("latent").to_pylist()


def test_second_coder_explains_the_decoder_partners_of_the_first(two_layers):
    run_dir, perm = two_layers
    run_records(config(run_dir, "one"))
    pairs = json.loads(records_file(run_dir, "two").with_suffix(MATCHED_SUFFIX).read_text())
    assert pairs["matched_to"] == "one"
    anchors = selected(run_dir, "one")
    assert sorted(p["anchor_latent"] for p in pairs["pairs"]) == sorted(anchors) and len(anchors) == 6
    partner = {int(p): i for i, p in enumerate(perm)}  # latent of `one` → the same direction's latent in `two`
    # each pair is the partner where that latent is eligible in `two` (it sees layer 2's residual, so it fires
    # elsewhere): the sum-maximising assignment could in principle trade a perfect partner away, but not with
    # random directions this far apart
    eligible = [p for p in pairs["pairs"] if p["latent"] == partner[p["anchor_latent"]]]
    assert len(eligible) >= 3, pairs
    assert all(p["decoder_cosine"] == pytest.approx(1.0, abs=1e-3) for p in eligible)
    assert all(p["decoder_cosine"] < 0.999 for p in pairs["pairs"] if p not in eligible)
    assert sorted(selected(run_dir, "two")) == sorted(p["latent"] for p in pairs["pairs"])
    assert not records_file(run_dir, "one").with_suffix(MATCHED_SUFFIX).exists()
    # records redrawn without matching: the old pairs no longer describe them and are gone
    run_records(config(run_dir, ""))
    assert not records_file(run_dir, "two").with_suffix(MATCHED_SUFFIX).exists()


def test_unknown_anchor_is_a_clear_error(two_layers):
    run_dir, _ = two_layers
    with pytest.raises(LanternError, match="names no coder of this run; its coders: one, two"):
        run_records(config(run_dir, "sae"))


def test_overlap_reads_the_pairs_and_tells_alike_from_unrelated_explanations(two_layers):
    """The cross-layer analysis on the pairs the records stage saved: explanations that agree pair by pair beat the
    permutation null and the explanation matching finds every partner; unrelated ones do neither."""
    from lantern.analysis.common import Context
    from lantern.analysis.overlap import matched_pairs

    run_dir, _ = two_layers
    cfg = config(run_dir, "one")
    run_records(cfg)
    latents = {"one": sorted(selected(run_dir, "one")), "two": sorted(selected(run_dir, "two"))}
    pairs = json.loads(records_file(run_dir, "two").with_suffix(MATCHED_SUFFIX).read_text())["pairs"]
    rng = np.random.default_rng(1)
    ea = rng.normal(size=(6, 16))
    ea /= np.linalg.norm(ea, axis=1, keepdims=True)
    partner_row = {p["latent"]: latents["one"].index(p["anchor_latent"]) for p in pairs}
    alike = np.stack([ea[partner_row[latent]] for latent in latents["two"]])
    found = matched_pairs(Context(cfg), "one", "two", latents, ea, alike, np.random.default_rng(0), 2000)
    assert found["decoder_matched_pairs"] == 6 and found["explanation_match_finds_decoder_partner"] == 1.0
    assert found["explanation_cosine_of_decoder_pairs"] == pytest.approx(1.0)
    assert found["decoder_pairs_permutation_p"] < 0.01 and found["explanation_match_chance"] == pytest.approx(1 / 6)
    unrelated = rng.normal(size=(6, 16))
    unrelated /= np.linalg.norm(unrelated, axis=1, keepdims=True)
    found = matched_pairs(Context(cfg), "one", "two", latents, ea, unrelated, np.random.default_rng(0), 2000)
    assert found["decoder_pairs_permutation_p"] > 0.05
    # the same pairs read from either side
    assert matched_pairs(Context(cfg), "two", "one", latents, alike, ea, np.random.default_rng(0), 2000)[
        "explanation_match_finds_decoder_partner"] == 1.0


def test_a_coder_without_cached_directions_is_refused_before_any_records(two_layers, tmp_path):
    """A cache made before lantern stored decoder directions: said up front, no records of the anchor built."""
    from lantern.cache import layout

    run_dir, _ = two_layers
    shutil.copytree(run_dir / "cache", tmp_path / "cache")
    (layout.coder_dir(tmp_path / "cache", "two") / layout.DECODER_DIRECTIONS).unlink()
    with pytest.raises(LanternError, match=r"coder 'two' has no decoder directions in the cache .* new run directory"):
        run_records(config(tmp_path, "one"))
    assert not latents_file(tmp_path, "one").exists()
