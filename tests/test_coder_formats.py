"""Checkpoints written by the real SAELens and sparsify libraries, read by lantern, must encode as the libraries do.

Each checkpoint is built with the library's own classes (small, with every bias and threshold randomised so
that some but not all latents fire), saved with its own save function, loaded through lantern's spec loader,
and compared with the library's own `encode` on random inputs and on real activations of the tiny Gemma 3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sae_lens import (SAE, GatedSAE, GatedSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, JumpReLUSkipTranscoder,
                      JumpReLUSkipTranscoderConfig, JumpReLUTranscoder, JumpReLUTranscoderConfig, SkipTranscoder,
                      SkipTranscoderConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig, Transcoder,
                      TranscoderConfig)
from sae_lens.saes.sae import SAEMetadata
from sparsify import SparseCoder as SparsifyModule
from sparsify import SparseCoderConfig

from conftest import TINY_HIDDEN, TINY_LAYERS, TINY_MLP
from lantern.coders import load_coder, load_coders
from lantern.coders.base import scatter_dense
from lantern.coders.random import RandomCoder
from lantern.coders.saelens import SAELensCoder
from lantern.coders.sparsify import SparsifyCoder
from lantern.errors import LanternError
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint

D_SAE = 96


@pytest.fixture(scope="module")
def ids(corpus_tokens):
    tokens, _ = corpus_tokens
    return torch.from_numpy(tokens[:4, :48].astype("int64"))


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter seeded random values: biases and thresholds matter, so none may stay zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 1.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * (2 if name == "W_enc" else 1))


def meta(hook: str, **extra) -> SAEMetadata:
    return SAEMetadata(hook_name=hook, model_name="tiny-gemma3", **extra)


def real_acts(model, ids, hookpoint: str) -> torch.Tensor:
    acts = capture_activations(model, ids, [resolve_hookpoint(model, hookpoint)])[hookpoint]
    return acts.reshape(-1, acts.shape[-1])


# name -> (sae_lens class, config) for every architecture lantern reads; hooks are TransformerLens spellings.
SAELENS_CASES = {
    "standard": lambda: StandardSAE(StandardSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE,
                                                      metadata=meta("blocks.1.hook_resid_post"))),
    "standard-neurons": lambda: StandardSAE(StandardSAEConfig(d_in=TINY_MLP, d_sae=D_SAE,
                                                              metadata=meta("blocks.2.mlp.hook_post"))),
    "standard-no-b_dec-in": lambda: StandardSAE(StandardSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE,
                                                                  apply_b_dec_to_input=False,
                                                                  metadata=meta("blocks.2.hook_resid_post"))),
    "standard-constant-norm": lambda: StandardSAE(StandardSAEConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, normalize_activations="constant_norm_rescale",
        metadata=meta("blocks.1.hook_resid_post"))),
    "standard-layer-norm": lambda: StandardSAE(StandardSAEConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, normalize_activations="layer_norm", metadata=meta("blocks.1.hook_mlp_out"))),
    "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE,
                                                      metadata=meta("blocks.2.hook_resid_post"))),
    "topk": lambda: TopKSAE(TopKSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE, k=8, metadata=meta("blocks.1.hook_resid_post"))),
    "topk-rescaled": lambda: TopKSAE(TopKSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE, k=8, rescale_acts_by_decoder_norm=True,
                                                   metadata=meta("blocks.0.hook_attn_out"))),
    "transcoder": lambda: Transcoder(TranscoderConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, d_out=TINY_HIDDEN, apply_b_dec_to_input=False,
        metadata=meta("blocks.2.ln2.hook_normalized", hook_name_out="blocks.2.hook_mlp_out"))),
    "skip_transcoder": lambda: SkipTranscoder(SkipTranscoderConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, d_out=TINY_HIDDEN, apply_b_dec_to_input=False,
        metadata=meta("blocks.1.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out"))),
    "jumprelu_transcoder": lambda: JumpReLUTranscoder(JumpReLUTranscoderConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, d_out=TINY_HIDDEN, apply_b_dec_to_input=False,
        metadata=meta("blocks.3.hook_mlp_in", hook_name_out="blocks.3.hook_mlp_out"))),
    "jumprelu_skip_transcoder": lambda: JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(
        d_in=TINY_HIDDEN, d_sae=D_SAE, d_out=TINY_HIDDEN, apply_b_dec_to_input=False,
        metadata=meta("blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"))),
}
TRANSCODERS = {"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"}


def assert_matches_library(coder, lib_encode, lib_forward, x: torch.Tensor, dense_arch: bool) -> torch.Tensor:
    """lantern's sparse codes, made dense, equal the library's; so do the reconstructions. Returns the codes."""
    acts = coder.encode(x)
    assert acts.indices.shape == acts.values.shape and acts.indices.shape[0] == x.shape[0]
    assert (acts.values >= 0).all()
    ours = scatter_dense(acts, coder.num_latents)
    with torch.no_grad():
        theirs = lib_encode(x)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(coder.decode(acts, x), lib_forward(x), rtol=1e-5, atol=1e-5)
    if dense_arch:  # k is the most latents any row has firing, so nothing that fired is dropped
        assert acts.indices.shape[1] == int((theirs > 0).sum(dim=1).max())
    return ours


@pytest.mark.parametrize("case", list(SAELENS_CASES))
def test_saelens_checkpoint_encodes_like_sae_lens(tmp_path, tiny_model, ids, case):
    sae = SAELENS_CASES[case]().eval()
    randomise(sae, seed=len(case))
    folder = tmp_path / case
    sae.save_model(folder)
    # What a user gets from SAELens itself reading the folder, not just the object we built.
    loaded = SAE.load_from_disk(folder).eval()

    coder = load_coder(str(folder), tiny_model)
    assert isinstance(coder, SAELensCoder) and coder.name == case
    assert coder.architecture == sae.cfg.architecture()
    assert coder.hookpoint == sae.cfg.metadata.hook_name
    assert coder.kind == ("transcoder" if case in TRANSCODERS else "sae")
    assert (coder.d_in, coder.num_latents, coder.d_out) == (sae.cfg.d_in, D_SAE, sae.W_dec.shape[1])
    assert coder.decoder_directions().shape == (D_SAE, coder.d_out)
    info = coder.describe()
    assert info["format"] == "saelens" and info["architecture"] == coder.architecture
    assert info.get("skip", False) == ("skip" in case)
    dense_arch = coder.k is None

    x = torch.randn(300, coder.d_in, generator=torch.Generator().manual_seed(5)) * 2
    codes = assert_matches_library(coder, loaded.encode, loaded.forward, x, dense_arch)
    fired = (codes > 0).float().mean()
    assert 0.02 < fired < 0.9, f"{case}: {fired:.2f} of latents fire; the test would not tell architectures apart"

    # Real activations of the tiny model, read where the checkpoint says.
    hp = resolve_hookpoint(tiny_model, coder.hookpoint)
    if case in TRANSCODERS:
        assert (hp.module_path, hp.read) == (f"layers.{hp.layer}.mlp", "input")
    real = real_acts(tiny_model, ids, coder.hookpoint)
    assert real.shape[-1] == coder.d_in
    codes = assert_matches_library(coder, loaded.encode, loaded.forward, real, dense_arch)
    assert (codes > 0).any()


def test_saelens_arch_details_are_not_vacuous(tmp_path):
    """The switches lantern honours change the codes, so matching SAELens above really tested them."""
    x = torch.randn(50, TINY_HIDDEN, generator=torch.Generator().manual_seed(1)) * 3
    codes = {}
    weights = {}
    for case in ("standard", "standard-constant-norm", "standard-layer-norm", "topk", "topk-rescaled", "jumprelu"):
        sae = SAELENS_CASES[case]()
        randomise(sae, seed=7)
        if case == "jumprelu":  # the standard SAE's weights plus a threshold
            sae.load_state_dict({**weights["standard"], "threshold": sae.threshold.detach()})
        weights[case] = sae.state_dict()
        sae.save_model(tmp_path / case)
        coder = SAELensCoder(tmp_path / case)
        codes[case] = scatter_dense(coder.encode(x), D_SAE)
    assert not torch.allclose(codes["standard"], codes["standard-constant-norm"])
    assert not torch.allclose(codes["standard"], codes["standard-layer-norm"])
    assert not torch.allclose(codes["topk"], codes["topk-rescaled"])
    # JumpReLU zeroes some latents a plain ReLU would keep.
    jump, relu = codes["jumprelu"], codes["standard"]
    assert ((jump == 0) & (relu > 0)).any()
    assert (jump[jump > 0] == relu[jump > 0]).all()


def _old_style(folder: Path, **changes) -> None:
    """Rewrite a SAELens 6 cfg.json the way SAELens < 6 wrote it: no architecture, no metadata, top-level hook."""
    cfg = json.loads((folder / "cfg.json").read_text())
    hook = cfg.pop("metadata")["hook_name"]
    cfg.pop("architecture")
    cfg.update(hook_name=hook, model_name="tiny-gemma3", **changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("case, changes", [
    ("standard", {"normalize_activations": False}),
    ("standard", {"activation_fn": "relu", "hook_point_layer": 1}),
    ("topk", {"activation_fn": "topk", "activation_fn_kwargs": {"k": 8}}),
])
def test_pre_6_saelens_cfg(tmp_path, tiny_model, case, changes):
    sae = SAELENS_CASES[case]()
    randomise(sae, seed=3)
    folder = tmp_path / "old"
    sae.save_model(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    if case == "topk":
        cfg.pop("k")  # very old TopK files carried k only in activation_fn_kwargs
        (folder / "cfg.json").write_text(json.dumps(cfg))
    _old_style(folder, **changes)
    loaded = SAE.load_from_disk(folder).eval()  # SAELens's own reading of an old file
    coder = load_coder(str(folder), tiny_model)
    assert coder.architecture == case and coder.hookpoint == "blocks.1.hook_resid_post"
    x = torch.randn(100, TINY_HIDDEN, generator=torch.Generator().manual_seed(2)) * 2
    assert_matches_library(coder, loaded.encode, loaded.forward, x, dense_arch=case != "topk")


def test_saelens_cfg_without_hook_needs_one_and_override_wins(tmp_path, tiny_model):
    sae = SAELENS_CASES["standard"]()
    sae.save_model(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg["metadata"].pop("hook_name")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(LanternError, match=r"names no hook .* e\.g\. .*sae:layers\.6"):
        load_coder(str(tmp_path / "sae"), tiny_model)
    coder = load_coder(f"{tmp_path / 'sae'}:layers.2", tiny_model)
    assert coder.hookpoint == "layers.2"
    # An override may itself contain ':' (the longest existing folder prefix is the path).
    assert load_coder(f"{tmp_path / 'sae'}:layers.2.mlp:input", tiny_model).hookpoint == "layers.2.mlp:input"


def test_unsupported_saelens_settings_are_clear_errors(tmp_path, tiny_model):
    gated = GatedSAE(GatedSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE, metadata=meta("blocks.1.hook_resid_post")))
    gated.save_model(tmp_path / "gated")
    with pytest.raises(LanternError, match=r"architecture 'gated' is not supported \(supported: standard, jumprelu, "
                                           r"topk, transcoder, skip_transcoder"):
        load_coder(str(tmp_path / "gated"), tiny_model)

    sae = StandardSAE(StandardSAEConfig(d_in=TINY_HIDDEN, d_sae=D_SAE, normalize_activations="expected_average_only_in",
                                        metadata=meta("blocks.1.hook_resid_post")))
    sae.save_model(tmp_path / "scaled")
    with pytest.raises(LanternError, match=r"normalize_activations 'expected_average_only_in' is not supported "
                                           r"\(supported: none, constant_norm_rescale, layer_norm\)"):
        load_coder(str(tmp_path / "scaled"), tiny_model)

    jump = SAELENS_CASES["jumprelu"]()
    jump.save_model(tmp_path / "jump")
    (tmp_path / "jump" / "sae_weights.safetensors").unlink()
    with pytest.raises(LanternError, match=r"lacks sae_weights\.safetensors"):
        load_coder(str(tmp_path / "jump"), tiny_model)


def test_jumprelu_log_threshold_from_older_files(tmp_path):
    from safetensors.torch import load_file, save_file

    sae = SAELENS_CASES["jumprelu"]()
    randomise(sae, seed=11)
    sae.save_model(tmp_path / "new")
    sae.save_model(tmp_path / "old")
    weights = load_file(tmp_path / "old" / "sae_weights.safetensors")
    weights["log_threshold"] = weights.pop("threshold").log()
    save_file(weights, tmp_path / "old" / "sae_weights.safetensors")
    x = torch.randn(40, TINY_HIDDEN, generator=torch.Generator().manual_seed(0)) * 2
    new, old = SAELensCoder(tmp_path / "new").encode(x), SAELensCoder(tmp_path / "old").encode(x)
    torch.testing.assert_close(scatter_dense(old, D_SAE), scatter_dense(new, D_SAE))


def test_max_active_keeps_the_largest(tmp_path):
    sae = SAELENS_CASES["standard"]()
    randomise(sae, seed=4)
    sae.save_model(tmp_path / "s")
    x = torch.randn(60, TINY_HIDDEN, generator=torch.Generator().manual_seed(6)) * 2
    full = scatter_dense(SAELensCoder(tmp_path / "s").encode(x), D_SAE)
    acts = SAELensCoder(tmp_path / "s", max_active=3).encode(x)
    assert acts.values.shape == (60, 3)
    kth = full.topk(3, dim=-1).values[:, -1:]
    torch.testing.assert_close(scatter_dense(acts, D_SAE), torch.where(full >= kth, full, torch.zeros_like(full)))


# ---- sparsify ----------------------------------------------------------------------------------------------

def sparsify_module(seed: int, **cfg) -> SparsifyModule:
    torch.manual_seed(seed)
    coder = SparsifyModule(TINY_HIDDEN, SparseCoderConfig(num_latents=128, k=8, **cfg))
    randomise(coder, seed)
    return coder.eval()


def sparsify_forward(module: SparsifyModule):
    """The library's reconstruction (its forward also adds the skip connection)."""
    return lambda x: module(x).sae_out


