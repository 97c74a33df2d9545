"""File names of a cache directory, in one place so writer and reader cannot disagree.

cache/
  tokens.npy            int32 [n_seq, seq_len], BOS first; stored once for every coder
  doc_ids.npy           int32 [n_seq], the document each sequence came from
  <coder>/manifest.json model, coder, corpus, counts, dtypes, lantern version; written last
  <coder>/indptr.npy    int64 [num_latents + 1]
  <coder>/token_index.npy uint32 [nnz], flat token index (seq * seq_len + pos), ascending per latent
  <coder>/values.npy    float16 [nnz]
  <coder>/stats.npz     per latent: count, max
  <coder>/parts/        per-batch runs while writing (deleted when merged)
"""
from pathlib import Path

TOKENS = "tokens.npy"
DOC_IDS = "doc_ids.npy"
MANIFEST = "manifest.json"
INDPTR = "indptr.npy"
TOKEN_INDEX = "token_index.npy"
VALUES = "values.npy"
STATS = "stats.npz"
PARTS = "parts"


def coder_dir(cache_dir: Path, coder_name: str) -> Path:
    return Path(cache_dir) / coder_name


def part_path(cache_dir: Path, coder_name: str, batch: int) -> Path:
    return coder_dir(cache_dir, coder_name) / PARTS / f"batch-{batch:07d}.npz"
