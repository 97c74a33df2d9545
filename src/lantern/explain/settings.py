"""How latents are explained: which explainer, how its prompt is built, how many candidates are sampled."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExplainerConfig:
    kind: str = "default"
    """Explainer name: default, activations, cot, contrastive, output or ensemble (explain/registry.py)."""
    mark_threshold: float = 0.3
    """Mark tokens above this fraction of the window's maximum activation."""
    show_activations: bool = False
    """Also list the marked tokens with their activation on a 0-10 scale (`default` only; `activations`
    always does)."""
    max_tokens: int = 48
    """Answer length for one-line explainers; `cot` allows at least its own, longer budget."""
    temperature: float = 0.0
    candidates: int = 1
    """Explanations sampled per latent; the score stage picks the best on the validation split."""
    candidate_temperature: float = 0.7
    """Sampling temperature for candidates > 1 when `temperature` is 0 (identical greedy answers are useless)."""
    top_tokens: int = 10
    """Promoted tokens shown per kind of output evidence (logit lens, steering)."""
    steering_scale: float = 1.0
    """Steering adds the latent's decoder direction times its largest explain-window activation times this."""
    llm_model: str | None = None
    """The explainer's own in-process LLM (`embedded`, `embedded-0.5b`, a GGUF file, a Hugging Face model) while
    the run's LLM stays the judge; None: the run's LLM explains too. For the explainer-size ablation."""

    def check(self) -> None:
        """Refuse settings that cannot produce an explanation (called before any model is loaded)."""
        from lantern.errors import LanternError

        if self.candidates < 1:
            raise LanternError(f"candidates must be at least 1, not {self.candidates}")
        if self.top_tokens < 1:
            raise LanternError(f"top_tokens must be at least 1, not {self.top_tokens}")
