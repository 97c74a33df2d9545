"""Coders read from real sparsify-format folders (cfg.json + sae.safetensors) and MLP neurons."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_HIDDEN, TINY_MLP
from lantern.coders import load_coder
from lantern.coders.neurons import NeuronCoder
from lantern.coders.sparsify import SparsifyCoder
from lantern.errors import LanternError

D, M, K = 16, 48, 5


def dense(indices: torch.Tensor, values: torch.Tensor, width: int) -> torch.Tensor:
    out = torch.zeros(indices.shape[0], width)
    out.scatter_(1, indices.long(), values.float())
    return out


def reference_topk(x, W, b, b_dec, k, subtract_b_dec=True):
    pre = torch.relu((x - b_dec if subtract_b_dec else x) @ W.T + b)
    values, indices = pre.topk(k, dim=-1)
    return dense(indices, values, W.shape[0])


@pytest.mark.parametrize("transcode", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparsify_encode_is_topk_relu(tmp_path, make_sparsify, transcode, dtype):
    # sparsify names a transcoder after the module it replaces and trains it on that module's input.
    folder = tmp_path / ("layers.3.mlp" if transcode else "layers.3")
    hookpoint = "layers.3.mlp:input" if transcode else "layers.3"
    w = make_sparsify(folder, D, M, K, seed=1, transcode=transcode, dtype=dtype)
    coder = SparsifyCoder(folder)
    assert (coder.d_in, coder.num_latents, coder.k) == (D, M, K)
    assert coder.hookpoint == hookpoint and coder.name == "sae"
    assert coder.kind == ("transcoder" if transcode else "sae")

    x = torch.randn(200, D, generator=torch.Generator().manual_seed(2))
    acts = coder.encode(x)
    assert acts.indices.shape == acts.values.shape == (200, K)
    expected = reference_topk(x, w["encoder.weight"], w["encoder.bias"], w["b_dec"], K, not transcode)
    torch.testing.assert_close(dense(acts.indices, acts.values, M), expected)
    # The reference really depends on b_dec (so the transcode switch is tested, not vacuous).
    other = reference_topk(x, w["encoder.weight"], w["encoder.bias"], w["b_dec"], K, transcode)
    assert not torch.allclose(other, expected)
    assert (acts.values >= 0).all()

    recon = coder.decode(acts)
    torch.testing.assert_close(recon, expected @ w["W_dec"] + w["b_dec"])

    info = coder.describe()
    assert info["format"] == "sparsify" and info["k"] == K and info["d_in"] == D and info["num_latents"] == M
    assert info["transcode"] == transcode and info["hookpoint"] == hookpoint and "skip" not in info
    torch.testing.assert_close(coder.decoder_directions(), w["W_dec"])


def test_folder_without_weights_names_the_missing_file(tmp_path, make_sparsify):
    folder = tmp_path / "layers.1"
    make_sparsify(folder, D, M, K)
    (folder / "sae.safetensors").unlink()
    with pytest.raises(LanternError, match=r"lacks sae\.safetensors") as info:
        SparsifyCoder(folder)
    assert str(folder) in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LanternError, match=r"lacks cfg\.json"):
        SparsifyCoder(empty)


def test_missing_tensor_wrong_width_and_activation_are_clear_errors(tmp_path, make_sparsify):
    make_sparsify(tmp_path / "a", D, M, K, drop=("b_dec",))
    with pytest.raises(LanternError, match=r"lacks tensor 'b_dec'"):
        SparsifyCoder(tmp_path / "a")
    make_sparsify(tmp_path / "b", D, M, K, cfg_extra={"d_in": D + 1})
    with pytest.raises(LanternError, match=rf"cfg d_in {D + 1} != encoder width {D}"):
        SparsifyCoder(tmp_path / "b")
    make_sparsify(tmp_path / "c", D, M, K, cfg_extra={"activation": "groupmax"})
    with pytest.raises(LanternError, match=r"activation 'groupmax' is not supported \(supported: topk\)"):
        SparsifyCoder(tmp_path / "c")
    make_sparsify(tmp_path / "d", D, M, K, cfg_extra={"skip_connection": True, "transcode": True})
    with pytest.raises(LanternError, match=r"lacks tensor 'W_skip'"):
        SparsifyCoder(tmp_path / "d")


def test_neuron_coder_raw_keeps_every_positive_neuron():
    x = torch.randn(30, TINY_MLP, generator=torch.Generator().manual_seed(3))
    coder = NeuronCoder(layer=2, width=TINY_MLP)
    assert coder.hookpoint == "layers.2.mlp.down_proj:input" and coder.name == "neurons" and coder.kind == "neurons"
    acts = coder.encode(x)
    assert acts.indices.shape == (30, TINY_MLP)
    assert (acts.indices == torch.arange(TINY_MLP)).all()
    torch.testing.assert_close(dense(acts.indices, acts.values, TINY_MLP), torch.relu(x))
    assert coder.describe()["k"] is None


def test_neuron_coder_topk_keeps_the_k_largest():
    x = torch.randn(30, TINY_MLP, generator=torch.Generator().manual_seed(4))
    x[0] = -1.0  # no positive neuron at all: every kept value is padding (0), never a negative activation
    coder = NeuronCoder(layer=1, width=TINY_MLP, k=7)
    assert coder.name == "neurons-topk7" and coder.kind == "neurons-topk"
    acts = coder.encode(x)
    assert acts.values.shape == (30, 7)
    got = dense(acts.indices, acts.values, TINY_MLP)
    relu = torch.relu(x)
    kth = relu.topk(7, dim=-1).values[:, -1:]
    expected = torch.where(relu >= kth, relu, torch.zeros_like(relu))
    torch.testing.assert_close(got, expected)
    assert (got > 0).sum(dim=1).max() == 7 and (got[0] == 0).all()


def test_load_coder_specs(tmp_path, make_sparsify, tiny_model):
    neurons = load_coder("neurons", tiny_model, layer=2)
    assert isinstance(neurons, NeuronCoder) and neurons.d_in == TINY_MLP and neurons.k is None
    topk = load_coder(" neurons-topk:9 ", tiny_model, layer=1)
    assert topk.k == 9 and topk.layer == 1 and topk.d_in == TINY_MLP
    assert load_coder("neurons-topk", tiny_model, layer=1).k == 32
    assert load_coder("neurons-topk16", tiny_model, layer=1).k == 16  # the coder's own name works as a spec
    with pytest.raises(LanternError, match=r"neurons-topk\[:K\]"):
        load_coder("neurons-topk:many", tiny_model)
    # Neuron i writes column i of the down projection.
    down = tiny_model.model.layers[2].mlp.down_proj.weight
    assert neurons.decoder_directions().shape == (TINY_MLP, TINY_HIDDEN)
    torch.testing.assert_close(neurons.decoder_directions(), down.T.float())
    assert NeuronCoder(2, TINY_MLP).decoder_directions() is None

    folder = tmp_path / "layers.2"
    make_sparsify(folder, TINY_HIDDEN, M, K)
    sae = load_coder(str(folder), tiny_model)
    assert isinstance(sae, SparsifyCoder) and sae.hookpoint == "layers.2" and sae.name == "layers_2"

    with pytest.raises(LanternError, match="unknown coder 'transcoders'"):
        load_coder("transcoders", tiny_model)
    with pytest.raises(LanternError, match=r"--layer 4 does not exist: the model has layers 0\.\.3"):
        load_coder("neurons-topk", tiny_model, layer=4)
