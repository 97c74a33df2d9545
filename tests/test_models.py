"""Hookpoint names and truncated forward passes, on a real (tiny, random) Gemma 3."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_HIDDEN, TINY_LAYERS, TINY_MLP
from lantern.errors import LanternError
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import module_of, resolve_hookpoint


@pytest.fixture(scope="module")
def ids(corpus_tokens):
    tokens, _ = corpus_tokens
    return torch.from_numpy(tokens[:3, :40].astype("int64"))  # 40 > the sliding window of 16


@pytest.fixture(scope="module")
def hidden_states(tiny_model, ids):
    with torch.inference_mode():
        out = tiny_model(input_ids=ids, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    assert len(out.hidden_states) == TINY_LAYERS + 1
    return out.hidden_states


@pytest.mark.parametrize("name, module_path, read, layer", [
    ("layers.1", "layers.1", "output", 1),
    ("layers.2.mlp", "layers.2.mlp", "output", 2),
    ("blocks.1.hook_resid_post", "layers.1", "output", 1),
    ("blocks.2.hook_mlp_out", "layers.2.mlp", "output", 2),
    ("blocks.0.hook_attn_out", "layers.0.self_attn", "output", 0),
    ("blocks.2.mlp.hook_post", "layers.2.mlp.down_proj", "input", 2),
    ("model.layers.1", "layers.1", "output", 1),
    ("model.layers.2.mlp.down_proj:input", "layers.2.mlp.down_proj", "input", 2),
    ("layers.2.mlp.down_proj:input", "layers.2.mlp.down_proj", "input", 2),
    ("layers.2.mlp:input", "layers.2.mlp", "input", 2),
    ("blocks.2.ln2.hook_normalized", "layers.2.mlp", "input", 2),
    ("blocks.3.hook_mlp_in", "layers.3.mlp", "input", 3),
    ("  layers.3  ", "layers.3", "output", 3),
    ("embed_tokens", "embed_tokens", "output", None),
    ("hook_embed", "embed_tokens", "output", None),
])
def test_every_spelling_resolves(tiny_model, name, module_path, read, layer):
    hp = resolve_hookpoint(tiny_model, name)
    assert (hp.module_path, hp.read, hp.layer) == (module_path, read, layer)
    assert module_of(tiny_model, hp) is tiny_model.model.get_submodule(module_path)


@pytest.mark.parametrize("name", ["layers.4", "layers.1.mlpp", "blocks.1.hook_resid_pre", "resid_post", "",
                                  "lm_head.weight", "model.layers.9.mlp"])
def test_unknown_hookpoint_lists_valid_ones(tiny_model, name):
    with pytest.raises(LanternError) as info:
        resolve_hookpoint(tiny_model, name)
    message = str(info.value)
    assert repr(name) in message
    for valid in ("embed_tokens", "layers.N", "layers.N.mlp", "layers.N.mlp.down_proj:input",
                  f"0..{TINY_LAYERS - 1}"):
        assert valid in message


@pytest.mark.parametrize("name, suggested", [
    ("layers.66", "layers.3"),  # the tiny model has layers 0..3
    ("layer.2", "layers.2"),
    ("blocks.2.hook_resid_pots", "blocks.2.hook_resid_post"),
    ("layers.1.mlpp", "layers.1.mlp"),
    ("layers.1.mlp:inptu", "layers.1.mlp:input"),
    ("blocks.1.ln2.hook_normalised", "blocks.1.ln2.hook_normalized"),
])
def test_typo_suggests_the_closest_names(tiny_model, name, suggested):
    with pytest.raises(LanternError, match="Did you mean") as info:
        resolve_hookpoint(tiny_model, name)
    hint = str(info.value).split("Did you mean", 1)[1].split("?", 1)[0]
    assert repr(suggested) in hint
    resolve_hookpoint(tiny_model, suggested)  # every suggestion is itself valid


def test_mlp_input_is_the_normed_residual(tiny_model, ids, hidden_states):
    """`layers.N.mlp:input` (where transcoders read) is the pre-MLP norm's output, not the raw residual."""
    names = ["layers.1.mlp:input", "blocks.1.hook_mlp_in", "layers.1.pre_feedforward_layernorm"]
    acts = capture_activations(tiny_model, ids, [resolve_hookpoint(tiny_model, n) for n in names])
    assert acts["layers.1.mlp:input"].shape == (*ids.shape, TINY_HIDDEN)
    torch.testing.assert_close(acts["layers.1.mlp:input"], acts["layers.1.pre_feedforward_layernorm"])
    torch.testing.assert_close(acts["blocks.1.hook_mlp_in"], acts["layers.1.mlp:input"])
    assert not torch.allclose(acts["layers.1.mlp:input"], hidden_states[1])