def sparsify_encode(module: SparsifyModule):
    def encode(x):
        out = module.encode(x)
        dense = torch.zeros(x.shape[0], module.num_latents)
        return dense.scatter_(1, out.top_indices, out.top_acts)
    return encode


@pytest.mark.parametrize("folder_name, cfg", [
    ("layers.1", {}),
    ("layers.2.mlp", {"transcode": True}),
    ("layers.1.mlp", {"transcode": True, "skip_connection": True}),
])
def test_sparsify_checkpoint_encodes_like_sparsify(tmp_path, tiny_model, ids, folder_name, cfg):
    module = sparsify_module(seed=len(folder_name), **cfg)
    module.save_to_disk(tmp_path / folder_name)
    loaded = SparsifyModule.load_from_disk(tmp_path / folder_name).eval()

    coder = load_coder(str(tmp_path / folder_name), tiny_model)
    assert isinstance(coder, SparsifyCoder) and coder.name == folder_name.replace(".", "_")
    transcoder = cfg.get("transcode", False)
    assert coder.hookpoint == folder_name + (":input" if transcoder else "")
    assert coder.kind == ("transcoder" if transcoder else "sae")
    assert coder.describe().get("skip", False) == cfg.get("skip_connection", False)
    assert coder.decoder_directions().shape == (128, TINY_HIDDEN)

    x = torch.randn(200, TINY_HIDDEN, generator=torch.Generator().manual_seed(9)) * 2
    assert_matches_library(coder, sparsify_encode(loaded), sparsify_forward(loaded), x, dense_arch=False)
    real = real_acts(tiny_model, ids, coder.hookpoint)
    codes = assert_matches_library(coder, sparsify_encode(loaded), sparsify_forward(loaded), real, dense_arch=False)
    assert (codes > 0).any()
    if cfg.get("skip_connection"):
        with pytest.raises(LanternError, match="needs its input x"):
            coder.decode(coder.encode(x))


