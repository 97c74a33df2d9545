"""`lantern cache --repair`: find the shards whose files no longer match the manifest's sizes and sha256 sums
(truncated, bit-flipped, missing) and recompute only those.

A shard holds one latent range, but its entries come from every token of the corpus, and the sorted runs they
were merged from are deleted once the cache is finished. So the repair runs the forward pass again over the
stored tokens (`cache/tokens.npy`, not the corpus: no re-tokenising), for the damaged coders only, stops at
their deepest layer, encodes, and keeps only the triplets of the damaged latent ranges, spilled as sorted runs
and merged into the damaged shards with the same code that built them. Undamaged shards, other coders, the
window index and the statistics are not touched. The forward pass uses the cache's own batch size, so on the
same hardware and software the recomputed shard is byte-identical to the original, which its sha256 in the
manifest proves; where it is not (another device or library version), the shard, its manifest entry and its
statistics are replaced by the recomputed ones and the report says so.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lantern.cache import layout
from lantern.cache.build import CacheOptions, _fingerprint
from lantern.cache.runs import RunWriter, finished_runs
from lantern.cache.shards import CorruptCacheError, ShardView, check_files, from_stored, merge_shard
from lantern.cache.stats import segment_stats
from lantern.cache.writer import cacheable_positions, encode_triplets
from lantern.coders.base import SparseCoder
from lantern.errors import LanternError
from lantern.io import atomic_path, read_json, write_json
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint
from lantern.progress import progress_bar

REPAIR_RUNS = "repair-runs"


@dataclass
class Damage:
    """One shard whose files do not match the manifest."""

    coder: str
    shard: int
    latents: tuple[int, int]
    reason: str


@dataclass
class RepairReport:
    damaged: list[Damage] = field(default_factory=list)
    exact: list[Damage] = field(default_factory=list)
    """Recomputed shards whose every file matches the original checksum."""
    replaced: list[Damage] = field(default_factory=list)
    """Recomputed shards that differ from the original (new checksums and statistics written)."""
    seconds: float = 0.0
    forward_seconds: float = 0.0
    shards_total: int = 0


def find_damage(cache_dir: Path, coder_names: list[str]) -> tuple[list[Damage], int]:
    """Every shard of these coders checked against the manifest (size and sha256 of each file)."""
    damaged, total = [], 0
    for name in coder_names:
        manifest_path = layout.coder_dir(cache_dir, name) / layout.MANIFEST
        if not manifest_path.exists():
            raise LanternError(f"coder {name!r} has no finished cache in {cache_dir} (no manifest), so there is "
                               f"nothing to check it against: run `lantern cache` to build or resume it")
        for number, meta in enumerate(read_json(manifest_path)["shards"]):
            total += 1
            try:
                check_files(layout.coder_dir(cache_dir, name) / meta["dir"], meta, verify=True)
            except CorruptCacheError as err:
                damaged.append(Damage(name, number, tuple(meta["latents"]), str(err)))
    return damaged, total


def repair_cache(cache_dir: str | Path, model: torch.nn.Module, coders: list[SparseCoder],
                 found: tuple[list[Damage], int] | None = None) -> RepairReport:
    """Check every shard of `coders`' caches (unless `found` = find_damage's answer is given) and recompute the
    damaged ones (see the module docstring)."""
    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    report = RepairReport()
    report.damaged, report.shards_total = found or find_damage(cache_dir, [c.name for c in coders])
    if not report.damaged:
        report.seconds = time.perf_counter() - started
        return report
    by_coder = {c.name: c for c in coders}
    lacking = sorted({d.coder for d in report.damaged} - set(by_coder))
    if lacking:
        raise LanternError(f"damaged shards of coder(s) {lacking}, which the run's coder specs do not load "
                           f"(they give {sorted(by_coder)}): recomputing them needs the coder")
    tokens = np.load(cache_dir / layout.TOKENS)
    corpus = read_json(cache_dir / layout.CORPUS)
    todo = {}
    for name in dict.fromkeys(d.coder for d in report.damaged):
        manifest = read_json(layout.coder_dir(cache_dir, name) / layout.MANIFEST)
        options = CacheOptions(**manifest["options"])
        if manifest["fingerprint"] != _fingerprint(corpus, by_coder[name], options, tokens):
            raise LanternError(f"coder {name!r} is not the coder its cache was built with (its weights, settings "
                               f"or the tokens changed), so its damaged shards cannot be recomputed to match: "
                               f"rebuild that coder's cache (delete {layout.coder_dir(cache_dir, name)} and run "
                               f"`lantern cache`)")
        todo[name] = (manifest, options)
    batch_sizes = {options.batch_size for _, options in todo.values()}
    if len(batch_sizes) != 1:
        raise LanternError(f"the damaged coders were cached with different batch sizes {sorted(batch_sizes)}; "
                           f"repair them one at a time")
    batch_size = batch_sizes.pop()
    report.forward_seconds = _recompute_runs(cache_dir, model, [by_coder[n] for n in todo], tokens, batch_size,
                                             {n: [d.latents for d in report.damaged if d.coder == n] for n in todo},
                                             {n: o for n, (_, o) in todo.items()})
    for name, (manifest, options) in todo.items():
        _merge_damaged(cache_dir, name, manifest, options, [d for d in report.damaged if d.coder == name], report)
    report.seconds = time.perf_counter() - started
    return report


def _recompute_runs(cache_dir: Path, model: torch.nn.Module, coders: list[SparseCoder], tokens: np.ndarray,
                    batch_size: int, ranges: dict[str, list[tuple[int, int]]],
                    options: dict[str, CacheOptions]) -> float:
    """One forward pass over the stored tokens; the damaged ranges' triplets spilled as sorted runs."""
    n_seq, seq_len = tokens.shape
    hookpoints = {c.name: resolve_hookpoint(model, c.hookpoint) for c in coders}
    wanted_latents = {}
    writers = {}
    for coder in coders:
        mask = np.zeros(coder.num_latents, dtype=bool)
        for lo, hi in ranges[coder.name]:
            mask[lo:hi] = True
        wanted_latents[coder.name] = mask
        folder = layout.coder_dir(cache_dir, coder.name) / REPAIR_RUNS
        shutil.rmtree(folder, ignore_errors=True)  # a repair killed earlier: its runs are redone
        folder.mkdir(parents=True)
        writers[coder.name] = RunWriter(folder, coder.num_latents, options[coder.name].run_bytes)
    forward = 0.0
    n_batches = math.ceil(n_seq / batch_size)
    with progress_bar() as bar:
        task = bar.add_task(f"repair {', '.join(c.name for c in coders)}", total=n_batches)
        for batch in range(n_batches):
            rows = slice(batch * batch_size, min(n_seq, (batch + 1) * batch_size))
            ids = torch.from_numpy(tokens[rows].astype(np.int64))
            t0 = time.perf_counter()
            acts = capture_activations(model, ids, list(hookpoints.values()))
            forward += time.perf_counter() - t0
            token_offset = rows.start * seq_len
            keep = cacheable_positions(ids.numel(), seq_len, token_offset)
            for coder in coders:
                latents, toks, values = encode_triplets(coder, acts[hookpoints[coder.name].name], token_offset, keep,
                                                        options[coder.name].value_dtype)
                inside = wanted_latents[coder.name][latents]
                writers[coder.name].add(batch, latents[inside], toks[inside], values[inside])
            bar.advance(task)
    for writer in writers.values():
        writer.flush()
    return forward


