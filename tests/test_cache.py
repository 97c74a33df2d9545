"""The CSR activation cache, built with a real tiny Gemma 3, a real sparsify folder and MLP neurons, checked
against a dense recomputation; resuming a killed run; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import BATCH, SEQ_LEN, TINY_MLP, make_coders, opts
from lantern.cache import layout
from lantern.cache.build import build_cache
from lantern.cache.reader import LatentCache
from lantern.coders.base import SparseActs, SparseCoder
from lantern.coders.neurons import NeuronCoder
from lantern.coders.sparsify import SparsifyCoder
from lantern.errors import LanternError
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint

MANIFEST_KEYS = {"lantern_version", "model", "tokenizer", "coder", "corpus", "n_sequences", "seq_len", "n_tokens",
                 "n_tokens_cached", "bos_positions_cached", "dtypes", "fingerprint", "seconds", "forward_seconds",
                 "nnz", "alive_latents", "shards", "bytes_on_disk", "bytes_per_nnz", "options"}


class Killed(Exception):
    """Stands in for a run killed half-way."""


class CountingCoder(SparseCoder):
    """A real coder that counts encode calls and can 'die' after a number of batches."""

    def __init__(self, inner: SparseCoder, fail_after: int | None = None):
        self.inner = inner
        self.name, self.hookpoint, self.kind = inner.name, inner.hookpoint, inner.kind
        self.d_in, self.num_latents = inner.d_in, inner.num_latents
        self.fail_after = fail_after
        self.calls = 0

    def encode(self, x: torch.Tensor) -> SparseActs:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Killed(f"killed at encode call {self.calls}")
        return self.inner.encode(x)

    def describe(self) -> dict:
        return self.inner.describe()


def dense_reference(model, coder: SparseCoder, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """[n_tokens, num_latents]: every position encoded directly (float16 as stored), BOS positions and
    non-positive values zeroed. Same batches as the cache, so the forward passes are bit-identical."""
    hp = resolve_hookpoint(model, coder.hookpoint)
    out = np.zeros((tokens.size, coder.num_latents), dtype=np.float32)
    for lo in range(0, len(tokens), batch_size):
        ids = torch.from_numpy(tokens[lo:lo + batch_size].astype(np.int64))
        x = capture_activations(model, ids, [hp])[hp.name]
        with torch.inference_mode():
            acts = coder.encode(x.reshape(-1, x.shape[-1]))
        rows = np.repeat(np.arange(ids.numel()), acts.indices.shape[1])
        dense = np.zeros((ids.numel(), coder.num_latents), dtype=np.float32)
        dense[rows, acts.indices.reshape(-1).numpy()] = acts.values.float().reshape(-1).numpy()
        out[lo * tokens.shape[1]:(lo * tokens.shape[1]) + ids.numel()] = dense
    out[::tokens.shape[1]] = 0.0  # BOS positions are not cached
    out[out <= 0] = 0.0
    return np.where(out > 0, out.astype(np.float16).astype(np.float32), 0.0)


def read_csr(cache_dir, name):
    cache = LatentCache(cache_dir, name)
    return cache, [cache.activations(latent) for latent in range(cache.num_latents)]


def assert_same_cache(dir_a, dir_b, name):
    a, b = LatentCache(dir_a, name), LatentCache(dir_b, name)
    for latent in range(a.num_latents):
        for x, y in zip(a.activations(latent), b.activations(latent)):
            np.testing.assert_array_equal(x, y)
    for key in a.stats:
        np.testing.assert_array_equal(a.stats[key], b.stats[key])
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert a.manifest["nnz"] == b.manifest["nnz"] > 0


@pytest.mark.parametrize("which", [0, 1, 2], ids=["sae", "neurons", "neurons-topk16"])
def test_csr_equals_dense_recomputation(built_cache, tiny_model, corpus_tokens, which):
    cache_dir, coders, _ = built_cache
    coder = coders[which]
    tokens, _ = corpus_tokens
    reference = dense_reference(tiny_model, coder, tokens, BATCH)
    cache, csr = read_csr(cache_dir, coder.name)
    assert cache.num_latents == coder.num_latents
    assert cache.manifest["dtypes"] == {"token_delta": "uint16", "values": "float16"}
    assert cache.n_shards == -(-coder.num_latents // 48)  # shard_latents=48 in the tests' options
    alive = 0
    for latent, (token_index, values) in enumerate(csr):
        expected_tokens = np.flatnonzero(reference[:, latent])
        np.testing.assert_array_equal(token_index, expected_tokens, err_msg=f"latent {latent}")
        np.testing.assert_array_equal(values, reference[expected_tokens, latent], err_msg=f"latent {latent}")
        assert (np.diff(token_index.astype(np.int64)) > 0).all()  # strictly ascending
        assert (values > 0).all() and np.isfinite(values).all()
        assert not (token_index % SEQ_LEN == 0).any()  # never a BOS position
        alive += len(token_index) > 0
    assert alive > coder.num_latents // 2  # the comparison is not vacuous
    assert cache.manifest["alive_latents"] == alive
    assert cache.manifest["nnz"] == int((reference > 0).sum())


def test_stats_and_manifest(built_cache, corpus_tokens):
    cache_dir, coders, manifests = built_cache
    tokens, doc_ids = corpus_tokens
    np.testing.assert_array_equal(np.load(cache_dir / layout.TOKENS), tokens)
    np.testing.assert_array_equal(np.load(cache_dir / layout.DOC_IDS), doc_ids)
    for coder in coders:
        cache, csr = read_csr(cache_dir, coder.name)
        np.testing.assert_array_equal(cache.counts, [len(t) for t, _ in csr])
        assert cache.stats["firing_rate"] == pytest.approx(cache.counts / (tokens.shape[0] * (SEQ_LEN - 1)))
        for latent, (_, values) in enumerate(csr):
            if len(values):
                assert cache.stats["mean"][latent] == pytest.approx(values.mean(), rel=1e-5)
                expected = [np.sort(values)[int(np.floor(q * (len(values) - 1)))] for q in np.linspace(0.1, 0.9, 9)]
                np.testing.assert_array_equal(cache.stats["quantiles"][latent], expected)
        np.testing.assert_array_equal(cache.maxima, [v.max() if len(v) else 0.0 for _, v in csr])
        manifest = json.loads((cache_dir / coder.name / layout.MANIFEST).read_text())
        assert manifest == manifests[coder.name]
        assert MANIFEST_KEYS <= set(manifest)
        assert manifest["coder"] == coder.describe()
        assert manifest["model"] == "tiny-gemma3" and manifest["corpus"] == "embedded"
        assert (manifest["n_sequences"], manifest["seq_len"]) == tokens.shape
        assert manifest["n_tokens"] == tokens.size and manifest["bos_positions_cached"] is False
        assert not (cache_dir / coder.name / layout.RUNS).exists()  # runs are deleted once merged
        assert manifest["bytes_per_nnz"] < 4.5  # 2-byte gaps + 2-byte values + per-latent offsets


def test_finished_cache_is_not_recomputed(built_cache, tiny_model, corpus_tokens):
    cache_dir, coders, manifests = built_cache
    tokens, doc_ids = corpus_tokens
    counting = [CountingCoder(c) for c in coders]
    again = build_cache(cache_dir, tiny_model, "tiny-gemma3", counting, tokens, doc_ids, "embedded", options=opts(BATCH))
    assert [c.calls for c in counting] == [0, 0, 0]
    assert again == manifests


def test_coder_width_mismatch_is_a_clear_error(tmp_path, make_sparsify, tiny_model, corpus_tokens):
    tokens, doc_ids = corpus_tokens
    make_sparsify(tmp_path / "layers.1", 32, 40, 4)  # the residual stream is 64 wide
    coder = SparsifyCoder(tmp_path / "layers.1", name="narrow")
    with pytest.raises(LanternError, match=r"'narrow' expects d_in=32 but hookpoint 'layers.1' of tiny-gemma3 "
                                           r"has width 64"):
        build_cache(tmp_path / "cache", tiny_model, "tiny-gemma3", [coder], tokens[:4], doc_ids[:4], "x", options=opts(2))
    assert not list((tmp_path / "cache").rglob(layout.MANIFEST))
    with pytest.raises(LanternError, match="no finished cache for coder 'narrow'"):
        LatentCache(tmp_path / "cache", "narrow")


def test_empty_tokens_and_unknown_hookpoint(tmp_path, tiny_model):
    with pytest.raises(LanternError, match="no tokens to cache"):
        build_cache(tmp_path / "c", tiny_model, "tiny", [NeuronCoder(1, TINY_MLP)], np.zeros((0, SEQ_LEN), np.int32),
                    np.zeros(0, np.int32), "x")

    coder = NeuronCoder(1, TINY_MLP)
    coder.hookpoint = "layers.7.mlp.down_proj:input"
    tokens = np.full((2, 8), 5, np.int32)
    tokens[:, 0] = 2
    with pytest.raises(LanternError, match="hookpoint 'layers.7.mlp.down_proj:input' does not exist"):
        build_cache(tmp_path / "c", tiny_model, "tiny", [coder], tokens, np.zeros(2, np.int32), "x")


def test_other_tokens_in_the_same_directory_are_refused(tmp_path, tiny_model, corpus_tokens):
    tokens, doc_ids = corpus_tokens
    coder = NeuronCoder(0, TINY_MLP, k=4)
    build_cache(tmp_path, tiny_model, "tiny", [coder], tokens[:2], doc_ids[:2], "x", options=opts(2))
    with pytest.raises(LanternError, match="different tokens"):
        build_cache(tmp_path, tiny_model, "tiny", [coder], tokens[2:4], doc_ids[2:4], "x", options=opts(2))


# --- resuming a killed run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(corpus_tokens):
    tokens, doc_ids = corpus_tokens
    return tokens[:10], doc_ids[:10]  # 10 sequences: 4 batches of 3 (the last one partial)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model, small):
    from conftest import write_sparsify_folder

    root = tmp_path_factory.mktemp("uninterrupted")
    coders = make_coders(root / "sae" / "layers.1", write_sparsify_folder)[:2]
    out = {}
    for batch_size in (3, 4):
        build_cache(root / f"cache-{batch_size}", tiny_model, "tiny", coders, *small, "x", options=opts(batch_size))
        out[batch_size] = root / f"cache-{batch_size}"
    return root / "sae" / "layers.1", out


def test_killed_run_resumes_at_the_first_missing_batch(tmp_path, tiny_model, small, uninterrupted):
    sae_folder, reference = uninterrupted
    sae, neurons = SparsifyCoder(sae_folder, name="sae"), NeuronCoder(2, TINY_MLP)
    dying = [CountingCoder(sae, fail_after=2), CountingCoder(neurons)]
    with pytest.raises(Killed):
        build_cache(tmp_path, tiny_model, "tiny", dying, *small, "x", options=opts(3))
    assert [c.calls for c in dying] == [3, 2]  # the SAE died in batch 2, before the neurons were encoded
    for name in ("sae", "neurons"):
        runs = sorted(p.name for p in (tmp_path / name / layout.RUNS).iterdir())
        assert runs == ["run-0000000-0000001", "run-0000001-0000002"]
        assert not (tmp_path / name / layout.MANIFEST).exists()
        with pytest.raises(LanternError, match="no finished cache"):
            LatentCache(tmp_path, name)

    resumed = [CountingCoder(sae), CountingCoder(neurons)]
    build_cache(tmp_path, tiny_model, "tiny", resumed, *small, "x", options=opts(3))
    assert [c.calls for c in resumed] == [2, 2]  # only batches 2 and 3
    for name in ("sae", "neurons"):
        assert_same_cache(tmp_path, reference[3], name)


def test_resume_with_another_batch_size_does_not_mix_runs(tmp_path, tiny_model, small, uninterrupted):
    """Runs are numbered by batch: runs of a killed run with another batch size cover other rows."""
    sae_folder, reference = uninterrupted
    sae, neurons = SparsifyCoder(sae_folder, name="sae"), NeuronCoder(2, TINY_MLP)
    with pytest.raises(Killed):
        build_cache(tmp_path, tiny_model, "tiny", [CountingCoder(sae, fail_after=2), neurons], *small, "x", options=opts(3))
    build_cache(tmp_path, tiny_model, "tiny", [sae, neurons], *small, "x", options=opts(4))
    for name in ("sae", "neurons"):
        assert_same_cache(tmp_path, reference[4], name)


def test_a_changed_coder_never_leaves_the_old_cache_readable(tmp_path, make_sparsify, tiny_model, small):
    """Rebuilding a coder of the same name (other weights) that dies half-way must not leave the old,
    now stale, cache looking finished."""
    old = make_coders(tmp_path / "old" / "layers.1", make_sparsify, seed=0)[0]
    build_cache(tmp_path / "cache", tiny_model, "tiny", [old], *small, "x", options=opts(3))
    LatentCache(tmp_path / "cache", "sae")
    new = make_coders(tmp_path / "new" / "layers.1", make_sparsify, seed=1)[0]
    with pytest.raises(Killed):
        build_cache(tmp_path / "cache", tiny_model, "tiny", [CountingCoder(new, fail_after=1)], *small, "x", options=opts(3))
    with pytest.raises(LanternError, match="no finished cache"):
        LatentCache(tmp_path / "cache", "sae")
    counting = CountingCoder(new)
    build_cache(tmp_path / "cache", tiny_model, "tiny", [counting], *small, "x", options=opts(3))
    assert counting.calls == 3  # batch 0 was kept from the killed run
    assert LatentCache(tmp_path / "cache", "sae").manifest["coder"]["path"] == str(tmp_path / "new" / "layers.1")