def test_sparsify_groupmax_is_a_clear_error(tmp_path, tiny_model):
    sparsify_module(seed=0, activation="groupmax").save_to_disk(tmp_path / "layers.1")
    with pytest.raises(LanternError, match=r"activation 'groupmax' is not supported \(supported: topk\)"):
        load_coder(str(tmp_path / "layers.1"), tiny_model)


def test_multi_hookpoint_directory(tmp_path, tiny_model, ids):
    run = tmp_path / "run"
    modules = {}
    for layer in (0, 1, 2, 3):  # saved the way sparsify's trainer saves a run: one folder per hookpoint
        modules[f"layers.{layer}"] = sparsify_module(seed=layer)
        modules[f"layers.{layer}"].save_to_disk(run / f"layers.{layer}")
    (run / "config.json").write_text("{}")  # a run folder holds other files too

    coders = load_coders(str(run), tiny_model)
    assert [c.hookpoint for c in coders] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert [c.name for c in coders] == ["layers_0", "layers_1", "layers_2", "layers_3"]
    library = SparsifyModule.load_many(str(run), local=True)
    assert sorted(library) == [c.hookpoint for c in coders]
    for coder in coders:
        x = real_acts(tiny_model, ids, coder.hookpoint)
        lib = library[coder.hookpoint]
        assert_matches_library(coder, sparsify_encode(lib), sparsify_forward(lib), x, dense_arch=False)

    with pytest.raises(LanternError, match=r"holds 4 coders \(layers_0, layers_1, layers_2, layers_3\); pick one"):
        load_coder(str(run), tiny_model)
    one = load_coder(f"{run}:layers.2", tiny_model)
    assert one.hookpoint == "layers.2" and one.name == "layers_2"
    with pytest.raises(LanternError, match=r"has no coder folder 'layers.9'; it has: layers.0, layers.1"):
        load_coders(f"{run}:layers.9", tiny_model)


