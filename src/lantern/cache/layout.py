"""File names of a cache directory, in one place so writer and reader cannot disagree.

cache/
  tokens.npy              int32 [n_seq, seq_len], BOS first; stored once for every coder
  doc_ids.npy             int32 [n_seq], the document each sequence came from
  corpus.json             model, tokenizer fingerprint, corpus spec: what the tokens were made with
  windows/                shared index of block embeddings for hard negatives (see window_index.py)
  <coder>/manifest.json   model, coder, corpus, counts, dtypes, shards with checksums; written last
  <coder>/stats.npz       per latent: count, max, mean, decile edges, firing rate
  <coder>/decoder_neighbours.npz  top neighbours by decoder cosine similarity (coders with a decoder)
  <coder>/shard-NNNNN/    one latent range stored by latent (CSR), see shards.py
  <coder>/runs/           sorted runs of batches while writing (deleted once the manifest exists)
"""
from pathlib import Path

TOKENS = "tokens.npy"
DOC_IDS = "doc_ids.npy"
CORPUS = "corpus.json"
WINDOWS = "windows"
MANIFEST = "manifest.json"
STATS = "stats.npz"
RUNS = "runs"
SHARD_META = "shard.json"
DECODER_NEIGHBOURS = "decoder_neighbours.npz"
DECODER_DIRECTIONS = "decoder_directions.npy"


def coder_dir(cache_dir: Path, coder_name: str) -> Path:
    return Path(cache_dir) / coder_name


def runs_dir(cache_dir: Path, coder_name: str) -> Path:
    return coder_dir(cache_dir, coder_name) / RUNS


def shard_dir(coder_path: Path, shard: int) -> Path:
    return Path(coder_path) / f"shard-{shard:05d}"
