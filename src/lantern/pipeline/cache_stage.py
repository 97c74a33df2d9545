"""Stage 1: tokenize the corpus and cache every coder's sparse activations.

With an executor other than local, the corpus is cut into shards of consecutive batches, one task each: a
task loads the subject model and coders in its worker, writes the sorted runs of its batches (each run renamed
into place when complete), and the merge here combines every run into the same latent-range shards as a local
run writes."""
from __future__ import annotations

import time

import numpy as np
import torch

from lantern.cache import layout
from lantern.cache.build import CacheOptions, build_cache, cache_batches, tokenizer_fingerprint
from lantern.coders.loading import load_coders
from lantern.config import RunConfig
from lantern.data.corpus import tokenize_corpus
from lantern.executors import partitions, resources
from lantern.executors.base import Executor, split_ranges
from lantern.io import read_json
from lantern.models.loading import SubjectModel, load_subject_model
from lantern.pipeline.files import CACHE


def cache_options(cfg: RunConfig) -> CacheOptions:
    return CacheOptions(batch_size=cfg.batch_size, value_dtype=cfg.value_dtype, run_bytes=int(cfg.run_mb * 2**20))


def cache_partition(cfg: RunConfig, index: int, coder_names: list[str], batches: list[int],
                    window_hp: str | None) -> dict:
    """One corpus shard (a Ray task): the runs of `batches` for the named coders, each renamed into place when
    complete; the partition's record (who computed it, forward seconds) is renamed into place last."""
    def write(folder):
        subject = resources.subject_model(cfg)
        coders = [c for spec in cfg.coders for c in load_coders(spec, subject.model, cfg.layer)
                  if c.name in coder_names]
        tokens = np.load(cfg.path / CACHE / layout.TOKENS, mmap_mode="r")
        with torch.inference_mode():
            seconds = cache_batches(cfg.path / CACHE, subject.model, cfg.model, coders, tokens, batches,
                                    cache_options(cfg), window_hp)
        return {"batches": [batches[0], batches[-1] + 1], "forward_seconds": seconds}

    return partitions.write_partition(cfg.path, "cache", index, write)


def run_cache(cfg: RunConfig, subject: SubjectModel | None = None, executor: Executor | None = None) -> dict:
    started = time.perf_counter()
    subject = subject or load_subject_model(cfg.model)
    coders = [coder for spec in cfg.coders for coder in load_coders(spec, subject.model, cfg.layer)]
    names = [c.name for c in coders]
    if len(set(names)) != len(names):
        raise ValueError(f"two coders share a name: {names}")
    corpus = tokenize_corpus(cfg.corpus, subject.tokenizer, seq_len=cfg.seq_len, max_tokens=cfg.tokens,
                             bos_id=subject.bos_id, seed=cfg.seed)
    run_batches, done = None, []
    if executor is not None and executor.name != "local":
        def run_batches(batches: list[int], coder_names: list[str], window_hp: str | None) -> float:
            shards = [batches[a:b] for a, b in split_ranges(len(batches), executor.partitions(len(batches)))]
            calls = [(cfg, i, coder_names, shard, window_hp) for i, shard in enumerate(s for s in shards if s)]
            partitions.begin(cfg.path, "cache")
            executor.map(cache_partition, calls, "cache")
            done.extend(read_json(f / partitions.DONE) for f in partitions.finished(cfg.path, "cache", len(calls)))
            partitions.end(cfg.path, "cache")
            return float(sum(d["forward_seconds"] for d in done))
    with torch.inference_mode():
        manifests = build_cache(cfg.path / CACHE, subject.model, cfg.model, coders, corpus.tokens, corpus.doc_ids,
                                corpus_spec=cfg.corpus, tokenizer_id=tokenizer_fingerprint(subject.tokenizer),
                                options=cache_options(cfg), run_batches=run_batches)
    return {"seconds": time.perf_counter() - started, "n_tokens": int(corpus.tokens.size), "manifests": manifests,
            "partitions": done}