def test_multi_directory_sorts_layers_naturally_and_mixes_formats(tmp_path, tiny_model):
    run = tmp_path / "run"
    for layer in (10, 2):
        sparsify_module(seed=layer).save_to_disk(run / f"layers.{layer}")
    sae = SAELENS_CASES["standard"]()
    sae.save_model(run / "layers.3")
    names = [c.name for c in load_coders(str(run), tiny_model)]
    assert names == ["layers_2", "layers_3", "layers_10"]


# ---- random directions -------------------------------------------------------------------------------------

def test_random_coder_spec_and_encode(tiny_model, ids):
    coder = load_coder("random:256:4", tiny_model, layer=1)
    assert isinstance(coder, RandomCoder) and coder.name == "random" and coder.kind == "random"
    assert (coder.hookpoint, coder.d_in, coder.num_latents, coder.k) == ("layers.1", TINY_HIDDEN, 256, 4)
    directions = coder.decoder_directions()
    assert directions.shape == (256, TINY_HIDDEN)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(256))
    # Seeded: the same spec gives the same directions (so a cache fingerprint means the same latents).
    torch.testing.assert_close(load_coder("random:256:4", tiny_model, layer=1).decoder_directions(), directions)
    assert not torch.allclose(RandomCoder("layers.1", TINY_HIDDEN, 256, 4, seed=1).directions, directions)

    x = real_acts(tiny_model, ids, coder.hookpoint)
    acts = coder.encode(x)
    assert acts.values.shape == (x.shape[0], 4)
    proj = torch.relu(x @ directions.T)
    kth = proj.topk(4, dim=-1).values[:, -1:]
    torch.testing.assert_close(scatter_dense(acts, 256), torch.where(proj >= kth, proj, torch.zeros_like(proj)))
    assert coder.describe()["k"] == 4 and coder.describe()["seed"] == 0

    default = load_coder("random", tiny_model, layer=2)
    assert (default.num_latents, default.k, default.hookpoint) == (4096, 32, "layers.2")
    assert load_coder("random:16", tiny_model, layer=1).k == 16  # k never exceeds N


