"""A cache shard truncated, bit-flipped or missing a file: caught by the manifest's sizes and sha256 sums, the
error names the shard and the repair command, and `lantern cache --repair` recomputes only the damaged shards,
byte for byte equal to the originals."""
from __future__ import annotations

import json
import shutil

import numpy as np

from conftest import BATCH, make_coders, opts, write_sparsify_folder
from faultkit import lantern, write_corpus
from lantern.cache import layout
from lantern.cache.build import build_cache
from lantern.cache.repair import find_damage, repair_cache
from lantern.cache.shards import VALUES


def _files(folder):
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _flip(path, at: int = -3) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_repair_recomputes_only_the_damaged_shards(tmp_path, tiny_model, corpus_tokens):
    tokens, doc_ids = corpus_tokens
    coders = make_coders(tmp_path / "sae" / "layers.1")
    cache = tmp_path / "cache"
    build_cache(cache, tiny_model, "tiny", coders, tokens, doc_ids, "x", options=opts(BATCH))
    pristine = tmp_path / "pristine"
    shutil.copytree(cache, pristine)
    sae, neurons = coders[0].name, coders[2].name
    assert len(json.loads((cache / sae / layout.MANIFEST).read_text())["shards"]) == 2
    assert len(json.loads((cache / neurons / layout.MANIFEST).read_text())["shards"]) == 3
    _flip(cache / sae / "shard-00001" / VALUES)                                    # flipped bits
    delta = cache / neurons / "shard-00000" / "token_delta.npy"
    delta.write_bytes(delta.read_bytes()[:-7])                                      # truncated
    (cache / neurons / "shard-00002" / "indptr.npy").unlink()                       # missing
    untouched = {name: p.stat().st_mtime_ns for name, p in _files(cache).items()
                 if not name.startswith((f"{sae}/shard-00001", f"{neurons}/shard-00000", f"{neurons}/shard-00002"))}

    damaged, total = find_damage(cache, [c.name for c in coders])
    assert total == 2 + 3 + 3 and {(d.coder, d.shard) for d in damaged} == {(sae, 1), (neurons, 0), (neurons, 2)}
    assert any("does not match its sha256" in d.reason for d in damaged)
    assert any("missing" in d.reason for d in damaged) and any("truncated" in d.reason for d in damaged)

    report = repair_cache(cache, tiny_model, coders)
    assert {(d.coder, d.shard) for d in report.exact} == {(sae, 1), (neurons, 0), (neurons, 2)}
    assert not report.replaced
    repaired = _files(cache)
    assert sorted(repaired) == sorted(_files(pristine))  # no run or staging folder left behind
    for name, path in repaired.items():
        assert path.read_bytes() == (pristine / name).read_bytes(), f"{name} differs after the repair"
    assert {name: repaired[name].stat().st_mtime_ns for name in untouched} == untouched  # the rest untouched
    assert find_damage(cache, [c.name for c in coders])[0] == []


def test_repair_replaces_what_no_longer_matches_and_updates_the_manifest(tmp_path, tiny_model, corpus_tokens):
    """Where the recomputed shard differs from the manifest (here: the manifest's own record of the shard was
    altered, as another device's numerics would), the repair keeps the recomputed shard and rewrites its
    checksums, and the cache verifies again."""
    tokens, doc_ids = corpus_tokens
    coders = make_coders(tmp_path / "sae" / "layers.1")[:1]
    cache = tmp_path / "cache"
    build_cache(cache, tiny_model, "tiny", coders, tokens[:10], doc_ids[:10], "x", options=opts(BATCH))
    manifest_path = cache / coders[0].name / layout.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    original = json.loads(manifest_path.read_text())
    manifest["shards"][0]["files"][VALUES]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    report = repair_cache(cache, tiny_model, coders)
    assert [d.shard for d in report.replaced] == [0] and not report.exact
    assert json.loads(manifest_path.read_text())["shards"] == original["shards"]
    assert find_damage(cache, [coders[0].name])[0] == []


def test_cli_names_the_damaged_shard_and_repairs_it(tmp_path, model_dir):
    corpus = write_corpus(tmp_path / "corpus.txt")
    coder = tmp_path / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)
    run = tmp_path / "run"
    done = lantern("cache", "--run-dir", str(run), "--model", str(model_dir), "--corpus", str(corpus), "--coders",
                   f"{coder},neurons-topk:8", "--layer", "1", "--tokens", "4096", "--latents", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    pristine = tmp_path / "pristine"
    shutil.copytree(run / "cache", pristine)
    _flip(run / "cache" / "layers_1" / "shard-00000" / VALUES, at=-11)
    other = {n: p.stat().st_mtime_ns for n, p in _files(run / "cache" / "neurons-topk8").items()}

    done = lantern("records", "--run-dir", str(run))
    text = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "layers_1/shard-00000/values.npy does not match its sha256 checksum" in text, text
    assert f"lantern cache --repair --run-dir {run}" in text, text
    assert not (run / "records").exists()

    done = lantern("cache", "--repair", "--run-dir", str(run))
    text = " ".join(done.stderr.split())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "damaged: layers_1 shard 0" in text and "repaired 1 of 2 shards" in text, text
    assert "1 byte-identical to the original checksums" in text, text
    for name, path in _files(run / "cache").items():
        assert path.read_bytes() == (pristine / name).read_bytes(), f"{name} differs after the repair"
    assert {n: p.stat().st_mtime_ns for n, p in _files(run / "cache" / "neurons-topk8").items()} == other
    assert np.load(run / "cache" / "layers_1" / "shard-00000" / VALUES).size > 0
