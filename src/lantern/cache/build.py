"""The cache stage: one forward pass per batch feeds every coder; each coder gets its own CSR cache."""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch

import lantern
from lantern.cache import layout
from lantern.cache.writer import cacheable_positions, finish, merge_parts, save_tokens, sparse_to_triplets, write_part
from lantern.coders.base import SparseCoder
from lantern.errors import LanternError
from lantern.io import read_json, write_json
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint
from lantern.progress import progress_bar


def _fingerprint(model_name: str, coder: SparseCoder, tokens: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(model_name.encode())
    h.update(repr(sorted(coder.describe().items())).encode())
    h.update(tokens.tobytes())
    return h.hexdigest()[:16]


def _check_tokens(cache_dir: Path, tokens: np.ndarray, doc_ids: np.ndarray) -> None:
    existing = cache_dir / layout.TOKENS
    if existing.exists():
        old = np.load(existing, mmap_mode="r")
        if old.shape != tokens.shape or not np.array_equal(old, tokens):
            raise LanternError(f"{cache_dir} already holds a cache of different tokens; use another run directory")
        return
    save_tokens(cache_dir, tokens, doc_ids)


def build_cache(cache_dir: str | Path, model: torch.nn.Module, model_name: str, coders: list[SparseCoder],
                tokens: np.ndarray, doc_ids: np.ndarray, corpus_spec: str, batch_size: int = 16) -> dict[str, dict]:
    """Cache every coder's activations over `tokens` ([n_seq, seq_len], BOS first). Resumes finished batches."""
    cache_dir = Path(cache_dir)
    if tokens.size == 0:
        raise LanternError("no tokens to cache: the corpus is empty")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _check_tokens(cache_dir, tokens, doc_ids)
    n_seq, seq_len = tokens.shape
    hookpoints = {c.name: resolve_hookpoint(model, c.hookpoint) for c in coders}
    manifests: dict[str, dict] = {}
    pending: list[SparseCoder] = []
    for coder in coders:
        cdir = layout.coder_dir(cache_dir, coder.name)
        fingerprint = _fingerprint(model_name, coder, tokens)
        manifest_path = cdir / layout.MANIFEST
        if manifest_path.exists() and read_json(manifest_path).get("fingerprint") == fingerprint:
            manifests[coder.name] = read_json(manifest_path)
            continue
        # A manifest of other tokens or another coder is stale: never leave it marking the cache finished.
        manifest_path.unlink(missing_ok=True)
        parts = cdir / layout.PARTS
        stamp = parts / "fingerprint.txt"
        # Parts are numbered by batch, so they can only be reused with the same batch size.
        parts_key = f"{fingerprint} batch_size={batch_size}"
        if parts.exists() and (not stamp.exists() or stamp.read_text() != parts_key):
            for stale in parts.glob("*.npz"):
                stale.unlink()
        parts.mkdir(parents=True, exist_ok=True)
        stamp.write_text(parts_key)
        pending.append(coder)
    if not pending:
        return manifests

    n_batches = math.ceil(n_seq / batch_size)
    started = time.perf_counter()
    forward_seconds = 0.0
    with progress_bar() as bar:
        task = bar.add_task(f"cache {', '.join(c.name for c in pending)}", total=n_batches)
        for batch in range(n_batches):
            todo = [c for c in pending if not layout.part_path(cache_dir, c.name, batch).exists()]
            if not todo:
                bar.advance(task)
                continue
            rows = slice(batch * batch_size, min(n_seq, (batch + 1) * batch_size))
            ids = torch.from_numpy(tokens[rows].astype(np.int64))
            t0 = time.perf_counter()
            acts = capture_activations(model, ids, [hookpoints[c.name] for c in todo])
            forward_seconds += time.perf_counter() - t0
            token_offset = rows.start * seq_len
            keep = cacheable_positions(ids.numel(), seq_len, token_offset)
            for coder in todo:
                x = acts[hookpoints[coder.name].name]
                if x.shape[-1] != coder.d_in:
                    raise LanternError(
                        f"coder {coder.name!r} expects d_in={coder.d_in} but hookpoint {coder.hookpoint!r} of "
                        f"{model_name} has width {x.shape[-1]}")
                with torch.inference_mode():
                    sparse = coder.encode(x.reshape(-1, x.shape[-1]))
                latents, toks, vals = sparse_to_triplets(sparse, token_offset, keep)
                write_part(layout.part_path(cache_dir, coder.name, batch), latents, toks, vals, coder.num_latents)
            bar.advance(task)
    for coder in pending:
        cdir = layout.coder_dir(cache_dir, coder.name)
        merged = merge_parts(cdir, n_batches, coder.num_latents)
        manifest = {
            "lantern_version": lantern.__version__,
            "model": model_name,
            "coder": coder.describe(),
            "corpus": corpus_spec,
            "n_sequences": int(n_seq),
            "seq_len": int(seq_len),
            "n_tokens": int(n_seq * seq_len),
            "bos_positions_cached": False,
            "dtypes": {"indptr": "int64", "token_index": "uint32", "values": "float16"},
            "fingerprint": _fingerprint(model_name, coder, tokens),
            "seconds": round(time.perf_counter() - started, 2),
            "forward_seconds": round(forward_seconds, 2),
            **merged,
        }
        finish(cdir, manifest)
        manifests[coder.name] = manifest
    return manifests
