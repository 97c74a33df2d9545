"""The cache stage: one forward pass per batch feeds every coder (and the shared window index).

Each batch's activations go to per-coder sorted runs (bounded memory); when every batch is covered the runs
are merged into latent-range shards with checksums, per-latent statistics are written, and the manifest comes
last. Every step renames finished files into place, so a run killed at any point resumes without redoing
finished batches or shards and never leaves a corrupt result that looks finished.
"""
from __future__ import annotations

import hashlib
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import lantern
from lantern.cache import layout, window_index
from lantern.cache.runs import RunWriter, covered_batches, finished_runs
from lantern.cache.shards import VALUE_DTYPES, ShardView, finished_shard, from_stored, merge_shard, plan_shards
from lantern.cache.stats import save_stats, segment_stats
from lantern.cache.writer import cacheable_positions, encode_triplets, save_tokens
from lantern.coders.base import SparseCoder
from lantern.errors import LanternError
from lantern.io import atomic_path, read_json, write_json, write_npy
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint
from lantern.progress import progress_bar
from lantern.records.neighbours import decoder_neighbours


@dataclass(frozen=True)
class CacheOptions:
    """How the cache is written; none of these change what is cached except `value_dtype`'s precision."""

    batch_size: int = 16
    run_bytes: int = 64 << 20
    """Per-coder buffer spilled as one sorted run when full: the writer's memory bound."""
    shard_nnz: int = 8 << 20
    """Non-zeros per shard at most (a denser single latent gets a shard of its own)."""
    shard_latents: int = 1 << 16
    value_dtype: str = "float16"
    """`float16` (finer, max 65504) or `bfloat16` (coarser, float32's range)."""
    window_index: bool = True
    """Also store block embeddings of every window, for hard negatives."""


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary: two tokenizers that map ids to different strings never share a cache."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]


def _fingerprint(corpus: dict, coder: SparseCoder, options: CacheOptions, tokens: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr(sorted(corpus.items())).encode())
    h.update(repr(sorted(coder.describe().items())).encode())
    h.update(options.value_dtype.encode())
    h.update(tokens.tobytes())
    return h.hexdigest()[:16]


def _check_corpus(cache_dir: Path, corpus: dict, tokens: np.ndarray, doc_ids: np.ndarray) -> None:
    """Refuse to mix a cache made with another model, tokenizer or token array into this one."""
    meta_path = cache_dir / layout.CORPUS
    if meta_path.exists():
        old = read_json(meta_path)
        for key, what in (("model", "model"), ("tokenizer", "tokenizer")):
            if old.get(key) != corpus[key]:
                raise LanternError(
                    f"{cache_dir} holds a cache made with {what} {old.get(key)!r}, not {corpus[key]!r}: its token "
                    f"ids and activations would not match; use another run directory")
    existing = cache_dir / layout.TOKENS
    if existing.exists():
        old_tokens = np.load(existing, mmap_mode="r")
        if old_tokens.shape != tokens.shape or not np.array_equal(old_tokens, tokens):
            raise LanternError(f"{cache_dir} already holds a cache of different tokens; use another run directory")
    else:
        save_tokens(cache_dir, tokens, doc_ids)
    write_json(meta_path, corpus)


def _prepare_coder(cache_dir: Path, coder: SparseCoder, fingerprint: str, batch_size: int) -> dict | None:
    """The finished manifest if this exact cache exists; otherwise clear stale state and return None."""
    cdir = layout.coder_dir(cache_dir, coder.name)
    manifest_path = cdir / layout.MANIFEST
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        if manifest.get("fingerprint") == fingerprint:
            shutil.rmtree(cdir / layout.RUNS, ignore_errors=True)  # left over if killed while cleaning up
            return manifest
        manifest_path.unlink()  # another coder config: never leave it marking the cache finished
    runs = cdir / layout.RUNS
    stamp = cdir / "writing.txt"
    # Runs are numbered by batch, so they are only reusable with the same fingerprint and batch size.
    key = f"{fingerprint} batch_size={batch_size}"
    if cdir.exists() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(cdir)
    runs.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return None


def window_spec(model: torch.nn.Module, coders: list[SparseCoder]) -> str | None:
    """The hookpoint of the shared window index: the output of the shallowest layer any coder reads."""
    layers = [resolve_hookpoint(model, c.hookpoint).layer for c in coders]
    layers = [layer for layer in layers if layer is not None]
    return f"layers.{min(layers)}" if layers else None


