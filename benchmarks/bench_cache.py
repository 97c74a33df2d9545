"""Cache cost against bare forward passes measured in the same process (this machine's speed drifts).

Prints: bare forward to layer 6 (no coder, no writes), lantern's cache of the given coders (forward +
encode + part files + CSR merge), the full 18-layer trunk (what delphi runs), each bracketed A/B.

    python benchmarks/bench_cache.py --tokens 16384 --coders sae,neurons-topk,neurons
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lantern.cache.build import CacheOptions, build_cache
from lantern.coders.loading import load_coder
from lantern.data.corpus import tokenize_corpus
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint, trunk
from lantern.models.loading import load_subject_model


def bare_forward(model, tokens: np.ndarray, batch: int, hookpoint) -> float:
    start = time.perf_counter()
    for lo in range(0, len(tokens), batch):
        capture_activations(model, torch.from_numpy(tokens[lo:lo + batch].astype(np.int64)), [hookpoint])
    return time.perf_counter() - start


@torch.inference_mode()
def full_trunk(model, tokens: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for lo in range(0, len(tokens), batch):
        trunk(model)(input_ids=torch.from_numpy(tokens[lo:lo + batch].astype(np.int64)), use_cache=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--coders", default="sae,neurons-topk,neurons")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subject = load_subject_model()
    model = subject.model
    corpus = tokenize_corpus("embedded", subject.tokenizer, 256, args.tokens, subject.bos_id)
    tokens = corpus.tokens
    hookpoint = resolve_hookpoint(model, "layers.6")
    bare_forward(model, tokens[: args.batch], args.batch, hookpoint)  # warm-up
    bare_a = bare_forward(model, tokens, args.batch, hookpoint)
    results = {}
    for spec in args.coders.split(","):
        coder = load_coder(spec, model)
        workdir = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        with torch.inference_mode():
            manifest = build_cache(workdir, model, "embedded", [coder], tokens, corpus.doc_ids, "embedded",
                                   options=CacheOptions(batch_size=args.batch))
        seconds = time.perf_counter() - start
        m = manifest[coder.name]
        disk = sum(f.stat().st_size for f in (workdir / coder.name).rglob("*.npy"))  # every shard's arrays
        results[spec] = (seconds, m["nnz"], disk)
        shutil.rmtree(workdir)
    bare_b = bare_forward(model, tokens, args.batch, hookpoint)
    trunk_s = full_trunk(model, tokens, args.batch)
    bare = (bare_a + bare_b) / 2
    n = tokens.size
    print(f"tokens {n}, batch {args.batch}x256, threads {args.threads}")
    print(f"bare forward to layers.6: A {bare_a:.1f}s, B {bare_b:.1f}s ({n / bare:.0f} tok/s)")
    print(f"full 18-layer trunk (delphi's forward): {trunk_s:.1f}s = {trunk_s / bare:.2f}x bare-to-layer-6")
    for spec, (seconds, nnz, disk) in results.items():
        print(f"cache {spec}: {seconds:.1f}s = {seconds / bare:.2f}x bare (range {seconds / max(bare_a, bare_b):.2f}-"
              f"{seconds / min(bare_a, bare_b):.2f}), {seconds / trunk_s:.2f}x full trunk; nnz {nnz}, "
              f"{disk / max(nnz, 1):.2f} bytes/nnz on disk")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