def _merge_damaged(cache_dir: Path, name: str, manifest: dict, options: CacheOptions, damaged: list[Damage],
                   report: RepairReport) -> None:
    cdir = layout.coder_dir(cache_dir, name)
    runs = finished_runs(cdir / REPAIR_RUNS)
    stats_path = cdir / layout.STATS
    stats = dict(np.load(stats_path)) if stats_path.exists() else None
    changed = False
    for damage in damaged:
        meta = manifest["shards"][damage.shard]
        lo, hi = damage.latents
        new = merge_shard(cdir / meta["dir"], runs, lo, hi, options.value_dtype)
        if new == {key: meta[key] for key in new}:
            report.exact.append(damage)
            continue
        report.replaced.append(damage)
        manifest["shards"][damage.shard] = {"dir": meta["dir"], **new}
        if stats is not None:
            view = ShardView.open(cdir / meta["dir"], new, verify=False)
            part = segment_stats(view.indptr, from_stored(view.values, options.value_dtype))
            for key, value in part.items():
                stats[key][lo:hi] = value
            stats["firing_rate"][lo:hi] = part["count"] / max(int(manifest["n_tokens_cached"]), 1)
        changed = True
    if changed:
        manifest["nnz"] = int(sum(s["nnz"] for s in manifest["shards"]))
        manifest["bytes_on_disk"] = sum(f["bytes"] for s in manifest["shards"] for f in s["files"].values())
        if stats is not None:
            with atomic_path(stats_path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **stats)
        write_json(cdir / layout.MANIFEST, manifest)
    shutil.rmtree(cdir / REPAIR_RUNS, ignore_errors=True)