def build_cache(cache_dir: str | Path, model: torch.nn.Module, model_name: str, coders: list[SparseCoder],
                tokens: np.ndarray, doc_ids: np.ndarray, corpus_spec: str, tokenizer_id: str = "unknown",
                options: CacheOptions = CacheOptions(),
                run_batches: Callable[[list[int], list[str], str | None], float] | None = None) -> dict[str, dict]:
    """Cache every coder's activations over `tokens` ([n_seq, seq_len], BOS first). Resumes finished work.

    `run_batches(batches, coder names, window hookpoint)`, where given, computes the runs of those batches
    elsewhere (e.g. as Ray tasks that each call `cache_batches` on a corpus shard) and returns the forward
    seconds; by default they are computed here. Either way the runs land in the same folders, which the merge
    below combines."""
    cache_dir = Path(cache_dir)
    if tokens.size == 0:
        raise LanternError("no tokens to cache: the corpus is empty")
    if options.value_dtype not in VALUE_DTYPES:
        raise LanternError(f"unknown value dtype {options.value_dtype!r}: use one of {sorted(VALUE_DTYPES)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = {"model": model_name, "tokenizer": tokenizer_id, "corpus": corpus_spec,
              "n_sequences": int(tokens.shape[0]), "seq_len": int(tokens.shape[1])}
    _check_corpus(cache_dir, corpus, tokens, doc_ids)
    n_seq, seq_len = tokens.shape
    batch_size = options.batch_size
    n_batches = math.ceil(n_seq / batch_size)
    manifests: dict[str, dict] = {}
    pending: list[SparseCoder] = []
    for coder in coders:
        manifest = _prepare_coder(cache_dir, coder, _fingerprint(corpus, coder, options, tokens), batch_size)
        if manifest is None:
            pending.append(coder)
        else:
            manifests[coder.name] = manifest
    window_hp = window_spec(model, coders) if options.window_index else None
    if window_hp is not None and window_index.is_finished(cache_dir):
        window_hp = None
    if not pending and window_hp is None:
        return manifests

    started = time.perf_counter()
    todo = pending_batches(cache_dir, pending, n_batches, window_hp is not None)
    if run_batches is None:
        forward_seconds = cache_batches(cache_dir, model, model_name, pending, tokens, todo, options, window_hp)
    else:
        forward_seconds = run_batches(todo, [c.name for c in pending], window_hp)
    if window_hp is not None:
        window_index.merge(cache_dir, n_batches, resolve_hookpoint(model, window_hp).name)
    for coder in pending:
        manifest = merge_coder(cache_dir, coder.name, coder.num_latents, n_batches, options)
        manifest.update({
            "lantern_version": lantern.__version__, "model": model_name, "tokenizer": tokenizer_id,
            "coder": coder.describe(), "corpus": corpus_spec, "n_sequences": int(n_seq), "seq_len": int(seq_len),
            "n_tokens": int(n_seq * seq_len), "n_tokens_cached": int(n_seq * (seq_len - 1)),
            "bos_positions_cached": False, "options": asdict(options),
            "fingerprint": _fingerprint(corpus, coder, options, tokens),
            "seconds": round(time.perf_counter() - started, 2), "forward_seconds": round(forward_seconds, 2)})
        cdir = layout.coder_dir(cache_dir, coder.name)
        manifest["decoder_neighbours"] = _save_decoder_neighbours(cdir, coder)
        write_json(cdir / layout.MANIFEST, manifest)  # last: its presence means the cache is complete
        shutil.rmtree(cdir / layout.RUNS, ignore_errors=True)
        (cdir / "writing.txt").unlink(missing_ok=True)
        manifests[coder.name] = manifest
    return manifests


def pending_batches(cache_dir: Path, coders: list[SparseCoder], n_batches: int, windows: bool) -> list[int]:
    """Batches some coder has no finished run for (or, with `windows`, no window-index part)."""
    covered = [covered_batches(finished_runs(layout.runs_dir(cache_dir, c.name))) for c in coders]
    return [b for b in range(n_batches) if any(b not in c for c in covered)
            or (windows and not window_index.part_path(cache_dir, b).exists())]


