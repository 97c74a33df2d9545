"""What `lantern cache --repair` costs against rebuilding a coder's cache, on the embedded Gemma 3 270M and SAE.

Builds the SAE's cache over the embedded corpus (shards of `--shard-latents` latents, so the cache has several),
then, for 1 damaged shard and for every shard damaged, times the repair (checksums of every shard, forward pass
to layer 6 over all tokens, encode, keep only the damaged range, merge) and checks it byte for byte. A full
rebuild of the coder is the first build (tokens already tokenised, window index off in both, so only the
coder's own work is compared).

    python benchmarks/bench_repair.py --tokens 16384 --shard-latents 512
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lantern.cache import layout
from lantern.cache.build import CacheOptions, build_cache
from lantern.cache.repair import repair_cache
from lantern.coders.loading import load_coders
from lantern.data.corpus import tokenize_corpus
from lantern.models.loading import load_subject_model


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--shard-latents", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    subject = load_subject_model("embedded")
    coders = load_coders("sae", subject.model, 6)
    corpus = tokenize_corpus("embedded", subject.tokenizer, seq_len=256, max_tokens=args.tokens, bos_id=subject.bos_id)
    options = CacheOptions(batch_size=args.batch_size, shard_latents=args.shard_latents, window_index=False)
    out = {"tokens": int(corpus.tokens.size), "shard_latents": args.shard_latents}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        build_cache(cache, subject.model, "embedded", coders, corpus.tokens, corpus.doc_ids, "embedded",
                    options=options)
        out["full_build_seconds"] = round(time.perf_counter() - t0, 2)
        cdir = layout.coder_dir(cache, coders[0].name)
        shards = sorted(cdir.glob("shard-*"))
        out["shards"] = len(shards)
        pristine = Path(tmp) / "pristine"
        shutil.copytree(cdir, pristine)
        for label, damaged in (("one_shard", shards[:1]), ("every_shard", shards)):
            for shard in damaged:
                _flip(shard / "values.npy")
            report = repair_cache(cache, subject.model, coders)
            same = all((pristine / p.relative_to(cdir)).read_bytes() == p.read_bytes()
                       for p in cdir.rglob("*") if p.is_file())
            out[label] = {"damaged": len(report.damaged), "byte_identical": same and len(report.exact) == len(damaged),
                          "seconds": round(report.seconds, 2), "forward_seconds": round(report.forward_seconds, 2),
                          "vs_full_build": round(report.seconds / out["full_build_seconds"], 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