@pytest.mark.parametrize("spec, message", [
    ("random:many", r"random\[:N\[:K\]\] with whole numbers"),
    ("random:8:9", r"1 <= k <= num_latents"),
    ("random:8:2:1", r"expected random\[:N\[:K\]\]"),
])
def test_random_coder_bad_specs(tiny_model, spec, message):
    with pytest.raises(LanternError, match=message):
        load_coder(spec, tiny_model, layer=1)
    with pytest.raises(LanternError, match=rf"--layer {TINY_LAYERS} does not exist"):
        load_coder("random", tiny_model, layer=TINY_LAYERS)


# ---- folders lantern does not know -------------------------------------------------------------------------

def test_unknown_folder_names_the_known_formats(tmp_path, tiny_model):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"\0")
    (folder / "config.yaml").write_text("a: 1")
    with pytest.raises(LanternError) as info:
        load_coder(str(folder), tiny_model)
    message = str(info.value)
    assert "not a coder folder lantern knows (it holds: config.yaml, weights.pt)" in message
    for needed in ("sparsify (cfg.json + sae.safetensors)", "SAELens (cfg.json + sae_weights.safetensors)",
                   "one per hookpoint"):
        assert needed in message

    (folder / "cfg.json").write_text(json.dumps({"hello": 1}))  # a cfg.json of neither library
    with pytest.raises(LanternError, match="Known formats: sparsify"):
        load_coder(str(folder), tiny_model)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LanternError, match=r"it holds: nothing"):
        load_coder(str(empty), tiny_model)

    sparsify_module(seed=0).save_to_disk(tmp_path / "layers.1")
    with pytest.raises(LanternError, match=r"is a file; give the folder that holds it"):
        load_coder(str(tmp_path / "layers.1" / "sae.safetensors"), tiny_model)
    (tmp_path / "layers.1" / "sae.safetensors").unlink()  # sparsify cfg.json alone: name the missing weights
    with pytest.raises(LanternError, match=r"lacks sae\.safetensors"):
        load_coder(str(tmp_path / "layers.1"), tiny_model)
    with pytest.raises(LanternError,
                       match=r"unknown coder '.*nowhere': use sae, sae-l8, sae-w2048, neurons, .*random"):
        load_coder(str(tmp_path / "nowhere"), tiny_model)


def test_an_embedded_sae_that_is_not_installed_is_a_clear_error(tiny_model, monkeypatch):
    from lantern.coders import loading

    monkeypatch.setitem(loading.EMBEDDED_SAES, "sae-l99", "layers.99")
    with pytest.raises(LanternError, match=r"the embedded SAE 'sae-l99' is not in this installation .*"
                                           r"train_embedded_sae\.py"):
        load_coder("sae-l99", tiny_model)


@pytest.mark.parametrize("name", ["sae", "sae-l8", "sae-w2048"])
def test_every_embedded_sae_ships_and_reads_the_residual_it_names(name):
    """The three SAEs trained for the embedded Gemma 3 270M (width 640): layers.6, layers.8 (cross-layer overlap)
    and a narrower one at layers.6 (width ablation), each a sparsify folder with unit decoder rows."""
    from lantern.coders.loading import EMBEDDED_SAES, embedded_sae_dir

    coder = SparsifyCoder(embedded_sae_dir(name), name=name)
    assert coder.hookpoint == EMBEDDED_SAES[name] and coder.d_in == 640
    assert coder.num_latents == (2048 if name == "sae-w2048" else 4096) and coder.k == 32
    norms = coder.decoder_directions().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