def cache_batches(cache_dir: Path, model: torch.nn.Module, model_name: str, coders: list[SparseCoder],
                  tokens: np.ndarray, batches: list[int], options: CacheOptions, window_hp: str | None) -> float:
    """Forward `batches` (ascending) of `tokens` and write each coder's sorted runs (and window-index parts)
    for those not written yet. Returns the seconds spent in forward passes. One corpus shard's work: runs are
    renamed into place when complete, so a killed call leaves only whole runs and a re-run skips them."""
    n_seq, seq_len = tokens.shape
    batch_size = options.batch_size
    hookpoints = {c.name: resolve_hookpoint(model, c.hookpoint) for c in coders}
    windows = window_hp is not None
    window_hp = resolve_hookpoint(model, window_hp) if windows else None
    writers = {c.name: RunWriter(layout.runs_dir(cache_dir, c.name), c.num_latents, options.run_bytes)
               for c in coders}
    covered = {c.name: covered_batches(finished_runs(layout.runs_dir(cache_dir, c.name))) for c in coders}
    proj = window_index.projection(model.config.get_text_config().hidden_size) if windows else None
    forward_seconds = 0.0
    label = ", ".join([c.name for c in coders] + (["window index"] if windows else []))
    with progress_bar() as bar:
        task = bar.add_task(f"cache {label}", total=len(batches))
        for batch in batches:
            todo = [c for c in coders if batch not in covered[c.name]]
            embed = windows and not window_index.part_path(cache_dir, batch).exists()
            if not todo and not embed:  # (a writer whose next batch is not consecutive closes its run itself)
                bar.advance(task)
                continue
            rows = slice(batch * batch_size, min(n_seq, (batch + 1) * batch_size))
            ids = torch.from_numpy(np.asarray(tokens[rows]).astype(np.int64))
            wanted = [hookpoints[c.name] for c in todo] + ([window_hp] if embed else [])
            t0 = time.perf_counter()
            acts = capture_activations(model, ids, wanted)
            forward_seconds += time.perf_counter() - t0
            token_offset = rows.start * seq_len
            keep = cacheable_positions(ids.numel(), seq_len, token_offset)
            for coder in todo:
                writers[coder.name].add(batch, *encode_triplets(coder, acts[hookpoints[coder.name].name], token_offset,
                                                                keep, options.value_dtype, model_name))
            if embed:
                window_index.part_path(cache_dir, batch).parent.mkdir(parents=True, exist_ok=True)
                write_npy(window_index.part_path(cache_dir, batch),
                          window_index.block_embeddings(acts[window_hp.name], proj))
            bar.advance(task)
    for writer in writers.values():
        writer.flush()
    return forward_seconds


def _save_decoder_neighbours(cdir: Path, coder: SparseCoder, k: int = 8) -> bool:
    """Top-k decoder-cosine neighbours of every latent (neighbour negatives) and the unit decoder directions
    (latents matched across coders); coders without a decoder: neither."""
    directions_of = getattr(coder, "decoder_directions", None)
    directions = directions_of() if directions_of is not None else None
    if directions is None:
        return False
    neighbours, similarity = decoder_neighbours(directions, k)
    with atomic_path(cdir / layout.DECODER_NEIGHBOURS) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, neighbours=neighbours, similarity=similarity)
    # unit rows, float16: what matching latents across coders needs (records.match_latents_to), without the coder
    unit = torch.nn.functional.normalize(directions.detach().float(), dim=1).cpu().numpy().astype(np.float16)
    write_npy(cdir / layout.DECODER_DIRECTIONS, unit)
    return True


def merge_coder(cache_dir: Path, name: str, num_latents: int, n_batches: int, options: CacheOptions) -> dict:
    """Merge a coder's runs into shards (skipping shards already merged) and write its statistics."""
    cdir = layout.coder_dir(cache_dir, name)
    runs = finished_runs(cdir / layout.RUNS)
    missing = set(range(n_batches)) - covered_batches(runs)
    if missing:
        raise LanternError(f"cache of {name!r} lacks batches {sorted(missing)[:5]}...; rerun `lantern cache`")
    counts = sum((np.diff(run.arrays()[0]) for run in runs), np.zeros(num_latents, dtype=np.int64))
    ranges = plan_shards(counts, options.shard_nnz, options.shard_latents)
    shards, stats = [], []
    with progress_bar() as bar:
        task = bar.add_task(f"merge {name}", total=len(ranges))
        for number, (lo, hi) in enumerate(ranges):
            folder = layout.shard_dir(cdir, number)
            meta = finished_shard(folder, lo, hi) or merge_shard(folder, runs, lo, hi, options.value_dtype)
            view = ShardView.open(folder, meta, verify=False)
            stats.append(segment_stats(view.indptr, from_stored(view.values, options.value_dtype)))
            shards.append({"dir": folder.name, **meta})
            bar.advance(task)
    seq_tokens = np.load(cache_dir / layout.TOKENS, mmap_mode="r").shape
    stats_arrays = save_stats(cdir / layout.STATS, stats, seq_tokens[0] * (seq_tokens[1] - 1))
    nnz = int(counts.sum())
    disk = sum(f["bytes"] for s in shards for f in s["files"].values())
    return {"nnz": nnz, "alive_latents": int((stats_arrays["count"] > 0).sum()), "shards": shards,
            "bytes_on_disk": disk, "bytes_per_nnz": round(disk / max(nnz, 1), 3),
            "dtypes": {"token_delta": "uint16", "values": options.value_dtype}}
