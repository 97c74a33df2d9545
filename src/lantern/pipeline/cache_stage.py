"""Stage 1: tokenize the corpus and cache every coder's sparse activations."""
from __future__ import annotations

import time

import torch

from lantern.cache.build import CacheOptions, build_cache, tokenizer_fingerprint
from lantern.coders.loading import load_coders
from lantern.config import RunConfig
from lantern.data.corpus import tokenize_corpus
from lantern.models.loading import SubjectModel, load_subject_model
from lantern.pipeline.files import CACHE


def run_cache(cfg: RunConfig, subject: SubjectModel | None = None) -> dict:
    started = time.perf_counter()
    subject = subject or load_subject_model(cfg.model)
    coders = [coder for spec in cfg.coders for coder in load_coders(spec, subject.model, cfg.layer)]
    names = [c.name for c in coders]
    if len(set(names)) != len(names):
        raise ValueError(f"two coders share a name: {names}")
    corpus = tokenize_corpus(cfg.corpus, subject.tokenizer, seq_len=cfg.seq_len, max_tokens=cfg.tokens,
                             bos_id=subject.bos_id, seed=cfg.seed)
    with torch.inference_mode():
        manifests = build_cache(cfg.path / CACHE, subject.model, cfg.model, coders, corpus.tokens, corpus.doc_ids,
                                corpus_spec=cfg.corpus, tokenizer_id=tokenizer_fingerprint(subject.tokenizer),
                                options=CacheOptions(batch_size=cfg.batch_size, value_dtype=cfg.value_dtype,
                                                     run_bytes=int(cfg.run_mb * 2**20)))
    return {"seconds": time.perf_counter() - started, "n_tokens": int(corpus.tokens.size), "manifests": manifests}