@pytest.mark.parametrize("layer", range(TINY_LAYERS - 1))
def test_residual_capture_equals_hidden_states(tiny_model, ids, hidden_states, layer):
    names = [f"layers.{layer}", f"blocks.{layer}.hook_resid_post", f"model.layers.{layer}"]
    acts = capture_activations(tiny_model, ids, [resolve_hookpoint(tiny_model, n) for n in names])
    assert set(acts) == set(names)
    for name in names:
        assert acts[name].shape == (*ids.shape, TINY_HIDDEN)
        torch.testing.assert_close(acts[name], hidden_states[layer + 1])
    # Different layers really differ (a hook on the wrong block would not be caught otherwise).
    assert not torch.allclose(hidden_states[layer + 1], hidden_states[layer + 2])


def test_embedding_capture_equals_first_hidden_state(tiny_model, ids, hidden_states):
    acts = capture_activations(tiny_model, ids, [resolve_hookpoint(tiny_model, "hook_embed")])
    torch.testing.assert_close(acts["hook_embed"], hidden_states[0])


def test_neuron_input_and_mlp_output_agree(tiny_model, ids):
    """down_proj(neurons read at its input) is the MLP output read at `layers.N.mlp`."""
    names = ["layers.1.mlp.down_proj:input", "blocks.1.mlp.hook_post", "layers.1.mlp", "layers.1"]
    acts = capture_activations(tiny_model, ids, [resolve_hookpoint(tiny_model, n) for n in names])
    neurons = acts["layers.1.mlp.down_proj:input"]
    assert neurons.shape == (*ids.shape, TINY_MLP)
    torch.testing.assert_close(acts["blocks.1.mlp.hook_post"], neurons)
    down = tiny_model.model.layers[1].mlp.down_proj
    torch.testing.assert_close(down(neurons), acts["layers.1.mlp"])
    assert acts["layers.1.mlp"].shape == (*ids.shape, TINY_HIDDEN)


def _count_calls(module: torch.nn.Module, calls: dict, key: str):
    def hook(*_):
        calls[key] = calls.get(key, 0) + 1
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("names, fired, never", [
    (["layers.1"], ["layers.1"], ["layers.2", "layers.3", "norm", "lm_head"]),
    # Stopping inside layer 2's MLP: neither that MLP nor its block finishes.
    (["layers.0.mlp", "blocks.2.mlp.hook_post"], ["layers.0", "layers.2.mlp.down_proj"],
     ["layers.2.mlp", "layers.2", "layers.3", "norm", "lm_head"]),
    (["layers.3"], ["layers.3"], ["norm", "lm_head"]),
])
def test_forward_stops_after_the_deepest_hookpoint(tiny_model, ids, names, fired, never):
    hooks_before = sum(len(m._forward_hooks) for m in tiny_model.modules())
    calls: dict[str, int] = {}
    modules = {"lm_head": tiny_model.lm_head, "norm": tiny_model.model.norm}
    handles = []
    for key in fired + never:
        module = modules.get(key) or tiny_model.model.get_submodule(key)
        handles.append(_count_calls(module, calls, key))
    try:
        acts = capture_activations(tiny_model, ids, [resolve_hookpoint(tiny_model, n) for n in names])
    finally:
        for handle in handles:
            handle.remove()
    assert set(acts) == set(names)
    assert all(calls.get(key) == 1 for key in fired), calls
    assert not any(calls.get(key) for key in never), calls
    # capture_activations removes its own hooks (transformers keeps some of its own): the model is left as it was.
    assert sum(len(m._forward_hooks) for m in tiny_model.modules()) == hooks_before
