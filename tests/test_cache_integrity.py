"""The cache's storage format and its defences: gap encoding, bfloat16, shard planning, checksums that catch
truncated or flipped files, refusal of a cache made with another model or tokenizer, resume mid-merge."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_MLP, opts
from lantern.cache import layout, window_index
from lantern.cache import build as build_module
from lantern.cache.build import build_cache
from lantern.cache.reader import LatentCache
from lantern.cache.shards import CorruptCacheError, decode_tokens, encode_tokens, from_stored, plan_shards, to_stored
from lantern.coders.neurons import NeuronCoder
from lantern.errors import LanternError


def test_gap_encoding_round_trips_huge_gaps():
    rng = np.random.default_rng(0)
    counts = np.array([5, 0, 300, 1, 0, 40])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    tokens = np.concatenate([np.sort(rng.choice(4_000_000_000, size=c, replace=False)) for c in counts]).astype(np.uint32)
    first, delta, esc_pos, esc_delta = encode_tokens(indptr, tokens)
    assert delta.dtype == np.uint16 and len(esc_pos) > 0  # gaps of millions do not fit 16 bits
    np.testing.assert_array_equal(decode_tokens(first, indptr, delta, esc_pos, esc_delta), tokens)
    lo, hi = indptr[2], indptr[4]  # a slice of latents 2..3, decoded on its own
    np.testing.assert_array_equal(decode_tokens(first[2:4], indptr[2:5] - lo, delta[lo:hi], esc_pos, esc_delta, lo),
                                  tokens[lo:hi])


def test_bfloat16_rounds_to_nearest_and_keeps_range():
    values = np.array([0.0, 1.0, 3.14159, 1e-30, 1e30, 70000.0], np.float32)
    back = from_stored(to_stored(values, "bfloat16"), "bfloat16")
    np.testing.assert_allclose(back, values, rtol=2 ** -8)
    assert np.isfinite(back).all()
    assert np.isinf(from_stored(to_stored(values, "float16"), "float16")[-1])


def test_shard_plan_bounds_nnz_and_isolates_a_dense_latent():
    counts = np.array([10, 10, 500, 10, 10, 10])
    assert plan_shards(counts, max_nnz=30, max_latents=100) == [(0, 2), (2, 3), (3, 6)]
    assert plan_shards(counts, max_nnz=10_000, max_latents=4) == [(0, 4), (4, 6)]


@pytest.fixture
def small_cache(tmp_path, tiny_model, corpus_tokens):
    tokens, doc_ids = corpus_tokens
    coder = NeuronCoder(1, TINY_MLP, k=8)
    build_cache(tmp_path, tiny_model, "tiny", [coder], tokens[:6], doc_ids[:6], "x", tokenizer_id="tok-a",
                options=opts(3, shard_latents=40))
    return tmp_path, coder


def test_flipped_byte_is_caught_and_named(small_cache):
    cache_dir, coder = small_cache
    cache = LatentCache(cache_dir, coder.name)
    meta = cache.shard_meta[1]
    target = cache_dir / coder.name / meta["dir"] / "values.npy"
    raw = bytearray(target.read_bytes())
    raw[-3] ^= 0xFF
    target.write_bytes(bytes(raw))
    cache = LatentCache(cache_dir, coder.name)  # sizes still match: opening works
    cache.activations(0)  # shard 0 is intact
    with pytest.raises(CorruptCacheError, match=r"shard-00001/values.npy does not match its sha256"):
        cache.activations(meta["latents"][0])


def test_truncated_shard_fails_on_open(small_cache):
    cache_dir, coder = small_cache
    target = cache_dir / coder.name / "shard-00002" / "token_delta.npy"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(CorruptCacheError, match=r"shard-00002/token_delta.npy is \d+ bytes, the manifest says"):
        LatentCache(cache_dir, coder.name)


def test_cache_of_another_model_or_tokenizer_is_refused(small_cache, tiny_model, corpus_tokens):
    cache_dir, coder = small_cache
    tokens, doc_ids = corpus_tokens
    with pytest.raises(LanternError, match="made with model 'tiny', not 'other-model'"):
        build_cache(cache_dir, tiny_model, "other-model", [coder], tokens[:6], doc_ids[:6], "x", tokenizer_id="tok-a",
                    options=opts(3, shard_latents=40))
    with pytest.raises(LanternError, match="made with tokenizer 'tok-a', not 'tok-b'"):
        build_cache(cache_dir, tiny_model, "tiny", [coder], tokens[:6], doc_ids[:6], "x", tokenizer_id="tok-b",
                    options=opts(3, shard_latents=40))
    with pytest.raises(LanternError, match="built with model 'tiny', not 'other-model'"):
        LatentCache(cache_dir, coder.name, expect_model="other-model")


def test_bfloat16_cache_matches_float16_within_precision(small_cache, tiny_model, corpus_tokens, tmp_path_factory):
    cache_dir, coder = small_cache
    tokens, doc_ids = corpus_tokens
    other = tmp_path_factory.mktemp("bf16")
    build_cache(other, tiny_model, "tiny", [coder], tokens[:6], doc_ids[:6], "x", options=opts(3, value_dtype="bfloat16"))
    a, b = LatentCache(cache_dir, coder.name), LatentCache(other, coder.name)
    assert b.manifest["dtypes"]["values"] == "bfloat16"
    for latent in range(coder.num_latents):
        (ta, va), (tb, vb) = a.activations(latent), b.activations(latent)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_allclose(vb, va, rtol=2 ** -7)


def test_killed_during_merge_resumes_and_keeps_finished_shards(tmp_path, tiny_model, corpus_tokens, small_cache,
                                                               monkeypatch):
    reference_dir, coder = small_cache
    tokens, doc_ids = corpus_tokens
    real_merge = build_module.merge_shard
    calls = []

    def dying_merge(folder, runs, lo, hi, value_dtype):
        calls.append(lo)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-merge")
        return real_merge(folder, runs, lo, hi, value_dtype)

    monkeypatch.setattr(build_module, "merge_shard", dying_merge)
    target = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_cache(target, tiny_model, "tiny", [coder], tokens[:6], doc_ids[:6], "x", tokenizer_id="tok-a",
                    options=opts(3, shard_latents=40))
    assert not (target / coder.name / layout.MANIFEST).exists()
    calls.clear()
    build_cache(target, tiny_model, "tiny", [coder], tokens[:6], doc_ids[:6], "x", tokenizer_id="tok-a",
                options=opts(3, shard_latents=40))
    assert calls == [80, 120]  # shards 0 and 1 were kept, 2.. merged now
    a, b = LatentCache(reference_dir, coder.name), LatentCache(target, coder.name)
    for latent in range(coder.num_latents):
        for x, y in zip(a.activations(latent), b.activations(latent)):
            np.testing.assert_array_equal(x, y)


def test_window_index_embeds_every_block(small_cache, corpus_tokens):
    cache_dir, _ = small_cache
    index = window_index.WindowIndex(cache_dir)
    n_seq, seq_len = 6, corpus_tokens[0].shape[1]
    assert index.blocks.shape == (n_seq, window_index.n_blocks(seq_len), window_index.DIM)
    emb = index.embed(np.array([1, seq_len + 5, 3 * seq_len + 20]), seq_len, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert index.meta["hookpoint"] == "layers.1"
