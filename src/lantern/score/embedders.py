"""Text embedders for the embedding scorer: the subject model's own hidden states (offline, the default) or a
sentence-transformers model (optional package, for users with a network or a local copy)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from lantern.errors import LanternError
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint, trunk

BATCH = 16


class Embedder(ABC):
    name: str
    """What was used, as reported beside the scores."""

    @abstractmethod
    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(unit-norm vectors [len(texts), dim], tokens read)."""


class SubjectEmbedder(Embedder):
    """Mean of the subject model's residual stream after one decoder block, over a text's tokens (the BOS is
    left out: its hidden state is the same for every text and very large). A middle block by default: late
    blocks are shaped by next-token prediction, early ones by the surface form of tokens."""

    def __init__(self, subject, layer: int | None = None):
        self.model, self.tokenizer, self.bos = subject.model, subject.tokenizer, subject.bos_id
        n_layers = len(trunk(self.model).layers)
        self.layer = n_layers // 2 if layer is None else layer
        if not 0 <= self.layer < n_layers:
            raise LanternError(f"embedding_layer {self.layer} is not a block of {subject.name} (0..{n_layers - 1})")
        self.hookpoint = resolve_hookpoint(self.model, f"layers.{self.layer}")
        self.name = f"subject:{subject.name}:layers.{self.layer}:mean"

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        encoded = [[self.bos] + self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        vectors = []
        device = next(self.model.parameters()).device
        for lo in range(0, len(encoded), BATCH):
            batch = encoded[lo:lo + BATCH]
            width = max(len(s) for s in batch)
            # right padding: a causal model's real tokens never attend to the pads after them
            ids = torch.tensor([s + [self.bos] * (width - len(s)) for s in batch], device=device)
            hidden = capture_activations(self.model, ids, [self.hookpoint])[self.hookpoint.name].float()
            for row, seq in enumerate(batch):
                vectors.append(hidden[row, 1:len(seq)].mean(dim=0) if len(seq) > 1 else hidden[row, 0])
        matrix = torch.stack(vectors).cpu().numpy().astype(np.float64)
        return _unit(matrix), sum(len(s) for s in encoded)


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model_name: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise LanternError(f"the embedder {model_name!r} needs the optional package sentence-transformers "
                               f"(pip install sentence-transformers); the offline default is --embedder subject"
                               ) from None
        try:
            self.model = SentenceTransformer(model_name)
        except OSError as err:
            raise LanternError(f"cannot load the sentence-transformers model {model_name!r}: {err}") from err
        self.name = f"sentence-transformers:{model_name}"

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        vectors = np.asarray(self.model.encode(texts, batch_size=BATCH), dtype=np.float64)
        tokens = sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])
        return _unit(vectors), tokens


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def make_embedder(spec: str, subject=None, layer: int | None = None) -> Embedder:
    if spec == "subject":
        if subject is None:
            raise LanternError("the subject embedder needs the subject model loaded in-process")
        return SubjectEmbedder(subject, layer)
    return SentenceTransformerEmbedder(spec.removeprefix("sentence-transformers:"))
