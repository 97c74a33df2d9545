"""Embedding on real records of the tiny Gemma 3's SAE: an embedder that places a latent's activating windows
near its explanation gives AUROC 1; the default embedder is the real subject model's mean hidden state at its
middle block (checked against the model's own hidden states); a missing sentence-transformers is a clear error."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from lantern.errors import LanternError
from lantern.models.loading import SubjectModel
from lantern.pipeline.score_stage import run_score
from lantern.score.embedders import Embedder, SubjectEmbedder, make_embedder
from lantern.score.embedding import EmbeddingScorer
from lantern.score.surprisal import window_text
from scorer_runs import ScriptedLLM, make_run, read, scored_rows


class KnowingEmbedder(Embedder):
    """Puts `latent-N` and the texts where latent N fires on one axis, everything else on another."""

    name = "knowing"

    def __init__(self, activating: dict[str, set[str]]):
        self.activating = activating
        self.query = None

    def embed(self, texts):
        self.query = texts[0]
        axis = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        vectors = [axis[0]] + [axis[0] if t in self.activating.get(self.query, ()) else axis[1] for t in texts[1:]]
        return np.stack(vectors), 7 * len(texts)


def test_a_knowing_embedder_separates_perfectly_and_reports_its_tokens(tmp_path, built_cache, tokenizer, monkeypatch,
                                                                       tiny_model, bos):
    cfg, rows = make_run(tmp_path, built_cache, ["embedding"])
    activating: dict[str, set[str]] = {}
    for r in scored_rows(rows):
        if r["kind"] == "activating":
            activating.setdefault(f"latent-{r['latent']}", set()).add(window_text(tokenizer, r["tokens"]))
    import lantern.score.embedding as embedding

    monkeypatch.setattr(embedding, "make_embedder", lambda spec, subject, layer: KnowingEmbedder(activating))
    client = ScriptedLLM(lambda r: pytest.fail("the embedding scorer must not call the LLM"))
    run_score(cfg, client, tokenizer, subject=SubjectModel(tiny_model, tokenizer, "tiny", bos))
    scores = read(cfg, "scores.parquet")
    assert len(scores) == 3
    for s in scores:
        n = len(scored_rows(rows, s["latent"]))
        assert s["auroc"] == pytest.approx(1.0) and s["embedder"] == "knowing" and (s["n"], s["n_failed"]) == (n, 0)
        assert s["prompt_tokens"] == 7 * (n + 1) and s["completion_tokens"] == 0
    usage = read(cfg, "usage/score.parquet")
    assert [u["task"] for u in usage] == ["embedding"] * 3
    assert {e["read_as"] for e in read(cfg, "examples.parquet")} == {"embedding"}


def test_the_subject_embedder_is_the_mean_hidden_state_of_the_middle_block(tiny_model, tokenizer, bos):
    subject = SubjectModel(tiny_model, tokenizer, "tiny", bos)
    embedder = SubjectEmbedder(subject)
    assert embedder.layer == 2 and embedder.name == "subject:tiny:layers.2:mean"
    texts = ["In the beginning God created the heaven and the earth.", "import os", "x"]
    vectors, n_tokens = embedder.embed(texts)
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    for text, vector in zip(texts, vectors):
        ids = torch.tensor([[bos] + tokenizer(text, add_special_tokens=False).input_ids])
        with torch.inference_mode():
            hidden = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states[3][0, 1:].mean(0)
        expected = (hidden / hidden.norm()).numpy()
        assert np.allclose(vector, expected, atol=1e-5)  # padding in the batch changed nothing
    assert n_tokens == sum(1 + len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    with pytest.raises(LanternError, match="embedding_layer 9"):
        SubjectEmbedder(subject, layer=9)


def test_the_default_embedding_scorer_runs_the_real_subject_model(tmp_path, built_cache, tokenizer, tiny_model, bos):
    cfg, rows = make_run(tmp_path, built_cache, ["embedding"], n_latents=2, explained=1)
    assert EmbeddingScorer(cfg.scoring).needs().subject_model
    run_score(cfg, ScriptedLLM(lambda r: pytest.fail("no LLM call")), tokenizer,
              subject=SubjectModel(tiny_model, tokenizer, "tiny", bos))
    [s] = read(cfg, "scores.parquet")
    assert s["embedder"] == "subject:tiny:layers.2:mean" and 0 <= s["auroc"] <= 1
    assert s["n"] == len(scored_rows(rows, s["latent"])) and s["prompt_tokens"] > 0
    assert all(-1 <= e["value"] <= 1 for e in read(cfg, "examples.parquet"))


def test_sentence_transformers_missing_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name.startswith("sentence_transformers"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(LanternError, match="pip install sentence-transformers"):
        make_embedder("sentence-transformers:all-MiniLM-L6-v2")
